// Fashion-MNIST (Xiao et al. 2017) from the idx files shipped by Debian's dataset-fashion-mnist.
//
// idx format: a big-endian int32 magic 0x000008DD (0x08 = unsigned byte, DD = number of dims), then
// DD big-endian int32 sizes, then the bytes in row-major order. Images use magic 2051 (dims
// N×28×28), labels 2049 (dims N). Files may be gzip-compressed (detected by the 1F 8B header).
//
// Splits (fixed, so every tool reports on the same images):
//   Train      training file indices     0..54999   (55,000) — what models are fitted on
//   Validation training file indices 55000..59999    (5,000) — held out for model selection
//   TrainFull  training file indices     0..59999   (60,000)
//   Test       the official test file    0..9999    (10,000) — reported accuracy
// The images stay as bytes in memory (47 MB for the training file) and are converted per image.
// Train and Validation loaded in one process share one copy of the file (weakly cached).
//
// Normalisation constants: mean 0.2860 and std 0.3530 of the pixel values /255 over all 60,000
// training images (population std over every pixel); a test checks them against the installed data.
using System.Buffers.Binary;
using System.IO.Compression;

namespace ViTQuant.Data;

/// <summary>Which Fashion-MNIST images to use; see the file header for the exact index ranges.</summary>
internal enum FashionMnistSplit
{
    /// <summary>Training images 0..54999.</summary>
    Train,

    /// <summary>Training images 55000..59999 (held out).</summary>
    Validation,

    /// <summary>All 60,000 training images.</summary>
    TrainFull,

    /// <summary>The official 10,000 test images.</summary>
    Test,
}

/// <summary>A Fashion-MNIST split: 1×28×28 grayscale images, 10 classes.</summary>
internal sealed class FashionMnist : IImageDataset
{
    /// <summary>Where Debian's dataset-fashion-mnist installs the files.</summary>
    public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";

    /// <summary>Environment variable that overrides <see cref="DefaultDirectory"/>.</summary>
    public const string DirectoryEnvVar = "VITQ_FASHION_MNIST_DIR";

    /// <summary>Number of training-file images in the Train split; the rest form Validation.</summary>
    public const int TrainSplitCount = 55_000;

    /// <summary>Mean pixel value (/255) over the 60,000 training images.</summary>
    public const float Mean = 0.2860f;

    /// <summary>Standard deviation of pixel values (/255) over the 60,000 training images.</summary>
    public const float Std = 0.3530f;

    /// <summary>Image height and width in pixels.</summary>
    public const int ImageSide = 28;

