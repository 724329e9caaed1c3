// Exact (erf) GELU, as PyTorch's default nn.GELU(), forward and backward.
//
//   y  = x·Φ(x) = ½·x·(1 + erf(x/√2))
//   dx += dy·(Φ(x) + x·φ(x)),   φ(x) = exp(−x²/2)/√(2π)
//
// erf: the rational minimax approximation of Eigen / XLA / TVM,
//   erf(z) ≈ z·P(z²)/Q(z²) for |z| < 4, and ±1 beyond (1 − erf(4) = 1.5e-8, below float resolution),
// P of degree 6 and Q of degree 4 in z², within 6.5e-8 of erf. It is odd and z·(…) near 0, so small
// arguments keep full relative accuracy — unlike Abramowitz–Stegun 7.1.26 (1 − t·poly(t)·e^(−z²)),
// which cancels near 0 and is not used. The float input is widened and the rational evaluated in
// double lanes: in float, Horner rounding alone adds up to 4e-7. GELU and its derivative are then
// finished in double too and narrowed once, so erf is within 1e-7 of the truth and GELU within
// ½·|x|·1e-7 plus the final float rounding (FusedKernelTests measures both against the references).
//
// Float path (GELU forward and backward: 16 lanes on CPUs with AVX-512F, the same operations on 8 lanes with
// AVX2 + FMA; the double-lane path above stays for other CPUs and for Erf): one branch-free formula. With z = x/√2 and t = 1/(1 + |z|/2):
//   |z| < 4:   E = erfc(|z|) = e^(−z²)·Q(t), Q of degree 8 (relative 1.4e-8 over |z| in [0, 4] in double);
//              Φ = ½E for x < 0 (relative accuracy kept in the negative tail), 1 − ½E for x ≥ 0
//   |z| ≥ 4:   Φ = 0 or 1 (½·erfc(4) = 7.7e-9)
// Near 0, Φ = 1 − ½E ≈ ½ needs only absolute accuracy, so no separate series for small |z| (an earlier
// version had one, with t = 1/|z| beyond it: two polynomials and three selects per lane, 22 % slower).
// e^(−z²) is computed as e^(−h)·(1 − l) with h = fl(z²) and l = z² − h exact by an FMA, so the rounding of
// z² (up to 1e-6 of e^(−z²) near |z| = 4) does not enter; φ(x) = e^(−z²)/√(2π) reuses it. Q is a
// least-squares fit (Chebyshev nodes in t, relative weight) to erfc(z)·e^(z²) in double. On the dense grid
// of FusedKernelTests ([−12, 12]) the worst error is 0.15 of the tolerance the tests apply against the double
// reference (forward 3e-7 + 2e-6·|y|), 0.09 for the backward (1e-6 + 2e-6·|dx|).
//
// Reference twins evaluate erf in double by its everywhere-convergent series
//   erf(z) = (2/√π)·e^(−z²)·Σ_n 2ⁿ z^(2n+1) / (1·3·5···(2n+1)),
// whose terms are all positive (no cancellation), good to ~1e-15 for |z| ≤ 6 (beyond, erf = ±1
// to double precision).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

/// <summary>Elementwise exact GELU and the erf it needs.</summary>
internal static unsafe class GeluKernel
{
    private const double InvSqrt2 = 0.70710678118654752;
    private const double InvSqrt2Pi = 0.39894228040143268;

    /// <summary>True where GELU runs the 16-lane float path (AVX-512F; not in a RowSimd.ForceNarrow scope).</summary>
    internal static bool Avx512Path => RowSimd.Wide && !ForceDoublePath;

    /// <summary>True where GELU runs the same float formula on 8 lanes (AVX2 + FMA, no AVX-512 or ForceNarrow).</summary>
    internal static bool Float256Path => !Avx512Path && !ForceDoublePath && Fma.IsSupported && Avx2.IsSupported;

