// The units ADFQ-ViT reconstructs one after another (ADFQ-ViT paper), and how each one reads the
// residual stream and runs. LayerNorms and residual adds stay outside the units, as in the spec.
//
// ViT/DeiT (stream h [B, N, D]):
//   unit            input                                      output                  stream after
//   patch_embed     the images [B, C, H, W] (float per plan)    conv tokens [B, Np, D]  h = prefix ⧺ out + pos
//   blocks.i.attn   norm1(h) [B, N, D]                          attention [B, N, D]     h += out
//   blocks.i.mlp    norm2(h) [B, N, D]                          MLP [B, N, D]           h += out
//   head            pooled features [B, P, D] (P = 1, or 2 with  logits [B, K]           —
//                   a distillation token): final norm of the
//                   class (and dist) token, or fc_norm of the
//                   mean patch token for avg pooling
// Swin (stream h [B, H, W, C], the stage's map):
//   patch_embed                 the images                      conv tokens [B, G², D]  h = patch_embed.norm(out) as [B, G, G, D]
//   layers.s.downsample         MergeInput(h) [B, H/2, W/2, 4C] reduction [.., 2C]      h = out
//   layers.s.blocks.b.attn      norm1(h)                        shifted-window attention branch [B, H, W, C]   h += out
//   layers.s.blocks.b.mlp       norm2(h)                        MLP branch               h += out
//   head                        mean over H, W of norm(h) [B, C] logits [B, K]           —
// The stream and head code mirrors the models' ForwardFeatures/ForwardHead (the tests check that the
// reconstructed head's outputs equal the whole quantized model's logits).
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Ptq;

/// <summary>What a reconstruction unit computes (see the table in the file header).</summary>
public enum AdfqUnitKind
{
    /// <summary>patch_embed: images [B, C, H, W] → patch tokens [B, Np, D].</summary>
    PatchEmbed,
    /// <summary>blocks.i.attn (Swin: layers.s.blocks.b.attn): normalised stream → attention output, added to the stream.</summary>
    Attention,
    /// <summary>blocks.i.mlp (Swin: layers.s.blocks.b.mlp): normalised stream → MLP output, added to the stream.</summary>
    Mlp,
    /// <summary>head: pooled features → logits [B, K].</summary>
    Head,
    /// <summary>Swin's layers.s.downsample: gathered, normalised 2×2 neighbours [B, H/2, W/2, 4C] → the next stage's map [.., 2C].</summary>
    PatchMerging,
}

/// <summary>
/// One reconstruction unit: its name, the weight layers it owns and the activation points whose steps it
/// learns. <paramref name="Block"/> is the block's index in forward order over the whole network (Swin:
/// counted across stages) for attention and MLP units, the stage for patch merging, −1 otherwise.
/// </summary>
public sealed record AdfqUnit(string Name, AdfqUnitKind Kind, int Block, IReadOnlyList<string> WeightLayers)
{
    /// <summary>Activation points whose quantizer steps this unit learns: the inputs of its own layers
    /// (never q/k/v or the post-softmax point).</summary>
    internal IReadOnlyList<string> InputPoints => WeightLayers;

    /// <summary>The post-softmax point of an attention unit (its probabilities feed the KL term); null otherwise.</summary>
    internal string? ProbsPoint => Kind == AdfqUnitKind.Attention ? $"{Name}.probs" : null;

