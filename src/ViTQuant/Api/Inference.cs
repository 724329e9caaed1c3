// Inference as vitq infer does it, the interop contract: normalised pixels [B, C, H, W] read from a safetensors
// file → logits [B, K] and the top classes, optionally with the attention maps of every block and the input (and,
// quantized, the output) of chosen activation quantization points, written back as one safetensors file whose
// tensor names and metadata other tools read (logits, top5_indices, top5_probs, blocks.{i}.attn.probs,
// input.POINT, quantized.POINT; vitq.model, vitq.engine, vitq.class_names).
using System.Text.Json;
using System.Text.RegularExpressions;
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Api;

/// <summary>What <see cref="Vitq.InferWithTaps"/> records besides the logits.</summary>
public sealed record InferenceTaps
{
    /// <summary>Record the attention probabilities of every block (blocks.{i}.attn.probs; Swin: layers.{s}.blocks.{b}.attn.probs).</summary>
    public bool AttentionMaps { get; init; }

    /// <summary>
    /// Activation quantization points whose input (input.POINT) and, under quantizing hooks, output (quantized.POINT) are
    /// recorded: point names, '*' globs (blocks.*.mlp.fc2) or "all"; empty: none.
    /// </summary>
    public IReadOnlyList<string> Points { get; init; } = Array.Empty<string>();
}

/// <summary>The min(k, classes) most probable classes of each image, in descending probability (lower index first on ties).</summary>
/// <param name="K">Classes kept per image.</param>
/// <param name="Indices">Class indices, row-major [images, K].</param>
/// <param name="Probabilities">Their softmax probabilities [images, K].</param>
public sealed record TopPredictions(int K, int[] Indices, Tensor Probabilities)
{
    /// <summary>Images.</summary>
    public int Count => Probabilities.Shape[0];

    /// <summary>The j-th most likely class of image b and its probability.</summary>
    public (int Index, float Probability) this[int b, int j] => (Indices[b * K + j], Probabilities.Data[b * K + j]);
}

/// <summary>Logits of one batch and what was recorded with them, ready to print or save as the interop file.</summary>
/// <param name="Config">The model's configuration (class names, block layout).</param>
/// <param name="Logits">Logits [images, classes].</param>
/// <param name="AttentionMaps">Attention probabilities by tap name, in forward order (empty unless asked for).</param>
/// <param name="PointTensors">input.POINT / quantized.POINT tensors in forward order (empty unless asked for).</param>
public sealed record InferenceResult(IModelConfig Config, Tensor Logits, IReadOnlyList<KeyValuePair<string, Tensor>> AttentionMaps,
    IReadOnlyList<KeyValuePair<string, Tensor>> PointTensors)
{
    /// <summary>Logits alone (another engine's: the integer runtime, ONNX Runtime), nothing recorded.</summary>
    public InferenceResult(IModelConfig config, Tensor logits)
        : this(config, logits, Array.Empty<KeyValuePair<string, Tensor>>(), Array.Empty<KeyValuePair<string, Tensor>>()) { }

    /// <summary>The <paramref name="k"/> most probable classes of every image. Throws ArgumentException for k &lt; 1.</summary>
    public TopPredictions Top(int k = 5)
    {
        if (k < 1) throw new ArgumentException($"is {k}, expected at least 1", nameof(k));
        int b = Logits.Shape[0], classes = Logits.Shape[1];
        k = Math.Min(k, classes);
        var idx = new int[b * k];
        var prob = new Tensor(b, k);
        for (int i = 0; i < b; i++)
        {
            var (ii, pp) = TopK.Of(Logits.Data.AsSpan(i * classes, classes), k);
            ii.CopyTo(idx, i * k);
            pp.CopyTo(prob.Data.AsSpan(i * k, k));
        }
        return new TopPredictions(k, idx, prob);
    }

    /// <summary>
    /// Writes the interop file atomically: logits, top5_indices (I32) and top5_probs, then the attention maps and point
    /// tensors; metadata vitq.model, vitq.engine (<paramref name="engine"/>: sim, int8 or onnx) and vitq.class_names.
    /// Throws ArgumentException for a bad <paramref name="path"/> before anything is written.
    /// </summary>
    public void Save(string path, string engine = "sim", bool overwrite = false)
    {
        ArgumentNullException.ThrowIfNull(engine);
        Vitq.CheckOutput(path, overwrite, nameof(path));
        var top = Top(5);
        var outs = new List<SafeTensorsEntry>
        {
            SafeTensorsEntry.FromTensor("logits", Logits),
            SafeTensorsEntry.FromInt32("top5_indices", top.Indices, top.Count, top.K),
            SafeTensorsEntry.FromTensor("top5_probs", top.Probabilities),
        };
        outs.AddRange(AttentionMaps.Select(t => SafeTensorsEntry.FromTensor(t.Key, t.Value)));
        outs.AddRange(PointTensors.Select(t => SafeTensorsEntry.FromTensor(t.Key, t.Value)));
        var meta = new Dictionary<string, string> { ["vitq.model"] = Config.Architecture, ["vitq.engine"] = engine };
        if (Config.ClassNames != null) meta["vitq.class_names"] = JsonSerializer.Serialize(Config.ClassNames);
        SafeTensorsWriter.Write(path, outs, meta);
    }
}

