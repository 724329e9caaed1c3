// The AVX-512 forward of the fused attention (formulas and layout in Attention.cs): one (image, head) at a
// time without the general GEMM.
//
// Why not the GEMM: per head the two products are 197×197×64 and 197×64×197 (DeiT-Tiny), and the
// blocked GEMM spends a large share of such small calls on packing (the whole N×N probability matrix is
// repacked as the A operand of P·v), on zero-padded edge tiles merged through a scratch tile, and on
// splitting P·v's K = 197 into two K blocks (C written twice). Measured with bench `gemm`: 66 % of the
// GEMM peak on these shapes, against 96–105 % on the linear layers.
//
// Here, per (image, head):
//   1. kᵀ is packed once into 32-column panels (the GEMM's packer, O(N·D)); q is read in place (a last
//      partial block of rows through ManagedGemm.KernelRows512, which computes only those rows);
//   2. for each block of 12 query rows: S (12 × N, padded to 32 columns) = scale·q·kᵀ with the GEMM's own
//      12×32 micro-kernel (K = D in one block), into an L1-resident scratch;
//   3. softmax of those 12 rows (the attention softmax kernel) into P — the caller's probs rows, or a
//      12 × N scratch when the probabilities are not kept (inference);
//   4. O rows = P·v with a micro-kernel that broadcasts P straight from its rows and loads v's rows, copied next to
//      each other once per head: 6 rows × 64 columns (24 accumulators) or 6 × 32.
// Head widths other than multiples of 32 go through a zero-padded copy of v's last columns.
//
// Backward (BackwardHead512), per (image, head), for head widths that are multiples of 32 (others take the
// GEMM path): dP = G·vᵀ by 12-row blocks (G's rows read in place, vᵀ packed once), dS = scale·P ⊙ (dP −
// rowsum(P ⊙ dP)) into an N-row scratch, then dq += dS·k (dS rows in place), dv += Pᵀ·G (P read from the saved
// probabilities) and dk += dSᵀ·q (the 12 values of one column block of P or dS are contiguous in their rows, so
// neither is transposed) — the GEMM's micro-kernels with their left operands read in place and k, G and q packed
// once into 32-column panels. A last partial block of rows runs ManagedGemm.KernelRows512, which computes and stores
// only the rows there are.
//
// Why v, k, q and G are copied (AttentionKernel.PackOperands; the same bits either way): read in place from qkv their
// rows are 3C floats apart (C for G), and products that stream all N of them per block of 12 or 6 rows fall on few
// L1 sets (DeiT-Tiny: 2304-byte rows). Packed, DeiT-Tiny's forward ran 17–20 % faster and its backward 13–14 %;
// vit_fmnist's backward 5–8 % (`bench attn --only packing`).
//
// Numbers: S and P are the GEMM path's bit for bit (same kernel, same K order, same alpha rounding, same
// softmax); O sums all N products in one chain where the GEMM splits K into blocks, so O differs from the
// GEMM path by float rounding. Every (image, head) is one thread's, so thread count changes no bit.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

internal static unsafe partial class AttentionKernel
{
    private const int Rows = GemmPacking.MR512, Cols = GemmPacking.NR512, PvRows = 6;

    /// <summary>True when <see cref="Forward(ReadOnlySpan{float}, int, int, int, int, float, Span{float}, Span{float}, Span{float}, int)"/> runs the AVX-512 path (the GEMM kernel in force is AVX-512).</summary>
    internal static bool UsesAvx512 => Avx512Path && ManagedGemm.Current == GemmKernel.Avx512 && RowSimd.Wide;

    /// <summary>False: the GEMM path runs on AVX-512 CPUs too (kept for same-process A/B benchmarks).</summary>
    internal static bool Avx512Path = true;

