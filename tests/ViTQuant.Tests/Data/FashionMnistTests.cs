using System.Buffers.Binary;
using System.IO.Compression;
using ViTQuant.Data;
using Xunit.Abstractions;

namespace ViTQuant.Tests.Data;

public class FashionMnistIdxTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vitq-idx-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>An idx file: big-endian magic and dims, then the payload; gzip-compressed when gz.</summary>
    private static byte[] Idx(int magic, int[] dims, byte[] payload, bool gz = true)
    {
        var raw = new byte[4 + 4 * dims.Length + payload.Length];
        BinaryPrimitives.WriteInt32BigEndian(raw, magic);
        for (int d = 0; d < dims.Length; d++) BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(4 + 4 * d), dims[d]);
        payload.CopyTo(raw, 4 + 4 * dims.Length);
        if (!gz) return raw;
        var ms = new MemoryStream();
        using (var g = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true)) g.Write(raw);
        return ms.ToArray();
    }

    private static byte[] Pixels(int n)
    {
        var p = new byte[n * 28 * 28];
        for (int i = 0; i < p.Length; i++) p[i] = (byte)(i * 7 % 256);
        return p;
    }

    private void Write(string prefix, byte[] images, byte[] labels, bool gz = true)
    {
        string ext = gz ? ".gz" : "";
        File.WriteAllBytes(Path.Combine(_dir, $"{prefix}-images-idx3-ubyte{ext}"), images);
        File.WriteAllBytes(Path.Combine(_dir, $"{prefix}-labels-idx1-ubyte{ext}"), labels);
    }

    [Fact]
    public void ValidFilesLoadWithPixelsAndLabels()
    {
        var px = Pixels(3);
        Write("t10k", Idx(2051, new[] { 3, 28, 28 }, px), Idx(2049, new[] { 3 }, new byte[] { 9, 0, 4 }));
        var ds = FashionMnist.Load(FashionMnistSplit.Test, _dir);
        Assert.Equal((3, 1, 28, 28, 10), (ds.Count, ds.Channels, ds.Height, ds.Width, ds.NumClasses));
        Assert.Equal(new[] { 9, 0, 4 }, new[] { ds.Label(0), ds.Label(1), ds.Label(2) });
        Assert.Equal("Ankle boot", ds.ClassNames[ds.Label(0)]);
        var img = new float[784];
        ds.GetImage(2, img);
        for (int k = 0; k < 784; k++) Assert.Equal(px[2 * 784 + k] / 255f, img[k]);
        Assert.True(px.AsSpan(784, 784).SequenceEqual(ds.RawImage(1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => ds.Label(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => ds.GetImage(0, new float[783]));
    }

    [Fact]
    public void UncompressedFilesAreAcceptedToo()
    {
        Write("train", Idx(2051, new[] { 2, 28, 28 }, Pixels(2), gz: false), Idx(2049, new[] { 2 }, new byte[] { 1, 2 }, gz: false), gz: false);
        var ds = FashionMnist.Load(FashionMnistSplit.TrainFull, _dir);
        Assert.Equal(2, ds.Count);
        Assert.Equal(2, ds.Label(1));
        // A 2-image training file cannot be split 55,000 / 5,000.
        Assert.Contains("55000", Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Validation, _dir)).Message);
    }

    [Fact]
    public void BadMagicIsRejectedNamingTheFile()
    {
        Write("t10k", Idx(2049, new[] { 3, 28, 28 }, Pixels(3)), Idx(2049, new[] { 3 }, new byte[3]));
        var e = Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir));
        Assert.Contains("t10k-images-idx3-ubyte.gz", e.Message);
        Assert.Contains("magic", e.Message);
    }

    [Fact]
    public void TruncatedFilesAreRejected()
    {
        var full = Idx(2051, new[] { 3, 28, 28 }, Pixels(3), gz: false);
        Write("t10k", Idx(2051, new[] { 3, 28, 28 }, Pixels(3)[..2000]), Idx(2049, new[] { 3 }, new byte[3]));
        var e = Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("t10k-images", e.Message);

        // A gzip stream cut in the middle: either the payload comes up short or gzip itself complains.
        var gz = Idx(2051, new[] { 3, 28, 28 }, Pixels(3));
        Write("t10k", gz[..(gz.Length / 2)], Idx(2049, new[] { 3 }, new byte[3]));
        Assert.Contains("t10k-images", Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir)).Message);

        // Header cut short, and trailing bytes after the payload.
        Write("t10k", full[..10], Idx(2049, new[] { 3 }, new byte[3]));
        Assert.Contains("truncated", Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir)).Message);
        File.WriteAllBytes(Path.Combine(_dir, "t10k-images-idx3-ubyte.gz"), full.Concat(new byte[] { 1 }).ToArray());
        Assert.Contains("after", Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir)).Message);
    }

    [Fact]
    public void InconsistentFilesAreRejected()
    {
        Write("t10k", Idx(2051, new[] { 3, 28, 28 }, Pixels(3)), Idx(2049, new[] { 2 }, new byte[2]));
        Assert.Contains("labels", Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir)).Message);
        Write("t10k", Idx(2051, new[] { 3, 28, 28 }, Pixels(3)), Idx(2049, new[] { 3 }, new byte[] { 0, 10, 1 }));
        Assert.Contains("label 10", Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir)).Message);
        Write("t10k", Idx(2051, new[] { 1, 32, 32 }, new byte[1024]), Idx(2049, new[] { 1 }, new byte[1]));
        Assert.Contains("32x32", Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir)).Message);
    }

    [Fact]
    public void MissingDirectoryOrFileGivesAnActionableMessage()
    {
        string nowhere = Path.Combine(_dir, "nowhere");
        Assert.Contains(nowhere, Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, nowhere)).Message);
        var env = Assert.Throws<ViTQuantException>(() => FashionMnist.ResolveDirectory(null, nowhere, "/unused"));
        Assert.Contains(FashionMnist.DirectoryEnvVar, env.Message);
        var dflt = Assert.Throws<ViTQuantException>(() => FashionMnist.ResolveDirectory(null, null, nowhere));
        Assert.Contains("dataset-fashion-mnist", dflt.Message);
        Assert.Contains(nowhere, dflt.Message);
        Assert.Equal(_dir, FashionMnist.ResolveDirectory(_dir, nowhere, nowhere)); // the argument wins
        Assert.Equal(_dir, FashionMnist.ResolveDirectory(null, _dir, nowhere));   // then the environment

        var missing = Assert.Throws<ViTQuantException>(() => FashionMnist.Load(FashionMnistSplit.Test, _dir));
        Assert.Contains("t10k-images-idx3-ubyte", missing.Message);
    }
}

