// Fused multi-head self-attention as one autograd op over the packed qkv projection
// (Kernels/Attention.cs has the math). B batch, N tokens, H heads, D head dim, C = H·D.
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>
    /// softmax(scale·q·kᵀ)·v for every image and head of qkv [B, N, 3·C] (timm's (3, H, D) inner
    /// order), heads merged: the result is [B, N, C], equal within float rounding to SplitQkv →
    /// MatMul(q, k, transB) → Scale → Softmax → MatMul(·, v) → MergeHeads, as one node whose backward
    /// reuses the saved probabilities. Throws ArgumentException when qkv is not [B, N, 3·heads·D].
    /// </summary>
    public static Tensor FusedAttention(Tensor qkv, int heads, float scale) => FusedAttention(qkv, heads, scale, 0);

    /// <summary>
    /// <see cref="FusedAttention(Tensor, int, float)"/> for the first <paramref name="queries"/> query tokens only (0:
    /// all): [B, queries, C], each row the full op's, every key and value still counted (AttentionKernel's header).
    /// Throws ArgumentException on a wrong shape or a query count outside 0 .. N.
    /// </summary>
    internal static Tensor FusedAttention(Tensor qkv, int heads, float scale, int queries)
    {
        if (qkv.Rank != 3 || heads < 1 || qkv.Shape[2] % (3 * heads) != 0 || qkv.Shape[2] == 0)
            throw new ArgumentException($"FusedAttention: expected [B, N, 3·heads·D] with heads={heads}, got {Tensor.ShapeString(qkv.Shape)}");
        int B = qkv.Shape[0], N = qkv.Shape[1], C = qkv.Shape[2] / 3, D = C / heads;
        if (queries < 0 || queries > N) throw new ArgumentException($"FusedAttention: {queries} query rows of {N} tokens");
        int M = queries == 0 ? N : queries;
        if (B == 0 || N == 0) return Tensor.Output(B, M, C);
        // The kernel writes every element of both (beta = 0 products), so no zero fill is needed.
        var y = Tensor.OutputUninitialized(B, M, C);
        if (!Autograd.Needs(qkv))
        {
            // No backward: the probabilities stay in the kernel's per-thread scratch.
            AttentionKernel.Forward(qkv.Span, B, N, heads, D, scale, default, y.Span, queries: M);
            return y;
        }
        var probs = Tensor.OutputUninitialized(B, heads, M, N); // [B, H, M, N], kept for the backward
        AttentionKernel.Forward(qkv.Span, B, N, heads, D, scale, probs.Span, y.Span, queries: M);
        return Autograd.Record("attention", y, new[] { qkv }, g =>
        {
            var dQkv = qkv.GradSpanForOverwrite(out bool fresh);
            AttentionKernel.Backward(qkv.Span, probs.Span, g.Span, B, N, heads, D, scale, dQkv, queries: M, overwrite: fresh);
        });
    }

    /// <summary>
    /// softmax(scale·q·kᵀ) for heads already split, q and k [B, H, N, D] → [B, H, N, N]: what MatMul(q, k, transB)
    /// → Scale → Softmax gives, bit for bit at ViT head widths, in one kernel pass (AttentionKernel.Probabilities).
    /// No gradient: throws InvalidOperationException when autograd would need one, ArgumentException on shapes.
    /// </summary>
    public static Tensor AttentionProbabilities(Tensor q, Tensor k, float scale)
    {
        if (q.Rank != 4 || !q.Shape.AsSpan().SequenceEqual(k.Shape))
            throw new ArgumentException($"AttentionProbabilities: expected q and k [B, H, N, D] of one shape, got {Tensor.ShapeString(q.Shape)} and {Tensor.ShapeString(k.Shape)}");
        if (Autograd.Needs(q, k)) throw new InvalidOperationException("AttentionProbabilities has no backward: use the op graph when a gradient is needed");
        int B = q.Shape[0], H = q.Shape[1], N = q.Shape[2], D = q.Shape[3];
        if (B == 0 || H == 0 || N == 0) return Tensor.Output(B, H, N, N);
        if (D == 0) throw new ArgumentException("AttentionProbabilities: head width 0");
        var probs = Tensor.OutputUninitialized(B, H, N, N); // every row written by the softmax
        AttentionKernel.Probabilities(q.Span, k.Span, B, N, H, D, scale, probs.Span);
        return probs;
    }

    /// <summary>
    /// probs·v for probabilities [B, H, N, N] and v [B, H, N, D], heads merged: [B, N, H·D], what MatMul(probs, v) →
    /// MergeHeads gives, bit for bit (AttentionKernel.ProbsTimesV). No gradient: throws InvalidOperationException when
    /// autograd would need one, ArgumentException on shapes.
    /// </summary>
    public static Tensor AttentionOutput(Tensor probs, Tensor v)
    {
        if (probs.Rank != 4 || v.Rank != 4 || probs.Shape[0] != v.Shape[0] || probs.Shape[1] != v.Shape[1]
            || probs.Shape[2] != v.Shape[2] || probs.Shape[3] != v.Shape[2])
            throw new ArgumentException($"AttentionOutput: expected probs [B, H, N, N] and v [B, H, N, D], got {Tensor.ShapeString(probs.Shape)} and {Tensor.ShapeString(v.Shape)}");
        if (Autograd.Needs(probs, v)) throw new InvalidOperationException("AttentionOutput has no backward: use the op graph when a gradient is needed");
        int B = v.Shape[0], H = v.Shape[1], N = v.Shape[2], D = v.Shape[3];
        if (B == 0 || H == 0 || N == 0 || D == 0) return Tensor.Output(B, N, H * D);
        var y = Tensor.OutputUninitialized(B, N, H * D); // every (token, head) row written by the product
        AttentionKernel.ProbsTimesV(probs.Span, v.Span, B, N, H, D, y.Span);
        return y;
    }

    /// <summary>
    /// <see cref="FusedAttention(Tensor, int, float)"/> that also returns the unscaled logits q·kᵀ [B, H, N, N] (the unfused graph's
    /// MatMul(q, k, transB), bit for bit), for hooks that tap them (VisionTransformer.Attention). Both outputs
    /// are differentiable: the output's node pushes its gradient into the logits (dv directly), and the logits'
    /// node turns everything that reached them — from the output and from whatever consumed the tap — into dq
    /// and dk. Throws ArgumentException when qkv is not [B, N, 3·heads·D].
    /// </summary>
    public static (Tensor Out, Tensor Logits) FusedAttentionWithLogits(Tensor qkv, int heads, float scale)
    {
        if (qkv.Rank != 3 || heads < 1 || qkv.Shape[2] % (3 * heads) != 0 || qkv.Shape[2] == 0)
            throw new ArgumentException($"FusedAttention: expected [B, N, 3·heads·D] with heads={heads}, got {Tensor.ShapeString(qkv.Shape)}");
        int B = qkv.Shape[0], N = qkv.Shape[1], C = qkv.Shape[2] / 3, D = C / heads;
        if (B == 0 || N == 0) return (Tensor.Output(B, N, C), Tensor.Output(B, heads, N, N));
        var y = Tensor.OutputUninitialized(B, N, C);
        var logits = Tensor.OutputUninitialized(B, heads, N, N);
        bool grad = Autograd.Needs(qkv);
        var probs = grad ? Tensor.OutputUninitialized(B, heads, N, N) : null;
        AttentionKernel.Forward(qkv.Span, B, N, heads, D, scale, probs != null ? probs.Span : default, y.Span, logits.Span);
        if (!grad) return (y, logits);
        logits = Autograd.Record("attention_logits", logits, new[] { qkv }, g =>
            AttentionKernel.LogitsBackward(qkv.Span, g.Span, B, N, heads, D, qkv.GradSpan()));
        var l = logits;
        y = Autograd.Record("attention_softmax_v", y, new[] { qkv, l }, g =>
            AttentionKernel.BackwardSoftmaxV(qkv.Span, probs!.Span, g.Span, B, N, heads, D, scale, qkv.GradSpan(), l.GradSpan()));
        return (y, logits);
    }

    /// <summary>
    /// Swin's window attention core in one node: softmax(scale·q·kᵀ + bias[h] + mask[w])·v for every window and head of
    /// qkv [Bw, N, 3·C] (timm's (3, H, D) inner order), heads merged: [Bw, N, C]. <paramref name="bias"/> [H, N, N] is the
    /// relative position bias (differentiable: its gradient is the logits' summed over the windows); <paramref name="mask"/>
    /// (constant, or null) holds nW = mask.Size / N² masks, window b taking mask[b mod nW] (Bw is images × nW). Equal
    /// within float rounding to SplitQkv → MatMul(q, k, transB) → Scale → Add(bias) → Add(mask) → Softmax → MatMul(·, v)
    /// → MergeHeads (its probabilities bit for bit), without the [Bw, H, N, N] passes between the products. Throws
    /// ArgumentException on shapes.
    /// </summary>
    internal static Tensor WindowAttention(Tensor qkv, int heads, float scale, Tensor bias, Tensor? mask)
    {
        if (qkv.Rank != 3 || heads < 1 || qkv.Shape[2] % (3 * heads) != 0 || qkv.Shape[2] == 0)
            throw new ArgumentException($"WindowAttention: expected [Bw, N, 3·heads·D] with heads={heads}, got {Tensor.ShapeString(qkv.Shape)}");
        int B = qkv.Shape[0], N = qkv.Shape[1], C = qkv.Shape[2] / 3, D = C / heads;
        if (bias.Size != heads * N * N || bias.Shape[^1] != N)
            throw new ArgumentException($"WindowAttention: bias {Tensor.ShapeString(bias.Shape)} is not [{heads}, {N}, {N}]");
        int windows = mask == null ? 0 : mask.Size / Math.Max(1, N * N);
        if (mask != null && (mask.RequiresGrad || windows < 1 || mask.Size != windows * N * N || B % windows != 0))
            throw new ArgumentException($"WindowAttention: mask {Tensor.ShapeString(mask.Shape)} is not a constant [nW, N, N] with {B} windows a multiple of nW");
        if (B == 0 || N == 0) return Tensor.Output(B, N, C);
        var y = Tensor.OutputUninitialized(B, N, C); // every element written by the P·v products
        var maskSpan = mask != null ? mask.Span : default;
        if (!Autograd.Needs(qkv, bias))
        {
            AttentionKernel.Forward(qkv.Span, B, N, heads, D, scale, default, y.Span, bias.Span, maskSpan, windows);
            return y;
        }
        var probs = Tensor.OutputUninitialized(B, heads, N, N); // kept for the backward
        AttentionKernel.Forward(qkv.Span, B, N, heads, D, scale, probs.Span, y.Span, bias.Span, maskSpan, windows);
        return Autograd.Record("window_attention", y, new[] { qkv, bias }, g =>
        {
            // The softmax half with scale 1 gives dv and the gradient at the logits with bias and mask added (dZ); the
            // bias takes dZ summed over the windows, and q, k the gradient at q·kᵀ, scale·dZ.
            var dZ = TensorArena.Rent(B * heads * N * N); // the SoftmaxV half adds into it
            var dQkv = qkv.RequiresGrad ? qkv.GradSpan() : TensorArena.Rent(qkv.Size);
            AttentionKernel.BackwardSoftmaxV(qkv.Span, probs.Span, g.Span, B, N, heads, D, 1f, dQkv, dZ);
            if (bias.RequiresGrad)
            {
                int nn = N * N;
                var sum = TensorArena.Rent(heads * nn);
                // Each head's sum over the windows in window order, heads across workers: the same bits at any thread count.
                Parallelism.For(0, heads, h =>
                {
                    var dst = sum.AsSpan(h * nn, nn);
                    for (int b = 0; b < B; b++)
                        System.Numerics.Tensors.TensorPrimitives.Add(dst, new ReadOnlySpan<float>(dZ, (b * heads + h) * nn, nn), dst);
                });
                var db = bias.GradSpan();
                System.Numerics.Tensors.TensorPrimitives.Add(db, sum.AsSpan(0, heads * nn), db);
            }
            if (!qkv.RequiresGrad) return;
            System.Numerics.Tensors.TensorPrimitives.Multiply(dZ.AsSpan(0, B * heads * N * N), scale, dZ);
            AttentionKernel.LogitsBackward(qkv.Span, dZ, B, N, heads, D, dQkv);
        });
    }
}