    // One head: q, k, v are N×D with row stride ld (= 3C); probs is M×N (null: not kept); o is M×D with row stride ldo
    // (null: probabilities only, into probs; v unused); logits N×N receives the unscaled q·kᵀ (null: not wanted; M = N
    // then). M = m: the query rows, the first m of q (m < 0: all N).
    private static void ForwardHead512(float* q, float* k, float* v, nint ld, int n, int d, float scale,
        float* probs, float* o, nint ldo, float* logits = null, int m = -1, float* bias = null, float* mask = null)
    {
        if (m < 0) m = n; // query rows (probs m × n, o m rows)
        int np = (n + Cols - 1) / Cols * Cols;
        int tailWidth = o != null ? d % Cols : 0; // columns of v past the last full 32-column chunk
        bool dense = o != null && PackOperands;
        var s = Scratch512(d * np, Rows * np, probs == null ? Rows * n : 0, tailWidth > 0 ? n * Cols : 0, dense ? n * d : 0);
        GemmPacking.PackB(true, k, ld, 0, 0, d, n, s.K, Cols);
        if (tailWidth > 0) PadVTail(v, ld, n, d, s.VTail);
        // v's rows copied next to each other for P·v, which reads every row once per 6 rows of P (the file header says why).
        nint ldv = ld;
        if (dense)
        {
            CopyRows(v, ld, n, d, s.V);
            v = s.V;
            ldv = d;
        }
        for (int i0 = 0; i0 < m; i0 += Rows)
        {
            int mr = Math.Min(Rows, m - i0);
            // With logits wanted the products are stored unscaled, copied out, then scaled: fl(fl(Σ)·scale) is
            // what alpha = scale stores, so S and P do not change.
            float alpha = logits != null ? 1f : scale;
            for (int j0 = 0; j0 < n; j0 += Cols)
            {
                float* kPanel = s.K + (nint)(j0 / Cols) * d * Cols;
                if (mr == Rows) ManagedGemm.Kernel512Direct(d, q + (nint)i0 * ld, ld, kPanel, Cols, s.S + j0, np, alpha, 0f);
                else ManagedGemm.KernelRows512(mr, d, q + (nint)i0 * ld, ld, 1, kPanel, Cols, s.S + j0, np, alpha, 0f);
            }
            if (logits != null)
                for (int r = 0; r < mr; r++)
                {
                    var row = new Span<float>(s.S + r * np, n);
                    row.CopyTo(new Span<float>(logits + (nint)(i0 + r) * n, n));
                    System.Numerics.Tensors.TensorPrimitives.Multiply(row, scale, row);
                }
            if (bias != null || mask != null) AddLogitRows(s.S, np, mr, n, bias == null ? null : bias + (nint)i0 * n, mask == null ? null : mask + (nint)i0 * n);
            float* p = probs != null ? probs + (nint)i0 * n : s.P;
            SoftmaxKernel.SoftmaxRows512(s.S, np, p, n, mr, n);
            if (o != null) PvRows512(p, mr, n, v, ldv, d, o + i0 * ldo, ldo, s.VTail, s.OTail);
        }
    }

    // One head's O = P·v alone (P given, N×N; v N×D with row stride ld; o with row stride ldo): the forward's
    // P·v part, for probabilities that were changed between the two products (a quantizer on them).
    private static void PvHead512(float* probs, float* v, nint ld, int n, int d, float* o, nint ldo)
    {
        int tailWidth = d % Cols;
        var s = Scratch512(0, 0, 0, tailWidth > 0 ? n * Cols : 0);
        if (tailWidth > 0) PadVTail(v, ld, n, d, s.VTail);
        PvRows512(probs, n, n, v, ld, d, o, ldo, s.VTail, s.OTail);
    }

