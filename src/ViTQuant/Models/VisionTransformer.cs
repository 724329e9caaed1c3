// ViT / DeiT exactly as timm's VisionTransformer (pre-norm blocks), written once with named
// quantization points and attention taps (ModelHooks.cs).
//
//   x [B, C, H, W] → patch_embed (conv P×P stride P) → [B, Np, D] → prepend cls (and dist) tokens
//   → + pos_embed → depth × Block → norm → pool (class token, or mean of patch tokens → fc_norm)
//   → head (DeiT distilled: (head(cls) + head_dist(dist)) / 2, timm's inference path).
//   Block: x + proj(attn(norm1(x))), then + fc2(gelu(fc1(norm2(x)))).
//   Attention: qkv = Linear(x) split into heads; logits = q·kᵀ; probs = softmax(logits·D^-½);
//   out = probs·v, heads merged, proj. Without hooks the split … merge middle is one fused op.
//
// The last block for the head alone: with token pooling the head reads only the prefix tokens (class, and the
// distillation token) of the last block's output, and everything in a block after its attention mixes no tokens
// (proj, the residual, norm2, the MLP work row by row). So Forward and Infer narrow the last block to its prefix
// rows at the attention (which still needs every token's k and v; without hooks the fused kernel computes only
// the prefix rows' queries, with hooks its output is narrowed): proj, norm2, fc1, GELU, fc2 and the residuals run
// on B·prefix rows instead of B·N — for vit_fmnist a tenth of the linear layers' work, for DeiT-Tiny a sixteenth.
// The logits are the same numbers (each row goes through the same kernels; tests hold them to the full path's
// bits), and so are the gradients up to float rounding (the rows that used to add exact zeros into the last
// block's weight gradients are gone, which can change how the GEMM groups its sums). Only
// where nothing can see the dropped rows: no hooks, observing hooks that want no tap after the last attention, or
// row-local hooks (IRowLocalHooks: a calibrated quantized model evaluated without gradients whose quantizers there
// are per tensor and static; while calibrating, with per-token grids, or with gradients it sees every token, as
// before). ForwardFeatures keeps all tokens.
//
// Inference in chunks of images (VisionModel.Infer, for every family): without hooks, or with hooks that act on
// each image alone (IImageLocalHooks: a calibrated quantized model), a batch runs as chunks of a few images, each
// chunk's whole forward on one worker (ChunkCount: the chunk's largest activation within about half a core's L2).
// A chunk's activations then stay in its core's L2 from op to op instead of streaming through L3 at batch size, and
// the workers meet once per batch instead of at every op. Every op works per image or per row, so the logits are
// the whole batch's bits (tests). `bench chunk-ab` on an Ice Lake Xeon, weights packed once, medians: vit_fmnist at
// batch 64 76.8 → 57.0 ms on one thread (thread CPU time) and 42.8 → 29.2 ms on two, in chunks of 8 images;
// DeiT-Tiny at batch 8 (an image's activations nearly fill L2 already) 218.4 → 205.7 ms on one thread. MimiQ's
// synthesis runs its forward and backward in the same chunks (MimiqSynthesizer).
using ViTQuant.Kernels;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Models;

/// <summary>A ViT/DeiT classifier with timm's parameter names.</summary>
public sealed class VisionTransformer : VisionModel
{
    /// <inheritdoc/>
    public override ViTConfig Config { get; }
    /// <summary>Patch embedding convolution weight patch_embed.proj.weight [D, C_in, P, P].</summary>
    public Tensor PatchWeight { get; }
    /// <summary>Patch embedding bias patch_embed.proj.bias [D].</summary>
    public Tensor PatchBias { get; }
    /// <summary>Learned class token cls_token [1, 1, D]; null without a class token.</summary>
    public Tensor? ClsToken { get; }
    /// <summary>DeiT distillation token dist_token [1, 1, D]; null unless distilled.</summary>
    public Tensor? DistToken { get; }
    /// <summary>Learned position embedding pos_embed [1, N, D], added to the prefix and patch tokens.</summary>
    public Tensor PosEmbed { get; }
    /// <summary>The transformer blocks in forward order (blocks.{i}).</summary>
    internal IReadOnlyList<Block> Blocks { get; }
    /// <summary>Final LayerNorm: norm for token pooling; with "avg" pooling the same instance as <see cref="FcNorm"/>.</summary>
    public LayerNorm Norm { get; }
    /// <summary>LayerNorm applied after mean pooling (fc_norm); null with token pooling.</summary>
    public LayerNorm? FcNorm { get; }
    /// <summary>Classifier [classes, D] (head).</summary>
    public Linear Head { get; }
    /// <summary>Distillation classifier on the distillation token (head_dist); null unless distilled.</summary>
    public Linear? HeadDist { get; }

