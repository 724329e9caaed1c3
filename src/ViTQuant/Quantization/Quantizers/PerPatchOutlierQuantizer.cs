// ADFQ-ViT's per-patch outlier-aware quantizer for post-LayerNorm activations (ADFQ-ViT paper).
//
// Input [..., N, C]: one (Δ_t, z_t) per token position t, shared over the batch and the channels.
//     M  = |x| > α                      recomputed every forward (α = Spec.OutlierThreshold)
//     x̂  = (clamp(round(x/Δ_t) + z_t, 0, 2^b − 1) − z_t)·Δ_t   for inliers (RangeSearch's rule)
//     x̂[M] = x[M]                      outliers pass through bit-exactly
// Calibration: outliers are set to 0 in the observed values (the inlier distribution is what the grid
// must cover); per token the range method picks the grid on ALL of that token's values over the
// calibration set (the published torch.quantile over x[:, t, :]; QuantSpec.SampleSize opts into a
// sample) — ADFQ uses
// Percentile: (l, u) = (quantile(x_t, 1 − p), quantile(x_t, p)) over p ∈ {0.999, 0.9999, 0.99999}
// by the MSE of the fake-quantized slice, Δ_t = (u − l)/(2^b − 1), z_t = round(−l/Δ_t) (the range is
// widened to contain 0 as everywhere in RangeSearch; zeroed outliers keep 0 inside it anyway).
// Learnable: Δ_t (LSQ's step gradient on inliers: round(x/Δ) − x/Δ inside, clamp(r) − z outside), not
// z_t. Gradient to x: 1 for outliers and for inliers inside the grid, 0 for clamped inliers.
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>Per-token asymmetric fake quantization that keeps |x| &gt; α in float.</summary>
internal sealed class PerPatchOutlierQuantizer : Quantizer, IReportsOutliers
{
    private readonly MinMaxObserver _minMax = new(Granularity.PerToken);
    private readonly ReservoirObserver? _sample;
    private Tensor? _scale; // [N], learnable
    private float[]? _zero; // [N]
    private long _outliersTotal, _elementsTotal;

    /// <param name="spec">a PerPatchOutlier spec (validated: per token, positive threshold).</param>
    /// <param name="seed">seed of the per-token calibration samples.</param>
    /// <exception cref="ArgumentException">when spec.Kind is not PerPatchOutlier.</exception>
    public PerPatchOutlierQuantizer(QuantSpec spec, ulong seed = 0) : base(spec)
    {
        if (Spec.Kind != QuantKind.PerPatchOutlier) throw new ArgumentException($"PerPatchOutlierQuantizer needs a PerPatchOutlier spec, got {Spec.Kind}", nameof(spec));
        (QMin, QMax) = RangeSearch.IntRange(Spec.Bits, Spec.Symmetric);
        if (Spec.Range != RangeMethod.MinMax) _sample = new ReservoirObserver(Granularity.PerToken, Spec.SampleSize, seed);
    }

    /// <summary>Lowest integer code of the grid.</summary>
    public int QMin { get; }

    /// <summary>Highest integer code of the grid.</summary>
    public int QMax { get; }

    /// <summary>The outlier threshold α.</summary>
    public float Threshold => Spec.OutlierThreshold;

    /// <summary>Fraction of elements of the last Forward that were outliers (0 before any Forward; one chunk's, when an evaluation runs in chunks of images).</summary>
    public double OutlierFraction { get; private set; }

    /// <summary>Fraction of outliers over every Forward since construction (or the last ResetOutlierStatistics).</summary>
    public double CumulativeOutlierFraction => _elementsTotal == 0 ? 0 : (double)_outliersTotal / _elementsTotal;

    /// <summary>Clears the outlier counters.</summary>
    public void ResetOutlierStatistics()
    {
        _outliersTotal = _elementsTotal = 0;
        OutlierFraction = 0;
    }

    /// <summary>The learnable per-token steps Δ_t [N] (null before calibration).</summary>
    public Tensor? Scale => _scale;

    /// <summary>The grid of token t. Throws InvalidOperationException before calibration.</summary>
    public UniformParams Params(int token)
    {
        EnsureCalibrated();
        return new UniformParams(RangeSearch.SafeScale(_scale!.Data[token]), _zero![token], QMin, QMax);
    }