    // dst[j·d + c] = src[j·ld + c] for j < rows, c < d: rows of d floats packed next to each other (16 at a time; a
    // call per row of Buffer.MemoryCopy cost more than the packing saved on 50-token heads).
    private static void CopyRows(float* src, nint ld, int rows, int d, float* dst)
    {
        int full = d & ~15;
        for (int j = 0; j < rows; j++, src += ld, dst += d)
        {
            int c = 0;
            for (; c < full; c += 16) Avx512F.Store(dst + c, Avx512F.LoadVector512(src + c));
            for (; c < d; c++) dst[c] = src[c];
        }
    }

    // v's last d mod 32 columns, zero-padded to 32, so the P·v kernel reads whole vectors.
    private static void PadVTail(float* v, nint ld, int n, int d, float* vTail)
    {
        int tailWidth = d % Cols, d0 = d - tailWidth;
        for (int j = 0; j < n; j++)
        {
            float* src = v + j * ld + d0, dst = vTail + j * Cols;
            for (int c = 0; c < Cols; c++) dst[c] = c < tailWidth ? src[c] : 0f;
        }
    }

    // O rows 0 .. rows-1 = P rows (row stride n)·v, 6 rows at a time: 64 and 32 columns straight from v, the last
    // d mod 32 through the padded copy (vTail) and a 6 × 32 scratch (oTail).
    private static void PvRows512(float* p, int rows, int n, float* v, nint ld, int d, float* o, nint ldo, float* vTail, float* oTail)
    {
        int tailWidth = d % Cols;
        for (int r0 = 0; r0 < rows; r0 += PvRows)
        {
            int rr = Math.Min(PvRows, rows - r0);
            float* pr = p + (nint)r0 * n, orow = o + r0 * ldo;
            int c0 = 0;
            for (; c0 + 2 * Cols <= d; c0 += 2 * Cols) Pv64(n, pr, n, rr, v + c0, ld, orow + c0, ldo);
            if (c0 + Cols <= d) { Pv32(n, pr, n, rr, v + c0, ld, orow + c0, ldo); c0 += Cols; }
            if (tailWidth > 0)
            {
                Pv32(n, pr, n, rr, vTail, Cols, oTail, Cols);
                for (int r = 0; r < rr; r++)
                    new ReadOnlySpan<float>(oTail + r * Cols, tailWidth).CopyTo(new Span<float>(orow + r * ldo + c0, tailWidth));
            }
        }
    }

    // Which part of one head's backward BackwardHead512 runs: all of it (the single fused node), or its two halves
    // when the logits L = q·kᵀ are an output of their own (FusedAttentionWithLogits): SoftmaxV from dOut to dv and
    // dL (accumulated into a separate N×N gradient), Qk from the whole dL to dq and dk.
    private enum BackwardPart { All, SoftmaxV, Qk }

