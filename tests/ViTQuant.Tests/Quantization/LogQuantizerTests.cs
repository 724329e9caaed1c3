using ViTQuant.Quantization;
using ViTQuant.Tensors;
using static ViTQuant.Tests.Quantization.QuantTestUtil;

namespace ViTQuant.Tests.Quantization;

public class LogQuantizerTests
{
    private static LogQuantizer WithDelta(QuantKind kind, int bits, float delta)
    {
        var q = new LogQuantizer(new QuantSpec { Kind = kind, Bits = bits });
        q.LoadState(new Dictionary<string, Tensor> { ["delta"] = T(delta) });
        return q;
    }

    /// <summary>RepQ-ViT's formula in double: q = round(−log_B(x/Δ)), flushed when q ≥ 2^b, clamped at 0.</summary>
    private static float Reference(float x, float delta, int bits, bool sqrt2)
    {
        if (!(x > 0)) return 0f;
        double logB = Math.Log2((double)x / delta) / (sqrt2 ? 0.5 : 1.0);
        double q = Math.Round(-logB, MidpointRounding.ToEven);
        if (q >= 1 << bits) return 0f;
        q = Math.Max(q, 0);
        return (float)(delta * Math.Pow(2, -(sqrt2 ? 0.5 : 1.0) * q));
    }

    [Fact]
    public void LogSqrt2HandWorked()
    {
        // Δ = 1, 3 bits: levels 2^(−q/2), q = 0..7; −2·log2 x: 0.8 → 0.64 → 1; 0.6 → 1.47 → 1; 0.3 → 3.47 → 3;
        // 0.1 → 6.64 → 7; 0.07 → 7.67 → 8 ≥ 8 flushed; 1.5 → −1.17 → clamped to 0; x ≤ 0 → 0.
        var q = WithDelta(QuantKind.LogSqrt2, 3, 1f);
        var y = q.Forward(T(1f, 0.8f, 0.6f, 0.5f, 0.3f, 0.1f, 0.07f, 0.05f, 0f, -0.1f, 1.5f));
        float L(int k) => (float)Math.Pow(2, -k / 2.0);
        Assert.Equal(new[] { L(0), L(1), L(1), L(2), L(3), L(7), 0f, 0f, 0f, 0f, L(0) }, y.ToArray());
    }

    [Fact]
    public void Log2HandWorked()
    {
        // Δ = 1, 2 bits: levels 1, ½, ¼, ⅛; −log2: 0.7 → 0.51 → 1; 0.71 → 0.49 → 0; 0.3 → 1.74 → 2;
        // 0.09 → 3.47 → 3; 0.08 → 3.64 → 4 flushed.
        var q = WithDelta(QuantKind.Log2, 2, 1f);
        Assert.Equal(new[] { 0.5f, 1f, 0.25f, 0.125f, 0f }, q.Forward(T(0.7f, 0.71f, 0.3f, 0.09f, 0.08f)).ToArray());
        // Δ scales every level: Δ = 0.5 → levels ½, ¼, ⅛, 1/16
        var h = WithDelta(QuantKind.Log2, 2, 0.5f);
        Assert.Equal(new[] { 0.25f, 0.5f, 0.0625f }, h.Forward(T(0.35f, 0.9f, 0.05f)).ToArray());
    }

