// The AVX2 + FMA forward and backward of the fused attention (formulas and layout in Attention.cs): one (image,
// head) at a time without the general GEMM, the AVX-512 path's plan (Attention512.cs) with the AVX2 GEMM's
// 6×16 micro-kernel (ManagedGemm.KernelFma / KernelFmaDirect) in place of the 12×32 one.
//
// Why: through the general GEMM, each head's small products pay for packing (P repacked as P·v's A operand,
// Pᵀ and dSᵀ transposed by the packer), for edge tiles merged through a scratch tile, and for a clear and a
// scale pass over N×N; profiled on DeiT-Tiny (a Zen 3 EPYC, 2 threads) the two-GEMM attention ran at ~106
// GFLOP/s forward and ~66 backward against 130–150 for the linear layers.
//
// Forward, per (image, head): q packed once into 6-row panels and kᵀ into 16-column panels; per block of 6
// query rows S (6 × N, padded to 16 columns) = scale·q·kᵀ into an L1 scratch, the attention softmax row by row
// into P (the caller's probs rows, or a scratch), then O rows = P·v by a 6×16 kernel that broadcasts P from its
// rows and reads v packed once into 16-column panels (the last zero-padded for head widths that are not
// multiples of 16).
// Backward (head widths that are multiples of 16; others take the GEMM path): dP = G·vᵀ by 6-row blocks (G read
// in place, vᵀ packed once), dS = scale·P ⊙ (dP − rowsum(P ⊙ dP)) into an N × N scratch padded with zeros (with a
// padded copy of P beside it), then dq += dS·k, dv += Pᵀ·G and dk += dSᵀ·q with the micro-kernel reading dS and
// P in place (6 values of a column block of P or dS are contiguous in their row, so neither is transposed) and
// k, G, q packed once into 16-column panels. Rows past N in a last partial block go through a 6 × 16 scratch tile.
//
// Numbers: S and P are the GEMM path's bit for bit (same kernel, same K order with K = D in one block, same alpha
// rounding, same softmax row). O sums all N products in one chain, as the GEMM does while N fits its K block
// (256), so O matches it too up to there. Every (image, head) is one thread's: thread count changes no bit.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

internal static unsafe partial class AttentionKernel
{
    private const int Rows256 = GemmPacking.MR, Cols256 = GemmPacking.NR;

    /// <summary>True when <see cref="Forward(ReadOnlySpan{float}, int, int, int, int, float, Span{float}, Span{float}, Span{float}, int)"/> runs the AVX2 path (the GEMM kernel in force is the AVX2 one).</summary>
    internal static bool UsesAvx2 => Avx2Path && ManagedGemm.Current == GemmKernel.Avx2 && Fma.IsSupported && Avx2.IsSupported;

    /// <summary>False: the GEMM path runs on AVX2 CPUs too (kept for same-process A/B benchmarks).</summary>
    internal static bool Avx2Path = true;