    // One head's backward (file header): q, k, v with row stride ld (3C), probs M×N, g = dOut's M rows with stride
    // ldg (C); dq (its first M rows), dk, dv (stride ld) are accumulated into (beta 1) or overwritten (beta 0: each of
    // their elements is one product's store, K whole). d is a multiple of 32. dL (N×N, M = N): accumulated into (part
    // SoftmaxV) or read (part Qk); unused for All. M = m (m < 0: all N). Every product reads only rows and columns below
    // M and N (a last partial block through KernelRows512), so P, dL and dS are read in place, unpadded.
    private static void BackwardHead512(float* q, float* k, float* v, nint ld, float* probs, float* g, nint ldg,
        float* dq, float* dk, float* dv, int n, int d, float scale, BackwardPart part = BackwardPart.All, float* dL = null, int m = -1,
        float beta = 1f)
    {
        if (m < 0) m = n; // query rows: probs, g and dS m × n, dq m rows; the sums into dk and dv run over them
        int np = (n + Cols - 1) / Cols * Cols;
        bool packed = PackOperands;
        var s = BackwardScratch512(d * np, Rows * np, part == BackwardPart.Qk ? 0 : m * np, packed ? n * d + 2 * m * d : 0);
        // The right-hand operands of dq = dS·k, dv = Pᵀ·G and dk = dSᵀ·q, packed once into 32-column panels (row p of
        // panel c at base + (c·rows + p)·32; the file header says why).
        float* kB = packed ? s.Packs : null, qB = kB + (nint)n * d, gB = qB + (nint)m * d;
        if (packed)
        {
            if (part != BackwardPart.SoftmaxV)
            {
                GemmPacking.PackB(false, k, ld, 0, 0, n, d, kB, Cols);
                GemmPacking.PackB(false, q, ld, 0, 0, m, d, qB, Cols);
            }
            if (part != BackwardPart.Qk) GemmPacking.PackB(false, g, ldg, 0, 0, m, d, gB, Cols);
        }
        // Column panel c0 of k, q or G: packed (32 floats a row) or in place.
        float* KCols(int c0) => packed ? kB + (nint)c0 * n : k + c0;
        float* QCols(int c0) => packed ? qB + (nint)c0 * m : q + c0;
        float* GCols(int c0) => packed ? gB + (nint)c0 * m : g + c0;
        nint ldk = packed ? Cols : ld, ldq = packed ? Cols : ld, ldgB = packed ? Cols : ldg;
        // dS: the given dL (part Qk), else computed into the scratch.
        bool given = part == BackwardPart.Qk;
        float* dS = given ? dL : s.DS;
        nint lds = given ? n : np;
        if (!given) SoftmaxBackward512(v, ld, probs, g, ldg, n, d, scale, np, s, m);
        if (part == BackwardPart.SoftmaxV)
            for (int r = 0; r < n; r++)
            {
                var row = new Span<float>(dL + (nint)r * n, n);
                System.Numerics.Tensors.TensorPrimitives.Add(row, new ReadOnlySpan<float>(dS + (nint)r * lds, n), row);
            }
        // dq += dS·k, by 12-row blocks of dS, 32 columns at a time.
        for (int i0 = 0; i0 < m && part != BackwardPart.SoftmaxV; i0 += Rows)
        {
            int mr = Math.Min(Rows, m - i0);
            for (int c0 = 0; c0 < d; c0 += Cols)
            {
                if (mr == Rows) ManagedGemm.Kernel512Direct(n, dS + (nint)i0 * lds, lds, KCols(c0), ldk, dq + i0 * ld + c0, ld, 1f, beta);
                else ManagedGemm.KernelRows512(mr, n, dS + (nint)i0 * lds, lds, 1, KCols(c0), ldk, dq + i0 * ld + c0, ld, 1f, beta);
            }
        }
        // dv += Pᵀ·G and dk += dSᵀ·q, by 12-row blocks of the outputs (12 columns of P / dS per step).
        for (int j0 = 0; j0 < n; j0 += Rows)
        {
            int mr = Math.Min(Rows, n - j0);
            for (int c0 = 0; c0 < d; c0 += Cols)
            {
                if (part != BackwardPart.Qk) ProductInto(m, probs + j0, n, GCols(c0), ldgB, dv + j0 * ld + c0, ld, mr, beta);
                if (part != BackwardPart.SoftmaxV) ProductInto(m, dS + j0, lds, QCols(c0), ldq, dk + j0 * ld + c0, ld, mr, beta);
            }
        }
    }

    // dst[0..mr, 0..32) = Σ_j a[j·lda + 0..mr)ᵀ·b[j·ldb + 0..32) + beta·dst over j < n: mr ≤ 12 columns of a (P or
    // dS) against 32 columns of b (beta 0: dst not read).
    private static void ProductInto(int n, float* a, nint lda, float* b, nint ldb, float* dst, nint ld, int mr, float beta)
    {
        if (mr == Rows) ManagedGemm.Kernel512(n, a, b, dst, ld, 1f, beta, null, lda, ldb);
        else ManagedGemm.KernelRows512(mr, n, a, 1, lda, b, ldb, dst, ld, 1f, beta);
    }

