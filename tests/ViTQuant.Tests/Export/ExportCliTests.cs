// `vitq export` and `--engine onnx` end to end as a user runs them, and the export's bad inputs.
using System.Text.Json;
using ViTQuant.Export;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Onnx;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;
using static ViTQuant.Tests.Cli.VitqProcess;

namespace ViTQuant.Tests.Export;

public class ExportCliTests
{
    [Fact]
    public void ExportThenInferWithOnnxMatchesTheSimulation()
    {
        using var dir = new TinyModels.TempDir();
        string q = OnnxQuantizedModelTests.QuantizedCheckpointFile("minmax", 4, 4, dir.Path), onnx = dir.File("q.onnx");
        var r = Run("export", "--model", q, "--out", onnx, "--json");
        AssertSuccess(r);
        var j = JsonDocument.Parse(r.Stdout).RootElement;
        Assert.True(j.GetProperty("quantized").GetBoolean());
        Assert.Equal(new FileInfo(onnx).Length, j.GetProperty("file_bytes").GetInt64());
        long f32 = j.GetProperty("float_weight_bytes").GetInt64(), i8 = j.GetProperty("int8_weight_bytes").GetInt64(), i4 = j.GetProperty("int4_weight_bytes").GetInt64();
        Assert.True(i4 < i8 && i8 < f32, r.Stdout);
        Assert.Contains("QDQ", j.GetProperty("points").GetProperty("blocks.0.mlp.fc1").GetString());

        // the same pixels through `vitq infer` in the simulation and in ONNX Runtime
        string pixels = dir.File("x.safetensors"), simOut = dir.File("sim.safetensors"), ortOut = dir.File("ort.safetensors");
        SafeTensorsWriter.Write(pixels, new[] { ("pixel_values", OnnxExportTests.Batches(1, 6, 4)[0]) });
        AssertSuccess(Run("infer", "--model", q, "--input", pixels, "--output", simOut));
        AssertSuccess(Run("infer", "--engine", "onnx", "--model", onnx, "--input", pixels, "--output", ortOut));
        var a = SafeTensorsFile.Read(simOut).GetTensor("logits");
        var b = SafeTensorsFile.Read(ortOut).GetTensor("logits");
        Assert.Equal(a.Shape, b.Shape);
        for (int i = 0; i < a.Size; i++) Assert.True(Math.Abs(a.Data[i] - b.Data[i]) <= 1e-4, $"logit {i}: {a.Data[i]} vs {b.Data[i]}");
    }

    [Fact]
    public void EvalWithOnnxEngineAgreesWithTheSimulation()
    {
        using var dir = new TinyModels.TempDir();
        string q = OnnxQuantizedModelTests.QuantizedCheckpointFile("percentile", 8, 8, dir.Path), onnx = dir.File("q.onnx");
        AssertSuccess(Run("export", "--model", q, "--out", onnx));
        var sim = JsonDocument.Parse(Run("eval", "--model", q, "--limit", "96", "--json").Stdout).RootElement;
        var r = Run("eval", "--engine", "onnx", "--model", onnx, "--limit", "96", "--agree-with", q, "--json");
        AssertSuccess(r);
        var j = JsonDocument.Parse(r.Stdout).RootElement;
        Assert.Equal("onnx", j.GetProperty("engine").GetString());
        Assert.Equal(96, j.GetProperty("count").GetInt32());
        Assert.Equal(sim.GetProperty("top1").GetDouble(), j.GetProperty("sim_top1").GetDouble());
        Assert.True(j.GetProperty("agreement_percent").GetDouble() >= 98, r.Stdout);
        Assert.True(Math.Abs(j.GetProperty("top1").GetDouble() - sim.GetProperty("top1").GetDouble()) <= 2.1, r.Stdout);
        Assert.Contains("predictions agree on", r.Stderr);
    }

    [Fact]
    public void Int8LayoutIsReported_AndAU8S8FileWarnsOnCpusWithoutVnni()
    {
        using var dir = new TinyModels.TempDir();
        string q = OnnxQuantizedModelTests.QuantizedCheckpointFile("minmax", 8, 8, dir.Path), uu = dir.File("uu.onnx"), us = dir.File("us.onnx");
        var r = Run("export", "--model", q, "--out", uu, "--json");
        AssertSuccess(r);
        Assert.Equal("u8u8", JsonDocument.Parse(r.Stdout).RootElement.GetProperty("int8_layout").GetString());
        Assert.Equal(OnnxEngine.HasVnni, r.Stderr.Contains("--int8-layout u8s8 runs")); // the hint, on VNNI CPUs only
        r = Run("export", "--model", q, "--out", us, "--int8-layout", "u8s8", "--json");
        AssertSuccess(r);
        Assert.Equal("u8s8", JsonDocument.Parse(r.Stdout).RootElement.GetProperty("int8_layout").GetString());
        Assert.DoesNotContain("--int8-layout u8s8 runs", r.Stderr);
        Assert.NotNull(ViTQuant.Cli.ExportCommand.LayoutHint(quantized: true, Int8Layout.U8U8, vnni: true));
        Assert.Null(ViTQuant.Cli.ExportCommand.LayoutHint(quantized: true, Int8Layout.U8U8, vnni: false));
        Assert.Null(ViTQuant.Cli.ExportCommand.LayoutHint(quantized: false, Int8Layout.U8U8, vnni: true));
        Assert.Null(ViTQuant.Cli.ExportCommand.LayoutHint(quantized: true, Int8Layout.U8S8, vnni: true));
        AssertUserError(Run("export", "--model", q, "--out", dir.File("x.onnx"), "--int8-layout", "s8s8"), "s8s8", "u8u8");
        var e = Run("eval", "--engine", "onnx", "--model", us, "--limit", "8");
        AssertSuccess(e);
        Assert.Equal(!OnnxEngine.HasVnni, e.Stderr.Contains("no VNNI"));
        e = Run("eval", "--engine", "onnx", "--model", uu, "--limit", "8");
        AssertSuccess(e);
        Assert.DoesNotContain("VNNI", e.Stderr);
    }