/// <summary>Checks against the real dataset from Debian's dataset-fashion-mnist (installed on the build machine).</summary>
public class FashionMnistRealDataTests
{
    private readonly ITestOutputHelper _out;

    public FashionMnistRealDataTests(ITestOutputHelper output) => _out = output;

    private bool Present()
    {
        if (Directory.Exists(FashionMnist.DefaultDirectory)) return true;
        _out.WriteLine($"SKIPPED: {FashionMnist.DefaultDirectory} missing (apt-get install dataset-fashion-mnist)");
        return false;
    }

    [Fact]
    public void SplitsHaveTheDocumentedSizesAndContents()
    {
        if (!Present()) return;
        var full = FashionMnist.Load(FashionMnistSplit.TrainFull, FashionMnist.DefaultDirectory);
        var train = FashionMnist.Load(FashionMnistSplit.Train, FashionMnist.DefaultDirectory);
        var val = FashionMnist.Load(FashionMnistSplit.Validation, FashionMnist.DefaultDirectory);
        var test = FashionMnist.Load(FashionMnistSplit.Test, FashionMnist.DefaultDirectory);
        Assert.Equal((60000, 55000, 5000, 10000), (full.Count, train.Count, val.Count, test.Count));
        Assert.Equal((1, 28, 28), (test.Channels, test.Height, test.Width));
        Assert.True(full.RawImage(55000).SequenceEqual(val.RawImage(0)));
        Assert.Equal(full.Label(59999), val.Label(4999));
        Assert.True(full.RawImage(123).SequenceEqual(train.RawImage(123)));
        foreach (var ds in new[] { full, test })
        {
            var perClass = new int[10];
            for (int i = 0; i < ds.Count; i++) perClass[ds.Label(i)]++;
            // Fashion-MNIST is balanced: 6,000 per class in training, 1,000 in test.
            Assert.All(perClass, n => Assert.Equal(ds.Count / 10, n));
        }
        Assert.Equal(9, test.Label(0)); // the first test image is an ankle boot
        var img = new float[784];
        test.GetImage(0, img);
        Assert.All(img, v => Assert.InRange(v, 0f, 1f));
        Assert.Contains(img, v => v > 0.5f);
    }

    [Fact]
    public void NormalisationConstantsMatchTheTrainingSet()
    {
        if (!Present()) return;
        var full = FashionMnist.Load(FashionMnistSplit.TrainFull, FashionMnist.DefaultDirectory);
        double sum = 0, sumSq = 0;
        for (int i = 0; i < full.Count; i++)
        {
            long s = 0, s2 = 0;
            foreach (byte b in full.RawImage(i)) { s += b; s2 += b * b; }
            sum += s; sumSq += s2;
        }
        double n = full.Count * 784.0;
        double mean = sum / n / 255, std = Math.Sqrt(sumSq / n / (255.0 * 255) - mean * mean);
        _out.WriteLine($"Fashion-MNIST train mean {mean:F5} std {std:F5}");
        Assert.Equal(FashionMnist.Mean, mean, 4e-4);
        Assert.Equal(FashionMnist.Std, std, 4e-4);
    }
}
