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

public static class ModelIO
{
    public const string ConfigKey = "vitq.config";
    public const string FormatKey = "vitq.format";
    public const string DefaultModelName = "vit_fmnist.safetensors";
    private const string EmbeddedResource = "ViTQuant.DefaultModel.safetensors";

    /// <summary>True when this build carries the default model.</summary>
    public static bool HasEmbeddedDefault => typeof(ModelIO).Assembly.GetManifestResourceInfo(EmbeddedResource) != null;

    /// <summary>
    /// Loads a model: null → the embedded default; a folder → timm layout; a file → ours (config in
    /// metadata) or timm (sibling config.json). Throws ViTQuantException naming the file on any problem.
    /// </summary>
    public static VisionTransformer Load(string? path)
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
        if (file.Metadata.TryGetValue(ConfigKey, out var json))
            return Build(ViTConfig.FromJson(json, path), file, path);
        var cfgPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "config.json");
        if (!File.Exists(cfgPath))
            throw new ViTQuantException($"{path}: no '{ConfigKey}' metadata and no sibling config.json, cannot tell the architecture");
        return Build(ParseTimmConfig(cfgPath), file, path);
    }

    public static VisionTransformer LoadDefault()
    {
        using var s = typeof(ModelIO).Assembly.GetManifestResourceStream(EmbeddedResource)
            ?? throw new ViTQuantException("this build has no embedded default model; pass --model");
        var bytes = new byte[s.Length];
        s.ReadExactly(bytes);
        var file = SafeTensorsFile.Parse("<embedded default model>", bytes);
        return Build(ViTConfig.FromJson(file.Metadata[ConfigKey], "<embedded default model>"), file, "<embedded default model>");
    }

    private static VisionTransformer LoadTimm(string stPath, string cfgPath)
    {
        if (!File.Exists(cfgPath)) throw new ViTQuantException($"{cfgPath}: timm config.json not found");
        return Build(ParseTimmConfig(cfgPath), SafeTensorsFile.Read(stPath), stPath);
    }

    private static VisionTransformer Build(ViTConfig cfg, SafeTensorsFile file, string source)
    {
        var model = new VisionTransformer(cfg);
        var state = new Dictionary<string, Tensor>();
        foreach (var name in file.Names) state[name] = file.GetTensor(name);
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
    public static void Save(VisionTransformer model, string path, IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        var meta = new Dictionary<string, string> { [FormatKey] = "vitq-float/1", [ConfigKey] = model.Config.ToJson() };
        if (extraMetadata != null) foreach (var (k, v) in extraMetadata) meta[k] = v;
        SafeTensorsWriter.Write(path, model.StateDict().Select(kv => (kv.Key, kv.Value)), meta);
    }

    /// <summary>Reads timm's config.json: architecture (+ model_args overrides), num_classes, pretrained_cfg.</summary>
    public static ViTConfig ParseTimmConfig(string cfgPath)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(cfgPath)); }
        catch (JsonException e) { throw new ViTQuantException($"{cfgPath}: not valid JSON ({e.Message})"); }
        if (root is not JsonObject o) throw new ViTQuantException($"{cfgPath}: expected a JSON object");
        string arch = o["architecture"]?.GetValue<string>() ?? throw new ViTQuantException($"{cfgPath}: missing 'architecture'");
        ViTConfig cfg;
        try { cfg = ViTConfig.FromArchitecture(arch); }
        catch (ViTQuantException e) { throw new ViTQuantException($"{cfgPath}: {e.Message}"); }
        try
        {
            if (o["num_classes"] is JsonNode nc) cfg = cfg with { NumClasses = nc.GetValue<int>() };
            if (o["global_pool"] is JsonNode gp && gp.GetValue<string>() is { Length: > 0 } g) cfg = cfg with { GlobalPool = g };
            if (o["model_args"] is JsonObject ma)
            {
                foreach (var (k, v) in ma)
                {
                    if (v == null) continue;
                    cfg = k switch
                    {
                        "img_size" => cfg with { ImageSize = v.GetValue<int>() },
                        "patch_size" => cfg with { PatchSize = v.GetValue<int>() },
                        "in_chans" => cfg with { InChans = v.GetValue<int>() },
                        "embed_dim" => cfg with { EmbedDim = v.GetValue<int>() },
                        "depth" => cfg with { Depth = v.GetValue<int>() },
                        "num_heads" => cfg with { NumHeads = v.GetValue<int>() },
                        "mlp_ratio" => cfg with { MlpRatio = v.GetValue<float>() },
                        "class_token" => cfg with { ClassToken = v.GetValue<bool>() },
                        "num_classes" => cfg with { NumClasses = v.GetValue<int>() },
                        "global_pool" => cfg with { GlobalPool = v.GetValue<string>() },
                        _ => throw new ViTQuantException($"{cfgPath}: unsupported model_args key '{k}'"),
                    };
                }
            }
            if (o["pretrained_cfg"] is JsonObject pc)
            {
                if (pc["mean"] is JsonArray m) cfg = cfg with { Mean = m.Select(x => x!.GetValue<float>()).ToArray() };
                if (pc["std"] is JsonArray s) cfg = cfg with { Std = s.Select(x => x!.GetValue<float>()).ToArray() };
                if (pc["crop_pct"] is JsonNode cp) cfg = cfg with { CropPct = cp.GetValue<float>() };
                if (pc["interpolation"] is JsonNode ip) cfg = cfg with { Interpolation = ip.GetValue<string>() };
            }
            if (o["label_names"] is JsonArray ln) cfg = cfg with { ClassNames = ln.Select(x => x!.GetValue<string>()).ToArray() };
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
}
