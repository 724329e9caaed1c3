// Vision Transformer configuration: architecture, input geometry and preprocessing, validated on
// construction. The named timm architectures map to their published shapes; our own checkpoints store
// this record as JSON in the safetensors metadata.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ViTQuant.Models;

/// <summary>Immutable ViT/DeiT configuration. The constructor throws ViTQuantException on inconsistent values.</summary>
public sealed record ViTConfig : IModelConfig
{
    /// <inheritdoc/>
    public string Architecture { get; init; } = "vit_custom";
    /// <inheritdoc/>
    public int ImageSize { get; init; } = 224;
    /// <inheritdoc/>
    public int PatchSize { get; init; } = 16;
    /// <inheritdoc/>
    public int InChans { get; init; } = 3;
    /// <inheritdoc/>
    public int NumClasses { get; init; } = 1000;
    /// <summary>Token width C (embedding dimension).</summary>
    public int EmbedDim { get; init; } = 192;
    /// <summary>Number of transformer blocks.</summary>
    public int Depth { get; init; } = 12;
    /// <summary>Attention heads per block; must divide <see cref="EmbedDim"/>.</summary>
    public int NumHeads { get; init; } = 3;
    /// <summary>MLP hidden width as a multiple of <see cref="EmbedDim"/>.</summary>
    public float MlpRatio { get; init; } = 4f;
    /// <summary>Whether a learned class token is prepended to the patch tokens.</summary>
    public bool ClassToken { get; init; } = true;
    /// <summary>DeiT distilled model: a distillation token after the class token and a second head (head_dist) whose logits are averaged with head's.</summary>
    public bool Distilled { get; init; }
    /// <summary>"token" (class token → head) or "avg" (mean of patch tokens → fc_norm → head).</summary>
    public string GlobalPool { get; init; } = "token";
    /// <summary>Epsilon of every LayerNorm.</summary>
    public float LayerNormEps { get; init; } = 1e-6f;
    /// <inheritdoc/>
    public float[] Mean { get; init; } = { 0.485f, 0.456f, 0.406f };
    /// <inheritdoc/>
    public float[] Std { get; init; } = { 0.229f, 0.224f, 0.225f };
    /// <inheritdoc/>
    public float CropPct { get; init; } = 0.875f;
    /// <inheritdoc/>
    public string Interpolation { get; init; } = "bicubic";
    /// <inheritdoc/>
    public string[]? ClassNames { get; init; }

    /// <summary>Patches per side (ImageSize / PatchSize).</summary>
    [JsonIgnore] public int GridSize => ImageSize / PatchSize;
    /// <summary>Patch tokens per image (GridSize²).</summary>
    [JsonIgnore] public int NumPatches => GridSize * GridSize;
    /// <summary>Tokens before the patch tokens: class token and distillation token, 0 to 2.</summary>
    [JsonIgnore] public int NumPrefixTokens => (ClassToken ? 1 : 0) + (Distilled ? 1 : 0);
    /// <summary>Sequence length N: patch tokens plus prefix tokens.</summary>
    [JsonIgnore] public int NumTokens => NumPatches + NumPrefixTokens;
    /// <summary>Per-head width (EmbedDim / NumHeads).</summary>
    [JsonIgnore] public int HeadDim => EmbedDim / NumHeads;
    /// <summary>MLP hidden width (EmbedDim × MlpRatio, truncated).</summary>
    [JsonIgnore] public int MlpHidden => (int)(EmbedDim * MlpRatio);
    /// <inheritdoc/>
    [JsonIgnore] public string Family => "vit";

    /// <inheritdoc/>
    public string DescribeShape() => $"depth {Depth}, width {EmbedDim}, heads {NumHeads}, mlp {MlpHidden}, {NumTokens} tokens";

    /// <inheritdoc/>
    public IReadOnlyList<string> BlockPrefixes() => Enumerable.Range(0, Depth).Select(i => $"blocks.{i}").ToArray();

    /// <summary>Every weight layer of the model, in forward order.</summary>
    public IEnumerable<string> WeightLayers()
    {
        yield return "patch_embed.proj";
        for (int i = 0; i < Depth; i++)
        {
            yield return $"blocks.{i}.attn.qkv";
            yield return $"blocks.{i}.attn.proj";
            yield return $"blocks.{i}.mlp.fc1";
            yield return $"blocks.{i}.mlp.fc2";
        }
        yield return "head";
        if (Distilled) yield return "head_dist";
    }

    /// <summary>Every activation point of the model, in forward order.</summary>
    public IEnumerable<string> ActivationPoints()
    {
        yield return "patch_embed.proj";
        for (int i = 0; i < Depth; i++)
            foreach (var p in new[] { "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.probs", "attn.proj", "mlp.fc1", "mlp.fc2" })
                yield return $"blocks.{i}.{p}";
        yield return "head";
        if (Distilled) yield return "head_dist";
    }

