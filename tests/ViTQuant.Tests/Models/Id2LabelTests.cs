// timm/Hugging Face folders name their classes in config.json by label_names or id2label.
using System.Text.Json.Nodes;
using ViTQuant.Models;

namespace ViTQuant.Tests.Models;

public class Id2LabelTests
{
    private static string CopyOdd(TempDir dir, Action<JsonObject> edit)
    {
        string src = VitParityTests.FixturePath("vit_odd"), dst = dir.File("odd");
        Directory.CreateDirectory(dst);
        File.Copy(Path.Combine(src, "model.safetensors"), Path.Combine(dst, "model.safetensors"));
        var o = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
        o.Remove("label_names");
        edit(o);
        File.WriteAllText(Path.Combine(dst, "config.json"), o.ToJsonString());
        return dst;
    }

    [Fact]
    public void Id2Label_GivesTheClassNamesInIndexOrder()
    {
        using var dir = new TempDir();
        var names = new[] { "ant", "bee", "cat", "dog", "eel", "fox", "gnu" };
        string path = CopyOdd(dir, o =>
        {
            var m = new JsonObject();
            foreach (int i in new[] { 6, 0, 3, 1, 5, 2, 4 }) m[i.ToString()] = names[i]; // key order must not matter
            o["id2label"] = m;
        });
        Assert.Equal(names, ModelIO.Load(path).Config.ClassNames);
    }

    [Fact]
    public void Id2Label_WithAHole_OrABadKey_IsAnErrorNamingTheFile()
    {
        using var dir = new TempDir();
        string hole = CopyOdd(dir, o => o["id2label"] = new JsonObject { ["0"] = "a", ["1"] = "b" });
        var e = Assert.Throws<ViTQuantException>(() => ModelIO.Load(hole));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("no name for class 2", e.Message);
        Directory.Delete(hole, true);
        string bad = CopyOdd(dir, o => o["id2label"] = new JsonObject { ["x"] = "a" });
        Assert.Contains("'x' is not a class index below 7", Assert.Throws<ViTQuantException>(() => ModelIO.Load(bad)).Message);
    }

    [Fact]
    public void ShippedModel_CarriesTheFashionMnistNames() =>
        Assert.Equal(new[] { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" },
            ModelIO.Load(null).Config.ClassNames);
}
