// Logarithmic grids (base 2 or √2) and their fused fake-quant op, shared by LogQuantizer (post-softmax)
// and ShiftLogQuantizer (post-GELU, in the shifted domain).
//
// With L = 2^b levels and step Δ:
//     q  = round(−log_B(x/Δ))          q < 0 → 0 (clamped to the top level Δ)
//     x̂  = Δ·B^(−q) for 0 ≤ q ≤ L − 1; x̂ = 0 when q ≥ L (and for x ≤ 0 or NaN)
// B = √2 gives RepQ-ViT's log√2 levels Δ·2^(−q/2); B = 2 gives Δ·2^(−q).
// The level is found without evaluating a logarithm: −log_B(x/Δ) < k + ½ ⇔ x > T_k = Δ·B^(−(k+½)),
// so q = min{k : x > T_k}. T_k is irrational (B^(−(k+½)) is an odd power of 2^(1/4) or 2^(1/2) times
// a float), so no x sits exactly on a rounding tie and the comparison decides round() exactly. T_k is
// computed in double and rounded DOWN to float, which keeps "x > T_k" exact for float x (an integer
// runtime can use the same float table). Values Δ·B^(−k) are computed in double and rounded once.
// Level() is the reference (a binary search over T); the fused op uses FillLevels (equal results, tested):
// for at most 16 levels it counts the thresholds x does not exceed (every comparison, 8 lanes); for more it
// starts from a vectorised log2 estimate and settles it with the same comparisons (AVX2 gathers of T).
// Values and B^(−q) are looked up by gathers, or by one AVX-512 permute of the table for at most 16 levels.
//
// Gradients: ∂x̂/∂x = 1 where round(−log_B(x/Δ)) lies in [0, L − 1] (T_{L−1} < x ≤ T_{−1}), else 0
// (the straight-through rule of the uniform quantizers: no gradient where clamped or flushed);
// ∂x̂/∂Δ = B^(−q) for every non-flushed element (q held fixed: x̂ is Δ times a constant there).
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using ViTQuant.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace ViTQuant.Quantization;

/// <summary>A b-bit logarithmic grid of base 2 or √2 with top level Δ.</summary>
internal sealed class LogGrid
{
    /// <param name="delta">top level Δ (values below RangeSearch.MinScale become MinScale).</param>
    /// <param name="bits">2–8.</param>
    /// <param name="sqrtTwoBase">base √2 (true) or 2 (false).</param>
    /// <exception cref="ArgumentOutOfRangeException">when bits is outside 2–8.</exception>
    public LogGrid(float delta, int bits, bool sqrtTwoBase)
    {
        if (bits < 2 || bits > 8) throw new ArgumentOutOfRangeException(nameof(bits), $"bits must be 2–8, got {bits}");
        Delta = RangeSearch.SafeScale(delta);
        Levels = 1 << bits;
        SqrtTwoBase = sqrtTwoBase;
        double log2B = sqrtTwoBase ? 0.5 : 1.0;
        Thresholds = new float[Levels];
        Values = new float[Levels];
        Powers = new float[Levels];
        for (int k = 0; k < Levels; k++)
        {
            Thresholds[k] = RoundDown(Delta * Math.Pow(2, -log2B * (k + 0.5)));
            Powers[k] = (float)Math.Pow(2, -log2B * k);
            Values[k] = (float)(Delta * Math.Pow(2, -log2B * k));
        }
        TopThreshold = RoundDown(Delta * Math.Pow(2, log2B * 0.5));
    }

    /// <summary>The top level Δ (the largest representable value).</summary>
    public float Delta { get; }

    /// <summary>Number of levels 2^b (level index Levels means "flushed to 0").</summary>
    public int Levels { get; }

    /// <summary>True for base √2 (levels Δ·2^(−k/2)), false for base 2.</summary>
    public bool SqrtTwoBase { get; }

    /// <summary>T_k = Δ·B^(−(k+½)) rounded down to float: x &gt; T_k ⇔ round(−log_B(x/Δ)) ≤ k.</summary>
    public float[] Thresholds { get; }

    /// <summary>T_{−1} = Δ·B^(½) rounded down: x &gt; T_{−1} ⇔ the unclamped level is negative.</summary>
    public float TopThreshold { get; }

