// Float activations → integer GEMM operands, with exactly the arithmetic of the fake-quant simulation, so
// that the integer value a satisfies a·Δ = x̂ (the simulated value) bit for bit.
//
//   Uniform (UniformQuantizer / FakeQuant.UniformSpan):  code = clamp(round(x/Δ) + z, q_min, q_max)
//   LSQ     (LsqQuantizer.Apply):                        code = round(clamp(x/α + ⌊z⌉, q_min, q_max))
//   a = code − z   (int16; z is an integer, so a is exact and x̂ = a·Δ)
// round = round half to even; x/Δ is one IEEE division in both forms, as in the simulation. Each row of
// `cols` values goes to a row of stride ldd; when cols is odd, dst[r, cols] is set to 0 (the zero pad the
// pairwise GEMM reads). Paths: Vector512 / Vector256 / scalar (Quantize's reference twin), equal bits.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace ViTQuant.Kernels;

/// <summary>A per-tensor activation grid as the integer runtime applies it.</summary>
/// <param name="Scale">Δ (or α), already clamped to the minimum step the quantizer uses.</param>
/// <param name="Zero">z (integer-valued; for LSQ the rounded ⌊z⌉).</param>
/// <param name="QMin">smallest code.</param>
/// <param name="QMax">largest code.</param>
/// <param name="LsqOrder">true: clamp before rounding and add z before it (LSQ); false: the uniform order.</param>
internal readonly record struct ActGrid(float Scale, float Zero, int QMin, int QMax, bool LsqOrder)
{
    /// <summary>The unsigned 8-bit code u = code − q_min of one value (the VNNI kernel's operand; a = u − (z − q_min)). Valid when q_max − q_min ≤ 255.</summary>
    public byte CodeU8(float x) => (byte)(Code(x) + (int)Zero - QMin);

    /// <summary>z − q_min: the unsigned codes' zero point.</summary>
    public int ZeroU => (int)Zero - QMin;

    /// <summary>The integer operand of one value (the reference rule of the file header).</summary>
    public short Code(float x)
    {
        float code = LsqOrder
            ? MathF.Round(Math.Clamp(x / Scale + Zero, QMin, QMax))
            : Math.Clamp(MathF.Round(x / Scale) + Zero, QMin, QMax);
        return (short)(int)(code - Zero);
    }
}

/// <summary>Quantisation of float rows into int16 GEMM operands (file header).</summary>
internal static unsafe class ActQuantize
{
    /// <summary>
    /// dst[r·ldd + j] = grid.Code(x[r·ldx + j]) for r &lt; rows, j &lt; cols, and the odd-K pad set to 0.
    /// Parallel over rows unless inside a parallel body. Throws ArgumentException on short buffers.
    /// </summary>
    public static void Rows(ReadOnlySpan<float> x, int ldx, int rows, int cols, Span<short> dst, int ldd, ActGrid grid, IntGemmPath? path = null)
    {
        var p = path ?? Int8Gemm.Path;
        int pad = cols & 1;
        if (rows == 0) return;
        if (x.Length < (long)(rows - 1) * ldx + cols || dst.Length < (long)(rows - 1) * ldd + cols + pad || ldd < cols + pad)
            throw new ArgumentException($"quantize: buffers too short for {rows}×{cols} (x {x.Length}, stride {ldx}; dst {dst.Length}, stride {ldd})");
        fixed (float* px = x)
        fixed (short* pd = dst)
        {
            float* X = px;
            short* D = pd;
            Parallelism.ForChunks(rows, Math.Max(1, 16384 / Math.Max(1, cols)), (r0, r1) =>
            {
                for (int r = r0; r < r1; r++)
                {
                    float* xs = X + (nint)r * ldx;
                    short* ds = D + (nint)r * ldd;
                    int j = 0;
                    if (p >= IntGemmPath.Avx512 && Vector512.IsHardwareAccelerated) j = Row512(xs, ds, cols, grid);
                    else if (p != IntGemmPath.Scalar && Vector256.IsHardwareAccelerated) j = Row256(xs, ds, cols, grid);
                    for (; j < cols; j++) ds[j] = grid.Code(xs[j]);
                    if (pad != 0) ds[cols] = 0;
                }
            });
        }
    }

