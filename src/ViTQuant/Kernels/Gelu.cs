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
// Reference twins evaluate erf in double by its everywhere-convergent series
//   erf(z) = (2/√π)·e^(−z²)·Σ_n 2ⁿ z^(2n+1) / (1·3·5···(2n+1)),
// whose terms are all positive (no cancellation), good to ~1e-15 for |z| ≤ 6 (beyond, erf = ±1
// to double precision).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace ViTQuant.Kernels;

/// <summary>Elementwise exact GELU and the erf it needs.</summary>
public static unsafe class GeluKernel
{
    private const double InvSqrt2 = 0.70710678118654752;
    private const double InvSqrt2Pi = 0.39894228040143268;

    /// <summary>y = ½·x·(1 + erf(x/√2)). x and y may alias. Throws ArgumentException when y is shorter than x.</summary>
    public static void Gelu(ReadOnlySpan<float> x, Span<float> y)
    {
        if (y.Length < x.Length) throw new ArgumentException($"y has {y.Length} elements, x has {x.Length}");
        fixed (float* px = x, py = y)
        {
            float* xx = px, yy = py;
            ForBlocks(x.Length, (s, e) =>
            {
                int full = s + ((e - s) & ~7), tail = e - full;
                for (int i = s; i < full; i += 8) GeluVec(Vector256.Load(xx + i)).Store(yy + i);
                if (tail > 0) RowSimd.StoreTail(GeluVec(RowSimd.LoadTail(xx + full, tail, 0f)), yy + full, tail);
            });
        }
    }

    /// <summary>dx += dy·(Φ(x) + x·φ(x)). Throws ArgumentException when dy or dx is shorter than x.</summary>
    public static void GeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        if (dy.Length < x.Length || dx.Length < x.Length) throw new ArgumentException($"dy/dx have {dy.Length}/{dx.Length} elements, x has {x.Length}");
        fixed (float* px = x, pg = dy, pd = dx)
        {
            float* xx = px, gg = pg, dd = pd;
            ForBlocks(x.Length, (s, e) =>
            {
                int full = s + ((e - s) & ~7), tail = e - full;
                for (int i = s; i < full; i += 8)
                    Vector256.FusedMultiplyAdd(Vector256.Load(gg + i), GeluGradVec(Vector256.Load(xx + i)), Vector256.Load(dd + i)).Store(dd + i);
                if (tail > 0)
                    RowSimd.StoreTail(Vector256.FusedMultiplyAdd(RowSimd.LoadTail(gg + full, tail, 0f), GeluGradVec(RowSimd.LoadTail(xx + full, tail, 0f)),
                        RowSimd.LoadTail(dd + full, tail, 0f)), dd + full, tail);
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