    // dS = scale·P ⊙ (dP − rowsum(P ⊙ dP)) with dP = G·vᵀ, into s.DS (m rows of np).
    private static void SoftmaxBackward512(float* v, nint ld, float* probs, float* g, nint ldg, int n, int d, float scale,
        int np, Backward512Scratch s, int m)
    {
        GemmPacking.PackB(true, v, ld, 0, 0, d, n, s.VT, Cols);
        for (int i0 = 0; i0 < m; i0 += Rows)
        {
            int mr = Math.Min(Rows, m - i0);
            // dP rows i0 .. i0+mr-1 = G·vᵀ, G's rows read in place.
            for (int j0 = 0; j0 < n; j0 += Cols)
            {
                float* vPanel = s.VT + (nint)(j0 / Cols) * d * Cols;
                if (mr == Rows) ManagedGemm.Kernel512Direct(d, g + i0 * ldg, ldg, vPanel, Cols, s.DP + j0, np, 1f, 0f);
                else ManagedGemm.KernelRows512(mr, d, g + i0 * ldg, ldg, 1, vPanel, Cols, s.DP + j0, np, 1f, 0f);
            }
            for (int r = 0; r < mr; r++)
                SoftmaxBackwardRow512(probs + (nint)(i0 + r) * n, s.DP + (nint)r * np, s.DS + (nint)(i0 + r) * np, n, scale);
        }
    }

    // One row of the softmax backward, scaled: ds[j] = scale·p[j]·(dp[j] − Σ_k p[k]·dp[k]) for j < n (ds has room
    // for n rounded up to 16: the tail is stored as a whole vector).
    private static void SoftmaxBackwardRow512(float* p, float* dp, float* ds, int n, float scale)
    {
        int full = n & ~15, tail = n - full;
        var mask = RowSimd.TailMask512(tail);
        var zero = Vector512<float>.Zero;
        var acc = zero;
        for (int j = 0; j < full; j += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(p + j), Vector512.Load(dp + j), acc);
        if (tail > 0) acc = Vector512.FusedMultiplyAdd(Avx512F.MaskLoad(p + full, mask, zero), Avx512F.MaskLoad(dp + full, mask, zero), acc);
        var dot = Vector512.Create(Vector512.Sum(acc));
        var vs = Vector512.Create(scale);
        for (int j = 0; j < full; j += 16)
            (vs * Vector512.Load(p + j) * (Vector512.Load(dp + j) - dot)).Store(ds + j);
        if (tail > 0)
            (vs * Avx512F.MaskLoad(p + full, mask, zero) * (Avx512F.MaskLoad(dp + full, mask, zero) - dot)).Store(ds + full);
    }

