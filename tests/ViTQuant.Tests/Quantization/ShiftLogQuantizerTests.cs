using ViTQuant.Quantization;
using ViTQuant.Tensors;
using static ViTQuant.Tests.Quantization.QuantTestUtil;

namespace ViTQuant.Tests.Quantization;

public class ShiftLogQuantizerTests
{
    private static QuantSpec Spec(int bits, bool sqrt2, RangeMethod range = RangeMethod.Percentile) =>
        new() { Kind = QuantKind.ShiftLog, Bits = bits, SqrtTwoBase = sqrt2, Range = range };

    private static ShiftLogQuantizer WithState(int bits, bool sqrt2, float shift, float delta)
    {
        var q = new ShiftLogQuantizer(Spec(bits, sqrt2));
        q.LoadState(new Dictionary<string, Tensor> { ["shift"] = T(shift), ["delta"] = T(delta) });
        return q;
    }

    private static Tensor GeluOf(Rng rng, params int[] shape) => Ops.Gelu(Tensor.Randn(rng, 1.5f, shape));

    [Fact]
    public void HandWorkedBaseTwo()
    {
        // m = −0.17, Δ = 1, 2 bits base 2 (levels 1, ½, ¼, ⅛); x' = x + 0.17 + ε:
        // −0.17 → ε → flushed → x̂ = m − ε; 0.83 → 1 → 1; 0.33 → ½; −0.05 → 0.12 → −log2 = 3.06 → ⅛;
        // 5 → clamped to the top level 1; −0.5 (below m) → x' < 0 → flushed.
        var q = WithState(2, sqrt2: false, shift: -0.17f, delta: 1f);
        float c = q.Offset;
        Assert.Equal((float)(-0.17f - 1e-6f), c);
        var y = q.Forward(T(-0.17f, 0.83f, 0.33f, -0.05f, 5f, -0.5f));
        Close(new[] { c, 1 + c, 0.5f + c, 0.125f + c, 1 + c, c }, y.ToArray(), 1e-7, 0);
    }

    [Fact]
    public void HandWorkedBaseSqrtTwo()
    {
        // m = −0.17, Δ = 2, 3 bits base √2: levels 2·2^(−q/2); x' = 1.17 → −2·log2(0.585) = 1.55 → 2 → 1.0;
        // x' = 0.37 → 4.87 → 5 → 2·2^(−2.5) = 0.35355; x' = 2.4 → −0.53 → −1 → clamped → 2.
        var q = WithState(3, sqrt2: true, shift: -0.17f, delta: 2f);
        var y = q.Forward(T(1f, 0.2f, 2.23f));
        Close(new[] { 1f + q.Offset, (float)(2 * Math.Pow(2, -2.5)) + q.Offset, 2f + q.Offset }, y.ToArray(), 1e-6, 0);
    }

    [Fact]
    public void CalibrationShiftsByTheMinimumAndSearchesDelta()
    {
        var rng = new Rng(3);
        var b1 = GeluOf(rng, 64, 80);
        var b2 = GeluOf(rng, 64, 80);
        var q = Calibrated(new ShiftLogQuantizer(Spec(4, sqrt2: true)), b1, b2);
        var all = b1.ToArray().Concat(b2.ToArray()).ToArray();
        Assert.Equal(all.Min(), q.Shift);
        Assert.InRange(q.Shift, -0.1701f, -0.165f); // GELU's minimum −0.16997 is approached by 10240 samples
        var shifted = all.Select(v => v - q.Shift + ShiftLogQuantizer.Epsilon).ToArray();
        var sorted = shifted.Select(v => (double)v).OrderBy(v => v).ToArray();
        float best = 0;
        double bestErr = double.PositiveInfinity;
        foreach (double p in new[] { 0.999, 0.9999, 0.99999 })
        {
            var grid = new LogGrid((float)RefQuantile(sorted, p), 4, true);
            double err = shifted.Average(v => Math.Pow(v - grid.FakeQuant(v), 2));
            if (err < bestErr) { bestErr = err; best = grid.Delta; }
        }
        Assert.Equal(best, q.Delta!.Item(), 6);
        Assert.Same(q.Delta, Assert.Single(q.LearnableParameters()));
    }

