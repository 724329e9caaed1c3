// Uniform quantization grids and the searches that pick their ranges from observed samples.
//
// The uniform rule (one definition used by the fake-quant kernels, the searches and the tests):
//     q  = clamp(round(x / Δ) + z, q_min, q_max)      round: half to even; x / Δ: a float division
//     x̂  = (q − z)·Δ
// Grids from a range [lo, hi]:
//     symmetric   M = max(|lo|, |hi|), Δ = 2M / (2^b − 1), z = 0, q ∈ [−2^(b−1), 2^(b−1) − 1]   (MimiQ)
//     asymmetric  lo ← min(lo, 0), hi ← max(hi, 0), Δ = (hi − lo)/(2^b − 1), z = round(−lo/Δ),
//                 q ∈ [0, 2^b − 1]
// *choice*: the asymmetric range is widened to contain 0 (as PyTorch's observers and the BRECQ/QDrop
// code ADFQ builds on do): zero is then exactly representable and z always lies in [0, 2^b − 1]; for
// negative-only or positive-only data the grid starts at 0 instead of at the data's own extreme.
// Δ and z are computed in double and rounded once to float. A zero range (all values 0) or any Δ
// below MinScale becomes Δ = MinScale = 1e-8, so no division by zero can occur; every value then
// quantizes to 0 or saturates.
//
// Searches (each candidate grid is scored on the observed sample with the rule above):
//     MinMax      [min, max] of all data (exact, from MinMaxObserver)
//     Percentile  (lo, hi) = (quantile(1 − p), quantile(p)), p ∈ {0.999, 0.9999, 0.99999}, least MSE
//     LpSearch    [α·min, α·max], α ∈ {0.01, 0.02, …, 1.00}, least mean |x − x̂|^p  (p = LpNorm)
//     LpZeroPointSearch  (ADFQ-ViT's published UniformAffineQuantizer, scale_method 'mse')
//                 data on both sides of 0, asymmetric: Δ_i = (max − min)·i/100/(2^b − 1), i = 1..100,
//                 and for each Δ_i every zero point z ∈ [0, 2^b − 1] (i outer, z inner), least mean
//                 |x − x̂|^p; the grid is (Δ_i, z) itself (its range [−zΔ, (2^b − 1 − z)Δ]).
//                 one-sided data (min ≥ 0 or max ≤ 0) or symmetric grids: LpSearch (the published 1-D
//                 search [0, α·max(|min|, max)] is LpSearch's range after widening to contain 0).
// Ties keep the earlier candidate. Quantiles interpolate linearly between order statistics, as
// torch.quantile does.
//
// The Lp searches score up to 100·2^b candidates on every observed value (DeiT-Base, 256 images: 39 M
// values per q/k/v point, 1,600 candidates at 4 bits, 25,600 at 8): hours on two cores. ArgMinError
// finds the same candidate as scoring all of them: it bounds each candidate's error from a 2^16-bin
// histogram (count, smallest and largest value per bin; a bin inside one grid cell has its error
// between the distances of its ends to that cell's level, a bin across cells between 0 and the
// largest of its ends' errors and Δ/2), then scores exactly only the candidates whose lower bound
// does not exceed the best upper bound (with a 1e-3 relative margin for float rounding), in candidate
// order. The best candidate's lower bound is below its error, which is at most every error, so it
// is always scored; ties among the scored keep the earlier one as before.
using System.Numerics.Tensors;
using ViTQuant.Kernels;

namespace ViTQuant.Quantization;

/// <summary>One uniform grid: step, zero point (an integer stored as float) and the integer range.</summary>
internal readonly record struct UniformParams(float Scale, float ZeroPoint, int QMin, int QMax)
{
    /// <summary>The integer level of x: clamp(round(x/Δ) + z, q_min, q_max), ties to even.</summary>
    public float Level(float x) => Math.Clamp(MathF.Round(x / Scale) + ZeroPoint, QMin, QMax);

    /// <summary>The fake-quantized value (level − z)·Δ.</summary>
    public float FakeQuant(float x) => (Level(x) - ZeroPoint) * Scale;
}

/// <summary>Builds uniform grids from ranges and searches ranges on observed samples.</summary>
internal static class RangeSearch
{
    /// <summary>The smallest step any quantizer uses; a zero or tinier range is widened to this.</summary>
    public const float MinScale = 1e-8f;

