// A float model plus a quantization plan = a fake-quantized model. It is the IModelHooks object the
// ViT forward calls at its named points: weights go through their weight quantizers, activations
// through their activation quantizers (or are only observed while calibrating). Taps are forwarded
// to an optional observer (e.g. a TapRecorder collecting attention maps for distillation).
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>What a <see cref="QuantizedModel"/>'s hooks do to weights and activations.</summary>
public enum QuantMode
{
    /// <summary>Activations pass through unchanged and are observed; weights are quantized.</summary>
    Calibrate,
    /// <summary>Weights and activations are fake-quantized.</summary>
    Quantize,
    /// <summary>Everything passes through in float (the same forward as the plain model).</summary>
    Float,
    /// <summary>
    /// Weights are fake-quantized (AdaRound with its hard rounding), activations pass through unobserved:
    /// the stream the activation quantizers are calibrated on, for inspection.
    /// </summary>
    WeightsOnly,
}

/// <summary>
/// A float model plus a quantization plan: pass it as the hooks of the model's forward (or use <see cref="Forward"/>)
/// to run the model fake-quantized. Calibrate, then reconstruct or fine-tune, then freeze (QuantizedCheckpoint).
/// </summary>
public sealed class QuantizedModel : IModelHooks
{
    private readonly Dictionary<string, Quantizer> _weightQ = new();
    private readonly Dictionary<string, Quantizer> _actQ = new();
    private readonly Dictionary<string, Tensor> _weightCache = new();

    /// <summary>The network whose forward these hooks quantize (a copy owned by this object when made by the toolkit).</summary>
    public VisionModel Model { get; }

    /// <summary>Which quantizer sits at which point (validated).</summary>
    public QuantPlan Plan { get; }

    /// <summary>What the hooks do now; Calibrate until <see cref="Calibrate"/> finishes, then Quantize.</summary>
    public QuantMode Mode { get; set; } = QuantMode.Calibrate;

    /// <summary>
    /// Hooks that receive the model's taps (attention maps) while this model runs. Calibration and
    /// evaluation run <see cref="VisionTransformer.Infer"/>, which recycles each stage's tensors: an
    /// observer there must copy what it keeps.
    /// </summary>
    public IModelHooks? Observer { get; set; }

    /// <summary>
    /// Reuse fake-quantized weights between forward passes while gradients are off (PTQ evaluation).
    /// Call <see cref="InvalidateWeights"/> after changing weights or weight quantizers.
    /// </summary>
    public bool CacheWeights { get; set; } = true;

    /// <summary>Weight layer name (e.g. "blocks.0.attn.qkv") → its weight quantizer.</summary>
    public IReadOnlyDictionary<string, Quantizer> WeightQuantizers => _weightQ;

    /// <summary>Activation point name (e.g. "blocks.0.mlp.fc1") → its activation quantizer.</summary>
    public IReadOnlyDictionary<string, Quantizer> ActivationQuantizers => _actQ;

    /// <summary>Creates the plan's quantizers for every weight layer and activation point of the model.</summary>
    public QuantizedModel(VisionModel model, QuantPlan plan, Func<QuantSpec, bool, Quantizer>? factory = null)
    {
        Model = model;
        Plan = plan.Validated();
        _blockPrefixes = model.Config.BlockPrefixes();
        factory ??= static (spec, isWeight) => QuantizerFactory.Create(spec, isWeight);
        foreach (var l in QuantPlan.WeightLayers(model.Config))
            if (plan.WeightSpec(l) is QuantSpec s) _weightQ[l] = factory(s, true);
        foreach (var p in QuantPlan.ActivationPoints(model.Config))
            if (plan.ActivationSpec(p) is QuantSpec s) _actQ[p] = factory(s, false);
    }

    /// <summary>Logits of the fake-quantized model (or of the float model in Float mode).</summary>
    public Tensor Forward(Tensor x) => Model.Forward(x, this);

    /// <summary>
    /// Blocks whose activation points are observed in one pass over the calibration batches (0, the
    /// default: every point in a single pass). Exact statistics keep every observed value until the
    /// point is calibrated, 4 bytes each; smaller passes bound that memory to a few blocks at the cost of
    /// one float forward over the calibration set per pass (the points not in a block go with pass 0).
    /// </summary>
    public int CalibrationBlocksPerPass
    {
        get => _blocksPerPass;
        set => _blocksPerPass = value >= 0 ? value : throw new ViTQuantException($"blocks per calibration pass must be 0 (all) or positive, got {value}");
    }

    private int _blocksPerPass;
    private int _pass = -1; // the pass being observed (-1: every point)

    /// <summary>Number of passes <see cref="Calibrate"/> makes over the batches.</summary>
    public int CalibrationPasses => _blocksPerPass == 0 ? 1 : (_blockPrefixes.Count + _blocksPerPass - 1) / _blocksPerPass;

    private IReadOnlyList<string> _blockPrefixes = Array.Empty<string>();

    /// <summary>The pass of a point: its block's index (in forward order, across Swin's stages) / blocks per pass; 0 outside blocks.</summary>
    private int PassOf(string point)
    {
        if (_blocksPerPass == 0) return 0;
        for (int i = 0; i < _blockPrefixes.Count; i++)
        {
            var p = _blockPrefixes[i];
            if (point.Length > p.Length && point[p.Length] == '.' && point.StartsWith(p, StringComparison.Ordinal)) return i / _blocksPerPass;
        }
        return 0;
    }

