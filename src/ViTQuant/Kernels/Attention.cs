// Fused multi-head self-attention on the packed qkv projection, forward and backward.
//
//   B images, N tokens, H heads, D head dim, C = H·D. qkv is [B, N, 3C] in timm's (3, H, D) inner
//   order, so head h of image b reads q, k, v as N×D matrices with row stride 3C starting at
//   qkv[b, 0, s·C + h·D] (s = 0, 1, 2). For each (b, h):
//     P = softmax(scale · q·kᵀ)          [N, N]  (kept in probs[b, h] for the backward)
//     O = P·v                            written straight into out[b, :, h·D ..] (row stride C)
//   Backward, with G = dO (rows of dOut at h·D, stride C):
//     dP = G·vᵀ,  dv += Pᵀ·G,  dS = scale · P ⊙ (dP − rowsum(P ⊙ dP)),  dq += dS·k,  dk += dSᵀ·q
//   accumulated into dQkv at the same strided places.
//   For hooks that tap the logits L = q·kᵀ, Forward also writes L (unscaled), and the backward runs as two
//   nodes: BackwardSoftmaxV (dv, and dL += dS) and LogitsBackward (dq, dk from the whole dL).
//   Swin's window attention adds a bias[h] (the relative position bias) and, on shifted windows, a mask[w] (w the
//   window's place in its image: item b is window b mod nW) to the scaled logits before the softmax:
//     P = softmax(scale · q·kᵀ + bias[h] + mask[w])   (added in that order: the op graph's bits for P)
//   and its backward runs through the same two halves (Ops.WindowAttention).
//
// Why fused: the unfused graph (split qkv into heads, q·kᵀ, scale, softmax, ·v, merge heads) makes
// five passes over [B, H, N, N] / [B, H, N, D] buffers and as many autograd nodes; at ViT sizes (50 or
// 197 tokens) those copies cost as much as the products. Here each (image, head) does its two or five
// small products through the managed GEMM on the strided views (the packing step reads them in place,
// so no split or merge copy exists), with the scale folded into the first product's alpha and the
// softmax in between, while the N×N tile is still in L1/L2.
//
// Same numbers as the unfused graph: the products are the same GEMM calls (same kernel, shapes,
// operand order and transposes; inside a parallel body GEMM is always the managed kernel), the scale is
// the same single rounding (alpha·sum), and the softmax kernels are shared, so the fused path agrees
// with the unfused one to float rounding (bit for bit on the kernels this file calls).
//
// Query rows: Forward and Backward can compute the first M query tokens only (queries = M ≤ N: output and dOut
// [B, M, C], probs [B, H, M, N]; every key and value still counts). A model whose head reads only the class token
// needs no more from its last block (VisionTransformer's header). Each kept row is computed as in the full product
// (the same bits forward); the backward's sums over query rows drop the rows whose gradient would be zero.
//
// Threads: the (b, h) items are handed out one at a time by Parallelism.For (dynamic scheduling, so a
// core that other processes slow down takes fewer items); every item is computed by one thread with
// no cross-item sums, so results do not depend on the thread count or on which thread ran what.
// Reference* twins are scalar loops in double.
using System.Runtime.Intrinsics;

namespace ViTQuant.Kernels;

/// <summary>Fused softmax(scale·q·kᵀ)·v over all images and heads of a packed qkv buffer.</summary>
internal static unsafe partial class AttentionKernel
{
    // The item (b·H + h) of a backward region's i-th pick: images vary fastest, so the items that run at the same time
    // are different images' heads, whose rows lie apart. Neighbouring heads of one image add into neighbouring 32- or
    // 64-float segments of the same dq, dk and dv rows, and the buffers are not 64-byte aligned, so two workers on two
    // heads of one image wrote into the same cache lines (two threads, `bench attn --shape vit`, fastest of 40, three
    // alternating runs: backward 1.22–1.25 → 1.11–1.16 ms). The forwards keep the image-major order: there each
    // worker's next head reads the qkv lines the last one brought in, and the same change cost them 5 %. Which thread
    // runs an item does not change what it computes, so the numbers are the same.
    private static int Item(int i, int batch, int heads) => i % batch * heads + i / batch;

