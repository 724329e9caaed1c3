// Packing for the managed SGEMM (see ManagedGemm.cs for the loop nest).
//
// The micro-kernel reads op(A) and op(B) only from packed buffers, so the four transpose cases are
// handled here and nowhere else:
//
//   packed A block (mc × kc): ⌈mc/MR⌉ panels, panel q holds rows q·MR .. q·MR+MR-1 as
//       Ap[q·kc·MR + p·MR + r] = op(A)[ic + q·MR + r, pc + p]          (zero for rows past mc)
//   packed B block (kc × nc): ⌈nc/NR⌉ panels, panel q holds columns q·NR .. q·NR+NR-1 as
//       Bp[q·kc·NR + p·NR + c] = op(B)[pc + p, jc + q·NR + c]          (zero for columns past nc)
//
// Padding edge panels with zeros lets the kernel always compute full MR×NR tiles; the padded rows
// and columns contribute exact zeros and are simply not stored (ManagedGemm merges edge tiles).
//
// Storage: op(A)[i, p] = transA ? a[p·lda + i] : a[i·lda + p];
//          op(B)[p, j] = transB ? b[j·ldb + p] : b[p·ldb + j].
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

internal static unsafe class GemmPacking
{
    /// <summary>Tile of the AVX2 and portable kernels (rows × columns of C per micro-kernel call).</summary>
    public const int MR = 6, NR = 16;

    /// <summary>Tile of the AVX-512 kernel (ManagedGemm512.cs).</summary>
    public const int MR512 = 12, NR512 = 32;

    /// <summary>Packs op(A)[ic .. ic+mc, pc .. pc+kc] into MR-row panels at dst.</summary>
    public static void PackA(bool transA, float* a, nint lda, int ic, int pc, int mc, int kc, float* dst)
        => PackA(transA, a, lda, ic, pc, mc, kc, dst, MR);

    /// <summary>Packs op(B)[pc .. pc+kc, jc .. jc+nc] into NR-column panels at dst.</summary>
    public static void PackB(bool transB, float* b, nint ldb, int pc, int jc, int kc, int nc, float* dst)
        => PackB(transB, b, ldb, pc, jc, kc, nc, dst, NR);

    /// <summary>
    /// Packs op(A)[ic .. ic+mc, pc .. pc+kc] into <paramref name="tileRows"/>-row panels at dst
    /// (tileRows = MR or MR512).
    /// </summary>
    public static void PackA(bool transA, float* a, nint lda, int ic, int pc, int mc, int kc, float* dst, int tileRows)
    {
        if (tileRows == MR512)
        {
            PackA12(transA, a, lda, ic, pc, mc, kc, dst);
            return;
        }
        for (int i0 = 0; i0 < mc; i0 += MR, dst += (nint)kc * MR)
        {
            int mr = Math.Min(MR, mc - i0);
            if (!transA)
            {
                // Rows are contiguous in memory; walk MR of them side by side.
                float* src = a + (nint)(ic + i0) * lda + pc;
                if (mr == MR)
                {
                    float* r0 = src, r1 = src + lda, r2 = src + 2 * lda, r3 = src + 3 * lda, r4 = src + 4 * lda, r5 = src + 5 * lda;
                    int p = 0;
                    if (Avx.IsSupported)
                    {
                        // 8 k-values of the 6 rows at a time: transpose as 8×8 with two zero rows;
                        // column q (6 values + 2 zeros) is stored at dst + (p+q)·6, each store's
                        // 2 extra floats overwritten by the next (or landing in the buffer's slack).
                        for (; p + 8 <= kc; p += 8)
                            Transpose8x8(
                                Avx.LoadVector256(r0 + p), Avx.LoadVector256(r1 + p), Avx.LoadVector256(r2 + p),
                                Avx.LoadVector256(r3 + p), Avx.LoadVector256(r4 + p), Avx.LoadVector256(r5 + p),
                                Vector256<float>.Zero, Vector256<float>.Zero, dst + p * MR, MR);
                    }
                    for (float* d = dst + p * MR; p < kc; p++, d += MR)
                    {
                        d[0] = r0[p]; d[1] = r1[p]; d[2] = r2[p];
                        d[3] = r3[p]; d[4] = r4[p]; d[5] = r5[p];
                    }
                }
                else
                {
                    // A partial panel (the rows past M are zeros): clear it, then copy the rows there are.
                    new Span<float>(dst, kc * MR).Clear();
                    for (int r = 0; r < mr; r++)
                        for (int p = 0; p < kc; p++) dst[p * MR + r] = src[r * lda + p];
                }
            }
            else
            {
                // A is stored K×M: the MR values of one k are contiguous.
                float* src = a + (nint)pc * lda + ic + i0;
                if (mr == MR)
                {
                    // Six floats as two overlapping 4-float moves (elements 0..3 and 2..5) instead of six scalar ones,
                    // nothing read or written past the six (the weight gradients pack all their A this way).
                    float* d = dst;
                    for (int p = 0; p < kc; p++, d += MR, src += lda)
                    {
                        var lo = Vector128.Load(src);
                        var hi = Vector128.Load(src + 2);
                        lo.Store(d);
                        hi.Store(d + 2);
                    }
                }
                else
                {
                    for (int p = 0; p < kc; p++, src += lda)
                        for (int r = 0; r < MR; r++)
                            dst[p * MR + r] = r < mr ? src[r] : 0f;
                }
            }
        }
    }

