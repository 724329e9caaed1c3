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

    public static VisionTransformer LoadModel(string? path) => ModelIO.Load(path);

    /// <summary>A float model, or a quantized checkpoint as its model plus the hooks that fake-quantize it.</summary>
    public static (VisionTransformer Model, Quantization.QuantizedModel? Quant) LoadAny(string? path)
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

    /// <summary>The dataset named by spec, shaped for the model (validated), or a ViTQuantException.</summary>
    public static IImageDataset Open(string spec, string split, ViTConfig model)
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
            if (!Directory.Exists(root)) throw new ViTQuantException($"--dataset: folder '{root}' not found");
            ds = ImageFolder.FromDirectory(root, new EvalTransform(model.ImageSize, model.CropPct, model.InChans));
        }
        else throw new ViTQuantException($"--dataset: unknown dataset '{spec}' (fashion-mnist or folder:PATH)");

        if (ds.Channels != model.InChans || ds.Height != model.ImageSize || ds.Width != model.ImageSize)
            throw new ViTQuantException($"--dataset {spec}: images are {ds.Channels}×{ds.Height}×{ds.Width} but the model ({model.Architecture}) expects {model.InChans}×{model.ImageSize}×{model.ImageSize}");
        if (ds.NumClasses > model.NumClasses)
            throw new ViTQuantException($"--dataset {spec}: {ds.NumClasses} classes but the model has {model.NumClasses} outputs");
        return ds;
    }

    public static IImageDataset Limit(IImageDataset ds, int? limit)
    {
        if (limit is null) return ds;
        if (limit < 1) throw new ViTQuantException($"--limit must be at least 1, got {limit}");
        return limit.Value >= ds.Count ? ds : ds.First(limit.Value);
    }
}