    /// <summary>The percentiles p of the (1 − p, p) quantile search (ADFQ-ViT, baselines).</summary>
    public static readonly double[] Percentiles = { 0.999, 0.9999, 0.99999 };

    /// <summary>Number of shrink factors α = k/100, k = 1..100, of the Lp grid search.</summary>
    public const int LpCandidates = 100;

    /// <summary>Integer range [q_min, q_max] of a b-bit grid.</summary>
    public static (int QMin, int QMax) IntRange(int bits, bool symmetric) =>
        symmetric ? (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) : (0, (1 << bits) - 1);

    /// <summary>Δ itself, or MinScale when Δ is smaller or NaN.</summary>
    public static float SafeScale(float scale) => scale >= MinScale ? scale : MinScale;

    /// <summary>The grid for the range [lo, hi] (see the file header for both forms).</summary>
    public static UniformParams FromRange(float lo, float hi, int bits, bool symmetric)
    {
        var (qmin, qmax) = IntRange(bits, symmetric);
        double levels = (1 << bits) - 1;
        if (symmetric)
        {
            double m = Math.Max(Math.Abs((double)lo), Math.Abs((double)hi));
            return new UniformParams(SafeScale((float)(2 * m / levels)), 0f, qmin, qmax);
        }
        double l = Math.Min(lo, 0.0), h = Math.Max(hi, 0.0);
        float scale = SafeScale((float)((h - l) / levels));
        float zero = (float)Math.Clamp(Math.Round(-l / scale, MidpointRounding.ToEven), qmin, qmax);
        return new UniformParams(scale, zero, qmin, qmax);
    }

    /// <summary>
    /// The q-quantile of sorted values with linear interpolation between the order statistics at
    /// q·(n − 1) (torch.quantile's default). Throws ArgumentException for an empty span.
    /// </summary>
    public static float Quantile(ReadOnlySpan<float> sorted, double q)
    {
        if (sorted.Length == 0) throw new ArgumentException("quantile of an empty sample");
        double pos = Math.Clamp(q, 0, 1) * (sorted.Length - 1);
        int i = (int)Math.Floor(pos);
        if (i >= sorted.Length - 1) return sorted[^1];
        double f = pos - i;
        return (float)(sorted[i] + f * ((double)sorted[i + 1] - sorted[i]));
    }

    /// <summary>Mean of |x − x̂|^p over the sample (p = 2: the MSE). NaN-free for finite samples.</summary>
    public static double Error(ReadOnlySpan<float> sample, UniformParams grid, float p)
    {
        if (sample.Length == 0) return 0;
        const int Block = 4096;
        Span<float> e = stackalloc float[Math.Min(Block, sample.Length)];
        double total = 0;
        for (int start = 0; start < sample.Length; start += Block)
        {
            var xs = sample.Slice(start, Math.Min(Block, sample.Length - start));
            var err = e[..xs.Length];
            FakeQuant.UniformSpan(xs, err, grid.Scale, grid.ZeroPoint, grid.QMin, grid.QMax); // = grid.FakeQuant per element
            TensorPrimitives.Subtract(xs, err, err);
            total += PowerSum(err, p);
        }
        return total / sample.Length;
    }

    /// <summary>Σ |e|^p, with exact fast paths for p = 1 and p = 2.</summary>
    internal static double PowerSum(Span<float> err, float p)
    {
        if (p == 2f) return TensorPrimitives.SumOfSquares(err);
        TensorPrimitives.Abs(err, err);
        if (p == 1f) return TensorPrimitives.Sum(err);
        // |e|^p = exp(p·ln|e|); ln 0 = −∞ gives exp(−∞) = 0 as wanted.
        TensorPrimitives.Log(err, err);
        TensorPrimitives.Multiply(err, p, err);
        TensorPrimitives.Exp(err, err);
        return TensorPrimitives.Sum(err);
    }

