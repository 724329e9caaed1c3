// Swin Transformer exactly as current timm's SwinTransformer (swin_transformer.py), written once with named
// quantization points and taps, like the ViT (ModelHooks.cs).
//
//   x [B, C, H, W] → patch_embed: conv P×P stride P → [B, G, G, D] (NHWC) → LayerNorm (patch_embed.norm)
//   → stages s = 0…S−1: (s > 0) PatchMerging: zero-pad odd maps, 2×2 neighbours gathered in timm's order
//     (reshape [B, H/2, 2, W/2, 2, C] → permute (0, 1, 3, 4, 2, 5) → [.., 4C]), LayerNorm(4C), Linear(4C → 2C,
//     no bias); then Depths[s] blocks
//   → norm (LayerNorm) → mean over H, W → head.fc.
//   Block (x [B, H, W, C]): x + WindowAttention(norm1(x)), then x + mlp(norm2(x)), where the attention half
//   rolls the map by −shift on both axes (odd blocks), zero-pads it to a multiple of the window M, splits
//   it into M×M windows [B·nW, M², C], runs multi-head attention inside each window with the relative
//   position bias (table [(2M−1)², heads] indexed by the pairwise offset) and, when shifted, the mask
//   (−100 between tokens from different regions of the rolled map), merges the windows, crops and rolls back.
//   Attention: qkv = Linear(x) split into heads; logits = q·kᵀ; probs = softmax(logits·dh^-½ + bias + mask);
//   out = probs·v, heads merged, proj.
// Point names: patch_embed.proj, layers.{s}.downsample.reduction, layers.{s}.blocks.{b}.attn.qkv / .q / .k /
// .v / .probs / .proj, layers.{s}.blocks.{b}.mlp.fc1 / .fc2, head.fc (weights and inputs); taps
// layers.{s}.blocks.{b}.attn.logits / .probs [B·nW, heads, M², M²], .attn.out, .mlp.act.
// The inputs of qkv and fc1 reach the hooks as tokens [B, N, C] (N = nW·M² window positions, or H·W), so
// per-token quantizers keep one grid per patch position of the stage as on a ViT (SwinBlock.Tokens).
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Models;

/// <summary>A Swin Transformer classifier with timm's parameter names and math.</summary>
public sealed class SwinTransformer : VisionModel
{
    /// <inheritdoc/>
    public override SwinConfig Config { get; }
    /// <summary>Patch embedding convolution weight patch_embed.proj.weight [D, C_in, P, P].</summary>
    public Tensor PatchWeight { get; }
    /// <summary>Patch embedding bias patch_embed.proj.bias [D].</summary>
    public Tensor PatchBias { get; }
    /// <summary>LayerNorm after the patch embedding (patch_embed.norm).</summary>
    public LayerNorm PatchNorm { get; }
    /// <summary>The stages in forward order (layers.{s}).</summary>
    internal IReadOnlyList<SwinStage> Stages { get; }
    /// <summary>Final LayerNorm before pooling (norm).</summary>
    public LayerNorm Norm { get; }
    /// <summary>Classifier on the mean-pooled last-stage features (head.fc), [classes, D_last].</summary>
    public Linear Head { get; }

    /// <summary>Builds the model with timm's initialisation (truncated normal 0.02, zero biases) drawn from the seed.</summary>
    public SwinTransformer(SwinConfig config, ulong seed = 0)
    {
        Config = config.Validated();
        var rng = new Rng(seed);
        int D = config.EmbedDim, P = config.PatchSize;
        var pe = new Group();
        var proj = new Group();
        PatchWeight = proj.Param("weight", Init.TruncNormal(rng, 0.02f, D, config.InChans, P, P));
        PatchBias = proj.Param("bias", Tensor.Zeros(D));
        pe.Child("proj", proj);
        PatchNorm = pe.Child("norm", new LayerNorm(D, config.LayerNormEps));
        RegisterModule("patch_embed", pe);
        var layers = new Group();
        var stages = new List<SwinStage>();
        for (int s = 0; s < config.NumStages; s++) stages.Add(layers.Child(s.ToString(), new SwinStage(config, s, rng)));
        RegisterModule("layers", layers);
        Stages = stages;
        Norm = RegisterModule("norm", new LayerNorm(config.StageDim(config.NumStages - 1), config.LayerNormEps));
        var head = new Group();
        Head = head.Child("fc", new Linear(config.StageDim(config.NumStages - 1), config.NumClasses, bias: true, rng));
        RegisterModule("head", head);
    }