    /// <summary>
    /// The units of a model in reconstruction order: patch embedding, then attention and MLP of every block
    /// (Swin: each stage's patch merging before its blocks), head. Throws ArgumentException for a config of
    /// another family.
    /// </summary>
    internal static IReadOnlyList<AdfqUnit> For(IModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var units = new List<AdfqUnit> { new("patch_embed", AdfqUnitKind.PatchEmbed, -1, new[] { "patch_embed.proj" }) };
        void AddBlock(string p, int index)
        {
            units.Add(new($"{p}.attn", AdfqUnitKind.Attention, index, new[] { $"{p}.attn.qkv", $"{p}.attn.proj" }));
            units.Add(new($"{p}.mlp", AdfqUnitKind.Mlp, index, new[] { $"{p}.mlp.fc1", $"{p}.mlp.fc2" }));
        }
        switch (config)
        {
            case ViTConfig c:
                for (int i = 0; i < c.Depth; i++) AddBlock($"blocks.{i}", i);
                units.Add(new("head", AdfqUnitKind.Head, -1, c.Distilled ? new[] { "head", "head_dist" } : new[] { "head" }));
                break;
            case SwinConfig c:
                int global = 0;
                for (int s = 0; s < c.NumStages; s++)
                {
                    if (s > 0) units.Add(new($"layers.{s}.downsample", AdfqUnitKind.PatchMerging, s, new[] { $"layers.{s}.downsample.reduction" }));
                    for (int b = 0; b < c.Depths[s]; b++) AddBlock($"layers.{s}.blocks.{b}", global++);
                }
                units.Add(new("head", AdfqUnitKind.Head, -1, new[] { "head.fc" }));
                break;
            default:
                throw new ArgumentException($"no reconstruction units for a {config.GetType().Name}", nameof(config));
        }
        return units;
    }

    /// <summary>The unit's input computed from the residual stream h (the images for the patch embedding).</summary>
    internal Tensor Input(VisionModel m, Tensor h)
    {
        if (Kind == AdfqUnitKind.PatchEmbed) return h;
        if (m is SwinTransformer s)
            return Kind switch
            {
                AdfqUnitKind.Attention => SwinBlockOf(s).Norm1.Forward(h),
                AdfqUnitKind.Mlp => SwinBlockOf(s).Norm2.Forward(h),
                AdfqUnitKind.PatchMerging => s.Stages[Block].MergeInput(h),
                _ => Ops.Mean(s.Norm.Forward(h), new[] { 1, 2 }),
            };
        var v = Vit(m);
        return Kind switch
        {
            AdfqUnitKind.Attention => v.Blocks[Block].Norm1.Forward(h),
            AdfqUnitKind.Mlp => v.Blocks[Block].Norm2.Forward(h),
            _ => Pool(v, h),
        };
    }

    /// <summary>The unit's output for input x, with the model's hooks at its quantization points (null: float).</summary>
    internal Tensor Forward(VisionModel m, IModelHooks? hooks, Tensor x)
    {
        if (Kind == AdfqUnitKind.PatchEmbed)
        {
            var (weight, bias, patch) = m is SwinTransformer sw ? (sw.PatchWeight, sw.PatchBias, sw.Config.PatchSize)
                : (Vit(m).PatchWeight, Vit(m).PatchBias, Vit(m).Config.PatchSize);
            var xin = hooks?.Activation("patch_embed.proj", x) ?? x;
            var w = hooks?.Weight("patch_embed.proj", weight) ?? weight;
            return Ops.PatchEmbed(xin, w, bias, patch);
        }
        if (m is SwinTransformer s)
            return Kind switch
            {
                AdfqUnitKind.Attention => SwinBlockOf(s).Attention(x, hooks),
                AdfqUnitKind.Mlp => SwinBlockOf(s).Mlp(x, hooks),
                AdfqUnitKind.PatchMerging => s.Stages[Block].Reduce(x, hooks),
                _ => s.Head.Forward(hooks?.Activation("head.fc", x) ?? x, hooks?.Weight("head.fc", s.Head.Weight)),
            };
        var v = Vit(m);
        switch (Kind)
        {
            case AdfqUnitKind.Attention: return v.Blocks[Block].Attention(x, hooks);
            case AdfqUnitKind.Mlp: return v.Blocks[Block].Mlp(x, hooks);
            default:
            {
                var cls = Ops.SelectToken(x, 0);
                var logits = v.Head.Forward(hooks?.Activation("head", cls) ?? cls, hooks?.Weight("head", v.Head.Weight));
                if (!v.Config.Distilled) return logits;
                var dist = Ops.SelectToken(x, 1);
                var d = v.HeadDist!.Forward(hooks?.Activation("head_dist", dist) ?? dist, hooks?.Weight("head_dist", v.HeadDist.Weight));
                return Ops.Scale(Ops.Add(logits, d), 0.5f);
            }
        }
    }