    /// <summary>
    /// out[b, n, h·D + d] = Σ_m P[b, h, n, m]·v[b, h, m, d] with P = softmax over m of scale·q·kᵀ, and
    /// probs = P. qkv is [B, N, 3·H·D], probs [B, H, N, N] or empty (the probabilities are not kept: an
    /// inference forward), output [B, N, H·D] (overwritten). Runs the AVX-512 path (Attention512.cs) when
    /// the GEMM kernel in force is AVX-512, else two GEMM calls per (image, head). <paramref name="queries"/> above 0:
    /// only the first that many query rows (file header): probs [B, H, queries, N], output [B, queries, H·D].
    /// Throws ArgumentException when a size is not positive or a buffer is too short.
    /// </summary>
    public static void Forward(ReadOnlySpan<float> qkv, int batch, int tokens, int heads, int headDim, float scale,
        Span<float> probs, Span<float> output, Span<float> logits = default, int queries = 0)
        => Forward(qkv, batch, tokens, heads, headDim, scale, probs, output, default, default, 0, logits, queries);

    /// <summary>
    /// <see cref="Forward(ReadOnlySpan{float}, int, int, int, int, float, Span{float}, Span{float}, Span{float}, int)"/>
    /// with Swin's addends (file header): <paramref name="bias"/> [H, N, N] (empty: none) and <paramref name="mask"/>
    /// [windows, N, N] (empty: none; item b takes mask[b mod windows], so batch must be a multiple of windows) added to
    /// the scaled logits before the softmax. Not with the logits output or fewer query rows. Throws ArgumentException
    /// on sizes.
    /// </summary>
    public static void Forward(ReadOnlySpan<float> qkv, int batch, int tokens, int heads, int headDim, float scale,
        Span<float> probs, Span<float> output, ReadOnlySpan<float> bias, ReadOnlySpan<float> mask, int windows,
        Span<float> logits = default, int queries = 0)
    {
        bool keep = !probs.IsEmpty, wantLogits = !logits.IsEmpty, hasBias = !bias.IsEmpty, hasMask = !mask.IsEmpty;
        int M = Queries(queries, tokens, wantLogits);
        Check(batch, tokens, heads, headDim, qkv.Length, keep ? probs.Length : long.MaxValue, output.Length, output.Length, "output", queries: M);
        if (wantLogits) Check(batch, tokens, heads, headDim, qkv.Length, logits.Length, output.Length, output.Length, "output", "logits");
        long nn = (long)tokens * tokens;
        if ((hasBias || hasMask) && (wantLogits || M != tokens))
            throw new ArgumentException("attention: a logit bias or mask needs every query row and no logits output");
        if (hasBias && bias.Length < heads * nn) throw new ArgumentException($"attention: bias has {bias.Length} elements, [{heads}, {tokens}, {tokens}] needs {heads * nn}");
        if (hasMask && (windows < 1 || batch % windows != 0 || mask.Length < windows * nn))
            throw new ArgumentException($"attention: a mask of {mask.Length} elements for {windows} windows does not fit {batch} items of {tokens} tokens");
        bool wide = UsesAvx512, narrow = !wide && UsesAvx2; // read on the calling thread: ForceKernel / ForceNarrow scopes are per flow
        fixed (float* pq = qkv, pp = probs, po = output, pl = logits, pbias = bias, pmask = mask)
        {
            nint q = (nint)pq, p = keep ? (nint)pp : 0, o = (nint)po, l = wantLogits ? (nint)pl : 0;
            nint bi = hasBias ? (nint)pbias : 0, mk = hasMask ? (nint)pmask : 0;
            int N = tokens, H = heads, D = headDim, C = H * D, C3 = 3 * C, nW = Math.Max(1, windows);
            Parallelism.For(0, batch * H, t =>
            {
                int b = t / H, h = t % H;
                float* qb = (float*)q + (nint)b * N * C3 + h * D;
                float* pt = p != 0 ? (float*)p + (nint)t * M * N : null;
                float* lt = l != 0 ? (float*)l + (nint)t * N * N : null;
                float* ob = (float*)o + (nint)b * M * C + h * D;
                float* bt = bi != 0 ? (float*)bi + (nint)h * N * N : null;
                float* mt = mk != 0 ? (float*)mk + (nint)(b % nW) * N * N : null;
                if (wide)
                {
                    ForwardHead512(qb, qb + C, qb + 2 * C, C3, N, D, scale, pt, ob, C, lt, M, bt, mt);
                    return;
                }
                if (narrow)
                {
                    ForwardHead256(qb, qb + C, qb + 2 * C, C3, N, D, scale, pt, ob, C, lt, M, bt, mt);
                    return;
                }
                var qs = new ReadOnlySpan<float>(qb, (M - 1) * C3 + D);
                var ks = new ReadOnlySpan<float>(qb + C, (N - 1) * C3 + D);
                var vs = new ReadOnlySpan<float>(qb + 2 * C, (N - 1) * C3 + D);
                var ps = pt != null ? new Span<float>(pt, M * N) : Scratch(N * N).DP.AsSpan(0, M * N);
                if (lt != null)
                {
                    // Unscaled, then scaled: the same single rounding of Σ·scale as alpha = scale.
                    var ls = new Span<float>(lt, N * N);
                    Gemm.Sgemm(false, true, N, N, D, 1f, qs, C3, ks, C3, 0f, ls, N);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(ls, scale, ps);
                }
                else Gemm.Sgemm(false, true, M, N, D, scale, qs, C3, ks, C3, 0f, ps, N);
                if (bt != null || mt != null)
                    fixed (float* sp = ps) AddLogitRows(sp, N, M, N, bt, mt);
                SoftmaxKernel.SoftmaxRows(ps, ps, M, N);
                Gemm.Sgemm(false, false, M, D, N, 1f, ps, N, vs, C3, 0f, new Span<float>(ob, (M - 1) * C + D), C);
            });
        }
    }

