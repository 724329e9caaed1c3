// Spec → quantizer object. The one place that knows which class implements which QuantSpec, and which
// combinations make sense for weights and for activations.
namespace ViTQuant.Quantization;

/// <summary>Creates the quantizer a QuantSpec describes.</summary>
internal static class QuantizerFactory
{
    /// <summary>
    /// The quantizer for <paramref name="spec"/> at a weight (<paramref name="isWeight"/>) or activation
    /// point: Uniform → UniformQuantizer (AdaRoundQuantizer for weights with AdaRound), Lsq →
    /// LsqQuantizer, Log2/LogSqrt2 → LogQuantizer, PerPatchOutlier → PerPatchOutlierQuantizer,
    /// ShiftLog → ShiftLogQuantizer. <paramref name="seed"/> seeds calibration sampling.
    /// Throws ViTQuantException for an invalid spec (bits outside 2–8, …), AdaRound on an activation, or
    /// an activation-only kind (log, per-patch, shift-log) on a weight.
    /// </summary>
    public static Quantizer Create(QuantSpec spec, bool isWeight, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec = spec.Validated();
        if (spec.AdaRound && !isWeight) throw new ViTQuantException($"AdaRound learns weight rounding; it cannot quantize an activation ({spec})");
        if (isWeight && spec.Kind is QuantKind.Log2 or QuantKind.LogSqrt2 or QuantKind.PerPatchOutlier or QuantKind.ShiftLog)
            throw new ViTQuantException($"{spec.Kind} quantizers are for activations, not weights");
        return spec.Kind switch
        {
            QuantKind.Uniform when spec.AdaRound => new AdaRoundQuantizer(spec, seed),
            QuantKind.Uniform => new UniformQuantizer(spec, seed),
            QuantKind.Lsq => new LsqQuantizer(spec, isWeight),
            QuantKind.Log2 or QuantKind.LogSqrt2 => new LogQuantizer(spec, seed),
            QuantKind.PerPatchOutlier => new PerPatchOutlierQuantizer(spec, seed),
            QuantKind.ShiftLog => new ShiftLogQuantizer(spec, seed),
            _ => throw new ViTQuantException($"unknown quantizer kind {spec.Kind}"),
        };
    }
}