    /// <summary>Logits [B, classes] for normalised images [B, C, H, W]. Throws ArgumentException on a wrong input shape.</summary>
    public override Tensor Forward(Tensor x, IModelHooks? hooks = null) => ForwardHead(ForwardFeatures(x, hooks), hooks);

    /// <inheritdoc/>
    private protected override long ActivationBytesPerImage
    {
        get
        {
            // Per stage the window-padded map's qkv or MLP hidden layer; the first stage's is the largest.
            var c = Config;
            long most = 0;
            for (int s = 0; s < c.NumStages; s++)
            {
                int m = c.StageWindow(s), side = (c.ActualResolution(s) + m - 1) / m * m;
                most = Math.Max(most, (long)side * side * Math.Max(3 * c.StageDim(s), c.MlpHidden(s)) * sizeof(float));
            }
            return most;
        }
    }

    /// <summary>The last stage's feature map before the final norm, [B, H, W, C].</summary>
    public Tensor ForwardFeatures(Tensor x, IModelHooks? hooks = null)
    {
        var c = Config;
        CheckInput(x);
        var xin = hooks?.Activation("patch_embed.proj", x) ?? x;
        var w = hooks?.Weight("patch_embed.proj", PatchWeight) ?? PatchWeight;
        var h = Ops.PatchEmbed(xin, w, PatchBias, c.PatchSize); // [B, G·G, D], row-major grid
        h = Ops.Reshape(PatchNorm.Forward(h), x.Shape[0], c.GridSize, c.GridSize, c.EmbedDim);
        foreach (var stage in Stages) h = stage.Forward(h, hooks);
        return h;
    }

    /// <summary>Final norm, global average pooling and head.fc on the feature map [B, H, W, C].</summary>
    public Tensor ForwardHead(Tensor h, IModelHooks? hooks = null)
    {
        var pooled = Ops.Mean(Norm.Forward(h), new[] { 1, 2 });
        return Head.Forward(hooks?.Activation("head.fc", pooled) ?? pooled, hooks?.Weight("head.fc", Head.Weight));
    }

    /// <summary>An independent copy (same config, copied parameters).</summary>
    public override SwinTransformer Clone()
    {
        var copy = new SwinTransformer(Config);
        copy.LoadStateDict(StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.Clone()), strict: true);
        return copy;
    }

    /// <summary>Multiply–accumulate count of one image's forward pass (linear layers, patch embedding, merging, window attention).</summary>
    public override long MacsPerImage()
    {
        var c = Config;
        long G = c.GridSize;
        long macs = G * G * c.EmbedDim * c.InChans * c.PatchSize * c.PatchSize;
        for (int s = 0; s < c.NumStages; s++)
        {
            long A = c.ActualResolution(s), D = c.StageDim(s), M = c.StageWindow(s), Hd = c.MlpHidden(s);
            if (s > 0) macs += A * A * 4 * (D / 2) * D;
            long padded = (A + M - 1) / M * M, tokens = padded * padded;
            macs += c.Depths[s] * (A * A * (3 * D * D + D * D + 2 * D * Hd) + tokens * M * M * D * 2);
        }
        return macs + (long)c.StageDim(c.NumStages - 1) * c.NumClasses;
    }

    /// <summary>A module that only groups parameters/children under a name (timm's nesting).</summary>
    internal sealed class Group : Module
    {
        public Tensor Param(string name, Tensor t) => RegisterParameter(name, t);
        public T Child<T>(string name, T m) where T : Module => RegisterModule(name, m);
    }
}

/// <summary>One Swin stage: optional 2×2 patch merging, then its blocks (timm's SwinTransformerStage).</summary>
internal sealed class SwinStage : Module
{
    private readonly string _p;
    /// <summary>LayerNorm over the 4C gathered channels of the patch merging (downsample.norm); null in stage 0.</summary>
    public LayerNorm? MergeNorm { get; }
    /// <summary>Patch merging reduction 4C → 2C without bias (downsample.reduction); null in stage 0.</summary>
    public Linear? Reduction { get; }
    /// <summary>The stage's blocks in forward order.</summary>
    public IReadOnlyList<SwinBlock> Blocks { get; }

