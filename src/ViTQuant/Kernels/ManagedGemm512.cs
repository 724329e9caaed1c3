// The AVX-512 micro-kernel of the managed SGEMM (loop nest, packing and edge handling in
// ManagedGemm.cs and GemmPacking.cs, which are shared with the AVX2 kernel).
//
// Tile: 12 rows × 32 columns of C in 24 Vector512 accumulators. Per k step: two aligned 64-byte loads
// of the packed B row (32 floats), twelve broadcasts of the packed A column and 24 FMAs. With the
// two B vectors and one broadcast that is 27 of the 32 zmm registers, and 24 independent FMA chains
// cover a 4-cycle FMA latency on two 512-bit pipes (Intel) as well as Zen 4's double-pumped one.
// Against the 6×16 AVX2 tile (12 FMAs of 8 lanes per 8 loads) this does 4× the multiply-adds per
// load, which is what lets a load-limited core reach its FMA peak.
//
// Blocking: KC = 192 keeps a packed B micro-panel (192·32·4 B = 24 KB) inside a 32 KB L1d next to the
// A panel stream (12·192·4 B = 9 KB); MC = 144 (12 panels) keeps the packed A block (108 KB) in L2;
// NC = 4064 (a multiple of 32) bounds the packed B block near 3 MB.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

internal static unsafe partial class ManagedGemm
{
    private const int MR512 = GemmPacking.MR512, NR512 = GemmPacking.NR512;
    internal const int KC512 = 192, NC512 = 4064;

