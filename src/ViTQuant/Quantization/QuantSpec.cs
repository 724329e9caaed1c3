// Quantizer configurations as data: immutable records validated on construction (torchao style).
// A QuantSpec says WHAT quantizer sits at a point; the Quantizer objects (Quantizers/*.cs) hold its
// calibrated/learned state and do the math. Specs serialise to JSON inside quantization plans.
using System.Text.Json.Serialization;

namespace ViTQuant.Quantization;

/// <summary>The quantizer families the toolkit implements.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<QuantKind>))]
public enum QuantKind
{
    /// <summary>Uniform affine (or symmetric) with a fixed range from calibration.</summary>
    Uniform,
    /// <summary>Uniform with learned step (and zero point): LSQ / LSQ+.</summary>
    Lsq,
    /// <summary>Logarithmic, base 2 (levels Δ·2^−q), for post-softmax values in [0, 1].</summary>
    Log2,
    /// <summary>Logarithmic, base √2 (levels Δ·2^−q/2), RepQ-ViT's post-softmax quantizer.</summary>
    LogSqrt2,
    /// <summary>ADFQ-ViT per-patch outlier-aware quantizer (per token position scales, outliers kept in float).</summary>
    PerPatchOutlier,
    /// <summary>ADFQ-ViT Shift-Log quantizer for post-GELU activations.</summary>
    ShiftLog,
}

/// <summary>How many ranges (steps and zero points) a quantizer keeps.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Granularity>))]
public enum Granularity
{
    /// <summary>One range for the whole tensor.</summary>
    PerTensor,
    /// <summary>One range per output channel (weights: dim 0).</summary>
    PerChannel,
    /// <summary>One range per token position (activations [.., N, C]: dim −2).</summary>
    PerToken,
}

/// <summary>How a calibration range is chosen from observed statistics.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<RangeMethod>))]
public enum RangeMethod
{
    /// <summary>The observed minimum and maximum.</summary>
    MinMax,
    /// <summary>(p, 1 − p) quantiles with p searched in {0.999, 0.9999, 0.99999} by MSE.</summary>
    Percentile,
    /// <summary>Range grid search minimising the Lp error (p = LpNorm; 2 = MSE).</summary>
    LpSearch,
    /// <summary>
    /// Asymmetric grids: the step AND the zero point searched together by the Lp error (ADFQ-ViT's
    /// published UniformAffineQuantizer 'mse' search for q, k, v); one-sided data searches the step only.
    /// </summary>
    LpZeroPointSearch,
}

/// <summary>
/// One quantizer's configuration. <see cref="Validated"/> (called by every consumer) throws
/// ViTQuantException for bits outside 2–8 or inconsistent options.
/// </summary>
public sealed record QuantSpec
{
    /// <summary>The quantizer family.</summary>
    public QuantKind Kind { get; init; } = QuantKind.Uniform;
    /// <summary>Bit width, 2–8.</summary>
    public int Bits { get; init; } = 8;
    /// <summary>Per tensor, per output channel or per token.</summary>
    public Granularity Granularity { get; init; } = Granularity.PerTensor;
    /// <summary>Symmetric grid around zero (no zero point) instead of an affine one.</summary>
    public bool Symmetric { get; init; }
    /// <summary>How the calibration range is chosen.</summary>
    public RangeMethod Range { get; init; } = RangeMethod.MinMax;
    /// <summary>p of the Lp range search (ADFQ uses 2.4 for q/k/v).</summary>
    public float LpNorm { get; init; } = 2f;
    /// <summary>PerPatchOutlier: |x| above this stays in float.</summary>
    public float OutlierThreshold { get; init; } = 5f;
    /// <summary>ShiftLog: log base, 2 or √2.</summary>
    public bool SqrtTwoBase { get; init; } = true;
    /// <summary>Weights only: AdaRound learned rounding (ADFQ reconstruction).</summary>
    public bool AdaRound { get; init; }
    /// <summary>
    /// Uniform only: the step Δ is a learnable tensor (LSQ-style gradient), as ADFQ learns the per-tensor
    /// input steps. LSQ, per-patch and Shift-Log steps are always learnable; log quantizers never are.
    /// </summary>
    public bool Learnable { get; init; }
    /// <summary>
    /// Uniform min–max only: the range is recomputed from every tensor Forward sees instead of being
    /// calibrated once (MimiQ's weight quantizer during fine-tuning, where the weights keep changing).
    /// </summary>
    public bool Dynamic { get; init; }
    /// <summary>
    /// Lsq activations only: initialise α and z from the <see cref="Range"/> search (with
    /// <see cref="LpNorm"/>) on the observed sample instead of LSQ's 2·mean|x|/√q_max rule.
    /// </summary>
    public bool RangeInit { get; init; }
    /// <summary>
    /// Values kept per quantization group for the quantiles and range searches: 0 (default) keeps every
    /// observed value (exact statistics over the whole calibration set); a positive size keeps a uniform
    /// random sample of at most that many (a deliberate approximation, printed with the spec).
    /// </summary>
    public int SampleSize { get; init; }

