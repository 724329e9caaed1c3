// The --dataset, --model and --labels flags, resolved through the library (ViTQuant.Api.Datasets, ModelIO)
// into datasets and models, with one-line errors.
using System.CommandLine;
using ViTQuant.Api;
using ViTQuant.Data;
using ViTQuant.Models;

namespace ViTQuant.Cli;

internal static class DataSources
{
    public static Option<string?> ModelOption() => new("--model") { Description = "model: our .safetensors, a timm folder (model.safetensors + config.json), or omitted for the shipped default" };

    public static Option<string> DatasetOption(string def = "fashion-mnist") => new("--dataset")
    {
        Description = "fashion-mnist (from /usr/share/datasets/fashion-mnist or $VITQ_FASHION_MNIST_DIR) or folder:PATH (one sub-folder per class)",
        DefaultValueFactory = _ => def,
    };

    public static Option<string> SplitOption(string def) => new("--split")
    {
        Description = "fashion-mnist split: train (55k), val (5k held out of the training file), test (official 10k), train-full (60k)",
        DefaultValueFactory = _ => def,
    };

    /// <summary>The shared <c>--labels FILE</c> flag: the class names of a folder dataset, one a line, in the model's output order.</summary>
    public static Option<string?> LabelsOption() => new("--labels")
    {
        Description = "class names, one a line in the model's output order, for labelling folder:PATH sub-folders (default: the model's own names)",
    };

    /// <summary>Reads a --labels file (<see cref="Datasets.ReadLabels"/>).</summary>
    public static string[] ReadLabels(string path, int numClasses) => Datasets.ReadLabels(path, numClasses);

    /// <summary>A float model of either family (ViT/DeiT or Swin).</summary>
    public static VisionModel LoadModel(string? path) => ModelIO.Load(path);

    /// <summary>A float model, or a quantized checkpoint as its model plus the hooks that fake-quantize it.</summary>
    public static (VisionModel Model, Quantization.QuantizedModel? Quant) LoadAny(string? path)
    {
        if (path != null && File.Exists(path) && path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            var f = IO.SafeTensorsFile.Read(path);
            if (Quantization.QuantizedCheckpoint.IsQuantized(f))
            {
                var q = Quantization.QuantizedCheckpoint.Load(f);
                return (q.Model, q);
            }
        }
        return (ModelIO.Load(path), null);
    }

    /// <summary>
    /// What a report says about a quantized checkpoint: its method (as written by vitq quantize), bits, the plan's
    /// quantizers per point kind and how many points stay in float. Null for a float model.
    /// </summary>
    public static object? QuantizationReport(string? path, Quantization.QuantizedModel? quant)
    {
        if (quant == null || path == null) return null;
        var meta = IO.SafeTensorsFile.Read(path).Metadata;
        var s = Quantization.PlanSummary.Of(quant.Plan, quant.Model.Config);
        return new
        {
            method = meta.TryGetValue("vitq.method", out var m) ? m : s.Plan,
            plan = s.Plan, weight_bits = s.WeightBits, activation_bits = s.ActivationBits,
            quantizers = s.Quantizers.Select(q => new
            {
                target = q.Target, kind = q.Kind.ToString(), bits = q.Bits, granularity = q.Granularity.ToString(), range = q.Range.ToString(),
                learnable = q.Learnable, points = q.Points.Count,
            }),
            float_weight_points = s.FloatWeightPoints, float_activation_points = s.FloatActivationPoints,
            // Which on-disk layout (vitq-quant/1: a byte a code; /2: packed) and what it costs.
            format = meta.TryGetValue(ModelIO.FormatKey, out var fmt) ? fmt : null,
            file_bytes = new FileInfo(path).Length,
        };
    }

    /// <summary>
    /// The dataset named by spec, shaped for the model (<see cref="Datasets.Open"/>); the notice that a folder is
    /// labelled by sorted sub-folder name goes to stderr.
    /// </summary>
    public static IImageDataset Open(string spec, string split, IModelConfig model, string flag = "--dataset", string? labelsFile = null,
        FolderLabels labels = FolderLabels.ByModelNames) =>
        Datasets.Open(spec, split, model, flag, labelsFile, labels, Console.Error.WriteLine);

    public static IImageDataset Limit(IImageDataset ds, int? limit) => Datasets.Limit(ds, limit);
}