    /// <summary>
    /// dst[r·ldd + j] = grid.CodeU8(x[r·ldx + j]) for r &lt; rows, j &lt; cols (the VNNI kernel's u8 operand), and
    /// dst[r·ldd + j] = 0 for cols ≤ j &lt; pad. simd false runs the scalar rule. Parallel over rows unless inside a
    /// parallel body. Throws ArgumentException on short buffers or a grid wider than 8 bits.
    /// </summary>
    internal static void RowsU8(ReadOnlySpan<float> x, int ldx, int rows, int cols, Span<byte> dst, int ldd, int pad, ActGrid grid, bool simd = true)
    {
        if (grid.QMax - grid.QMin > 255) throw new ArgumentException($"quantize: grid [{grid.QMin}, {grid.QMax}] does not fit 8 bits");
        pad = Math.Max(pad, cols);
        if (rows == 0) return;
        if (x.Length < (long)(rows - 1) * ldx + cols || dst.Length < (long)(rows - 1) * ldd + pad || ldd < pad)
            throw new ArgumentException($"quantize: buffers too short for {rows}×{cols} (x {x.Length}, stride {ldx}; dst {dst.Length}, stride {ldd}, pad {pad})");
        simd &= Vector512.IsHardwareAccelerated && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
        fixed (float* px = x)
        fixed (byte* pd = dst)
        {
            float* X = px;
            byte* D = pd;
            Parallelism.ForChunks(rows, Math.Max(1, 16384 / Math.Max(1, cols)), (r0, r1) =>
            {
                for (int r = r0; r < r1; r++)
                {
                    float* xs = X + (nint)r * ldx;
                    byte* ds = D + (nint)r * ldd;
                    int j = simd ? RowU8x512(xs, ds, cols, grid) : 0;
                    for (; j < cols; j++) ds[j] = grid.CodeU8(xs[j]);
                    for (; j < pad; j++) ds[j] = 0;
                }
            });
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int RowU8x512(float* x, byte* d, int n, ActGrid g)
    {
        var s = Vector512.Create(g.Scale);
        var z = Vector512.Create(g.Zero);
        var lo = Vector512.Create((float)g.QMin);
        var hi = Vector512.Create((float)g.QMax);
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            // code − q_min: Code512 with q_min in place of z as the offset (exact: small integers in float).
            var c = Code512(Vector512.Load(x + j), s, z, lo, hi, g.LsqOrder) + Vector512.Create((int)g.Zero - g.QMin);
            System.Runtime.Intrinsics.X86.Avx512F.ConvertToVector128Byte(c).Store(d + j);
        }
        return j;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Row512(float* x, short* d, int n, ActGrid g)
    {
        var s = Vector512.Create(g.Scale);
        var z = Vector512.Create(g.Zero);
        var lo = Vector512.Create((float)g.QMin);
        var hi = Vector512.Create((float)g.QMax);
        int j = 0;
        for (; j + 32 <= n; j += 32)
        {
            var a = Code512(Vector512.Load(x + j), s, z, lo, hi, g.LsqOrder);
            var b = Code512(Vector512.Load(x + j + 16), s, z, lo, hi, g.LsqOrder);
            Vector512.Narrow(a, b).Store(d + j);
        }
        if (j + 16 <= n)
        {
            var a = Code512(Vector512.Load(x + j), s, z, lo, hi, g.LsqOrder);
            Vector512.Narrow(a, a).GetLower().Store(d + j);
            j += 16;
        }
        if (j + 8 <= n)
        {
            // One 8-wide step, so at most 7 values of a row take the scalar path (token counts like 197 are odd).
            var a = Code256(Vector256.Load(x + j), Vector256.Create(g.Scale), Vector256.Create(g.Zero),
                Vector256.Create((float)g.QMin), Vector256.Create((float)g.QMax), g.LsqOrder);
            Vector256.Narrow(a, a).GetLower().Store(d + j);
            j += 8;
        }
        return j;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Code512(Vector512<float> v, Vector512<float> s, Vector512<float> z, Vector512<float> lo, Vector512<float> hi, bool lsq)
    {
        // Native min/max and conversion: the values are finite and already integral in [q_min − z, q_max − z],
        // where the IEEE-exact forms (NaN/±0 fix-ups, saturation) give the same integers at twice the cost.
        Vector512<float> c = lsq
            ? Vector512.Round(Vector512.MinNative(Vector512.MaxNative(v / s + z, lo), hi))
            : Vector512.MinNative(Vector512.MaxNative(Vector512.Round(v / s) + z, lo), hi);
        return Vector512.ConvertToInt32Native(c - z);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Row256(float* x, short* d, int n, ActGrid g)
    {
        var s = Vector256.Create(g.Scale);
        var z = Vector256.Create(g.Zero);
        var lo = Vector256.Create((float)g.QMin);
        var hi = Vector256.Create((float)g.QMax);
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            var a = Code256(Vector256.Load(x + j), s, z, lo, hi, g.LsqOrder);
            var b = Code256(Vector256.Load(x + j + 8), s, z, lo, hi, g.LsqOrder);
            Vector256.Narrow(a, b).Store(d + j);
        }
        if (j + 8 <= n)
        {
            var a = Code256(Vector256.Load(x + j), s, z, lo, hi, g.LsqOrder);
            Vector256.Narrow(a, a).GetLower().Store(d + j);
            j += 8;
        }
        return j;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Code256(Vector256<float> v, Vector256<float> s, Vector256<float> z, Vector256<float> lo, Vector256<float> hi, bool lsq)
    {
        // Native min/max and conversion: the values are finite and already integral in [q_min − z, q_max − z],
        // where the IEEE-exact forms (NaN/±0 fix-ups, saturation) give the same integers at twice the cost.
        Vector256<float> c = lsq
            ? Vector256.Round(Vector256.MinNative(Vector256.MaxNative(v / s + z, lo), hi))
            : Vector256.MinNative(Vector256.MaxNative(Vector256.Round(v / s) + z, lo), hi);
        return Vector256.ConvertToInt32Native(c - z);
    }
}
