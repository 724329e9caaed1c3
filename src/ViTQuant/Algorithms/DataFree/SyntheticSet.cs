// The synthetic-set file format ("vitq-synthetic/1"): one safetensors file holding
//   images  F32 [count, C, H, W]  in the generating model's normalised input space
//   labels  I32 [count]
// and, in the metadata: vitq.format, vitq.method, vitq.settings (SynthesisSettings JSON), vitq.seed,
// vitq.architecture, vitq.model_config (config JSON of the generating model, ViT or Swin), vitq.model_sha256
// (fingerprint of its weights) and vitq.batch_losses (JSON list of per-batch final losses).
// A run in progress keeps one "vitq-synthetic-shard/1" file per finished batch (SynthesisRunner).
//
// A loaded set is also an IImageDataset: GetImage un-normalises with the generating model's mean/std,
// giving [0, 1] pixels that any loader can normalise again for whichever model consumes them.
using System.Security.Cryptography;
using System.Text.Json;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>Final losses and attempt count of one synthesized batch, as stored in shards and sets.</summary>
public sealed record SyntheticBatchInfo(int Batch, int Count, int Attempts, SynthesisLosses Losses);

/// <summary>A loaded, validated synthetic image set.</summary>
public sealed class SyntheticSet : IImageDataset
{
    /// <summary>Format tag of a finished set (metadata vitq.format).</summary>
    internal const string Format = "vitq-synthetic/1";
    /// <summary>Format tag of one finished batch of a run in progress.</summary>
    internal const string ShardFormat = "vitq-synthetic-shard/1";
    /// <summary>Metadata keys of sets and shards.</summary>
    internal const string FormatKey = "vitq.format", MethodKey = "vitq.method", SettingsKey = "vitq.settings", SeedKey = "vitq.seed",
        ArchitectureKey = "vitq.architecture", ModelConfigKey = "vitq.model_config", ModelHashKey = "vitq.model_sha256",
        BatchLossesKey = "vitq.batch_losses", BatchKey = "vitq.batch", AttemptsKey = "vitq.attempts", LossesKey = "vitq.losses";

    internal static readonly JsonSerializerOptions JsonOpts = new() { WriteIndented = false };

    private readonly float[] _mean, _std;
    private readonly string[] _classNames;

    /// <summary>The file the set was read from.</summary>
    public string Path { get; }

    /// <summary>Images [count, C, H, W] in the generating model's normalised space.</summary>
    public Tensor Images { get; }

    /// <summary>One label per image.</summary>
    public int[] Labels { get; }

    /// <summary>The synthesis settings the set was made with.</summary>
    public SynthesisSettings Settings { get; }

    /// <summary>Configuration of the model the images were made for.</summary>
    public IModelConfig ModelConfig { get; }

    /// <summary>SHA-256 of the generating model's weights (hex).</summary>
    public string ModelHash { get; }

    /// <summary>Per-batch attempts and final losses, in batch order.</summary>
    public IReadOnlyList<SyntheticBatchInfo> Batches { get; }