    /// <summary>Checks bits and option combinations; returns this or throws ViTQuantException.</summary>
    public QuantSpec Validated()
    {
        if (Bits < 2 || Bits > 8) throw new ViTQuantException($"{Bits}-bit quantization is not supported (bits must be 2–8)");
        if (Kind is QuantKind.Log2 or QuantKind.LogSqrt2 && Granularity != Granularity.PerTensor)
            throw new ViTQuantException($"{Kind} quantizers are per tensor");
        if (Kind == QuantKind.PerPatchOutlier && (Granularity != Granularity.PerToken || !(OutlierThreshold > 0)))
            throw new ViTQuantException("the per-patch outlier quantizer is per token with a positive threshold");
        if (SampleSize < 0) throw new ViTQuantException($"sample size must be 0 (every value) or positive, got {SampleSize}");
        if (!(LpNorm > 0)) throw new ViTQuantException($"Lp norm must be positive, got {LpNorm}");
        if (AdaRound && Kind != QuantKind.Uniform)
            throw new ViTQuantException($"AdaRound rounds a uniform weight grid; it cannot be combined with {Kind}");
        if (Learnable && Kind is QuantKind.Log2 or QuantKind.LogSqrt2)
            throw new ViTQuantException($"{Kind} quantizers have no learnable step");
        if (Dynamic && (Kind != QuantKind.Uniform || Range != RangeMethod.MinMax || AdaRound || Learnable))
            throw new ViTQuantException("a dynamic range is only supported by uniform min–max quantizers without AdaRound or a learned step");
        if (RangeInit && Kind != QuantKind.Lsq)
            throw new ViTQuantException($"a range-searched initial step is an LSQ option; {Kind} quantizers calibrate their range anyway");
        return this;
    }

    /// <summary>A short description for reports, e.g. "uniform8 asym PerTensor Percentile".</summary>
    public override string ToString() => Describe() + (SampleSize > 0 ? $" sample {SampleSize}/group" : "");

    private string Describe() => Kind switch
    {
        QuantKind.Uniform => $"uniform{Bits} {(Symmetric ? "sym" : "asym")} {Granularity} {(Dynamic ? "dynamic " : "")}{Range}"
                             + (Learnable ? " learned-step" : "") + (AdaRound ? " adaround" : ""),
        QuantKind.PerPatchOutlier => $"per-patch-outlier{Bits} α={OutlierThreshold}",
        QuantKind.ShiftLog => $"shift-log{Bits} base {(SqrtTwoBase ? "√2" : "2")}",
        QuantKind.Lsq when RangeInit => $"{Kind}{Bits} {Granularity} init {Range}",
        _ => $"{Kind}{Bits} {Granularity}",
    };
}
