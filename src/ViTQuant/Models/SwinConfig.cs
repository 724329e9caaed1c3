// Swin Transformer configuration (timm's SwinTransformer arguments), validated on construction.
//
// Geometry, as timm computes it:
//   grid        G = ImageSize / PatchSize (the patch embedding's feature map, G×G)
//   stage s     width D_s = EmbedDim·2^s; stages s > 0 start with a 2×2 patch merging
//   declared    R_s = ⌊G / 2^s⌋: the input_resolution timm hands the stage's blocks; it decides the
//               window (M_s = min(WindowSize, R_s): timm shrinks a window to a smaller feature map) and
//               the shift (⌊WindowSize/2⌋ on odd blocks, 0 when R_s ≤ WindowSize), and the shifted-window
//               mask is built for it
//   actual      A_s = ⌈A_{s−1} / 2⌉: patch merging zero-pads an odd map, so the map can be larger than R_s;
//               a block zero-pads a map that its window does not divide.
// timm cannot run a shifted stage whose padded actual map differs from its padded declared one (its
// precomputed mask then has the wrong number of windows): Validated() refuses exactly that case.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ViTQuant.Models;

/// <summary>Immutable Swin configuration. <see cref="Validated"/> throws ViTQuantException naming the setting.</summary>
public sealed record SwinConfig : IModelConfig
{
    /// <inheritdoc/>
    public string Architecture { get; init; } = "swin_custom";
    /// <inheritdoc/>
    public int ImageSize { get; init; } = 224;
    /// <inheritdoc/>
    public int PatchSize { get; init; } = 4;
    /// <inheritdoc/>
    public int InChans { get; init; } = 3;
    /// <inheritdoc/>
    public int NumClasses { get; init; } = 1000;
    /// <summary>Width of the first stage (the patch embedding's channels); stage s has EmbedDim·2^s.</summary>
    public int EmbedDim { get; init; } = 96;
    /// <summary>Blocks per stage; its length is the number of stages.</summary>
    public int[] Depths { get; init; } = { 2, 2, 6, 2 };
    /// <summary>Attention heads per stage (one entry per stage, each dividing that stage's width).</summary>
    public int[] NumHeads { get; init; } = { 3, 6, 12, 24 };
    /// <summary>Attention window side in tokens (M); a stage whose map is smaller shrinks it to the map.</summary>
    public int WindowSize { get; init; } = 7;
    /// <summary>MLP hidden width as a multiple of the stage width.</summary>
    public float MlpRatio { get; init; } = 4f;
    /// <summary>timm's Swin uses nn.LayerNorm's default eps.</summary>
    public float LayerNormEps { get; init; } = 1e-5f;
    /// <inheritdoc/>
    public float[] Mean { get; init; } = { 0.485f, 0.456f, 0.406f };
    /// <inheritdoc/>
    public float[] Std { get; init; } = { 0.229f, 0.224f, 0.225f };
    /// <inheritdoc/>
    public float CropPct { get; init; } = 0.9f;
    /// <inheritdoc/>
    public string Interpolation { get; init; } = "bicubic";
    /// <inheritdoc/>
    public string[]? ClassNames { get; init; }

    /// <summary>Number of stages (Depths.Length).</summary>
    [JsonIgnore] public int NumStages => Depths.Length;
    /// <summary>Side of the patch embedding's feature map G (ImageSize / PatchSize).</summary>
    [JsonIgnore] public int GridSize => ImageSize / PatchSize;
    /// <inheritdoc/>
    [JsonIgnore] public string Family => "swin";

    /// <inheritdoc/>
    public string DescribeShape() =>
        $"stages {NumStages}, depths [{string.Join(", ", Depths)}], widths [{string.Join(", ", Enumerable.Range(0, NumStages).Select(StageDim))}], "
        + $"heads [{string.Join(", ", NumHeads)}], windows [{string.Join(", ", Enumerable.Range(0, NumStages).Select(StageWindow))}], "
        + $"maps [{string.Join(", ", Enumerable.Range(0, NumStages).Select(ActualResolution))}]";

    /// <inheritdoc/>
    public IReadOnlyList<string> BlockPrefixes() =>
        Enumerable.Range(0, NumStages).SelectMany(s => Enumerable.Range(0, Depths[s]).Select(b => $"layers.{s}.blocks.{b}")).ToArray();