    /// <summary>
    /// The grid a range method picks for one group. <paramref name="sample"/> is the group's sample, in
    /// ascending order for Percentile (its quantiles), in any order for the Lp searches, unused by MinMax;
    /// min/max are the group's exact extremes. Throws ArgumentException when a searching method gets an empty sample.
    /// </summary>
    public static UniformParams Search(RangeMethod method, ReadOnlySpan<float> sample, float min, float max, int bits, bool symmetric, float lpNorm)
    {
        if (method == RangeMethod.MinMax) return FromRange(FiniteOrZero(min), FiniteOrZero(max), bits, symmetric);
        if (sample.Length == 0) throw new ArgumentException($"{method} range search needs observed values");
        if (method == RangeMethod.Percentile)
        {
            UniformParams best = default;
            double bestErr = 0;
            for (int k = 0; k < Percentiles.Length; k++)
            {
                double p = Percentiles[k];
                var grid = FromRange(Quantile(sample, 1 - p), Quantile(sample, p), bits, symmetric);
                double err = Error(sample, grid, 2f);
                if (k == 0 || err < bestErr) { bestErr = err; best = grid; }
            }
            return best;
        }
        min = FiniteOrZero(min);
        max = FiniteOrZero(max);
        if (method == RangeMethod.LpZeroPointSearch && !symmetric && min < 0 && max > 0)
            return SearchStepAndZeroPoint(sample, min, max, bits, lpNorm);
        // LpSearch: the 100 shrunk ranges, first best in order.
        var grids = new UniformParams[LpCandidates];
        for (int k = 0; k < LpCandidates; k++)
        {
            float a = (k + 1) / (float)LpCandidates;
            grids[k] = FromRange(a * min, a * max, bits, symmetric);
        }
        return grids[ArgMinError(sample.ToArray(), grids, lpNorm)];
    }

    /// <summary>The 2-D (step, zero point) search of LpZeroPointSearch (file header) on the observed values.</summary>
    public static UniformParams SearchStepAndZeroPoint(ReadOnlySpan<float> values, float min, float max, int bits, float lpNorm)
    {
        var grids = StepAndZeroPointCandidates(min, max, bits);
        return grids[ArgMinError(values.ToArray(), grids, lpNorm)];
    }

    /// <summary>The reference twin of the pruned search: every candidate scored on every value.</summary>
    internal static UniformParams SearchStepAndZeroPointBruteForce(ReadOnlySpan<float> values, float min, float max, int bits, float lpNorm)
    {
        var grids = StepAndZeroPointCandidates(min, max, bits);
        var data = values.ToArray();
        var errs = new double[grids.Length];
        Parallelism.For(0, grids.Length, c => errs[c] = Error(data, grids[c], lpNorm));
        int arg = 0;
        for (int c = 1; c < grids.Length; c++) if (errs[c] < errs[arg]) arg = c;
        return grids[arg];
    }

    private static UniformParams[] StepAndZeroPointCandidates(float min, float max, int bits)
    {
        var (qmin, qmax) = IntRange(bits, symmetric: false);
        int zeros = qmax + 1;
        // Δ_i as the published code computes it in float32: (range / 100 · i) / (2^b − 1).
        float range = max - min;
        var grids = new UniformParams[LpCandidates * zeros];
        for (int c = 0; c < grids.Length; c++)
        {
            int i = c / zeros + 1, z = c % zeros;
            grids[c] = new UniformParams(SafeScale(range / LpCandidates * i / qmax), z, qmin, qmax);
        }
        return grids;
    }

    private const int HistogramBins = 1 << 16;

    /// <summary>
    /// Index of the first candidate with the least <see cref="Error"/> on the data: exactly what scoring
    /// every candidate gives, with most candidates ruled out by histogram bounds (file header).
    /// </summary>
    internal static int ArgMinError(float[] data, UniformParams[] grids, float p) => ArgMinError(data, grids, p, out _);

    /// <param name="data">the observed values.</param>
    /// <param name="grids">the candidates, in the order ties are broken.</param>
    /// <param name="p">the error's exponent.</param>
    /// <param name="scored">how many candidates were scored exactly (the rest were ruled out by bounds).</param>
    /// <param name="bins">histogram bins (tests use fewer, to reach the bounded path on small data).</param>
    internal static int ArgMinError(float[] data, UniformParams[] grids, float p, out int scored, int bins = HistogramBins)
    {
        var errs = new double[grids.Length];
        Array.Fill(errs, double.PositiveInfinity);
        var candidates = Enumerable.Range(0, grids.Length).ToArray();
        // Small problems, or data the histogram cannot bin: score everything.
        if ((long)data.Length * grids.Length > 64L * bins && data.Length > 4 * bins
            && Histogram(data, bins) is { } h)
        {
            // Bounds first on the histogram with every CoarseMerge consecutive bins merged (still bounds, looser),
            // which rule out most candidates at a fraction of the cost, then on the full histogram for the rest.
            foreach (var level in new[] { Coarsen(h, CoarseMerge), h })
            {
                var kept = candidates;
                var lower = new double[kept.Length];
                var upper = new double[kept.Length];
                Parallelism.For(0, kept.Length, i => (lower[i], upper[i]) = Bounds(level, grids[kept[i]], p));
                double best = upper.Min() * (1 + 1e-3) / data.Length;
                candidates = kept.Where((_, i) => lower[i] / data.Length <= best).ToArray();
            }
        }
        Parallelism.For(0, candidates.Length, i => errs[candidates[i]] = Error(data, grids[candidates[i]], p));
        scored = candidates.Length;
        int arg = candidates[0];
        foreach (int c in candidates) if (errs[c] < errs[arg]) arg = c;
        return arg;
    }