    /// <summary>
    /// The probabilities alone, for heads already split: probs[b, h] = softmax(scale·q[b, h]·k[b, h]ᵀ) with q and k
    /// [B, H, N, D] (what a quantizer between the products sees). The same numbers as the op graph MatMul(q, k,
    /// transB) → Scale → Softmax (bit for bit while the head width fits one GEMM K block, as at every ViT size), with
    /// no [B, H, N, N] pass between the products. Inference: nothing is kept for a backward. Throws ArgumentException
    /// when a size is not positive or a buffer is too short.
    /// </summary>
    public static void Probabilities(ReadOnlySpan<float> q, ReadOnlySpan<float> k, int batch, int tokens, int heads, int headDim,
        float scale, Span<float> probs)
    {
        long nd = (long)tokens * headDim, nn = (long)tokens * tokens;
        CheckSplit(batch, tokens, heads, headDim, (q.Length, "q", nd), (k.Length, "k", nd), (probs.Length, "probs", nn));
        bool wide = UsesAvx512; // read on the calling thread: ForceKernel / ForceNarrow scopes are per flow
        fixed (float* pq = q, pk = k, pp = probs)
        {
            nint qa = (nint)pq, ka = (nint)pk, pa = (nint)pp;
            int N = tokens, D = headDim;
            Parallelism.For(0, batch * heads, t =>
            {
                float* qt = (float*)qa + (nint)t * N * D, kt = (float*)ka + (nint)t * N * D, pt = (float*)pa + (nint)t * N * N;
                if (wide)
                {
                    ForwardHead512(qt, kt, null, D, N, D, scale, pt, null, 0);
                    return;
                }
                // The op graph's own calls: the product with alpha 1, then the scale as a pass (one rounding each).
                var ps = new Span<float>(pt, N * N);
                Gemm.Sgemm(false, true, N, N, D, 1f, new ReadOnlySpan<float>(qt, N * D), D, new ReadOnlySpan<float>(kt, N * D), D, 0f, ps, N);
                System.Numerics.Tensors.TensorPrimitives.Multiply(ps, scale, ps);
                SoftmaxKernel.SoftmaxRows(ps, ps, N, N);
            });
        }
    }