    /// <summary>
    /// Packs op(B)[pc .. pc+kc, jc .. jc+nc] into <paramref name="nr"/>-column panels at dst
    /// (nr = NR or NR512, a multiple of 8).
    /// </summary>
    public static void PackB(bool transB, float* b, nint ldb, int pc, int jc, int kc, int nc, float* dst, int nr)
    {
        for (int j0 = 0; j0 < nc; j0 += nr, dst += (nint)kc * nr)
        {
            int cols = Math.Min(nr, nc - j0);
            if (!transB)
            {
                // B is stored K×N: the nr values of one k are contiguous.
                float* src = b + (nint)pc * ldb + jc + j0;
                if (cols == nr)
                {
                    float* d = dst;
                    for (int p = 0; p < kc; p++, d += nr, src += ldb)
                        for (int v = 0; v < nr; v += 8)
                            Vector256.Store(Vector256.Load(src + v), d + v);
                }
                else
                {
                    // A partial panel (columns past N are zeros): each row as whole vectors, the last valid one a
                    // masked load, instead of element by element with a branch each.
                    float* d = dst;
                    for (int p = 0; p < kc; p++, d += nr, src += ldb)
                        for (int v = 0; v < nr; v += 8)
                        {
                            int count = cols - v;
                            var x = count >= 8 ? Vector256.Load(src + v) : count > 0 ? RowSimd.LoadTail(src + v, count, 0f) : Vector256<float>.Zero;
                            x.Store(d + v);
                        }
                }
            }
            else
            {
                // B is stored N×K: each output column is a contiguous row of B, so this is a
                // transpose. Full panels go through 8×8 register transposes.
                float* src = b + (nint)(jc + j0) * ldb + pc;
                if (Avx.IsSupported) PackBTransposed(src, ldb, kc, dst, nr, cols);
                else
                {
                    // A partial panel: clear it, then scatter the columns there are.
                    new Span<float>(dst, kc * nr).Clear();
                    for (int c = 0; c < cols; c++)
                    {
                        float* row = src + c * ldb;
                        for (int p = 0; p < kc; p++) dst[p * nr + c] = row[p];
                    }
                }
            }
        }
    }

    // dst[p·nr + c] = src[c·ldb + p] for c < cols, p < kc, and 0 for cols ≤ c < nr: nr/8 groups of 8 rows, 8
    // k-values at a time through 8×8 register transposes, rows past cols as zero vectors (a 50-token head's kᵀ
    // has a last panel of 18 columns of 32; scattering them element by element took 10 % of its forward).
    private static void PackBTransposed(float* src, nint ldb, int kc, float* dst, int nr, int cols)
    {
        int p = 0;
        var z = Vector256<float>.Zero;
        for (; p + 8 <= kc; p += 8)
        {
            for (int g = 0; g < nr; g += 8)
            {
                float* s = src + g * ldb + p;
                int rows = cols - g;
                if (rows >= 8)
                    Transpose8x8(
                        Avx.LoadVector256(s), Avx.LoadVector256(s + ldb),
                        Avx.LoadVector256(s + 2 * ldb), Avx.LoadVector256(s + 3 * ldb),
                        Avx.LoadVector256(s + 4 * ldb), Avx.LoadVector256(s + 5 * ldb),
                        Avx.LoadVector256(s + 6 * ldb), Avx.LoadVector256(s + 7 * ldb),
                        dst + p * nr + g, nr);
                else if (rows <= 0)
                    for (int q = 0; q < 8; q++) z.Store(dst + (p + q) * nr + g);
                else
                    Transpose8x8(
                        Avx.LoadVector256(s), rows > 1 ? Avx.LoadVector256(s + ldb) : z,
                        rows > 2 ? Avx.LoadVector256(s + 2 * ldb) : z, rows > 3 ? Avx.LoadVector256(s + 3 * ldb) : z,
                        rows > 4 ? Avx.LoadVector256(s + 4 * ldb) : z, rows > 5 ? Avx.LoadVector256(s + 5 * ldb) : z,
                        rows > 6 ? Avx.LoadVector256(s + 6 * ldb) : z, z,
                        dst + p * nr + g, nr);
            }
        }
        for (; p < kc; p++)
            for (int c = 0; c < nr; c++) dst[p * nr + c] = c < cols ? src[c * ldb + p] : 0f;
    }