    /// <summary>Builds stage <paramref name="s"/> of <paramref name="c"/> (patch merging when s &gt; 0), drawing weights from <paramref name="rng"/>.</summary>
    public SwinStage(SwinConfig c, int s, Rng rng)
    {
        _p = $"layers.{s}";
        if (s > 0)
        {
            int inDim = c.StageDim(s - 1);
            var ds = new SwinTransformer.Group();
            MergeNorm = ds.Child("norm", new LayerNorm(4 * inDim, c.LayerNormEps));
            Reduction = ds.Child("reduction", new Linear(4 * inDim, c.StageDim(s), bias: false, rng));
            RegisterModule("downsample", ds);
        }
        var blocks = new SwinTransformer.Group();
        var list = new List<SwinBlock>();
        for (int b = 0; b < c.Depths[s]; b++) list.Add(blocks.Child(b.ToString(), new SwinBlock(c, s, b, rng)));
        RegisterModule("blocks", blocks);
        Blocks = list;
    }

    /// <summary>x [B, H, W, C_in] → [B, H', W', C_s].</summary>
    public Tensor Forward(Tensor x, IModelHooks? hooks)
    {
        if (Reduction != null) x = Merge(x, hooks);
        foreach (var b in Blocks) x = b.Forward(x, hooks);
        return x;
    }

    /// <summary>timm's PatchMerging: pad odd maps with zeros, gather 2×2 neighbours, norm, reduce.</summary>
    private Tensor Merge(Tensor x, IModelHooks? hooks) => Reduce(MergeInput(x), hooks);

    /// <summary>
    /// The input of the merging reduction for the previous stage's map x [B, H, W, C]: zero-padded to even
    /// sides, 2×2 neighbours gathered in timm's order and normalised (downsample.norm), [B, H/2, W/2, 4C].
    /// Throws InvalidOperationException in stage 0, which has no merging.
    /// </summary>
    public Tensor MergeInput(Tensor x)
    {
        if (MergeNorm == null) throw new InvalidOperationException($"{_p} has no patch merging");
        x = SwinWindows.PadTo(x, 2);
        int B = x.Shape[0], H = x.Shape[1], W = x.Shape[2], C = x.Shape[3];
        var g = Ops.Permute(Ops.Reshape(x, B, H / 2, 2, W / 2, 2, C), 0, 1, 3, 4, 2, 5);
        return MergeNorm.Forward(Ops.Reshape(g, B, H / 2, W / 2, 4 * C));
    }

    /// <summary>
    /// The merging reduction (downsample.reduction, 4C → 2C) on <see cref="MergeInput"/>'s output, with the hooks
    /// at its point. Throws InvalidOperationException in stage 0.
    /// </summary>
    public Tensor Reduce(Tensor merged, IModelHooks? hooks)
    {
        if (Reduction == null) throw new InvalidOperationException($"{_p} has no patch merging");
        string name = $"{_p}.downsample.reduction";
        return Reduction.Forward(hooks?.Activation(name, merged) ?? merged, hooks?.Weight(name, Reduction.Weight));
    }
}

/// <summary>One Swin block: (shifted) window attention and MLP, pre-norm with residuals.</summary>
internal sealed class SwinBlock : Module
{
    private readonly string _p;
    private readonly int _heads, _window, _shift, _declared;
    private readonly float _scale;
    private readonly int[] _relIndex;      // [M²·M²] rows of the bias table, timm's relative_position_index
    private readonly Tensor? _mask;        // [nW, 1, M², M²] of the declared (padded) map, or null without shift

    /// <summary>Pre-attention LayerNorm (norm1).</summary>
    public LayerNorm Norm1 { get; }
    /// <summary>Relative position bias table [(2M−1)², heads] (attn.relative_position_bias_table).</summary>
    public Tensor RelativePositionBiasTable { get; }
    /// <summary>Joint q, k, v projection [3C, C] (attn.qkv).</summary>
    public Linear Qkv { get; }
    /// <summary>Attention output projection [C, C] (attn.proj).</summary>
    public Linear Proj { get; }
    /// <summary>Pre-MLP LayerNorm (norm2).</summary>
    public LayerNorm Norm2 { get; }
    /// <summary>MLP expansion C → hidden (mlp.fc1).</summary>
    public Linear Fc1 { get; }
    /// <summary>MLP reduction hidden → C (mlp.fc2).</summary>
    public Linear Fc2 { get; }

