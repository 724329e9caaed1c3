// Vitq.ReadImages / InferWithTaps / InferenceResult as vitq infer uses them: the interop file round trip,
// attention maps and quantization-point taps (quantized outputs only under quantizing hooks), the top
// classes, and bad images, points and paths rejected, naming the parameter, before anything is written.
using ViTQuant.Api;
using ViTQuant.IO;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Api;

public class InferFacadeTests
{
    private static Tensor Batch(int b = 3) => Tensor.Randn(new Rng(11), 1f, b, 1, 8, 8);

    [Fact]
    public void NoTaps_GivesTheModelsLogits_AndNothingRecorded()
    {
        var model = TinyModels.Model(seed: 2);
        var res = Vitq.InferWithTaps(model, Batch());
        Assert.Empty(res.AttentionMaps);
        Assert.Empty(res.PointTensors);
        var plain = Vitq.Infer(model, Batch());
        Assert.Equal(plain.Shape, res.Logits.Shape);
        for (int i = 0; i < plain.Size; i++) Assert.Equal(plain.Data[i], res.Logits.Data[i], 4);
    }

    [Fact]
    public void AttentionMaps_AndPoints_AreRecordedInForwardOrder_QuantizedOutputsOnlyUnderQuantizingHooks()
    {
        var model = TinyModels.Model(seed: 2);
        var res = Vitq.InferWithTaps(model, Batch(), taps: new InferenceTaps { AttentionMaps = true, Points = new[] { "blocks.1.mlp.*" } });
        Assert.Equal(new[] { "blocks.0.attn.probs", "blocks.1.attn.probs" }, res.AttentionMaps.Select(t => t.Key));
        var probs = res.AttentionMaps[0].Value;
        Assert.Equal(new[] { 3, 4, 17, 17 }, probs.Shape); // 4 heads, 4×4 patches + class token
        Assert.Equal(1.0, probs.Data.Take(17).Sum(), 4);
        Assert.NotEmpty(res.PointTensors);
        Assert.All(res.PointTensors, t => Assert.StartsWith("input.blocks.1.mlp.", t.Key));

        var q = Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, 8, seed: 1), new QuantizeOptions { Method = "minmax", WeightBits = 8, ActivationBits = 4 });
        var quantized = Vitq.InferWithTaps(q.Model.Model, Batch(), q.Model, new InferenceTaps { Points = new[] { "all" } });
        Assert.Empty(quantized.AttentionMaps);
        Assert.Contains(quantized.PointTensors, t => t.Key.StartsWith("quantized.", StringComparison.Ordinal));
        Assert.True(quantized.PointTensors.Count(t => t.Key.StartsWith("input.", StringComparison.Ordinal)) > res.PointTensors.Count);
    }

    [Fact]
    public void Top_IsSortedAndClippedToTheClasses()
    {
        var res = Vitq.InferWithTaps(TinyModels.Model(seed: 2), Batch());
        var top = res.Top(10);
        Assert.Equal(5, top.K); // the tiny model has 5 classes
        Assert.Equal(3, top.Count);
        for (int b = 0; b < 3; b++)
        {
            Assert.Equal(Ops.ArgMax(res.Logits, 1)[b], top[b, 0].Index);
            for (int j = 1; j < 5; j++) Assert.True(top[b, j].Probability <= top[b, j - 1].Probability);
            Assert.Equal(1.0, Enumerable.Range(0, 5).Sum(j => top[b, j].Probability), 4);
        }
        Assert.Equal("k", Assert.Throws<ArgumentException>(() => res.Top(0)).ParamName);
    }

    [Fact]
    public void ReadImages_Infer_Save_RoundTrip()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 2);
        string input = dir.File("in.safetensors"), output = dir.File("out.safetensors");
        SafeTensorsWriter.Write(input, new[] { ("pixel_values", Batch()) });
        var x = Vitq.ReadImages(input, model.Config);
        Assert.Equal(Batch().ToArray(), x.ToArray());
        var res = Vitq.InferWithTaps(model, x, taps: new InferenceTaps { AttentionMaps = true });
        res.Save(output);
        var f = SafeTensorsFile.Read(output);
        Assert.Equal(new[] { "blocks.0.attn.probs", "blocks.1.attn.probs", "logits", "top5_indices", "top5_probs" }, f.Names.Order(StringComparer.Ordinal));
        Assert.Equal(res.Logits.ToArray(), f.GetTensor("logits").ToArray());
        Assert.Equal(res.Top().Indices, f.GetInt32("top5_indices"));
        Assert.Equal("sim", f.Metadata["vitq.engine"]);
        Assert.Equal("vit_tiny_test", f.Metadata["vitq.model"]);
    }

    [Fact]
    public void BadImages_Points_AndPaths_AreRejected_NamingTheParameter()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 2);
        Assert.Equal("images", Assert.Throws<ArgumentException>(() => Vitq.InferWithTaps(model, new Tensor(2, 1, 9, 9))).ParamName);
        var e = Assert.Throws<ArgumentException>(() => Vitq.InferWithTaps(model, Batch(), taps: new InferenceTaps { Points = new[] { "blocks.7.*" } }));
        Assert.Equal("taps", e.ParamName);
        Assert.Contains("blocks.7.*", e.Message);

        var res = Vitq.InferWithTaps(model, Batch());
        File.WriteAllText(dir.File("taken.safetensors"), "x");
        Assert.Equal("path", Assert.Throws<ArgumentException>(() => res.Save(dir.File("taken.safetensors"))).ParamName);
        Assert.Equal("path", Assert.Throws<ArgumentException>(() => res.Save(dir.Path)).ParamName);
        Assert.Equal("x", File.ReadAllText(dir.File("taken.safetensors")));

        // Integer pixels and a missing tensor: the library's one-line error naming the file.
        string ints = dir.File("ints.safetensors"), none = dir.File("none.safetensors");
        SafeTensorsWriter.Write(ints, new[] { SafeTensorsEntry.FromInt32("pixel_values", new int[64], 1, 1, 8, 8) });
        SafeTensorsWriter.Write(none, new[] { ("logits", new Tensor(1, 5)) });
        Assert.Contains("ints.safetensors", Assert.Throws<ViTQuantException>(() => Vitq.ReadImages(ints, model.Config)).Message);
        Assert.Contains("none.safetensors", Assert.Throws<ViTQuantException>(() => Vitq.ReadImages(none, model.Config)).Message);
    }
}
