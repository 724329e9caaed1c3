// The quantization pipeline end to end on a tiny random model: presets, calibration, freezing to
// integer weights, checkpoint round trip (bit-identical logits), the per-layer report, and the
// `vitq quantize` → `vitq eval` pair on the CLI.
using System.Text.Json;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Cli;

namespace ViTQuant.Tests.QuantPipeline;

public class QuantPipelineTests
{
    private static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };

    private static List<Tensor> Batches(int n, int batch, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n).Select(_ => Tensor.Randn(rng, 1f, batch, 1, 28, 28)).ToList();
    }

    [Theory]
    [InlineData("minmax", 8, 8)]
    [InlineData("percentile", 4, 4)]
    [InlineData("adfq", 4, 4)]
    [InlineData("mimiq", 4, 8)]
    public void PresetsCalibrateFreezeAndRoundTripBitExactly(string method, int w, int a)
    {
        var fp = new VisionTransformer(Tiny, seed: 5);
        var qm = new QuantizedModel(fp.Clone(), QuantPresets.Create(method, w, a));
        var calib = Batches(2, 16, 1);
        qm.Calibrate(calib);
        Assert.Equal(QuantMode.Quantize, qm.Mode);
        // Every preset quantizes q/k/v/probs and every Linear input except the image.
        Assert.DoesNotContain("patch_embed.proj", qm.ActivationQuantizers.Keys);
        Assert.Contains("blocks.1.attn.probs", qm.ActivationQuantizers.Keys);
        Assert.Contains("head", qm.WeightQuantizers.Keys);

        if (method is "minmax" or "percentile") // weights on an integer grid → checkpoint
        {
            var codes = QuantizedCheckpoint.Freeze(qm);
            var x = Batches(1, 8, 9)[0];
            Tensor before;
            using (Autograd.NoGrad()) before = qm.Forward(x);
            using var dir = new TempDir();
            var path = Path.Combine(dir.Path, "q.safetensors");
            QuantizedCheckpoint.Save(qm, codes, path);
            var loaded = QuantizedCheckpoint.Load(path);
            Tensor after;
            using (Autograd.NoGrad()) after = loaded.Forward(x);
            Assert.Equal(before.ToArray(), after.ToArray());
            // Quantized weights really are integers on the grid: at most 2^w distinct values per row.
            var head = ((VisionTransformer)loaded.Model).Head.Weight;
            for (int r = 0; r < head.Shape[0]; r++)
                Assert.True(head.Data.Skip(r * head.Shape[1]).Take(head.Shape[1]).Distinct().Count() <= 1 << w);
        }
    }

    [Fact]
    public void EightBitMinMaxIsCloseToFloatAndFourBitIsWorse()
    {
        var fp = new VisionTransformer(Tiny, seed: 2);
        var calib = Batches(2, 16, 3);
        var x = Batches(1, 16, 4)[0];
        double Sqnr(int bits)
        {
            var qm = new QuantizedModel(fp.Clone(), QuantPresets.Create("minmax", bits, bits));
            qm.Calibrate(calib);
            using var _ = Autograd.NoGrad();
            return QuantReport.Sqnr(fp.Forward(x), qm.Forward(x));
        }
        double s8 = Sqnr(8), s4 = Sqnr(4);
        Assert.True(s8 > 25, $"W8A8 logits SQNR {s8:F1} dB");
        Assert.True(s4 < s8 - 10, $"W4A4 {s4:F1} dB vs W8A8 {s8:F1} dB");
    }

    [Fact]
    public void ReportListsEveryPointWorstFirst()
    {
        var fp = new VisionTransformer(Tiny, seed: 2);
        var qm = new QuantizedModel(fp.Clone(), QuantPresets.Create("minmax", 4, 4));
        var calib = Batches(1, 16, 3);
        qm.Calibrate(calib);
        var rows = QuantReport.Build(fp, qm, calib[0]);
        Assert.Equal(qm.ActivationQuantizers.Count + qm.WeightQuantizers.Count, rows.Count);
        for (int i = 1; i < rows.Count; i++) Assert.True(rows[i - 1].Sqnr <= rows[i].Sqnr);
        Assert.All(rows, r => Assert.InRange(r.Cosine, 0.0, 1.0 + 1e-9));
    }

    [Fact]
    public void PlanRoundTripsThroughJsonAndRejectsBadBits()
    {
        var plan = QuantPresets.Create("adfq", 4, 4);
        var back = QuantPlan.FromJson(plan.ToJson(), "test");
        Assert.Equal(plan.ToJson(), back.ToJson());
        Assert.Equal(QuantKind.PerPatchOutlier, back.ActivationSpec("blocks.3.attn.qkv")!.Kind);
        Assert.Equal(QuantKind.ShiftLog, back.ActivationSpec("blocks.0.mlp.fc2")!.Kind);
        Assert.Null(back.ActivationSpec("patch_embed.proj"));
        Assert.Throws<ViTQuantException>(() => QuantPresets.Create("minmax", 1, 8));
        Assert.Throws<ViTQuantException>(() => QuantPresets.Create("minmax", 8, 9));
        Assert.Throws<ViTQuantException>(() => QuantPresets.Create("nope", 8, 8));
        Assert.Equal(8, QuantPresets.Create("minmax", 4, 4, firstLast8Bit: true).WeightSpec("head")!.Bits);
    }

    [Fact]
    public void CheckpointWhosePlanDoesNotMatchItsTensorsIsRejected()
    {
        var fp = new VisionTransformer(Tiny, seed: 1);
        var qm = new QuantizedModel(fp.Clone(), QuantPresets.Create("minmax", 8, 8));
        qm.Calibrate(Batches(1, 8, 1));
        var codes = QuantizedCheckpoint.Freeze(qm);
        using var dir = new TempDir();
        var good = Path.Combine(dir.Path, "q.safetensors");
        QuantizedCheckpoint.Save(qm, codes, good);
        // Rewrite it with the head's codes dropped.
        var f = ViTQuant.IO.SafeTensorsFile.Read(good);
        var entries = f.Names.Where(n => n != "head.weight.codes").Select(n => new ViTQuant.IO.SafeTensorsEntry(n, f.Info(n).DType, f.Info(n).Shape, f.GetRaw(n)));
        var bad = Path.Combine(dir.Path, "bad.safetensors");
        ViTQuant.IO.SafeTensorsWriter.Write(bad, entries, f.Metadata);
        var e = Assert.Throws<ViTQuantException>(() => QuantizedCheckpoint.Load(bad));
        Assert.Contains("head.weight.codes", e.Message);
    }

    [Fact]
    public void CliQuantizeThenEvalReportsTheSameAccuracy()
    {
        using var dir = new TempDir();
        var model = Path.Combine(dir.Path, "m.safetensors");
        ModelIO.Save(new VisionTransformer(Tiny, seed: 3), model);
        var q = Path.Combine(dir.Path, "q.safetensors");
        var r = VitqProcess.Run("quantize", "--model", model, "--method", "minmax", "--wbits", "6", "--abits", "6",
            "--calib-size", "64", "--limit", "300", "--out", q, "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        var j = JsonDocument.Parse(r.Stdout).RootElement;
        Assert.Equal("w6a6", j.GetProperty("bits").GetString());
        Assert.Equal(300, j.GetProperty("eval_count").GetInt32());
        // The file's size and what its quantized weights cost: 6-bit codes packed, plus per-channel scales.
        Assert.Equal(new FileInfo(q).Length, j.GetProperty("file_bytes").GetInt64());
        long weights = j.GetProperty("quantized_weights").GetInt64();
        Assert.Equal((weights * 6 + 7) / 8, j.GetProperty("code_bytes").GetInt64(), 64.0); // rounded up per layer
        Assert.InRange(j.GetProperty("code_bytes").GetInt64() / (double)weights, 0.75, 0.76);
        Assert.Equal(j.GetProperty("weight_bytes").GetInt64() / (double)weights, j.GetProperty("bytes_per_weight").GetDouble(), 9);
        Assert.Contains("bytes a weight", r.Stderr);
        var e = VitqProcess.Run("eval", "--model", q, "--limit", "300", "--json");
        Assert.True(e.ExitCode == 0, e.ToString());
        Assert.Equal(j.GetProperty("quant_top1").GetDouble(), JsonDocument.Parse(e.Stdout).RootElement.GetProperty("top1").GetDouble(), 9);

        VitqProcess.AssertUserError(VitqProcess.Run("quantize", "--model", model, "--method", "minmax", "--wbits", "9", "--out", Path.Combine(dir.Path, "x.safetensors")), "bits");
        VitqProcess.AssertUserError(VitqProcess.Run("quantize", "--model", model, "--method", "magic", "--out", Path.Combine(dir.Path, "x.safetensors")), "magic");
        VitqProcess.AssertUserError(VitqProcess.Run("quantize", "--model", model, "--out", q), "exists");
        VitqProcess.AssertUserError(VitqProcess.Run("quantize", "--model", model, "--out", model), model);
    }

    private sealed class TempDir : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("vitq-quant-").FullName;
        public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
    }
}
