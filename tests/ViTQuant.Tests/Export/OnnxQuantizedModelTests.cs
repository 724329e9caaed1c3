// Quantized tiny models (minmax, percentile, ADFQ-ViT with a few reconstruction steps, MimiQ with learned
// LSQ steps and offsets) saved as checkpoints, exported to QDQ ONNX and run in ONNX Runtime against the
// fake-quant simulation of the same checkpoint; the integer kernels ORT fuses; bad exports.
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Export;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Onnx;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Export;

public class OnnxQuantizedModelTests
{
    /// <summary>Quantizes a tiny random model by a method and saves the checkpoint; returns its path.</summary>
    internal static string QuantizedCheckpointFile(string method, int w, int a, string dir)
    {
        var fp = OnnxExportTests.LivelyTiny();
        var calib = OnnxExportTests.Batches(2, 16, 1);
        QuantizedModel qm;
        if (method == "adfq")
        {
            var opts = new AdfqOptions { Iterations = 3, BatchSize = 8, Seed = 1 };
            qm = new QuantizedModel(fp.Clone(), opts.CreatePlan(w, a));
            qm.Calibrate(calib);
            new AdfqReconstruction(fp, qm, calib, opts).Run();
        }
        else
        {
            qm = new QuantizedModel(fp.Clone(), QuantPresets.Create(method, w, a));
            qm.Calibrate(calib);
            if (method == "mimiq")
            {
                // What fine-tuning leaves: learned steps off their initial values and, at some points,
                // offsets ⌊z⌉ ≠ 0 (exported as the exact LSQ subgraph instead of QDQ).
                int i = 0;
                foreach (var (point, q) in qm.ActivationQuantizers)
                {
                    var l = (LsqQuantizer)q;
                    l.Alpha!.Data[0] *= 0.9f + 0.02f * (i % 7);
                    l.ZeroPoint!.Data[0] = i++ % 3 == 0 ? 1.2f : 0.3f;
                }
            }
        }
        var codes = QuantizedCheckpoint.Freeze(qm);
        string path = Path.Combine(dir, $"{method}-w{w}a{a}.safetensors");
        QuantizedCheckpoint.Save(qm, codes, path);
        return path;
    }