    /// <summary>Builds the model with timm's initialisation drawn from the given seed.</summary>
    public VisionTransformer(ViTConfig config, ulong seed = 0)
    {
        Config = config.Validated();
        var rng = new Rng(seed);
        int D = config.EmbedDim, P = config.PatchSize;
        // patch_embed.proj is a Conv2d; registered under its timm name through a child module.
        var pe = new ParamHolder();
        PatchWeight = pe.Add("weight", Init.TruncNormal(rng, 0.02f, D, config.InChans, P, P));
        PatchBias = pe.Add("bias", Tensor.Zeros(D));
        var peOuter = new ParamHolder();
        peOuter.AddModule("proj", pe);
        if (config.ClassToken) ClsToken = RegisterParameter("cls_token", Init.TruncNormal(rng, 1e-6f, 1, 1, D));
        if (config.Distilled) DistToken = RegisterParameter("dist_token", Init.TruncNormal(rng, 0.02f, 1, 1, D));
        PosEmbed = RegisterParameter("pos_embed", Init.TruncNormal(rng, 0.02f, 1, config.NumTokens, D));
        RegisterModule("patch_embed", peOuter);
        var blocks = new List<Block>();
        var blockList = new ParamHolder();
        for (int i = 0; i < config.Depth; i++)
        {
            var b = new Block(config, i, rng);
            blocks.Add(b);
            blockList.AddModule(i.ToString(), b);
        }
        RegisterModule("blocks", blockList);
        Blocks = blocks;
        if (config.GlobalPool == "avg") FcNorm = RegisterModule("fc_norm", new LayerNorm(D, config.LayerNormEps));
        else Norm = RegisterModule("norm", new LayerNorm(D, config.LayerNormEps));
        Norm ??= FcNorm!; // avg pooling normalises after pooling (timm: norm = Identity, fc_norm = LayerNorm)
        Head = RegisterModule("head", new Linear(D, config.NumClasses, bias: true, rng));
        if (config.Distilled) HeadDist = RegisterModule("head_dist", new Linear(D, config.NumClasses, bias: true, rng));
    }

    /// <summary>Logits [B, classes] for normalised images [B, C, H, W]. Throws ArgumentException on a wrong input shape.</summary>
    public override Tensor Forward(Tensor x, IModelHooks? hooks = null)
    {
        int keep = HeadTokens(hooks);
        if (keep == 0) return ForwardHead(ForwardFeatures(x, hooks), hooks);
        var h = Embed(x, hooks);
        for (int i = 0; i < Blocks.Count - 1; i++) h = Blocks[i].Forward(h, hooks);
        var last = Blocks[^1];
        return ForwardHead(last.ForwardRows(h, last.Norm1.Forward(h), keep, hooks), hooks);
    }

    /// <summary>
    /// True: calls from this thread (and the workers of its parallel regions) run the last block on every token as
    /// <see cref="ForwardFeatures"/> does (same-process A/B benchmarks and tests; the file header says why it is off by default).
    /// </summary>
    internal static bool FullLastBlock { get => _fullLastBlock.Value; set => _fullLastBlock.Value = value; }

    // Flow-local (AsyncLocal): the workers of a parallel region, Infer's chunks among them, see the caller's setting.
    private static readonly AsyncLocal<bool> _fullLastBlock = new();

    /// <summary>
    /// True: calls from this thread (and its parallel regions' workers) add the blocks' residuals in ops of their own
    /// instead of in proj's and fc2's GEMMs (Ops.LinearResidual; same-process A/B benchmarks and tests, the same bits).
    /// </summary>
    internal static bool SeparateResidualAdds { get => _separateResidualAdds.Value; set => _separateResidualAdds.Value = value; }

