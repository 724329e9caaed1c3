// Row softmax and log-softmax over a [rows, cols] row-major buffer, forward and backward.
//
//   softmax:      y_j = exp(x_j − m) / Σ_k exp(x_k − m),   m = max_k x_k  (shift keeps exp ≤ 1)
//   backward:     dx_j += y_j · (dy_j − Σ_k y_k·dy_k)
//   log-softmax:  y_j = x_j − m − log Σ_k exp(x_k − m)
//   backward:     dx_j += dy_j − exp(y_j) · Σ_k dy_k
//
// Fast kernels: Vector256 passes over each row (max; exp+sum; scale), the row tail handled as one
// padded vector (padding −∞ for max/exp, 0 for sums) so every element goes through the same exp
// (RowSimd.ExpNonPositive: arguments are ≤ 0 after the max shift, which allows a lean float exp);
// rows are split across Parallelism.ForChunks when the buffer is large. Reference* twins are scalar
// loops in double. Backward kernels ACCUMULATE into dx so autograd can pass gradient buffers directly.
// On AVX-512 CPUs the softmax forward rows (the attention's) run 16 lanes wide with masked tails
// (SoftmaxRow512, RowSimd.ExpNonPositive512: the same exp on Vector512), four rows at a time phase by phase
// (SoftmaxRows512: the same bits; SoftmaxRows256 does the same on 8 lanes); tests cover both widths.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

/// <summary>Softmax and log-softmax over the rows of a row-major [rows, cols] buffer.</summary>
internal static unsafe class SoftmaxKernel
{
    /// <summary>dst[r, :] = softmax(src[r, :]). src and dst may alias. Throws ArgumentException when a buffer is shorter than rows·cols.</summary>
    public static void SoftmaxRows(ReadOnlySpan<float> src, Span<float> dst, int rows, int cols) => Forward(src, dst, rows, cols, log: false);

    /// <summary>dst[r, :] = log_softmax(src[r, :]). src and dst may alias. Throws ArgumentException when a buffer is too short.</summary>
    public static void LogSoftmaxRows(ReadOnlySpan<float> src, Span<float> dst, int rows, int cols) => Forward(src, dst, rows, cols, log: true);

    /// <summary>dx += y ⊙ (dy − rowsum(y ⊙ dy)), where y is the softmax output. Throws ArgumentException when a buffer is too short.</summary>
    public static void SoftmaxRowsBackward(ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> dx, int rows, int cols)
    {
        fixed (float* py = y, pg = dy, pdx = dx) Backward(py, y.Length, pg, dy.Length, pdx, dx.Length, rows, cols, log: false);
    }

    /// <summary>dx += dy − exp(y) · rowsum(dy), where y is the log-softmax output. Throws ArgumentException when a buffer is too short.</summary>
    public static void LogSoftmaxRowsBackward(ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> dx, int rows, int cols)
    {
        fixed (float* py = y, pg = dy, pdx = dx) Backward(py, y.Length, pg, dy.Length, pdx, dx.Length, rows, cols, log: true);
    }

    private static void Forward(ReadOnlySpan<float> src, Span<float> dst, int rows, int cols, bool log)
    {
        RowSimd.CheckRows(rows, cols, src.Length, "src", dst.Length, "dst");
        fixed (float* ps = src, pd = dst)
        {
            float* s = ps, d = pd;
            bool wide = !log && RowSimd.Wide; // read on the calling thread: ForceNarrow is thread-local
            RowSimd.ForRows(rows, cols, (r0, r1) =>
            {
                if (wide) SoftmaxRows512(s + (long)r0 * cols, cols, d + (long)r0 * cols, cols, r1 - r0, cols);
                else if (!log) SoftmaxRows256(s + (long)r0 * cols, cols, d + (long)r0 * cols, cols, r1 - r0, cols);
                else for (int r = r0; r < r1; r++) SoftmaxRow(s + (long)r * cols, d + (long)r * cols, cols, log);
            });
        }
    }