    /// <summary>Every weight layer in forward order: patch_embed.proj, per stage its merging reduction and blocks, head.fc.</summary>
    public IEnumerable<string> WeightLayers()
    {
        yield return "patch_embed.proj";
        for (int s = 0; s < NumStages; s++)
        {
            if (s > 0) yield return $"layers.{s}.downsample.reduction";
            for (int b = 0; b < Depths[s]; b++)
                foreach (var p in new[] { "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2" })
                    yield return $"layers.{s}.blocks.{b}.{p}";
        }
        yield return "head.fc";
    }

    /// <summary>Every activation point in forward order (a layer's input, and per block q, k, v and the window attention probabilities).</summary>
    public IEnumerable<string> ActivationPoints()
    {
        yield return "patch_embed.proj";
        for (int s = 0; s < NumStages; s++)
        {
            if (s > 0) yield return $"layers.{s}.downsample.reduction";
            for (int b = 0; b < Depths[s]; b++)
                foreach (var p in new[] { "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.probs", "attn.proj", "mlp.fc1", "mlp.fc2" })
                    yield return $"layers.{s}.blocks.{b}.{p}";
        }
        yield return "head.fc";
    }

    /// <summary>Channels of stage s (D·2^s).</summary>
    public int StageDim(int s) => EmbedDim << s;

    /// <summary>The resolution timm declares for stage s's blocks, ⌊G / 2^s⌋.</summary>
    public int DeclaredResolution(int s) => GridSize >> s;

    /// <summary>The feature map stage s's blocks actually see: merging pads odd maps, so ⌈·/2⌉ per stage.</summary>
    public int ActualResolution(int s)
    {
        int r = GridSize;
        for (int i = 0; i < s; i++) r = (r + 1) / 2;
        return r;
    }

    /// <summary>Window side of stage s: timm shrinks the window to a smaller declared feature map.</summary>
    public int StageWindow(int s) => Math.Min(WindowSize, DeclaredResolution(s));

    /// <summary>Shift of block b in stage s: ⌊WindowSize/2⌋ on odd blocks, none when the window covers the map.</summary>
    public int BlockShift(int s, int b) => b % 2 == 0 || DeclaredResolution(s) <= WindowSize ? 0 : WindowSize / 2;

    /// <summary>MLP hidden width of stage s.</summary>
    public int MlpHidden(int s) => (int)(StageDim(s) * MlpRatio);

    private static int PadTo(int n, int m) => (n + m - 1) / m * m;

    /// <summary>Throws ViTQuantException naming the first inconsistent setting.</summary>
    public SwinConfig Validated()
    {
        [System.Diagnostics.CodeAnalysis.DoesNotReturn]
        void Fail(string m) => throw new ViTQuantException($"model config ({Architecture}): {m}");
        if (Architecture is null || Interpolation is null) Fail("architecture and interpolation must be strings");
        if (Depths is null || NumHeads is null || Mean is null || Std is null) Fail("depths, num_heads, mean and std must be arrays");
        if (ImageSize <= 0 || PatchSize <= 0) Fail($"image size {ImageSize} and patch size {PatchSize} must be positive");
        if (ImageSize % PatchSize != 0) Fail($"image size {ImageSize} is not divisible by patch size {PatchSize}");
        if (InChans <= 0 || NumClasses <= 0) Fail("in_chans and num_classes must be positive");
        if (EmbedDim <= 0) Fail($"embed_dim {EmbedDim} must be positive");
        if (Depths.Length == 0 || Depths.Any(d => d <= 0)) Fail($"depths [{string.Join(", ", Depths)}] must be positive, at least one stage");
        if (NumHeads.Length != Depths.Length) Fail($"{NumHeads.Length} num_heads for {Depths.Length} stages");
        if (WindowSize <= 0) Fail($"window_size {WindowSize} must be positive");
        if (!(MlpRatio > 0)) Fail($"mlp_ratio {MlpRatio} must be positive");
        if (!(LayerNormEps > 0)) Fail("layer norm eps must be positive");
        if (Mean.Length != InChans || Std.Length != InChans) Fail($"mean/std have {Mean.Length}/{Std.Length} values for {InChans} channels");
        if (Std.Any(v => !(v > 0))) Fail("std values must be positive");
        if (!(CropPct > 0 && CropPct <= 1)) Fail($"crop_pct {CropPct} must be in (0, 1]");
        if (ClassNames != null && ClassNames.Length != NumClasses) Fail($"{ClassNames.Length} class names for {NumClasses} classes");
        for (int s = 0; s < NumStages; s++)
        {
            if (NumHeads[s] <= 0 || StageDim(s) % NumHeads[s] != 0) Fail($"stage {s}: width {StageDim(s)} is not divisible by num_heads {NumHeads[s]}");
            if (DeclaredResolution(s) < 1)
                Fail($"stage {s}: the {GridSize}×{GridSize} patch grid halves to nothing after {s} patch mergings (image {ImageSize}, patch {PatchSize}, {NumStages} stages)");
            int m = StageWindow(s);
            bool shifted = Enumerable.Range(0, Depths[s]).Any(b => BlockShift(s, b) > 0);
            if (shifted && PadTo(ActualResolution(s), m) != PadTo(DeclaredResolution(s), m))
                Fail($"stage {s}: patch merging pads the map to {ActualResolution(s)}×{ActualResolution(s)} while timm builds the shifted-window mask "
                     + $"for {DeclaredResolution(s)}×{DeclaredResolution(s)} (window {m}); timm cannot run it either — make image_size / patch_size "
                     + $"({GridSize}) divisible by 2^{NumStages - 1}");
        }
        return this;
    }

