// The one dataset abstraction: a fixed-size, indexable set of labelled images that writes image i as
// float C×H×W in [0, 1]. Normalisation (mean/std) and augmentation belong to the DataLoader, so a
// dataset never needs to know which model consumes it. Subsets are views that remap indices.
using ViTQuant.Tensors;

namespace ViTQuant.Data;

/// <summary>
/// A labelled image dataset. Every image has the same shape Channels×Height×Width and is produced
/// as float32 in [0, 1] (unnormalised). Implementations must allow concurrent calls to GetImage and
/// Label from several threads (the DataLoader fills a batch in parallel).
/// </summary>
public interface IImageDataset
{
    /// <summary>Number of images.</summary>
    int Count { get; }

    /// <summary>Channels of every image.</summary>
    int Channels { get; }

    /// <summary>Height of every image, pixels.</summary>
    int Height { get; }

    /// <summary>Width of every image, pixels.</summary>
    int Width { get; }

    /// <summary>Number of classes; labels lie in [0, NumClasses).</summary>
    int NumClasses { get; }

    /// <summary>Human-readable class names, NumClasses of them.</summary>
    IReadOnlyList<string> ClassNames { get; }

    /// <summary>Class index of image <paramref name="index"/>. Throws ArgumentOutOfRangeException for a bad index.</summary>
    int Label(int index);

    /// <summary>
    /// Writes image <paramref name="index"/> into <paramref name="dst"/> (length Channels·Height·Width,
    /// CHW order, values in [0, 1]). Throws ArgumentOutOfRangeException for a bad index or a wrong
    /// destination length, and ViTQuantException when the underlying file cannot be decoded.
    /// </summary>
    void GetImage(int index, Span<float> dst);
}

/// <summary>Helpers shared by all datasets: sizes, argument checks and subsets.</summary>
public static class ImageDatasets
{
    /// <summary>Elements per image, Channels·Height·Width.</summary>
    public static int ImageSize(this IImageDataset ds) => ds.Channels * ds.Height * ds.Width;

    /// <summary>Throws ArgumentOutOfRangeException unless 0 ≤ index &lt; Count and dst has exactly ImageSize elements.</summary>
    internal static void CheckGetImage(this IImageDataset ds, int index, int dstLength)
    {
        if ((uint)index >= (uint)ds.Count) throw new ArgumentOutOfRangeException(nameof(index), $"image index {index} out of range for a dataset of {ds.Count}");
        int n = ds.ImageSize();
        if (dstLength != n) throw new ArgumentOutOfRangeException(nameof(dstLength), $"destination has {dstLength} elements, an image is {ds.Channels}x{ds.Height}x{ds.Width} = {n}");
    }

    /// <summary>Image <paramref name="index"/> as a new tensor of shape [C, H, W] with values in [0, 1].</summary>
    public static Tensor GetImageTensor(this IImageDataset ds, int index)
    {
        var t = new Tensor(ds.Channels, ds.Height, ds.Width);
        ds.GetImage(index, t.Span);
        return t;
    }

    /// <summary>The first <paramref name="n"/> images (all of them when n ≥ Count). Throws ArgumentOutOfRangeException for n &lt; 0.</summary>
    public static IImageDataset First(this IImageDataset ds, int n)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), $"subset size must be non-negative, got {n}");
        n = Math.Min(n, ds.Count);
        var idx = new int[n];
        for (int i = 0; i < n; i++) idx[i] = i;
        return new SubsetDataset(ds, idx);
    }

    /// <summary>
    /// <paramref name="n"/> distinct images chosen uniformly at random with a fixed seed (same seed →
    /// same subset), kept in ascending index order. Throws ArgumentOutOfRangeException unless 0 ≤ n ≤ Count.
    /// </summary>
    public static IImageDataset RandomSubset(this IImageDataset ds, int n, ulong seed)
    {
        if (n < 0 || n > ds.Count) throw new ArgumentOutOfRangeException(nameof(n), $"cannot take {n} random images from a dataset of {ds.Count}");
        var all = new int[ds.Count];
        for (int i = 0; i < all.Length; i++) all[i] = i;
        // Partial Fisher–Yates: the first n slots become a uniform random n-subset.
        var rng = new Rng(seed);
        for (int i = 0; i < n; i++)
        {
            int j = i + rng.NextInt(all.Length - i);
            (all[i], all[j]) = (all[j], all[i]);
        }
        var idx = all.AsSpan(0, n).ToArray();
        Array.Sort(idx);
        return new SubsetDataset(ds, idx);
    }

    /// <summary>The images at the given indices, in that order (repeats allowed). Throws ArgumentOutOfRangeException for an index outside the dataset.</summary>
    public static IImageDataset Subset(this IImageDataset ds, IReadOnlyList<int> indices) => new SubsetDataset(ds, indices.ToArray());
}

/// <summary>A view of another dataset through an index map.</summary>
internal sealed class SubsetDataset : IImageDataset
{
    private readonly IImageDataset _source;
    private readonly int[] _indices;

    /// <summary>Wraps <paramref name="source"/>; element i is source[indices[i]]. Throws ArgumentOutOfRangeException for an index outside the source.</summary>
    public SubsetDataset(IImageDataset source, int[] indices)
    {
        _source = source ?? throw new ArgumentNullException(nameof(source));
        foreach (int i in indices)
            if ((uint)i >= (uint)source.Count) throw new ArgumentOutOfRangeException(nameof(indices), $"subset index {i} out of range for a dataset of {source.Count}");
        _indices = (int[])indices.Clone();
    }

    /// <summary>The dataset this view reads from.</summary>
    public IImageDataset Source => _source;

    /// <summary>Index in Source of element i.</summary>
    public int SourceIndex(int i) => _indices[i];

    /// <inheritdoc/>
    public int Count => _indices.Length;
    /// <inheritdoc/>
    public int Channels => _source.Channels;
    /// <inheritdoc/>
    public int Height => _source.Height;
    /// <inheritdoc/>
    public int Width => _source.Width;
    /// <inheritdoc/>
    public int NumClasses => _source.NumClasses;
    /// <inheritdoc/>
    public IReadOnlyList<string> ClassNames => _source.ClassNames;

    /// <inheritdoc/>
    public int Label(int index) => _source.Label(Map(index));

    /// <inheritdoc/>
    public void GetImage(int index, Span<float> dst) => _source.GetImage(Map(index), dst);

    private int Map(int index) => (uint)index < (uint)_indices.Length ? _indices[index]
        : throw new ArgumentOutOfRangeException(nameof(index), $"image index {index} out of range for a subset of {_indices.Length}");
}
