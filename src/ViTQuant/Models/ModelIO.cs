// Loading and saving models.
//
// Our files: safetensors with timm's state-dict names and the ViTConfig as JSON in the metadata
// ("vitq.config"). timm files: a folder with model.safetensors + config.json, or a .safetensors file
// with a sibling config.json; the config names the architecture and may override its shape
// (model_args) and preprocessing (pretrained_cfg). No --model at all means the shipped default, which
// is embedded in this assembly (models/vit_fmnist.safetensors at build time).
using System.Text.Json;
using System.Text.Json.Nodes;
using ViTQuant.IO;
using ViTQuant.Tensors;

namespace ViTQuant.Models;

/// <summary>Loading and saving float models: our .safetensors, timm folders, the embedded default.</summary>
public static class ModelIO
{
    /// <summary>The metadata key of the model config (JSON) in our checkpoints.</summary>
    public const string ConfigKey = "vitq.config";

    /// <summary>The metadata key of the file format ("vitq-float/1", "vitq-quant/2", …).</summary>
    public const string FormatKey = "vitq.format";

    /// <summary>The file name of the shipped default model in the repository's models/ folder.</summary>
    public const string DefaultModelName = "vit_fmnist.safetensors";
    private const string EmbeddedResource = "ViTQuant.DefaultModel.safetensors";

    /// <summary>True when this build carries the default model.</summary>
    public static bool HasEmbeddedDefault => typeof(ModelIO).Assembly.GetManifestResourceInfo(EmbeddedResource) != null;