    private static readonly float[] ImageNetMean = { 0.485f, 0.456f, 0.406f }, ImageNetStd = { 0.229f, 0.224f, 0.225f };

    /// <summary>The timm Swin architectures by name.</summary>
    public static SwinConfig FromArchitecture(string name)
    {
        SwinConfig Swin(int dim, int[] depths, int[] heads) => new()
        {
            Architecture = name, EmbedDim = dim, Depths = depths, NumHeads = heads, Mean = ImageNetMean, Std = ImageNetStd,
        };
        return (name switch
        {
            "swin_tiny_patch4_window7_224" => Swin(96, new[] { 2, 2, 6, 2 }, new[] { 3, 6, 12, 24 }),
            "swin_small_patch4_window7_224" => Swin(96, new[] { 2, 2, 18, 2 }, new[] { 3, 6, 12, 24 }),
            "swin_base_patch4_window7_224" => Swin(128, new[] { 2, 2, 18, 2 }, new[] { 4, 8, 16, 32 }),
            "swin_fmnist" => FashionMnist(),
            _ => throw new ViTQuantException($"unknown Swin architecture '{name}' (known: {string.Join(", ", KnownArchitectures)})"),
        }).Validated();
    }

    /// <summary>The architecture names <see cref="FromArchitecture"/> accepts.</summary>
    public static readonly string[] KnownArchitectures =
    {
        "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224", "swin_fmnist",
    };

    /// <summary>
    /// Our small Swin for Fashion-MNIST: 28×28 grey images, patch 2 (14×14 grid), window 4, width 64, three stages
    /// of two blocks (heads 2, 4, 8), MLP ratio 2. timm's rules give maps 14, 7, 4 (declared 3): stage 0 pads 14 → 16
    /// for its windows, stage 1 pads 7 → 8, both shift by 2 on odd blocks; stage 2's window shrinks to 3, unshifted.
    /// </summary>
    public static SwinConfig FashionMnist() => new()
    {
        Architecture = "swin_fmnist", ImageSize = 28, PatchSize = 2, InChans = 1, NumClasses = 10, EmbedDim = 64,
        Depths = new[] { 2, 2, 2 }, NumHeads = new[] { 2, 4, 8 }, WindowSize = 4, MlpRatio = 2f,
        Mean = new[] { 0.2860f }, Std = new[] { 0.3530f }, CropPct = 1f,
        ClassNames = ViTConfig.FashionMnistDefault().ClassNames,
    };