    /// <summary>Non-empty bins of a histogram over [min, max]: count, smallest and largest value; null when some value is not finite.</summary>
    private static (float[] Lo, float[] Hi, long[] Count)? Histogram(float[] data, int bins)
    {
        float min = TensorPrimitives.Min(data), max = TensorPrimitives.Max(data);
        if (!float.IsFinite(min) || !float.IsFinite(max)) return null;
        var count = new long[bins];
        var lo = new float[bins];
        var hi = new float[bins];
        Array.Fill(lo, float.PositiveInfinity);
        Array.Fill(hi, float.NegativeInfinity);
        double scale = max > min ? bins / ((double)max - min) : 0;
        foreach (float x in data)
        {
            int k = Math.Min(bins - 1, (int)((x - (double)min) * scale));
            count[k]++;
            if (x < lo[k]) lo[k] = x;
            if (x > hi[k]) hi[k] = x;
        }
        var used = Enumerable.Range(0, bins).Where(k => count[k] > 0).ToArray();
        return (used.Select(k => lo[k]).ToArray(), used.Select(k => hi[k]).ToArray(), used.Select(k => count[k]).ToArray());
    }

    // Measured on ADFQ-ViT's q/k/v points (vit_fmnist, 256 images: 1.6 M values, ~45,000 non-empty bins, 1,600
    // candidates, 2–4 scored exactly): bounding every candidate on the full histogram took 1.0–2.2 s of each
    // point's 1.1–2.5 s search.
    private const int CoarseMerge = 64;

    /// <summary>The histogram with every <paramref name="merge"/> consecutive non-empty bins merged into one.</summary>
    private static (float[] Lo, float[] Hi, long[] Count) Coarsen((float[] Lo, float[] Hi, long[] Count) h, int merge)
    {
        int n = (h.Lo.Length + merge - 1) / merge;
        var lo = new float[n];
        var hi = new float[n];
        var count = new long[n];
        for (int j = 0; j < n; j++)
        {
            int a = j * merge, b = Math.Min(h.Lo.Length, a + merge);
            // Bins are in value order, so the merged bin runs from the first one's low end to the last one's high end.
            lo[j] = h.Lo[a];
            hi[j] = h.Hi[b - 1];
            for (int k = a; k < b; k++) count[j] += h.Count[k];
        }
        return (lo, hi, count);
    }

    /// <summary>Lower and upper bounds of Σ|x − x̂|^p over the histogram's values for one grid.</summary>
    private static (double Lower, double Upper) Bounds((float[] Lo, float[] Hi, long[] Count) h, UniformParams g, float p)
    {
        int n = h.Lo.Length;
        var eMin = new float[n];
        var eMax = new float[n];
        for (int j = 0; j < n; j++)
        {
            float a = h.Lo[j], b = h.Hi[j], qa = g.FakeQuant(a), qb = g.FakeQuant(b);
            float ea = MathF.Abs(a - qa), eb = MathF.Abs(b - qb);
            if (qa == qb)
            {
                eMin[j] = qa >= a && qa <= b ? 0f : MathF.Min(ea, eb);
                eMax[j] = MathF.Max(ea, eb);
            }
            else
            {
                eMin[j] = 0f;
                eMax[j] = MathF.Max(MathF.Max(ea, eb), 0.5f * g.Scale);
            }
        }
        if (p != 1f)
        {
            TensorPrimitives.Pow(eMin, p, eMin);
            TensorPrimitives.Pow(eMax, p, eMax);
        }
        double lower = 0, upper = 0; // in double: counts reach 10^8 and the sums must not lose the margin
        for (int j = 0; j < n; j++)
        {
            lower += h.Count[j] * (double)eMin[j];
            upper += h.Count[j] * (double)eMax[j];
        }
        return (lower, upper);
    }

    private static float FiniteOrZero(float v) => float.IsFinite(v) ? v : 0f;
}