    private static readonly string[] _classNames =
        { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" };

    /// <summary>The ten class names in label order.</summary>
    public static IReadOnlyList<string> Classes => _classNames;

    private readonly byte[] _images; // [N_file, 28, 28]
    private readonly byte[] _labels; // [N_file]
    private readonly int _offset;

    /// <summary>Which split (training or test) the images come from.</summary>
    public FashionMnistSplit Split { get; }

    /// <summary>Directory the files were read from.</summary>
    public string Directory { get; }

    /// <inheritdoc/>
    public int Count { get; }
    /// <inheritdoc/>
    public int Channels => 1;
    /// <inheritdoc/>
    public int Height => ImageSide;
    /// <inheritdoc/>
    public int Width => ImageSide;
    /// <inheritdoc/>
    public int NumClasses => 10;
    /// <inheritdoc/>
    public IReadOnlyList<string> ClassNames => _classNames;

    private FashionMnist(FashionMnistSplit split, string dir, byte[] images, byte[] labels, int offset, int count)
    {
        Split = split; Directory = dir; _images = images; _labels = labels; _offset = offset; Count = count;
    }

    /// <summary>
    /// Loads a split from <paramref name="dir"/>, else from $VITQ_FASHION_MNIST_DIR, else from
    /// /usr/share/datasets/fashion-mnist. Throws ViTQuantException naming the path when the directory
    /// or a file is missing (suggesting the Debian package for the default directory), or when a file
    /// is truncated, corrupt, has the wrong magic number or sizes, or holds a label outside 0..9.
    /// </summary>
    public static FashionMnist Load(FashionMnistSplit split, string? dir = null)
    {
        dir = ResolveDirectory(dir);
        bool train = split != FashionMnistSplit.Test;
        var (images, labels, n) = LoadPair(dir, train ? "train" : "t10k");
        if (train && n < TrainSplitCount + 1 && split != FashionMnistSplit.TrainFull)
            throw new ViTQuantException($"{dir}: the training file has {n} images; the Train/Validation split needs more than {TrainSplitCount}");
        return split switch
        {
            FashionMnistSplit.Train => new(split, dir, images, labels, 0, TrainSplitCount),
            FashionMnistSplit.Validation => new(split, dir, images, labels, TrainSplitCount, n - TrainSplitCount),
            _ => new(split, dir, images, labels, 0, n),
        };
    }

    /// <summary>
    /// The directory Load would read: the argument, else $VITQ_FASHION_MNIST_DIR, else the default.
    /// Throws ViTQuantException when it does not exist.
    /// </summary>
    public static string ResolveDirectory(string? dir = null) => ResolveDirectory(dir, Environment.GetEnvironmentVariable(DirectoryEnvVar), DefaultDirectory);

    /// <summary>ResolveDirectory with the environment value and default passed in (testable without touching the process environment).</summary>
    internal static string ResolveDirectory(string? dir, string? env, string defaultDir)
    {
        string resolved = !string.IsNullOrEmpty(dir) ? dir : !string.IsNullOrEmpty(env) ? env : defaultDir;
        if (System.IO.Directory.Exists(resolved)) return resolved;
        if (!string.IsNullOrEmpty(dir)) throw new ViTQuantException($"Fashion-MNIST directory {resolved} does not exist");
        if (!string.IsNullOrEmpty(env)) throw new ViTQuantException($"Fashion-MNIST directory {resolved} (from ${DirectoryEnvVar}) does not exist");
        throw new ViTQuantException($"Fashion-MNIST not found at {resolved}; install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or set ${DirectoryEnvVar}");
    }

    /// <summary>The raw 28·28 bytes of image <paramref name="index"/> (row-major).</summary>
    public ReadOnlySpan<byte> RawImage(int index)
    {
        CheckIndex(index);
        return _images.AsSpan((_offset + index) * ImageSide * ImageSide, ImageSide * ImageSide);
    }

    /// <inheritdoc/>
    public int Label(int index)
    {
        CheckIndex(index);
        return _labels[_offset + index];
    }

    /// <inheritdoc/>
    public void GetImage(int index, Span<float> dst)
    {
        this.CheckGetImage(index, dst.Length);
        var src = RawImage(index);
        for (int i = 0; i < src.Length; i++) dst[i] = src[i] / 255f; // division, as torchvision ToTensor: bit-identical values
    }

    private void CheckIndex(int index)
    {
        if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), $"image index {index} out of range for Fashion-MNIST {Split} ({Count} images)");
    }

    // ---- files ----

    private static readonly Dictionary<string, WeakReference<Tuple<byte[], byte[], int>>> _cache = new();

    private static (byte[] Images, byte[] Labels, int Count) LoadPair(string dir, string prefix)
    {
        string imgPath = FindFile(dir, $"{prefix}-images-idx3-ubyte"), lblPath = FindFile(dir, $"{prefix}-labels-idx1-ubyte");
        string key = Path.GetFullPath(imgPath) + "|" + File.GetLastWriteTimeUtc(imgPath).Ticks + "|" + Path.GetFullPath(lblPath) + "|" + File.GetLastWriteTimeUtc(lblPath).Ticks;
        lock (_cache)
        {
            if (_cache.TryGetValue(key, out var wr) && wr.TryGetTarget(out var hit)) return (hit.Item1, hit.Item2, hit.Item3);
        }
        var (imgDims, images) = Idx.Read(imgPath, Idx.ImagesMagic);
        var (lblDims, labels) = Idx.Read(lblPath, Idx.LabelsMagic);
        if (imgDims[1] != ImageSide || imgDims[2] != ImageSide)
            throw new ViTQuantException($"{imgPath}: images are {imgDims[1]}x{imgDims[2]}, Fashion-MNIST images are {ImageSide}x{ImageSide}");
        if (imgDims[0] != lblDims[0])
            throw new ViTQuantException($"{lblPath}: {lblDims[0]} labels for {imgDims[0]} images in {imgPath}");
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] > 9) throw new ViTQuantException($"{lblPath}: label {labels[i]} at index {i} is outside 0..9");
        lock (_cache) _cache[key] = new(Tuple.Create(images, labels, imgDims[0]));
        return (images, labels, imgDims[0]);
    }

    private static string FindFile(string dir, string stem)
    {
        foreach (var name in new[] { stem + ".gz", stem })
        {
            string p = Path.Combine(dir, name);
            if (File.Exists(p)) return p;
        }
        throw new ViTQuantException($"{Path.Combine(dir, stem + ".gz")} not found (Fashion-MNIST needs train-/t10k- images-idx3-ubyte and labels-idx1-ubyte files, optionally .gz)");
    }
}