    /// <summary>The file's whole safetensors metadata.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SyntheticSet(string path, Tensor images, int[] labels, SynthesisSettings settings, IModelConfig cfg, string hash,
        IReadOnlyList<SyntheticBatchInfo> batches, IReadOnlyDictionary<string, string> metadata)
    {
        (Path, Images, Labels, Settings, ModelConfig, ModelHash, Batches, Metadata) = (path, images, labels, settings, cfg, hash, batches, metadata);
        _mean = cfg.Mean;
        _std = cfg.Std;
        _classNames = cfg.ClassNames ?? Enumerable.Range(0, cfg.NumClasses).Select(i => i.ToString()).ToArray();
    }

    /// <summary>
    /// Reads and validates a set: format tag, settings and model config, non-empty images [count, C, H, W]
    /// matching the stored config, count labels inside [0, classes). With <paramref name="model"/>, also
    /// requires the model's input shape and class count to fit. Throws ViTQuantException naming the file
    /// (and both shapes on a mismatch).
    /// </summary>
    public static SyntheticSet Load(string path, IModelConfig? model = null)
    {
        var file = SafeTensorsFile.Read(path);
        string Meta(string key) => file.Metadata.TryGetValue(key, out var v) ? v
            : throw new ViTQuantException($"{path}: not a synthetic set (metadata has no '{key}')");
        string format = Meta(FormatKey);
        if (format == ShardFormat) throw new ViTQuantException($"{path}: is a shard of an unfinished synthesis run, not a set; finish it with --resume");
        if (format != Format) throw new ViTQuantException($"{path}: not a synthetic set (format '{format}', expected '{Format}')");
        var settings = SynthesisSettings.FromJson(Meta(SettingsKey), path);
        var cfg = ModelConfigs.FromJson(Meta(ModelConfigKey), path);
        var (images, labels) = ReadPayload(file, path, cfg, expectedCount: null);
        if (images.Shape[0] != settings.Count)
            throw new ViTQuantException($"{path}: holds {images.Shape[0]} images but its settings say {settings.Count}");
        List<SyntheticBatchInfo> batches;
        try { batches = JsonSerializer.Deserialize<List<SyntheticBatchInfo>>(Meta(BatchLossesKey), JsonOpts) ?? new(); }
        catch (JsonException e) { throw new ViTQuantException($"{path}: '{BatchLossesKey}' is not valid JSON ({e.Message})"); }
        var set = new SyntheticSet(path, images, labels, settings, cfg, Meta(ModelHashKey), batches, file.Metadata);
        if (model != null) set.CheckFits(model);
        return set;
    }

    /// <summary>Throws ViTQuantException unless the set's images and labels fit <paramref name="model"/>.</summary>
    public void CheckFits(IModelConfig model)
    {
        var s = Images.Shape;
        if (s[1] != model.InChans || s[2] != model.ImageSize || s[3] != model.ImageSize)
            throw new ViTQuantException($"{Path}: images are [C, H, W] = [{s[1]}, {s[2]}, {s[3]}] but the model ({model.Architecture}) expects [{model.InChans}, {model.ImageSize}, {model.ImageSize}]");
        int maxLabel = Labels.Max();
        if (maxLabel >= model.NumClasses)
            throw new ViTQuantException($"{Path}: label {maxLabel} is outside the model's {model.NumClasses} classes");
    }

    /// <summary>
    /// The images in <paramref name="model"/>'s normalised space: the stored tensor when the two configs
    /// share mean and std, otherwise re-normalised through [0, 1] pixels. Throws as <see cref="CheckFits"/>.
    /// </summary>
    public Tensor ImagesFor(IModelConfig model)
    {
        CheckFits(model);
        if (model.Mean.SequenceEqual(_mean) && model.Std.SequenceEqual(_std)) return Images;
        var t = new Tensor(Images.Shape);
        int n = Count, C = Channels, plane = Height * Width;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++)
            {
                int off = (i * C + c) * plane;
                for (int k = 0; k < plane; k++)
                    t.Data[off + k] = (Images.Data[off + k] * _std[c] + _mean[c] - model.Mean[c]) / model.Std[c];
            }
        return t;
    }

    // ---- IImageDataset (pixels in [0, 1]) ----

    /// <inheritdoc/>
    public int Count => Images.Shape[0];
    /// <inheritdoc/>
    public int Channels => Images.Shape[1];
    /// <inheritdoc/>
    public int Height => Images.Shape[2];
    /// <inheritdoc/>
    public int Width => Images.Shape[3];
    /// <inheritdoc/>
    public int NumClasses => ModelConfig.NumClasses;
    /// <summary>Class names of the generating model's config, or "0", "1", … when it has none.</summary>
    public IReadOnlyList<string> ClassNames => _classNames;

    /// <inheritdoc/>
    public int Label(int index)
    {
        if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), $"image index {index} out of range for a set of {Count}");
        return Labels[index];
    }

    /// <summary>Image <paramref name="index"/> un-normalised to [0, 1] (clamped against rounding).</summary>
    public void GetImage(int index, Span<float> dst)
    {
        this.CheckGetImage(index, dst.Length);
        int C = Channels, plane = Height * Width;
        for (int c = 0; c < C; c++)
        {
            var src = Images.Data.AsSpan((index * C + c) * plane, plane);
            for (int k = 0; k < plane; k++) dst[c * plane + k] = Math.Clamp(src[k] * _std[c] + _mean[c], 0f, 1f);
        }
    }

    // ---- file helpers shared with the runner ----

    /// <summary>Reads images/labels of a set or shard and checks them against cfg (and a count when given).</summary>
    internal static (Tensor Images, int[] Labels) ReadPayload(SafeTensorsFile file, string path, IModelConfig cfg, int? expectedCount)
    {
        if (!file.Contains("images")) throw new ViTQuantException($"{path}: has no 'images' tensor");
        if (!file.Contains("labels")) throw new ViTQuantException($"{path}: has no 'labels' tensor");
        var info = file.Info("images");
        if (info.DType != "F32") throw new ViTQuantException($"{path}: 'images' is {info.DType}, expected F32");
        var s = info.Shape;
        if (s.Length != 4) throw new ViTQuantException($"{path}: 'images' has shape {Tensor.ShapeString(s)}, expected [count, C, H, W]");
        if (s[0] == 0) throw new ViTQuantException($"{path}: the set is empty (0 images)");
        if (s[1] != cfg.InChans || s[2] != cfg.ImageSize || s[3] != cfg.ImageSize)
            throw new ViTQuantException($"{path}: images are [C, H, W] = [{s[1]}, {s[2]}, {s[3]}] but its model config ({cfg.Architecture}) says [{cfg.InChans}, {cfg.ImageSize}, {cfg.ImageSize}]");
        if (expectedCount is int n && s[0] != n) throw new ViTQuantException($"{path}: holds {s[0]} images, expected {n}");
        var labels = file.GetInt32("labels");
        if (labels.Length != s[0]) throw new ViTQuantException($"{path}: {labels.Length} labels for {s[0]} images");
        for (int i = 0; i < labels.Length; i++)
            if ((uint)labels[i] >= (uint)cfg.NumClasses)
                throw new ViTQuantException($"{path}: label {labels[i]} of image {i} is outside [0, {cfg.NumClasses})");
        var images = file.GetTensor("images");
        foreach (float v in images.Span)
            if (!float.IsFinite(v)) throw new ViTQuantException($"{path}: 'images' holds a non-finite value");
        return (images, labels);
    }

    /// <summary>Writes images and labels with metadata atomically.</summary>
    internal static void WriteFile(string path, Tensor images, int[] labels, IReadOnlyDictionary<string, string> metadata)
    {
        var entries = new[]
        {
            SafeTensorsEntry.FromTensor("images", images),
            SafeTensorsEntry.FromInt32("labels", labels, labels.Length),
        };
        SafeTensorsWriter.Write(path, entries, metadata);
    }

    /// <summary>SHA-256 (hex) over every state-dict entry's name, shape and float32 bytes, in order.</summary>
    public static string ModelFingerprint(VisionModel model)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, t) in model.StateDict())
        {
            h.AppendData(System.Text.Encoding.UTF8.GetBytes($"{name}{Tensor.ShapeString(t.Shape)}"));
            h.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.Span));
        }
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }
}
