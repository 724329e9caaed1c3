// Opening a dataset by name for a model: "fashion-mnist" (a split) or "folder:PATH" (one sub-folder
// per class), validated against the model's input shape and class count. The spec strings are the
// command line's --dataset values; the `flag` argument names the option (or parameter) in errors.
using ViTQuant.Data;
using ViTQuant.Models;

namespace ViTQuant.Api;

/// <summary>How a folder dataset's sub-folders become labels.</summary>
public enum FolderLabels
{
    /// <summary>By the model's class names (or a labels file); sorted order, with a notice, when there are none.</summary>
    ByModelNames,
    /// <summary>Sorted order, with a notice: the classes are the folders' own (training a fresh model).</summary>
    SortedFolders,
    /// <summary>Labels are not used (calibration images): sorted order, silently.</summary>
    Unused,
}

/// <summary>Datasets named by a spec string ("fashion-mnist", "folder:PATH"), shaped and checked for a model.</summary>
public static class Datasets
{
    /// <summary>The Fashion-MNIST split names <see cref="Open"/> takes.</summary>
    public static readonly IReadOnlyList<string> Splits = new[] { "train", "val", "test", "train-full" };

    /// <summary>
    /// Reads a class-names file: one name a line (blank lines skipped), exactly one per model output.
    /// Throws ViTQuantException (naming --labels) when the file is missing or the count is wrong.
    /// </summary>
    public static string[] ReadLabels(string path, int numClasses)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new ViTQuantException($"--labels: file {path} not found");
        var names = File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (names.Length != numClasses)
            throw new ViTQuantException($"--labels {path}: {names.Length} class names, but the model has {numClasses} classes (one name a line, in output order)");
        return names;
    }

    /// <summary>
    /// The dataset named by <paramref name="spec"/> ("fashion-mnist" with <paramref name="split"/> train, val,
    /// test or train-full; "folder:PATH"), shaped for <paramref name="model"/>. A folder's sub-folders are
    /// labelled as <paramref name="labels"/> says, by the names in <paramref name="labelsFile"/> when given;
    /// when they are labelled by sorted folder name, <paramref name="notice"/> receives one line saying so.
    /// Throws ViTQuantException naming <paramref name="flag"/> for an unknown spec or split, a missing folder,
    /// images of another shape than the model's input, or more classes than the model has outputs.
    /// </summary>
    public static IImageDataset Open(string spec, string split, IModelConfig model, string flag = "--dataset", string? labelsFile = null,
        FolderLabels labels = FolderLabels.ByModelNames, Action<string>? notice = null)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(split);
        ArgumentNullException.ThrowIfNull(model);
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
        else if (spec.StartsWith("folder:", StringComparison.Ordinal))
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
                    notice?.Invoke($"{spec}: {(labels == FolderLabels.SortedFolders ? "classes" : "the model has no class names; labels")} by sorted sub-folder name: "
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

    /// <summary>The first <paramref name="limit"/> images (all when null); ViTQuantException (naming --limit) below 1.</summary>
    public static IImageDataset Limit(IImageDataset ds, int? limit)
    {
        ArgumentNullException.ThrowIfNull(ds);
        if (limit is null) return ds;
        if (limit < 1) throw new ViTQuantException($"--limit must be at least 1, got {limit}");
        return limit.Value >= ds.Count ? ds : ds.First(limit.Value);
    }
}
