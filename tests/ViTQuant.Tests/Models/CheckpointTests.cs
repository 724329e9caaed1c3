// Checkpoint loading and saving (ModelIO): our own format round trip, timm folder and file + sibling
// config.json, and every way a user's checkpoint can be wrong. Each failure must be one
// ViTQuantException line naming the file and what is wrong (for state-dict problems: every name).
using System.Buffers.Binary;
using System.Text.Json.Nodes;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Models;

public class CheckpointTests
{
    private static readonly string OddDir = VitParityTests.FixturePath("vit_odd");

    private static Tensor OddImages() => HashInit.Images(103, 2, 3, 20, 20);

    private static float[] Logits(VisionTransformer m, Tensor x)
    {
        using (Autograd.NoGrad()) return m.Forward(x).ToArray();
    }

    /// <summary>The load must fail with one line that names the file and contains every fragment.</summary>
    private static string AssertFails(string path, params string[] fragments)
    {
        var e = Assert.Throws<ViTQuantException>(() => ModelIO.Load(path));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(path, e.Message);
        foreach (var f in fragments) Assert.Contains(f, e.Message);
        return e.Message;
    }

    private static JsonObject OddConfig() => JsonNode.Parse(File.ReadAllText(Path.Combine(OddDir, "config.json")))!.AsObject();