    /// <summary>Window side M of this block (after timm's shrink to small maps).</summary>
    public int Window => _window;
    /// <summary>Roll of the map before windowing: ⌊WindowSize/2⌋ on odd blocks of stages larger than the window, else 0.</summary>
    public int Shift => _shift;

    /// <summary>Builds block <paramref name="b"/> of stage <paramref name="s"/> of <paramref name="c"/>, drawing weights from <paramref name="rng"/>.</summary>
    public SwinBlock(SwinConfig c, int s, int b, Rng rng)
    {
        _p = $"layers.{s}.blocks.{b}";
        int D = c.StageDim(s);
        _heads = c.NumHeads[s];
        _scale = 1f / MathF.Sqrt(D / _heads);
        _window = c.StageWindow(s);
        _shift = c.BlockShift(s, b);
        _declared = c.DeclaredResolution(s);
        Norm1 = RegisterModule("norm1", new LayerNorm(D, c.LayerNormEps));
        var attn = new SwinTransformer.Group();
        RelativePositionBiasTable = attn.Param("relative_position_bias_table", Init.TruncNormal(rng, 0.02f, (2 * _window - 1) * (2 * _window - 1), _heads));
        Qkv = attn.Child("qkv", new Linear(D, 3 * D, bias: true, rng));
        Proj = attn.Child("proj", new Linear(D, D, bias: true, rng));
        RegisterModule("attn", attn);
        Norm2 = RegisterModule("norm2", new LayerNorm(D, c.LayerNormEps));
        var mlp = new SwinTransformer.Group();
        Fc1 = mlp.Child("fc1", new Linear(D, c.MlpHidden(s), bias: true, rng));
        Fc2 = mlp.Child("fc2", new Linear(c.MlpHidden(s), D, bias: true, rng));
        RegisterModule("mlp", mlp);
        _relIndex = SwinWindows.RelativePositionIndex(_window);
        _mask = _shift > 0 ? SwinWindows.ShiftMask(_declared, _window, _shift) : null;
    }

    /// <summary>x [B, H, W, C] → same shape.</summary>
    public Tensor Forward(Tensor x, IModelHooks? hooks) => ForwardMlp(ForwardAttention(x, hooks), hooks);

    /// <summary>x + shifted-window attention of norm1(x).</summary>
    public Tensor ForwardAttention(Tensor x, IModelHooks? hooks) =>
        SeparateWindowOps || VisionTransformer.SeparateResidualAdds
            ? Ops.Add(x, Attention(Norm1.Forward(x), hooks))
            : Attention(Norm1.Forward(x), hooks, x); // the residual added as the branch's rows come back from the windows

    /// <summary>x + mlp(norm2(x)).</summary>
    public Tensor ForwardMlp(Tensor x, IModelHooks? hooks) =>
        hooks == null && !VisionTransformer.SeparateResidualAdds
            ? Ops.LinearResidual(Hidden(Norm2.Forward(x), null), Fc2.Weight, Fc2.Bias, x, frozenWeight: true) // the add in fc2's GEMM
            : Ops.Add(x, Mlp(Norm2.Forward(x), hooks));

    /// <summary>
    /// The attention branch on the normalised map h [B, H, W, C]: roll by −shift, pad to the window, window
    /// attention, merge, crop, roll back; the same shape out (what the block adds to its residual stream).
    /// </summary>
    public Tensor Attention(Tensor h, IModelHooks? hooks) => Attention(h, hooks, null);

