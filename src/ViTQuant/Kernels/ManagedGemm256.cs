// The AVX2 + FMA micro-kernel of the managed SGEMM, the 6×16 tile (its design, blocking, loop nest and packing in
// ManagedGemm.cs and GemmPacking.cs), and its in-place-A variant for the AVX2 attention (Attention256.cs).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

internal static unsafe partial class ManagedGemm
{
    // 6×16 tile: C = alpha·Σ_p a[p·aStep + r]·b[p·bStep + j] + beta·C (beta = 0 never reads C). The steps
    // default to packed panels (6 and 16); the AVX2 attention (Attention256.cs) passes row strides to read Pᵀ
    // or dSᵀ and a row-major B in place. Unaligned loads (the same speed on the aligned panels).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void KernelFma(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta, nint aStep = MR, nint bStep = NR)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        // Start pulling the C tile (6 rows, each ≤ 2 cache lines) in now; it is needed at the end.
        for (int r = 0; r < MR; r++)
        {
            Sse.Prefetch0(c + r * ldc);
            Sse.Prefetch0(c + r * ldc + NR - 1);
        }
        for (int p = 0; p < kc; p++)
        {
            var b0 = Avx.LoadVector256(b);
            var b1 = Avx.LoadVector256(b + 8);
            var av = Vector256.Create(a[0]);
            c00 = Fma.MultiplyAdd(av, b0, c00); c01 = Fma.MultiplyAdd(av, b1, c01);
            av = Vector256.Create(a[1]);
            c10 = Fma.MultiplyAdd(av, b0, c10); c11 = Fma.MultiplyAdd(av, b1, c11);
            av = Vector256.Create(a[2]);
            c20 = Fma.MultiplyAdd(av, b0, c20); c21 = Fma.MultiplyAdd(av, b1, c21);
            av = Vector256.Create(a[3]);
            c30 = Fma.MultiplyAdd(av, b0, c30); c31 = Fma.MultiplyAdd(av, b1, c31);
            av = Vector256.Create(a[4]);
            c40 = Fma.MultiplyAdd(av, b0, c40); c41 = Fma.MultiplyAdd(av, b1, c41);
            av = Vector256.Create(a[5]);
            c50 = Fma.MultiplyAdd(av, b0, c50); c51 = Fma.MultiplyAdd(av, b1, c51);
            a += aStep; b += bStep;
        }
        StoreTileFma(c, ldc, alpha, beta, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51);
    }

    // KernelFma with A read in place: row r of the 6×kc block at a + r·lda (A not transposed) instead of a packed
    // panel; B's rows bStep apart. The same products in the same order, so the same bits.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void KernelFmaDirect(int kc, float* a, nint lda, float* b, nint bStep, float* c, nint ldc, float alpha, float beta)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int r = 0; r < MR; r++)
        {
            Sse.Prefetch0(c + r * ldc);
            Sse.Prefetch0(c + r * ldc + NR - 1);
        }
        float* a0 = a, a3 = a + 3 * lda;
        nint l1 = lda, l2 = 2 * lda;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Avx.LoadVector256(b);
            var b1 = Avx.LoadVector256(b + 8);
            var av = Vector256.Create(a0[0]);
            c00 = Fma.MultiplyAdd(av, b0, c00); c01 = Fma.MultiplyAdd(av, b1, c01);
            av = Vector256.Create(a0[l1]);
            c10 = Fma.MultiplyAdd(av, b0, c10); c11 = Fma.MultiplyAdd(av, b1, c11);
            av = Vector256.Create(a0[l2]);
            c20 = Fma.MultiplyAdd(av, b0, c20); c21 = Fma.MultiplyAdd(av, b1, c21);
            av = Vector256.Create(a3[0]);
            c30 = Fma.MultiplyAdd(av, b0, c30); c31 = Fma.MultiplyAdd(av, b1, c31);
            av = Vector256.Create(a3[l1]);
            c40 = Fma.MultiplyAdd(av, b0, c40); c41 = Fma.MultiplyAdd(av, b1, c41);
            av = Vector256.Create(a3[l2]);
            c50 = Fma.MultiplyAdd(av, b0, c50); c51 = Fma.MultiplyAdd(av, b1, c51);
            a0++; a3++; b += bStep;
        }
        StoreTileFma(c, ldc, alpha, beta, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTileFma(float* c, nint ldc, float alpha, float beta,
        Vector256<float> c00, Vector256<float> c01, Vector256<float> c10, Vector256<float> c11, Vector256<float> c20, Vector256<float> c21,
        Vector256<float> c30, Vector256<float> c31, Vector256<float> c40, Vector256<float> c41, Vector256<float> c50, Vector256<float> c51)
    {
        var va = Vector256.Create(alpha);
        if (beta == 0f)
        {
            Avx.Store(c, c00 * va); Avx.Store(c + 8, c01 * va); c += ldc;
            Avx.Store(c, c10 * va); Avx.Store(c + 8, c11 * va); c += ldc;
            Avx.Store(c, c20 * va); Avx.Store(c + 8, c21 * va); c += ldc;
            Avx.Store(c, c30 * va); Avx.Store(c + 8, c31 * va); c += ldc;
            Avx.Store(c, c40 * va); Avx.Store(c + 8, c41 * va); c += ldc;
            Avx.Store(c, c50 * va); Avx.Store(c + 8, c51 * va);
        }
        else
        {
            var vb = Vector256.Create(beta);
            StoreRow(c, c00, c01, va, vb); c += ldc;
            StoreRow(c, c10, c11, va, vb); c += ldc;
            StoreRow(c, c20, c21, va, vb); c += ldc;
            StoreRow(c, c30, c31, va, vb); c += ldc;
            StoreRow(c, c40, c41, va, vb); c += ldc;
            StoreRow(c, c50, c51, va, vb);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow(float* c, Vector256<float> lo, Vector256<float> hi, Vector256<float> va, Vector256<float> vb)
    {
        Avx.Store(c, Fma.MultiplyAdd(lo, va, Avx.LoadVector256(c) * vb));
        Avx.Store(c + 8, Fma.MultiplyAdd(hi, va, Avx.LoadVector256(c + 8) * vb));
    }
}
