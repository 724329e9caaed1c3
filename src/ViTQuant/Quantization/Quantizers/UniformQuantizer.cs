// Uniform quantizer: symmetric (MimiQ weights) or asymmetric (baselines, ADFQ's q/k/v and proj inputs),
// per tensor, per output channel or per token, with the range from min–max, a percentile-MSE search or
// an Lp grid search (RangeSearch holds the grid rule and the searches, FakeQuant the fused kernel).
//
// Dynamic specs recompute min–max from every tensor Forward sees (no calibration; MimiQ's weights are
// re-quantized this way at every fine-tuning step; no gradient flows through the range itself).
// Learnable specs expose Δ as a tensor with LSQ's step gradient (ADFQ learns the per-tensor input steps).
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>Uniform fake quantization with calibrated (or dynamic, or learned) per-group step and zero point.</summary>
internal sealed class UniformQuantizer : Quantizer
{
    private readonly MinMaxObserver _minMax;
    private readonly ReservoirObserver? _sample;
    private Tensor? _scale; // [G]
    private float[]? _zero; // [G]

    /// <param name="spec">a Uniform spec (validated; bits outside 2–8 throw ViTQuantException).</param>
    /// <param name="seed">seed of the calibration sample (percentile and Lp searches).</param>
    /// <exception cref="ArgumentException">when spec.Kind is not Uniform.</exception>
    public UniformQuantizer(QuantSpec spec, ulong seed = 0) : base(spec)
    {
        if (Spec.Kind != QuantKind.Uniform) throw new ArgumentException($"UniformQuantizer needs a Uniform spec, got {Spec.Kind}", nameof(spec));
        (QMin, QMax) = RangeSearch.IntRange(Spec.Bits, Spec.Symmetric);
        _minMax = new MinMaxObserver(Spec.Granularity);
        if (Spec.Range != RangeMethod.MinMax) _sample = new ReservoirObserver(Spec.Granularity, Spec.SampleSize, seed);
        IsCalibrated = Spec.Dynamic;
    }

    /// <summary>Smallest integer level (−2^(b−1) symmetric, 0 asymmetric).</summary>
    public int QMin { get; }

    /// <summary>Largest integer level (2^(b−1) − 1 symmetric, 2^b − 1 asymmetric).</summary>
    public int QMax { get; }

    /// <summary>
    /// Number of calibrated groups: 0 before calibration; when dynamic, the groups of the last tensor
    /// Forward saw (0 before the first), whose grid <see cref="Params"/> then returns — so a frozen
    /// dynamic weight quantizer (QuantizedCheckpoint.Freeze runs Forward, then asks for the grid) has one.
    /// </summary>
    public int Groups => _zero?.Length ?? 0;

    /// <summary>The calibrated grid of one group. Throws InvalidOperationException before calibration.</summary>
    public UniformParams Params(int group)
    {
        if (_scale == null || _zero == null) throw new InvalidOperationException($"{Spec} quantizer has no calibrated grid");
        return new UniformParams(RangeSearch.SafeScale(_scale.Data[group]), _zero[group], QMin, QMax);
    }

    /// <summary>The step tensor [G] (learnable when Spec.Learnable). Null before calibration.</summary>
    public Tensor? Scale => _scale;

    /// <inheritdoc/>
    public override void Observe(Tensor x)
    {
        var layout = GroupLayout.For(Spec.Granularity, x.Shape, "calibration batch");
        _minMax.Observe(x.Span, layout);
        _sample?.Observe(x.Span, layout);
    }

    /// <summary>Fixes Δ and z per group. Throws InvalidOperationException when nothing was observed (a no-op when dynamic).</summary>
    public override void Calibrate()
    {
        if (Spec.Dynamic) return;
        if (_minMax.Groups == 0) throw new InvalidOperationException($"{Spec} quantizer calibrated before observing any batch");
        int groups = _minMax.Groups;
        var grids = new UniformParams[groups];
        float[] min = _minMax.Min.ToArray(), max = _minMax.Max.ToArray();
        Kernels.Parallelism.For(0, groups, g =>
        {
            float[] sample = _sample?.SampleFor(Spec.Range, g) ?? Array.Empty<float>();
            grids[g] = RangeSearch.Search(Spec.Range, sample, min[g], max[g], Spec.Bits, Spec.Symmetric, Spec.LpNorm);
        });
        FinishStatistics(_minMax, _sample);
        SetGrids(grids.Select(p => p.Scale).ToArray(), grids.Select(p => p.ZeroPoint).ToArray());
    }

