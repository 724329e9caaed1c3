// Resolving --dataset and --model flags into datasets and models, with one-line errors.
using System.CommandLine;
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

    /// <summary>How a folder dataset's sub-folders become labels.</summary>
    public enum FolderLabels
    {
        /// <summary>By the model's class names (or --labels); sorted order, printed, when there are none.</summary>
        ByModelNames,
        /// <summary>Sorted order, printed: the classes are the folders' own (training a fresh model).</summary>
        SortedFolders,
        /// <summary>Labels are not used (calibration images): sorted order, silently.</summary>
        Unused,
    }

    /// <summary>Reads a --labels file: one class name a line (blank lines skipped), exactly one per model output.</summary>
    public static string[] ReadLabels(string path, int numClasses)
    {
        if (!File.Exists(path)) throw new ViTQuantException($"--labels: file {path} not found");
        var names = File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (names.Length != numClasses)
            throw new ViTQuantException($"--labels {path}: {names.Length} class names, but the model has {numClasses} classes (one name a line, in output order)");
        return names;
    }

    /// <summary>A float model of either family (ViT/DeiT or Swin).</summary>
    public static VisionModel LoadModel(string? path) => ModelIO.Load(path);

    /// <summary>A float ViT/DeiT model; a Swin model is refused in one line naming the command that has no Swin path yet.</summary>
    public static VisionTransformer LoadViT(string? path, string command) => ModelIO.LoadViT(path, command);

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
    /// The dataset named by spec, shaped for the model (validated), or a ViTQuantException whose message names
    /// <paramref name="flag"/>. A folder's sub-folders are labelled as <paramref name="labels"/> says, by the
    /// names in <paramref name="labelsFile"/> when given.
    /// </summary>
    public static IImageDataset Open(string spec, string split, IModelConfig model, string flag = "--dataset", string? labelsFile = null,
        FolderLabels labels = FolderLabels.ByModelNames)
    {
        IImageDataset ds;
        if (spec == "fashion-mnist")
        {
            var s = split switch
            {
                "train" => FashionMnistSplit.Train,
                "val" => FashionMnistSplit.Validation,
                "test" => FashionMnistSplit.Test,
                "train-full" => FashionMnistSplit.TrainFull,
                _ => throw new ViTQuantException($"--split: unknown split '{split}' (train, val, test, train-full)"),
            };
            ds = FashionMnist.Load(s);
        }
        else if (spec.StartsWith("folder:"))
        {
            var root = spec["folder:".Length..];
            if (root.Length == 0) throw new ViTQuantException($"{flag} folder: needs a path (folder:PATH, one sub-folder per class)");
            if (!Directory.Exists(root)) throw new ViTQuantException($"{flag}: folder '{root}' not found");
            var t = new EvalTransform(model.ImageSize, model.CropPct, model.InChans);
            string[]? names = labelsFile != null ? ReadLabels(labelsFile, model.NumClasses)
                : labels == FolderLabels.ByModelNames ? model.ClassNames : null;
            if (labelsFile != null && labels == FolderLabels.Unused) names = null;
            if (names != null) ds = ImageFolder.FromDirectory(root, t, names);
            else
            {
                ds = ImageFolder.FromDirectory(root, t);
                if (labels != FolderLabels.Unused)
                    Console.Error.WriteLine($"{spec}: {(labels == FolderLabels.SortedFolders ? "classes" : "the model has no class names; labels")} by sorted sub-folder name: "
                        + string.Join(", ", ds.ClassNames.Select((n, i) => $"{i} = {n}")));
            }
        }
        else throw new ViTQuantException($"{flag}: unknown dataset '{spec}' (fashion-mnist or folder:PATH)");

        if (ds.Channels != model.InChans || ds.Height != model.ImageSize || ds.Width != model.ImageSize)
            throw new ViTQuantException($"{flag} {spec}: images are {ds.Channels}×{ds.Height}×{ds.Width} but the model ({model.Architecture}) expects {model.InChans}×{model.ImageSize}×{model.ImageSize}");
        if (labels != FolderLabels.Unused && ds.NumClasses > model.NumClasses)
            throw new ViTQuantException($"{flag} {spec}: {ds.NumClasses} classes but the model has {model.NumClasses} outputs");
        return ds;
    }

    public static IImageDataset Limit(IImageDataset ds, int? limit)
    {
        if (limit is null) return ds;
        if (limit < 1) throw new ViTQuantException($"--limit must be at least 1, got {limit}");
        return limit.Value >= ds.Count ? ds : ds.First(limit.Value);
    }
}