    [Fact]
    public void BenchWithOnnxEngineReportsFloatAndQdqSpeedAndOrtsKernels()
    {
        using var dir = new TinyModels.TempDir();
        string q = OnnxQuantizedModelTests.QuantizedCheckpointFile("minmax", 8, 8, dir.Path);
        var r = Run("bench", "--engine", "onnx", "--model", q, "--batch", "2", "--iters", "1", "--threads", "1", "--json");
        AssertSuccess(r);
        var j = JsonDocument.Parse(r.Stdout).RootElement;
        foreach (var k in new[] { "ort_float_forward_img_per_s", "ort_qdq_forward_img_per_s", "ort_qdq_rounded_bias_forward_img_per_s", "ort_qdq_u8s8_forward_img_per_s" })
            Assert.True(j.GetProperty(k).GetDouble() > 0, k);
        Assert.True(j.GetProperty("ort_qdq_ops").GetProperty("com.microsoft.QGemm").GetInt32() > 0, r.Stdout);
        Assert.True(j.GetProperty("onnx_qdq_bytes").GetInt64() < j.GetProperty("onnx_float_bytes").GetInt64());
        AssertUserError(Run("bench", "--engine", "onnx", "--model", dir.File("m.onnx")), "exports the model itself");
        AssertUserError(Run("infer", "--engine", "onnx", "--model", dir.File("m.onnx"), "--input", q, "--output", dir.File("o.safetensors"), "--taps"), "they need --engine sim, not onnx");
    }

    [Fact]
    public void Int4StorageNeedsOpset21AndComputesTheSameLogits()
    {
        using var dir = new TinyModels.TempDir();
        string q = OnnxQuantizedModelTests.QuantizedCheckpointFile("minmax", 4, 4, dir.Path);
        string o8 = dir.File("int8.onnx"), o4 = dir.File("int4.onnx");
        AssertUserError(Run("export", "--model", q, "--out", o4, "--weight-storage", "int4"), "int4", "--opset 21");
        Assert.False(File.Exists(o4));
        var r8 = OnnxExporter.ExportFile(q, o8, new OnnxExportOptions());
        var r4 = OnnxExporter.ExportFile(q, o4, new OnnxExportOptions { Opset = 21, WeightStorage = WeightStorage.Int4 });
        Assert.True(r4.FileBytes < r8.FileBytes, $"int4 file {r4.FileBytes} bytes, int8 {r8.FileBytes}");
        var x = OnnxExportTests.Batches(1, 4, 8)[0];
        using var e8 = new OnnxEngine(o8);
        using var e4 = new OnnxEngine(o4);
        var a = e8.Run(x);
        var b = e4.Run(x);
        for (int i = 0; i < a.Size; i++) Assert.True(Math.Abs(a.Data[i] - b.Data[i]) <= 1e-4, $"logit {i}: {a.Data[i]} vs {b.Data[i]}");
    }

    [Fact]
    public void BadExportsGiveOneLineErrors()
    {
        using var dir = new TinyModels.TempDir();
        var m = new VisionTransformer(OnnxExportTests.Tiny, 1);
        string st = dir.File("m.safetensors"), onnx = dir.File("m.onnx");
        ModelIO.Save(m, st);
        AssertUserError(Run("export", "--model", st, "--out", onnx, "--opset", "13"), "--opset 13 is too old", "LayerNormalization", "--opset 17");
        AssertUserError(Run("export", "--model", st, "--out", onnx, "--opset", "30"), "--opset 30 is not supported");
        AssertUserError(Run("export", "--model", st, "--out", st), "same file as input");
        Assert.True(SafeTensorsFile.Read(st).Contains("pos_embed")); // the input survived
        File.WriteAllText(onnx, "keep me");
        AssertUserError(Run("export", "--model", st, "--out", onnx), "already exists");
        Assert.Equal("keep me", File.ReadAllText(onnx));
        Assert.Equal(0, Run("export", "--model", st, "--out", onnx, "--overwrite").ExitCode);
        Assert.NotEqual("keep me", File.ReadAllText(onnx));
        File.Delete(onnx);
        // a plan with a point that has no static form: a dynamic-range activation quantizer
        var plan = new QuantPlan
        {
            Name = "dyn", WeightBits = 8, ActivationBits = 8,
            Activations = new[] { new QuantRule("blocks.0.mlp.fc2", new QuantSpec { Dynamic = true }) },
        };
        var qm = new QuantizedModel(m, plan);
        qm.Calibrate(OnnxExportTests.Batches(1, 2, 1));
        var ex = Assert.Throws<ViTQuantException>(() => OnnxExporter.Build(m, qm, new Dictionary<string, WeightCodes>(), new OnnxExportOptions()));
        Assert.Contains("blocks.0.mlp.fc2", ex.Message);
        Assert.Contains("dynamic", ex.Message);
        // --engine onnx wants an .onnx file; the simulation refuses one
        AssertUserError(Run("eval", "--engine", "onnx", "--model", st), "--engine onnx needs --model FILE.onnx", "vitq export");
        OnnxExporter.ExportFile(st, onnx, new OnnxExportOptions());
        AssertUserError(Run("eval", "--model", onnx), "is an ONNX file", "--engine onnx");
    }
}
