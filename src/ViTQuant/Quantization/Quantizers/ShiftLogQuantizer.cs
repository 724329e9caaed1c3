// ADFQ-ViT's Shift-Log quantizer for post-GELU activations (ADFQ-ViT paper).
//
//     x' = (x − m) + ε                 m = calibrated shift: the minimum observed (≈ −0.17 after GELU);
//                                      ε = 1e-6 keeps x' > 0 at x = m (FC2Quantizer's constant in the
//                                      published quant_layer.py: x − x.min() + 1e-6), float ops
//     x̂' = LogGrid(Δ, b, B)(x')        levels Δ·B^(−q), q ≥ 2^b (and x' ≤ 0) flushed to 0
//     x̂  = x̂' + c,  c = float(m − ε)   one float add, so the fold below is exact up to GEMM rounding
// B = √2 (the code, Spec.SqrtTwoBase) or 2 (the paper's text). m is fixed after calibration (*choice*
// of the spec; the code recomputes min(x) every forward). Δ starts from the range method on the
// shifted sample — ADFQ uses Percentile: the best of quantile(x', {0.999, 0.9999, 0.99999}) by MSE —
// and is learnable: ∂x̂/∂Δ = B^(−q) for non-flushed elements; ∂x̂/∂x is straight-through where the level
// is neither clamped nor flushed (LogGrid).
//
// Deployment: W·x̂ + b = W·x̂' + (b + c·W·1), so the shift folds into fc2's bias (FoldShiftIntoBias) and
// the integer kernel only sees the log-domain x̂'.
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>Shift-Log fake quantization: a calibrated shift, then a learnable-Δ log grid.</summary>
internal sealed class ShiftLogQuantizer : Quantizer
{
    /// <summary>ε added after the shift so the minimum itself maps to a positive value (1e-6, the published code's constant).</summary>
    public const float Epsilon = 1e-6f;

    private readonly MinMaxObserver _minMax = new(Granularity.PerTensor);
    private readonly ReservoirObserver _sample;
    private Tensor? _delta; // [1], learnable
    private float _shift;

    /// <param name="spec">a ShiftLog spec (validated).</param>
    /// <param name="seed">seed of the calibration sample.</param>
    /// <exception cref="ArgumentException">when spec.Kind is not ShiftLog.</exception>
    public ShiftLogQuantizer(QuantSpec spec, ulong seed = 0) : base(spec)
    {
        if (Spec.Kind != QuantKind.ShiftLog) throw new ArgumentException($"ShiftLogQuantizer needs a ShiftLog spec, got {Spec.Kind}", nameof(spec));
        _sample = new ReservoirObserver(Granularity.PerTensor, Spec.SampleSize, seed);
    }

    /// <summary>The calibrated shift m. Throws InvalidOperationException before calibration.</summary>
    public float Shift
    {
        get
        {
            EnsureCalibrated();
            return _shift;
        }
    }

    /// <summary>c = m − ε, the constant added back after dequantization (fold this into the bias).</summary>
    public float Offset => (float)((double)Shift - Epsilon);

    /// <summary>The learnable step Δ [1] (null before calibration).</summary>
    public Tensor? Delta => _delta;

    /// <inheritdoc/>
    public override void Observe(Tensor x)
    {
        var layout = GroupLayout.For(Granularity.PerTensor, x.Shape, "calibration batch");
        _minMax.Observe(x.Span, layout);
        _sample.Observe(x.Span, layout);
    }

