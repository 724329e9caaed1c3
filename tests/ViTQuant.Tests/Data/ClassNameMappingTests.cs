// Folder datasets labelled by class name (issue 17, item 2): normalisation, name and index matches,
// and one clear error for a sub-folder that matches nothing.
using ViTQuant.Data;
using ViTQuant.Tests.IO;

namespace ViTQuant.Tests.Data;

public class ClassNameMappingTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("vitq-names-").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private void Folder(string name, byte v)
    {
        Directory.CreateDirectory(Path.Combine(_root, name));
        File.WriteAllBytes(Path.Combine(_root, name, "a.png"), MiniPng.Encode(Enumerable.Repeat(v, 4 * 4 * 3).ToArray(), 4, 4, MiniPng.Rgb));
    }

    private static readonly string[] Fashion = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" };

    [Theory]
    [InlineData("T-shirt/top", "t_shirt_top")]
    [InlineData("t_shirt_top", "t_shirt_top")]
    [InlineData("T-shirt top", "t_shirt_top")]
    [InlineData("  Ankle   boot!! ", "ankle_boot")]
    [InlineData("__x__", "x")]
    [InlineData("Café-Noir", "café_noir")]
    public void Normalise_CaseInsensitive_RunsOfOtherCharactersAreOneUnderscore(string name, string key) =>
        Assert.Equal(key, ImageFolder.NormalizeClassName(name));

    [Fact]
    public void SubFolders_MapByNormalisedName_OrByIndex_NotBySortOrder()
    {
        Folder("ankle_boot", 9);  // sorted first, class 9
        Folder("BAG", 8);
        Folder("t-shirt top", 0);
        Folder("3", 3);           // Dress by index
        var ds = ImageFolder.FromDirectory(_root, new EvalTransform(4, 1.0, 3), Fashion);
        Assert.Equal(Fashion, ds.ClassNames);
        Assert.Equal(10, ds.NumClasses);
        var byFolder = Enumerable.Range(0, ds.Count).ToDictionary(i => Path.GetFileName(Path.GetDirectoryName(ds.ImagePath(i)))!, ds.Label);
        Assert.Equal(9, byFolder["ankle_boot"]);
        Assert.Equal(8, byFolder["BAG"]);
        Assert.Equal(0, byFolder["t-shirt top"]);
        Assert.Equal(3, byFolder["3"]);
        // each image's label is the class its pixels were written for
        var px = new float[48];
        for (int i = 0; i < ds.Count; i++)
        {
            ds.GetImage(i, px);
            Assert.Equal(ds.Label(i) / 255f, px[0], 1e-6);
        }
    }

    [Fact]
    public void UnmatchedSubFolder_IsAnErrorListingItAndTheModelsNames()
    {
        Folder("coat", 4);
        Folder("jumper", 2);
        Folder("12", 1); // an index, but out of range
        var e = Assert.Throws<ViTQuantException>(() => ImageFolder.FromDirectory(_root, new EvalTransform(4, 1.0, 3), Fashion));
        Assert.Contains("'12', 'jumper'", e.Message);
        Assert.Contains("'T-shirt/top'", e.Message);
        Assert.Contains("'Ankle boot'", e.Message);
        Assert.Contains("--labels", e.Message);
        Assert.DoesNotContain("'coat'", e.Message);
    }

    [Fact]
    public void SubFolder_MatchingTwoClassNames_IsAnError()
    {
        Folder("a_b", 1);
        var e = Assert.Throws<ViTQuantException>(() => ImageFolder.FromDirectory(_root, new EvalTransform(4, 1.0, 3), new[] { "a-b", "A b", "c" }));
        Assert.Contains("several class names", e.Message);
    }
}