    // Attention, plus residual (not null: [B, H, W, C], with the row gathers only) added as the rows come back: the bits
    // of Add(residual, Attention(h, hooks)) in one pass (Ops.TakeRows' addend).
    private Tensor Attention(Tensor h, IModelHooks? hooks, Tensor? residual)
    {
        int B = h.Shape[0], H = h.Shape[1], W = h.Shape[2], M = _window;
        if (!SeparateWindowOps)
        {
            // The roll, pad and partition (and back: reverse, crop, roll) are row moves: one gather each way.
            int nW = (H + M - 1) / M * ((W + M - 1) / M), C = h.Shape[3];
            if (_mask != null && _mask.Shape[0] != nW)
                throw new ArgumentException($"{_p}: a {H}×{W} map has {nW} windows of {M}×{M}, the shifted-window mask was built for {_mask.Shape[0]}");
            var (part, back) = _layouts.GetOrAdd((H, W), key => SwinWindows.GatherIndices(key.H, key.W, M, _shift));
            var attended = WindowAttention(Ops.TakeRows(h, part, new[] { B * nW, M * M, C }), nW, hooks); // [B·nW, M², C]
            return Ops.TakeRows(attended, back, new[] { B, H, W, C }, residual);
        }
        if (_shift > 0) h = Ops.Roll(Ops.Roll(h, -_shift, 1), -_shift, 2);
        h = SwinWindows.PadTo(h, M);
        int Hp = h.Shape[1], Wp = h.Shape[2];
        if (_mask != null && _mask.Shape[0] != Hp / M * (Wp / M))
            throw new ArgumentException($"{_p}: a {H}×{W} map has {Hp / M * (Wp / M)} windows of {M}×{M}, the shifted-window mask was built for {_mask.Shape[0]}");
        var windows = SwinWindows.Partition(h, M);                 // [B·nW, M², C]
        var o = WindowAttention(windows, Hp / M * (Wp / M), hooks); // [B·nW, M², C]
        h = SwinWindows.Reverse(o, M, B, Hp, Wp);                 // [B, Hp, Wp, C]
        if (Hp != H) h = Ops.Narrow(h, 1, 0, H);
        if (Wp != W) h = Ops.Narrow(h, 2, 0, W);
        if (_shift > 0) h = Ops.Roll(Ops.Roll(h, _shift, 1), _shift, 2);
        return h;
    }

    /// <summary>The MLP branch (fc1 → GELU → fc2) on the normalised map n [B, H, W, C], the same shape out.</summary>
    public Tensor Mlp(Tensor n, IModelHooks? hooks) =>
        Fc2.Forward(Act(hooks, $"{_p}.mlp.fc2", Hidden(n, hooks)), hooks?.Weight($"{_p}.mlp.fc2", Fc2.Weight));

    // GELU(fc1(n)), offered to the hooks' fc1 input, fc1 weight and activation tap.
    private Tensor Hidden(Tensor n, IModelHooks? hooks)
    {
        var p = _p;
        var fc1In = Tokens(hooks, $"{p}.mlp.fc1", n, n.Shape[0]);
        var h = Fc1.Forward(fc1In, hooks?.Weight($"{p}.mlp.fc1", Fc1.Weight));
        // Without hooks or gradients nothing else holds fc1's fresh output: GELU overwrites it (as the ViT's MLP does).
        if (hooks == null && !h.RequiresGrad && !Autograd.IsEnabled) Kernels.GeluKernel.Gelu(h.Span, h.Span);
        else h = Ops.Gelu(h);
        if (hooks != null && hooks.WantsTap($"{p}.mlp.act")) hooks.Tap($"{p}.mlp.act", h);
        return h;
    }

    /// <summary>
    /// True: calls from this thread (and its parallel regions' workers) run the window attention as the op graph even
    /// without hooks (same-process A/B benchmarks and tests; the fused op gives the same numbers within float rounding).
    /// </summary>
    internal static bool UnfusedWindowAttention { get => _unfused.Value; set => _unfused.Value = value; }

    private static readonly AsyncLocal<bool> _unfused = new();

    /// <summary>
    /// True: calls from this thread (and its workers) roll, pad, partition, reverse and crop the map in ops of their own
    /// instead of the two gathers (same-process A/B benchmarks and tests; the same bits).
    /// </summary>
    internal static bool SeparateWindowOps { get => _separateWindowOps.Value; set => _separateWindowOps.Value = value; }

    private static readonly AsyncLocal<bool> _separateWindowOps = new();

    // One image's gather indices (SwinWindows.GatherIndices) by map size: one entry for a model's input size, and
    // concurrent chunks of a batch read it at once.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(int H, int W), (int[] Part, int[] Back)> _layouts = new();