    /// <summary>
    /// output[b, n, h·D + d] = Σ_m probs[b, h, n, m]·v[b, h, m, d]: the second product for given probabilities
    /// [B, H, N, N] and v [B, H, N, D], heads merged into [B, N, H·D] (overwritten). The same numbers as MatMul(probs,
    /// v) → MergeHeads: the AVX-512 P·v kernel sums all N products in one chain, which is the GEMM's order while N
    /// fits one K block (192); above that it calls the GEMM. Inference only. Throws ArgumentException when a size is
    /// not positive or a buffer is too short.
    /// </summary>
    public static void ProbsTimesV(ReadOnlySpan<float> probs, ReadOnlySpan<float> v, int batch, int tokens, int heads, int headDim,
        Span<float> output)
    {
        long nd = (long)tokens * headDim, nn = (long)tokens * tokens;
        CheckSplit(batch, tokens, heads, headDim, (probs.Length, "probs", nn), (v.Length, "v", nd), (output.Length, "output", nd));
        bool wide = UsesAvx512 && tokens <= ManagedGemm.KC512;
        fixed (float* pp = probs, pv = v, po = output)
        {
            nint pa = (nint)pp, va = (nint)pv, oa = (nint)po;
            int N = tokens, H = heads, D = headDim, C = H * D;
            Parallelism.For(0, batch * H, t =>
            {
                int b = t / H, h = t % H;
                float* pt = (float*)pa + (nint)t * N * N, vt = (float*)va + (nint)t * N * D, ob = (float*)oa + (nint)b * N * C + h * D;
                if (wide) PvHead512(pt, vt, D, N, D, ob, C);
                else Gemm.Sgemm(false, false, N, D, N, 1f, new ReadOnlySpan<float>(pt, N * N), N, new ReadOnlySpan<float>(vt, N * D), D,
                    0f, new Span<float>(ob, (N - 1) * C + D), C);
            });
        }
    }

    // s[r·lds + j] = (s[r·lds + j] + bias[r·n + j]) + mask[r·n + j] for r < rows, j < n (bias or mask null: not added):
    // the op graph's two additions in its order, so the same bits.
    internal static void AddLogitRows(float* s, nint lds, int rows, int n, float* bias, float* mask)
    {
        for (int r = 0; r < rows; r++, s += lds)
        {
            float* br = bias != null ? bias + (nint)r * n : null, mr = mask != null ? mask + (nint)r * n : null;
            int j = 0;
            if (Vector256.IsHardwareAccelerated)
                for (; j + 8 <= n; j += 8)
                {
                    var v = Vector256.Load(s + j);
                    if (br != null) v += Vector256.Load(br + j);
                    if (mr != null) v += Vector256.Load(mr + j);
                    v.Store(s + j);
                }
            for (; j < n; j++)
            {
                float v = s[j];
                if (br != null) v += br[j];
                if (mr != null) v += mr[j];
                s[j] = v;
            }
        }
    }

    // Sizes positive, and each buffer at least B·H times its per-head size.
    private static void CheckSplit(int batch, int tokens, int heads, int headDim, params (int Length, string Name, long PerHead)[] buffers)
    {
        if (batch < 1 || tokens < 1 || heads < 1 || headDim < 1)
            throw new ArgumentException($"attention sizes must be positive, got B={batch} N={tokens} H={heads} D={headDim}");
        long count = (long)batch * heads;
        foreach (var (len, name, per) in buffers)
            if (len < count * per) throw new ArgumentException($"attention: {name} has {len} elements, B={batch} H={heads} N={tokens} D={headDim} needs {count * per}");
    }

