// Swin exported to ONNX and run in ONNX Runtime: the float graph against our forward (timm's odd geometry:
// maps padded to the window, shifted windows with their mask, an odd map merged, a window shrunk to its map),
// and QDQ graphs of min–max / percentile checkpoints against the fake-quant simulation.
using ViTQuant.Export;
using ViTQuant.Models;
using ViTQuant.Onnx;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Export;

public class SwinOnnxExportTests
{
    /// <summary>The parity fixture's geometry (28 px, patch 2: maps 14 → 7 → 4, window 4 shifted by 2) with weights ×2, so logits depend on the input.</summary>
    private static SwinTransformer Lively()
    {
        var m = Assert.IsType<SwinTransformer>(ModelIO.Load(ViTQuant.Tests.Models.VitParityTests.FixturePath("swin_odd")));
        foreach (var (name, p) in m.NamedParameters())
            if (name.EndsWith(".weight") && p.Rank >= 2) for (int i = 0; i < p.Size; i++) p.Data[i] *= 2f;
        return m;
    }

    [Theory]
    [InlineData(17)]
    [InlineData(18)]
    public void FloatExportMatchesOurForward(int opset)
    {
        var m = Lively();
        var c = m.Config;
        Assert.Contains(Enumerable.Range(0, c.NumStages), s => m.Stages[s].Blocks.Any(b => b.Shift > 0)); // the mask path is exercised
        Assert.NotEqual(0, c.ActualResolution(0) % c.StageWindow(0)); // padding to the window
        using var dir = new TinyModels.TempDir();
        string st = dir.File("s.safetensors"), onnx = dir.File("s.onnx");
        ModelIO.Save(m, st);
        var res = OnnxExporter.ExportFile(st, onnx, new OnnxExportOptions { Opset = opset });
        Assert.False(res.Quantized);
        var x = Tensor.Randn(new Rng(7), 1f, 5, 1, 28, 28);
        Tensor ours;
        using (Autograd.NoGrad()) ours = m.Forward(x);
        var ort = OnnxExportTests.Ort(onnx, x);
        double scale = ours.Span.ToArray().Max(v => Math.Abs(v));
        Assert.True(scale > 0.5, $"logits too flat to test ({scale})");
        // Float32 throughout; only summation order differs (measured: 7.6e-6 against max |logit| 2.3; with weights ×1
        // 3e-7, with ×4 9e-4 — the larger weights amplify the rounding, a wrong window, roll or mask moves logits by O(1)).
        Assert.True(OnnxExportTests.MaxAbsDiff(ours, ort) <= 1e-4 * Math.Max(1, scale), $"max |Δ| {OnnxExportTests.MaxAbsDiff(ours, ort)} vs max |logit| {scale}");
        using var e = new OnnxEngine(onnx);
        Assert.Equal(c.ToJson(), e.Config.ToJson());
    }

    [Theory]
    [InlineData("minmax", 8, 8)]
    [InlineData("minmax", 4, 4)]
    [InlineData("percentile", 4, 4)]
    [InlineData("adfq", 4, 4)]
    public void QdqExportMatchesTheSimulation(string method, int w, int a)
    {
        var fp = Lively();
        var rng = new Rng(3);
        var calib = Enumerable.Range(0, 2).Select(_ => Tensor.Randn(rng, 1f, 8, 1, 28, 28)).ToList();
        var qm = new QuantizedModel(fp.Clone(), method == "adfq" ? new Algorithms.Ptq.AdfqOptions().CreatePlan(w, a) : QuantPresets.Create(method, w, a));
        qm.Calibrate(calib);
        // ADFQ-ViT: per-patch grids per window position of the image (qkv, fc1 inputs), Shift-Log2, log√2 probabilities
        if (method == "adfq") new Algorithms.Ptq.AdfqReconstruction(fp, qm, calib, new Algorithms.Ptq.AdfqOptions { Iterations = 2 }).Run();
        var codes = QuantizedCheckpoint.Freeze(qm);
        using var dir = new TinyModels.TempDir();
        string ckpt = dir.File("q.safetensors"), onnx = dir.File("q.onnx");
        QuantizedCheckpoint.Save(qm, codes, ckpt);
        var res = OnnxExporter.ExportFile(ckpt, onnx, new OnnxExportOptions());
        Assert.True(res.Quantized);
        Assert.Contains("layers.1.downsample.reduction", res.Points.Keys);
        var sim = QuantizedCheckpoint.Load(ckpt);
        var x = Tensor.Randn(new Rng(21), 1f, 32, 1, 28, 28);
        Tensor expected, fpLogits;
        using (Autograd.NoGrad())
        {
            expected = sim.Forward(x);
            fpLogits = fp.Forward(x);
        }
        var got = OnnxExportTests.Ort(onnx, x);
        // As for the ViT (OnnxQuantizedModelTests): float rounding can move a value across a later quantizer's
        // rounding boundary, so the tolerance is 5 % of max |logit|, and quantization must move the logits more.
        // Measured (32 images): max |Δ| 4.8e-7 at W4A4 (min–max, percentile), 0.060 against max |logit| 2.8 at W8A8.
        double scale = expected.Span.ToArray().Max(v => Math.Abs(v)), diff = OnnxExportTests.MaxAbsDiff(expected, got), quantEffect = OnnxExportTests.MaxAbsDiff(expected, fpLogits);
        string msg = $"{method} w{w}a{a}: max |Δ| {diff:G3} vs max |logit| {scale:G3}, quantization moved logits by {quantEffect:G3}";
        Assert.True(diff <= 0.05 * scale, msg);
        Assert.True(quantEffect > 3 * diff, msg);
        int K = expected.Shape[1], agree = 0;
        for (int b = 0; b < x.Shape[0]; b++)
        {
            var ea = expected.Data.AsSpan(b * K, K).ToArray();
            var ga = got.Data.AsSpan(b * K, K).ToArray();
            if (Array.IndexOf(ea, ea.Max()) == Array.IndexOf(ga, ga.Max())) agree++;
        }
        Assert.True(agree >= x.Shape[0] - 1, $"{msg}; argmax agrees on {agree}/{x.Shape[0]}");
    }
}
