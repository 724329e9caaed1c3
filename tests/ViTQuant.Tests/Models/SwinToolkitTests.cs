// Swin through the toolkit's model abstraction: loading (timm folder, our safetensors), the bad-input errors
// at load time, PTQ (min–max/percentile plan points, calibration, quantized checkpoint round trip) and the
// CLI (quantize → eval on the quantized checkpoint and on the integer runtime, infer --taps, refusal of the ViT-only features).
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Cli;

namespace ViTQuant.Tests.Models;

public class SwinToolkitTests
{
    private static readonly string OddDir = VitParityTests.FixturePath("swin_odd");

    /// <summary>A seeded Fashion-MNIST-shaped Swin (swin_fmnist's geometry, narrower) for the CLI.</summary>
    private static SwinTransformer Tiny() =>
        new(SwinConfig.FashionMnist() with { EmbedDim = 8, NumHeads = new[] { 1, 2, 2 } }, seed: 5);

    [Fact]
    public void TimmFolder_LoadsAsSwin_AndOurFileRoundTripsBitExact()
    {
        var m = ModelIO.Load(OddDir);
        var swin = Assert.IsType<SwinTransformer>(m);
        Assert.Equal("swin", m.Config.Family);
        Assert.Equal(new[] { "a", "b", "c", "d", "e" }, m.Config.ClassNames);
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, "s.safetensors");
        ModelIO.Save(m, path);
        var back = ModelIO.Load(path);
        var x = Tensor.Randn(new Rng(2), 1f, 2, 1, 28, 28);
        using var _ = Autograd.NoGrad();
        Assert.Equal(swin.Forward(x).ToArray(), back.Forward(x).ToArray());
        Assert.Equal(m.Forward(x).ToArray(), m.Infer(x).ToArray());
    }

    [Fact]
    public void MissingTable_AndConfigTimmCannotRun_AreOneLineErrorsNamingIt()
    {
        using var dir = new TempDir();
        var m = Tiny();
        var path = Path.Combine(dir.Path, "s.safetensors");
        SafeTensorsWriter.Write(path, m.StateDict().Where(kv => kv.Key != "layers.0.blocks.1.attn.relative_position_bias_table").Select(kv => (kv.Key, kv.Value)),
            new Dictionary<string, string> { [ModelIO.ConfigKey] = m.Config.ToJson() });
        var e = Assert.Throws<ViTQuantException>(() => ModelIO.Load(path));
        Assert.Contains("layers.0.blocks.1.attn.relative_position_bias_table", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        // a timm folder whose 52 px / patch 4 / window 3 / 2 stages timm cannot run (see SwinParityTests)
        var folder = Path.Combine(dir.Path, "bad");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), """
            {"architecture": "swin_tiny_patch4_window7_224", "num_classes": 3,
             "model_args": {"img_size": 52, "embed_dim": 8, "depths": [2, 2], "num_heads": [2, 2], "window_size": 3}}
            """);
        File.WriteAllBytes(Path.Combine(folder, "model.safetensors"), Array.Empty<byte>());
        var e2 = Assert.Throws<ViTQuantException>(() => ModelIO.Load(folder));
        Assert.Contains("config.json", e2.Message);
        Assert.Contains("stage 1", e2.Message);
    }

    [Theory]
    [InlineData("minmax")]
    [InlineData("percentile")]
    public void Ptq_CoversEverySwinPoint_AndTheCheckpointRoundTrips(string method)
    {
        var m = ModelIO.Load(OddDir);
        var c = m.Config;
        Assert.Contains("layers.1.downsample.reduction", c.WeightLayers());
        Assert.Contains("layers.2.blocks.1.attn.probs", c.ActivationPoints());
        Assert.Equal("head.fc", c.WeightLayers().Last());
        var qm = new QuantizedModel(m.Clone(), QuantPresets.Create(method, 4, 4, firstLast8Bit: true)) { CalibrationBlocksPerPass = 2 };
        Assert.Equal(3, qm.CalibrationPasses); // six blocks over three stages
        Assert.Equal(c.WeightLayers().Count(), qm.WeightQuantizers.Count);
        Assert.Equal(8, qm.WeightQuantizers["head.fc"].Spec.Bits);
        var rng = new Rng(3);
        var calib = Enumerable.Range(0, 2).Select(_ => Tensor.Randn(rng, 1f, 4, 1, 28, 28)).ToList();
        qm.Calibrate(calib);
        var codes = QuantizedCheckpoint.Freeze(qm);
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, "q.safetensors");
        QuantizedCheckpoint.Save(qm, codes, path);
        var loaded = QuantizedCheckpoint.Load(path);
        Assert.IsType<SwinTransformer>(loaded.Model);
        var x = Tensor.Randn(new Rng(4), 1f, 2, 1, 28, 28);
        using var _ = Autograd.NoGrad();
        Assert.Equal(qm.Model.Infer(x, qm).ToArray(), loaded.Model.Infer(x, loaded).ToArray());
    }

    [Fact]
    public void Cli_QuantizeEvalInferInfo_OnSwin_AndViTOnlyFeaturesRefuse()
    {
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "swin.safetensors"), q = Path.Combine(dir.Path, "q.safetensors");
        ModelIO.Save(Tiny(), model);
        var r = VitqProcess.Run(new[] { "quantize", "--model", model, "--method", "minmax", "--wbits", "8", "--abits", "8", "--calib-size", "32",
            "--limit", "64", "--threads", "1", "--out", q }, timeoutSeconds: 240);
        VitqProcess.AssertSuccess(r);
        VitqProcess.AssertSuccess(VitqProcess.Run("eval", "--model", q, "--limit", "64", "--threads", "1"));
        var info = VitqProcess.Run("info", "--model", q, "--json");
        VitqProcess.AssertSuccess(info);
        Assert.Contains("swin_fmnist", info.Stdout);
        var input = Path.Combine(dir.Path, "x.safetensors");
        SafeTensorsWriter.Write(input, new[] { ("pixel_values", Tensor.Randn(new Rng(1), 1f, 2, 1, 28, 28)) }, new Dictionary<string, string>());
        var outPath = Path.Combine(dir.Path, "y.safetensors");
        VitqProcess.AssertSuccess(VitqProcess.Run("infer", "--model", q, "--input", input, "--output", outPath, "--taps", "--threads", "1"));
        var y = SafeTensorsFile.Read(outPath);
        // 14×14 map in 4×4 windows (padded to 16): 16 windows per image; M² = 16
        Assert.Equal(new[] { 2 * 16, 1, 16, 16 }, y.GetTensor("layers.0.blocks.1.attn.probs").Shape);
        Assert.Equal(6, y.Names.Count(n => n.EndsWith(".attn.probs")));
        // the integer runtime runs a Swin checkpoint and agrees with the simulation on these 64 images
        var sim = VitqProcess.Run("eval", "--model", q, "--limit", "64", "--threads", "1", "--json");
        var int8 = VitqProcess.Run("eval", "--model", q, "--engine", "int8", "--limit", "64", "--threads", "1", "--json");
        VitqProcess.AssertSuccess(int8);
        Assert.Equal(System.Text.Json.JsonDocument.Parse(sim.Stdout).RootElement.GetProperty("top1").GetDouble(),
            System.Text.Json.JsonDocument.Parse(int8.Stdout).RootElement.GetProperty("top1").GetDouble(), 1);
    }

    [Fact]
    public void Cli_ExportsSwin_FloatAndQuantized_AndEvalRunsTheFileInOnnxRuntime()
    {
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "swin.safetensors"), q = Path.Combine(dir.Path, "q.safetensors");
        ModelIO.Save(Tiny(), model);
        VitqProcess.AssertSuccess(VitqProcess.Run("export", "--model", model, "--out", Path.Combine(dir.Path, "m.onnx")));
        VitqProcess.AssertSuccess(VitqProcess.Run(new[] { "quantize", "--model", model, "--method", "minmax", "--calib-size", "16",
            "--limit", "16", "--threads", "1", "--out", q }, timeoutSeconds: 240));
        string onnx = Path.Combine(dir.Path, "q.onnx");
        VitqProcess.AssertSuccess(VitqProcess.Run("export", "--model", q, "--out", onnx));
        var r = VitqProcess.Run("eval", "--model", onnx, "--engine", "onnx", "--agree-with", q, "--limit", "32", "--threads", "1", "--json");
        VitqProcess.AssertSuccess(r);
        Assert.Contains("swin_fmnist", r.Stdout);
    }

    [Fact]
    public void Cli_AnalyzeRunsOnSwin()
    {
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "swin.safetensors"), outDir = Path.Combine(dir.Path, "an");
        ModelIO.Save(new SwinTransformer(SwinConfig.FashionMnist() with { EmbedDim = 8, NumHeads = new[] { 2, 2, 2 } }, seed: 5), model);
        var r = VitqProcess.Run("analyze", "--model", model, "--data", "fashion-mnist", "--count", "8", "--threads", "1", "--out", outDir, "--json");
        VitqProcess.AssertSuccess(r);
        var j = System.Text.Json.JsonDocument.Parse(r.Stdout).RootElement;
        Assert.Equal((8, 6), (j.GetProperty("count").GetInt32(), j.GetProperty("blocks").GetInt32()));
        Assert.True(File.Exists(Path.Combine(outDir, "attention_heads.png")));
    }

    [Fact]
    public void Cli_CompareRunsOnSwin()
    {
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "swin.safetensors"), outDir = Path.Combine(dir.Path, "cmp");
        ModelIO.Save(Tiny(), model);
        var r = VitqProcess.Run(new[] { "compare", "--model", model, "--methods", "minmax,adfq", "--bits", "w4a4", "--data", "real,gaussian",
            "--seeds", "1", "--calib-size", "16", "--iters", "2", "--synth-count", "16", "--limit", "32", "--threads", "1", "--out", outDir, "--json" }, timeoutSeconds: 300);
        VitqProcess.AssertSuccess(r);
        var md = File.ReadAllText(Path.Combine(outDir, "compare.md"));
        Assert.Contains("swin_fmnist", md);
        Assert.Contains("| gaussian+adfq |", md);
    }

    [Fact]
    public void GaussianSet_OnSwin_IsMadeAndCalibratesMinMax()
    {
        // The data-free floor needs nothing from the architecture: a Gaussian set for a Swin model, then
        // min–max PTQ calibrated on it (the baselines' data-free pipeline).
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "swin.safetensors"), set = Path.Combine(dir.Path, "g.safetensors"), q = Path.Combine(dir.Path, "q.safetensors");
        ModelIO.Save(Tiny(), model);
        VitqProcess.AssertSuccess(VitqProcess.Run("synthesize", "--model", model, "--method", "gaussian", "--count", "8", "--out", set, "--threads", "1"));
        var loaded = Algorithms.DataFree.SyntheticSet.Load(set);
        Assert.Equal("swin", loaded.ModelConfig.Family);
        Assert.Equal(new[] { 8, 1, 28, 28 }, loaded.Images.Shape);
        VitqProcess.AssertSuccess(VitqProcess.Run(new[] { "quantize", "--model", model, "--method", "minmax", "--calib", set, "--calib-size", "8",
            "--limit", "16", "--threads", "1", "--out", q }, timeoutSeconds: 240));
    }

    [Fact]
    public void Cli_QuantizeAdfq_OnSwin_ThenEvalReportsTheSameAccuracy()
    {
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "swin.safetensors"), q = Path.Combine(dir.Path, "a.safetensors");
        ModelIO.Save(Tiny(), model);
        var r = VitqProcess.Run(new[] { "quantize", "--model", model, "--method", "adfq", "--wbits", "4", "--abits", "4", "--iters", "2",
            "--calib-size", "16", "--limit", "64", "--threads", "1", "--out", q, "--json" }, timeoutSeconds: 240);
        VitqProcess.AssertSuccess(r);
        var j = System.Text.Json.JsonDocument.Parse(r.Stdout).RootElement;
        Assert.Equal(16, j.GetProperty("adfq").GetProperty("units").GetArrayLength());
        Assert.Contains("layers.2.blocks.1.mlp", r.Stderr);
        var e = VitqProcess.Run(new[] { "eval", "--model", q, "--limit", "64", "--threads", "1", "--json" }, timeoutSeconds: 240);
        VitqProcess.AssertSuccess(e);
        Assert.Equal(j.GetProperty("quant_top1").GetDouble(), System.Text.Json.JsonDocument.Parse(e.Stdout).RootElement.GetProperty("top1").GetDouble(), 9);
    }

    [Theory]
    [InlineData("psaq")]
    [InlineData("mimiq")]
    public void Cli_SynthesizeOnSwin_ThenCalibratesMinMax(string method)
    {
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "swin.safetensors"), set = Path.Combine(dir.Path, "s.safetensors"), q = Path.Combine(dir.Path, "q.safetensors");
        ModelIO.Save(Tiny(), model);
        var r = VitqProcess.Run(new[] { "synthesize", "--model", model, "--method", method, "--count", "4", "--batch", "2", "--iterations", "2",
            "--seed", "3", "--threads", "1", "--out", set, "--json" }, timeoutSeconds: 240);
        VitqProcess.AssertSuccess(r);
        Assert.Contains(method == "psaq" ? "entropy" : "ihc", r.Stderr);
        var loaded = Algorithms.DataFree.SyntheticSet.Load(set);
        Assert.Equal("swin", loaded.ModelConfig.Family);
        Assert.Equal(new[] { 4, 1, 28, 28 }, loaded.Images.Shape);
        VitqProcess.AssertSuccess(VitqProcess.Run(new[] { "quantize", "--model", model, "--method", "minmax", "--calib", set, "--calib-size", "4",
            "--limit", "16", "--threads", "1", "--out", q }, timeoutSeconds: 240));
    }
}