/// <summary>Reader for the unsigned-byte idx files of (Fashion-)MNIST, plain or gzip-compressed.</summary>
internal static class Idx
{
    /// <summary>Magic number of a 3-dimensional unsigned-byte idx file (images).</summary>
    public const int ImagesMagic = 0x0803;

    /// <summary>Magic number of a 1-dimensional unsigned-byte idx file (labels).</summary>
    public const int LabelsMagic = 0x0801;

    /// <summary>
    /// Reads an idx file whose magic number must be <paramref name="expectedMagic"/> (0x08 type byte,
    /// low byte = number of dims). Returns the dims and the payload. Throws ViTQuantException naming
    /// the path when the file is missing, not valid gzip, has the wrong magic, a non-positive dim,
    /// is truncated, or has bytes after the payload.
    /// </summary>
    public static (int[] Dims, byte[] Data) Read(string path, int expectedMagic)
    {
        try
        {
            using var file = File.OpenRead(path);
            Span<byte> sig = stackalloc byte[2];
            int got = file.ReadAtLeast(sig, 2, throwOnEndOfStream: false);
            file.Position = 0;
            bool gz = got == 2 && sig[0] == 0x1F && sig[1] == 0x8B;
            using Stream s = gz ? new GZipStream(file, CompressionMode.Decompress) : file;
            return Parse(s, path, expectedMagic);
        }
        catch (ViTQuantException) { throw; }
        catch (FileNotFoundException) { throw new ViTQuantException($"{path} not found"); }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            throw new ViTQuantException($"{path}: cannot read idx file ({e.Message})", e);
        }
    }

    private static (int[] Dims, byte[] Data) Parse(Stream s, string path, int expectedMagic)
    {
        Span<byte> word = stackalloc byte[4];
        if (s.ReadAtLeast(word, 4, throwOnEndOfStream: false) < 4) throw new ViTQuantException($"{path}: truncated idx file (no header)");
        int magic = BinaryPrimitives.ReadInt32BigEndian(word);
        if (magic != expectedMagic)
            throw new ViTQuantException($"{path}: bad idx magic number {magic} (expected {expectedMagic}: unsigned bytes, {expectedMagic & 0xFF} dims)");
        var dims = new int[expectedMagic & 0xFF];
        long total = 1;
        for (int d = 0; d < dims.Length; d++)
        {
            if (s.ReadAtLeast(word, 4, throwOnEndOfStream: false) < 4) throw new ViTQuantException($"{path}: truncated idx file (header)");
            dims[d] = BinaryPrimitives.ReadInt32BigEndian(word);
            if (dims[d] <= 0) throw new ViTQuantException($"{path}: idx dimension {d} is {dims[d]}");
            total *= dims[d];
            if (total > Array.MaxLength) throw new ViTQuantException($"{path}: idx payload of {total} bytes is too large");
        }
        var data = new byte[total];
        int read = s.ReadAtLeast(data, data.Length, throwOnEndOfStream: false);
        if (read < data.Length) throw new ViTQuantException($"{path}: truncated idx file ({read} of {data.Length} data bytes)");
        if (s.ReadByte() >= 0) throw new ViTQuantException($"{path}: idx file has bytes after the {data.Length}-byte payload of dims [{string.Join(", ", dims)}]");
        return (dims, data);
    }
}
