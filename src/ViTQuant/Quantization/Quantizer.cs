// The quantizer contract. A Quantizer is a small stateful object (ranges, steps, zero points, learned
// variables) created from a QuantSpec. Life cycle:
//   1. Observe(x) on calibration batches (min–max statistics take constant memory; quantile and search
//      statistics keep every value, or a sample of Spec.SampleSize, until Calibrate frees them);
//   2. Calibrate() turns the statistics into quantization parameters (IsCalibrated becomes true);
//   3. Forward(x) fake-quantizes: quantize → clamp → dequantize, float out, with straight-through or
//      learned-parameter gradients so it can sit inside a trained or reconstructed network.
// State() / LoadState() round-trip everything needed to rebuild Forward exactly (checkpoints).
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>Base of every quantizer: observe calibration batches, calibrate, then fake-quantize in Forward; State/LoadState round-trip it.</summary>
internal abstract class Quantizer
{
    /// <summary>Validates <paramref name="spec"/> (throws ViTQuantException when inconsistent) and keeps it as <see cref="Spec"/>.</summary>
    protected Quantizer(QuantSpec spec) => Spec = spec.Validated();

    /// <summary>The validated configuration this quantizer was built from.</summary>
    public QuantSpec Spec { get; }

    /// <summary>True once Calibrate() (or LoadState) has set the quantization parameters.</summary>
    public bool IsCalibrated { get; protected set; }

    /// <summary>Accumulates calibration statistics from one batch of the tensor this quantizer will see.</summary>
    public abstract void Observe(Tensor x);

    /// <summary>Fixes the quantization parameters from the observed statistics. Throws if nothing was observed.</summary>
    public abstract void Calibrate();

    /// <summary>Fake quantization of x (same shape). Throws InvalidOperationException before calibration.</summary>
    public abstract Tensor Forward(Tensor x);

    /// <summary>Tensors an optimiser may update (LSQ steps, AdaRound variables, learned Δ); empty when none.</summary>
    public virtual IEnumerable<Tensor> LearnableParameters() => Array.Empty<Tensor>();

    /// <summary>Named tensors that fully describe the calibrated/learned state.</summary>
    public abstract IEnumerable<(string Name, Tensor Value)> State();

    /// <summary>Restores State(); throws ViTQuantException when names or shapes do not match.</summary>
    public abstract void LoadState(IReadOnlyDictionary<string, Tensor> state);

    /// <summary>Values the last calibration observed (every element of every batch); 0 when loaded from a checkpoint.</summary>
    public long ValuesSeen { get; private set; }

    /// <summary>
    /// Values the last calibration's statistic used: ValuesSeen for min–max and for exact quantiles and
    /// searches, the number of sampled values when Spec.SampleSize is set; 0 when loaded from a checkpoint.
    /// </summary>
    public long ValuesUsed { get; private set; }

    /// <summary>Records what the calibration saw and frees the stored values (they can be gigabytes).</summary>
    protected void FinishStatistics(MinMaxObserver minMax, ReservoirObserver? sample)
    {
        ValuesSeen = minMax.Count;
        ValuesUsed = sample?.StoredCount ?? minMax.Count;
        sample?.Clear();
    }

    /// <summary>Throws InvalidOperationException unless the quantizer is calibrated.</summary>
    protected void EnsureCalibrated()
    {
        if (!IsCalibrated) throw new InvalidOperationException($"{Spec} quantizer used before calibration");
    }
}

/// <summary>Quantizers that keep some values in float report the fraction they kept (last forward).</summary>
internal interface IReportsOutliers
{
    /// <summary>Fraction of the last forward's values kept in float, in [0, 1].</summary>
    double OutlierFraction { get; }
}

/// <summary>
/// The per-channel affine integer grid ŵ = (code − z_c)·Δ_c, code ∈ [QMin, QMax], of a weight
/// quantizer; lets checkpoints store weights as integers. One Scale/ZeroPoint entry per output channel
/// (or one for a per-tensor grid).
/// </summary>
internal sealed record AffineGrid(float[] Scale, float[] ZeroPoint, int QMin, int QMax)
{
    /// <summary>The grid of a calibrated uniform or AdaRound weight quantizer; null for other kinds.</summary>
    internal static AffineGrid? Of(Quantizer q)
    {
        UniformParams[]? p = q switch
        {
            UniformQuantizer u when u.Groups > 0 => Enumerable.Range(0, u.Groups).Select(u.Params).ToArray(),
            AdaRoundQuantizer a when a.IsCalibrated => Enumerable.Range(0, a.State().First(s => s.Name == "scale").Value.Size).Select(a.Params).ToArray(),
            _ => null,
        };
        return p == null ? null : new AffineGrid(p.Select(g => g.Scale).ToArray(), p.Select(g => g.ZeroPoint).ToArray(), p[0].QMin, p[0].QMax);
    }
}