    [Theory]
    [InlineData("minmax", 8, 8)]
    [InlineData("minmax", 4, 4)]
    [InlineData("percentile", 8, 8)]
    [InlineData("percentile", 4, 4)]
    [InlineData("adfq", 8, 8)]
    [InlineData("adfq", 4, 4)]
    [InlineData("mimiq", 8, 8)]
    [InlineData("mimiq", 4, 4)]
    public void QdqExportMatchesTheSimulation(string method, int w, int a)
    {
        using var dir = new TinyModels.TempDir();
        string ckpt = QuantizedCheckpointFile(method, w, a, dir.Path), onnx = dir.File("q.onnx");
        var res = OnnxExporter.ExportFile(ckpt, onnx, new OnnxExportOptions());
        Assert.True(res.Quantized);
        Assert.True(res.Int8WeightBytes < res.FloatWeightBytes && res.Int4WeightBytes <= res.Int8WeightBytes);
        var sim = QuantizedCheckpoint.Load(ckpt);
        var x = OnnxExportTests.Batches(1, 64, 21)[0];
        // The simulation on the managed float GEMM on every machine: OpenBLAS (the backend on AVX2-only CPUs) rounds
        // differently, and at W4A4 one value moved across a 16-level grid's boundary moved a logit by 0.39 here.
        Tensor expected;
        using (ManagedGemm.ForceKernel(ManagedGemm.Best))
        using (Autograd.NoGrad()) expected = sim.Forward(x);
        Tensor got;
        using (var e = new OnnxEngine(onnx, new OnnxEngineOptions { Threads = 1 })) got = e.Run(x);
        // The two differ only by float rounding (integer GEMMs and ORT's own softmax / layer norm / conv sum
        // in another order; the int32 bias plus its float residue equals the bias up to one rounding), which
        // can still move a value across a rounding boundary of a later quantizer (one level). Measured on
        // these models (64 images): max |Δlogit| ≤ 2.4e-7 for every W4A4 checkpoint and for minmax/mimiq
        // W8A8; 0.024 (percentile) and 0.045 (adfq) at W8A8, where finer grids put more values near a
        // boundary — against max |logit| ≈ 2 and quantization moving the logits by 0.09–1.6.
        // Tolerance 5 % of max |logit|, argmax equal on all but one image.
        const double tol = 0.05;
        double scale = expected.Span.ToArray().Max(v => Math.Abs(v)), diff = 0;
        for (int i = 0; i < expected.Size; i++) diff = Math.Max(diff, Math.Abs(expected.Data[i] - got.Data[i]));
        // The test can fail: quantization moves the logits several times more than the export does.
        Tensor fpLogits;
        using (Autograd.NoGrad()) fpLogits = OnnxExportTests.LivelyTiny().Forward(x);
        double quantEffect = 0;
        for (int i = 0; i < expected.Size; i++) quantEffect = Math.Max(quantEffect, Math.Abs(expected.Data[i] - fpLogits.Data[i]));
        string msg = $"{method} w{w}a{a}: max |Δ| {diff:G3} vs max |logit| {scale:G3}, quantization moved logits by {quantEffect:G3}";
        Assert.True(diff <= tol * scale, msg);
        Assert.True(quantEffect > 3 * diff, msg);
        int K = expected.Shape[1], agree = 0;
        for (int b = 0; b < x.Shape[0]; b++)
        {
            var ea = expected.Data.AsSpan(b * K, K).ToArray();
            var ga = got.Data.AsSpan(b * K, K).ToArray();
            if (Array.IndexOf(ea, ea.Max()) == Array.IndexOf(ga, ga.Max())) agree++;
        }
        Assert.True(agree >= x.Shape[0] - 1, $"{method} w{w}a{a}: argmax agrees on {agree}/{x.Shape[0]}");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void OrtRunsTheLinearLayersOfAMinMaxW8A8ExportAsIntegerKernels(bool exactBias)
    {
        using var dir = new TinyModels.TempDir();
        string ckpt = QuantizedCheckpointFile("minmax", 8, 8, dir.Path), onnx = dir.File("q.onnx"), opt = dir.File("q.ort.onnx");
        OnnxExporter.ExportFile(ckpt, onnx, new OnnxExportOptions { ExactBias = exactBias });
        using (var e = new OnnxEngine(onnx, new OnnxEngineOptions { Threads = 1, OptimizedModelPath = opt }))
            e.Run(OnnxExportTests.Batches(1, 2, 3)[0]);
        var ops = OnnxEngine.OpTypeCounts(opt);
        string all = string.Join(", ", ops.Select(kv => $"{kv.Key}×{kv.Value}"));
        var c = OnnxExportTests.Tiny;
        // every Linear (4 per block + head) is a QGemm; both attention products of every block run in integers
        int qgemm = ops.Where(kv => kv.Key.EndsWith("QGemm")).Sum(kv => kv.Value);
        Assert.True(qgemm == 4 * c.Depth + 1, $"expected {4 * c.Depth + 1} QGemm, got: {all}");
        int intMatMul = ops.Where(kv => kv.Key.EndsWith("QLinearMatMul") || kv.Key.EndsWith("MatMulIntegerToFloat")).Sum(kv => kv.Value);
        Assert.True(intMatMul == 2 * c.Depth, $"expected {2 * c.Depth} integer attention products, got: {all}");
        Assert.DoesNotContain(ops.Keys, k => k is "Gemm" or "MatMul" or "FusedGemm" or "com.microsoft.FusedGemm" or "com.microsoft.FusedMatMul");
        // the exact bias adds its float residue after qkv, proj, fc2 and head (fc1's joins GELU as BiasGelu)
        int adds = ops.GetValueOrDefault("Add");
        Assert.True(exactBias ? adds > 2 * c.Depth : adds == 2 * c.Depth + 1, $"Add×{adds}: {all}");
    }

    // The two 8-bit layouts hold the same values (equal logits where ORT runs no integer kernels); u8u8 types
    // every code uint8. ORT's U8S8 kernels saturate on CPUs without VNNI: there the u8s8 file gets a warning,
    // and with VNNI its integer kernels agree with the simulation as u8u8's do everywhere.
    [Theory]
    [InlineData("float", true)]
    [InlineData("minmax", true)]   // per-tensor grids: row by row, so the last block keeps the prefix rows only
    [InlineData("adfq", false)]    // ADFQ's per-patch grid at fc1 is per token position: every row kept
    public void LastBlockKeepsTheHeadsRowsWhereNoQuantizerWorksPerToken(string method, bool narrowed)
    {
        using var dir = new TinyModels.TempDir();
        string src;
        if (method == "float")
        {
            src = dir.File("m.safetensors");
            ModelIO.Save(OnnxExportTests.LivelyTiny(), src);
        }
        else src = QuantizedCheckpointFile(method, 8, 8, dir.Path);
        string rows = dir.File("rows.onnx"), full = dir.File("full.onnx");
        OnnxExporter.ExportFile(src, rows, new OnnxExportOptions());
        OnnxExporter.FullLastBlock = true;
        try { OnnxExporter.ExportFile(src, full, new OnnxExportOptions()); }
        finally { OnnxExporter.FullLastBlock = false; }
        static (int Slices, int Queries) Count(string path)
        {
            var nodes = ViTQuant.Export.OnnxProto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph.Node
                .Where(n => n.OpType == "Slice" && n.Name.StartsWith("blocks.1.head_rows")).ToList();
            return (nodes.Count, nodes.Count(n => n.Input.Any(i => i.StartsWith("blocks.1.head_rows.q_"))));
        }
        // Narrowed: the residual stream and q (its per-tensor probabilities quantizer works row by row), so the last
        // attention runs for the class token's query alone.
        Assert.Equal(narrowed ? (2, 1) : (0, 0), Count(rows));
        Assert.Equal((0, 0), Count(full));
        // The same logits: the kept rows go through the same nodes.
        var x = OnnxExportTests.Batches(1, 6, 21)[0];
        var a = OnnxExportTests.Ort(rows, x);
        var b = OnnxExportTests.Ort(full, x);
        Assert.True(OnnxExportTests.MaxAbsDiff(a, b) <= 1e-5 * Math.Max(1, b.Span.ToArray().Max(Math.Abs)), $"max |Δ| {OnnxExportTests.MaxAbsDiff(a, b)}");
    }

    [Fact]
    public void Int8LayoutsHoldTheSameValues_AndU8S8WarnsWithoutVnni()
    {
        using var dir = new TinyModels.TempDir();
        string ckpt = QuantizedCheckpointFile("minmax", 8, 8, dir.Path), uu = dir.File("u8u8.onnx"), us = dir.File("u8s8.onnx");
        OnnxExporter.ExportFile(ckpt, uu, new OnnxExportOptions());
        OnnxExporter.ExportFile(ckpt, us, new OnnxExportOptions { Int8Layout = Int8Layout.U8S8 });
        static (int Signed, int Unsigned) Types(string path)
        {
            var g = ViTQuant.Export.OnnxProto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph;
            var t = g.Initializer.Where(i => i.Name.EndsWith("weight_codes") || i.Name.EndsWith("zero_point")).Select(i => i.DataType).ToList();
            return (t.Count(d => d == (int)ViTQuant.Export.OnnxProto.TensorProto.Types.DataType.Int8), t.Count(d => d == (int)ViTQuant.Export.OnnxProto.TensorProto.Types.DataType.Uint8));
        }
        var (s8, u8) = Types(uu);
        Assert.Equal(0, s8);
        Assert.True(u8 > 0);
        Assert.True(Types(us).Signed > 0, "u8s8 stores the symmetric weights as int8");

        var x = OnnxExportTests.Batches(1, 16, 5)[0];
        var basic = new OnnxEngineOptions { Threads = 1, OptimizationLevel = Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_BASIC };
        using (var a = new OnnxEngine(uu, basic))
        using (var b = new OnnxEngine(us, basic))
        {
            Assert.Equal(a.Run(x).ToArray(), b.Run(x).ToArray());
            Assert.Equal("u8u8", a.Metadata[OnnxExporter.Int8LayoutKey]);
            Assert.Equal("u8s8", b.Metadata[OnnxExporter.Int8LayoutKey]);
            Assert.Null(a.Warning);
            Assert.Equal(OnnxEngine.HasVnni, b.Warning == null);
            if (b.Warning != null) Assert.Contains("--int8-layout u8u8", b.Warning);
        }
        if (OnnxEngine.HasVnni)
        {
            Tensor expected;
            using (Autograd.NoGrad()) expected = QuantizedCheckpoint.Load(ckpt).Forward(x);
            using var e = new OnnxEngine(us, new OnnxEngineOptions { Threads = 1 });
            var got = e.Run(x);
            for (int i = 0; i < got.Size; i++) Assert.True(Math.Abs(expected.Data[i] - got.Data[i]) < 1e-4, $"u8s8 on VNNI, logit {i}: {got.Data[i]} vs {expected.Data[i]}");
        }
    }

    [Fact]
    public void SaturationWarningNamesQuantizedInt8WeightFilesOnCpusWithoutVnni()
    {
        var quantized = new Dictionary<string, string> { [OnnxExporter.MethodKey] = "minmax" };
        var u8s8 = new Dictionary<string, string>(quantized) { [OnnxExporter.Int8LayoutKey] = "u8s8" };
        var u8u8 = new Dictionary<string, string>(quantized) { [OnnxExporter.Int8LayoutKey] = "u8u8" };
        Assert.Contains("saturate", OnnxEngine.SaturationWarning("q.onnx", u8s8, vnni: false));
        Assert.NotNull(OnnxEngine.SaturationWarning("old.onnx", quantized, vnni: false)); // exported before the key: int8 weights
        Assert.Null(OnnxEngine.SaturationWarning("q.onnx", u8s8, vnni: true));
        Assert.Null(OnnxEngine.SaturationWarning("q.onnx", u8u8, vnni: false));
        Assert.Null(OnnxEngine.SaturationWarning("f.onnx", new Dictionary<string, string>(), vnni: false)); // float export
    }
}