    [Theory]
    [InlineData(true, 4)]
    [InlineData(false, 3)]
    public void DeltaGradientMatchesFiniteDifferences(bool sqrt2, int bits)
    {
        // x̂ is Δ·B^(−q) + c with q piecewise constant in Δ: away from the level thresholds the true
        // derivative is Σ g·B^(−q). Keep only inputs whose x'/Δ sits ≥ 1% from every threshold ratio.
        var rng = new Rng(8);
        var q = Calibrated(new ShiftLogQuantizer(Spec(bits, sqrt2)), GeluOf(rng, 32, 40));
        float delta = q.Delta!.Item();
        var ratios = Enumerable.Range(-1, (1 << bits) + 1).Select(k => Math.Pow(sqrt2 ? Math.Sqrt(2) : 2, -(k + 0.5))).ToArray();
        var vals = GeluOf(rng, 400).ToArray()
            .Where(v => ratios.All(r => Math.Abs((v - q.Shift + 1e-8) / delta / r - 1) > 0.01)).Take(64).ToArray();
        var x = T(vals).RequireGrad();
        var y = q.Forward(x);
        var w = BackwardWeighted(y);
        double L(float d)
        {
            q.Delta.Data[0] = d;
            using var _ = Autograd.NoGrad();
            var o = q.Forward(x);
            double s = 0;
            for (int i = 0; i < o.Size; i++) s += w[i] * (double)o.Data[i];
            return s;
        }
        double h = delta * 1e-3;
        double numeric = (L(delta + (float)h) - L(delta - (float)h)) / (2 * h);
        q.Delta.Data[0] = delta;
        Assert.Equal(numeric, q.Delta.Grad!.Item(), 2e-3 * Math.Max(1, Math.Abs(numeric)));
        Assert.NotEqual(0f, q.Delta.Grad!.Item());
        // x: straight-through where the level is neither clamped nor flushed
        var grid = new LogGrid(delta, bits, sqrt2);
        for (int i = 0; i < vals.Length; i++)
        {
            float xs = vals[i] - q.Shift + ShiftLogQuantizer.Epsilon;
            bool inside = grid.Level(xs) < grid.Levels && xs <= grid.TopThreshold;
            Assert.Equal(inside ? w[i] : 0f, x.Grad!.Data[i]);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void FoldingTheShiftIntoTheBiasEqualsTheUnfusedForm(bool sqrt2)
    {
        var rng = new Rng(10);
        var q = Calibrated(new ShiftLogQuantizer(Spec(4, sqrt2)), GeluOf(rng, 16, 32));
        var wt = Tensor.Randn(rng, 0.2f, 5, 32);
        var b = Tensor.Randn(rng, 0.5f, 5);
        var x = GeluOf(rng, 3, 32);
        using var _ = Autograd.NoGrad();
        var unfused = Ops.Linear(q.Forward(x), wt, b);
        var folded = Ops.Linear(q.ForwardShifted(x), wt, ShiftLogQuantizer.FoldShiftIntoBias(wt, b, q.Offset));
        Close(unfused.ToArray(), folded.ToArray(), 1e-5, 1e-5, "W·x̂ + b vs W·x̂' + b'");
        // x̂ − x̂' is exactly the offset, element by element
        var xs = q.ForwardShifted(x);
        var xh = q.Forward(x);
        for (int i = 0; i < x.Size; i++) Assert.Equal(xs.Data[i] + q.Offset, xh.Data[i]);
        Assert.Throws<ViTQuantException>(() => ShiftLogQuantizer.FoldShiftIntoBias(wt, Tensor.Zeros(4), q.Offset));
    }

    [Fact]
    public void FoldedBiasHandWorked()
    {
        var w = Tensor.FromArray(new[] { 1f, 2f, 3f, -1f, 0f, 0.5f }, 2, 3);
        var b = T(0.5f, -1f);
        var folded = ShiftLogQuantizer.FoldShiftIntoBias(w, b, -0.2f);
        Assert.Equal(new[] { 0.5f - 0.2f * 6f, -1f - 0.2f * -0.5f }, folded.ToArray());
    }
}