    // One head (as ForwardHead512): q, k, v N×D with row stride ld; probs M×N or null; o M×D with row stride ldo;
    // logits N×N receives the unscaled q·kᵀ (null: not wanted); M = m query rows (m < 0: all N).
    private static void ForwardHead256(float* q, float* k, float* v, nint ld, int n, int d, float scale,
        float* probs, float* o, nint ldo, float* logits = null, int m = -1, float* bias = null, float* mask = null)
    {
        const int R = Rows256, W = Cols256;
        if (m < 0) m = n; // query rows (as ForwardHead512)
        int np = (n + W - 1) / W * W, mp = (m + R - 1) / R * R;
        int tailWidth = d % W, d0 = d - tailWidth, dp = d0 + (tailWidth > 0 ? W : 0);
        Scratch256(mp * d, d * np, R * np, probs == null ? R * n : 0, n * dp, tailWidth > 0 ? R * W : 0,
            out float* qPacked, out float* kPacked, out float* sRows, out float* pScratch, out float* vPacked, out float* oTail);
        GemmPacking.PackA(false, q, ld, 0, 0, m, d, qPacked, R);
        GemmPacking.PackB(true, k, ld, 0, 0, d, n, kPacked, W);
        // v packed too, in 16-column panels (the last zero-padded): read in place, its rows 3C apart fell on few L1
        // sets (DeiT-Tiny: 2304 bytes apart, 16 sets for 197 rows) and P·v ran slower than through the GEMM.
        GemmPacking.PackB(false, v, ld, 0, 0, n, d, vPacked, W);
        float alpha = logits != null ? 1f : scale; // as ForwardHead512: fl(fl(Σ)·scale) either way
        for (int i0 = 0; i0 < m; i0 += R)
        {
            int mr = Math.Min(R, m - i0);
            float* qPanel = qPacked + (nint)(i0 / R) * d * R;
            for (int j0 = 0; j0 < n; j0 += W)
                ManagedGemm.KernelFma(d, qPanel, kPacked + (nint)(j0 / W) * d * W, sRows + j0, np, alpha, 0f);
            if (logits != null)
                for (int r = 0; r < mr; r++)
                {
                    var row = new Span<float>(sRows + r * np, n);
                    row.CopyTo(new Span<float>(logits + (nint)(i0 + r) * n, n));
                    System.Numerics.Tensors.TensorPrimitives.Multiply(row, scale, row);
                }
            if (bias != null || mask != null) AddLogitRows(sRows, np, mr, n, bias == null ? null : bias + (nint)i0 * n, mask == null ? null : mask + (nint)i0 * n);
            float* p = probs != null ? probs + (nint)i0 * n : pScratch;
            SoftmaxKernel.SoftmaxRows256(sRows, np, p, n, mr, n);
            float* orow = o + i0 * ldo;
            for (int c0 = 0; c0 < d0; c0 += W) Pv16(n, p, n, mr, vPacked + (nint)c0 * n, W, orow + c0, ldo);
            if (tailWidth > 0)
            {
                Pv16(n, p, n, mr, vPacked + (nint)d0 * n, W, oTail, W);
                for (int r = 0; r < mr; r++)
                    new ReadOnlySpan<float>(oTail + r * W, tailWidth).CopyTo(new Span<float>(orow + r * ldo + d0, tailWidth));
            }
        }
    }

    // One head's backward (as BackwardHead512; d a multiple of 16).
    private static void BackwardHead256(float* q, float* k, float* v, nint ld, float* probs, float* g, nint ldg,
        float* dq, float* dk, float* dv, int n, int d, float scale, BackwardPart part = BackwardPart.All, float* dL = null, int m = -1)
    {
        const int R = Rows256, W = Cols256;
        if (m < 0) m = n; // query rows (as BackwardHead512): q and G packed as m rows, the sums into dk and dv over them
        int np = (n + W - 1) / W * W, mp = (m + R - 1) / R * R;
        Scratch256(d * np, R * np, mp * np, mp * np, R * d + R * W, 3 * n * d,
            out float* vt, out float* dpRows, out float* dsAll, out float* pAll, out float* gPanel, out float* packs);
        float* tile = gPanel + R * d; // R·d is a multiple of 16: the tile stays 64-byte aligned
        // The right-hand operands of the three products (k, q, G), packed once into 16-column panels: read in place,
        // their rows 3C (or C) apart fell on few L1 sets (DeiT-Tiny q and k: 2304 bytes apart, 16 sets for 197 rows).
        float* kB = packs, qB = packs + n * d, gB = packs + 2 * n * d;
        if (part != BackwardPart.SoftmaxV)
        {
            GemmPacking.PackB(false, k, ld, 0, 0, n, d, kB, W);
            GemmPacking.PackB(false, q, ld, 0, 0, m, d, qB, W);
        }
        if (part != BackwardPart.Qk) GemmPacking.PackB(false, g, ldg, 0, 0, m, d, gB, W);
        if (part == BackwardPart.Qk)
        {
            new Span<float>(dsAll, mp * np).Clear();
            for (int r = 0; r < n; r++) new ReadOnlySpan<float>(dL + (nint)r * n, n).CopyTo(new Span<float>(dsAll + (nint)r * np, n));
        }
        else
        {
            // dS = scale·P ⊙ (dP − rowsum(P ⊙ dP)), dP = G·vᵀ, by 6-row blocks; P's padded copy beside it.
            GemmPacking.PackB(true, v, ld, 0, 0, d, n, vt, W);
            for (int i0 = 0; i0 < mp; i0 += R)
            {
                int mr = Math.Min(R, m - i0);
                if (mr < R) GemmPacking.PackA(false, g, ldg, i0, 0, mr, d, gPanel, R);
                for (int j0 = 0; j0 < n; j0 += W)
                {
                    float* vPanel = vt + (nint)(j0 / W) * d * W;
                    if (mr == R) ManagedGemm.KernelFmaDirect(d, g + i0 * ldg, ldg, vPanel, W, dpRows + j0, np, 1f, 0f);
                    else ManagedGemm.KernelFma(d, gPanel, vPanel, dpRows + j0, np, 1f, 0f);
                }
                for (int r = 0; r < R; r++)
                {
                    float* ds = dsAll + (nint)(i0 + r) * np, pc = pAll + (nint)(i0 + r) * np;
                    if (r >= mr)
                    {
                        new Span<float>(ds, np).Clear();
                        new Span<float>(pc, np).Clear();
                    }
                    else SoftmaxBackwardRow256(probs + (nint)(i0 + r) * n, dpRows + (nint)r * np, ds, pc, n, np, scale);
                }
            }
        }
        if (part == BackwardPart.SoftmaxV)
            for (int r = 0; r < n; r++)
            {
                var row = new Span<float>(dL + (nint)r * n, n);
                System.Numerics.Tensors.TensorPrimitives.Add(row, new ReadOnlySpan<float>(dsAll + (nint)r * np, n), row);
            }
        // dq += dS·k, by 6-row blocks of dS (its rows past N are zero), 16 columns at a time.
        for (int i0 = 0; i0 < m && part != BackwardPart.SoftmaxV; i0 += R)
        {
            int mr = Math.Min(R, m - i0);
            for (int c0 = 0; c0 < d; c0 += W)
            {
                float* kPanel = kB + (nint)c0 * n;
                if (mr == R) ManagedGemm.KernelFmaDirect(n, dsAll + (nint)i0 * np, np, kPanel, W, dq + i0 * ld + c0, ld, 1f, 1f);
                else
                {
                    ManagedGemm.KernelFmaDirect(n, dsAll + (nint)i0 * np, np, kPanel, W, tile, W, 1f, 0f);
                    AddRows256(tile, mr, dq + i0 * ld + c0, ld);
                }
            }
        }
        // dv += Pᵀ·G and dk += dSᵀ·q, by 6-row blocks of the outputs (6 columns of P / dS per step).
        for (int j0 = 0; j0 < n; j0 += R)
        {
            int mr = Math.Min(R, n - j0);
            for (int c0 = 0; c0 < d; c0 += W)
            {
                if (part != BackwardPart.Qk) ProductInto256(m, pAll + j0, np, gB + (nint)c0 * m, W, dv + j0 * ld + c0, ld, mr, tile);
                if (part != BackwardPart.SoftmaxV) ProductInto256(m, dsAll + j0, np, qB + (nint)c0 * m, W, dk + j0 * ld + c0, ld, mr, tile);
            }
        }
    }