    // o[r, 0..64) = Σ_j p[r·ldp + j]·v[j·ldv + 0..64) for r < rows (≤ 6). Rows past `rows` repeat the last
    // valid row (computed, not stored), so no row pointer leaves the matrix.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Pv64(int n, float* p, nint ldp, int rows, float* v, nint ldv, float* o, nint ldo)
    {
        float* p0 = p, p1 = p + ldp * Math.Min(1, rows - 1), p2 = p + ldp * Math.Min(2, rows - 1),
            p3 = p + ldp * Math.Min(3, rows - 1), p4 = p + ldp * Math.Min(4, rows - 1), p5 = p + ldp * Math.Min(5, rows - 1);
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default,
            c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default,
            c40 = default, c41 = default, c42 = default, c43 = default, c50 = default, c51 = default, c52 = default, c53 = default;
        for (int j = 0; j < n; j++, v += ldv)
        {
            var b0 = Avx512F.LoadVector512(v);
            var b1 = Avx512F.LoadVector512(v + 16);
            var b2 = Avx512F.LoadVector512(v + 32);
            var b3 = Avx512F.LoadVector512(v + 48);
            Vector512<float> a;
            a = Vector512.Create(p0[j]); c00 = Avx512F.FusedMultiplyAdd(a, b0, c00); c01 = Avx512F.FusedMultiplyAdd(a, b1, c01); c02 = Avx512F.FusedMultiplyAdd(a, b2, c02); c03 = Avx512F.FusedMultiplyAdd(a, b3, c03);
            a = Vector512.Create(p1[j]); c10 = Avx512F.FusedMultiplyAdd(a, b0, c10); c11 = Avx512F.FusedMultiplyAdd(a, b1, c11); c12 = Avx512F.FusedMultiplyAdd(a, b2, c12); c13 = Avx512F.FusedMultiplyAdd(a, b3, c13);
            a = Vector512.Create(p2[j]); c20 = Avx512F.FusedMultiplyAdd(a, b0, c20); c21 = Avx512F.FusedMultiplyAdd(a, b1, c21); c22 = Avx512F.FusedMultiplyAdd(a, b2, c22); c23 = Avx512F.FusedMultiplyAdd(a, b3, c23);
            a = Vector512.Create(p3[j]); c30 = Avx512F.FusedMultiplyAdd(a, b0, c30); c31 = Avx512F.FusedMultiplyAdd(a, b1, c31); c32 = Avx512F.FusedMultiplyAdd(a, b2, c32); c33 = Avx512F.FusedMultiplyAdd(a, b3, c33);
            a = Vector512.Create(p4[j]); c40 = Avx512F.FusedMultiplyAdd(a, b0, c40); c41 = Avx512F.FusedMultiplyAdd(a, b1, c41); c42 = Avx512F.FusedMultiplyAdd(a, b2, c42); c43 = Avx512F.FusedMultiplyAdd(a, b3, c43);
            a = Vector512.Create(p5[j]); c50 = Avx512F.FusedMultiplyAdd(a, b0, c50); c51 = Avx512F.FusedMultiplyAdd(a, b1, c51); c52 = Avx512F.FusedMultiplyAdd(a, b2, c52); c53 = Avx512F.FusedMultiplyAdd(a, b3, c53);
        }
        Store4(o, c00, c01, c02, c03);
        if (rows > 1) Store4(o + ldo, c10, c11, c12, c13);
        if (rows > 2) Store4(o + 2 * ldo, c20, c21, c22, c23);
        if (rows > 3) Store4(o + 3 * ldo, c30, c31, c32, c33);
        if (rows > 4) Store4(o + 4 * ldo, c40, c41, c42, c43);
        if (rows > 5) Store4(o + 5 * ldo, c50, c51, c52, c53);
    }