    private static readonly AsyncLocal<bool> _separateResidualAdds = new();

    /// <summary>
    /// How many leading tokens of the last block's output the head reads, when the rest need not be computed (file
    /// header): the prefix tokens with token pooling and hooks that cannot see the last block past its attention; else 0.
    /// </summary>
    internal int HeadTokens(IModelHooks? hooks)
    {
        var c = Config;
        if (_fullLastBlock.Value || c.GlobalPool == "avg" || c.NumPrefixTokens == 0 || Blocks.Count == 0) return 0;
        if (hooks == null) return c.NumPrefixTokens;
        string last = $"blocks.{Blocks.Count - 1}";
        if (hooks is IObservingHooks { PassesThrough: true } && !hooks.WantsTap($"{last}.mlp.act")) return c.NumPrefixTokens;
        return hooks is IRowLocalHooks r && r.RowLocalAfterAttention(last) ? c.NumPrefixTokens : 0;
    }

    /// <summary>Token features after the last block (before the final norm), [B, N, D].</summary>
    public Tensor ForwardFeatures(Tensor x, IModelHooks? hooks = null)
    {
        var h = Embed(x, hooks);
        foreach (var b in Blocks) h = b.Forward(h, hooks);
        return h;
    }

    /// <summary>
    /// Logits [B, classes] exactly as <see cref="Forward"/> computes them, for inference: gradients are
    /// off, and each stage (embedding, each block's attention and MLP halves, the head) runs in its own nested
    /// <see cref="TensorArena"/> scope whose temporaries go back to the pool as soon as the stage is done;
    /// only the stage's result is copied out. Memory is then one block's temporaries instead of the
    /// whole network's (inside one scope, Forward keeps every op output until the scope ends, because a
    /// backward pass might need it). The result belongs to the caller's scope (fresh outside one).
    /// Hooks must not keep the tensors they are shown beyond the call (copying them is fine: observers,
    /// fake quantizers); taps that are kept, as distillation's TapRecorder does, need <see cref="Forward"/>.
    /// Throws ArgumentException on a wrong input shape.
    /// </summary>
    private protected override Tensor InferBatch(Tensor x, IModelHooks? hooks)
    {
        CheckInput(x);
        using var _ = Autograd.NoGrad();
        var c = Config;
        int[] tokens = { x.Shape[0], c.NumTokens, c.EmbedDim };
        // The residual stream ping-pongs between two buffers of the caller's scope; a third holds the pre-norm
        // of the next half. Each half's residual sum is written straight into the other buffer together with the
        // next half's LayerNorm of it (LayerNormKernel.AddLayerNormRows: the same numbers as Ops.Add, then
        // LayerNorm.Forward, in one pass over the stream), after the last block the sum alone.
        // (Each buffer is written whole before it is read: Stage, the first norm's copy, AddNorm.)
        Tensor cur = Tensor.OutputUninitialized(tokens), next = Tensor.OutputUninitialized(tokens), normed = Tensor.OutputUninitialized(tokens);
        Stage(cur, () => Embed(x, hooks));
        using (TensorArena.Scope()) Blocks[0].Norm1.Forward(cur).Span.CopyTo(normed.Span);
        int keep = HeadTokens(hooks), full = keep > 0 ? Blocks.Count - 1 : Blocks.Count;
        for (int i = 0; i < full; i++)
        {
            var b = Blocks[i];
            AddNorm(cur, next, normed, b.Norm2, () => b.Attention(normed, hooks));
            (cur, next) = (next, cur);
            AddNorm(cur, next, normed, i + 1 < Blocks.Count ? Blocks[i + 1].Norm1 : null, () => b.Mlp(normed, hooks));
            (cur, next) = (next, cur);
        }
        var feats = cur;
        if (keep > 0)
        {
            // The last block on the head's rows (Forward): normed holds its norm1 of cur, written by the loop's last AddNorm.
            var last = Blocks[^1];
            feats = Tensor.OutputUninitialized(x.Shape[0], keep, c.EmbedDim);
            Stage(feats, () => last.ForwardRows(cur, normed, keep, hooks));
        }
        var logits = Tensor.OutputUninitialized(x.Shape[0], c.NumClasses);
        Stage(logits, () => ForwardHead(feats, hooks));
        return logits;
    }

