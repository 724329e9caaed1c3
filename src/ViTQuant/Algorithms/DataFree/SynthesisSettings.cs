// Settings of a synthetic-set run: which method, how many images, the optimisation length and the
// MimiQ loss weights. Immutable, validated on use, serialised into every shard and the final set so a
// resumed run can prove it continues the same job. The per-method optimiser constants (learning rates,
// betas, schedules, augmentation) are the specs' and are fixed in the synthesizers; AlgorithmVersion
// names that fixed recipe so files made by a changed recipe are never mixed with new ones.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>What a synthesis run makes; <see cref="Validated"/> throws ViTQuantException on impossible values.</summary>
public sealed record SynthesisSettings
{
    /// <summary>The known methods, as written on the command line and in files.</summary>
    public static readonly string[] Methods = { "gaussian", "psaq", "mimiq" };

    /// <summary>Recipe version written into files (bumped whenever a synthesizer's fixed constants change).</summary>
    public const string CurrentAlgorithmVersion = "1";

    /// <summary>"gaussian", "psaq" or "mimiq".</summary>
    public string Method { get; init; } = "mimiq";

    /// <summary>Images to make in total.</summary>
    public int Count { get; init; } = 1024;

    /// <summary>Images optimised together (the last batch may be smaller).</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Optimiser steps per batch (PSAQ: split over its two rounds; ignored by gaussian).</summary>
    public int Iterations { get; init; } = 2000;

    /// <summary>Base seed; batch b draws from a generator seeded by (Seed, b, attempt).</summary>
    public ulong Seed { get; init; }

    /// <summary>MimiQ weight of the inter-head coherency loss.</summary>
    public float LambdaIhc { get; init; } = 1f;

    /// <summary>MimiQ weight of the cross-entropy to the batch's random labels.</summary>
    public float LambdaCe { get; init; } = 1f;

    /// <summary>MimiQ weight of the total-variation prior.</summary>
    public float LambdaTv { get; init; } = 2.5e-5f;

    /// <summary>
    /// Ablation, not the spec: MimiQ's L_IHC as mean(1 − SSIM) instead of mean(1 − SSIM²). Left out of
    /// the JSON when false, so settings and shards of the spec's form read as before.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public bool IhcSigned { get; init; }

    /// <summary>
    /// Ablation, not the spec: where MimiQ's pixels start. "normal" (the spec, null here): x ~ N(0, 1) in
    /// normalised space; "black": the model's black level (pixel 0, the lower clamp bound) plus
    /// N(0, 0.1²) in normalised units, so images start from the dark background that real Fashion-MNIST
    /// images share. Left out of the JSON when null, so settings and shards of the spec's form read as before.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public string? Init { get; init; }

    /// <summary>
    /// Ablation, not the spec: MimiQ's per-iteration augmentation. "all" (the spec, null here): roll,
    /// decaying offset and colour jitter; "roll": the roll only (no brightness/contrast changes);
    /// "none": no augmentation. Left out of the JSON when null.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public string? Augment { get; init; }

    /// <summary>Values of <see cref="Init"/> and <see cref="Augment"/>.</summary>
    public static readonly string[] InitModes = { "normal", "black" }, AugmentModes = { "all", "roll", "none" };

    /// <summary>Attempts per batch before giving up when the optimisation keeps producing NaN.</summary>
    public int MaxAttempts { get; init; } = 5;

    /// <summary>The synthesizers' fixed recipe version (see file header).</summary>
    public string AlgorithmVersion { get; init; } = CurrentAlgorithmVersion;

    /// <summary>Number of batches, ⌈Count / BatchSize⌉.</summary>
    [JsonIgnore] public int BatchCount => (Count + BatchSize - 1) / BatchSize;

    /// <summary>The spec defaults for a method: batch 16 × 2000 iterations (mimiq), 32 × 1000 (psaq), 64 (gaussian).</summary>
    public static SynthesisSettings For(string method) => method switch
    {
        "mimiq" => new SynthesisSettings { Method = method, BatchSize = 16, Iterations = 2000 },
        "psaq" => new SynthesisSettings { Method = method, BatchSize = 32, Iterations = 1000 },
        "gaussian" => new SynthesisSettings { Method = method, BatchSize = 64, Iterations = 1 },
        _ => throw new ViTQuantException($"unknown synthesis method '{method}' (known: {string.Join(", ", Methods)})"),
    };

    /// <summary>Returns this record, or throws ViTQuantException naming the first bad field.</summary>
    public SynthesisSettings Validated()
    {
        void Fail(string m) => throw new ViTQuantException($"synthesis settings: {m}");
        if (!Methods.Contains(Method)) Fail($"unknown method '{Method}' (known: {string.Join(", ", Methods)})");
        if (Count < 1) Fail($"--count must be at least 1, got {Count}");
        if (BatchSize < 1) Fail($"--batch must be at least 1, got {BatchSize}");
        if (Iterations < 1) Fail($"--iterations must be at least 1, got {Iterations}");
        if (MaxAttempts < 1) Fail($"max attempts must be at least 1, got {MaxAttempts}");
        foreach (var (name, v) in new[] { ("--lambda-ihc", LambdaIhc), ("--lambda-ce", LambdaCe), ("--lambda-tv", LambdaTv) })
            if (!(v >= 0) || float.IsInfinity(v)) Fail($"{name} must be a finite value >= 0, got {v.ToString(CultureInfo.InvariantCulture)}");
        if (IhcSigned && Method != "mimiq") Fail($"the signed L_IHC applies to mimiq only, not {Method}");
        if (Init != null && !InitModes.Contains(Init)) Fail($"unknown --init '{Init}' (known: {string.Join(", ", InitModes)})");
        if (Augment != null && !AugmentModes.Contains(Augment)) Fail($"unknown --augment '{Augment}' (known: {string.Join(", ", AugmentModes)})");
        if ((Init != null || Augment != null) && Method != "mimiq") Fail($"--init/--augment apply to mimiq only, not {Method}");
        if (Method == "mimiq" && LambdaIhc == 0 && LambdaCe == 0 && LambdaTv == 0) Fail("all MimiQ loss weights are 0; nothing to optimise");
        if (AlgorithmVersion != CurrentAlgorithmVersion) Fail($"recipe version {AlgorithmVersion} is not this build's {CurrentAlgorithmVersion}");
        return this;
    }

    private static readonly JsonSerializerOptions JsonOpts = new() { WriteIndented = false };

    /// <summary>Compact JSON of every field (stored in shards and sets; compared on resume).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOpts);

    /// <summary>Parses <see cref="ToJson"/> output. Throws ViTQuantException naming <paramref name="source"/> on bad JSON.</summary>
    public static SynthesisSettings FromJson(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize<SynthesisSettings>(json, JsonOpts) ?? throw new ViTQuantException($"{source}: empty synthesis settings");
        }
        catch (JsonException e)
        {
            throw new ViTQuantException($"{source}: synthesis settings are not valid JSON ({e.Message})");
        }
    }
}