    /// <summary>
    /// Window attention on windows [B·nW, M², C] (timm's WindowAttention.forward). Without hooks nothing can look at
    /// q, k, v or the probabilities, so the middle runs as one op (Ops.WindowAttention); hooks get the op graph with
    /// every intermediate offered to them.
    /// </summary>
    private Tensor WindowAttention(Tensor x, int windowsPerImage, IModelHooks? hooks)
    {
        var p = _p;
        int Bw = x.Shape[0], N = x.Shape[1];
        if (hooks == null && !UnfusedWindowAttention)
            return Proj.Forward(Ops.WindowAttention(Qkv.Forward(x), _heads, _scale, RelativePositionBias(N), _mask));
        var qkv = Qkv.Forward(Tokens(hooks, $"{p}.attn.qkv", x, Bw / windowsPerImage), hooks?.Weight($"{p}.attn.qkv", Qkv.Weight));
        var (q, k, v) = Ops.SplitQkv(qkv, _heads);                 // each [B·nW, heads, M², dh]
        q = Act(hooks, $"{p}.attn.q", q);
        k = Act(hooks, $"{p}.attn.k", k);
        v = Act(hooks, $"{p}.attn.v", v);
        var logits = Ops.MatMul(q, k, transB: true);               // [B·nW, heads, N, N]
        if (hooks != null && hooks.WantsTap($"{p}.attn.logits")) hooks.Tap($"{p}.attn.logits", logits);
        var scores = Ops.Add(Ops.Scale(logits, _scale), RelativePositionBias(N));
        if (_mask != null)
        {
            var perImage = Ops.Reshape(scores, Bw / windowsPerImage, windowsPerImage, _heads, N, N);
            scores = Ops.Reshape(Ops.Add(perImage, _mask), Bw, _heads, N, N);
        }
        var probs = Ops.Softmax(scores, -1);
        probs = Act(hooks, $"{p}.attn.probs", probs);
        if (hooks != null && hooks.WantsTap($"{p}.attn.probs")) hooks.Tap($"{p}.attn.probs", probs);
        var o = Ops.MatMul(probs, v);                              // [B·nW, heads, N, dh]
        if (hooks != null && hooks.WantsTap($"{p}.attn.out")) hooks.Tap($"{p}.attn.out", o);
        var merged = Ops.MergeHeads(o);
        return Proj.Forward(Act(hooks, $"{p}.attn.proj", merged), hooks?.Weight($"{p}.attn.proj", Proj.Weight));
    }

    // bias [heads, N, N] = table[relative_position_index] permuted (2, 0, 1), as timm's _get_rel_pos_bias.
    private Tensor RelativePositionBias(int n) =>
        Ops.Permute(Ops.Reshape(Ops.IndexSelect(RelativePositionBiasTable, 0, _relIndex), n, n, _heads), 2, 0, 1);

    private static Tensor Act(IModelHooks? hooks, string point, Tensor x) => hooks?.Activation(point, x) ?? x;

    /// <summary>
    /// The hooks at a post-LayerNorm point (qkv, fc1 input) see the image's tokens [B, N, C] — N = the
    /// stage's H·W patches, or nW·M² window positions of the rolled, padded map — so that a per-token
    /// quantizer (ADFQ-ViT's per-patch one) keeps one grid per patch position, as on a ViT, instead of
    /// sharing it over windows or map rows. The result comes back in x's shape.
    /// </summary>
    private static Tensor Tokens(IModelHooks? hooks, string point, Tensor x, int batch)
    {
        if (hooks == null) return x;
        int c = x.Shape[^1];
        var y = hooks.Activation(point, Ops.Reshape(x, batch, x.Size / (batch * c), c));
        return Ops.Reshape(y, x.Shape);
    }
}

