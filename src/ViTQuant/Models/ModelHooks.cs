// Named quantization points and attention taps.
//
// The ViT forward is written once and calls the hooks at every point a quantizer or an analysis may
// want (docs/ARCHITECTURE.md). With no hooks the calls are identities. Point names:
//   weights:      patch_embed.proj, blocks.{i}.attn.qkv, blocks.{i}.attn.proj, blocks.{i}.mlp.fc1,
//                 blocks.{i}.mlp.fc2, head, head_dist
//   activations:  the same layer names for the layer's input, plus blocks.{i}.attn.q / .k / .v
//                 (per-head q, k, v, shape [B, H, N, dh]) and blocks.{i}.attn.probs ([B, H, N, N])
//   taps:         blocks.{i}.attn.logits  q·kᵀ before scaling and softmax [B, H, N, N]
//                 blocks.{i}.attn.probs   softmax probabilities after the probs quantizer [B, H, N, N]
//                 blocks.{i}.attn.out     per-head attn·V [B, H, N, dh]
//                 blocks.{i}.mlp.act      GELU output [B, N, hidden]
namespace ViTQuant.Models;

using ViTQuant.Tensors;

/// <summary>Callbacks the model forward makes at its named quantization points and taps.</summary>
public interface IModelHooks
{
    /// <summary>Transforms the weight of the named layer before use (e.g. fake quantization). Must keep the shape.</summary>
    Tensor Weight(string layer, Tensor w) => w;

    /// <summary>Transforms an activation at the named point (a layer name means that layer's input).</summary>
    Tensor Activation(string point, Tensor x) => x;

    /// <summary>Observes an intermediate tensor. Keep a reference to use it (and its graph) after the forward.</summary>
    void Tap(string name, Tensor t) { }

    /// <summary>Whether the model should compute and report taps with this prefix (taps cost memory).</summary>
    bool WantsTap(string name) => false;
}

/// <summary>
/// Hooks that may only observe: when <see cref="PassesThrough"/> is true, Weight and Activation are identities,
/// so the model may run fused paths that offer no intermediate to transform, and makes only the taps asked for
/// (VisionTransformer.Attention).
/// </summary>
internal interface IObservingHooks : IModelHooks
{
    /// <summary>True when every weight and activation passes through unchanged.</summary>
    bool PassesThrough { get; }
}

/// <summary>
/// Hooks that can say, for the call about to run, whether everything they do past a block's attention works on each
/// token row alone, so the model may drop rows there that nothing reads (VisionTransformer: the last block for the
/// head's tokens). A quantized model's per-tensor fake quantizers do; its observers and per-token grids do not.
/// </summary>
internal interface IRowLocalHooks : IModelHooks
{
    /// <summary>True when the activation points attn.proj, mlp.fc1 and mlp.fc2 of block <paramref name="block"/> ("blocks.{i}") work row by row and no tap past its attention is wanted.</summary>
    bool RowLocalAfterAttention(string block);
}

/// <summary>
/// Hooks that can say, for the call about to run, that what they do to an image depends on that image alone and
/// that calls from several threads at once are safe: VisionModel.Infer then runs them in chunks of images, as it
/// runs a model without hooks. A calibrated quantized model's static fake quantizers do; observers and dynamic
/// ranges (taken over the whole tensor) do not.
/// </summary>
internal interface IImageLocalHooks : IModelHooks
{
    /// <summary>True when the hooks act on each image alone and may be called concurrently.</summary>
    bool ImageLocal { get; }
}

/// <summary>Records the taps whose names match a predicate, in forward order.</summary>
internal sealed class TapRecorder : IObservingHooks
{
    private readonly Func<string, bool> _want;
    private readonly IModelHooks? _inner;

    /// <summary>The wanted taps by name (a later tap of the same name replaces the earlier one). The tensors are kept with their graph.</summary>
    public Dictionary<string, Tensor> Taps { get; } = new();

    /// <param name="want">which tap names to keep.</param>
    /// <param name="inner">hooks to chain (e.g. a quantizer) for weights and activations.</param>
    public TapRecorder(Func<string, bool> want, IModelHooks? inner = null)
    {
        _want = want;
        _inner = inner;
    }

    /// <summary>True without inner hooks, or when they pass everything through too.</summary>
    public bool PassesThrough => _inner == null || _inner is IObservingHooks { PassesThrough: true };

    /// <summary>Passes the weight to the inner hooks (identity without them).</summary>
    public Tensor Weight(string layer, Tensor w) => _inner?.Weight(layer, w) ?? w;
    /// <summary>Passes the activation to the inner hooks (identity without them).</summary>
    public Tensor Activation(string point, Tensor x) => _inner?.Activation(point, x) ?? x;
    /// <summary>True for wanted taps and for those the inner hooks want.</summary>
    public bool WantsTap(string name) => _want(name) || (_inner?.WantsTap(name) ?? false);

    /// <summary>Keeps a wanted tap and forwards every tap to the inner hooks.</summary>
    public void Tap(string name, Tensor t)
    {
        if (_want(name)) Taps[name] = t;
        _inner?.Tap(name, t);
    }
}

/// <summary>
/// Records the input of chosen activation quantization points ("input.{point}") and, when a quantizer
/// sits there, its output ("quantized.{point}"), chaining another hooks object (a QuantizedModel) for
/// the quantization itself. Copies what it keeps, so it also works under <see cref="VisionModel.Infer"/>.
/// </summary>
internal sealed class PointRecorder : IModelHooks
{
    private readonly Func<string, bool> _want;
    private readonly IModelHooks? _inner;

    /// <param name="want">which activation points to record.</param>
    /// <param name="inner">hooks that quantize (null: a float model, only inputs are recorded).</param>
    public PointRecorder(Func<string, bool> want, IModelHooks? inner = null)
    {
        _want = want;
        _inner = inner;
    }

    /// <summary>Recorded tensors by name, in forward order.</summary>
    public List<(string Name, Tensor Value)> Recorded { get; } = new();

    /// <summary>Passes the weight to the inner hooks (identity without them).</summary>
    public Tensor Weight(string layer, Tensor w) => _inner?.Weight(layer, w) ?? w;
    /// <summary>Whether the inner hooks want the tap (false without them).</summary>
    public bool WantsTap(string name) => _inner?.WantsTap(name) ?? false;
    /// <summary>Forwards the tap to the inner hooks.</summary>
    public void Tap(string name, Tensor t) => _inner?.Tap(name, t);

    /// <summary>Applies the inner hooks and, at a wanted point, records copies of the input and (when changed) the quantized output.</summary>
    public Tensor Activation(string point, Tensor x)
    {
        var y = _inner?.Activation(point, x) ?? x;
        if (_want(point))
        {
            Recorded.Add(($"input.{point}", x.Detach().Clone()));
            if (!ReferenceEquals(y, x)) Recorded.Add(($"quantized.{point}", y.Detach().Clone()));
        }
        return y;
    }
}