    // dst[0..mr, 0..16) += Σ_j a[j·lda + 0..6)ᵀ·b[j·ldb + 0..16) over j < n (a partial block through the tile). The
    // 6 columns of a may run past the matrix's N into its zero padding (or, on the last row, the scratch's slack):
    // only rows of the output past mr see them, and those are dropped.
    private static void ProductInto256(int n, float* a, nint lda, float* b, nint ldb, float* dst, nint ld, int mr, float* tile)
    {
        if (mr == Rows256)
        {
            ManagedGemm.KernelFma(n, a, b, dst, ld, 1f, 1f, lda, ldb);
            return;
        }
        ManagedGemm.KernelFma(n, a, b, tile, Cols256, 1f, 0f, lda, ldb);
        AddRows256(tile, mr, dst, ld);
    }

    // As SoftmaxBackwardRow512 on 8 lanes.
    private static void SoftmaxBackwardRow256(float* p, float* dp, float* ds, float* pCopy, int n, int np, float scale)
    {
        int full = n & ~7, tail = n - full;
        var acc = Vector256<float>.Zero;
        for (int j = 0; j < full; j += 8) acc = Vector256.FusedMultiplyAdd(Vector256.Load(p + j), Vector256.Load(dp + j), acc);
        if (tail > 0) acc = Vector256.FusedMultiplyAdd(RowSimd.LoadTail(p + full, tail, 0f), RowSimd.LoadTail(dp + full, tail, 0f), acc);
        var dot = Vector256.Create(Vector256.Sum(acc));
        var vs = Vector256.Create(scale);
        for (int j = 0; j < full; j += 8)
        {
            var pj = Vector256.Load(p + j);
            pj.Store(pCopy + j);
            (vs * pj * (Vector256.Load(dp + j) - dot)).Store(ds + j);
        }
        if (tail > 0)
        {
            var pj = RowSimd.LoadTail(p + full, tail, 0f);
            pj.Store(pCopy + full); // lanes past the tail are zero: the padding
            (vs * pj * (RowSimd.LoadTail(dp + full, tail, 0f) - dot)).Store(ds + full);
        }
        for (int j = (n + 7) & ~7; j < np; j += 8)
        {
            Vector256<float>.Zero.Store(ds + j);
            Vector256<float>.Zero.Store(pCopy + j);
        }
    }