    /// <inheritdoc/>
    private protected override long ActivationBytesPerImage =>
        (long)Config.NumTokens * Math.Max(3 * Config.EmbedDim, Config.MlpHidden) * sizeof(float); // qkv or the MLP's hidden layer

    /// <summary>Runs f in a nested arena scope and copies its result (dst's shape) into dst, which outlives the scope.</summary>
    private static void Stage(Tensor dst, Func<Tensor> f)
    {
        using var scope = TensorArena.Scope();
        var y = f();
        if (!y.Shape.AsSpan().SequenceEqual(dst.Shape))
            throw new InvalidOperationException($"stage produced {Tensor.ShapeString(y.Shape)}, expected {Tensor.ShapeString(dst.Shape)}");
        y.Span.CopyTo(dst.Span);
    }

    /// <summary>
    /// dst = x + f() and, when <paramref name="norm"/> is given, normed = norm(dst), with f run in a nested arena
    /// scope (its temporaries are recycled when it returns; f may read normed, which is written after it returns).
    /// </summary>
    private static void AddNorm(Tensor x, Tensor dst, Tensor normed, LayerNorm? norm, Func<Tensor> f)
    {
        using var scope = TensorArena.Scope();
        var y = f();
        if (!y.Shape.AsSpan().SequenceEqual(x.Shape))
            throw new InvalidOperationException($"block half produced {Tensor.ShapeString(y.Shape)}, expected {Tensor.ShapeString(x.Shape)}");
        if (norm == null)
        {
            System.Numerics.Tensors.TensorPrimitives.Add(x.Span, y.Span, dst.Span);
            return;
        }
        int cols = x.Shape[^1];
        Kernels.LayerNormKernel.AddLayerNormRows(x.Span, y.Span, norm.Weight.Span, norm.Bias.Span, dst.Span, normed.Span, x.Size / cols, cols, norm.Eps);
    }

    /// <summary>Patch embedding, prefix tokens and position embedding: the first block's input [B, N, D].</summary>
    private Tensor Embed(Tensor x, IModelHooks? hooks)
    {
        var c = Config;
        CheckInput(x);
        var xin = hooks?.Activation("patch_embed.proj", x) ?? x;
        var w = hooks?.Weight("patch_embed.proj", PatchWeight) ?? PatchWeight;
        var tokens = Ops.PatchEmbed(xin, w, PatchBias, c.PatchSize); // [B, Np, D]
        if (c.NumPrefixTokens > 0)
        {
            var prefix = DistToken != null ? Ops.Concat(new[] { ClsToken!, DistToken }, 1) : ClsToken!;
            tokens = Ops.PrependTokens(tokens, prefix);
        }
        return Ops.Add(tokens, PosEmbed);
    }

    /// <summary>Final norm, pooling and head(s) on block output [B, N, D].</summary>
    public Tensor ForwardHead(Tensor h, IModelHooks? hooks = null)
    {
        var c = Config;
        Tensor pooled, distPooled = null!;
        if (c.GlobalPool == "avg")
        {
            var patches = Ops.Narrow(h, 1, c.NumPrefixTokens, c.NumPatches);
            pooled = FcNorm!.Forward(Ops.Mean(patches, 1));
        }
        else
        {
            // LayerNorm works token by token, so norming only the pooled tokens gives the same values as norming
            // all of them and then selecting (a pass over [B, N, D] less).
            pooled = Norm.Forward(Ops.SelectToken(h, 0));
            if (c.Distilled) distPooled = Norm.Forward(Ops.SelectToken(h, 1));
        }
        var logits = Head.Forward(hooks?.Activation("head", pooled) ?? pooled, hooks?.Weight("head", Head.Weight));
        if (c.Distilled)
        {
            var d = HeadDist!.Forward(hooks?.Activation("head_dist", distPooled) ?? distPooled, hooks?.Weight("head_dist", HeadDist.Weight));
            logits = Ops.Scale(Ops.Add(logits, d), 0.5f);
        }
        return logits;
    }