/// <summary>Window partition/reverse, padding, relative position index and shift mask (timm's helpers).</summary>
internal static class SwinWindows
{
    /// <summary>
    /// One image's row patterns for Ops.TakeRows (repeated per image) that do, for a map H×W and windows of m×m shifted
    /// by s (0: none), what roll(−s, −s) → PadTo(m) → Partition(m) does (Part: window row → map row, −1 for a padded
    /// position) and what Reverse → crop to H×W → roll(s, s) does (Back: map row → window row), in timm's order of
    /// windows and positions.
    /// </summary>
    public static (int[] Part, int[] Back) GatherIndices(int h, int w, int m, int s)
    {
        int nWy = (h + m - 1) / m, nWx = (w + m - 1) / m, mm = m * m;
        var part = new int[nWy * nWx * mm];
        var back = new int[h * w];
        for (int wy = 0; wy < nWy; wy++)
            for (int wx = 0; wx < nWx; wx++)
                for (int py = 0; py < m; py++)
                    for (int px = 0; px < m; px++)
                    {
                        int y = wy * m + py, x = wx * m + px; // on the rolled, padded map
                        int row = (wy * nWx + wx) * mm + py * m + px;
                        if (y >= h || x >= w) { part[row] = -1; continue; }
                        // roll by −s: the rolled map's (y, x) is the map's ((y + s) mod h, (x + s) mod w)
                        int src = (y + s) % h * w + (x + s) % w;
                        part[row] = src;
                        back[src] = row;
                    }
        return (part, back);
    }

    /// <summary>Zero-pads x [B, H, W, C] at the bottom and right so H and W are multiples of m.</summary>
    public static Tensor PadTo(Tensor x, int m)
    {
        int B = x.Shape[0], H = x.Shape[1], W = x.Shape[2], C = x.Shape[3];
        int ph = (m - H % m) % m, pw = (m - W % m) % m;
        if (ph > 0) x = Ops.Concat(new[] { x, Tensor.Zeros(B, ph, W, C) }, 1);
        if (pw > 0) x = Ops.Concat(new[] { x, Tensor.Zeros(B, H + ph, pw, C) }, 2);
        return x;
    }

    /// <summary>x [B, H, W, C] → windows [B·(H/m)·(W/m), m², C], windows in row-major order per image.</summary>
    public static Tensor Partition(Tensor x, int m)
    {
        int B = x.Shape[0], H = x.Shape[1], W = x.Shape[2], C = x.Shape[3];
        var t = Ops.Permute(Ops.Reshape(x, B, H / m, m, W / m, m, C), 0, 1, 3, 2, 4, 5);
        return Ops.Reshape(t, B * (H / m) * (W / m), m * m, C);
    }

    /// <summary>windows [B·nW, m², C] → [B, H, W, C] (the inverse of <see cref="Partition"/>).</summary>
    public static Tensor Reverse(Tensor windows, int m, int B, int H, int W)
    {
        int C = windows.Shape[2];
        var t = Ops.Permute(Ops.Reshape(windows, B, H / m, W / m, m, m, C), 0, 1, 3, 2, 4, 5);
        return Ops.Reshape(t, B, H, W, C);
    }

    /// <summary>timm's relative_position_index for an m×m window, flattened [m²·m²].</summary>
    public static int[] RelativePositionIndex(int m)
    {
        int n = m * m;
        var idx = new int[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                int dh = i / m - j / m + m - 1, dw = i % m - j % m + m - 1;
                idx[i * n + j] = dh * (2 * m - 1) + dw;
            }
        return idx;
    }

    /// <summary>
    /// timm's shifted-window attention mask for a declared r×r map (padded up to the window): regions
    /// [0, −m), [−m, −shift), [−shift, end) on each axis get ids; pairs from different regions get −100.
    /// Shape [nW, 1, m², m²] so it broadcasts over heads.
    /// </summary>
    public static Tensor ShiftMask(int r, int m, int shift)
    {
        int P = (r + m - 1) / m * m, n = m * m, nw = P / m;
        int Region(int i) => i < P - m ? 0 : i < P - shift ? 1 : 2;
        var mask = new Tensor(nw * nw, 1, n, n);
        for (int wy = 0; wy < nw; wy++)
            for (int wx = 0; wx < nw; wx++)
            {
                int w = wy * nw + wx;
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < n; j++)
                    {
                        int ri = Region(wy * m + i / m) * 3 + Region(wx * m + i % m);
                        int rj = Region(wy * m + j / m) * 3 + Region(wx * m + j % m);
                        mask.Data[(w * n + i) * n + j] = ri == rj ? 0f : -100f;
                    }
            }
        return mask;
    }
}
