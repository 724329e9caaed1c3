// The units ADFQ-ViT reconstructs one after another (ADFQ-ViT paper), and how each one reads the
// residual stream and runs. LayerNorms and residual adds stay outside the units, as in the spec.
//
//   unit            input (from the stream h [B, N, D])        output                  stream after
//   patch_embed     the images [B, C, H, W] (float per plan)    conv tokens [B, Np, D]  h = prefix ⧺ out + pos
//   blocks.i.attn   norm1(h) [B, N, D]                          attention [B, N, D]     h += out
//   blocks.i.mlp    norm2(h) [B, N, D]                          MLP [B, N, D]           h += out
//   head            pooled features [B, P, D] (P = 1, or 2 with  logits [B, K]           —
//                   a distillation token): final norm of the
//                   class (and dist) token, or fc_norm of the
//                   mean patch token for avg pooling
// The stream and head code mirrors VisionTransformer.ForwardFeatures/ForwardHead (the tests check that
// the reconstructed head's outputs equal the whole quantized model's logits).
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Ptq;

/// <summary>What a reconstruction unit computes (see the table in the file header).</summary>
public enum AdfqUnitKind
{
    /// <summary>patch_embed: images [B, C, H, W] → patch tokens [B, Np, D].</summary>
    PatchEmbed,
    /// <summary>blocks.i.attn: norm1(h) [B, N, D] → attention output [B, N, D], added to the stream.</summary>
    Attention,
    /// <summary>blocks.i.mlp: norm2(h) [B, N, D] → MLP output [B, N, D], added to the stream.</summary>
    Mlp,
    /// <summary>head: pooled features → logits [B, K].</summary>
    Head,
}

/// <summary>One reconstruction unit: its name, the weight layers it owns and the activation points whose steps it learns.</summary>
public sealed record AdfqUnit(string Name, AdfqUnitKind Kind, int Block, IReadOnlyList<string> WeightLayers)
{
    /// <summary>Activation points whose quantizer steps this unit learns: the inputs of its own layers
    /// (never q/k/v or the post-softmax point).</summary>
    public IReadOnlyList<string> InputPoints => WeightLayers;

    /// <summary>The post-softmax point of an attention unit (its probabilities feed the KL term); null otherwise.</summary>
    public string? ProbsPoint => Kind == AdfqUnitKind.Attention ? $"blocks.{Block}.attn.probs" : null;

    /// <summary>The units of a model in reconstruction order: patch embedding, attention and MLP of every block, head.</summary>
    public static IReadOnlyList<AdfqUnit> For(ViTConfig c)
    {
        var units = new List<AdfqUnit> { new("patch_embed", AdfqUnitKind.PatchEmbed, -1, new[] { "patch_embed.proj" }) };
        for (int i = 0; i < c.Depth; i++)
        {
            units.Add(new($"blocks.{i}.attn", AdfqUnitKind.Attention, i, new[] { $"blocks.{i}.attn.qkv", $"blocks.{i}.attn.proj" }));
            units.Add(new($"blocks.{i}.mlp", AdfqUnitKind.Mlp, i, new[] { $"blocks.{i}.mlp.fc1", $"blocks.{i}.mlp.fc2" }));
        }
        units.Add(new("head", AdfqUnitKind.Head, -1, c.Distilled ? new[] { "head", "head_dist" } : new[] { "head" }));
        return units;
    }

    /// <summary>The unit's input computed from the residual stream h (the images for the patch embedding).</summary>
    internal Tensor Input(VisionTransformer m, Tensor h) => Kind switch
    {
        AdfqUnitKind.PatchEmbed => h,
        AdfqUnitKind.Attention => m.Blocks[Block].Norm1.Forward(h),
        AdfqUnitKind.Mlp => m.Blocks[Block].Norm2.Forward(h),
        _ => Pool(m, h),
    };

    /// <summary>The unit's output for input x, with the model's hooks at its quantization points (null: float).</summary>
    internal Tensor Forward(VisionTransformer m, IModelHooks? hooks, Tensor x)
    {
        switch (Kind)
        {
            case AdfqUnitKind.PatchEmbed:
            {
                var xin = hooks?.Activation("patch_embed.proj", x) ?? x;
                var w = hooks?.Weight("patch_embed.proj", m.PatchWeight) ?? m.PatchWeight;
                return Ops.PatchEmbed(xin, w, m.PatchBias, m.Config.PatchSize);
            }
            case AdfqUnitKind.Attention: return m.Blocks[Block].Attention(x, hooks);
            case AdfqUnitKind.Mlp: return m.Blocks[Block].Mlp(x, hooks);
            default:
            {
                var cls = Ops.SelectToken(x, 0);
                var logits = m.Head.Forward(hooks?.Activation("head", cls) ?? cls, hooks?.Weight("head", m.Head.Weight));
                if (!m.Config.Distilled) return logits;
                var dist = Ops.SelectToken(x, 1);
                var d = m.HeadDist!.Forward(hooks?.Activation("head_dist", dist) ?? dist, hooks?.Weight("head_dist", m.HeadDist.Weight));
                return Ops.Scale(Ops.Add(logits, d), 0.5f);
            }
        }
    }

    /// <summary>The residual stream after this unit: tokens for the patch embedding, h + out for blocks; null after the head.</summary>
    internal Tensor? Advance(VisionTransformer m, Tensor h, Tensor output)
    {
        switch (Kind)
        {
            case AdfqUnitKind.PatchEmbed:
            {
                var tokens = output;
                if (m.Config.NumPrefixTokens > 0)
                {
                    var prefix = m.DistToken != null ? Ops.Concat(new[] { m.ClsToken!, m.DistToken }, 1) : m.ClsToken!;
                    tokens = Ops.PrependTokens(tokens, prefix);
                }
                return Ops.Add(tokens, m.PosEmbed);
            }
            case AdfqUnitKind.Attention:
            case AdfqUnitKind.Mlp:
                return Ops.Add(h, output);
            default:
                return null;
        }
    }

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