    private static void Backward(float* y, int yLen, float* g, int gLen, float* d, int dLen, int rows, int cols, bool log)
    {
        RowSimd.CheckRows(rows, cols, yLen, "y", gLen, "dy");
        RowSimd.CheckRows(rows, cols, dLen, "dx", dLen, "dx");
        RowSimd.ForRows(rows, cols, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                long o = (long)r * cols;
                if (log) LogSoftmaxBackwardRow(y + o, g + o, d + o, cols);
                else SoftmaxBackwardRow(y + o, g + o, d + o, cols);
            }
        });
    }

    internal static void SoftmaxRow(float* x, float* y, int n, bool log)
    {
        if (n == 0) return;
        float max = RowMax256(x, n);
        if (log)
        {
            var shift = Vector256.Create(max + MathF.Log(ExpSum256(x, null, n, max)));
            int full = n & ~7, tail = n - full;
            for (int i = 0; i < full; i += 8) (Vector256.Load(x + i) - shift).Store(y + i);
            if (tail > 0) RowSimd.StoreTail(RowSimd.LoadTail(x + full, tail, 0f) - shift, y + full, tail);
            return;
        }
        ScaleRow256(y, n, 1f / ExpSum256(x, y, n, max));
    }

    /// <summary>
    /// The softmax (not log) of <paramref name="rows"/> rows on 8 lanes, four at a time phase by phase, as
    /// <see cref="SoftmaxRows512"/> does on 16: each row SoftmaxRow's operations in its order, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SoftmaxRows256(float* x, nint ldx, float* y, nint ldy, int rows, int n)
    {
        if (n == 0) return;
        int r = 0;
        for (; r + 4 <= rows; r += 4, x += 4 * ldx, y += 4 * ldy)
        {
            float m0 = RowMax256(x, n), m1 = RowMax256(x + ldx, n), m2 = RowMax256(x + 2 * ldx, n), m3 = RowMax256(x + 3 * ldx, n);
            float s0 = ExpSum256(x, y, n, m0), s1 = ExpSum256(x + ldx, y + ldy, n, m1);
            float s2 = ExpSum256(x + 2 * ldx, y + 2 * ldy, n, m2), s3 = ExpSum256(x + 3 * ldx, y + 3 * ldy, n, m3);
            ScaleRow256(y, n, 1f / s0);
            ScaleRow256(y + ldy, n, 1f / s1);
            ScaleRow256(y + 2 * ldy, n, 1f / s2);
            ScaleRow256(y + 3 * ldy, n, 1f / s3);
        }
        for (; r < rows; r++, x += ldx, y += ldy) SoftmaxRow(x, y, n, log: false);
    }

    // The row maximum by the native max (maxps), one instruction. .NET's Vector Max is IEEE 754-2019's maximum (NaN
    // propagates, −0 < +0): on AVX-512 a vrangeps and two vfixupimmps in a chain, which made the four-vector max of a
    // 50-token attention row a latency chain three times as long. The softmax is the same bits for every row without
    // NaN (a max of −0 or +0 shifts every x by the same zero, and exp(±0) = 1), and a row with a NaN is still NaN
    // everywhere: the NaN lane's exp is NaN, so the sum and every y are.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowMax256(float* x, int n)
    {
        int full = n & ~7, tail = n - full;
        var vmax = Vector256.Create(float.NegativeInfinity);
        for (int i = 0; i < full; i += 8) vmax = Vector256.MaxNative(Vector256.Load(x + i), vmax);
        if (tail > 0) vmax = Vector256.MaxNative(RowSimd.LoadTail(x + full, tail, float.NegativeInfinity), vmax);
        return RowSimd.HorizontalMax(vmax);
    }

    // Σ exp(x − max) over the row, storing the exps into y unless y is null. Padded lanes are −∞ and add exp(−∞) = 0.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float ExpSum256(float* x, float* y, int n, float max)
    {
        int full = n & ~7, tail = n - full;
        var vm = Vector256.Create(max);
        var vsum = Vector256<float>.Zero;
        for (int i = 0; i < full; i += 8)
        {
            var e = RowSimd.ExpNonPositive(Vector256.Load(x + i) - vm);
            if (y != null) e.Store(y + i);
            vsum += e;
        }
        if (tail > 0)
        {
            var et = RowSimd.ExpNonPositive(RowSimd.LoadTail(x + full, tail, float.NegativeInfinity) - vm);
            vsum += et;
            if (y != null) RowSimd.StoreTail(et, y + full, tail);
        }
        return Vector256.Sum(vsum);
    }

    // y *= inv over the row.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleRow256(float* y, int n, float inv)
    {
        int full = n & ~7, tail = n - full;
        var vi = Vector256.Create(inv);
        for (int i = 0; i < full; i += 8) (Vector256.Load(y + i) * vi).Store(y + i);
        if (tail > 0) RowSimd.StoreTail(RowSimd.LoadTail(y + full, tail, 0f) * vi, y + full, tail);
    }

    // One row of the 16-lane softmax (SoftmaxRows512 runs it on the rows past the last group of four).
    internal static void SoftmaxRow512(float* x, float* y, int n)
    {
        if (n == 0) return;
        var mask = RowSimd.TailMask512(n & 15);
        ScaleRow512(y, n, mask, ExpRow512(x, y, n, mask, RowMax512(x, n, mask)));
    }

    /// <summary>
    /// SoftmaxRow512 on <paramref name="rows"/> rows (x's ldx floats apart, y's ldy apart; x and y may alias row for
    /// row), four at a time phase by phase: the four maxima, then the four exp-and-sum passes, then the four scalings.
    /// Each row gets the same operations in the same order as SoftmaxRow512, so the same bits. Why: a short row (an
    /// attention row of 50 tokens is four vectors) is one chain of dependent reductions (max across lanes, the exp's
    /// sum across lanes, a division) with little work beside it; four rows give the core four chains to overlap.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SoftmaxRows512(float* x, nint ldx, float* y, nint ldy, int rows, int n)
    {
        if (n == 0) return;
        var mask = RowSimd.TailMask512(n & 15);
        int r = 0;
        for (; r + 4 <= rows; r += 4, x += 4 * ldx, y += 4 * ldy)
        {
            var m0 = RowMax512(x, n, mask);
            var m1 = RowMax512(x + ldx, n, mask);
            var m2 = RowMax512(x + 2 * ldx, n, mask);
            var m3 = RowMax512(x + 3 * ldx, n, mask);
            var i0 = ExpRow512(x, y, n, mask, m0);
            var i1 = ExpRow512(x + ldx, y + ldy, n, mask, m1);
            var i2 = ExpRow512(x + 2 * ldx, y + 2 * ldy, n, mask, m2);
            var i3 = ExpRow512(x + 3 * ldx, y + 3 * ldy, n, mask, m3);
            ScaleRow512(y, n, mask, i0);
            ScaleRow512(y + ldy, n, mask, i1);
            ScaleRow512(y + 2 * ldy, n, mask, i2);
            ScaleRow512(y + 3 * ldy, n, mask, i3);
        }
        for (; r < rows; r++, x += ldx, y += ldy) SoftmaxRow512(x, y, n);
    }

    // The row's maximum in every lane (mask: the tail's n mod 16 lanes; padding −∞; the native max, see RowMax256).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> RowMax512(float* x, int n, Vector512<float> mask)
    {
        int full = n & ~15;
        var ninf = Vector512.Create(float.NegativeInfinity);
        var vmax = ninf;
        for (int i = 0; i < full; i += 16) vmax = Vector512.MaxNative(Vector512.Load(x + i), vmax);
        if (full < n) vmax = Vector512.MaxNative(Avx512F.MaskLoad(x + full, mask, ninf), vmax);
        return Vector512.Create(RowSimd.HorizontalMax(Vector256.MaxNative(vmax.GetLower(), vmax.GetUpper())));
    }

    // y = exp(x − max), the tail lanes stored masked; returns 1 / Σ y in every lane.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> ExpRow512(float* x, float* y, int n, Vector512<float> mask, Vector512<float> vm)
    {
        int full = n & ~15;
        var vsum = Vector512<float>.Zero;
        for (int i = 0; i < full; i += 16)
        {
            var e = RowSimd.ExpNonPositive512(Vector512.Load(x + i) - vm);
            e.Store(y + i);
            vsum += e;
        }
        if (full < n)
        {
            var et = RowSimd.ExpNonPositive512(Avx512F.MaskLoad(x + full, mask, Vector512.Create(float.NegativeInfinity)) - vm);
            vsum += et;
            Avx512F.MaskStore(y + full, mask, et);
        }
        return Vector512.Create(1f / Vector512.Sum(vsum));
    }

    // y *= inv over the row (the tail masked).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleRow512(float* y, int n, Vector512<float> mask, Vector512<float> inv)
    {
        int full = n & ~15;
        for (int i = 0; i < full; i += 16) (Vector512.Load(y + i) * inv).Store(y + i);
        if (full < n) Avx512F.MaskStore(y + full, mask, Avx512F.MaskLoad(y + full, mask, Vector512<float>.Zero) * inv);
    }

    private static void SoftmaxBackwardRow(float* y, float* dy, float* dx, int n)
    {
        int full = n & ~7, tail = n - full;
        var vdot = Vector256<float>.Zero;
        for (int i = 0; i < full; i += 8) vdot = Vector256.FusedMultiplyAdd(Vector256.Load(y + i), Vector256.Load(dy + i), vdot);
        if (tail > 0) vdot = Vector256.FusedMultiplyAdd(RowSimd.LoadTail(y + full, tail, 0f), RowSimd.LoadTail(dy + full, tail, 0f), vdot);
        var dot = Vector256.Create(Vector256.Sum(vdot));
        for (int i = 0; i < full; i += 8)
            Vector256.FusedMultiplyAdd(Vector256.Load(y + i), Vector256.Load(dy + i) - dot, Vector256.Load(dx + i)).Store(dx + i);
        if (tail > 0)
            RowSimd.StoreTail(Vector256.FusedMultiplyAdd(RowSimd.LoadTail(y + full, tail, 0f), RowSimd.LoadTail(dy + full, tail, 0f) - dot,
                RowSimd.LoadTail(dx + full, tail, 0f)), dx + full, tail);
    }

    private static void LogSoftmaxBackwardRow(float* y, float* dy, float* dx, int n)
    {
        int full = n & ~7, tail = n - full;
        var vs = Vector256<float>.Zero;
        for (int i = 0; i < full; i += 8) vs += Vector256.Load(dy + i);
        if (tail > 0) vs += RowSimd.LoadTail(dy + full, tail, 0f);
        var s = Vector256.Create(Vector256.Sum(vs));
        for (int i = 0; i < full; i += 8)
            (Vector256.Load(dx + i) + Vector256.Load(dy + i) - RowSimd.ExpNonPositive(Vector256.Load(y + i)) * s).Store(dx + i);
        if (tail > 0)
            RowSimd.StoreTail(RowSimd.LoadTail(dx + full, tail, 0f) + RowSimd.LoadTail(dy + full, tail, 0f)
                - RowSimd.ExpNonPositive(RowSimd.LoadTail(y + full, tail, 0f)) * s, dx + full, tail);
    }

    // ---- reference twins: scalar, double precision ----

    /// <summary>Scalar double-precision twin of <see cref="SoftmaxRows"/>.</summary>
    public static void ReferenceSoftmaxRows(ReadOnlySpan<float> src, Span<float> dst, int rows, int cols)
    {
        RowSimd.CheckRows(rows, cols, src.Length, "src", dst.Length, "dst");
        for (int r = 0; r < rows; r++)
        {
            var x = src.Slice(r * cols, cols);
            var y = dst.Slice(r * cols, cols);
            double max = double.NegativeInfinity, sum = 0;
            for (int j = 0; j < cols; j++) max = Math.Max(max, x[j]);
            for (int j = 0; j < cols; j++) sum += Math.Exp(x[j] - max);
            for (int j = 0; j < cols; j++) y[j] = (float)(Math.Exp(x[j] - max) / sum);
        }
    }

    /// <summary>Scalar double-precision twin of <see cref="LogSoftmaxRows"/>.</summary>
    public static void ReferenceLogSoftmaxRows(ReadOnlySpan<float> src, Span<float> dst, int rows, int cols)
    {
        RowSimd.CheckRows(rows, cols, src.Length, "src", dst.Length, "dst");
        for (int r = 0; r < rows; r++)
        {
            var x = src.Slice(r * cols, cols);
            var y = dst.Slice(r * cols, cols);
            double max = double.NegativeInfinity, sum = 0;
            for (int j = 0; j < cols; j++) max = Math.Max(max, x[j]);
            for (int j = 0; j < cols; j++) sum += Math.Exp(x[j] - max);
            double lse = max + Math.Log(sum);
            for (int j = 0; j < cols; j++) y[j] = (float)(x[j] - lse);
        }
    }

    /// <summary>Scalar double-precision twin of <see cref="SoftmaxRowsBackward"/> (also accumulates).</summary>
    public static void ReferenceSoftmaxRowsBackward(ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> dx, int rows, int cols)
    {
        RowSimd.CheckRows(rows, cols, y.Length, "y", dy.Length, "dy");
        RowSimd.CheckRows(rows, cols, dx.Length, "dx", dx.Length, "dx");
        for (int r = 0; r < rows; r++)
        {
            int o = r * cols;
            double dot = 0;
            for (int j = 0; j < cols; j++) dot += (double)y[o + j] * dy[o + j];
            for (int j = 0; j < cols; j++) dx[o + j] = (float)(dx[o + j] + y[o + j] * (dy[o + j] - dot));
        }
    }

    /// <summary>Scalar double-precision twin of <see cref="LogSoftmaxRowsBackward"/> (also accumulates).</summary>
    public static void ReferenceLogSoftmaxRowsBackward(ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> dx, int rows, int cols)
    {
        RowSimd.CheckRows(rows, cols, y.Length, "y", dy.Length, "dy");
        RowSimd.CheckRows(rows, cols, dx.Length, "dx", dx.Length, "dx");
        for (int r = 0; r < rows; r++)
        {
            int o = r * cols;
            double s = 0;
            for (int j = 0; j < cols; j++) s += dy[o + j];
            for (int j = 0; j < cols; j++) dx[o + j] = (float)(dx[o + j] + dy[o + j] - Math.Exp(y[o + j]) * s);
        }
    }
}