    // As Pv64 for 32 columns (12 accumulators).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Pv32(int n, float* p, nint ldp, int rows, float* v, nint ldv, float* o, nint ldo)
    {
        float* p0 = p, p1 = p + ldp * Math.Min(1, rows - 1), p2 = p + ldp * Math.Min(2, rows - 1),
            p3 = p + ldp * Math.Min(3, rows - 1), p4 = p + ldp * Math.Min(4, rows - 1), p5 = p + ldp * Math.Min(5, rows - 1);
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int j = 0; j < n; j++, v += ldv)
        {
            var b0 = Avx512F.LoadVector512(v);
            var b1 = Avx512F.LoadVector512(v + 16);
            Vector512<float> a;
            a = Vector512.Create(p0[j]); c00 = Avx512F.FusedMultiplyAdd(a, b0, c00); c01 = Avx512F.FusedMultiplyAdd(a, b1, c01);
            a = Vector512.Create(p1[j]); c10 = Avx512F.FusedMultiplyAdd(a, b0, c10); c11 = Avx512F.FusedMultiplyAdd(a, b1, c11);
            a = Vector512.Create(p2[j]); c20 = Avx512F.FusedMultiplyAdd(a, b0, c20); c21 = Avx512F.FusedMultiplyAdd(a, b1, c21);
            a = Vector512.Create(p3[j]); c30 = Avx512F.FusedMultiplyAdd(a, b0, c30); c31 = Avx512F.FusedMultiplyAdd(a, b1, c31);
            a = Vector512.Create(p4[j]); c40 = Avx512F.FusedMultiplyAdd(a, b0, c40); c41 = Avx512F.FusedMultiplyAdd(a, b1, c41);
            a = Vector512.Create(p5[j]); c50 = Avx512F.FusedMultiplyAdd(a, b0, c50); c51 = Avx512F.FusedMultiplyAdd(a, b1, c51);
        }
        Store2(o, c00, c01);
        if (rows > 1) Store2(o + ldo, c10, c11);
        if (rows > 2) Store2(o + 2 * ldo, c20, c21);
        if (rows > 3) Store2(o + 3 * ldo, c30, c31);
        if (rows > 4) Store2(o + 4 * ldo, c40, c41);
        if (rows > 5) Store2(o + 5 * ldo, c50, c51);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store4(float* o, Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        Avx512F.Store(o, a); Avx512F.Store(o + 16, b); Avx512F.Store(o + 32, c); Avx512F.Store(o + 48, d);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store2(float* o, Vector512<float> a, Vector512<float> b)
    {
        Avx512F.Store(o, a); Avx512F.Store(o + 16, b);
    }

    // This thread's scratch for one head, carved from one pinned buffer that only grows (so a forward
    // allocates nothing once warm). Every part starts on a 64-byte boundary (the micro-kernel's aligned loads).
    private readonly struct Head512Scratch(float* k, float* s, float* p, float* vTail, float* oTail, float* v)
    {
        public readonly float* K = k, S = s, P = p, VTail = vTail, OTail = oTail, V = v;
    }

    [ThreadStatic] private static float[]? _scratch512;

    private readonly struct Backward512Scratch(float* vt, float* dp, float* ds, float* packs)
    {
        public readonly float* VT = vt, DP = dp, DS = ds, Packs = packs;
    }

    /// <summary>
    /// False: P·v reads v, and the backward's products read k, q and G, in place in their rows (kept for same-process A/B
    /// benchmarks; the same bits).
    /// </summary>
    internal static bool PackOperands = true;

    // The backward's parts, from the same per-thread buffer as the forward's (a head runs one or the other).
    private static Backward512Scratch BackwardScratch512(int vt, int dp, int ds, int packs)
    {
        static int Up(int x) => (x + GemmPacking.Slack + 15) & ~15;
        int total = Up(vt) + Up(dp) + Up(ds) + Up(packs) + 16;
        if (_scratch512 == null || _scratch512.Length < total)
            _scratch512 = GC.AllocateUninitializedArray<float>(total, pinned: true);
        float* at = (float*)(((nint)Unsafe.AsPointer(ref _scratch512[0]) + 63) & ~(nint)63);
        float* Next(int len) { float* r = at; at += Up(len); return r; }
        return new Backward512Scratch(Next(vt), Next(dp), Next(ds), Next(packs));
    }

    private static Head512Scratch Scratch512(int k, int s, int p, int vTail, int v = 0)
    {
        static int Up(int x) => (x + GemmPacking.Slack + 15) & ~15; // room for the packers' slack, then align
        int oTail = vTail > 0 ? PvRows * Cols : 0;
        int total = Up(k) + Up(s) + Up(p) + Up(vTail) + Up(oTail) + Up(v) + 16;
        if (_scratch512 == null || _scratch512.Length < total)
            _scratch512 = GC.AllocateUninitializedArray<float>(total, pinned: true);
        float* at = (float*)(((nint)Unsafe.AsPointer(ref _scratch512[0]) + 63) & ~(nint)63);
        float* Next(int len) { float* r = at; at += Up(len); return r; }
        return new Head512Scratch(Next(k), Next(s), Next(p), Next(vTail), Next(oTail), Next(v));
    }
}
