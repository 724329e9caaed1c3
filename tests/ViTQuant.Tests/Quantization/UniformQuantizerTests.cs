using ViTQuant.Quantization;
using ViTQuant.Tensors;
using static ViTQuant.Tests.Quantization.QuantTestUtil;

namespace ViTQuant.Tests.Quantization;

public class UniformQuantizerTests
{
    private static UniformQuantizer Make(int bits, bool sym, Granularity g = Granularity.PerTensor, RangeMethod range = RangeMethod.MinMax, bool learnable = false) =>
        new(new QuantSpec { Kind = QuantKind.Uniform, Bits = bits, Symmetric = sym, Granularity = g, Range = range, Learnable = learnable });

    [Fact]
    public void SymmetricMimiQGridRoundsHalfToEvenAndClampsBothEnds()
    {
        // 4 bits: Δ = 2·7.5/15 = 1, levels −8..7. 7.5 → 8 → clamped to 7; −7.5 → −8 (even) stays;
        // 2.5 → 2, 3.5 → 4, −2.5 → −2, ±0.5 → 0; 9 and −20 saturate.
        var q = Calibrated(Make(4, sym: true), T(7.5f, -7.5f, 1f));
        Assert.Equal(new UniformParams(1f, 0f, -8, 7), q.Params(0));
        var y = q.Forward(T(7.5f, -7.5f, 2.5f, 3.5f, -2.5f, 0.5f, -0.5f, 1.49f, 9f, -20f));
        Assert.Equal(new[] { 7f, -8f, 2f, 4f, -2f, 0f, 0f, 1f, 7f, -8f }, y.ToArray());
    }

    [Fact]
    public void AsymmetricGridHandWorked()
    {
        // 2 bits over [−1, 2]: Δ = 1, z = 1, q ∈ [0, 3] → values {−1, 0, 1, 2}.
        var q = Calibrated(Make(2, sym: false), T(-1f, 0.3f, 2f));
        Assert.Equal(new UniformParams(1f, 1f, 0, 3), q.Params(0));
        var x = T(-1.5f, -1f, -0.5f, 0.5f, 1.5f, 2.5f, 3f).RequireGrad();
        var y = q.Forward(x);
        Assert.Equal(new[] { -1f, -1f, 0f, 0f, 2f, 2f, 2f }, y.ToArray());
        // round(x/Δ) + z = −1, 0, 1, 1, 3, 3, 4: straight-through only where it lies in [0, 3].
        Ops.Sum(y).Backward();
        Assert.Equal(new[] { 0f, 1f, 1f, 1f, 1f, 1f, 0f }, x.Grad!.ToArray());
    }

    [Fact]
    public void ZeroPointRoundsHalfToEven()
    {
        // [−0.5, 2.5] at 2 bits: Δ = 1, −lo/Δ = 0.5 → z = 0 (even); so the grid is {0, 1, 2, 3}.
        var q = Calibrated(Make(2, sym: false), T(-0.5f, 2.5f));
        Assert.Equal(new UniformParams(1f, 0f, 0, 3), q.Params(0));
        Assert.Equal(new[] { 0f, 0f, 2f, 3f }, q.Forward(T(-0.5f, -3f, 2.5f, 2.6f)).ToArray());
    }