    /// <summary>
    /// A Swin from timm's config.json: <c>architecture</c> (a known Swin), <c>num_classes</c>, <c>model_args</c>
    /// overrides (img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size,
    /// mlp_ratio; dropout rates ignored), <c>pretrained_cfg</c> (mean, std, crop_pct, interpolation) and
    /// <c>label_names</c>. Throws ViTQuantException starting with <paramref name="source"/> for an unknown
    /// architecture or argument, a value of the wrong type, or an inconsistent result.
    /// </summary>
    public static SwinConfig FromTimmConfig(JsonElement root, string source)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new ViTQuantException($"{source}: expected a JSON object");
        SwinConfig c;
        try
        {
            string arch = root.TryGetProperty("architecture", out var a) ? a.GetString()! : throw new ViTQuantException($"{source}: missing 'architecture'");
            try { c = FromArchitecture(arch); }
            catch (ViTQuantException e) { throw new ViTQuantException($"{source}: {e.Message}"); }
            if (root.TryGetProperty("num_classes", out var nc)) c = c with { NumClasses = nc.GetInt32() };
            if (root.TryGetProperty("model_args", out var args) && args.ValueKind == JsonValueKind.Object)
                foreach (var p in args.EnumerateObject())
                {
                    var v = p.Value;
                    c = p.Name switch
                    {
                        "img_size" => c with { ImageSize = v.GetInt32() },
                        "patch_size" => c with { PatchSize = v.GetInt32() },
                        "in_chans" => c with { InChans = v.GetInt32() },
                        "num_classes" => c with { NumClasses = v.GetInt32() },
                        "embed_dim" => c with { EmbedDim = v.GetInt32() },
                        "depths" => c with { Depths = v.EnumerateArray().Select(e => e.GetInt32()).ToArray() },
                        "num_heads" => c with { NumHeads = v.EnumerateArray().Select(e => e.GetInt32()).ToArray() },
                        "window_size" => c with { WindowSize = v.GetInt32() },
                        "mlp_ratio" => c with { MlpRatio = v.GetSingle() },
                        "drop_rate" or "proj_drop_rate" or "attn_drop_rate" or "drop_path_rate" => c, // training only
                        _ => throw new ViTQuantException($"{source}: model_args.{p.Name} is not supported for Swin "
                             + "(known: img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size, mlp_ratio)"),
                    };
                }
            if (root.TryGetProperty("pretrained_cfg", out var pc) && pc.ValueKind == JsonValueKind.Object)
            {
                if (pc.TryGetProperty("mean", out var m)) c = c with { Mean = m.EnumerateArray().Select(e => e.GetSingle()).ToArray() };
                if (pc.TryGetProperty("std", out var sd)) c = c with { Std = sd.EnumerateArray().Select(e => e.GetSingle()).ToArray() };
                if (pc.TryGetProperty("crop_pct", out var cp)) c = c with { CropPct = cp.GetSingle() };
                if (pc.TryGetProperty("interpolation", out var ip)) c = c with { Interpolation = ip.GetString()! };
            }
            if (root.TryGetProperty("label_names", out var ln)) c = c with { ClassNames = ln.EnumerateArray().Select(e => e.GetString()!).ToArray() };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new ViTQuantException($"{source}: a value has the wrong JSON type ({e.Message})");
        }
        // a grey-image model under ImageNet's three-channel statistics keeps the first channel's (as ModelIO does for ViT)
        if (c.InChans == 1 && c.Mean.Length == 3 && c.Std.Length == 3) c = c with { Mean = c.Mean[..1], Std = c.Std[..1] };
        try { return c.Validated(); }
        catch (ViTQuantException e) { throw new ViTQuantException($"{source}: {e.Message}"); }
    }

    private static readonly JsonSerializerOptions JsonOpts = new() { WriteIndented = false };

    /// <inheritdoc/>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOpts);

    /// <summary>Parses and validates a config written by <see cref="ToJson"/>; errors start with <paramref name="source"/>.</summary>
    public static SwinConfig FromJson(string json, string source)
    {
        SwinConfig? cfg;
        try { cfg = JsonSerializer.Deserialize<SwinConfig>(json, JsonOpts); }
        catch (JsonException e) { throw new ViTQuantException($"{source}: model config is not valid JSON ({e.Message})"); }
        if (cfg == null) throw new ViTQuantException($"{source}: empty model config");
        try { return cfg.Validated(); }
        catch (ViTQuantException e) { throw new ViTQuantException($"{source}: {e.Message}"); }
    }
}
