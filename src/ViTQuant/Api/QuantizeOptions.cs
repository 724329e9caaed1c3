// What Vitq.Quantize does: the method (one of QuantizationMethods.Names), the bit widths, how long the
// iterative methods run, and the seed. An immutable record validated before any work starts.
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Algorithms.Qat;

namespace ViTQuant.Api;

/// <summary>
/// Options of <see cref="Vitq.Quantize"/>. <see cref="Validated"/> throws ArgumentException naming the
/// property and what it expects; the façade calls it before it loads data or writes anything.
/// </summary>
public sealed record QuantizeOptions
{
    /// <summary>
    /// The method: minmax, percentile, adfq (ADFQ-ViT), mimiq (MimiQ fine-tuning) or one of the ablations
    /// in <see cref="QuantizationMethods.Names"/> (adfq-no-recon, mimiq-had-mse, …).
    /// </summary>
    public string Method { get; init; } = "adfq";

    /// <summary>Weight bits, 2–8.</summary>
    public int WeightBits { get; init; } = 4;

    /// <summary>Activation bits, 2–8.</summary>
    public int ActivationBits { get; init; } = 4;

    /// <summary>ADFQ-ViT optimisation iterations per reconstruction unit (the CLI's --iters), at least 1.</summary>
    public int AdfqIterations { get; init; } = 3000;

    /// <summary>MimiQ fine-tuning epochs, at least 1.</summary>
    public int FineTuneEpochs { get; init; } = 1;

    /// <summary>MimiQ peak SGD learning rate (cosine decay to 0), positive and finite.</summary>
    public float FineTuneLr { get; init; } = MimiqOptions.DefaultLr;

    /// <summary>Seed of every random choice (QDrop, rounding initialisation, fine-tuning order and augmentation).</summary>
    public ulong Seed { get; init; }

    /// <summary>Keep the patch embedding and the head at 8 bits.</summary>
    public bool FirstLast8Bit { get; init; }

    /// <summary>
    /// Post-training methods: keep a random sample of at most this many values per quantization group for
    /// the quantiles and range searches (0: exact statistics over every value).
    /// </summary>
    public int CalibrationSampleSize { get; init; }

    /// <summary>Post-training methods: calibrate this many blocks per pass over the images (0: as many as fit QuantizedModel.CalibrationMemoryBudget, a quarter of the memory by default; one pass when all do); bounds the memory of exact statistics.</summary>
    public int CalibrationBlocksPerPass { get; init; }

    /// <summary>
    /// Every ADFQ-ViT setting (iterations, seed, ablation switches, quantizer choices) for method "adfq",
    /// used as given instead of <see cref="AdfqIterations"/> and <see cref="Seed"/>; null: the defaults.
    /// </summary>
    public AdfqOptions? Adfq { get; init; }

    /// <summary>This record when every value is in range; otherwise ArgumentException naming the property.</summary>
    public QuantizeOptions Validated()
    {
        if (Method is null || !QuantizationMethods.Names.Contains(Method))
            throw new ArgumentException($"unknown method '{Method}' (expected one of {string.Join(", ", QuantizationMethods.Names)})", nameof(Method));
        if (WeightBits is < 2 or > 8) throw new ArgumentException($"is {WeightBits}, expected 2–8", nameof(WeightBits));
        if (ActivationBits is < 2 or > 8) throw new ArgumentException($"is {ActivationBits}, expected 2–8", nameof(ActivationBits));
        if (AdfqIterations < 1) throw new ArgumentException($"is {AdfqIterations}, expected at least 1", nameof(AdfqIterations));
        if (FineTuneEpochs < 1) throw new ArgumentException($"is {FineTuneEpochs}, expected at least 1", nameof(FineTuneEpochs));
        if (!(FineTuneLr > 0) || !float.IsFinite(FineTuneLr)) throw new ArgumentException($"is {FineTuneLr}, expected a positive finite learning rate", nameof(FineTuneLr));
        if (CalibrationSampleSize < 0) throw new ArgumentException($"is {CalibrationSampleSize}, expected 0 (every value) or a positive sample size", nameof(CalibrationSampleSize));
        if (CalibrationBlocksPerPass < 0) throw new ArgumentException($"is {CalibrationBlocksPerPass}, expected 0 (automatic) or positive", nameof(CalibrationBlocksPerPass));
        bool fineTunes = QuantizationMethods.FineTunes(Method);
        if (fineTunes && (CalibrationSampleSize != 0 || CalibrationBlocksPerPass != 0))
            throw new ArgumentException($"applies to the post-training methods; {Method} initialises on its own images", CalibrationSampleSize != 0 ? nameof(CalibrationSampleSize) : nameof(CalibrationBlocksPerPass));
        if (Adfq != null && Method != "adfq") throw new ArgumentException($"applies to method adfq only (got {Method}; the adfq-… ablations set their own switches)", nameof(Adfq));
        return this;
    }

    /// <summary>"w4a4"-style bit widths.</summary>
    public string Bits => $"w{WeightBits}a{ActivationBits}";
}