    // 12×32 tile: C = alpha·Σ_p a[p·aStep + r]·b[p·bStep + j] + beta·C (beta = 0 never reads C), or with a bias
    // (not null) C = alpha·Σ + bias[j] (C not read): see StoreTile512. The steps default to packed panels (12 and
    // 32); the attention backward passes row strides to read Pᵀ or dSᵀ and a row-major B in place. Unaligned loads
    // (the same instruction speed on the aligned panels).
    // a and b are packed panels; b is 64-byte aligned (GemmPacking.Buffers, panels of kc·32 floats).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Kernel512(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta, float* bias = null,
        nint aStep = MR512, nint bStep = NR512, float* residual = null)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default, c90 = default, c91 = default, c100 = default, c101 = default, c110 = default, c111 = default;
        // Start pulling the C tile (12 rows of 2 cache lines) in now; it is needed at the end.
        Prefetch(c, ldc, residual);
        for (int p = 0; p < kc; p++)
        {
            var b0 = Avx512F.LoadVector512(b);
            var b1 = Avx512F.LoadVector512(b + 16);
            Vector512<float> av;
            av = Vector512.Create(a[0]); c00 = Avx512F.FusedMultiplyAdd(av, b0, c00); c01 = Avx512F.FusedMultiplyAdd(av, b1, c01);
            av = Vector512.Create(a[1]); c10 = Avx512F.FusedMultiplyAdd(av, b0, c10); c11 = Avx512F.FusedMultiplyAdd(av, b1, c11);
            av = Vector512.Create(a[2]); c20 = Avx512F.FusedMultiplyAdd(av, b0, c20); c21 = Avx512F.FusedMultiplyAdd(av, b1, c21);
            av = Vector512.Create(a[3]); c30 = Avx512F.FusedMultiplyAdd(av, b0, c30); c31 = Avx512F.FusedMultiplyAdd(av, b1, c31);
            av = Vector512.Create(a[4]); c40 = Avx512F.FusedMultiplyAdd(av, b0, c40); c41 = Avx512F.FusedMultiplyAdd(av, b1, c41);
            av = Vector512.Create(a[5]); c50 = Avx512F.FusedMultiplyAdd(av, b0, c50); c51 = Avx512F.FusedMultiplyAdd(av, b1, c51);
            av = Vector512.Create(a[6]); c60 = Avx512F.FusedMultiplyAdd(av, b0, c60); c61 = Avx512F.FusedMultiplyAdd(av, b1, c61);
            av = Vector512.Create(a[7]); c70 = Avx512F.FusedMultiplyAdd(av, b0, c70); c71 = Avx512F.FusedMultiplyAdd(av, b1, c71);
            av = Vector512.Create(a[8]); c80 = Avx512F.FusedMultiplyAdd(av, b0, c80); c81 = Avx512F.FusedMultiplyAdd(av, b1, c81);
            av = Vector512.Create(a[9]); c90 = Avx512F.FusedMultiplyAdd(av, b0, c90); c91 = Avx512F.FusedMultiplyAdd(av, b1, c91);
            av = Vector512.Create(a[10]); c100 = Avx512F.FusedMultiplyAdd(av, b0, c100); c101 = Avx512F.FusedMultiplyAdd(av, b1, c101);
            av = Vector512.Create(a[11]); c110 = Avx512F.FusedMultiplyAdd(av, b0, c110); c111 = Avx512F.FusedMultiplyAdd(av, b1, c111);
            a += aStep; b += bStep;
        }
        StoreTile512(c, ldc, alpha, beta, bias, residual, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71, c80, c81, c90, c91, c100, c101, c110, c111);
    }

    // Kernel512 with A read in place: row r of the 12×kc block at a + r·lda (A not transposed), instead of a
    // packed panel; B's rows bStep apart (NR512 for a packed panel, a row stride for a matrix read in place). The same products in the same order, so the same bits. Rows are reached from four base
    // pointers (rows 0, 3, 6, 9) plus 0, lda or 2·lda, which x86 addressing folds into each broadcast.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Kernel512Direct(int kc, float* a, nint lda, float* b, nint bStep, float* c, nint ldc, float alpha, float beta, float* bias = null,
        float* residual = null)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default, c90 = default, c91 = default, c100 = default, c101 = default, c110 = default, c111 = default;
        Prefetch(c, ldc, residual);
        float* a0 = a, a3 = a + 3 * lda, a6 = a + 6 * lda, a9 = a + 9 * lda;
        nint l1 = lda, l2 = 2 * lda;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Avx512F.LoadVector512(b);
            var b1 = Avx512F.LoadVector512(b + 16);
            Vector512<float> av;
            av = Vector512.Create(a0[0]); c00 = Avx512F.FusedMultiplyAdd(av, b0, c00); c01 = Avx512F.FusedMultiplyAdd(av, b1, c01);
            av = Vector512.Create(a0[l1]); c10 = Avx512F.FusedMultiplyAdd(av, b0, c10); c11 = Avx512F.FusedMultiplyAdd(av, b1, c11);
            av = Vector512.Create(a0[l2]); c20 = Avx512F.FusedMultiplyAdd(av, b0, c20); c21 = Avx512F.FusedMultiplyAdd(av, b1, c21);
            av = Vector512.Create(a3[0]); c30 = Avx512F.FusedMultiplyAdd(av, b0, c30); c31 = Avx512F.FusedMultiplyAdd(av, b1, c31);
            av = Vector512.Create(a3[l1]); c40 = Avx512F.FusedMultiplyAdd(av, b0, c40); c41 = Avx512F.FusedMultiplyAdd(av, b1, c41);
            av = Vector512.Create(a3[l2]); c50 = Avx512F.FusedMultiplyAdd(av, b0, c50); c51 = Avx512F.FusedMultiplyAdd(av, b1, c51);
            av = Vector512.Create(a6[0]); c60 = Avx512F.FusedMultiplyAdd(av, b0, c60); c61 = Avx512F.FusedMultiplyAdd(av, b1, c61);
            av = Vector512.Create(a6[l1]); c70 = Avx512F.FusedMultiplyAdd(av, b0, c70); c71 = Avx512F.FusedMultiplyAdd(av, b1, c71);
            av = Vector512.Create(a6[l2]); c80 = Avx512F.FusedMultiplyAdd(av, b0, c80); c81 = Avx512F.FusedMultiplyAdd(av, b1, c81);
            av = Vector512.Create(a9[0]); c90 = Avx512F.FusedMultiplyAdd(av, b0, c90); c91 = Avx512F.FusedMultiplyAdd(av, b1, c91);
            av = Vector512.Create(a9[l1]); c100 = Avx512F.FusedMultiplyAdd(av, b0, c100); c101 = Avx512F.FusedMultiplyAdd(av, b1, c101);
            av = Vector512.Create(a9[l2]); c110 = Avx512F.FusedMultiplyAdd(av, b0, c110); c111 = Avx512F.FusedMultiplyAdd(av, b1, c111);
            a0++; a3++; a6++; a9++; b += bStep;
        }
        StoreTile512(c, ldc, alpha, beta, bias, residual, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71, c80, c81, c90, c91, c100, c101, c110, c111);
    }

    // Starts pulling the C tile (12 rows of 2 cache lines), and the residual's when there is one, in now: they are
    // needed at the end.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(float* c, nint ldc, float* residual)
    {
        for (int r = 0; r < MR512; r++)
        {
            Sse.Prefetch0(c + r * ldc);
            Sse.Prefetch0(c + r * ldc + 16);
        }
        if (residual == null) return;
        for (int r = 0; r < MR512; r++)
        {
            Sse.Prefetch0(residual + r * ldc);
            Sse.Prefetch0(residual + r * ldc + 16);
        }
    }

    /// <summary>A row count for <see cref="KernelRows512{TRows}"/>, known when the method is jitted.</summary>
    internal interface IRowCount { static abstract int Count { get; } }
    internal struct Rows1 : IRowCount { public static int Count => 1; }
    internal struct Rows2 : IRowCount { public static int Count => 2; }
    internal struct Rows3 : IRowCount { public static int Count => 3; }
    internal struct Rows4 : IRowCount { public static int Count => 4; }
    internal struct Rows5 : IRowCount { public static int Count => 5; }
    internal struct Rows6 : IRowCount { public static int Count => 6; }
    internal struct Rows7 : IRowCount { public static int Count => 7; }
    internal struct Rows8 : IRowCount { public static int Count => 8; }
    internal struct Rows9 : IRowCount { public static int Count => 9; }
    internal struct Rows10 : IRowCount { public static int Count => 10; }
    internal struct Rows11 : IRowCount { public static int Count => 11; }

    /// <summary>
    /// The 12×32 kernel for a last block of <paramref name="rows"/> &lt; 12 rows, computing and storing only those
    /// rows: C[r, 0..32) = alpha·Σ_p A(r, p)·b[p·bStep + 0..32) + beta·C[r] (beta = 0 never reads C), with
    /// A(r, p) = a[r·rowStride + p·kStep] (a packed or transposed panel: rowStride 1, kStep its row length; A's
    /// rows read in place: rowStride lda, kStep 1). Each row is the same FMA chain as in Kernel512 and is stored
    /// with StoreTile512's formula, so it has Kernel512's bits, without the work of the padded rows (a 50-token
    /// head's last block has 2 rows of 12: a sixth of its attention products) or a packed partial panel.
    /// </summary>
    internal static void KernelRows512(int rows, int kc, float* a, nint rowStride, nint kStep, float* b, nint bStep,
        float* c, nint ldc, float alpha, float beta)
    {
        switch (rows)
        {
            case 1: KernelRows512<Rows1>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 2: KernelRows512<Rows2>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 3: KernelRows512<Rows3>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 4: KernelRows512<Rows4>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 5: KernelRows512<Rows5>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 6: KernelRows512<Rows6>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 7: KernelRows512<Rows7>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 8: KernelRows512<Rows8>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 9: KernelRows512<Rows9>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 10: KernelRows512<Rows10>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            case 11: KernelRows512<Rows11>(kc, a, rowStride, kStep, b, bStep, c, ldc, alpha, beta); break;
            default: throw new ArgumentOutOfRangeException(nameof(rows), rows, "a partial block has 1 to 11 rows");
        }
    }

    // One instantiation per row count: TRows.Count is a constant in each, so the rows past it and their
    // accumulators are compiled away.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KernelRows512<TRows>(int kc, float* a, nint rowStride, nint kStep, float* b, nint bStep,
        float* c, nint ldc, float alpha, float beta) where TRows : struct, IRowCount
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default, c90 = default, c91 = default, c100 = default, c101 = default;
        float* a0 = a, a3 = a + 3 * rowStride, a6 = a + 6 * rowStride, a9 = a + 9 * rowStride;
        nint l1 = rowStride, l2 = 2 * rowStride;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Avx512F.LoadVector512(b);
            var b1 = Avx512F.LoadVector512(b + 16);
            Vector512<float> av = Vector512.Create(a0[0]);
            c00 = Avx512F.FusedMultiplyAdd(av, b0, c00); c01 = Avx512F.FusedMultiplyAdd(av, b1, c01);
            if (TRows.Count > 1) { av = Vector512.Create(a0[l1]); c10 = Avx512F.FusedMultiplyAdd(av, b0, c10); c11 = Avx512F.FusedMultiplyAdd(av, b1, c11); }
            if (TRows.Count > 2) { av = Vector512.Create(a0[l2]); c20 = Avx512F.FusedMultiplyAdd(av, b0, c20); c21 = Avx512F.FusedMultiplyAdd(av, b1, c21); }
            if (TRows.Count > 3) { av = Vector512.Create(a3[0]); c30 = Avx512F.FusedMultiplyAdd(av, b0, c30); c31 = Avx512F.FusedMultiplyAdd(av, b1, c31); }
            if (TRows.Count > 4) { av = Vector512.Create(a3[l1]); c40 = Avx512F.FusedMultiplyAdd(av, b0, c40); c41 = Avx512F.FusedMultiplyAdd(av, b1, c41); }
            if (TRows.Count > 5) { av = Vector512.Create(a3[l2]); c50 = Avx512F.FusedMultiplyAdd(av, b0, c50); c51 = Avx512F.FusedMultiplyAdd(av, b1, c51); }
            if (TRows.Count > 6) { av = Vector512.Create(a6[0]); c60 = Avx512F.FusedMultiplyAdd(av, b0, c60); c61 = Avx512F.FusedMultiplyAdd(av, b1, c61); }
            if (TRows.Count > 7) { av = Vector512.Create(a6[l1]); c70 = Avx512F.FusedMultiplyAdd(av, b0, c70); c71 = Avx512F.FusedMultiplyAdd(av, b1, c71); }
            if (TRows.Count > 8) { av = Vector512.Create(a6[l2]); c80 = Avx512F.FusedMultiplyAdd(av, b0, c80); c81 = Avx512F.FusedMultiplyAdd(av, b1, c81); }
            if (TRows.Count > 9) { av = Vector512.Create(a9[0]); c90 = Avx512F.FusedMultiplyAdd(av, b0, c90); c91 = Avx512F.FusedMultiplyAdd(av, b1, c91); }
            if (TRows.Count > 10) { av = Vector512.Create(a9[l1]); c100 = Avx512F.FusedMultiplyAdd(av, b0, c100); c101 = Avx512F.FusedMultiplyAdd(av, b1, c101); }
            a0 += kStep; a3 += kStep; a6 += kStep; a9 += kStep; b += bStep;
        }
        var va = Vector512.Create(alpha);
        var vb = Vector512.Create(beta);
        StoreRow(c + 0 * ldc, c00, c01, va, vb, beta);
        if (TRows.Count > 1) StoreRow(c + 1 * ldc, c10, c11, va, vb, beta);
        if (TRows.Count > 2) StoreRow(c + 2 * ldc, c20, c21, va, vb, beta);
        if (TRows.Count > 3) StoreRow(c + 3 * ldc, c30, c31, va, vb, beta);
        if (TRows.Count > 4) StoreRow(c + 4 * ldc, c40, c41, va, vb, beta);
        if (TRows.Count > 5) StoreRow(c + 5 * ldc, c50, c51, va, vb, beta);
        if (TRows.Count > 6) StoreRow(c + 6 * ldc, c60, c61, va, vb, beta);
        if (TRows.Count > 7) StoreRow(c + 7 * ldc, c70, c71, va, vb, beta);
        if (TRows.Count > 8) StoreRow(c + 8 * ldc, c80, c81, va, vb, beta);
        if (TRows.Count > 9) StoreRow(c + 9 * ldc, c90, c91, va, vb, beta);
        if (TRows.Count > 10) StoreRow(c + 10 * ldc, c100, c101, va, vb, beta);
    }

    // One row of a finished tile, as StoreTile512 stores it without a bias.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow(float* c, Vector512<float> lo, Vector512<float> hi, Vector512<float> va, Vector512<float> vb, float beta)
    {
        if (beta == 0f)
        {
            Avx512F.Store(c, lo * va);
            Avx512F.Store(c + 16, hi * va);
        }
        else StoreRow512(c, lo, hi, va, vb);
    }

    // Stores a finished 12×32 tile: C = alpha·acc (beta = 0, C not read), C = alpha·acc + beta·C, or, with a
    // bias, C = alpha·acc + bias[j] in one fused multiply-add — bit for bit what filling C with the bias rows and
    // storing with beta = 1 gives (bias·1 is exact), without the fill's 24 stores and the 24 loads of C. A residual
    // (not null; rows ldc apart, as C) is then added to that value: the bits of adding it to C afterwards.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTile512(float* c, nint ldc, float alpha, float beta, float* bias, float* residual,
        Vector512<float> c00, Vector512<float> c01, Vector512<float> c10, Vector512<float> c11, Vector512<float> c20, Vector512<float> c21,
        Vector512<float> c30, Vector512<float> c31, Vector512<float> c40, Vector512<float> c41, Vector512<float> c50, Vector512<float> c51,
        Vector512<float> c60, Vector512<float> c61, Vector512<float> c70, Vector512<float> c71, Vector512<float> c80, Vector512<float> c81,
        Vector512<float> c90, Vector512<float> c91, Vector512<float> c100, Vector512<float> c101, Vector512<float> c110, Vector512<float> c111)
    {
        var va = Vector512.Create(alpha);
        if (residual != null)
        {
            ResidualTile(c, ldc, alpha, beta, bias, residual, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71, c80, c81, c90, c91, c100, c101, c110, c111);
            return;
        }
        if (bias != null)
        {
            var b0 = Avx512F.LoadVector512(bias);
            var b1 = Avx512F.LoadVector512(bias + 16);
            BiasRow(c, c00, c01, va, b0, b1); BiasRow(c + ldc, c10, c11, va, b0, b1); BiasRow(c + 2 * ldc, c20, c21, va, b0, b1);
            BiasRow(c + 3 * ldc, c30, c31, va, b0, b1); BiasRow(c + 4 * ldc, c40, c41, va, b0, b1); BiasRow(c + 5 * ldc, c50, c51, va, b0, b1);
            BiasRow(c + 6 * ldc, c60, c61, va, b0, b1); BiasRow(c + 7 * ldc, c70, c71, va, b0, b1); BiasRow(c + 8 * ldc, c80, c81, va, b0, b1);
            BiasRow(c + 9 * ldc, c90, c91, va, b0, b1); BiasRow(c + 10 * ldc, c100, c101, va, b0, b1); BiasRow(c + 11 * ldc, c110, c111, va, b0, b1);
            return;
        }
        if (beta == 0f)
        {
            Avx512F.Store(c, c00 * va); Avx512F.Store(c + 16, c01 * va); c += ldc;
            Avx512F.Store(c, c10 * va); Avx512F.Store(c + 16, c11 * va); c += ldc;
            Avx512F.Store(c, c20 * va); Avx512F.Store(c + 16, c21 * va); c += ldc;
            Avx512F.Store(c, c30 * va); Avx512F.Store(c + 16, c31 * va); c += ldc;
            Avx512F.Store(c, c40 * va); Avx512F.Store(c + 16, c41 * va); c += ldc;
            Avx512F.Store(c, c50 * va); Avx512F.Store(c + 16, c51 * va); c += ldc;
            Avx512F.Store(c, c60 * va); Avx512F.Store(c + 16, c61 * va); c += ldc;
            Avx512F.Store(c, c70 * va); Avx512F.Store(c + 16, c71 * va); c += ldc;
            Avx512F.Store(c, c80 * va); Avx512F.Store(c + 16, c81 * va); c += ldc;
            Avx512F.Store(c, c90 * va); Avx512F.Store(c + 16, c91 * va); c += ldc;
            Avx512F.Store(c, c100 * va); Avx512F.Store(c + 16, c101 * va); c += ldc;
            Avx512F.Store(c, c110 * va); Avx512F.Store(c + 16, c111 * va);
            return;
        }
        var vb = Vector512.Create(beta);
        StoreRow512(c, c00, c01, va, vb); c += ldc;
        StoreRow512(c, c10, c11, va, vb); c += ldc;
        StoreRow512(c, c20, c21, va, vb); c += ldc;
        StoreRow512(c, c30, c31, va, vb); c += ldc;
        StoreRow512(c, c40, c41, va, vb); c += ldc;
        StoreRow512(c, c50, c51, va, vb); c += ldc;
        StoreRow512(c, c60, c61, va, vb); c += ldc;
        StoreRow512(c, c70, c71, va, vb); c += ldc;
        StoreRow512(c, c80, c81, va, vb); c += ldc;
        StoreRow512(c, c90, c91, va, vb); c += ldc;
        StoreRow512(c, c100, c101, va, vb); c += ldc;
        StoreRow512(c, c110, c111, va, vb);
    }

    // Edge tile: C[0..mr, 0..nr] = alpha·tile + beta·C (tile rows NR512 apart; beta = 0 does not read C),
    // with masked loads and stores so the columns past nr are neither read nor written. The same
    // arithmetic as MergeEdge (a product, then a sum; no FMA), so the result does not depend on which ran.
    private static void MergeEdge512(float* tile, int mr, int nr, float* c, nint ldc, float alpha, float beta)
    {
        var va = Vector512.Create(alpha);
        var vb = Vector512.Create(beta);
        var lane = Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        var m0 = Vector512.LessThan(lane, Vector512.Create((float)Math.Min(nr, 16)));
        var m1 = Vector512.LessThan(lane, Vector512.Create((float)(nr - 16)));
        for (int r = 0; r < mr; r++, tile += NR512, c += ldc)
        {
            var t0 = Avx512F.LoadAlignedVector512(tile) * va;
            if (beta != 0f) t0 += Avx512F.MaskLoad(c, m0, Vector512<float>.Zero) * vb;
            Avx512F.MaskStore(c, m0, t0);
            if (nr <= 16) continue;
            var t1 = Avx512F.LoadAlignedVector512(tile + 16) * va;
            if (beta != 0f) t1 += Avx512F.MaskLoad(c + 16, m1, Vector512<float>.Zero) * vb;
            Avx512F.MaskStore(c + 16, m1, t1);
        }
    }

    // StoreTile512 with a residual, row by row: each row's value as StoreTile512 forms it, plus the residual's row.
    private static void ResidualTile(float* c, nint ldc, float alpha, float beta, float* bias, float* res,
        Vector512<float> c00, Vector512<float> c01, Vector512<float> c10, Vector512<float> c11, Vector512<float> c20, Vector512<float> c21,
        Vector512<float> c30, Vector512<float> c31, Vector512<float> c40, Vector512<float> c41, Vector512<float> c50, Vector512<float> c51,
        Vector512<float> c60, Vector512<float> c61, Vector512<float> c70, Vector512<float> c71, Vector512<float> c80, Vector512<float> c81,
        Vector512<float> c90, Vector512<float> c91, Vector512<float> c100, Vector512<float> c101, Vector512<float> c110, Vector512<float> c111)
    {
        var va = Vector512.Create(alpha);
        var vb = Vector512.Create(beta);
        ResidualRow(c, res, c00, c01, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c10, c11, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c20, c21, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c30, c31, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c40, c41, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c50, c51, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c60, c61, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c70, c71, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c80, c81, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c90, c91, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c100, c101, va, vb, beta, bias); c += ldc; res += ldc;
        ResidualRow(c, res, c110, c111, va, vb, beta, bias);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ResidualRow(float* c, float* res, Vector512<float> lo, Vector512<float> hi, Vector512<float> va, Vector512<float> vb,
        float beta, float* bias)
    {
        Vector512<float> v0, v1;
        if (bias != null)
        {
            v0 = Avx512F.FusedMultiplyAdd(lo, va, Avx512F.LoadVector512(bias));
            v1 = Avx512F.FusedMultiplyAdd(hi, va, Avx512F.LoadVector512(bias + 16));
        }
        else if (beta == 0f)
        {
            v0 = lo * va;
            v1 = hi * va;
        }
        else
        {
            v0 = Avx512F.FusedMultiplyAdd(lo, va, Avx512F.LoadVector512(c) * vb);
            v1 = Avx512F.FusedMultiplyAdd(hi, va, Avx512F.LoadVector512(c + 16) * vb);
        }
        Avx512F.Store(c, v0 + Avx512F.LoadVector512(res));
        Avx512F.Store(c + 16, v1 + Avx512F.LoadVector512(res + 16));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BiasRow(float* row, Vector512<float> lo, Vector512<float> hi, Vector512<float> va, Vector512<float> b0, Vector512<float> b1)
    {
        Avx512F.Store(row, Avx512F.FusedMultiplyAdd(lo, va, b0));
        Avx512F.Store(row + 16, Avx512F.FusedMultiplyAdd(hi, va, b1));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow512(float* c, Vector512<float> lo, Vector512<float> hi, Vector512<float> va, Vector512<float> vb)
    {
        Avx512F.Store(c, Avx512F.FusedMultiplyAdd(lo, va, Avx512F.LoadVector512(c) * vb));
        Avx512F.Store(c + 16, Avx512F.FusedMultiplyAdd(hi, va, Avx512F.LoadVector512(c + 16) * vb));
    }
}
