using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Tensors;
using static ViTQuant.Tests.Quantization.QuantTestUtil;

namespace ViTQuant.Tests.Quantization;

public class AdaRoundQuantizerTests
{
    private static readonly QuantSpec AdfqWeights = new()
    {
        Kind = QuantKind.Uniform, Bits = 4, Granularity = Granularity.PerChannel, Range = RangeMethod.Percentile, AdaRound = true,
    };

    /// <summary>A quantizer with a hand-set grid (one group) and rounding variables.</summary>
    private static AdaRoundQuantizer WithState(int bits, float scale, float zero, float[] v, bool hard = false)
    {
        var q = new AdaRoundQuantizer(new QuantSpec { Bits = bits, AdaRound = true });
        q.LoadState(new Dictionary<string, Tensor>
        {
            ["scale"] = T(scale), ["zero_point"] = T(zero), ["v"] = T(v), ["hard"] = T(hard ? 1f : 0f),
        });
        return q;
    }

    [Fact]
    public void RectifiedSigmoidStretchesAndClamps()
    {
        Assert.Equal(0.5f, AdaRoundQuantizer.RectifiedSigmoid(0f), 6);   // σ(0)·1.2 − 0.1
        Assert.Equal(0f, AdaRoundQuantizer.RectifiedSigmoid(-10f));      // 1.2σ − 0.1 < 0 → 0
        Assert.Equal(1f, AdaRoundQuantizer.RectifiedSigmoid(10f));       // > 1 → 1
        Assert.Equal((float)(1.2 / (1 + Math.Exp(-1)) - 0.1), AdaRoundQuantizer.RectifiedSigmoid(1f), 6);
    }

    [Fact]
    public void SoftAndHardForwardHandWorked()
    {
        // Δ = 1, z = 1, 2 bits [0, 3]: W̃ = clamp(⌊W⌋ + h + 1, 0, 3) − 1.
        // W = 0.3 with V = 0 (h = ½): soft 0.5, hard 1 (V ≥ 0 rounds up); V = −10 (h = 0): 0 either way;
        // W = 1.7, V = 10 (h = 1): 2 both; W = −2.5, V = 0: ⌊−2.5⌋ + ½ + 1 = −1.5 → clamped to 0 → −1.
        var w = T(0.3f, 0.3f, 1.7f, -2.5f);
        var v = new[] { 0f, -10f, 10f, 0f };
        var soft = WithState(2, 1f, 1f, v);
        Close(new[] { 0.5f, 0f, 2f, -1f }, soft.Forward(w).ToArray(), 1e-6, 0);
        var hard = WithState(2, 1f, 1f, v, hard: true);
        Assert.Equal(new[] { 1f, 0f, 2f, -1f }, hard.Forward(w).ToArray());
        Assert.True(hard.HardRounding);
        Assert.Empty(hard.LearnableParameters());
    }

    [Fact]
    public void InitialisationReproducesTheWeightAndHardRoundingIsNearest()
    {
        var rng = new Rng(7);
        var w = Tensor.Randn(rng, 0.05f, 6, 64);
        var q = Calibrated(new AdaRoundQuantizer(AdfqWeights), w);
        var soft = q.Forward(w);
        var layout = GroupLayout.For(Granularity.PerChannel, w.Shape);
        int compared = 0;
        for (int i = 0; i < w.Size; i++)
        {
            var p = q.Params(layout.GroupOf(i));
            float lo = (p.QMin - p.ZeroPoint) * p.Scale, hi = (p.QMax - p.ZeroPoint) * p.Scale;
            if (w.Data[i] <= lo || w.Data[i] >= hi) continue; // clipped by the percentile range
            // h(V) = frac(W/Δ) at init, so the soft weight is W itself (up to float rounding)
            Assert.True(MathF.Abs(soft.Data[i] - w.Data[i]) <= 1e-5f * p.Scale + 1e-6f * MathF.Abs(w.Data[i]), $"soft[{i}] = {soft.Data[i]} vs W = {w.Data[i]}");
            compared++;
        }
        Assert.True(compared > w.Size * 0.9);

        q.FreezeHardRounding();
        var hard = q.Forward(w);
        for (int i = 0; i < w.Size; i++)
        {
            var p = q.Params(layout.GroupOf(i));
            float u = w.Data[i] / p.Scale, frac = u - MathF.Floor(u);
            if (MathF.Abs(frac - 0.5f) < 1e-3f) continue; // the half-way case is V's sign, not ties-to-even
            Assert.Equal(p.FakeQuant(w.Data[i]), hard.Data[i]);
        }
    }