    private void SetGrids(float[] scale, float[] zero)
    {
        var s = Tensor.FromArray(scale, scale.Length);
        _scale = QuantState.Assign(_scale, s, Spec.Learnable);
        _zero = zero;
        IsCalibrated = true;
    }

    /// <summary>
    /// Fake-quantizes x (same shape): straight-through gradient inside the grid, 0 outside; LSQ's step
    /// gradient into Scale when learnable. Throws InvalidOperationException before calibration and
    /// ViTQuantException when x's group count differs from the calibrated one.
    /// </summary>
    public override Tensor Forward(Tensor x)
    {
        EnsureCalibrated();
        var layout = GroupLayout.For(Spec.Granularity, x.Shape, "input");
        if (Spec.Dynamic) return ForwardDynamic(x, layout);
        if (layout.Groups != _zero!.Length)
            throw new ViTQuantException($"{Spec} quantizer was calibrated for {_zero.Length} group(s), got a tensor of shape {Tensor.ShapeString(x.Shape)} with {layout.Groups}");
        return FakeQuant.Uniform(x, layout, _scale!, _zero, QMin, QMax, float.PositiveInfinity, out _, "uniform_fake_quant");
    }

    private Tensor ForwardDynamic(Tensor x, GroupLayout layout)
    {
        var mm = new MinMaxObserver(Spec.Granularity);
        mm.Observe(x.Span, layout);
        var scale = new float[layout.Groups];
        var zero = new float[layout.Groups];
        for (int g = 0; g < layout.Groups; g++)
        {
            var p = RangeSearch.Search(RangeMethod.MinMax, default, mm.Min[g], mm.Max[g], Spec.Bits, Spec.Symmetric, Spec.LpNorm);
            scale[g] = p.Scale;
            zero[g] = p.ZeroPoint;
        }
        var s = Tensor.FromArray(scale, scale.Length);
        (_scale, _zero) = (s, zero); // remembered for Params / AffineGrid.Of; never read by the dynamic forward
        return FakeQuant.Uniform(x, layout, s, zero, QMin, QMax, float.PositiveInfinity, out _, "uniform_fake_quant");
    }

    /// <inheritdoc/>
    public override IEnumerable<Tensor> LearnableParameters() =>
        Spec.Learnable && _scale != null ? new[] { _scale } : Array.Empty<Tensor>();

    /// <summary>"scale" [G] and "zero_point" [G]; nothing when dynamic. Throws InvalidOperationException before calibration.</summary>
    public override IEnumerable<(string Name, Tensor Value)> State()
    {
        EnsureCalibrated();
        if (Spec.Dynamic) return Array.Empty<(string, Tensor)>();
        return new[] { ("scale", _scale!.Clone()), ("zero_point", QuantState.Vector(_zero)) };
    }

    /// <inheritdoc/>
    public override void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        if (Spec.Dynamic)
        {
            QuantState.ExpectNames(state, Spec);
            return;
        }
        QuantState.ExpectNames(state, Spec, "scale", "zero_point");
        var scale = state["scale"];
        if (scale.Size == 0) throw new ViTQuantException($"{Spec} quantizer state 'scale' is empty");
        var zero = QuantState.Get(state, Spec, "zero_point", scale.Size);
        QuantState.Get(state, Spec, "scale", scale.Size);
        foreach (float z in zero.Span)
            if (z != MathF.Round(z) || z < QMin || z > QMax)
                throw new ViTQuantException($"{Spec} quantizer state 'zero_point' holds {z}, not an integer in [{QMin}, {QMax}]");
        SetGrids(scale.ToArray(), zero.ToArray());
    }
}
