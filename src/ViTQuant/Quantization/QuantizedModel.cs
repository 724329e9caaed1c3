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
public sealed class QuantizedModel : IModelHooks, IRowLocalHooks, IImageLocalHooks
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
    /// evaluation run <see cref="VisionModel.Infer"/>, which recycles each stage's tensors: an
    /// observer there must copy what it keeps.
    /// </summary>
    public IModelHooks? Observer { get; set; }

    /// <summary>
    /// Reuse fake-quantized weights between forward passes while gradients are off (PTQ evaluation).
    /// Call <see cref="InvalidateWeights"/> after changing weights or weight quantizers.
    /// </summary>
    public bool CacheWeights { get; set; } = true;

    /// <summary>Weight layer name (e.g. "blocks.0.attn.qkv") → its weight quantizer.</summary>
    internal IReadOnlyDictionary<string, Quantizer> WeightQuantizers => _weightQ;

    /// <summary>Activation point name (e.g. "blocks.0.mlp.fc1") → its activation quantizer.</summary>
    internal IReadOnlyDictionary<string, Quantizer> ActivationQuantizers => _actQ;

    /// <summary>Creates the plan's quantizers for every weight layer and activation point of the model.</summary>
    public QuantizedModel(VisionModel model, QuantPlan plan) : this(model, plan, null) { }

    /// <summary>As <see cref="QuantizedModel(VisionModel, QuantPlan)"/>, with the quantizers made by
    /// <paramref name="factory"/> (the default factory where null).</summary>
    internal QuantizedModel(VisionModel model, QuantPlan plan, Func<QuantSpec, bool, Quantizer>? factory)
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
    /// Blocks whose activation points are observed in one pass over the calibration batches; 0, the
    /// default, chooses it from <see cref="CalibrationMemoryBudget"/> (one pass when everything fits).
    /// Exact statistics keep every observed value until the point is calibrated, 4 bytes each (DeiT-Base
    /// on 256 images: about 1.9 GiB per block); smaller passes bound that memory to a few blocks at the cost
    /// of one float forward over the calibration set per pass (the points not in a block go with pass 0).
    /// Statistics, and so the calibrated model, do not depend on the number of passes.
    /// </summary>
    public int CalibrationBlocksPerPass
    {
        get => _blocksPerPass;
        set
        {
            _blocksPerPass = value >= 0 ? value : throw new ViTQuantException($"blocks per calibration pass must be 0 (automatic) or positive, got {value}");
            _plannedFor = null;
        }
    }

    private int _blocksPerPass;
    private int _autoBlocksPerPass; // what PlanCalibration chose when _blocksPerPass is 0 (0: one pass)
    private int _pass = -1; // the pass being observed (-1: every point)
    private Dictionary<string, long>? _counts; // values per point of the sizing forward (PlanCalibration)
    private object? _plannedFor; // the batches PlanCalibration last sized (their sizing forward is not repeated)

    /// <summary>
    /// Bytes the stored calibration values may take at once when <see cref="CalibrationBlocksPerPass"/>
    /// is 0. Default: a quarter of the memory this process may use (the GC's limit, which honours
    /// containers): measured on DeiT-Base, the process peaks near 1.7× the stored values (DeiT-Base: 9.6 GiB for 5.7 GiB) (the model, the
    /// forward's activations, and the sorted copy each point's search makes while it calibrates).
    /// </summary>
    public long CalibrationMemoryBudget
    {
        get => _memoryBudget;
        set
        {
            _memoryBudget = value > 0 ? value : throw new ViTQuantException($"the calibration memory budget must be positive, got {value} bytes");
            _plannedFor = null;
        }
    }

    private long _memoryBudget = Math.Max(1L << 30, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4);

    /// <summary>Bytes the stored values of the largest pass take, as estimated by <see cref="PlanCalibration"/> (0 before).</summary>
    public long CalibrationBytesPerPass { get; private set; }

    private int EffectiveBlocksPerPass => _blocksPerPass > 0 ? _blocksPerPass : _autoBlocksPerPass;

    /// <summary>Number of passes <see cref="Calibrate"/> makes over the batches (with the automatic choice: after <see cref="PlanCalibration"/>).</summary>
    public int CalibrationPasses => EffectiveBlocksPerPass == 0 ? 1 : (_blockPrefixes.Count + EffectiveBlocksPerPass - 1) / EffectiveBlocksPerPass;

    /// <summary>
    /// Sizes the calibration passes for these batches and returns their number: one forward of a single
    /// image counts the values every activation point observes, which, times the images, is what exact
    /// statistics store. With <see cref="CalibrationBlocksPerPass"/> 0 it picks the most blocks per pass
    /// whose values fit <see cref="CalibrationMemoryBudget"/> (at least one block, however large).
    /// <see cref="Calibrate"/> calls it; call it first to know the passes for a progress display (Calibrate then
    /// reuses the plan made for the same batches object instead of sizing again).
    /// </summary>
    public int PlanCalibration(IEnumerable<Tensor> batches)
    {
        if (ReferenceEquals(batches, _plannedFor)) return CalibrationPasses; // Calibrate after a caller's own plan
        long images = 0;
        Tensor? first = null;
        foreach (var b in batches) { first ??= b; images += b.Shape[0]; }
        if (first == null) throw new ViTQuantException("calibration set is empty");
        var mode = Mode;
        _counts = new Dictionary<string, long>();
        try
        {
            Mode = QuantMode.Calibrate;
            using (Autograd.NoGrad())
            using (TensorArena.Scope())
                Model.Infer(first.Narrow(0, 0, 1), this);
        }
        finally { Mode = mode; }
        var counts = _counts;
        _counts = null;
        // Bytes per block (index -1: points outside the blocks, observed with pass 0).
        var perBlock = new long[_blockPrefixes.Count];
        long outside = 0;
        foreach (var (point, n) in counts)
        {
            int b = BlockOf(point);
            if (b < 0) outside += 4 * n * images;
            else perBlock[b] += 4 * n * images;
        }
        int per = _blocksPerPass;
        if (per == 0)
        {
            per = _blockPrefixes.Count;
            // The largest window of `per` consecutive blocks must fit beside the outside points.
            while (per > 1 && outside + MaxWindow(perBlock, per) > _memoryBudget) per--;
            _autoBlocksPerPass = per >= _blockPrefixes.Count ? 0 : per;
        }
        CalibrationBytesPerPass = outside + MaxWindow(perBlock, Math.Max(1, Math.Min(per, perBlock.Length)));
        _plannedFor = batches;
        return CalibrationPasses;
    }

    private const long BigCalibration = 256L << 20;

    private static long MaxWindow(long[] perBlock, int per)
    {
        long best = 0;
        for (int s = 0; s < perBlock.Length; s += per)
        {
            long sum = 0;
            for (int i = s; i < Math.Min(perBlock.Length, s + per); i++) sum += perBlock[i];
            best = Math.Max(best, sum);
        }
        return best;
    }

    private IReadOnlyList<string> _blockPrefixes = Array.Empty<string>();

    /// <summary>The pass of a point: its block's index (in forward order, across Swin's stages) / blocks per pass; 0 outside blocks.</summary>
    private int PassOf(string point)
    {
        int per = EffectiveBlocksPerPass, b = BlockOf(point);
        return per == 0 || b < 0 ? 0 : b / per;
    }

    /// <summary>Index of the block a point belongs to, -1 outside the blocks.</summary>
    private int BlockOf(string point)
    {
        for (int i = 0; i < _blockPrefixes.Count; i++)
        {
            var p = _blockPrefixes[i];
            if (point.Length > p.Length && point[p.Length] == '.' && point.StartsWith(p, StringComparison.Ordinal)) return i;
        }
        return -1;
    }

    /// <summary>
    /// Observes every activation point over the batches (float activations; the weights are already on
    /// their grids), then fixes all activation ranges and switches to Quantize mode. The batches are
    /// enumerated once for <see cref="PlanCalibration"/> and once per pass (they must be re-enumerable);
    /// each pass's points are calibrated, and their stored values freed, before the next.
    /// progress(images) after each batch, counting every pass.
    /// </summary>
    public void Calibrate(IEnumerable<Tensor> batches, Action<int>? progress = null) => CalibrateReporting(batches, progress, null);

    /// <summary>
    /// As <see cref="Calibrate"/>; <paramref name="ranges"/> also reports
    /// (points done, points of this pass) while each pass's observed statistics become grids (the range
    /// searches, which on large models can take as long as the pass over the images).
    /// </summary>
    internal void CalibrateReporting(IEnumerable<Tensor> batches, Action<int>? progress, Action<int, int>? ranges)
    {
        int passes = PlanCalibration(batches), seen = 0;
        Mode = QuantMode.Calibrate;
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
                var points = _actQ.Where(kv => _pass < 0 || PassOf(kv.Key) == pass).ToList();
                for (int i = 0; i < points.Count; i++)
                {
                    points[i].Value.Calibrate();
                    // The point's stored values (up to ~600 MB on DeiT-Base) are garbage now. The GC
                    // would let such garbage pile up towards 90 % of the machine's memory before a full
                    // collection (measured: 14.0 GiB resident for 5.7 GiB of statistics); collecting here
                    // keeps the process near its live size. Skipped for small calibrations (no cost).
                    if (CalibrationBytesPerPass > BigCalibration) GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: false);
                    ranges?.Invoke(i + 1, points.Count);
                }
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
    internal IReadOnlyDictionary<string, AffineGrid> WeightGrids => _weightGrids;

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
        lock (_weightCache) // the workers of an evaluation in chunks of images (IImageLocalHooks) ask at once
        {
            if (!_weightCache.TryGetValue(layer, out var cached))
            {
                using (Autograd.NoGrad()) cached = q.Forward(w.Detach()).Clone(); // Clone: outlives any arena scope
                _weightCache[layer] = cached;
            }
            return cached;
        }
    }

    /// <summary>The hook for activation <paramref name="point"/>: observed while calibrating, fake-quantized in Quantize mode, else unchanged.</summary>
    public Tensor Activation(string point, Tensor x)
    {
        if (Mode is QuantMode.Float or QuantMode.WeightsOnly || !_actQ.TryGetValue(point, out var q)) return x;
        if (Mode == QuantMode.Calibrate)
        {
            if (_counts != null) _counts[point] = _counts.GetValueOrDefault(point) + x.Size;
            else if (_pass < 0 || PassOf(point) == _pass) q.Observe(x);
            return x;
        }
        return q.Forward(x);
    }

    /// <summary>
    /// IRowLocalHooks: true for an evaluation (no gradients) in Quantize or Float mode whose quantizers at the block's
    /// attn.proj, mlp.fc1 and mlp.fc2 are calibrated, static and per tensor (uniform, LSQ, log, shift-log), with no
    /// observer tap past the attention. Gradients keep every row, so training's numbers do not move with it.
    /// </summary>
    bool IRowLocalHooks.RowLocalAfterAttention(string block)
    {
        if (Autograd.IsEnabled || Mode is QuantMode.Calibrate or QuantMode.WeightsOnly) return false;
        if (Observer?.WantsTap($"{block}.mlp.act") == true) return false;
        return Mode == QuantMode.Float || QuantizersRowByRowAfterAttention(block);
    }

    /// <summary>
    /// IImageLocalHooks: true for a forward in Quantize or Float mode without an observer whose quantizers are all
    /// calibrated and static (no range taken over the whole tensor at run time): each image's result then depends on
    /// that image alone, and nothing is written but the weight cache (under its lock) and the per-patch quantizers'
    /// outlier counts (atomic). VisionModel.Infer then evaluates in chunks of images, with the same logits.
    /// </summary>
    bool IImageLocalHooks.ImageLocal =>
        Mode is QuantMode.Quantize or QuantMode.Float && Observer == null
        && (_weightsFrozen || _weightQ.Values.All(q => q.IsCalibrated)) // frozen: a loaded checkpoint's weights are on their grid
        && _actQ.Values.All(q => q.IsCalibrated && q is not UniformQuantizer { Spec.Dynamic: true });

    /// <summary>
    /// True when every activation quantizer past block <paramref name="block"/>'s attention (at attn.proj, mlp.fc1 and
    /// mlp.fc2) is calibrated and works row by row (<see cref="WorksRowByRow"/>): what the model's narrowed last
    /// block (VisionTransformer's header) and the ONNX export's need of the plan.
    /// </summary>
    internal bool QuantizersRowByRowAfterAttention(string block)
    {
        foreach (var layer in new[] { "attn.proj", "mlp.fc1", "mlp.fc2" })
            if (_actQ.TryGetValue($"{block}.{layer}", out var q) && !(q.IsCalibrated && WorksRowByRow(q))) return false;
        return true;
    }

    /// <summary>
    /// True for an activation quantizer whose output row depends on its input row alone: static per-tensor grids
    /// (uniform, LSQ, log, shift-log). Per-token grids (their parameters are per token position, ADFQ's per-patch one
    /// too) and dynamic ranges (from the whole tensor) are not.
    /// </summary>
    internal static bool WorksRowByRow(Quantizer q) => q switch
    {
        UniformQuantizer u => !u.Spec.Dynamic && u.Spec.Granularity == Granularity.PerTensor,
        LsqQuantizer l => l.Spec.Granularity == Granularity.PerTensor,
        LogQuantizer or ShiftLogQuantizer => true,
        _ => false,
    };

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