    /// <summary>An independent copy (same config, copied parameters).</summary>
    public override VisionTransformer Clone()
    {
        var copy = new VisionTransformer(Config);
        copy.LoadStateDict(StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.Clone()), strict: true);
        return copy;
    }

    /// <summary>Multiply–accumulate count of one image's forward pass (linear layers, patch embedding, attention matmuls).</summary>
    public override long MacsPerImage()
    {
        var c = Config;
        long N = c.NumTokens, D = c.EmbedDim, Hd = c.MlpHidden;
        long patch = (long)c.NumPatches * D * c.InChans * c.PatchSize * c.PatchSize;
        long block = N * D * 3 * D + N * N * D * 2 + N * D * D + 2 * N * D * Hd;
        long head = D * c.NumClasses * (c.Distilled ? 2 : 1);
        return patch + c.Depth * block + head;
    }

    /// <summary>A module that only groups parameters/children under a name (timm's nesting).</summary>
    private sealed class ParamHolder : Module
    {
        public Tensor Add(string name, Tensor t) => RegisterParameter(name, t);
        public void AddModule(string name, Module m) => RegisterModule(name, m);
    }
}

/// <summary>One pre-norm transformer block.</summary>
internal sealed class Block : Module
{
    private readonly string _p;
    private readonly int _heads;
    private readonly float _scale;
    /// <summary>Pre-attention LayerNorm (norm1).</summary>
    public LayerNorm Norm1 { get; }
    /// <summary>Joint q, k, v projection [3D, D] (attn.qkv).</summary>
    public Linear Qkv { get; }
    /// <summary>Attention output projection [D, D] (attn.proj).</summary>
    public Linear Proj { get; }
    /// <summary>Pre-MLP LayerNorm (norm2).</summary>
    public LayerNorm Norm2 { get; }
    /// <summary>MLP expansion D → hidden (mlp.fc1).</summary>
    public Linear Fc1 { get; }
    /// <summary>MLP reduction hidden → D (mlp.fc2).</summary>
    public Linear Fc2 { get; }

    /// <summary>Builds block <paramref name="index"/> of <paramref name="c"/>, drawing weights from <paramref name="rng"/>.</summary>
    public Block(ViTConfig c, int index, Rng rng)
    {
        _p = $"blocks.{index}";
        _heads = c.NumHeads;
        _scale = 1f / MathF.Sqrt(c.HeadDim);
        int D = c.EmbedDim;
        Norm1 = RegisterModule("norm1", new LayerNorm(D, c.LayerNormEps));
        var attn = new Group();
        Qkv = attn.Add("qkv", new Linear(D, 3 * D, bias: true, rng));
        Proj = attn.Add("proj", new Linear(D, D, bias: true, rng));
        RegisterModule("attn", attn);
        Norm2 = RegisterModule("norm2", new LayerNorm(D, c.LayerNormEps));
        var mlp = new Group();
        Fc1 = mlp.Add("fc1", new Linear(D, c.MlpHidden, bias: true, rng));
        Fc2 = mlp.Add("fc2", new Linear(c.MlpHidden, D, bias: true, rng));
        RegisterModule("mlp", mlp);
    }

    /// <summary>x [B, N, D] → same shape: attention then MLP, each pre-norm with a residual.</summary>
    public Tensor Forward(Tensor x, IModelHooks? hooks) => ForwardMlp(ForwardAttention(x, hooks), hooks);

    /// <summary>The attention half of the block: x + attn(norm1(x)), tokens [B, N, D].</summary>
    public Tensor ForwardAttention(Tensor x, IModelHooks? hooks) =>
        FusesResidual(hooks) ? AttentionResidual(Norm1.Forward(x), x, 0) : Ops.Add(x, Attention(Norm1.Forward(x), hooks));

