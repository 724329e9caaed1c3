using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Tests.IO;

namespace ViTQuant.Tests.Data;

public class ImageFolderTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("vitq-folder-").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    /// <summary>A w×h RGB PNG whose every pixel is (v, v, v).</summary>
    private static byte[] FlatPng(int w, int h, byte v) => MiniPng.Encode(Enumerable.Repeat(v, w * h * 3).ToArray(), w, h, MiniPng.Rgb);

    private string Put(string relative, byte[] data)
    {
        string p = Path.Combine(_root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(p)!);
        File.WriteAllBytes(p, data);
        return p;
    }

    [Fact]
    public void DirectoryLayoutUsesOrdinalClassAndFileOrder()
    {
        Put("b_class/x.png", FlatPng(6, 4, 10));
        Put("b_class/sub/a.png", FlatPng(4, 4, 20));                       // recursive, after the class dir's own files
        Put("b_class/notes.txt", "not an image"u8.ToArray());              // ignored
        Put("a_class/2.png", FlatPng(5, 5, 30));
        Put("a_class/10.PNG", FlatPng(5, 5, 40));                          // "10" < "2" ordinally; extension case-insensitive
        Put("C_upper/img.jpeg", Jpeg.Encode(JpegTests.Smooth(8, 8, 3), 8, 8, 3, 100, JpegSubsampling.S444));
        var ds = ImageFolder.FromDirectory(_root, new EvalTransform(4, 1.0, 3));
        Assert.Equal(new[] { "C_upper", "a_class", "b_class" }, ds.ClassNames); // 'C' < 'a' ordinally
        Assert.Equal(5, ds.Count);
        var names = Enumerable.Range(0, ds.Count).Select(i => Path.GetRelativePath(_root, ds.ImagePath(i)).Replace('\\', '/')).ToArray();
        Assert.Equal(new[] { "C_upper/img.jpeg", "a_class/10.PNG", "a_class/2.png", "b_class/x.png", "b_class/sub/a.png" }, names);
        Assert.Equal(new[] { 0, 1, 1, 2, 2 }, Enumerable.Range(0, 5).Select(ds.Label).ToArray());

        Assert.Equal((3, 4, 4), (ds.Channels, ds.Height, ds.Width));
        var img = new float[3 * 4 * 4];
        ds.GetImage(3, img); // 6×4 flat image: resize keeps the constant, crop keeps it too
        Assert.All(img, v => Assert.Equal(10 / 255f, v));
        ds.GetImage(1, img);
        Assert.All(img, v => Assert.Equal(40 / 255f, v));
    }

    [Fact]
    public void EmptyOrMalformedFoldersGiveClearErrors()
    {
        Assert.Contains("no class", Assert.Throws<ViTQuantException>(() => ImageFolder.FromDirectory(_root, new EvalTransform(4))).Message);
        Directory.CreateDirectory(Path.Combine(_root, "empty_class"));
        Put("full_class/a.png", FlatPng(2, 2, 1));
        var e = Assert.Throws<ViTQuantException>(() => ImageFolder.FromDirectory(_root, new EvalTransform(4)));
        Assert.Contains("empty_class", e.Message);
        Directory.Delete(Path.Combine(_root, "empty_class"));
        Put("full_class/b.bmp", new byte[] { 0x42, 0x4D });
        Assert.Contains("b.bmp", Assert.Throws<ViTQuantException>(() => ImageFolder.FromDirectory(_root, new EvalTransform(4))).Message);
        string missing = Path.Combine(_root, "missing");
        Assert.Contains(missing, Assert.Throws<ViTQuantException>(() => ImageFolder.FromDirectory(missing, new EvalTransform(4))).Message);
    }

    [Fact]
    public void CorruptImageFailsAtGetImageNamingTheFile()
    {
        Put("cls/good.png", FlatPng(3, 3, 5));
        var jpg = Jpeg.Encode(JpegTests.Smooth(16, 16, 3), 16, 16, 3);
        string bad = Put("cls/zbad.jpg", jpg[..(jpg.Length / 3)]);
        var ds = ImageFolder.FromDirectory(_root, new EvalTransform(3, 1.0));
        ds.GetImage(0, new float[27]);
        var e = Assert.Throws<ViTQuantException>(() => ds.GetImage(1, new float[27]));
        Assert.Contains(bad, e.Message);
    }

    [Fact]
    public void LabelsFileWithIndicesNamesAndRelativePaths()
    {
        Put("imgs/a.png", FlatPng(3, 3, 1));
        Put("imgs/b.png", FlatPng(3, 3, 2));
        string abs = Put("elsewhere/c.png", FlatPng(3, 3, 3));
        string ints = Put("val.txt", System.Text.Encoding.UTF8.GetBytes($"# comment\nimgs/a.png\t3\n\nimgs/b.png\t0\r\n{abs}\t1\n"));
        var ds = ImageFolder.FromLabelsFile(ints, new EvalTransform(3, 1.0, 1));
        Assert.Equal(3, ds.Count);
        Assert.Equal(4, ds.NumClasses); // max label + 1
        Assert.Equal(new[] { 3, 0, 1 }, new[] { ds.Label(0), ds.Label(1), ds.Label(2) });
        var img = new float[9];
        ds.GetImage(2, img);
        Assert.All(img, v => Assert.Equal(3 / 255f, v));

        string named = Put("named.txt", "imgs/a.png\tzebra\nimgs/b.png\tant\n"u8.ToArray());
        var byName = ImageFolder.FromLabelsFile(named, new EvalTransform(3, 1.0));
        Assert.Equal(new[] { "ant", "zebra" }, byName.ClassNames);
        Assert.Equal(1, byName.Label(0));
        var withNames = ImageFolder.FromLabelsFile(named, new EvalTransform(3, 1.0), new[] { "zebra", "yak", "ant" });
        Assert.Equal(new[] { 0, 2 }, new[] { withNames.Label(0), withNames.Label(1) });
    }

    [Fact]
    public void LabelsFileErrorsNameFileAndLine()
    {
        Put("imgs/a.png", FlatPng(3, 3, 1));
        string noTab = Put("bad1.txt", "imgs/a.png\t0\nimgs/a.png 1\n"u8.ToArray());
        var e1 = Assert.Throws<ViTQuantException>(() => ImageFolder.FromLabelsFile(noTab, new EvalTransform(3)));
        Assert.Contains("bad1.txt:2", e1.Message);
        string missing = Put("bad2.txt", "imgs/nope.png\t0\n"u8.ToArray());
        Assert.Contains("nope.png", Assert.Throws<ViTQuantException>(() => ImageFolder.FromLabelsFile(missing, new EvalTransform(3))).Message);
        string unknown = Put("bad3.txt", "imgs/a.png\tgiraffe\n"u8.ToArray());
        var e3 = Assert.Throws<ViTQuantException>(() => ImageFolder.FromLabelsFile(unknown, new EvalTransform(3), new[] { "ant" }));
        Assert.Contains("bad3.txt:1", e3.Message);
        string empty = Put("bad4.txt", "# nothing\n"u8.ToArray());
        Assert.Contains("no images", Assert.Throws<ViTQuantException>(() => ImageFolder.FromLabelsFile(empty, new EvalTransform(3))).Message);
    }
}