    /// <summary>A timm folder with the odd model's weights (optionally edited) and the given config.json text.</summary>
    private static void WriteTimmFolder(string dir, string configJson, Action<Dictionary<string, Tensor>>? edit = null)
    {
        var f = SafeTensorsFile.Read(Path.Combine(OddDir, "model.safetensors"));
        var state = f.Names.ToDictionary(n => n, n => f.GetTensor(n));
        edit?.Invoke(state);
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), state.Select(kv => (kv.Key, kv.Value)));
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
    }

    [Fact]
    public void OwnFormat_RoundTrip_IdenticalLogitsConfigAndMetadata()
    {
        using var dir = new TempDir();
        var original = (VisionTransformer)ModelIO.Load(OddDir);
        string path = dir.File("odd.safetensors");
        ModelIO.Save(original, path, new Dictionary<string, string> { ["vitq.note"] = "round trip" });
        // a sibling config.json of another architecture must not matter: our metadata wins
        File.WriteAllText(dir.File("config.json"), """{"architecture": "deit_tiny_patch16_224"}""");

        var loaded = (VisionTransformer)ModelIO.Load(path);
        Assert.Equal(original.Config.ToJson(), loaded.Config.ToJson());
        var x = OddImages();
        Assert.Equal(Logits(original, x), Logits(loaded, x)); // bit-identical
        var meta = SafeTensorsFile.Read(path).Metadata;
        Assert.Equal("vitq-float/1", meta[ModelIO.FormatKey]);
        Assert.Equal("round trip", meta["vitq.note"]);
        Assert.Equal(original.StateDict().Keys, SafeTensorsFile.Read(path).Names);
    }

    [Fact]
    public void OwnFormat_FreshModelRoundTrip_KeepsEveryParameterBitExact()
    {
        using var dir = new TempDir();
        var cfg = ViTConfig.FashionMnistDefault() with { Depth = 1, EmbedDim = 32, NumHeads = 2 };
        var m = new VisionTransformer(cfg, seed: 5);
        ModelIO.Save(m, dir.File("m.safetensors"));
        var back = ModelIO.Load(dir.File("m.safetensors"));
        Assert.Equal(cfg.ClassNames, back.Config.ClassNames);
        foreach (var ((n1, t1), (n2, t2)) in m.StateDict().Zip(back.StateDict()))
        {
            Assert.Equal(n1, n2);
            Assert.True(t1.Span.SequenceEqual(t2.Span), n1);
        }
    }

    [Fact]
    public void TimmFileWithSiblingConfig_LoadsLikeTheFolder()
    {
        using var dir = new TempDir();
        File.Copy(Path.Combine(OddDir, "model.safetensors"), dir.File("weights.safetensors"));
        File.Copy(Path.Combine(OddDir, "config.json"), dir.File("config.json"));
        var x = OddImages();
        var byFile = (VisionTransformer)ModelIO.Load(dir.File("weights.safetensors"));
        var byFolder = (VisionTransformer)ModelIO.Load(OddDir);
        Assert.Equal(byFolder.Config.ToJson(), byFile.Config.ToJson());
        Assert.Equal(Logits(byFolder, x), Logits(byFile, x));
    }

    [Fact]
    public void MissingPieces_AreNamed()
    {
        using var dir = new TempDir();
        AssertFails(dir.File("nope.safetensors"), "not found");
        AssertFails(dir.Path, "no model.safetensors");
        File.Copy(Path.Combine(OddDir, "model.safetensors"), dir.File("model.safetensors"));
        AssertFails(dir.File("model.safetensors"), "no sibling config.json");
        var e = Assert.Throws<ViTQuantException>(() => ModelIO.Load(dir.Path)); // folder: names the config it looked for
        Assert.Contains(Path.Combine(dir.Path, "config.json"), e.Message);
    }

    [Theory]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\",", "not valid JSON")]
    [InlineData("[1, 2]", "expected a JSON object")]
    [InlineData("{\"num_classes\": 7}", "missing 'architecture'")]
    [InlineData("{\"architecture\": 42}", "wrong JSON type")]
    [InlineData("{\"architecture\": \"vit_gigantic_patch99\"}", "unknown architecture 'vit_gigantic_patch99'")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"model_args\": {\"depth\": \"two\"}}", "wrong JSON type")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"model_args\": {\"depth\": 2.5}}", "wrong JSON type")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"model_args\": {\"use_swiglu\": true}}", "unsupported model_args key 'use_swiglu'")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"model_args\": {\"qkv_bias\": false}}", "unsupported model_args key 'qkv_bias'")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"model_args\": [2]}", "'model_args' must be a JSON object")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"model_args\": {\"img_size\": [224, 160]}}", "not square")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"model_args\": {\"embed_dim\": 65}}", "not divisible by num_heads")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"model_args\": {\"img_size\": 100}}", "not divisible by patch size")]
    [InlineData("{\"architecture\": \"deit_tiny_distilled_patch16_224\", \"global_pool\": \"avg\"}", "distilled model needs global_pool 'token'")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"pretrained_cfg\": {\"mean\": 0.5}}", "'mean' must be an array")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"pretrained_cfg\": {\"std\": [0.5, 0.5]}}", "mean/std have 3/2 values")]
    [InlineData("{\"architecture\": \"vit_tiny_patch16_224\", \"pretrained_cfg\": {\"crop_pct\": 1.5}}", "crop_pct 1.5")]
    public void BadTimmConfig_OneLineNamingTheConfig(string json, string fragment)
    {
        using var dir = new TempDir();
        string cfg = dir.File("config.json");
        File.WriteAllText(cfg, json);
        var e = Assert.Throws<ViTQuantException>(() => ModelIO.ParseTimmConfig(cfg));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(cfg + ":", e.Message);
        Assert.Contains(fragment, e.Message);
    }

    [Fact]
    public void TimmConfig_AcceptsSquarePairsAndIgnoresTrainingOnlyArgs()
    {
        using var dir = new TempDir();
        var o = OddConfig();
        var ma = o["model_args"]!.AsObject();
        ma["img_size"] = new JsonArray(20, 20);
        ma["patch_size"] = new JsonArray(4, 4);
        ma["drop_path_rate"] = 0.1;
        ma["qkv_bias"] = true;
        File.WriteAllText(dir.File("config.json"), o.ToJsonString());
        var cfg = ModelIO.ParseTimmConfig(dir.File("config.json"));
        Assert.Equal((20, 4, 66), (cfg.ImageSize, cfg.PatchSize, cfg.EmbedDim));
    }

    [Fact]
    public void ConfigThatDisagreesWithTheWeights_ListsEveryShapeMismatch()
    {
        using var dir = new TempDir();
        var o = OddConfig();
        o["num_classes"] = 5;
        o.Remove("label_names"); // 7 names for 5 classes would be rejected before the weights are read
        WriteTimmFolder(dir.Path, o.ToJsonString());
        AssertFails(dir.Path, "shape mismatch 2", "head.weight (checkpoint [7, 66] vs model [5, 66])", "head.bias (checkpoint [7] vs model [5])");
    }

    [Fact]
    public void MissingUnexpectedAndMisshapedTensors_AreAllNamed()
    {
        using var dir = new TempDir();
        string cfg = OddConfig().ToJsonString();
        WriteTimmFolder(dir.Path, cfg, s =>
        {
            s.Remove("blocks.1.mlp.fc2.bias");
            s.Remove("norm.weight");
            s["blocks.2.norm1.weight"] = Tensor.Ones(66);
            s["pos_embed"] = Tensor.Zeros(1, 25, 66);
        });
        AssertFails(dir.Path, "missing 2:", "blocks.1.mlp.fc2.bias", "norm.weight",
            "unexpected 1: blocks.2.norm1.weight", "shape mismatch 1: pos_embed (checkpoint [1, 25, 66] vs model [1, 26, 66])");
    }

    [Fact]
    public void PlainVitWeightsUnderDistilledArchitecture_NameTheMissingDistParts()
    {
        // a plain ViT checkpoint under a distilled architecture: dist_token and head_dist are missing
        using var dir = new TempDir();
        var o = OddConfig();
        o["architecture"] = "deit_tiny_distilled_patch16_224";
        WriteTimmFolder(dir.Path, o.ToJsonString());
        AssertFails(dir.Path, "missing 3:", "dist_token", "head_dist.weight", "head_dist.bias", "pos_embed (checkpoint [1, 26, 66] vs model [1, 27, 66])");
    }

    [Fact]
    public void CorruptFiles_OneLineNamingTheFile()
    {
        using var dir = new TempDir();
        byte[] good = File.ReadAllBytes(Path.Combine(OddDir, "model.safetensors"));
        File.Copy(Path.Combine(OddDir, "config.json"), dir.File("config.json"));

        string truncated = dir.File("truncated.safetensors");
        File.WriteAllBytes(truncated, good[..(good.Length - 100)]);
        AssertFails(truncated, "run past the end of the data buffer");

        string headerPastEnd = dir.File("header.safetensors");
        var bad = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(bad, (ulong)good.Length);
        File.WriteAllBytes(headerPastEnd, bad);
        AssertFails(headerPastEnd, "runs past the end of the file");

        string tiny = dir.File("tiny.safetensors");
        File.WriteAllBytes(tiny, new byte[] { 1, 2, 3 });
        AssertFails(tiny, "not a safetensors file");

        string text = dir.File("notes.safetensors");
        File.WriteAllText(text, "this is not a checkpoint at all, just text that is long enough");
        AssertFails(text);
    }

    [Fact]
    public void OwnFormat_BadConfigMetadata_IsNamed()
    {
        using var dir = new TempDir();
        var m = ModelIO.Load(OddDir);
        var tensors = m.StateDict().Select(kv => (kv.Key, kv.Value)).ToList();

        string badJson = dir.File("badjson.safetensors");
        SafeTensorsWriter.Write(badJson, tensors, new Dictionary<string, string> { [ModelIO.ConfigKey] = "{\"EmbedDim\": " });
        AssertFails(badJson, "model config is not valid JSON");

        string badValue = dir.File("badvalue.safetensors");
        var json = JsonNode.Parse(m.Config.ToJson())!.AsObject();
        json["NumHeads"] = 5;
        SafeTensorsWriter.Write(badValue, tensors, new Dictionary<string, string> { [ModelIO.ConfigKey] = json.ToJsonString() });
        AssertFails(badValue, "embed_dim 66 is not divisible by num_heads 5");

        string nullMean = dir.File("nullmean.safetensors");
        json["NumHeads"] = 6;
        json["Mean"] = null;
        SafeTensorsWriter.Write(nullMean, tensors, new Dictionary<string, string> { [ModelIO.ConfigKey] = json.ToJsonString() });
        AssertFails(nullMean, "mean and std must be arrays");
    }
}