    // dst[r, 0..16) += tile[r, 0..16) for r < rows (tile rows 16 apart).
    private static void AddRows256(float* tile, int rows, float* dst, nint ld)
    {
        for (int r = 0; r < rows; r++, tile += Cols256, dst += ld)
        {
            (Vector256.Load(dst) + Vector256.Load(tile)).Store(dst);
            (Vector256.Load(dst + 8) + Vector256.Load(tile + 8)).Store(dst + 8);
        }
    }

    // o[r, 0..16) = Σ_j p[r·ldp + j]·v[j·ldv + 0..16) for r < rows (≤ 6). Rows past `rows` repeat the last valid
    // row (computed, not stored), so no row pointer leaves the matrix.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Pv16(int n, float* p, nint ldp, int rows, float* v, nint ldv, float* o, nint ldo)
    {
        float* p0 = p, p1 = p + ldp * Math.Min(1, rows - 1), p2 = p + ldp * Math.Min(2, rows - 1),
            p3 = p + ldp * Math.Min(3, rows - 1), p4 = p + ldp * Math.Min(4, rows - 1), p5 = p + ldp * Math.Min(5, rows - 1);
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int j = 0; j < n; j++, v += ldv)
        {
            var b0 = Avx.LoadVector256(v);
            var b1 = Avx.LoadVector256(v + 8);
            Vector256<float> a;
            a = Vector256.Create(p0[j]); c00 = Fma.MultiplyAdd(a, b0, c00); c01 = Fma.MultiplyAdd(a, b1, c01);
            a = Vector256.Create(p1[j]); c10 = Fma.MultiplyAdd(a, b0, c10); c11 = Fma.MultiplyAdd(a, b1, c11);
            a = Vector256.Create(p2[j]); c20 = Fma.MultiplyAdd(a, b0, c20); c21 = Fma.MultiplyAdd(a, b1, c21);
            a = Vector256.Create(p3[j]); c30 = Fma.MultiplyAdd(a, b0, c30); c31 = Fma.MultiplyAdd(a, b1, c31);
            a = Vector256.Create(p4[j]); c40 = Fma.MultiplyAdd(a, b0, c40); c41 = Fma.MultiplyAdd(a, b1, c41);
            a = Vector256.Create(p5[j]); c50 = Fma.MultiplyAdd(a, b0, c50); c51 = Fma.MultiplyAdd(a, b1, c51);
        }
        c00.Store(o); c01.Store(o + 8);
        if (rows > 1) { c10.Store(o + ldo); c11.Store(o + ldo + 8); }
        if (rows > 2) { c20.Store(o + 2 * ldo); c21.Store(o + 2 * ldo + 8); }
        if (rows > 3) { c30.Store(o + 3 * ldo); c31.Store(o + 3 * ldo + 8); }
        if (rows > 4) { c40.Store(o + 4 * ldo); c41.Store(o + 4 * ldo + 8); }
        if (rows > 5) { c50.Store(o + 5 * ldo); c51.Store(o + 5 * ldo + 8); }
    }

    [ThreadStatic] private static float[]? _scratch256;

    // This thread's scratch for one head: six parts carved from one pinned buffer that only grows (a forward or
    // backward allocates nothing once warm), each on a 64-byte boundary with the packers' slack after it.
    private static void Scratch256(int a, int b, int c, int d, int e, int f,
        out float* pa, out float* pb, out float* pc, out float* pd, out float* pe, out float* pf)
    {
        static int Up(int x) => (x + GemmPacking.Slack + 15) & ~15;
        int total = Up(a) + Up(b) + Up(c) + Up(d) + Up(e) + Up(f) + 16;
        if (_scratch256 == null || _scratch256.Length < total)
            _scratch256 = GC.AllocateUninitializedArray<float>(total, pinned: true);
        float* at = (float*)(((nint)Unsafe.AsPointer(ref _scratch256[0]) + 63) & ~(nint)63);
        pa = at; at += Up(a);
        pb = at; at += Up(b);
        pc = at; at += Up(c);
        pd = at; at += Up(d);
        pe = at; at += Up(e);
        pf = at;
    }
}