    /// <summary>Adds a batch [..., N, C] with its outliers set to 0. Throws ViTQuantException when N differs between batches.</summary>
    public override void Observe(Tensor x)
    {
        var layout = GroupLayout.For(Granularity.PerToken, x.Shape, "calibration batch");
        var inliers = x.Span.ToArray();
        float a = Spec.OutlierThreshold;
        for (int i = 0; i < inliers.Length; i++)
            if (MathF.Abs(inliers[i]) > a) inliers[i] = 0f;
        _minMax.Observe(inliers, layout);
        _sample?.Observe(inliers, layout);
    }

    /// <summary>Fixes (Δ_t, z_t) for every token (file header). Throws InvalidOperationException when nothing was observed.</summary>
    public override void Calibrate()
    {
        if (_minMax.Groups == 0) throw new InvalidOperationException($"{Spec} quantizer calibrated before observing any batch");
        int n = _minMax.Groups;
        var grids = new UniformParams[n];
        float[] min = _minMax.Min.ToArray(), max = _minMax.Max.ToArray();
        Kernels.Parallelism.For(0, n, t =>
        {
            float[] sample = _sample?.SampleFor(Spec.Range, t) ?? Array.Empty<float>();
            grids[t] = RangeSearch.Search(Spec.Range, sample, min[t], max[t], Spec.Bits, Spec.Symmetric, Spec.LpNorm);
        });
        FinishStatistics(_minMax, _sample);
        Set(grids.Select(g => g.Scale).ToArray(), grids.Select(g => g.ZeroPoint).ToArray());
    }

    private void Set(float[] scale, float[] zero)
    {
        _scale = QuantState.Assign(_scale, Tensor.FromArray(scale, scale.Length), requiresGrad: true);
        _zero = zero;
        IsCalibrated = true;
    }

    /// <summary>
    /// Fake-quantizes the inliers of x [..., N, C] per token and passes outliers through; updates the
    /// outlier fractions. Throws InvalidOperationException before calibration and ViTQuantException when
    /// x is not [..., N, C] with the calibrated N.
    /// </summary>
    public override Tensor Forward(Tensor x)
    {
        EnsureCalibrated();
        var layout = GroupLayout.For(Granularity.PerToken, x.Shape, "input");
        if (layout.Groups != _zero!.Length)
            throw new ViTQuantException($"{Spec} quantizer was calibrated for {_zero.Length} token(s), got a tensor of shape {Tensor.ShapeString(x.Shape)}");
        var y = FakeQuant.Uniform(x, layout, _scale!, _zero, QMin, QMax, Spec.OutlierThreshold, out long outliers, "per_patch_outlier_fake_quant");
        OutlierFraction = (double)outliers / x.Size;
        Interlocked.Add(ref _outliersTotal, outliers); // an evaluation in chunks of images calls from several workers
        Interlocked.Add(ref _elementsTotal, x.Size);
        return y;
    }

    /// <inheritdoc/>
    public override IEnumerable<Tensor> LearnableParameters() => _scale != null ? new[] { _scale } : Array.Empty<Tensor>();

    /// <summary>"scale" [N] and "zero_point" [N]. Throws InvalidOperationException before calibration.</summary>
    public override IEnumerable<(string Name, Tensor Value)> State()
    {
        EnsureCalibrated();
        return new[] { ("scale", _scale!.Clone()), ("zero_point", QuantState.Vector(_zero)) };
    }

    /// <inheritdoc/>
    public override void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        QuantState.ExpectNames(state, Spec, "scale", "zero_point");
        var scale = state["scale"];
        if (scale.Size == 0) throw new ViTQuantException($"{Spec} quantizer state 'scale' is empty");
        QuantState.Get(state, Spec, "scale", scale.Size);
        var zero = QuantState.Get(state, Spec, "zero_point", scale.Size);
        foreach (float z in zero.Span)
            if (z != MathF.Round(z) || z < QMin || z > QMax)
                throw new ViTQuantException($"{Spec} quantizer state 'zero_point' holds {z}, not an integer in [{QMin}, {QMax}]");
        Set(scale.ToArray(), zero.ToArray());
    }
}