/// <summary>
/// Shared plumbing of the row kernels: size checks, the parallel row driver, and the padded tail
/// vector (the last n mod 8 elements of a row loaded into one Vector256 with a chosen fill).
/// </summary>
internal static unsafe class RowSimd
{
    /// <summary>True where the row kernels' 16-lane AVX-512 paths run (and ForceNarrow is off on this thread).</summary>
    public static bool Wide => Avx512F.IsSupported && Vector512.IsHardwareAccelerated && !_forceNarrow;

    /// <summary>Tests: calls from this thread take the 8-lane paths (what CPUs without AVX-512 run).</summary>
    internal static bool ForceNarrow { get => _forceNarrow; set => _forceNarrow = value; }

    [ThreadStatic] private static bool _forceNarrow;

    /// <summary>Lanes 0 .. count−1 set (count in 0..16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> TailMask512(int count) =>
        Vector512.LessThan(Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), Vector512.Create((float)count));

    /// <summary>ExpNonPositive on 16 lanes: the same algorithm and constants (≈2 ulp; 0 below −87.33; NaN stays NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ExpNonPositive512(Vector512<float> x)
    {
        var y = ExpCore512(Vector512.MaxNative(x, Vector512.Create(ExpMinArg))); // NaN: replaced below
        y = Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(ExpMinArg)), Vector512<float>.Zero, y);
        return Vector512.ConditionalSelect(Vector512.Equals(x, x), y, x);
    }

    /// <summary>ln(2⁻¹²⁶): below it ExpNonPositive gives 0 (e^x is then under the smallest normal float).</summary>
    public const float ExpMinArg = -87.33654f;

    /// <summary>
    /// ExpNonPositive512 without its guards, for callers that keep x in [<see cref="ExpMinArg"/>, 0] themselves:
    /// e^x = 2ⁿ·e^r, n = round(x·log2 e), r = x − n·ln 2 in two parts, e^r by its degree-7 polynomial.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ExpCore512(Vector512<float> x)
    {
        var n = Vector512.Round(x * Vector512.Create(1.44269504088896341f));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), x);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(1.9875691500e-4f), r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        var e = Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        // n is integral and in [−126, 0]: the native conversion is exact and skips .NET's saturating fix-up.
        return e * ((Vector512.ConvertToInt32Native(n) + Vector512.Create(127)) << 23).AsSingle();
    }

    /// <summary>ExpCore512 on 8 lanes (the same operations: the same results lane for lane); ExpNonPositive without its guards.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ExpCore256(Vector256<float> x)
    {
        var n = Vector256.Round(x * Vector256.Create(1.44269504088896341f));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), x);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), r);
        var p = Vector256.FusedMultiplyAdd(Vector256.Create(1.9875691500e-4f), r, Vector256.Create(1.3981999507e-3f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(8.3334519073e-3f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(4.1665795894e-2f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.6666665459e-1f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(5.0000001201e-1f));
        var e = Vector256.FusedMultiplyAdd(p, r * r, r + Vector256<float>.One);
        return e * ((Vector256.ConvertToInt32Native(n) + Vector256.Create(127)) << 23).AsSingle();
    }

    /// <summary>Elements per parallel chunk below which a kernel stays on one thread.</summary>
    public const int ParallelGrain = 16384;

    public static void CheckRows(int rows, int cols, int lenA, string nameA, int lenB, string nameB)
    {
        if (rows < 0 || cols < 0) throw new ArgumentException($"negative size rows={rows} cols={cols}");
        long need = (long)rows * cols;
        if (lenA < need) throw new ArgumentException($"{nameA} has {lenA} elements, [{rows}, {cols}] needs {need}");
        if (lenB < need) throw new ArgumentException($"{nameB} has {lenB} elements, [{rows}, {cols}] needs {need}");
    }

    /// <summary>Runs body(r0, r1) over row ranges, in parallel when the buffer is large enough to pay for it.</summary>
    public static void ForRows(int rows, int cols, Action<int, int> body)
    {
        if (rows == 0 || cols == 0) return;
        Parallelism.ForChunks(rows, Math.Max(1, ParallelGrain / cols), body);
    }

    /// <summary>Lanes 0 .. count−1 set (count in 0..8), as the sign-bit mask AVX's masked moves take.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> TailMask(int count) =>
        Vector256.LessThan(Vector256.Create(0f, 1, 2, 3, 4, 5, 6, 7), Vector256.Create((float)count));

    /// <summary>p[0 .. count) in lanes 0 .. count−1 and <paramref name="fill"/> in the rest; reads nothing past p + count.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadTail(float* p, int count, float fill)
    {
        // A masked load (it does not touch the masked-off lanes' memory) instead of a lane-by-lane copy through a
        // stack buffer: the rows of the attention softmax (50 or 197 long) end in such a tail.
        if (Avx.IsSupported)
        {
            var mask = TailMask(count);
            return Vector256.ConditionalSelect(mask, Avx.MaskLoad(p, mask), Vector256.Create(fill));
        }
        float* buf = stackalloc float[8];
        for (int i = 0; i < 8; i++) buf[i] = i < count ? p[i] : fill;
        return Vector256.Load(buf);
    }

    /// <summary>Lanes 0 .. count−1 of v to p[0 .. count); writes nothing past p + count.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreTail(Vector256<float> v, float* p, int count)
    {
        if (count >= 4)
        {
            v.GetLower().Store(p);
            for (int i = 4; i < count; i++) p[i] = v.GetElement(i);
        }
        else for (int i = 0; i < count; i++) p[i] = v.GetElement(i);
    }

    /// <summary>
    /// e^x for x ≤ 0 (the softmax domain, arguments shifted by the row maximum), ≈2 ulp: x = n·ln2 + r with
    /// |r| ≤ ln2/2 (ln2 split in two parts so n·ln2_hi is exact), e^r by the Cephes expf polynomial, and
    /// 2ⁿ built in the exponent bits. Below −87.33 (where e^x leaves the normal floats) it returns 0;
    /// −∞ gives 0 and NaN stays NaN. It halves the softmax row time compared with Vector256.Exp, which widens to double.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ExpNonPositive(Vector256<float> x)
    {
        var y = ExpCore256(Vector256.MaxNative(x, Vector256.Create(ExpMinArg))); // NaN: replaced below
        y = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(ExpMinArg)), Vector256<float>.Zero, y);
        return Vector256.ConditionalSelect(Vector256.Equals(x, x), y, x);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HorizontalMax(Vector256<float> v)
    {
        // Pairwise in registers (max is exact, so the order changes nothing). The native max may drop a NaN lane, see
        // MaxNative above RowMax256: a NaN in a row still makes its sum, and so the whole row, NaN.
        var m = Vector128.MaxNative(v.GetLower(), v.GetUpper());
        m = Vector128.MaxNative(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        m = Vector128.MaxNative(m, Vector128.Shuffle(m, Vector128.Create(1, 0, 3, 2)));
        return m.ToScalar();
    }
}
