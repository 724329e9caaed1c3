// The quantizer contract. A Quantizer is a small stateful object (ranges, steps, zero points, learned
// variables) created from a QuantSpec. Life cycle:
//   1. Observe(x) on calibration batches (streaming: bounded memory whatever the number of batches);
//   2. Calibrate() turns the statistics into quantization parameters (IsCalibrated becomes true);
//   3. Forward(x) fake-quantizes: quantize → clamp → dequantize, float out, with straight-through or
//      learned-parameter gradients so it can sit inside a trained or reconstructed network.
// State() / LoadState() round-trip everything needed to rebuild Forward exactly (checkpoints).
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

public abstract class Quantizer
{
    protected Quantizer(QuantSpec spec) => Spec = spec.Validated();

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

    protected void EnsureCalibrated()
    {
        if (!IsCalibrated) throw new InvalidOperationException($"{Spec} quantizer used before calibration");
    }
}

/// <summary>Quantizers that keep some values in float report the fraction they kept (last forward).</summary>
public interface IReportsOutliers
{
    double OutlierFraction { get; }
}

/// <summary>
/// A weight quantizer whose outputs lie on a per-channel affine integer grid ŵ = (code − z_c)·Δ_c with
/// code ∈ [QMin, QMax]; lets checkpoints store weights as integers. Scale/ZeroPoint have one entry
/// per output channel (or one for per-tensor grids).
/// </summary>
public interface IAffineGrid
{
    float[] Scale { get; }
    float[] ZeroPoint { get; }
    int QMin { get; }
    int QMax { get; }
}