    /// <summary>Dequantized values Δ·B^(−k).</summary>
    public float[] Values { get; }

    /// <summary>B^(−k), the derivative of Values[k] with respect to Δ.</summary>
    public float[] Powers { get; }

    /// <summary>The level of x in [0, Levels − 1], or Levels when x is flushed to 0 (q ≥ 2^b, x ≤ 0, NaN).</summary>
    public int Level(float x)
    {
        var t = Thresholds;
        int lo = 0, hi = t.Length; // thresholds decrease: find the first k with x > T_k
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (x > t[mid]) hi = mid;
            else lo = mid + 1;
        }
        return lo;
    }

    /// <summary>
    /// Levels of x' = (x − shift) + eps for a span (the fast path of <see cref="Level"/>, same result):
    /// a vectorised log2 gives the level up to ±1, then the exact thresholds settle it.
    /// <paramref name="shifted"/> receives x'.
    /// </summary>
    internal void FillLevels(ReadOnlySpan<float> x, float shift, float eps, Span<float> shifted, Span<int> levels, Span<float> scratch)
    {
        int start = !Avx2.IsSupported ? 0 : Levels <= 16 ? FillLevelsByCount(x, shift, eps, shifted, levels) : FillLevelsAvx2(x, shift, eps, shifted, levels);
        if (start == x.Length) return;
        x = x[start..];
        shifted = shifted[start..];
        levels = levels[start..];
        TensorPrimitives.Subtract(x, shift, shifted);
        TensorPrimitives.Add(shifted, eps, shifted);
        TensorPrimitives.Log2(shifted, scratch);
        float log2Delta = MathF.Log2(Delta), perLevel = SqrtTwoBase ? 2f : 1f; // levels per octave
        var t = Thresholds;
        int top = Levels;
        for (int i = 0; i < x.Length; i++)
        {
            float v = shifted[i], lv = (log2Delta - scratch[i]) * perLevel;
            int k = !(lv < top) ? top : lv <= 0 ? 0 : (int)MathF.Round(lv); // NaN, x' ≤ 0 → flushed
            while (k > 0 && v > t[k - 1]) k--;
            while (k < top && !(v > t[k])) k++;
            levels[i] = k;
        }
    }

    /// <summary>
    /// FillLevels for grids of at most 16 levels, on whole blocks of 8 lanes: the thresholds decrease, so the level
    /// min{k : x &gt; T_k} is the number of k with x ≤ T_k — the same comparisons, all of them, no estimate and no
    /// gathers. NaN (no comparison holds) is flushed as the reference flushes it. Returns how many values it did.
    /// </summary>
    private unsafe int FillLevelsByCount(ReadOnlySpan<float> x, float shift, float eps, Span<float> shifted, Span<int> levels)
    {
        int n = x.Length & ~7, top = Levels;
        var vshift = Vector256.Create(shift);
        var veps = Vector256.Create(eps);
        var itop = Vector256.Create(top);
        Span<Vector256<float>> t = stackalloc Vector256<float>[top];
        for (int k = 0; k < top; k++) t[k] = Vector256.Create(Thresholds[k]);
        fixed (float* px = x, ps = shifted)
        fixed (int* pl = levels)
            for (int i = 0; i < n; i += 8)
            {
                var v = Vector256.Load(px + i) - vshift + veps; // as Subtract then Add: the same two roundings
                v.Store(ps + i);
                var count = Vector256<int>.Zero;
                for (int k = 0; k < top; k++) count -= Vector256.LessThanOrEqual(v, t[k]).AsInt32(); // true lanes are −1
                Vector256.ConditionalSelect(Vector256.Equals(v, v).AsInt32(), count, itop).Store(pl + i);
            }
        return n;
    }

    /// <summary>
    /// FillLevels on whole blocks of 8 lanes (AVX2 gathers for the thresholds); returns how many values it did.
    /// Each lane's estimate is settled by the same comparisons, repeated until no lane moves, so the levels are
    /// exact whatever the estimate's error (denormals included).
    /// </summary>
    private unsafe int FillLevelsAvx2(ReadOnlySpan<float> x, float shift, float eps, Span<float> shifted, Span<int> levels)
    {
        int n = x.Length & ~7, top = Levels;
        var vshift = Vector256.Create(shift);
        var veps = Vector256.Create(eps);
        var vlog2Delta = Vector256.Create(MathF.Log2(Delta));
        var vper = Vector256.Create(SqrtTwoBase ? 2f : 1f);
        var vtop = Vector256.Create((float)top);
        var itop = Vector256.Create(top);
        var one = Vector256.Create(1);
        fixed (float* px = x, ps = shifted, t = Thresholds)
        fixed (int* pl = levels)
            for (int i = 0; i < n; i += 8)
            {
                var v = Vector256.Load(px + i) - vshift + veps; // as Subtract then Add: the same two roundings
                v.Store(ps + i);
                var lv = (vlog2Delta - Vector256.Log2(v)) * vper;
                // k = top for NaN / lv ≥ top, 0 for lv ≤ 0, round(lv) between
                var kf = Vector256.ConditionalSelect(Vector256.LessThan(lv, vtop),
                    Vector256.ConditionalSelect(Vector256.LessThanOrEqual(lv, Vector256<float>.Zero), Vector256<float>.Zero, Vector256.Round(lv)), vtop);
                var k = Vector256.ConvertToInt32(kf);
                while (true) // k−1 while x > T[k−1]
                {
                    var prev = Avx2.GatherVector256(t, Vector256.Max(k - one, Vector256<int>.Zero), 4);
                    var down = Vector256.GreaterThan(k, Vector256<int>.Zero) & Vector256.GreaterThan(v, prev).AsInt32();
                    if (down == Vector256<int>.Zero) break;
                    k += down; // −1 in the lanes that move
                }
                while (true) // k+1 while !(x > T[k])
                {
                    var cur = Avx2.GatherVector256(t, Vector256.Min(k, itop - one), 4);
                    var up = Vector256.LessThan(k, itop) & ~Vector256.GreaterThan(v, cur).AsInt32();
                    if (up == Vector256<int>.Zero) break;
                    k -= up;
                }
                k.Store(pl + i);
            }
        return n;
    }

    /// <summary>y = (level &lt; Levels ? Values[level] : 0) + offset, 8 lanes at a time (AVX2 gathers) and a scalar tail.</summary>
    internal unsafe void Dequantize(ReadOnlySpan<int> levels, float offset, Span<float> y)
    {
        int n = levels.Length, i = 0, top = Levels;
        float[] vals = Values;
        if (top <= 16 && Avx512F.IsSupported)
        {
            // At most 16 levels: the table fits one register and a permute replaces the gather.
            var table = Table16(vals);
            var itop = Vector512.Create(top);
            var voff = Vector512.Create(offset);
            fixed (int* pl = levels)
            fixed (float* py = y)
                for (; i + 16 <= n; i += 16)
                {
                    var k = Vector512.Load(pl + i);
                    var v = Avx512F.PermuteVar16x32(table, Vector512.Min(k, itop - Vector512<int>.One));
                    ((v & Vector512.LessThan(k, itop).AsSingle()) + voff).Store(py + i);
                }
        }
        if (Avx2.IsSupported)
        {
            var itop = Vector256.Create(top);
            var voff = Vector256.Create(offset);
            fixed (int* pl = levels)
            fixed (float* pv = vals, py = y)
                for (; i + 8 <= n; i += 8)
                {
                    var k = Vector256.Load(pl + i);
                    var v = Avx2.GatherVector256(pv, Vector256.Min(k, itop - Vector256<int>.One), 4);
                    ((v & Vector256.LessThan(k, itop).AsSingle()) + voff).Store(py + i);
                }
        }
        for (; i < n; i++) y[i] = (levels[i] < top ? vals[levels[i]] : 0f) + offset;
    }

    /// <summary>
    /// One block of the fused op's backward: gx[i] += g[i] where the level is not flushed and x'[i] ≤ T_{−1}
    /// (gx may be empty), and returns Σ g·B^(−q) over the levels not flushed (∂x̂/∂Δ). Eight lanes at a time;
    /// each product is exact in double, so only the summation order differs from the scalar tail's.
    /// </summary>
    internal unsafe double BackwardBlock(ReadOnlySpan<int> levels, ReadOnlySpan<float> shifted, ReadOnlySpan<float> g, Span<float> gx)
    {
        int n = levels.Length, i = 0, top = Levels;
        float[] pw = Powers;
        float topThreshold = TopThreshold;
        double s = 0;
        if (top <= 16 && Avx512F.IsSupported)
        {
            var table = Table16(pw);
            var itop = Vector512.Create(top);
            var vtopT = Vector512.Create(topThreshold);
            Vector512<double> s0 = default, s1 = default;
            fixed (int* pl = levels)
            fixed (float* px = shifted, pg = g, pgx = gx)
                for (; i + 16 <= n; i += 16)
                {
                    var k = Vector512.Load(pl + i);
                    var kept = Vector512.LessThan(k, itop).AsSingle();
                    var gv = Vector512.Load(pg + i);
                    if (pgx != null)
                        (Vector512.Load(pgx + i) + (gv & kept & Vector512.LessThanOrEqual(Vector512.Load(px + i), vtopT))).Store(pgx + i);
                    var p = Avx512F.PermuteVar16x32(table, Vector512.Min(k, itop - Vector512<int>.One)) & kept;
                    var (g0, g1) = Vector512.Widen(gv);
                    var (p0, p1) = Vector512.Widen(p);
                    s0 = Vector512.FusedMultiplyAdd(g0, p0, s0);
                    s1 = Vector512.FusedMultiplyAdd(g1, p1, s1);
                }
            s = Vector512.Sum(s0 + s1);
        }
        if (Avx2.IsSupported)
        {
            var itop = Vector256.Create(top);
            var vtopT = Vector256.Create(topThreshold);
            Vector256<double> s0 = default, s1 = default;
            fixed (int* pl = levels)
            fixed (float* pp = pw, px = shifted, pg = g, pgx = gx)
                for (; i + 8 <= n; i += 8)
                {
                    var k = Vector256.Load(pl + i);
                    var kept = Vector256.LessThan(k, itop).AsSingle();
                    var gv = Vector256.Load(pg + i);
                    if (pgx != null)
                        (Vector256.Load(pgx + i) + (gv & kept & Vector256.LessThanOrEqual(Vector256.Load(px + i), vtopT))).Store(pgx + i);
                    var p = Avx2.GatherVector256(pp, Vector256.Min(k, itop - Vector256<int>.One), 4) & kept;
                    var (g0, g1) = Vector256.Widen(gv);
                    var (p0, p1) = Vector256.Widen(p);
                    s0 = Vector256.FusedMultiplyAdd(g0, p0, s0);
                    s1 = Vector256.FusedMultiplyAdd(g1, p1, s1);
                }
            s += Vector256.Sum(s0 + s1);
        }
        for (; i < n; i++)
        {
            int q = levels[i];
            if (q >= top) continue;
            if (!gx.IsEmpty && shifted[i] <= topThreshold) gx[i] += g[i];
            s += g[i] * (double)pw[q];
        }
        return s;
    }

    // A table of at most 16 floats in one register (unused entries 0).
    private static Vector512<float> Table16(float[] values)
    {
        Span<float> t = stackalloc float[16];
        values.AsSpan(0, Math.Min(16, values.Length)).CopyTo(t);
        return Vector512.Create((ReadOnlySpan<float>)t);
    }

    /// <summary>x̂ for one value: Δ·B^(−q), or 0 when flushed.</summary>
    public float FakeQuant(float x)
    {
        int q = Level(x);
        return q < Levels ? Values[q] : 0f;
    }

    /// <summary>Mean |x − x̂|^p over a sample (p = 2: MSE).</summary>
    public double Error(ReadOnlySpan<float> sample, float p)
    {
        if (sample.Length == 0) return 0;
        Span<float> e = stackalloc float[Math.Min(Block, sample.Length)], tmp = stackalloc float[e.Length];
        Span<int> lv = stackalloc int[e.Length];
        double total = 0;
        for (int start = 0; start < sample.Length; start += Block)
        {
            var xs = sample.Slice(start, Math.Min(Block, sample.Length - start));
            var err = e[..xs.Length];
            FillLevels(xs, 0f, 0f, err, lv, tmp[..xs.Length]);
            for (int i = 0; i < xs.Length; i++) err[i] = xs[i] - (lv[i] < Levels ? Values[lv[i]] : 0f);
            total += RangeSearch.PowerSum(err, p);
        }
        return total / sample.Length;
    }

    /// <summary>
    /// The Δ a range method picks on a (shifted) sample, sorted ascending for Percentile (its quantiles), in any
    /// order for LpSearch: MinMax → the maximum;
    /// Percentile → the best of quantile(p), p ∈ {0.999, 0.9999, 0.99999}, by MSE; LpSearch → the best of
    /// α·max, α ∈ {0.01, …, 1}, by mean |x − x̂|^p. Throws ArgumentException for an empty sample.
    /// </summary>
    public static float SearchDelta(RangeMethod method, ReadOnlySpan<float> sample, float max, int bits, bool sqrtTwoBase, float lpNorm)
    {
        if (method == RangeMethod.MinMax) return RangeSearch.SafeScale(max);
        if (sample.Length == 0) throw new ArgumentException($"{method} search of a log grid needs observed values");
        var candidates = new List<(float Delta, float P)>();
        if (method == RangeMethod.Percentile)
            foreach (double p in RangeSearch.Percentiles) candidates.Add((RangeSearch.Quantile(sample, p), 2f));
        else
            for (int k = 1; k <= RangeSearch.LpCandidates; k++) candidates.Add((k / (float)RangeSearch.LpCandidates * max, lpNorm));
        float best = 0;
        double bestErr = 0;
        for (int c = 0; c < candidates.Count; c++)
        {
            var grid = new LogGrid(candidates[c].Delta, bits, sqrtTwoBase);
            double err = grid.Error(sample, candidates[c].P);
            if (c == 0 || err < bestErr) { best = grid.Delta; bestErr = err; }
        }
        return best;
    }

    /// <summary>Elements per stack block of the fused op.</summary>
    private const int Block = 1024;

    private static float RoundDown(double t)
    {
        float f = (float)t;
        return f > t ? MathF.BitDecrement(f) : f;
    }

    /// <summary>
    /// Fused log fake quantization of x' = (x − shift) + eps, output x̂' + offset, as one autograd node
    /// with gradients for x and for the one-element step tensor delta (file header).
    /// </summary>
    internal static Tensor Apply(Tensor x, Tensor delta, int bits, bool sqrtTwoBase, float shift, float eps, float offset, string opName)
    {
        var grid = new LogGrid(delta.Item(), bits, sqrtTwoBase);
        int n = x.Size;
        var y = Tensor.OutputUninitialized(x.Shape); // an op output (every element written below): recycled with the caller's arena scope
        float[] xd = x.Data, yd = y.Data;
        var layout = new GroupLayout(1, Math.Max(1, n));
        ViTQuant.Quantization.FakeQuant.ForSegments(n, layout, (_, start, end, _) =>
        {
            Span<float> xs = stackalloc float[Block], tmp = stackalloc float[Block];
            Span<int> lv = stackalloc int[Block];
            for (int b = start; b < end; b += Block)
            {
                int len = Math.Min(Block, end - b);
                grid.FillLevels(xd.AsSpan(b, len), shift, eps, xs[..len], lv, tmp[..len]);
                grid.Dequantize(lv[..len], offset, yd.AsSpan(b, len));
            }
        });
        if (!Autograd.Needs(x, delta)) return y;

        return Autograd.Record(opName, y, new[] { x, delta }, gy =>
        {
            float[] gd = gy.Data;
            float[]? gxd = x.RequiresGrad ? ViTQuant.Quantization.FakeQuant.GradData(x) : null;
            var partial = new double[ViTQuant.Quantization.FakeQuant.Chunks(n)];
            ViTQuant.Quantization.FakeQuant.ForSegments(n, layout, (c, start, end, _) =>
            {
                Span<float> xs = stackalloc float[Block], tmp = stackalloc float[Block];
                Span<int> lv = stackalloc int[Block];
                double s = 0;
                for (int b = start; b < end; b += Block)
                {
                    int len = Math.Min(Block, end - b);
                    grid.FillLevels(xd.AsSpan(b, len), shift, eps, xs[..len], lv, tmp[..len]);
                    s += grid.BackwardBlock(lv[..len], xs[..len], gd.AsSpan(b, len), gxd != null ? gxd.AsSpan(b, len) : default);
                }
                partial[c] += s;
            });
            if (delta.RequiresGrad && delta.Item() >= RangeSearch.MinScale) ViTQuant.Quantization.FakeQuant.AddPartials(partial, 1, delta.GradSpan());
        });
    }
}