    /// <summary>
    /// Tests and benchmarks: calls from this thread run the double-lane path (what CPUs without AVX-512 run)
    /// on any CPU. Thread-local, so other tests running at the same time are not affected.
    /// </summary>
    internal static bool ForceDoublePath { get => _forceDouble; set => _forceDouble = value; }

    [ThreadStatic] private static bool _forceDouble;

    /// <summary>y = ½·x·(1 + erf(x/√2)). x and y may alias. Throws ArgumentException when y is shorter than x.</summary>
    public static void Gelu(ReadOnlySpan<float> x, Span<float> y)
    {
        if (y.Length < x.Length) throw new ArgumentException($"y has {y.Length} elements, x has {x.Length}");
        fixed (float* px = x, py = y)
        {
            float* xx = px, yy = py;
            if (Avx512Path)
            {
                ForBlocks(x.Length, (s, e) => Gelu512(xx + s, yy + s, e - s));
                return;
            }
            if (Float256Path)
            {
                ForBlocks(x.Length, (s, e) => Gelu256(xx + s, yy + s, e - s));
                return;
            }
            ForBlocks(x.Length, (s, e) =>
            {
                int full = s + ((e - s) & ~7), tail = e - full;
                for (int i = s; i < full; i += 8) GeluVec(Vector256.Load(xx + i)).Store(yy + i);
                if (tail > 0) RowSimd.StoreTail(GeluVec(RowSimd.LoadTail(xx + full, tail, 0f)), yy + full, tail);
            });
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Gelu512(float* x, float* y, int n)
    {
        int full = n & ~15, tail = n - full, i = 0;
        // Two vectors a step: one Cdf512 is a long dependent chain (division, exp, degree-8 polynomial), and two
        // independent chains side by side keep both vector ports busy (`bench micro`, one thread, L1: 0.85 → 0.70 ns
        // per element; four chains 0.69). The same operations per lane, so the same bits.
        for (; i + 32 <= full; i += 32)
        {
            var v = Vector512.Load(x + i);
            var w = Vector512.Load(x + i + 16);
            (v * Cdf512(v, out _)).Store(y + i);
            (w * Cdf512(w, out _)).Store(y + i + 16);
        }
        for (; i < full; i += 16)
        {
            var v = Vector512.Load(x + i);
            (v * Cdf512(v, out _)).Store(y + i);
        }
        if (tail > 0)
        {
            var m = RowSimd.TailMask512(tail);
            var v = Avx512F.MaskLoad(x + full, m, Vector512<float>.Zero);
            Avx512F.MaskStore(y + full, m, v * Cdf512(v, out _));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GeluBackward512(float* x, float* dy, float* dx, int n, bool accumulate)
    {
        int full = n & ~15, tail = n - full, i = 0;
        for (; i + 32 <= full; i += 32) // two chains a step, as in Gelu512
        {
            var v = Vector512.Load(x + i);
            var w = Vector512.Load(x + i + 16);
            var gv = GeluGrad512(v);
            var gw = GeluGrad512(w);
            Vector512.FusedMultiplyAdd(Vector512.Load(dy + i), gv, accumulate ? Vector512.Load(dx + i) : default).Store(dx + i);
            Vector512.FusedMultiplyAdd(Vector512.Load(dy + i + 16), gw, accumulate ? Vector512.Load(dx + i + 16) : default).Store(dx + i + 16);
        }
        for (; i < full; i += 16)
        {
            var v = Vector512.Load(x + i);
            Vector512.FusedMultiplyAdd(Vector512.Load(dy + i), GeluGrad512(v), accumulate ? Vector512.Load(dx + i) : default).Store(dx + i);
        }
        if (tail > 0)
        {
            var m = RowSimd.TailMask512(tail);
            var v = Avx512F.MaskLoad(x + full, m, Vector512<float>.Zero);
            var g = Avx512F.MaskLoad(dy + full, m, Vector512<float>.Zero);
            var d = accumulate ? Avx512F.MaskLoad(dx + full, m, Vector512<float>.Zero) : default;
            Avx512F.MaskStore(dx + full, m, Vector512.FusedMultiplyAdd(g, GeluGrad512(v), d));
        }
    }

    // Φ(x) + x·φ(x).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> GeluGrad512(Vector512<float> x)
    {
        var cdf = Cdf512(x, out var ez2);
        return Vector512.FusedMultiplyAdd(x, ez2 * Vector512.Create((float)InvSqrt2Pi), cdf);
    }

    /// <summary>Φ(x) on 16 float lanes (file header), and e^(−x²/2) for φ.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Cdf512(Vector512<float> x, out Vector512<float> ez2)
    {
        var one = Vector512<float>.One;
        var z = x * Vector512.Create(0.70710678118654752f);
        var a = Vector512.Abs(z);
        var h = z * z;
        var l = Vector512.FusedMultiplyAdd(a, a, -h);
        // e^(−h) with h clamped into the exp's range (lanes of |z| ≥ 4 are replaced below); NaN goes on through t.
        ez2 = RowSimd.ExpCore512(-Vector512.Min(h, Vector512.Create(-RowSimd.ExpMinArg))) * (one - l);
        // erfc(|z|) = e^(−z²)·Q(t), t = 1/(1 + |z|/2)
        var t = one / Vector512.FusedMultiplyAdd(a, Vector512.Create(0.5f), one);
        var q = Vector512.FusedMultiplyAdd(t, Vector512.Create(-0.050789970723094241f), Vector512.Create(0.34363965433183297f));
        q = Vector512.FusedMultiplyAdd(q, t, Vector512.Create(-0.90015347048098859f));
        q = Vector512.FusedMultiplyAdd(q, t, Vector512.Create(1.0269953902672191f));
        q = Vector512.FusedMultiplyAdd(q, t, Vector512.Create(-0.41336043842666303f));
        q = Vector512.FusedMultiplyAdd(q, t, Vector512.Create(0.47863314166496163f));
        q = Vector512.FusedMultiplyAdd(q, t, Vector512.Create(0.22557960169389879f));
        q = Vector512.FusedMultiplyAdd(q, t, Vector512.Create(0.28992886338595369f));
        q = Vector512.FusedMultiplyAdd(q, t, Vector512.Create(-0.0004727642573809523f));
        // ½·erfc(|z|), 0 from |z| = 4 on (½·erfc(4) = 7.7e-9), where the fit ends and e^(−z²) may underflow.
        var halfE = Avx512F.BlendVariable(Vector512.Create(0.5f) * ez2 * q, Vector512<float>.Zero,
            Vector512.GreaterThanOrEqual(a, Vector512.Create(4f)));
        // NaN: t, Q and so halfE are NaN, and the comparisons fail.
        return Vector512.ConditionalSelect(Vector512.GreaterThan(z, Vector512<float>.Zero), one - halfE, halfE);
    }

    // The AVX-512 formula on 8 lanes (AVX2 + FMA): the same operations lane for lane, so the same results.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Gelu256(float* x, float* y, int n)
    {
        int full = n & ~7, tail = n - full, i = 0;
        for (; i + 16 <= full; i += 16) // two chains a step, as in Gelu512
        {
            var v = Vector256.Load(x + i);
            var w = Vector256.Load(x + i + 8);
            (v * Cdf256(v, out _)).Store(y + i);
            (w * Cdf256(w, out _)).Store(y + i + 8);
        }
        for (; i < full; i += 8)
        {
            var v = Vector256.Load(x + i);
            (v * Cdf256(v, out _)).Store(y + i);
        }
        if (tail > 0)
        {
            var v = RowSimd.LoadTail(x + full, tail, 0f);
            RowSimd.StoreTail(v * Cdf256(v, out _), y + full, tail);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GeluBackward256(float* x, float* dy, float* dx, int n, bool accumulate)
    {
        int full = n & ~7, tail = n - full, i = 0;
        for (; i + 16 <= full; i += 16)
        {
            var v = Vector256.Load(x + i);
            var w = Vector256.Load(x + i + 8);
            var gv = GeluGrad256(v);
            var gw = GeluGrad256(w);
            Vector256.FusedMultiplyAdd(Vector256.Load(dy + i), gv, accumulate ? Vector256.Load(dx + i) : default).Store(dx + i);
            Vector256.FusedMultiplyAdd(Vector256.Load(dy + i + 8), gw, accumulate ? Vector256.Load(dx + i + 8) : default).Store(dx + i + 8);
        }
        for (; i < full; i += 8)
        {
            var v = Vector256.Load(x + i);
            Vector256.FusedMultiplyAdd(Vector256.Load(dy + i), GeluGrad256(v), accumulate ? Vector256.Load(dx + i) : default).Store(dx + i);
        }
        if (tail > 0)
        {
            var v = RowSimd.LoadTail(x + full, tail, 0f);
            var g = RowSimd.LoadTail(dy + full, tail, 0f);
            var d = accumulate ? RowSimd.LoadTail(dx + full, tail, 0f) : default;
            RowSimd.StoreTail(Vector256.FusedMultiplyAdd(g, GeluGrad256(v), d), dx + full, tail);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> GeluGrad256(Vector256<float> x)
    {
        var cdf = Cdf256(x, out var ez2);
        return Vector256.FusedMultiplyAdd(x, ez2 * Vector256.Create((float)InvSqrt2Pi), cdf);
    }

    /// <summary>Cdf512 on 8 lanes: Φ(x) and e^(−x²/2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Cdf256(Vector256<float> x, out Vector256<float> ez2)
    {
        var one = Vector256<float>.One;
        var z = x * Vector256.Create(0.70710678118654752f);
        var a = Vector256.Abs(z);
        var h = z * z;
        var l = Vector256.FusedMultiplyAdd(a, a, -h);
        ez2 = RowSimd.ExpCore256(-Vector256.Min(h, Vector256.Create(-RowSimd.ExpMinArg))) * (one - l);
        var t = one / Vector256.FusedMultiplyAdd(a, Vector256.Create(0.5f), one);
        var q = Vector256.FusedMultiplyAdd(t, Vector256.Create(-0.050789970723094241f), Vector256.Create(0.34363965433183297f));
        q = Vector256.FusedMultiplyAdd(q, t, Vector256.Create(-0.90015347048098859f));
        q = Vector256.FusedMultiplyAdd(q, t, Vector256.Create(1.0269953902672191f));
        q = Vector256.FusedMultiplyAdd(q, t, Vector256.Create(-0.41336043842666303f));
        q = Vector256.FusedMultiplyAdd(q, t, Vector256.Create(0.47863314166496163f));
        q = Vector256.FusedMultiplyAdd(q, t, Vector256.Create(0.22557960169389879f));
        q = Vector256.FusedMultiplyAdd(q, t, Vector256.Create(0.28992886338595369f));
        q = Vector256.FusedMultiplyAdd(q, t, Vector256.Create(-0.0004727642573809523f));
        var halfE = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(a, Vector256.Create(4f)), Vector256<float>.Zero,
            Vector256.Create(0.5f) * ez2 * q);
        return Vector256.ConditionalSelect(Vector256.GreaterThan(z, Vector256<float>.Zero), one - halfE, halfE);
    }

    /// <summary>
    /// dx += dy·(Φ(x) + x·φ(x)); with <paramref name="accumulate"/> false dx is not read and gets what a zeroed dx
    /// would (a fresh gradient needs no clearing pass). Throws ArgumentException when dy or dx is shorter than x.
    /// </summary>
    public static void GeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx, bool accumulate = true)
    {
        if (dy.Length < x.Length || dx.Length < x.Length) throw new ArgumentException($"dy/dx have {dy.Length}/{dx.Length} elements, x has {x.Length}");
        fixed (float* px = x, pg = dy, pd = dx)
        {
            float* xx = px, gg = pg, dd = pd;
            if (Avx512Path)
            {
                ForBlocks(x.Length, (s, e) => GeluBackward512(xx + s, gg + s, dd + s, e - s, accumulate));
                return;
            }
            if (Float256Path)
            {
                ForBlocks(x.Length, (s, e) => GeluBackward256(xx + s, gg + s, dd + s, e - s, accumulate));
                return;
            }
            ForBlocks(x.Length, (s, e) =>
            {
                int full = s + ((e - s) & ~7), tail = e - full;
                for (int i = s; i < full; i += 8)
                    Vector256.FusedMultiplyAdd(Vector256.Load(gg + i), GeluGradVec(Vector256.Load(xx + i)), accumulate ? Vector256.Load(dd + i) : default).Store(dd + i);
                if (tail > 0)
                    RowSimd.StoreTail(Vector256.FusedMultiplyAdd(RowSimd.LoadTail(gg + full, tail, 0f), GeluGradVec(RowSimd.LoadTail(xx + full, tail, 0f)),
                        accumulate ? RowSimd.LoadTail(dd + full, tail, 0f) : default), dd + full, tail);
            });
        }
    }

    /// <summary>erf(x) elementwise in float (rational approximation, ≈1e-7 absolute error). x and y may alias.</summary>
    public static void Erf(ReadOnlySpan<float> x, Span<float> y)
    {
        if (y.Length < x.Length) throw new ArgumentException($"y has {y.Length} elements, x has {x.Length}");
        fixed (float* px = x, py = y)
        {
            int n = x.Length, full = n & ~7, tail = n - full;
            for (int i = 0; i < full; i += 8) ErfVec(Vector256.Load(px + i)).Store(py + i);
            if (tail > 0) RowSimd.StoreTail(ErfVec(RowSimd.LoadTail(px + full, tail, 0f)), py + full, tail);
        }
    }

    /// <summary>Vectorised erf: z·P(z²)/Q(z²) for |z| &lt; 4 and ±1 beyond, evaluated in double lanes. NaN stays NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ErfVec(Vector256<float> x)
    {
        var (lo, hi) = Vector256.Widen(x);
        return Vector256.Narrow(ErfD(lo), ErfD(hi));
    }

    /// <summary>
    /// The rational erf on 4 double lanes. Evaluating it in double matters: the approximation itself is
    /// within 6.5e-8 of erf, but Horner's rule in float adds up to ~4e-7 of rounding near |z| ≈ 3.6.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> ErfD(Vector256<double> x)
    {
        var z = Vector256.Min(Vector256.Max(x, Vector256.Create(-4.0)), Vector256.Create(4.0));
        var z2 = z * z;
        var p = Vector256.FusedMultiplyAdd(z2, Vector256.Create(-2.72614225801306e-10), Vector256.Create(2.77068142495902e-08));
        p = Vector256.FusedMultiplyAdd(z2, p, Vector256.Create(-2.10102402082508e-06));
        p = Vector256.FusedMultiplyAdd(z2, p, Vector256.Create(-5.69250639462346e-05));
        p = Vector256.FusedMultiplyAdd(z2, p, Vector256.Create(-7.34990630326855e-04));
        p = Vector256.FusedMultiplyAdd(z2, p, Vector256.Create(-2.95459980854025e-03));
        p = Vector256.FusedMultiplyAdd(z2, p, Vector256.Create(-1.60960333262415e-02));
        var q = Vector256.FusedMultiplyAdd(z2, Vector256.Create(-1.45660718464996e-05), Vector256.Create(-2.13374055278905e-04));
        q = Vector256.FusedMultiplyAdd(z2, q, Vector256.Create(-1.68282697438203e-03));
        q = Vector256.FusedMultiplyAdd(z2, q, Vector256.Create(-7.37332916720468e-03));
        q = Vector256.FusedMultiplyAdd(z2, q, Vector256.Create(-1.42647390514189e-02));
        var r = z * p / q;
        // Beyond |z| = 4 return ±1 itself (1 − erf(4) = 1.5e-8), not the rational's value at 4 (6.5e-8 off),
        // so GELU's far tail is exact; the clamp above only keeps z²ⁿ from overflowing there.
        var unit = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256<double>.Zero), Vector256.Create(-1.0), Vector256.Create(1.0));
        r = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(Vector256.Abs(x), Vector256.Create(4.0)), unit, r);
        // NaN fails both comparisons and the clamp may have turned it into ±4: give NaN back.
        return Vector256.ConditionalSelect(Vector256.Equals(x, x), r, x);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> GeluVec(Vector256<float> x)
    {
        var (lo, hi) = Vector256.Widen(x);
        return Vector256.Narrow(lo * CdfD(lo), hi * CdfD(hi));
    }

    /// <summary>Φ(x) + x·φ(x), the derivative of x·Φ(x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> GeluGradVec(Vector256<float> x)
    {
        var (lo, hi) = Vector256.Widen(x);
        return Vector256.Narrow(GeluGradD(lo), GeluGradD(hi));
    }

    /// <summary>Φ(x) = ½(1 + erf(x/√2)) in double lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> CdfD(Vector256<double> x)
    {
        var half = Vector256.Create(0.5);
        return Vector256.FusedMultiplyAdd(half, ErfD(x * Vector256.Create(InvSqrt2)), half);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> GeluGradD(Vector256<double> x)
    {
        var pdf = Vector256.Exp(Vector256.Create(-0.5) * x * x) * Vector256.Create(InvSqrt2Pi);
        return Vector256.FusedMultiplyAdd(x, pdf, CdfD(x));
    }

    private static void ForBlocks(int n, Action<int, int> body)
    {
        if (n == 0) return;
        // Chunk boundaries on multiples of 8 so only the very last chunk has a tail.
        int blocks = (n + 7) / 8;
        Parallelism.ForChunks(blocks, RowSimd.ParallelGrain / 8, (b0, b1) => body(b0 * 8, Math.Min(n, b1 * 8)));
    }

    // ---- reference twins: scalar, double precision ----

    /// <summary>erf(z) in double by the positive-term series (≈1e-15 relative); ±1 for |z| &gt; 6.</summary>
    public static double ReferenceErf(double z)
    {
        if (double.IsNaN(z)) return double.NaN;
        double a = Math.Abs(z);
        if (a > 6) return Math.Sign(z);
        // term_n = 2ⁿ a^(2n+1) / (2n+1)!!, term_{n+1} = term_n · 2a² / (2n+3)
        double term = a, sum = a, a2 = 2 * a * a;
        for (int n = 0; n < 500 && term > 1e-17 * sum; n++)
        {
            term *= a2 / (2 * n + 3);
            sum += term;
        }
        double r = 2 / Math.Sqrt(Math.PI) * Math.Exp(-a * a) * sum;
        return z < 0 ? -r : r;
    }

    /// <summary>Scalar double-precision twin of <see cref="Gelu"/>.</summary>
    public static void ReferenceGelu(ReadOnlySpan<float> x, Span<float> y)
    {
        if (y.Length < x.Length) throw new ArgumentException($"y has {y.Length} elements, x has {x.Length}");
        for (int i = 0; i < x.Length; i++) y[i] = (float)(0.5 * x[i] * (1 + ReferenceErf(x[i] / Math.Sqrt(2))));
    }

    /// <summary>Scalar double-precision twin of <see cref="GeluBackward"/> (also accumulates).</summary>
    public static void ReferenceGeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        if (dy.Length < x.Length || dx.Length < x.Length) throw new ArgumentException($"dy/dx have {dy.Length}/{dx.Length} elements, x has {x.Length}");
        for (int i = 0; i < x.Length; i++)
        {
            double v = x[i];
            double cdf = 0.5 * (1 + ReferenceErf(v / Math.Sqrt(2)));
            double pdf = Math.Exp(-0.5 * v * v) / Math.Sqrt(2 * Math.PI);
            dx[i] = (float)(dx[i] + dy[i] * (cdf + v * pdf));
        }
    }
}