    /// <summary>
    /// Accumulates the gradient of <see cref="Forward(ReadOnlySpan{float}, int, int, int, int, float, Span{float}, Span{float}, Span{float}, int)"/> into dQkv [B, N, 3·H·D] given the saved probs
    /// [B, H, N, N] and dOut [B, N, H·D] (formulas in the file header). The AVX-512 path (Attention512.cs) when the
    /// GEMM kernel in force is AVX-512 and the head width is a multiple of 32, else four GEMM calls per head.
    /// Throws ArgumentException when a size is not positive or a buffer is too short. With <c>overwrite</c>, dQkv holds no
    /// gradient yet (its contents are undefined) and is overwritten instead.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> qkv, ReadOnlySpan<float> probs, ReadOnlySpan<float> dOut,
        int batch, int tokens, int heads, int headDim, float scale, Span<float> dQkv, int queries = 0, bool overwrite = false)
        => BackwardCore(qkv, probs, dOut, batch, tokens, heads, headDim, scale, dQkv, default, Queries(queries, tokens, false), overwrite);

    /// <summary>
    /// The first half of <see cref="Backward"/> for a forward whose logits L = q·kᵀ are an output of their own
    /// (Ops.FusedAttentionWithLogits): from dOut, dv += Pᵀ·G into dQkv and the gradient at the unscaled
    /// logits, scale·P ⊙ (dP − rowsum(P ⊙ dP)), accumulated into dLogits [B, H, N, N]; dq and dk are left to
    /// <see cref="LogitsBackward"/> on the whole dLogits. Throws ArgumentException when a buffer is too short.
    /// </summary>
    public static void BackwardSoftmaxV(ReadOnlySpan<float> qkv, ReadOnlySpan<float> probs, ReadOnlySpan<float> dOut,
        int batch, int tokens, int heads, int headDim, float scale, Span<float> dQkv, Span<float> dLogits)
    {
        Check(batch, tokens, heads, headDim, qkv.Length, dLogits.Length, dOut.Length, dQkv.Length, "dQkv", "dLogits");
        BackwardCore(qkv, probs, dOut, batch, tokens, heads, headDim, scale, dQkv, dLogits, tokens);
    }

    // dLogits empty: the whole backward; else the SoftmaxV half into dLogits (M = N). M: the query rows. overwrite: dQkv's
    // contents are undefined. The AVX-512 whole backward on all rows then stores each of its elements once (beta 0, no
    // zero fill first: that fill was 0.9 % of a vit_fmnist training step's samples); the other paths clear it and add.
    private static void BackwardCore(ReadOnlySpan<float> qkv, ReadOnlySpan<float> probs, ReadOnlySpan<float> dOut,
        int batch, int tokens, int heads, int headDim, float scale, Span<float> dQkv, Span<float> dLogits, int M, bool overwrite = false)
    {
        Check(batch, tokens, heads, headDim, qkv.Length, probs.Length, dOut.Length, dQkv.Length, "dQkv", queries: M);
        bool wide = UsesAvx512 && headDim % Cols == 0; // read on the calling thread (ForceKernel scopes)
        bool narrow = !wide && UsesAvx2 && headDim % Cols256 == 0;
        bool half = !dLogits.IsEmpty;
        bool store = overwrite && wide && !half && M == tokens;
        if (overwrite && !store) dQkv[..(batch * tokens * 3 * heads * headDim)].Clear();
        fixed (float* pq = qkv, pp = probs, pg = dOut, pd = dQkv, pl = dLogits)
        {
            nint q = (nint)pq, p = (nint)pp, g = (nint)pg, d = (nint)pd, l = (nint)pl;
            int N = tokens, H = heads, D = headDim, C = H * D, C3 = 3 * C;
            Parallelism.For(0, batch * H, i =>
            {
                int t = Item(i, batch, H);
                float* lt = half ? (float*)l + (nint)t * N * N : null;
                if (wide || narrow)
                {
                    int bi = t / H, hi = t % H;
                    nint off = (nint)bi * N * C3 + hi * D;
                    float* qb = (float*)q + off, db = (float*)d + off, pt = (float*)p + (nint)t * M * N, gt = (float*)g + (nint)bi * M * C + hi * D;
                    var part = half ? BackwardPart.SoftmaxV : BackwardPart.All;
                    if (wide) BackwardHead512(qb, qb + C, qb + 2 * C, C3, pt, gt, C, db, db + C, db + 2 * C, N, D, scale, part, lt, M, store ? 0f : 1f);
                    else BackwardHead256(qb, qb + C, qb + 2 * C, C3, pt, gt, C, db, db + C, db + 2 * C, N, D, scale, part, lt, M);
                    return;
                }
                var (dP, dS) = Scratch(N * N);
                int b = t / H, h = t % H;
                nint qOff = (nint)b * N * C3 + h * D;
                int span = (N - 1) * C3 + D, spanQ = (M - 1) * C3 + D;
                var qs = new ReadOnlySpan<float>((float*)q + qOff, spanQ);
                var ks = new ReadOnlySpan<float>((float*)q + qOff + C, span);
                var vs = new ReadOnlySpan<float>((float*)q + qOff + 2 * C, span);
                var dq = new Span<float>((float*)d + qOff, spanQ);
                var dk = new Span<float>((float*)d + qOff + C, span);
                var dv = new Span<float>((float*)d + qOff + 2 * C, span);
                var ps = new ReadOnlySpan<float>((float*)p + (nint)t * M * N, M * N);
                var gs = new ReadOnlySpan<float>((float*)g + (nint)b * M * C + h * D, (M - 1) * C + D);
                var dp = dP.AsSpan(0, M * N);
                var ds = dS.AsSpan(0, M * N);
                Gemm.Sgemm(false, true, M, N, D, 1f, gs, C, vs, C3, 0f, dp, N);   // dP = G·vᵀ
                Gemm.Sgemm(true, false, N, D, M, 1f, ps, N, gs, C, 1f, dv, C3);   // dv += Pᵀ·G
                ds.Clear();
                SoftmaxKernel.SoftmaxRowsBackward(ps, dp, ds, M, N);
                System.Numerics.Tensors.TensorPrimitives.Multiply(ds, scale, ds);
                if (half)
                {
                    var dl = new Span<float>(lt, N * N);
                    System.Numerics.Tensors.TensorPrimitives.Add(dl, ds, dl);
                    return;
                }
                Gemm.Sgemm(false, false, M, D, N, 1f, ds, N, ks, C3, 1f, dq, C3);  // dq += dS·k
                Gemm.Sgemm(true, false, N, D, M, 1f, ds, N, qs, C3, 1f, dk, C3);   // dk += dSᵀ·q
            });
        }
    }

    /// <summary>
    /// The gradient at qkv of the unscaled logits L = q·kᵀ [B, H, N, N] that <see cref="Forward(ReadOnlySpan{float}, int, int, int, int, float, Span{float}, Span{float}, Span{float}, int)"/> can write:
    /// dq += dL·k and dk += dLᵀ·q per image and head, accumulated into dQkv [B, N, 3·H·D] (v's part untouched).
    /// Throws ArgumentException when a buffer is too short.
    /// </summary>
    public static void LogitsBackward(ReadOnlySpan<float> qkv, ReadOnlySpan<float> dLogits, int batch, int tokens, int heads, int headDim,
        Span<float> dQkv)
    {
        Check(batch, tokens, heads, headDim, qkv.Length, dLogits.Length, int.MaxValue, dQkv.Length, "dQkv", "dLogits");
        bool wide = UsesAvx512 && headDim % Cols == 0, narrow = !wide && UsesAvx2 && headDim % Cols256 == 0;
        fixed (float* pq = qkv, pl = dLogits, pd = dQkv)
        {
            nint q = (nint)pq, l = (nint)pl, d = (nint)pd;
            int N = tokens, H = heads, D = headDim, C = H * D, C3 = 3 * C;
            Parallelism.For(0, batch * H, i =>
            {
                int t = Item(i, batch, H);
                nint off = (nint)(t / H) * N * C3 + t % H * D;
                if (wide || narrow)
                {
                    float* qb = (float*)q + off, db = (float*)d + off, lt = (float*)l + (nint)t * N * N;
                    if (wide) BackwardHead512(qb, qb + C, null, C3, null, null, 0, db, db + C, null, N, D, 0f, BackwardPart.Qk, lt);
                    else BackwardHead256(qb, qb + C, null, C3, null, null, 0, db, db + C, null, N, D, 0f, BackwardPart.Qk, lt);
                    return;
                }
                int span = (N - 1) * C3 + D;
                var dl = new ReadOnlySpan<float>((float*)l + (nint)t * N * N, N * N);
                Gemm.Sgemm(false, false, N, D, N, 1f, dl, N, new ReadOnlySpan<float>((float*)q + off + C, span), C3,
                    1f, new Span<float>((float*)d + off, span), C3);                                     // dq += dL·k
                Gemm.Sgemm(true, false, N, D, N, 1f, dl, N, new ReadOnlySpan<float>((float*)q + off, span), C3,
                    1f, new Span<float>((float*)d + off + C, span), C3);                                 // dk += dLᵀ·q
            });
        }
    }

    /// <summary>Scalar double-precision twin of the logits <see cref="Forward(ReadOnlySpan{float}, int, int, int, int, float, Span{float}, Span{float}, Span{float}, int)"/> writes (q·kᵀ per image and head, unscaled).</summary>
    public static void ReferenceLogits(ReadOnlySpan<float> qkv, int batch, int tokens, int heads, int headDim, Span<float> logits)
    {
        int N = tokens, H = heads, D = headDim, C = H * D, C3 = 3 * C;
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++)
                    {
                        double s = 0;
                        for (int e = 0; e < D; e++) s += (double)qkv[(b * N + i) * C3 + h * D + e] * qkv[(b * N + j) * C3 + C + h * D + e];
                        logits[((b * H + h) * N + i) * N + j] = (float)s;
                    }
    }

    /// <summary>Scalar double-precision twin of <see cref="Forward(ReadOnlySpan{float}, int, int, int, int, float, Span{float}, Span{float}, Span{float}, int)"/> (same arguments and layout).</summary>
    public static void ReferenceForward(ReadOnlySpan<float> qkv, int batch, int tokens, int heads, int headDim, float scale,
        Span<float> probs, Span<float> output)
    {
        Check(batch, tokens, heads, headDim, qkv.Length, probs.Length, output.Length, output.Length, "output");
        int N = tokens, H = heads, D = headDim, C = H * D, C3 = 3 * C;
        var row = new double[N];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < N; i++)
                {
                    int qi = (b * N + i) * C3 + h * D;
                    double max = double.NegativeInfinity, sum = 0;
                    for (int j = 0; j < N; j++)
                    {
                        int kj = (b * N + j) * C3 + C + h * D;
                        double s = 0;
                        for (int e = 0; e < D; e++) s += (double)qkv[qi + e] * qkv[kj + e];
                        row[j] = s * scale;
                        max = Math.Max(max, row[j]);
                    }
                    for (int j = 0; j < N; j++) sum += row[j] = Math.Exp(row[j] - max);
                    int pr = ((b * H + h) * N + i) * N;
                    for (int j = 0; j < N; j++) probs[pr + j] = (float)(row[j] /= sum);
                    for (int e = 0; e < D; e++)
                    {
                        double o = 0;
                        for (int j = 0; j < N; j++) o += row[j] * qkv[(b * N + j) * C3 + 2 * C + h * D + e];
                        output[(b * N + i) * C + h * D + e] = (float)o;
                    }
                }
    }

    /// <summary>Scalar double-precision twin of <see cref="Backward"/> (accumulates into dQkv).</summary>
    public static void ReferenceBackward(ReadOnlySpan<float> qkv, ReadOnlySpan<float> probs, ReadOnlySpan<float> dOut,
        int batch, int tokens, int heads, int headDim, float scale, Span<float> dQkv)
    {
        Check(batch, tokens, heads, headDim, qkv.Length, probs.Length, dOut.Length, dQkv.Length, "dQkv");
        int N = tokens, H = heads, D = headDim, C = H * D, C3 = 3 * C;
        var dS = new double[N * N];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < H; h++)
            {
                int pb = (b * H + h) * N * N;
                // Element (n, e) of this head's q, k, v (s = 0, 1, 2) and of dOut.
                int At(int n, int s, int e) => (b * N + n) * C3 + s * C + h * D + e;
                int AtG(int n, int e) => (b * N + n) * C + h * D + e;
                for (int i = 0; i < N; i++)
                {
                    double dot = 0;
                    var dP = new double[N];
                    for (int j = 0; j < N; j++)
                    {
                        for (int e = 0; e < D; e++) dP[j] += (double)dOut[AtG(i, e)] * qkv[At(j, 2, e)];
                        dot += probs[pb + i * N + j] * dP[j];
                    }
                    for (int j = 0; j < N; j++) dS[i * N + j] = scale * probs[pb + i * N + j] * (dP[j] - dot);
                }
                for (int n = 0; n < N; n++)
                    for (int e = 0; e < D; e++)
                    {
                        double dq = 0, dk = 0, dv = 0;
                        for (int m = 0; m < N; m++)
                        {
                            dq += dS[n * N + m] * qkv[At(m, 1, e)];
                            dk += dS[m * N + n] * qkv[At(m, 0, e)];
                            dv += (double)probs[pb + m * N + n] * dOut[AtG(m, e)];
                        }
                        int o = (b * N + n) * C3 + h * D + e;
                        dQkv[o] += (float)dq;
                        dQkv[o + C] += (float)dk;
                        dQkv[o + 2 * C] += (float)dv;
                    }
            }
    }

    // The query rows M of a call (queries 0: all N). Throws ArgumentException outside 1 .. N, or below N with logits.
    private static int Queries(int queries, int tokens, bool logits)
    {
        int m = queries == 0 ? tokens : queries;
        if (m < 1 || m > tokens) throw new ArgumentException($"attention: {queries} query rows of {tokens} tokens");
        if (logits && m != tokens) throw new ArgumentException("attention: the logits output needs every query row");
        return m;
    }

    // Unused buffers are passed as int.MaxValue (long.MaxValue for probs); nnName names the [B, H, M, N] buffer;
    // queries: M, the query rows of probs, output and dOut (0: N).
    private static void Check(int batch, int tokens, int heads, int headDim, int qkvLen, long probsLen, int outLen, int gradLen, string gradName,
        string nnName = "probs", int queries = 0)
    {
        if (batch < 1 || tokens < 1 || heads < 1 || headDim < 1)
            throw new ArgumentException($"attention sizes must be positive, got B={batch} N={tokens} H={heads} D={headDim}");
        long M = queries == 0 ? tokens : queries;
        long C = (long)heads * headDim, rows = (long)batch * tokens;
        if (qkvLen < rows * 3 * C) throw new ArgumentException($"attention: qkv has {qkvLen} elements, [{batch}, {tokens}, {3 * C}] needs {rows * 3 * C}");
        if (probsLen < (long)batch * heads * M * tokens) throw new ArgumentException($"attention: {nnName} has {probsLen} elements, [{batch}, {heads}, {M}, {tokens}] needs {(long)batch * heads * M * tokens}");
        if (outLen < batch * M * C) throw new ArgumentException($"attention: output/dOut has {outLen} elements, [{batch}, {M}, {C}] needs {batch * M * C}");
        if (gradLen < (gradName == "dQkv" ? rows * 3 * C : batch * M * C)) throw new ArgumentException($"attention: {gradName} has {gradLen} elements, too few for B={batch} N={tokens} C={C}");
    }

    // Per-thread N×N scratch for dP and dS: reused across calls, so a backward allocates nothing once warm.
    [ThreadStatic] private static float[]? _dP, _dS;

    private static (float[] DP, float[] DS) Scratch(int len)
    {
        if (_dP == null || _dP.Length < len)
        {
            _dP = new float[len];
            _dS = new float[len];
        }
        return (_dP, _dS!);
    }
}