    [Fact]
    public void PercentileBaseGridIsSearchedPerChannelOnTheWeight()
    {
        var rng = new Rng(8);
        var w = Tensor.Randn(rng, 1f, 3, 2000);
        w[1, 5] = 30f; // an outlier in channel 1 only
        var q = Calibrated(new AdaRoundQuantizer(AdfqWeights), w);
        for (int c = 0; c < 3; c++)
        {
            var row = Enumerable.Range(0, 2000).Select(j => w[c, j]).OrderBy(v => v).ToArray();
            Assert.Equal(RangeSearch.Search(RangeMethod.Percentile, row, row[0], row[^1], 4, false, 2f), q.Params(c));
        }
        Assert.True(q.Params(1).Scale < 30f / 15, "the percentile search clips the single outlier");
    }

    [Fact]
    public void SoftForwardGradientToVMatchesFiniteDifferences()
    {
        // V in (−2, 2) keeps h(V) off its clamps; W/Δ well inside the grid keeps the level clamp inactive.
        var rng = new Rng(11);
        var w = Tensor.Uniform(rng, -0.4f, 0.4f, 4, 8).RequireGrad();
        var calib = w.Clone();
        for (int r = 0; r < 4; r++) { calib[r, 0] = -0.8f; calib[r, 1] = 0.8f; } // every row's grid covers [−0.8, 0.8]
        var q = Calibrated(new AdaRoundQuantizer(AdfqWeights with { Bits = 6, Range = RangeMethod.MinMax }), calib);
        var v = q.V!;
        rng.FillUniform(v.Span, -2f, 2f);
        GradCheck.Check(_ => q.Forward(w), new[] { v }, h: 1e-2, atol: 1e-4, rtol: 1e-2);
        Assert.Null(w.Grad); // W receives no gradient
    }

    [Theory]
    [InlineData(2f)]
    [InlineData(3.5f)]
    [InlineData(20f)]
    public void RoundingRegulariserValueAndGradient(float beta)
    {
        var rng = new Rng(12);
        var q = Calibrated(new AdaRoundQuantizer(AdfqWeights with { Range = RangeMethod.MinMax }), Tensor.Randn(rng, 1f, 2, 10));
        var v = q.V!;
        rng.FillUniform(v.Span, -2f, 2f);
        double expected = v.ToArray().Sum(x => 1 - Math.Pow(Math.Abs(2 * AdaRoundQuantizer.RectifiedSigmoid(x) - 1), beta));
        Assert.Equal(expected, q.RoundingLoss(beta).Item(), 4);
        GradCheck.Check(_ => q.RoundingLoss(beta), new[] { v }, h: 1e-3, atol: 2e-3, rtol: 2e-2);

        // hand values: h = ½ costs 1, h ∈ {0, 1} costs 0
        var hand = WithState(2, 1f, 0f, new[] { 0f, 10f, -10f });
        Assert.Equal(1f, hand.RoundingLoss(beta).Item(), 5);
    }

    [Fact]
    public void FreezingStopsLearningAndTheShapeIsChecked()
    {
        var w = Tensor.Randn(new Rng(1), 1f, 3, 4);
        var q = Calibrated(new AdaRoundQuantizer(AdfqWeights), w);
        Assert.Same(q.V, Assert.Single(q.LearnableParameters()));
        Assert.True(q.Forward(w).RequiresGrad);
        q.FreezeHardRounding();
        Assert.Empty(q.LearnableParameters());
        Assert.False(q.Forward(w).RequiresGrad);
        Assert.Throws<ViTQuantException>(() => q.Forward(Tensor.Zeros(4, 3)));
        Assert.Throws<ViTQuantException>(() => QuantizerFactory.Create(AdfqWeights, isWeight: false));
        Assert.Throws<ViTQuantException>(() => (AdfqWeights with { Kind = QuantKind.Lsq }).Validated());
    }
}