    [Fact]
    public void NegativeOnlyAndPositiveOnlyRangesAreWidenedToContainZero()
    {
        var neg = Calibrated(Make(2, sym: false), T(-3f, -1f, -2f));
        Assert.Equal(new UniformParams(1f, 3f, 0, 3), neg.Params(0)); // [−3, 0]
        Assert.Equal(new[] { -3f, -2f, -1f, 0f, 0f, -3f }, neg.Forward(T(-3f, -2.2f, -1f, 0.4f, 1f, -7f)).ToArray());
        var pos = Calibrated(Make(3, sym: false), T(1f, 7f));
        Assert.Equal(new UniformParams(1f, 0f, 0, 7), pos.Params(0)); // [0, 7]
        Assert.Equal(new[] { 0f, 1f, 7f }, pos.Forward(T(0.2f, 1.2f, 9f)).ToArray());
        var negSym = Calibrated(Make(3, sym: true), T(-3.5f, -1f));
        Assert.Equal(1f, negSym.Params(0).Scale); // M = 3.5, Δ = 7/7
        Assert.Equal(new[] { -4f, -2f, 3f }, negSym.Forward(T(-3.5f, -2.4f, 3.5f)).ToArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ZeroRangeUsesTheMinimumStepAndNeverProducesNaN(bool sym)
    {
        var q = Calibrated(Make(8, sym), Tensor.Zeros(3, 4));
        Assert.Equal(RangeSearch.MinScale, q.Params(0).Scale);
        var x = T(0f, 0f, 1f, -1f).RequireGrad();
        var y = q.Forward(x);
        Assert.All(y.ToArray(), v => Assert.True(float.IsFinite(v)));
        Assert.Equal(0f, y.Data[0]);
        Assert.Equal(q.Params(0).QMax * RangeSearch.MinScale, y.Data[2], 12);
        Ops.Sum(y).Backward();
        Assert.Equal(new[] { 1f, 1f, 0f, 0f }, x.Grad!.ToArray());
    }

    [Fact]
    public void AllEqualInputsAreReproduced()
    {
        var q = Calibrated(Make(8, sym: false), Tensor.Full(2f, 5, 5));
        Assert.Equal(0f, q.Params(0).ZeroPoint);
        Assert.Equal(2f, q.Forward(Tensor.Full(2f, 3)).Data[1], 6);
        var s = Calibrated(Make(4, sym: true), Tensor.Full(-3f, 4));
        // Symmetric: Δ = 2·3/15 = 0.4 and −3/Δ = −7.5 → −8 (half to even): the MimiQ grid has no level at −M.
        Assert.Equal(-3.2f, s.Forward(Tensor.Full(-3f, 2)).Data[0], 5);
    }

    [Fact]
    public void PerChannelAndPerTokenUseTheirOwnRanges()
    {
        var rng = new Rng(4);
        var w = Tensor.Randn(rng, 1f, 3, 5);
        for (int j = 0; j < 5; j++) w[2, j] *= 100f; // row 2 is 100× larger: a per-tensor range would crush rows 0–1
        var qc = Calibrated(Make(4, sym: true, Granularity.PerChannel), w);
        var yc = qc.Forward(w);
        for (int c = 0; c < 3; c++)
        {
            float m = Enumerable.Range(0, 5).Max(j => MathF.Abs(w[c, j]));
            var p = qc.Params(c);
            Assert.Equal((float)(2.0 * m / 15), p.Scale);
            for (int j = 0; j < 5; j++) Assert.Equal(p.FakeQuant(w[c, j]), yc[c, j]);
        }

        var x = Tensor.Randn(rng, 1f, 2, 3, 4); // [B, N, C]
        for (int b = 0; b < 2; b++) for (int c = 0; c < 4; c++) x[b, 1, c] += 10f; // token 1 is shifted
        var qt = Calibrated(Make(8, sym: false, Granularity.PerToken), x);
        var yt = qt.Forward(x);
        for (int t = 0; t < 3; t++)
        {
            var vals = new List<float>();
            for (int b = 0; b < 2; b++) for (int c = 0; c < 4; c++) vals.Add(x[b, t, c]);
            Assert.Equal(RangeSearch.FromRange(vals.Min(), vals.Max(), 8, false), qt.Params(t));
            for (int b = 0; b < 2; b++) for (int c = 0; c < 4; c++) Assert.Equal(qt.Params(t).FakeQuant(x[b, t, c]), yt[b, t, c]);
        }
        Assert.Throws<ViTQuantException>(() => qt.Forward(Tensor.Zeros(2, 4, 4)));
    }

    [Theory]
    [InlineData(8, false, Granularity.PerTensor)]
    [InlineData(4, false, Granularity.PerToken)]
    [InlineData(3, true, Granularity.PerChannel)]
    public void RoundTripErrorIsAtMostHalfAStepInsideTheRange(int bits, bool sym, Granularity g)
    {
        var rng = new Rng(12);
        var x = Tensor.Randn(rng, 2f, 4, 6, 32);
        var q = Calibrated(Make(bits, sym, g), x);
        var y = q.Forward(x);
        var layout = GroupLayout.For(g, x.Shape);
        int inside = 0;
        for (int i = 0; i < x.Size; i++)
        {
            var p = q.Params(layout.GroupOf(i));
            float lo = (p.QMin - p.ZeroPoint) * p.Scale, hi = (p.QMax - p.ZeroPoint) * p.Scale;
            if (x.Data[i] < lo || x.Data[i] > hi) continue; // symmetric grids leave the top half-step out
            inside++;
            Assert.True(MathF.Abs(x.Data[i] - y.Data[i]) <= p.Scale / 2 * (1 + 1e-5f), $"element {i}: |{x.Data[i]} − {y.Data[i]}| > Δ/2 = {p.Scale / 2}");
        }
        Assert.True(inside > x.Size * 0.95);
    }

    [Theory]
    [InlineData(Granularity.PerTensor, false)]
    [InlineData(Granularity.PerChannel, true)]
    public void FusedOpMatchesComposedEngineOpsIncludingGradients(Granularity g, bool sym)
    {
        // Reference: (clamp(round_ste(x/Δ) + z, q_min, q_max) − z)·Δ from engine ops, Δ broadcast per channel.
        var rng = new Rng(21);
        var calib = Tensor.Randn(rng, 1f, 6, 40);
        var q = Calibrated(Make(4, sym, g, learnable: true), calib);
        var x = Tensor.Randn(rng, 1.3f, 6, 40).RequireGrad();
        var y = q.Forward(x);
        var w = BackwardWeighted(y);

        int groups = q.Groups;
        var shape = groups == 1 ? new[] { 1 } : new[] { groups, 1 };
        var scale = new Tensor(q.Scale!.ToArray(), shape).RequireGrad();
        var zero = new Tensor(Enumerable.Range(0, groups).Select(k => q.Params(k).ZeroPoint).ToArray(), shape);
        var x2 = x.Detach().Clone().RequireGrad();
        var r = Ops.Mul(Ops.Sub(Ops.Clamp(Ops.Add(Ops.RoundSte(Ops.Div(x2, scale)), zero), q.QMin, q.QMax), zero), scale);
        BitEqual(r.ToArray(), y.ToArray(), "forward");
        Ops.Sum(Ops.Mul(r, new Tensor(w, r.Shape))).Backward();
        Close(x2.Grad!.ToArray(), x.Grad!.ToArray(), 1e-6, 1e-6, "dx");
        Close(scale.Grad!.ToArray(), q.Scale!.Grad!.ToArray(), 1e-4, 1e-4, "dΔ");
        Assert.Contains(x.Grad!.ToArray(), v => v == 0f); // some elements saturate at 4 bits
    }

    [Fact]
    public void VectorisedKernelIsBitIdenticalToTheScalarRule()
    {
        // Ties (k + ½)·Δ, both clamps, zeros, NaN, infinities and random values, and a −0 zero point (a −0 level meets
        // the bound 0): the span kernel equals UniformParams.FakeQuant, whose clamp is Math.Clamp.
        var rng = new Rng(14);
        foreach (var p in new[]
        {
            new UniformParams(0.1f, 7f, 0, 15), new UniformParams(0.37f, 0f, -8, 7), new UniformParams(1e-8f, 128f, 0, 255),
            new UniformParams(0.25f, -0f, 0, 15),
        })
        {
            var x = new List<float> { 0f, -0f, 1e30f, -1e30f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, -0.1f };
            for (int k = -20; k <= 20; k++) x.Add((k + 0.5f) * p.Scale);
            for (int i = 0; i < 2000; i++) x.Add((rng.NextFloat() * 40 - 20) * p.Scale);
            var xs = x.ToArray();
            var y = new float[xs.Length];
            FakeQuant.UniformSpan(xs, y, p.Scale, p.ZeroPoint, p.QMin, p.QMax);
            var expected = xs.Select(p.FakeQuant).ToArray();
            BitEqual(expected, y, $"Δ = {p.Scale}");
            // Every length through the 16- and 8-lane loops and the scalar tail, from odd offsets, and in place.
            for (int len = 0; len <= 40; len++)
            {
                var part = new float[len];
                FakeQuant.UniformSpan(xs.AsSpan(3, len), part, p.Scale, p.ZeroPoint, p.QMin, p.QMax);
                BitEqual(expected.AsSpan(3, len).ToArray(), part, $"Δ = {p.Scale}, length {len}");
                var inPlace = xs.AsSpan(5, len).ToArray();
                FakeQuant.UniformSpan(inPlace, inPlace, p.Scale, p.ZeroPoint, p.QMin, p.QMax);
                BitEqual(expected.AsSpan(5, len).ToArray(), inPlace, $"Δ = {p.Scale}, length {len}, in place");
            }
        }
    }

    [Fact]
    public void LearnableStepIsExposedOnlyWhenAsked()
    {
        var x = Tensor.Randn(new Rng(1), 1f, 10);
        Assert.Empty(Calibrated(Make(8, false), x).LearnableParameters());
        var q = Calibrated(Make(8, false, learnable: true), x);
        var p = Assert.Single(q.LearnableParameters());
        Assert.Same(q.Scale, p);
        Assert.True(p.RequiresGrad);
    }

    [Fact]
    public void QuantileInterpolatesLikeTorch()
    {
        float[] s = { 1f, 2f, 3f, 4f };
        Assert.Equal(2.5f, RangeSearch.Quantile(s, 0.5));
        Assert.Equal(3.997f, RangeSearch.Quantile(s, 0.999), 5);
        Assert.Equal(1.003f, RangeSearch.Quantile(s, 0.001), 5);
        Assert.Equal(4f, RangeSearch.Quantile(s, 1));
        Assert.Equal(7f, RangeSearch.Quantile(new[] { 7f }, 0.3));
    }

    private static float[] HeavyTailed(int n, ulong seed, int every = 997)
    {
        var rng = new Rng(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = rng.NextNormal();
        for (int i = 0; i < n; i += every) v[i] *= 40f; // sparse large outliers
        return v;
    }

    [Fact]
    public void PercentileSearchPicksTheLeastMseCandidate()
    {
        var data = HeavyTailed(20000, 2, every: 4999); // four far outliers: clipping them beats covering them
        var q = Calibrated(Make(4, false, range: RangeMethod.Percentile), Tensor.FromArray(data, data.Length));
        var sorted = data.Select(v => (double)v).OrderBy(v => v).ToArray();
        double bestErr = double.PositiveInfinity;
        UniformParams best = default;
        foreach (double p in new[] { 0.999, 0.9999, 0.99999 })
        {
            var grid = RangeSearch.FromRange((float)RefQuantile(sorted, 1 - p), (float)RefQuantile(sorted, p), 4, false);
            double err = data.Average(v => Math.Pow(v - grid.FakeQuant(v), 2));
            if (err < bestErr) { bestErr = err; best = grid; }
        }
        Assert.Equal(best, q.Params(0));
        var minmax = RangeSearch.FromRange(data.Min(), data.Max(), 4, false);
        Assert.True(bestErr < data.Average(v => Math.Pow(v - minmax.FakeQuant(v), 2)));
    }

    [Theory]
    [InlineData(2f)]
    [InlineData(2.4f)]
    public void LpSearchPicksTheLeastLpErrorShrink(float p)
    {
        var data = HeavyTailed(6000, 3);
        var q = Calibrated(new UniformQuantizer(new QuantSpec { Bits = 4, Range = RangeMethod.LpSearch, LpNorm = p }), Tensor.FromArray(data, data.Length));
        float min = data.Min(), max = data.Max();
        int bestK = 0;
        double bestErr = double.PositiveInfinity;
        for (int k = 1; k <= 100; k++)
        {
            float a = k / 100f;
            var grid = RangeSearch.FromRange(a * min, a * max, 4, false);
            double err = data.Sum(v => Math.Pow(Math.Abs(v - grid.FakeQuant(v)), p));
            if (err < bestErr * (1 - 1e-9)) { bestErr = err; bestK = k; }
        }
        Assert.Equal(RangeSearch.FromRange(bestK / 100f * min, bestK / 100f * max, 4, false), q.Params(0));
        Assert.True(bestK < 100, $"outliers should shrink the range, got α = {bestK / 100f}");
    }

    [Fact]
    public void DynamicRangeFollowsTheCurrentTensor()
    {
        var q = new UniformQuantizer(new QuantSpec { Bits = 4, Symmetric = true, Granularity = Granularity.PerChannel, Dynamic = true });
        Assert.True(q.IsCalibrated);
        var w = Tensor.FromArray(new[] { 7.5f, 1f, -3f, 0.2f }, 2, 2);
        // row 0: Δ = 1 (7.5 → 8 → 7); row 1: Δ = 0.4 (−7.5 → −8, 0.5 → 0)
        Assert.Equal(new[] { 7f, 1f, -3.2f, 0f }, q.Forward(w).ToArray(), new ToleranceComparer(1e-6f));
        w.Data[0] = 15f; // row 0's range doubles: Δ = 2, 15 → 7.5 → 8 → 7·2, 1 → 0.5 → 0
        Assert.Equal(new[] { 14f, 0f }, q.Forward(w).ToArray()[..2]);
        Assert.Empty(q.State());
        Assert.Throws<ViTQuantException>(() => new QuantSpec { Dynamic = true, Range = RangeMethod.Percentile }.Validated());
    }

    [Fact]
    public void MisuseThrows()
    {
        var q = Make(8, false);
        Assert.Throws<InvalidOperationException>(() => q.Forward(T(1f)));
        Assert.Throws<InvalidOperationException>(() => q.Calibrate());
        Assert.Throws<InvalidOperationException>(() => q.State().ToList());
        Assert.Throws<ArgumentException>(() => new UniformQuantizer(new QuantSpec { Kind = QuantKind.Lsq }));
    }

    private sealed class ToleranceComparer(float tol) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => MathF.Abs(a - b) <= tol;
        public int GetHashCode(float v) => 0;
    }
}
