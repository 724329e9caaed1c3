// Images a quantization method learns from, as normalised batches of the model's input shape:
// calibration images for the post-training methods, distillation images for MimiQ fine-tuning. The
// sources: Fashion-MNIST, an image folder, a synthetic set file, Gaussian noise, or tensors the caller
// already has. Load/LoadDistillation take the command line's source strings (vitq quantize --calib,
// --data), so the CLI and a C# program draw exactly the same images for the same seed.
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Api;

/// <summary>Normalised image batches [B, C, H, W] for one model, with labels when the source has them.</summary>
public sealed class CalibrationData
{
    private readonly List<Tensor> _batches;

    private CalibrationData(List<Tensor> batches, int[]? labels, string source)
    {
        _batches = batches;
        Labels = labels;
        Source = source;
        Count = batches.Sum(b => b.Shape[0]);
    }

    /// <summary>The batches, in the model's normalised input space.</summary>
    public IReadOnlyList<Tensor> Batches => _batches;

    /// <summary>One label an image, or null when the source has none (noise, unlabelled sets).</summary>
    public int[]? Labels { get; }

    /// <summary>Images in all batches.</summary>
    public int Count { get; }

    /// <summary>Where the images came from ("fashion-mnist", "folder:…", a set path, "gaussian", "tensors").</summary>
    public string Source { get; }

    internal List<Tensor> BatchList => _batches;

    /// <summary>
    /// <paramref name="count"/> random Fashion-MNIST training images (seeded by <paramref name="seed"/>) in
    /// batches of 64. Throws ArgumentOutOfRangeException for count &lt; 1, ViTQuantException when the data
    /// set is not installed or does not fit the model.
    /// </summary>
    public static CalibrationData FashionMnist(IModelConfig model, int count = 1024, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        return Load("fashion-mnist", count, model, seed, flag: nameof(FashionMnist));
    }

    /// <summary>
    /// <paramref name="count"/> random images of the folder <paramref name="path"/> (any sub-folder layout
    /// ImageFolder reads; labels are not used). Throws ArgumentException for a missing folder or count &lt; 1.
    /// </summary>
    public static CalibrationData ImageFolder(string path, IModelConfig model, int count = 1024, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        if (!Directory.Exists(path)) throw new ArgumentException($"folder '{path}' not found (expected one sub-folder per class)", nameof(path));
        return Load("folder:" + path, count, model, seed, flag: nameof(path));
    }