    /// <summary>The MLP half of the block: x + mlp(norm2(x)), tokens [B, N, D].</summary>
    public Tensor ForwardMlp(Tensor x, IModelHooks? hooks) =>
        FusesResidual(hooks) ? Ops.LinearResidual(Hidden(Norm2.Forward(x), null), Fc2.Weight, Fc2.Bias, x, frozenWeight: true)
            : Ops.Add(x, Mlp(Norm2.Forward(x), hooks));

    /// <summary>
    /// The block's output rows 0 .. keep−1 alone, [B, keep, D], for x [B, N, D] and normed = norm1(x): the attention
    /// over all N tokens, then proj, the residual and the MLP on the kept rows (VisionTransformer's header). Hooks must
    /// be null, observing ones that pass everything through, or row-local ones (VisionTransformer.HeadTokens decides).
    /// </summary>
    public Tensor ForwardRows(Tensor x, Tensor normed, int keep, IModelHooks? hooks) =>
        ForwardMlp(FusesResidual(hooks) ? AttentionResidual(normed, Ops.Narrow(x, 1, 0, keep), keep)
            : Ops.Add(Ops.Narrow(x, 1, 0, keep), Attention(normed, hooks, keep)), hooks);

    // Without hooks nothing can look at or change proj's or fc2's output before the residual is added to it.
    private static bool FusesResidual(IModelHooks? hooks) => hooks == null && !VisionTransformer.SeparateResidualAdds;

    // Without hooks: residual + proj(attention(normed)) with the residual added in proj's GEMM (Ops.LinearResidual: the
    // bits of the add after it). keepRows as in Attention.
    private Tensor AttentionResidual(Tensor normed, Tensor residual, int keepRows) =>
        Ops.LinearResidual(Ops.FusedAttention(Qkv.Forward(normed), _heads, _scale, keepRows), Proj.Weight, Proj.Bias, residual, frozenWeight: true);