    /// <summary>Fixes m and initialises Δ (file header). Throws InvalidOperationException when nothing was observed.</summary>
    public override void Calibrate()
    {
        if (_minMax.Groups == 0) throw new InvalidOperationException($"{Spec} quantizer calibrated before observing any batch");
        float m = _minMax.GlobalMin;
        if (!float.IsFinite(m)) m = 0f;
        var shifted = _sample.SampleFor(Spec.Range, 0); // x ↦ (x − m) + ε is monotone in float: a sorted sample stays sorted
        for (int i = 0; i < shifted.Length; i++) shifted[i] = shifted[i] - m + Epsilon;
        float maxShifted = _minMax.GlobalMax - m + Epsilon;
        FinishStatistics(_minMax, _sample);
        float delta = LogGrid.SearchDelta(Spec.Range, shifted, float.IsFinite(maxShifted) ? maxShifted : 0f, Spec.Bits, Spec.SqrtTwoBase, Spec.LpNorm);
        Set(m, delta);
    }

    private void Set(float shift, float delta)
    {
        _shift = shift;
        _delta = QuantState.Assign(_delta, Tensor.FromArray(new[] { RangeSearch.SafeScale(delta) }, 1), requiresGrad: true);
        IsCalibrated = true;
    }

    /// <summary>x̂ = x̂' + c (same shape), gradients for x and Δ. Throws InvalidOperationException before calibration.</summary>
    public override Tensor Forward(Tensor x)
    {
        EnsureCalibrated();
        return LogGrid.Apply(x, _delta!, Spec.Bits, Spec.SqrtTwoBase, _shift, Epsilon, Offset, "shift_log_fake_quant");
    }

    /// <summary>The shifted-domain x̂' (what the deployed kernel consumes; add Offset for x̂). No gradient is recorded.</summary>
    public Tensor ForwardShifted(Tensor x)
    {
        EnsureCalibrated();
        using var _ = Autograd.NoGrad();
        return LogGrid.Apply(x, _delta!, Spec.Bits, Spec.SqrtTwoBase, _shift, Epsilon, 0f, "shift_log_fake_quant");
    }

    /// <summary>
    /// The deployment bias b' = b + shift·(W·1) of the Linear that consumes x̂ (fc2), so that
    /// W·x̂' + b' = W·(x̂' + shift) + b. Pass <see cref="Offset"/> as shift. Sums run in double.
    /// Throws ViTQuantException when W is not [out, in] or b is not [out].
    /// </summary>
    public static Tensor FoldShiftIntoBias(Tensor fc2Weight, Tensor fc2Bias, float shift)
    {
        if (fc2Weight.Rank != 2) throw new ViTQuantException($"fc2 weight must be [out, in], got {Tensor.ShapeString(fc2Weight.Shape)}");
        int outF = fc2Weight.Shape[0], inF = fc2Weight.Shape[1];
        if (fc2Bias.Rank != 1 || fc2Bias.Size != outF)
            throw new ViTQuantException($"fc2 bias must be [{outF}] for weight {Tensor.ShapeString(fc2Weight.Shape)}, got {Tensor.ShapeString(fc2Bias.Shape)}");
        var b = new Tensor(outF);
        for (int o = 0; o < outF; o++)
        {
            double rowSum = 0;
            foreach (float w in fc2Weight.Data.AsSpan(o * inF, inF)) rowSum += w;
            b.Data[o] = (float)(fc2Bias.Data[o] + (double)shift * rowSum);
        }
        return b;
    }

    /// <inheritdoc/>
    public override IEnumerable<Tensor> LearnableParameters() => _delta != null ? new[] { _delta } : Array.Empty<Tensor>();

    /// <summary>"shift" [1] and "delta" [1]. Throws InvalidOperationException before calibration.</summary>
    public override IEnumerable<(string Name, Tensor Value)> State()
    {
        EnsureCalibrated();
        return new[] { ("shift", Tensor.FromArray(new[] { _shift }, 1)), ("delta", _delta!.Clone()) };
    }

    /// <inheritdoc/>
    public override void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        QuantState.ExpectNames(state, Spec, "shift", "delta");
        float shift = QuantState.Get(state, Spec, "shift", 1).Item();
        float delta = QuantState.Get(state, Spec, "delta", 1).Item();
        if (!(delta > 0)) throw new ViTQuantException($"{Spec} quantizer state 'delta' must be positive, got {delta}");
        Set(shift, delta);
    }
}