public static partial class Vitq
{
    /// <summary>The input tensor names of an inference file, the contract's first; synthetic sets use the second.</summary>
    internal static readonly string[] InputNames = { "pixel_values", "images" };

    /// <summary>
    /// The batch in a safetensors file, in <paramref name="config"/>'s normalised space: pixel_values, else a synthetic set's
    /// images (re-normalised when the set was made for a model with another mean/std), else a bare images tensor. Throws
    /// ViTQuantException naming the file for a missing tensor, integer pixels or a shape the model cannot take.
    /// </summary>
    public static Tensor ReadImages(string path, IModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(config);
        var f = SafeTensorsFile.Read(path);
        string? name = InputNames.FirstOrDefault(f.Contains)
            ?? throw new ViTQuantException($"{path}: no tensor named 'pixel_values' (or a synthetic set's 'images')");
        // Integer pixels are almost surely raw 0..255 values: converting them silently gives garbage logits.
        string dtype = f.Info(name).DType;
        if (!(dtype.StartsWith('F') || dtype == "BF16"))
            throw new ViTQuantException($"{path}: {name} has dtype {dtype}; infer expects normalised floating-point pixels (F32, F16, BF16 or F64)");
        var c = config;
        var x = name == "images" && f.Metadata.TryGetValue(SyntheticSet.FormatKey, out var fmt) && fmt == SyntheticSet.Format ? SyntheticSet.Load(path).ImagesFor(c) : f.GetTensor(name);
        if (x.Rank != 4 || x.Shape[1] != c.InChans || x.Shape[2] != c.ImageSize || x.Shape[3] != c.ImageSize)
            throw new ViTQuantException($"{path}: {name} has shape {Tensor.ShapeString(x.Shape)}, the model expects [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
        return x;
    }

    /// <summary>
    /// Logits of normalised <paramref name="images"/> [B, C, H, W] through the simulation (fake-quantized by
    /// <paramref name="hooks"/> when given) with what <paramref name="taps"/> asks recorded. Throws ArgumentException naming
    /// <paramref name="images"/> for another shape, or <paramref name="taps"/> for a point that matches none of the model's.
    /// </summary>
    public static InferenceResult InferWithTaps(VisionModel model, Tensor images, IModelHooks? hooks = null, InferenceTaps? taps = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(images);
        taps ??= new InferenceTaps();
        var c = model.Config;
        if (images.Rank != 4 || images.Shape[0] < 1 || images.Shape[1] != c.InChans || images.Shape[2] != c.ImageSize || images.Shape[3] != c.ImageSize)
            throw new ArgumentException($"is {Tensor.ShapeString(images.Shape)}, the model ({c.Architecture}) expects [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]", nameof(images));
        var points = ResolvePoints(taps.Points, c);
        bool maps = taps.AttentionMaps;
        var pointRec = new PointRecorder(points.Contains, hooks);
        // Always through a hooks object, even with nothing to record: the unfused attention graph, the same
        // numbers whatever is tapped.
        var rec = new TapRecorder(n => maps && n.EndsWith(".attn.probs", StringComparison.Ordinal), pointRec);
        Tensor logits;
        using (Autograd.NoGrad()) logits = model.Forward(images, rec);
        // forward order: blocks.{i}.attn.probs (ViT), layers.{s}.blocks.{b}.attn.probs (Swin, [B·windows, heads, M², M²])
        var attention = new List<KeyValuePair<string, Tensor>>();
        foreach (var block in maps ? c.BlockPrefixes() : Array.Empty<string>())
            if (rec.Taps.TryGetValue($"{block}.attn.probs", out var p)) attention.Add(new($"{block}.attn.probs", p));
        return new InferenceResult(c, logits, attention, pointRec.Recorded.Select(t => new KeyValuePair<string, Tensor>(t.Name, t.Value)).ToList());
    }

    /// <summary>The activation points that names and globs (or "all") select; ArgumentException naming taps for one that selects none.</summary>
    private static HashSet<string> ResolvePoints(IReadOnlyList<string> patterns, IModelConfig c)
    {
        var all = QuantPlan.ActivationPoints(c).ToList();
        var chosen = new HashSet<string>();
        foreach (var raw in patterns.Select(p => p.Trim()).Where(p => p.Length > 0))
        {
            if (raw == "all") { chosen.UnionWith(all); continue; }
            var re = new Regex("^" + Regex.Escape(raw).Replace(@"\*", ".*") + "$");
            var hits = all.Where(p => re.IsMatch(p)).ToList();
            if (hits.Count == 0)
                throw new ArgumentException($"'{raw}' is not a quantization point of this model (points: {all[0]}, …, {all[^1]}; e.g. blocks.0.attn.qkv, blocks.*.mlp.fc2; or 'all')", "taps");
            chosen.UnionWith(hits);
        }
        return chosen;
    }
}
