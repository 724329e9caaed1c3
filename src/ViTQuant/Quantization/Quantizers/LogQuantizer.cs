// Log2 / log√2 quantizer for post-softmax probabilities in [0, 1] (RepQ-ViT's log√2, ADFQ §4):
// levels Δ·2^(−q) or Δ·2^(−q/2), q ∈ [0, 2^b − 1], smaller values flushed to 0 (LogGrid has the rule).
// Δ is calibrated once: MinMax → the largest observed value (≈ 1 for softmax), Percentile / LpSearch →
// the searches of LogGrid.SearchDelta on the observed sample. Not learnable (ADFQ keeps it fixed).
// The gradient to x is straight-through where the level is not clamped or flushed.
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>Per-tensor logarithmic fake quantization (base 2 or √2) with a calibrated top level Δ.</summary>
internal sealed class LogQuantizer : Quantizer
{
    private readonly MinMaxObserver _minMax = new(Granularity.PerTensor);
    private readonly ReservoirObserver? _sample;
    private Tensor? _delta; // [1]

    /// <param name="spec">a Log2 or LogSqrt2 spec (validated: per tensor).</param>
    /// <param name="seed">seed of the calibration sample (searching range methods).</param>
    /// <exception cref="ArgumentException">when spec.Kind is not Log2 or LogSqrt2.</exception>
    public LogQuantizer(QuantSpec spec, ulong seed = 0) : base(spec)
    {
        if (Spec.Kind is not (QuantKind.Log2 or QuantKind.LogSqrt2)) throw new ArgumentException($"LogQuantizer needs a Log2 or LogSqrt2 spec, got {Spec.Kind}", nameof(spec));
        if (Spec.Range != RangeMethod.MinMax) _sample = new ReservoirObserver(Granularity.PerTensor, Spec.SampleSize, seed);
    }

    /// <summary>True for base √2 (LogSqrt2).</summary>
    public bool SqrtTwoBase => Spec.Kind == QuantKind.LogSqrt2;

    /// <summary>The calibrated top level Δ. Throws InvalidOperationException before calibration.</summary>
    public float Delta
    {
        get
        {
            EnsureCalibrated();
            return _delta!.Item();
        }
    }

    /// <summary>The calibrated grid (thresholds and values). Throws InvalidOperationException before calibration.</summary>
    public LogGrid Grid => new(Delta, Spec.Bits, SqrtTwoBase);

    /// <inheritdoc/>
    public override void Observe(Tensor x)
    {
        var layout = GroupLayout.For(Granularity.PerTensor, x.Shape, "calibration batch");
        _minMax.Observe(x.Span, layout);
        _sample?.Observe(x.Span, layout);
    }

    /// <summary>Fixes Δ (file header). Throws InvalidOperationException when nothing was observed.</summary>
    public override void Calibrate()
    {
        if (_minMax.Groups == 0) throw new InvalidOperationException($"{Spec} quantizer calibrated before observing any batch");
        float max = _minMax.GlobalMax;
        float[] sample = _sample?.SampleFor(Spec.Range, 0) ?? Array.Empty<float>();
        FinishStatistics(_minMax, _sample);
        SetDelta(LogGrid.SearchDelta(Spec.Range, sample, float.IsFinite(max) ? max : 0f, Spec.Bits, SqrtTwoBase, Spec.LpNorm));
    }

    private void SetDelta(float delta)
    {
        _delta = Tensor.FromArray(new[] { RangeSearch.SafeScale(delta) }, 1);
        IsCalibrated = true;
    }

    /// <summary>Fake-quantizes x (same shape; values ≤ 0 become 0). Throws InvalidOperationException before calibration.</summary>
    public override Tensor Forward(Tensor x)
    {
        EnsureCalibrated();
        return LogGrid.Apply(x, _delta!, Spec.Bits, SqrtTwoBase, 0f, 0f, 0f, "log_fake_quant");
    }

    /// <summary>"delta" [1]. Throws InvalidOperationException before calibration.</summary>
    public override IEnumerable<(string Name, Tensor Value)> State()
    {
        EnsureCalibrated();
        return new[] { ("delta", _delta!.Clone()) };
    }

    /// <inheritdoc/>
    public override void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        QuantState.ExpectNames(state, Spec, "delta");
        float delta = QuantState.Get(state, Spec, "delta", 1).Item();
        if (!(delta > 0)) throw new ViTQuantException($"{Spec} quantizer state 'delta' must be positive, got {delta}");
        SetDelta(delta);
    }
}
