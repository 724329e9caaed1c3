// `--engine int8` end to end: vitq infer / eval / bench on a tiny quantized checkpoint, and the refusals.
using System.Text.Json;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Runtime;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;
using static ViTQuant.Tests.Cli.VitqProcess;

namespace ViTQuant.Tests.Runtime;

public class Int8CliTests
{
    /// <summary>A tiny minmax W8A8 checkpoint (and its float model) in dir.</summary>
    private static (string Quant, string Float) Checkpoints(TinyModels.TempDir dir)
    {
        var fp = new VisionTransformer(Int8EngineTests.Tiny, 5);
        string fpath = dir.File("float.safetensors"), qpath = dir.File("q.safetensors");
        ModelIO.Save(fp, fpath);
        var qm = new QuantizedModel(fp.Clone(), QuantPresets.Create("minmax", 8, 8));
        var rng = new Rng(1);
        qm.Calibrate(Enumerable.Range(0, 2).Select(_ => Tensor.Randn(rng, 1f, 8, 1, 28, 28)));
        QuantizedCheckpoint.Save(qm, QuantizedCheckpoint.Freeze(qm), qpath);
        return (qpath, fpath);
    }

    [Fact]
    public void InferEvalAndBenchRunTheIntegerEngine()
    {
        using var dir = new TinyModels.TempDir();
        var (q, _) = Checkpoints(dir);
        string input = dir.File("in.safetensors"), output = dir.File("out.safetensors");
        var x = Tensor.Randn(new Rng(3), 1f, 3, 1, 28, 28);
        SafeTensorsWriter.Write(input, new[] { ("pixel_values", x) });
        var r = Run("infer", "--model", q, "--input", input, "--output", output, "--engine", "int8");
        AssertSuccess(r);
        Assert.Contains("int8 engine: plan 'minmax'", r.Stderr);
        // The same checkpoint compiled in this process gives the same logits.
        var want = new Int8Engine(Int8Plan.Compile(QuantizedCheckpoint.Load(q))).Forward(x);
        var got = SafeTensorsFile.Read(output).GetTensor("logits");
        Assert.Equal(want.Shape, got.Shape);
        for (int i = 0; i < want.Size; i++) Assert.Equal(want.Data[i], got.Data[i], 1e-5f);

        var e = Run("eval", "--model", q, "--engine", "int8", "--limit", "40", "--batch", "16", "--json");
        AssertSuccess(e);
        var ej = JsonDocument.Parse(e.Stdout).RootElement;
        Assert.Equal("int8", ej.GetProperty("engine").GetString());
        Assert.Equal(40, ej.GetProperty("count").GetInt32());

        var b = Run("bench", "--model", q, "--engine", "int8", "--batch", "2", "--iters", "1", "--json");
        AssertSuccess(b);
        var bj = JsonDocument.Parse(b.Stdout).RootElement;
        Assert.True(bj.GetProperty("forward_img_per_s").GetDouble() > 0);
        Assert.True(bj.GetProperty("float_forward_img_per_s").GetDouble() > 0);
        Assert.InRange(bj.GetProperty("integer_mac_fraction").GetDouble(), 0.8, 0.999); // all but the float patch embedding
        Assert.Equal("minmax", bj.GetProperty("plan").GetString());
        Assert.Contains(bj.GetProperty("layers").EnumerateArray(), l => l.GetProperty("name").GetString() == "blocks.1.attn.probs·v" && l.GetProperty("mode").GetString() == "int");
    }

    [Fact]
    public void FloatModelsAndTapsAreRefusedWithOneLine()
    {
        using var dir = new TinyModels.TempDir();
        var (q, f) = Checkpoints(dir);
        string input = dir.File("in.safetensors"), output = dir.File("out.safetensors");
        SafeTensorsWriter.Write(input, new[] { ("pixel_values", Tensor.Zeros(1, 1, 28, 28)) });
        AssertUserError(Run("infer", "--model", f, "--input", input, "--output", output, "--engine", "int8"), "--engine int8 needs a quantized checkpoint", f, "vitq quantize");
        AssertUserError(Run("eval", "--model", f, "--engine", "int8"), "--engine int8 needs a quantized checkpoint");
        AssertUserError(Run("infer", "--model", q, "--input", input, "--output", output, "--engine", "int8", "--taps"), "--taps");
        AssertUserError(Run("infer", "--model", q, "--input", input, "--output", output, "--engine", "fast"), "fast");
        Assert.False(File.Exists(output));
    }

    [Fact]
    public void InfoNamesTheIntegerKernel()
    {
        var r = Run("info", "--json");
        AssertSuccess(r);
        var k = JsonDocument.Parse(r.Stdout).RootElement.GetProperty("int8_kernel").GetString()!;
        Assert.Contains(ViTQuant.Kernels.Int8Gemm.Path.ToString(), k);
        Assert.Contains("supported: Scalar", k);
        var forced = Run(new[] { "info", "--json" }, new Dictionary<string, string?> { [ViTQuant.Kernels.Int8Gemm.PathVariable] = "scalar" });
        Assert.StartsWith("Scalar", JsonDocument.Parse(forced.Stdout).RootElement.GetProperty("int8_kernel").GetString());
        AssertUserError(Run(new[] { "info" }, new Dictionary<string, string?> { [ViTQuant.Kernels.Int8Gemm.PathVariable] = "sse9" }), "VITQ_INT8_KERNEL=sse9");
    }
}