    // PackA for the 12-row tile of the AVX-512 kernel. Same layout as PackA with MR512 rows per panel.
    private static void PackA12(bool transA, float* a, nint lda, int ic, int pc, int mc, int kc, float* dst)
    {
        const int R = MR512;
        for (int i0 = 0; i0 < mc; i0 += R, dst += (nint)kc * R)
        {
            int mr = Math.Min(R, mc - i0);
            if (!transA)
            {
                float* src = a + (nint)(ic + i0) * lda + pc;
                int p = 0;
                if (mr == R && Avx.IsSupported)
                {
                    // 8 k-values at a time as two 8×8 transposes: first rows 8..11 (+ 4 zero rows) into
                    // floats 8..15 of each 12-float column, whose last 4 spill into the next column's
                    // first 4; then rows 0..7 into floats 0..7, which overwrites those spills. The spill
                    // of the last column lands in the next column (written later) or the buffer's slack.
                    var z = Vector256<float>.Zero;
                    for (; p + 8 <= kc; p += 8)
                    {
                        float* s = src + p;
                        Transpose8x8(Avx.LoadVector256(s + 8 * lda), Avx.LoadVector256(s + 9 * lda),
                            Avx.LoadVector256(s + 10 * lda), Avx.LoadVector256(s + 11 * lda), z, z, z, z, dst + p * R + 8, R);
                        Transpose8x8(Avx.LoadVector256(s), Avx.LoadVector256(s + lda),
                            Avx.LoadVector256(s + 2 * lda), Avx.LoadVector256(s + 3 * lda),
                            Avx.LoadVector256(s + 4 * lda), Avx.LoadVector256(s + 5 * lda),
                            Avx.LoadVector256(s + 6 * lda), Avx.LoadVector256(s + 7 * lda), dst + p * R, R);
                    }
                }
                for (; p < kc; p++)
                    for (int r = 0; r < R; r++)
                        dst[p * R + r] = r < mr ? src[r * lda + p] : 0f;
            }
            else
            {
                // A is stored K×M: the 12 values of one k are contiguous.
                float* src = a + (nint)pc * lda + ic + i0;
                if (mr == R)
                {
                    float* d = dst;
                    for (int p = 0; p < kc; p++, d += R, src += lda)
                    {
                        Vector256.Store(Vector256.Load(src), d);
                        Vector128.Store(Vector128.Load(src + 8), d + 8);
                    }
                }
                else
                {
                    for (int p = 0; p < kc; p++, src += lda)
                        for (int r = 0; r < R; r++)
                            dst[p * R + r] = r < mr ? src[r] : 0f;
                }
            }
        }
    }

    // Writes the transpose of the 8×8 block whose rows are r0..r7: column q goes to d + q·ld, in
    // increasing q (PackA relies on the order: its stores overlap).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, float* d, nint ld)
    {
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(d + 0 * ld, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(d + 1 * ld, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(d + 2 * ld, Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(d + 3 * ld, Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(d + 4 * ld, Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(d + 5 * ld, Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(d + 6 * ld, Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(d + 7 * ld, Avx.Permute2x128(u3, u7, 0x31));
    }

    // Per-thread packing buffers. They only grow, are pinned (so a raw pointer stays valid) and are
    // handed out 64-byte aligned. Small calls from inside parallel loops therefore allocate nothing
    // after the first call on each thread.
    [ThreadStatic] private static float[]? _bufA, _bufB;

    /// <summary>
    /// Pointers to this thread's packing buffers, at least aLen and bLen floats each plus
    /// <see cref="Slack"/> writable floats past the end.
    /// </summary>
    public static void Buffers(int aLen, int bLen, out float* pa, out float* pb)
    {
        pa = Aligned(ref _bufA, aLen);
        pb = Aligned(ref _bufB, bLen);
    }

    /// <summary>Floats past the requested length that packing may overwrite.</summary>
    public const int Slack = 8;

    private static float* Aligned(ref float[]? buf, int len)
    {
        int need = len + Slack + 16; // + 16: room to move the start to a 64-byte boundary
        if (buf == null || buf.Length < need)
            buf = GC.AllocateUninitializedArray<float>(need, pinned: true);
        nint addr = (nint)Unsafe.AsPointer(ref buf[0]);
        return (float*)((addr + 63) & ~(nint)63);
    }
}