    /// <summary>
    /// Observes every activation point over the batches (float activations; the weights are already on
    /// their grids), then fixes all activation ranges and switches to Quantize mode. With
    /// <see cref="CalibrationBlocksPerPass"/> set, the batches are enumerated once per pass (they must be
    /// re-enumerable) and each pass's points are calibrated, and their stored values freed, before the
    /// next. progress(images) after each batch, counting every pass.
    /// </summary>
    public void Calibrate(IEnumerable<Tensor> batches, Action<int>? progress = null)
    {
        Mode = QuantMode.Calibrate;
        int seen = 0, passes = CalibrationPasses;
        try
        {
            for (int pass = 0; pass < passes; pass++)
            {
                _pass = passes == 1 ? -1 : pass;
                int images = 0;
                using (Autograd.NoGrad())
                    foreach (var x in batches)
                    {
                        using (TensorArena.Scope()) Model.Infer(x, this); // quantizers copy what they observe, so stages can recycle
                        images += x.Shape[0];
                        seen += x.Shape[0];
                        progress?.Invoke(seen);
                    }
                if (images == 0) throw new ViTQuantException("calibration set is empty");
                foreach (var (point, q) in _actQ)
                    if (_pass < 0 || PassOf(point) == pass) q.Calibrate();
            }
        }
        finally { _pass = -1; }
        Mode = QuantMode.Quantize;
    }

    /// <summary>Drops the cached fake-quantized weights (after changing weights or weight quantizers).</summary>
    public void InvalidateWeights() => _weightCache.Clear();

    /// <summary>Weights are used as they are from now on (they already hold quantized values: Freeze, checkpoint load).</summary>
    public void DisableWeightQuantizers()
    {
        _weightsFrozen = true;
        _weightCache.Clear();
    }

    private bool _weightsFrozen;

    /// <summary>True after <see cref="DisableWeightQuantizers"/>: the model's weights are the quantized ones.</summary>
    public bool WeightsFrozen => _weightsFrozen;

    private readonly Dictionary<string, AffineGrid> _weightGrids = new();

    /// <summary>
    /// The integer grid of every frozen quantized weight (QuantizedCheckpoint.Freeze and Load record them):
    /// the layer's weight is exactly (k − z_c)·Δ_c for integer codes k, which is what the integer runtime needs.
    /// Empty before Freeze.
    /// </summary>
    public IReadOnlyDictionary<string, AffineGrid> WeightGrids => _weightGrids;

    internal void RecordWeightGrid(string layer, AffineGrid grid) => _weightGrids[layer] = grid;

    /// <summary>The hook for weight <paramref name="layer"/>: its fake-quantized value, or <paramref name="w"/> unchanged (Float mode, frozen weights, a layer the plan leaves in float).</summary>
    public Tensor Weight(string layer, Tensor w)
    {
        if (Mode == QuantMode.Float || _weightsFrozen || !_weightQ.TryGetValue(layer, out var q)) return w;
        if (!q.IsCalibrated)
        {
            q.Observe(w);
            q.Calibrate();
        }
        // Activations are calibrated with the weights on their grid; AdaRound's initial soft rounding
        // would reproduce the float weight, so its hard (nearest) rounding stands in until reconstruction.
        if (Mode is QuantMode.Calibrate or QuantMode.WeightsOnly && q is AdaRoundQuantizer a && !a.HardRounding) return a.ForwardHard(w);
        bool cacheable = CacheWeights && !Autograd.Needs(w) && !q.LearnableParameters().Any(p => p.RequiresGrad);
        if (!cacheable) return q.Forward(w);
        if (!_weightCache.TryGetValue(layer, out var cached))
        {
            using (Autograd.NoGrad()) cached = q.Forward(w.Detach()).Clone(); // Clone: outlives any arena scope
            _weightCache[layer] = cached;
        }
        return cached;
    }

    /// <summary>The hook for activation <paramref name="point"/>: observed while calibrating, fake-quantized in Quantize mode, else unchanged.</summary>
    public Tensor Activation(string point, Tensor x)
    {
        if (Mode is QuantMode.Float or QuantMode.WeightsOnly || !_actQ.TryGetValue(point, out var q)) return x;
        if (Mode == QuantMode.Calibrate)
        {
            if (_pass < 0 || PassOf(point) == _pass) q.Observe(x);
            return x;
        }
        return q.Forward(x);
    }

    /// <summary>Forwards a tap (an attention map, …) to <see cref="Observer"/>.</summary>
    public void Tap(string name, Tensor t) => Observer?.Tap(name, t);

    /// <summary>True when <see cref="Observer"/> wants tap <paramref name="name"/> (the forward then keeps the unfused graph).</summary>
    public bool WantsTap(string name) => Observer?.WantsTap(name) ?? false;

    /// <summary>Every learnable quantizer tensor (LSQ steps, AdaRound variables, learned Δ).</summary>
    public IEnumerable<(string Name, Tensor Param)> LearnableParameters()
    {
        foreach (var (l, q) in _weightQ)
        {
            int i = 0;
            foreach (var p in q.LearnableParameters()) yield return ($"quant.weight.{l}.{i++}", p);
        }
        foreach (var (a, q) in _actQ)
        {
            int i = 0;
            foreach (var p in q.LearnableParameters()) yield return ($"quant.act.{a}.{i++}", p);
        }
    }
}