    /// <summary>
    /// <paramref name="count"/> random images of a synthetic set file (vitq synthesize, <see cref="Vitq.Synthesize"/>).
    /// Throws ArgumentException for a missing file or count &lt; 1, ViTQuantException for a file that is not a set for this model.
    /// </summary>
    public static CalibrationData SyntheticSet(string path, IModelConfig model, int count = 1024, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        if (!File.Exists(path)) throw new ArgumentException($"synthetic set '{path}' not found", nameof(path));
        if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"'{path}' is not a .safetensors synthetic set", nameof(path));
        return Load(path, count, model, seed, flag: nameof(path));
    }

    /// <summary><paramref name="count"/> N(0, 1) images in the model's normalised space (the noise baseline), one batch.</summary>
    public static CalibrationData Gaussian(IModelConfig model, int count = 1024, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        return new CalibrationData(new List<Tensor> { GaussianImages(model, count, seed) }, null, "gaussian");
    }

    /// <summary>
    /// The caller's own batches, already normalised for the model: each [B, C, H, W] with the model's
    /// channels and image size. Throws ArgumentException naming <paramref name="batches"/> for a batch of
    /// another shape or none at all, and <paramref name="labels"/> when their count differs from the images'.
    /// </summary>
    public static CalibrationData FromTensors(IModelConfig model, IEnumerable<Tensor> batches, int[]? labels = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        var list = batches.ToList();
        if (list.Count == 0) throw new ArgumentException("no batches given (expected at least one [B, C, H, W] tensor)", nameof(batches));
        for (int i = 0; i < list.Count; i++)
        {
            var t = list[i] ?? throw new ArgumentException($"batch {i} is null", nameof(batches));
            if (t.Rank != 4 || t.Shape[0] < 1 || t.Shape[1] != model.InChans || t.Shape[2] != model.ImageSize || t.Shape[3] != model.ImageSize)
                throw new ArgumentException($"batch {i} is {Tensor.ShapeString(t.Shape)}, the model ({model.Architecture}) expects [B, {model.InChans}, {model.ImageSize}, {model.ImageSize}]", nameof(batches));
        }
        int n = list.Sum(t => t.Shape[0]);
        if (labels != null && labels.Length != n) throw new ArgumentException($"{labels.Length} labels for {n} images", nameof(labels));
        return new CalibrationData(list, labels, "tensors");
    }

    /// <summary>
    /// Calibration images as <c>vitq quantize --calib</c> reads them: "fashion-mnist" (the training split),
    /// "folder:PATH" or a synthetic set ".safetensors"; a random subset of <paramref name="count"/> (seeded)
    /// when the source has more, in batches of <paramref name="batch"/>. Throws ViTQuantException naming
    /// <paramref name="flag"/> for an unknown source or a source that does not fit the model.
    /// </summary>
    public static CalibrationData Load(string spec, int count, IModelConfig model, ulong seed, int batch = 64, string flag = "--calib")
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(model);
        if (count < 1) throw new ViTQuantException($"--calib-size must be at least 1, got {count}");
        IImageDataset ds;
        // Calibration uses images only, so a folder's labels (and whether they match the model) do not matter.
        if (spec == "fashion-mnist" || spec.StartsWith("folder:", StringComparison.Ordinal))
            ds = Datasets.Open(spec, "train", model, flag, labels: FolderLabels.Unused);
        else if (spec.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) ds = Algorithms.DataFree.SyntheticSet.Load(spec, model);
        else throw new ViTQuantException($"{flag}: unknown calibration source '{spec}' (fashion-mnist, folder:PATH, or a synthetic set .safetensors)");
        if (count < ds.Count) ds = ds.RandomSubset(count, seed);
        var loader = new DataLoader(ds, batch, mean: model.Mean, std: model.Std);
        return new CalibrationData(loader.Epoch(0).Select(b => b.Images).ToList(), null, spec);
    }

    /// <summary>
    /// Distillation images as <c>vitq quantize --method mimiq --data</c> reads them: "gaussian" (N(0, 1) in the
    /// normalised space; <paramref name="size"/> images, default 10,000), "fashion-mnist" or "folder:PATH"
    /// (a seeded subset of at most <paramref name="size"/> training images, with labels), or a synthetic set
    /// file (images re-normalised when the generating model's mean/std differ from <paramref name="model"/>'s;
    /// labels when stored). Throws ViTQuantException naming --data / --data-size.
    /// </summary>
    public static CalibrationData LoadDistillation(string spec, int? size, IModelConfig model, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(model);
        if (size is < 1) throw new ViTQuantException($"--data-size must be at least 1, got {size}");
        if (spec == "gaussian")
            return new CalibrationData(new List<Tensor> { GaussianImages(model, size ?? 10_000, seed) }, null, spec);
        if (spec == "fashion-mnist" || spec.StartsWith("folder:", StringComparison.Ordinal))
        {
            var ds = Datasets.Open(spec, "train", model);
            int n = Math.Min(size ?? 10_000, ds.Count);
            if (n < ds.Count) ds = ds.RandomSubset(n, seed);
            var batches = new DataLoader(ds, 256, mean: model.Mean, std: model.Std).Epoch(0).ToList();
            return new CalibrationData(batches.Select(b => b.Images).ToList(), batches.SelectMany(b => b.Labels).ToArray(), spec);
        }
        if (!File.Exists(spec)) throw new ViTQuantException($"--data: '{spec}' is neither a file nor fashion-mnist, folder:PATH or gaussian");
        var (images, labels) = LoadSetFile(spec, size, model, seed);
        return new CalibrationData(new List<Tensor> { images }, labels, spec);
    }

    // The noise stream of the Gaussian source; the constant keeps it apart from the seed's other uses.
    private static Tensor GaussianImages(IModelConfig c, int n, ulong seed) =>
        Tensor.Randn(new Rng(seed ^ 0x6A0551A9UL), 1f, n, c.InChans, c.ImageSize, c.ImageSize);

    private static (Tensor, int[]?) LoadSetFile(string path, int? size, IModelConfig c, ulong seed)
    {
        var f = SafeTensorsFile.Read(path);
        if (!f.Contains("images")) throw new ViTQuantException($"{path}: no 'images' tensor (expected a synthetic set)");
        var images = f.GetTensor("images");
        if (images.Rank != 4 || images.Shape[1] != c.InChans || images.Shape[2] != c.ImageSize || images.Shape[3] != c.ImageSize || images.Shape[0] == 0)
            throw new ViTQuantException($"{path}: images are {Tensor.ShapeString(images.Shape)}, the model ({c.Architecture}) expects [N, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
        int n = images.Shape[0], per = images.Size / n;
        int[]? labels = f.Contains("labels") ? f.GetInt32("labels") : null;
        if (labels != null && labels.Length != n) throw new ViTQuantException($"{path}: {labels.Length} labels for {n} images");
        if (f.Metadata.TryGetValue("vitq.model_config", out var genJson))
        {
            var gen = ModelConfigs.FromJson(genJson, path);
            if (gen.InChans != c.InChans) throw new ViTQuantException($"{path}: made for a {gen.InChans}-channel model, the teacher has {c.InChans}");
            if (!gen.Mean.SequenceEqual(c.Mean) || !gen.Std.SequenceEqual(c.Std)) Renormalize(images, gen, c);
        }
        if (size is int k && k < n)
        {
            var pick = Enumerable.Range(0, n).ToArray();
            new Rng(seed).Shuffle(pick.AsSpan());
            pick = pick[..k];
            Array.Sort(pick);
            var sub = new Tensor(k, c.InChans, c.ImageSize, c.ImageSize);
            for (int i = 0; i < k; i++) images.Data.AsSpan(pick[i] * per, per).CopyTo(sub.Data.AsSpan(i * per, per));
            return (sub, labels != null ? pick.Select(i => labels[i]).ToArray() : null);
        }
        return (images, labels);
    }

    /// <summary>Maps images normalised for <paramref name="from"/> into the normalised space of <paramref name="to"/>.</summary>
    private static void Renormalize(Tensor images, IModelConfig from, IModelConfig to)
    {
        int plane = to.ImageSize * to.ImageSize, ch = to.InChans;
        for (int i = 0; i < images.Size; i++)
        {
            int k = i / plane % ch;
            images.Data[i] = (images.Data[i] * from.Std[k] + from.Mean[k] - to.Mean[k]) / to.Std[k];
        }
    }
}