    /// <summary>
    /// The attention module (qkv → q·kᵀ → softmax → ·v → proj) on normalised tokens [B, N, D].
    /// Without hooks nothing can look at or change q, k, v or the probabilities, so the middle runs as
    /// one fused op (Ops.FusedAttention, the same numbers within float rounding). Hooks that only observe
    /// (<see cref="IObservingHooks"/>, e.g. MimiQ synthesis tapping the logits) keep the fused op when they
    /// want no probabilities: the logits tap is a second output of the fused kernel
    /// (Ops.FusedAttentionWithLogits) and the per-head output tap a view of its output, both differentiable.
    /// Other hooks (quantized models, observers of activations) get every intermediate materialised and
    /// offered to them as before.
    /// </summary>
    /// <param name="x">normalised tokens [B, N, D].</param>
    /// <param name="hooks">quantization points and taps, or null.</param>
    /// <param name="keepRows">above 0: proj runs on the first keepRows tokens of the attention's output only, and the
    /// result is [B, keepRows, D] (ForwardRows; no hooks, observing ones that pass everything through, or row-local ones).</param>
    public Tensor Attention(Tensor x, IModelHooks? hooks, int keepRows = 0)
    {
        var p = _p;
        Tensor Rows(Tensor merged) => keepRows > 0 ? Ops.Narrow(merged, 1, 0, keepRows) : merged;
        if (keepRows > 0 && hooks != null && hooks is not IObservingHooks { PassesThrough: true } && hooks is not IRowLocalHooks)
            throw new ArgumentException("attention: rows can be dropped only without hooks, with observing ones or row-local ones", nameof(keepRows));
        if (hooks == null) // the kept rows alone: their queries against every key
            return Proj.Forward(Ops.FusedAttention(Qkv.Forward(x), _heads, _scale, keepRows));
        if (hooks is IObservingHooks { PassesThrough: true } && !hooks.WantsTap($"{p}.attn.probs"))
        {
            var fusedQkv = Qkv.Forward(x);
            Tensor fused; // [B, N, C]
            if (hooks.WantsTap($"{p}.attn.logits"))
            {
                (fused, var tapped) = Ops.FusedAttentionWithLogits(fusedQkv, _heads, _scale);
                hooks.Tap($"{p}.attn.logits", tapped);
            }
            else fused = Ops.FusedAttention(fusedQkv, _heads, _scale);
            if (hooks.WantsTap($"{p}.attn.out"))
            {
                int B = fused.Shape[0], N = fused.Shape[1], C = fused.Shape[2];
                hooks.Tap($"{p}.attn.out", Ops.Permute(Ops.Reshape(fused, B, N, _heads, C / _heads), 0, 2, 1, 3));
            }
            return Proj.Forward(Rows(fused));
        }
        var qkv = Qkv.Forward(Act(hooks, $"{p}.attn.qkv", x), hooks?.Weight($"{p}.attn.qkv", Qkv.Weight));
        var (q, k, v) = Ops.SplitQkv(qkv, _heads);
        q = Act(hooks, $"{p}.attn.q", q);
        k = Act(hooks, $"{p}.attn.k", k);
        v = Act(hooks, $"{p}.attn.v", v);
        if (!Autograd.IsEnabled && hooks is { } h && !h.WantsTap($"{p}.attn.logits") && !h.WantsTap($"{p}.attn.out"))
        {
            // No gradients (a quantized model's evaluation, calibration passes) with quantizers between the products: the
            // same numbers as the op graph below, from two kernel passes instead of six ops and their [B, H, N, N]
            // buffers (no logits, no scaled copy, no merge).
            var pr = Act(h, $"{p}.attn.probs", Ops.AttentionProbabilities(q, k, _scale));
            if (h.WantsTap($"{p}.attn.probs")) h.Tap($"{p}.attn.probs", pr);
            var heads = Rows(Ops.AttentionOutput(pr, v)); // [B, N, C], or its first keepRows tokens
            return Proj.Forward(Act(h, $"{p}.attn.proj", heads), h.Weight($"{p}.attn.proj", Proj.Weight));
        }
        var logits = Ops.MatMul(q, k, transB: true); // [B, H, N, N]
        if (hooks != null && hooks.WantsTap($"{p}.attn.logits")) hooks.Tap($"{p}.attn.logits", logits);
        var probs = Ops.Softmax(Ops.Scale(logits, _scale), -1);
        probs = Act(hooks, $"{p}.attn.probs", probs);
        if (hooks != null && hooks.WantsTap($"{p}.attn.probs")) hooks.Tap($"{p}.attn.probs", probs);
        var o = Ops.MatMul(probs, v); // [B, H, N, dh]
        if (hooks != null && hooks.WantsTap($"{p}.attn.out")) hooks.Tap($"{p}.attn.out", o);
        var merged = Rows(Ops.MergeHeads(o)); // [B, N, C], or its first keepRows tokens
        return Proj.Forward(Act(hooks, $"{p}.attn.proj", merged), hooks?.Weight($"{p}.attn.proj", Proj.Weight));
    }

    /// <summary>The MLP module (fc1 → GELU → fc2) on normalised tokens [B, N, D].</summary>
    public Tensor Mlp(Tensor x, IModelHooks? hooks)
    {
        var h = Hidden(x, hooks);
        return Fc2.Forward(Act(hooks, $"{_p}.mlp.fc2", h), hooks?.Weight($"{_p}.mlp.fc2", Fc2.Weight));
    }

    // GELU(fc1(x)), offered to the hooks' fc1 input, fc1 weight and activation tap.
    private Tensor Hidden(Tensor x, IModelHooks? hooks)
    {
        var p = _p;
        var h = Fc1.Forward(Act(hooks, $"{p}.mlp.fc1", x), hooks?.Weight($"{p}.mlp.fc1", Fc1.Weight));
        // Without gradients nothing else can hold fc1's fresh output: GELU overwrites it in place (same values,
        // one buffer and one memory stream less).
        if (hooks == null && !h.RequiresGrad && !Autograd.IsEnabled) Kernels.GeluKernel.Gelu(h.Span, h.Span);
        else h = Ops.Gelu(h);
        if (hooks != null && hooks.WantsTap($"{p}.mlp.act")) hooks.Tap($"{p}.mlp.act", h);
        return h;
    }

    private static Tensor Act(IModelHooks? hooks, string point, Tensor x) => hooks?.Activation(point, x) ?? x;

    private sealed class Group : Module
    {
        public T Add<T>(string name, T m) where T : Module => RegisterModule(name, m);
    }
}