    /// <summary>Throws ViTQuantException naming the first inconsistent field.</summary>
    public ViTConfig Validated()
    {
        [System.Diagnostics.CodeAnalysis.DoesNotReturn]
        void Fail(string m) => throw new ViTQuantException($"model config ({Architecture}): {m}");
        if (ImageSize <= 0 || PatchSize <= 0) Fail($"image size {ImageSize} and patch size {PatchSize} must be positive");
        if (ImageSize % PatchSize != 0) Fail($"image size {ImageSize} is not divisible by patch size {PatchSize}");
        if (InChans <= 0) Fail($"in_chans {InChans} must be positive");
        if (NumClasses <= 0) Fail($"num_classes {NumClasses} must be positive");
        if (EmbedDim <= 0 || Depth <= 0 || NumHeads <= 0) Fail("embed_dim, depth and num_heads must be positive");
        if (EmbedDim % NumHeads != 0) Fail($"embed_dim {EmbedDim} is not divisible by num_heads {NumHeads}");
        if (MlpRatio <= 0 || MlpHidden <= 0) Fail($"mlp_ratio {MlpRatio} must be positive");
        if (GlobalPool != "token" && GlobalPool != "avg") Fail($"global_pool '{GlobalPool}' is not 'token' or 'avg'");
        if (GlobalPool == "token" && !ClassToken) Fail("global_pool 'token' needs a class token");
        if (Distilled && !ClassToken) Fail("a distilled model needs a class token");
        // timm's distilled model pools its two prefix tokens; with 'avg' there is no distillation token output
        if (Distilled && GlobalPool != "token") Fail($"a distilled model needs global_pool 'token', got '{GlobalPool}'");
        // null arrays can only come from JSON ("Mean": null); without this check they surface as NullReferenceException
        if (Mean is null || Std is null) Fail("mean and std must be arrays");
        if (Architecture is null || GlobalPool is null || Interpolation is null) Fail("architecture, global_pool and interpolation must be strings");
        if (Mean.Length != InChans || Std.Length != InChans) Fail($"mean/std have {Mean.Length}/{Std.Length} values for {InChans} channels");
        if (Std.Any(s => !(s > 0))) Fail("std values must be positive");
        if (!(CropPct > 0 && CropPct <= 1)) Fail($"crop_pct {CropPct} must be in (0, 1]");
        if (LayerNormEps <= 0) Fail("layer norm eps must be positive");
        if (ClassNames != null && ClassNames.Length != NumClasses) Fail($"{ClassNames.Length} class names for {NumClasses} classes");
        return this;
    }

    private static readonly float[] ImageNetMean = { 0.485f, 0.456f, 0.406f }, ImageNetStd = { 0.229f, 0.224f, 0.225f };
    private static readonly float[] HalfMean = { 0.5f, 0.5f, 0.5f }, HalfStd = { 0.5f, 0.5f, 0.5f };

    /// <summary>Known architectures by timm name (plus our Fashion-MNIST default).</summary>
    public static ViTConfig FromArchitecture(string name)
    {
        ViTConfig Vit(int dim, int depth, int heads) => new()
        {
            Architecture = name, EmbedDim = dim, Depth = depth, NumHeads = heads, Mean = HalfMean, Std = HalfStd, CropPct = 0.9f,
        };
        ViTConfig Deit(int dim, int depth, int heads, bool distilled) => new()
        {
            Architecture = name, EmbedDim = dim, Depth = depth, NumHeads = heads, Distilled = distilled,
            Mean = ImageNetMean, Std = ImageNetStd, CropPct = 0.875f,
        };
        return (name switch
        {
            "vit_tiny_patch16_224" => Vit(192, 12, 3),
            "vit_small_patch16_224" => Vit(384, 12, 6),
            "vit_base_patch16_224" => Vit(768, 12, 12),
            "deit_tiny_patch16_224" => Deit(192, 12, 3, false),
            "deit_small_patch16_224" => Deit(384, 12, 6, false),
            "deit_base_patch16_224" => Deit(768, 12, 12, false),
            "deit_tiny_distilled_patch16_224" => Deit(192, 12, 3, true),
            "deit_small_distilled_patch16_224" => Deit(384, 12, 6, true),
            "deit_base_distilled_patch16_224" => Deit(768, 12, 12, true),
            "vit_fmnist" => FashionMnistDefault(),
            _ => throw new ViTQuantException($"unknown architecture '{name}' (known: {string.Join(", ", KnownArchitectures)})"),
        }).Validated();
    }

    /// <summary>The architecture names <see cref="FromArchitecture"/> accepts.</summary>
    public static readonly string[] KnownArchitectures =
    {
        "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
        "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
        "deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224", "deit_base_distilled_patch16_224",
        "vit_fmnist",
    };

    /// <summary>The shipped default: 28×28 grey images, patch 4 (7×7 grid + class token), width 128, 4 heads.</summary>
    public static ViTConfig FashionMnistDefault() => new()
    {
        Architecture = "vit_fmnist", ImageSize = 28, PatchSize = 4, InChans = 1, NumClasses = 10,
        EmbedDim = 128, Depth = 6, NumHeads = 4, MlpRatio = 2f, Mean = new[] { 0.2860f }, Std = new[] { 0.3530f },
        CropPct = 1f,
        ClassNames = new[] { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" },
    };

    private static readonly JsonSerializerOptions JsonOpts = new() { WriteIndented = false };

    /// <inheritdoc/>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOpts);

    /// <summary>
    /// Parses and validates a config written by <see cref="ToJson"/>. Throws ViTQuantException whose
    /// message starts with <paramref name="source"/> (the file) on invalid JSON or inconsistent values.
    /// </summary>
    public static ViTConfig FromJson(string json, string source)
    {
        ViTConfig? cfg;
        try { cfg = JsonSerializer.Deserialize<ViTConfig>(json, JsonOpts); }
        catch (JsonException e) { throw new ViTQuantException($"{source}: model config is not valid JSON ({e.Message})"); }
        if (cfg == null) throw new ViTQuantException($"{source}: empty model config");
        // Validated() names the field but not the file; the user needs both.
        try { return cfg.Validated(); }
        catch (ViTQuantException e) { throw new ViTQuantException($"{source}: {e.Message}"); }
    }
}
