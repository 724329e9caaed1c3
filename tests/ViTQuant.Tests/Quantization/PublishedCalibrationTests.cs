// Calibration checked against an independent reference of the published ADFQ-ViT code
// (llwx593/adfq-vit, quant/quant_layer.py), written here from its formulas in double precision on the
// full, sorted data: TokenQuantizer (per-patch), FC2Quantizer (Shift-Log2), LogSqrt2Quantizer
// (post-softmax) and UniformAffineQuantizer's 2-D 'mse' search (q, k, v). Every case feeds more values
// per group than the old bounded observers kept (4,096 per token, 2^20 per tensor), over several
// batches, so any sampling would show.
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Quantization;

public class PublishedCalibrationTests
{
    private static readonly double[] Pcts = { 0.999, 0.9999, 0.99999 };

    /// <summary>torch.quantile / np.percentile 'linear': sorted[floor(q(n−1))] interpolated.</summary>
    private static double Quantile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int i = (int)Math.Floor(pos);
        if (i >= sorted.Length - 1) return sorted[^1];
        return sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]);
    }

    /// <summary>TokenQuantizer.init_quantization_scale(token_wise=False) on one token's values.</summary>
    private static (double Delta, double Zero) PublishedUniformPercentile(double[] x, int bits)
    {
        var sorted = x.OrderBy(v => v).ToArray();
        double levels = (1 << bits) - 1, best = 1e10, delta = double.NaN, zero = double.NaN;
        foreach (double p in Pcts)
        {
            double hi = Quantile(sorted, p), lo = Quantile(sorted, 1 - p);
            double d = (hi - lo) / levels, z = Math.Round(-lo / d, MidpointRounding.ToEven), err = 0;
            foreach (double v in x)
            {
                double q = Math.Clamp(Math.Round(v / d, MidpointRounding.ToEven) + z, 0, levels);
                err += (v - (q - z) * d) * (v - (q - z) * d);
            }
            err /= x.Length;
            if (err < best) { best = err; delta = d; zero = z; }
        }
        return (delta, zero);
    }

    /// <summary>LogSqrt2Quantizer.quantize / FC2Quantizer.quantize.</summary>
    private static double LogSqrt2(double x, double delta, int bits)
    {
        double q = Math.Round(-2 * Math.Log2(x / delta), MidpointRounding.ToEven);
        if (double.IsNaN(q) || q >= (1 << bits)) return 0;
        q = Math.Max(q, 0);
        return Math.Pow(2, -Math.Ceiling(q / 2)) * (q % 2 == 1 ? Math.Sqrt(2) : 1) * delta;
    }

    /// <summary>LogSqrt2Quantizer.init_quantization_scale: Δ = the best of quantile(p) by MSE.</summary>
    private static double PublishedLogDelta(double[] x, int bits)
    {
        var sorted = x.OrderBy(v => v).ToArray();
        double best = 1e10, delta = sorted[^1];
        foreach (double p in Pcts)
        {
            double d = Quantile(sorted, p), err = 0;
            foreach (double v in x) err += Math.Pow(v - LogSqrt2(v, d, bits), 2);
            err /= x.Length;
            if (err < best) { best = err; delta = d; }
        }
        return delta;
    }

    private static Tensor[] Batches(int count, Func<Rng, Tensor> make, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, count).Select(_ => make(rng)).ToArray();
    }

    [Fact]
    public void PerPatchStepsAndZeroPointsEqualThePublishedOnesOverEveryValue()
    {
        // 6 batches [16, 4, 640]: 61,440 values per token (15× the old 4,096 reservoir); some |x| > α.
        const int bits = 4, n = 4, c = 640;
        var batches = Batches(6, r =>
        {
            var t = Tensor.Randn(r, 1.5f, 16, n, c);
            for (int i = 0; i < t.Size; i += 997) t.Data[i] *= 6f; // outliers beyond α = 5
            return t;
        }, 11);
        var spec = new QuantSpec { Kind = QuantKind.PerPatchOutlier, Bits = bits, Granularity = Granularity.PerToken, OutlierThreshold = 5f, Range = RangeMethod.Percentile };
        var q = new PerPatchOutlierQuantizer(spec, seed: 3);
        foreach (var b in batches) q.Observe(b);
        q.Calibrate();
        Assert.Equal(6L * 16 * n * c, q.ValuesSeen);
        Assert.Equal(q.ValuesSeen, q.ValuesUsed);
        for (int t = 0; t < n; t++)
        {
            var x = batches.SelectMany(b => Enumerable.Range(0, 16).SelectMany(i => b.Data.AsSpan((i * n + t) * c, c).ToArray()))
                .Select(v => Math.Abs(v) > 5f ? 0.0 : v).ToArray(); // the code zeroes outliers before calibrating
            var (delta, zero) = PublishedUniformPercentile(x, bits);
            var ours = q.Params(t);
            Assert.True(Math.Abs(ours.Scale - delta) <= 1e-5 * delta, $"token {t}: Δ {ours.Scale} vs published {delta}");
            Assert.Equal(zero, ours.ZeroPoint);
        }
    }

    [Fact]
    public void ShiftLogStepEqualsThePublishedOneOverMoreThanTwoToTheTwentyValues()
    {
        // 3 batches [8, 50, 3000] after GELU: 3.6 M values (3.4× the old 2^20 sample).
        const int bits = 4;
        var batches = Batches(3, r => Ops.Gelu(Tensor.Randn(r, 1.2f, 8, 50, 3000)), 12);
        var q = new ShiftLogQuantizer(new QuantSpec { Kind = QuantKind.ShiftLog, Bits = bits, SqrtTwoBase = true, Range = RangeMethod.Percentile }, seed: 5);
        foreach (var b in batches) q.Observe(b);
        q.Calibrate();
        Assert.Equal(3L * 8 * 50 * 3000, q.ValuesUsed);
        float m = batches.Min(b => b.Data.Min());
        Assert.Equal(m, q.Shift);
        // FC2Quantizer: x − x.min() + 1e-6 in float32, then the log√2 Δ search.
        var shifted = batches.SelectMany(b => b.Data).Select(v => (double)(v - m + 1e-6f)).ToArray();
        double delta = PublishedLogDelta(shifted, bits);
        float ours = q.Delta!.Item();
        Assert.True(Math.Abs(ours - delta) <= 1e-5 * delta, $"Δ {ours} vs published {delta}");
    }

    [Fact]
    public void PostSoftmaxStepIsThePublishedPercentileSearch()
    {
        // 3 batches of attention maps [8, 4, 60, 60] plus a plan check: the adfq preset searches Δ.
        const int bits = 3;
        var batches = Batches(3, r => Ops.Softmax(Tensor.Randn(r, 2.5f, 8, 4, 60, 60), -1), 13);
        var spec = QuantPresets.Create("adfq", 4, bits).ActivationSpec("blocks.0.attn.probs")!;
        Assert.Equal(RangeMethod.Percentile, spec.Range);
        var q = new LogQuantizer(spec);
        foreach (var b in batches) q.Observe(b);
        q.Calibrate();
        double delta = PublishedLogDelta(batches.SelectMany(b => b.Data).Select(v => (double)v).ToArray(), bits);
        Assert.True(Math.Abs(q.Delta - delta) <= 1e-5 * delta, $"Δ {q.Delta} vs published {delta}");
        Assert.True(q.Delta < batches.Max(b => b.Data.Max()), "a searched Δ, not max(p)");
    }

    [Fact]
    public void QkvSearchesTheZeroPointWithTheStepAsPublished()
    {
        // UniformAffineQuantizer.perform_2D_search: Δ_i = (max − min)/100·i/(2^b − 1), z ∈ [0, 2^b − 1],
        // least mean |x − x̂|^2.4; skewed two-sided data so that the best z is not round(−min/Δ).
        const int bits = 3;
        var batches = Batches(2, r =>
        {
            var t = Tensor.Randn(r, 1f, 4, 2, 40, 16);
            for (int i = 0; i < t.Size; i++) t.Data[i] = t.Data[i] > 0 ? t.Data[i] * 3f : t.Data[i] * 0.5f;
            return t;
        }, 14);
        var spec = QuantPresets.Create("adfq", 4, bits).ActivationSpec("blocks.0.attn.q")!;
        Assert.Equal(RangeMethod.LpZeroPointSearch, spec.Range);
        var q = new UniformQuantizer(spec);
        foreach (var b in batches) q.Observe(b);
        q.Calibrate();
        var x = batches.SelectMany(b => b.Data).ToArray();
        float min = x.Min(), max = x.Max();
        int levels = (1 << bits) - 1;
        double bestScore = 1e10, bestDelta = 0, bestZero = 0;
        for (int i = 1; i <= 100; i++)
        {
            float d = (max - min) / 100f * i / levels;
            for (int z = 0; z <= levels; z++)
            {
                double s = 0;
                foreach (float v in x)
                {
                    double lv = Math.Clamp(Math.Round(v / d, MidpointRounding.ToEven) + z, 0, levels);
                    s += Math.Pow(Math.Abs(v - (lv - z) * d), 2.4);
                }
                s /= x.Length;
                if (s < bestScore) { bestScore = s; bestDelta = d; bestZero = z; }
            }
        }
        var ours = q.Params(0);
        Assert.Equal((float)bestDelta, ours.Scale);
        Assert.Equal(bestZero, ours.ZeroPoint);
    }

    [Fact]
    public void ASampleIsADeliberateOptionPrintedWithTheSpec()
    {
        var spec = new QuantSpec { Kind = QuantKind.PerPatchOutlier, Bits = 4, Granularity = Granularity.PerToken, Range = RangeMethod.Percentile, SampleSize = 4096 };
        Assert.Contains("sample 4096/group", spec.ToString());
        Assert.Throws<ViTQuantException>(() => (spec with { SampleSize = -1 }).Validated());
        var q = new PerPatchOutlierQuantizer(spec, seed: 1);
        var rng = new Rng(4);
        for (int b = 0; b < 4; b++) q.Observe(Tensor.Randn(rng, 1f, 8, 3, 256)); // 8192 per token
        q.Calibrate();
        Assert.Equal(4L * 8 * 3 * 256, q.ValuesSeen);
        Assert.Equal(3L * 4096, q.ValuesUsed);
    }
}