    /// <summary>
    /// The residual stream after this unit: the embedded tokens (Swin: the normalised patch map) after the
    /// patch embedding, the merged map after patch merging, h + out after a block's half; null after the head.
    /// </summary>
    internal Tensor? Advance(VisionModel m, Tensor h, Tensor output)
    {
        switch (Kind)
        {
            case AdfqUnitKind.PatchEmbed when m is SwinTransformer s:
            {
                var c = s.Config;
                return Ops.Reshape(s.PatchNorm.Forward(output), output.Shape[0], c.GridSize, c.GridSize, c.EmbedDim);
            }
            case AdfqUnitKind.PatchEmbed:
            {
                var v = Vit(m);
                var tokens = output;
                if (v.Config.NumPrefixTokens > 0)
                {
                    var prefix = v.DistToken != null ? Ops.Concat(new[] { v.ClsToken!, v.DistToken }, 1) : v.ClsToken!;
                    tokens = Ops.PrependTokens(tokens, prefix);
                }
                return Ops.Add(tokens, v.PosEmbed);
            }
            case AdfqUnitKind.PatchMerging:
                return output;
            case AdfqUnitKind.Attention:
            case AdfqUnitKind.Mlp:
                return Ops.Add(h, output);
            default:
                return null;
        }
    }

    /// <summary>
    /// Captured post-softmax probabilities with the images on the first axis, as the per-image caches need:
    /// ViT's [B, heads, N, N] unchanged; Swin's windows [B·nW, heads, M², M²] viewed as [B, nW·heads, M², M²]
    /// (windows of one image are consecutive, so the KL's rows are the same).
    /// </summary>
    internal static Tensor PerImage(Tensor probs, int batch)
    {
        if (probs.Shape[0] == batch) return probs;
        int n = probs.Shape[^1];
        return Ops.Reshape(probs, batch, probs.Size / (batch * n * n), n, n);
    }

    private SwinBlock SwinBlockOf(SwinTransformer s)
    {
        int i = Block;
        foreach (var stage in s.Stages)
        {
            if (i < stage.Blocks.Count) return stage.Blocks[i];
            i -= stage.Blocks.Count;
        }
        throw new InvalidOperationException($"{Name}: block {Block} is beyond the model's {s.Stages.Sum(t => t.Blocks.Count)} blocks");
    }

    private static VisionTransformer Vit(VisionModel m) => m as VisionTransformer
        ?? throw new ArgumentException($"no reconstruction units for a {m.GetType().Name}", nameof(m));

    /// <summary>ForwardHead's pooling as [B, P, D]: normed class (and dist) token, or fc_norm of the mean patch token.</summary>
    private static Tensor Pool(VisionTransformer m, Tensor h)
    {
        var c = m.Config;
        int B = h.Shape[0], D = h.Shape[2];
        if (c.GlobalPool == "avg")
            return Ops.Reshape(m.FcNorm!.Forward(Ops.Mean(Ops.Narrow(h, 1, c.NumPrefixTokens, c.NumPatches), 1)), B, 1, D);
        var n = m.Norm.Forward(h);
        var cls = Ops.SelectToken(n, 0);
        return c.Distilled ? Ops.Stack(new[] { cls, Ops.SelectToken(n, 1) }, 1) : Ops.Reshape(cls, B, 1, D);
    }
}

/// <summary>
/// Hooks that pass everything to an inner hooks object (or leave it unchanged) and keep the tensor that
/// reaches one activation point before its quantizer: the post-softmax probabilities of an attention unit.
/// </summary>
internal sealed class ProbsCapture : IModelHooks
{
    private readonly IModelHooks? _inner;
    private readonly string? _point;

    public ProbsCapture(IModelHooks? inner, string? point)
    {
        _inner = inner;
        _point = point;
    }

    /// <summary>The captured tensor of the last forward (null before one, or without a point).</summary>
    public Tensor? Captured { get; private set; }

    public Tensor Weight(string layer, Tensor w) => _inner?.Weight(layer, w) ?? w;

    public Tensor Activation(string point, Tensor x)
    {
        if (point == _point) Captured = x;
        return _inner?.Activation(point, x) ?? x;
    }

    public void Tap(string name, Tensor t) => _inner?.Tap(name, t);
    public bool WantsTap(string name) => _inner?.WantsTap(name) ?? false;
}