    [Theory]
    [InlineData(QuantKind.LogSqrt2, 4, 1f)]
    [InlineData(QuantKind.LogSqrt2, 8, 0.83f)]
    [InlineData(QuantKind.Log2, 3, 0.6f)]
    [InlineData(QuantKind.Log2, 8, 1f)]
    public void MatchesTheLogFormulaOnRandomProbabilities(QuantKind kind, int bits, float delta)
    {
        var rng = new Rng(9);
        var logits = Tensor.Randn(rng, 3f, 16, 50);
        var p = Ops.Softmax(logits);
        var q = WithDelta(kind, bits, delta);
        var y = q.Forward(p);
        for (int i = 0; i < p.Size; i++)
            Assert.Equal(Reference(p.Data[i], delta, bits, kind == QuantKind.LogSqrt2), y.Data[i]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ThresholdsDecideRoundingExactlyAtTheirNeighbours(bool sqrt2)
    {
        // Just at and just above every threshold, the table lookup agrees with round(−log_B(x/Δ)) in double.
        var grid = new LogGrid(0.9f, 5, sqrt2);
        for (int k = 0; k < grid.Levels; k++)
        {
            float t = grid.Thresholds[k];
            Assert.Equal(k + 1, grid.Level(t)); // x ≤ T_k: rounds past k
            Assert.Equal(k, grid.Level(MathF.BitIncrement(t)));
            foreach (float x in new[] { t, MathF.BitIncrement(t) })
            {
                double exact = Math.Round(-Math.Log2((double)x / grid.Delta) / (sqrt2 ? 0.5 : 1.0));
                Assert.Equal(Math.Min(exact, grid.Levels), Math.Max(grid.Level(x), 0));
            }
        }
        Assert.Equal(0, grid.Level(5f));
        Assert.Equal(grid.Levels, grid.Level(0f));
        Assert.Equal(grid.Levels, grid.Level(float.NaN));
    }

    [Fact]
    public void CalibrationTakesTheMaximumByDefault()
    {
        var rng = new Rng(2);
        var p1 = Ops.Softmax(Tensor.Randn(rng, 2f, 8, 30));
        var p2 = Ops.Softmax(Tensor.Randn(rng, 2f, 8, 30));
        var q = Calibrated(new LogQuantizer(new QuantSpec { Kind = QuantKind.LogSqrt2, Bits = 4 }), p1, p2);
        Assert.Equal(Math.Max(p1.ToArray().Max(), p2.ToArray().Max()), q.Delta);
        Assert.Empty(q.LearnableParameters());
    }

    [Fact]
    public void PercentileCalibrationPicksTheLeastMseQuantile()
    {
        var rng = new Rng(3);
        var p = Ops.Softmax(Tensor.Randn(rng, 4f, 64, 64));
        var q = Calibrated(new LogQuantizer(new QuantSpec { Kind = QuantKind.LogSqrt2, Bits = 3, Range = RangeMethod.Percentile }), p);
        var sorted = p.ToArray().Select(v => (double)v).OrderBy(v => v).ToArray();
        float best = 0;
        double bestErr = double.PositiveInfinity;
        foreach (double pc in new[] { 0.999, 0.9999, 0.99999 })
        {
            float d = (float)RefQuantile(sorted, pc);
            double err = p.ToArray().Average(v => Math.Pow(v - Reference(v, d, 3, true), 2));
            if (err < bestErr) { bestErr = err; best = d; }
        }
        Assert.Equal(best, q.Delta, 6);
    }

    [Fact]
    public void StraightThroughGradientInsideTheGridOnly()
    {
        // Δ = 1, 2 bits √2: representable when 0 ≤ round(−2·log2 x) ≤ 3, i.e. 2^(−1.75) < x ≤ 2^(0.25).
        var q = WithDelta(QuantKind.LogSqrt2, 2, 1f);
        var x = T(0.9f, 0.4f, 0.2f, 1.1f, 1.3f, 0.0001f, 0f).RequireGrad();
        Ops.Sum(q.Forward(x)).Backward();
        Assert.Equal(new[] { 1f, 1f, 0f, 1f, 0f, 0f, 0f }, x.Grad!.ToArray()); // 0.2 → 4.6 → 5 flushed, 1.3 → −0.76 → clamped
    }

    [Theory]
    [InlineData(true, 2)]
    [InlineData(true, 4)]
    [InlineData(true, 8)]
    [InlineData(false, 3)]
    [InlineData(false, 8)]
    public void FastLevelLookupEqualsTheReferenceSearch(bool sqrt2, int bits)
    {
        // The fused op finds levels from a vectorised log2 plus threshold fix-ups; the reference is the
        // binary search of LogGrid.Level. They must agree everywhere, including right at the thresholds.
        var grid = new LogGrid(0.77f, bits, sqrt2);
        var rng = new Rng(4);
        var vals = new List<float> { 0f, -0f, -1f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1e-40f, float.Epsilon, 1e30f, grid.TopThreshold };
        foreach (float t in grid.Thresholds) vals.AddRange(new[] { t, MathF.BitIncrement(t), MathF.BitDecrement(t) });
        for (int i = 0; i < 3000; i++) vals.Add(rng.NextFloat() * 2f);
        for (int i = 0; i < 3000; i++) vals.Add(MathF.Exp(-90f * rng.NextFloat())); // down to 1e-39
        var x = vals.ToArray();
        var shifted = new float[x.Length];
        var levels = new int[x.Length];
        grid.FillLevels(x, 0f, 0f, shifted, levels, new float[x.Length]);
        for (int i = 0; i < x.Length; i++) Assert.True(grid.Level(x[i]) == levels[i], $"x = {x[i]:G9}: reference {grid.Level(x[i])}, fast {levels[i]}");
        // and the fused forward uses exactly these levels
        var q = WithDelta(sqrt2 ? QuantKind.LogSqrt2 : QuantKind.Log2, bits, 0.77f);
        var y = q.Forward(T(x));
        for (int i = 0; i < x.Length; i++) Assert.Equal(grid.FakeQuant(x[i]), y.Data[i]);
    }

    // The eight-lane backward block and value lookup against the scalar rule on every kind of value: the gradient
    // to x passes where the level is kept and x' ≤ T_{−1}, the step's gradient sums g·B^(−q) over kept levels.
    [Theory]
    [InlineData(true, 4)]
    [InlineData(false, 8)]
    public void VectorBackwardAndLookupEqualTheScalarRule(bool sqrt2, int bits)
    {
        var grid = new LogGrid(0.77f, bits, sqrt2);
        var rng = new Rng(6);
        var vals = new List<float> { 0f, -1f, float.NaN, 1e30f, grid.TopThreshold, MathF.BitIncrement(grid.TopThreshold), MathF.BitDecrement(grid.TopThreshold) };
        foreach (float t in grid.Thresholds) vals.AddRange(new[] { t, MathF.BitIncrement(t) });
        for (int i = 0; i < 2001; i++) vals.Add(rng.NextFloat() * 1.2f);
        var x = vals.ToArray();
        var g = x.Select(_ => rng.NextNormal()).ToArray();
        var levels = x.Select(grid.Level).ToArray();
        var y = new float[x.Length];
        grid.Dequantize(levels, 0.25f, y);
        var gx = x.Select((_, i) => 0.5f * i).ToArray();
        double s = grid.BackwardBlock(levels, x, g, gx);
        double want = 0;
        for (int i = 0; i < x.Length; i++)
        {
            bool kept = levels[i] < grid.Levels;
            Assert.Equal((kept ? grid.Values[levels[i]] : 0f) + 0.25f, y[i]);
            Assert.Equal(0.5f * i + (kept && x[i] <= grid.TopThreshold ? g[i] : 0f), gx[i]);
            if (kept) want += g[i] * (double)grid.Powers[levels[i]];
        }
        Assert.Equal(want, s, 1e-9 * Math.Max(1, Math.Abs(want)));
        Assert.Equal(s, grid.BackwardBlock(levels, x, g, default)); // no input gradient: the same sum
    }
}