    /// <summary>
    /// Loads a model of either family (ViT/DeiT or Swin): null → the embedded default; a folder → timm layout;
    /// a file → ours (config in metadata) or timm (sibling config.json). Throws ViTQuantException naming the
    /// file on any problem (a missing or misshapen tensor is named).
    /// </summary>
    public static VisionModel Load(string? path)
    {
        if (path == null) return LoadDefault();
        if (Directory.Exists(path))
        {
            var st = Path.Combine(path, "model.safetensors");
            if (!File.Exists(st)) throw new ViTQuantException($"{path}: folder has no model.safetensors");
            return LoadTimm(st, Path.Combine(path, "config.json"));
        }
        if (!File.Exists(path)) throw new ViTQuantException($"{path}: model file not found");
        var file = SafeTensorsFile.Read(path);
        file.Metadata.TryGetValue(FormatKey, out var fmt);
        if (fmt == "vitq-train-resume/1") // a training run's epoch checkpoint: its model.* tensors
            return Build(ModelConfigs.FromJson(file.Metadata[ConfigKey], path), file, path, prefix: "model.");
        if (fmt != null && fmt != "vitq-float/1")
            throw new ViTQuantException($"{path}: is a '{fmt}' file, not a float model (quantized checkpoints work with eval and infer)");
        if (file.Metadata.TryGetValue(ConfigKey, out var json))
            return Build(ModelConfigs.FromJson(json, path), file, path);
        var cfgPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "config.json");
        if (!File.Exists(cfgPath))
            throw new ViTQuantException($"{path}: no '{ConfigKey}' metadata and no sibling config.json, cannot tell the architecture");
        return Build(ParseTimmModelConfig(cfgPath), file, path);
    }

    /// <summary>
    /// Loads a ViT/DeiT model (see <see cref="Load"/>); a Swin checkpoint is refused in one line naming
    /// <paramref name="feature"/>, the part of the toolkit that has no Swin path yet.
    /// </summary>
    public static VisionTransformer LoadViT(string? path, string feature) => Load(path).RequireViT(feature);

    /// <summary>The default Fashion-MNIST ViT embedded in this assembly. Throws ViTQuantException when the build has none.</summary>
    public static VisionModel LoadDefault()
    {
        using var s = typeof(ModelIO).Assembly.GetManifestResourceStream(EmbeddedResource)
            ?? throw new ViTQuantException("this build has no embedded default model; pass --model");
        var bytes = new byte[s.Length];
        s.ReadExactly(bytes);
        var file = SafeTensorsFile.Parse("<embedded default model>", bytes);
        return Build(ModelConfigs.FromJson(file.Metadata[ConfigKey], "<embedded default model>"), file, "<embedded default model>");
    }

    private static VisionModel LoadTimm(string stPath, string cfgPath)
    {
        if (!File.Exists(cfgPath)) throw new ViTQuantException($"{cfgPath}: timm config.json not found");
        return Build(ParseTimmModelConfig(cfgPath), SafeTensorsFile.Read(stPath), stPath);
    }

    private static VisionModel Build(IModelConfig cfg, SafeTensorsFile file, string source, string prefix = "")
    {
        var model = VisionModel.Create(cfg);
        var state = new Dictionary<string, Tensor>();
        foreach (var name in file.Names)
            if (name.StartsWith(prefix, StringComparison.Ordinal)) state[name[prefix.Length..]] = file.GetTensor(name);
        try
        {
            model.LoadStateDict(state, strict: true);
        }
        catch (ViTQuantException e)
        {
            throw new ViTQuantException($"{source}: {e.Message}");
        }
        return model;
    }

    /// <summary>Writes the model (float32) with its config in the metadata, atomically.</summary>
    public static void Save(VisionModel model, string path, IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        var meta = new Dictionary<string, string> { [FormatKey] = "vitq-float/1", [ConfigKey] = model.Config.ToJson() };
        if (extraMetadata != null) foreach (var (k, v) in extraMetadata) meta[k] = v;
        SafeTensorsWriter.Write(path, model.StateDict().Select(kv => (kv.Key, kv.Value)), meta);
    }

    /// <summary>
    /// timm's config.json of either family: an architecture starting with "swin" is read by
    /// <see cref="SwinConfig.FromTimmConfig"/>, anything else by <see cref="ParseTimmConfig"/>. Throws
    /// ViTQuantException naming the file.
    /// </summary>
    public static IModelConfig ParseTimmModelConfig(string cfgPath)
    {
        string text;
        try { text = File.ReadAllText(cfgPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ViTQuantException($"{cfgPath}: cannot read file: {e.Message}"); }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(text); }
        catch (JsonException e) { throw new ViTQuantException($"{cfgPath}: not valid JSON ({e.Message})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("architecture", out var a) && a.ValueKind == JsonValueKind.String
                && a.GetString()!.StartsWith("swin", StringComparison.Ordinal))
            {
                return SwinConfig.FromTimmConfig(root, cfgPath);
            }
        }
        return ParseTimmConfig(cfgPath);
    }

    /// <summary>
    /// Reads timm's config.json: architecture (+ model_args overrides), num_classes, global_pool,
    /// pretrained_cfg (mean, std, crop_pct, interpolation) and label_names (or Hugging Face's id2label). model_args that only matter
    /// for training (dropout rates) are ignored; any other key the model cannot honour is an error.
    /// Throws ViTQuantException naming the file on unreadable or invalid JSON, a missing or unknown
    /// architecture, a value of the wrong JSON type, an unsupported model_args key, or an inconsistent result.
    /// </summary>
    public static ViTConfig ParseTimmConfig(string cfgPath)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(cfgPath)); }
        catch (JsonException e) { throw new ViTQuantException($"{cfgPath}: not valid JSON ({e.Message})"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ViTQuantException($"{cfgPath}: cannot read file: {e.Message}"); }
        if (root is not JsonObject o) throw new ViTQuantException($"{cfgPath}: expected a JSON object");
        ViTConfig cfg;
        string arch;
        // GetValue<T> throws InvalidOperationException / FormatException on a JSON value of another type
        // (a string where a number belongs, 2.5 for an int); both become one error naming the file.
        try
        {
            arch = o["architecture"]?.GetValue<string>() ?? throw new ViTQuantException($"{cfgPath}: missing 'architecture'");
            try { cfg = ViTConfig.FromArchitecture(arch); }
            catch (ViTQuantException e) { throw new ViTQuantException($"{cfgPath}: {e.Message}"); }
            if (o["num_classes"] is JsonNode nc) cfg = cfg with { NumClasses = nc.GetValue<int>() };
            if (o["global_pool"] is JsonNode gp && gp.GetValue<string>() is { Length: > 0 } g) cfg = cfg with { GlobalPool = g };
            if (Section(o, "model_args", cfgPath) is JsonObject ma)
            {
                foreach (var (k, v) in ma)
                {
                    if (v == null || TrainingOnlyArgs.Contains(k)) continue;
                    cfg = k switch
                    {
                        "img_size" => cfg with { ImageSize = Square(v, k, cfgPath) },
                        "patch_size" => cfg with { PatchSize = Square(v, k, cfgPath) },
                        "in_chans" => cfg with { InChans = v.GetValue<int>() },
                        "embed_dim" => cfg with { EmbedDim = v.GetValue<int>() },
                        "depth" => cfg with { Depth = v.GetValue<int>() },
                        "num_heads" => cfg with { NumHeads = v.GetValue<int>() },
                        "mlp_ratio" => cfg with { MlpRatio = v.GetValue<float>() },
                        "class_token" => cfg with { ClassToken = v.GetValue<bool>() },
                        "num_classes" => cfg with { NumClasses = v.GetValue<int>() },
                        "global_pool" => cfg with { GlobalPool = v.GetValue<string>() },
                        "qkv_bias" when v.GetValue<bool>() => cfg, // our attention always has a qkv bias
                        _ => throw new ViTQuantException($"{cfgPath}: unsupported model_args key '{k}' = {v.ToJsonString()}"),
                    };
                }
            }
            if (Section(o, "pretrained_cfg", cfgPath) is JsonObject pc)
            {
                if (pc["mean"] is JsonNode m) cfg = cfg with { Mean = Floats(m, "mean", cfgPath) };
                if (pc["std"] is JsonNode s) cfg = cfg with { Std = Floats(s, "std", cfgPath) };
                if (pc["crop_pct"] is JsonNode cp) cfg = cfg with { CropPct = cp.GetValue<float>() };
                if (pc["interpolation"] is JsonNode ip) cfg = cfg with { Interpolation = ip.GetValue<string>() };
            }
            if (o["label_names"] is JsonNode lnode)
            {
                if (lnode is not JsonArray ln) throw new ViTQuantException($"{cfgPath}: 'label_names' must be an array of strings");
                cfg = cfg with { ClassNames = ln.Select(x => x?.GetValue<string>() ?? throw new ViTQuantException($"{cfgPath}: null in 'label_names'")).ToArray() };
            }
            else if (o["id2label"] is JsonNode inode)
            {
                // Hugging Face's form: {"0": "tench", "1": "goldfish", …}; every index below num_classes once.
                if (inode is not JsonObject id2) throw new ViTQuantException($"{cfgPath}: 'id2label' must be an object of index → name");
                var names = new string?[cfg.NumClasses];
                foreach (var (k, v) in id2)
                {
                    if (!int.TryParse(k, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i) || i >= names.Length)
                        throw new ViTQuantException($"{cfgPath}: 'id2label' key '{k}' is not a class index below {names.Length}");
                    names[i] = v?.GetValue<string>() ?? throw new ViTQuantException($"{cfgPath}: null in 'id2label'");
                }
                int missing = Array.IndexOf(names, null);
                if (missing >= 0) throw new ViTQuantException($"{cfgPath}: 'id2label' has no name for class {missing}");
                cfg = cfg with { ClassNames = names.Select(n => n!).ToArray() };
            }
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new ViTQuantException($"{cfgPath}: a value has the wrong JSON type ({e.Message})");
        }
        if (cfg.Mean.Length != cfg.InChans && cfg.Mean.Length == 3 && cfg.InChans == 1)
            cfg = cfg with { Mean = cfg.Mean[..1], Std = cfg.Std[..1] };
        cfg = cfg with { Architecture = arch };
        try { return cfg.Validated(); }
        catch (ViTQuantException e) { throw new ViTQuantException($"{cfgPath}: {e.Message}"); }
    }

    /// <summary>timm model_args that change training only (dropout and stochastic depth), not inference.</summary>
    private static readonly HashSet<string> TrainingOnlyArgs = new(StringComparer.Ordinal)
    {
        "drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate", "patch_drop_rate",
    };

    private static JsonObject? Section(JsonObject o, string key, string cfgPath) => o[key] switch
    {
        null => null,
        JsonObject obj => obj,
        var other => throw new ViTQuantException($"{cfgPath}: '{key}' must be a JSON object, got {other.ToJsonString()}"),
    };

    /// <summary>An int, or timm's [h, w] with h = w (only square images and patches are supported).</summary>
    private static int Square(JsonNode v, string key, string cfgPath)
    {
        if (v is not JsonArray a) return v.GetValue<int>();
        if (a.Count != 2 || a[0] is null || a[1] is null || a[0]!.GetValue<int>() != a[1]!.GetValue<int>())
            throw new ViTQuantException($"{cfgPath}: model_args '{key}' = {v.ToJsonString()} is not square; only square sizes are supported");
        return a[0]!.GetValue<int>();
    }

    private static float[] Floats(JsonNode v, string key, string cfgPath) =>
        v is JsonArray a && a.All(x => x != null)
            ? a.Select(x => x!.GetValue<float>()).ToArray()
            : throw new ViTQuantException($"{cfgPath}: pretrained_cfg '{key}' must be an array of numbers, got {v.ToJsonString()}");
}
