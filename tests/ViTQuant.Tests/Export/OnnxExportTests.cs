// ONNX export run in ONNX Runtime: the float export against our float forward, each quantizer's
// subgraph against its fake-quant Forward (bit for bit), whole quantized tiny models against the
// simulation, the integer kernels ORT fuses, and the errors of bad exports.
using Microsoft.ML.OnnxRuntime;
using Google.Protobuf;
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Export;
using ViTQuant.Export.OnnxProto;
using ViTQuant.Models;
using ViTQuant.Onnx;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Export;

public class OnnxExportTests
{
    internal static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };

    /// <summary>
    /// A tiny random model with timm-scale weights ×8 (std ≈ 0.16), so that its logits depend on the input
    /// and activations spread over many quantization levels (at init scale every logit is nearly the bias).
    /// </summary>
    internal static VisionTransformer LivelyTiny(ulong seed = 5)
    {
        var m = new VisionTransformer(Tiny, seed);
        foreach (var (name, p) in m.NamedParameters())
            if (name.EndsWith(".weight") && p.Rank >= 2) for (int i = 0; i < p.Size; i++) p.Data[i] *= 8f;
        return m;
    }

    internal static List<Tensor> Batches(int n, int batch, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n).Select(_ => Tensor.Randn(rng, 1f, batch, 1, 28, 28)).ToList();
    }

    internal static Tensor Ort(string path, Tensor x)
    {
        using var e = new OnnxEngine(path, new OnnxEngineOptions { Threads = 1 });
        return e.Run(x);
    }

    internal static double MaxAbsDiff(Tensor a, Tensor b)
    {
        Assert.Equal(a.Shape, b.Shape);
        double m = 0;
        for (int i = 0; i < a.Size; i++) m = Math.Max(m, Math.Abs(a.Data[i] - b.Data[i]));
        return m;
    }

    private static double MaxAbs(Tensor a) => a.Span.ToArray().Max(v => Math.Abs(v));

    private static int[] Argmax(Tensor logits)
    {
        int B = logits.Shape[0], K = logits.Shape[1];
        return Enumerable.Range(0, B).Select(b => Enumerable.Range(0, K).MaxBy(k => logits.Data[b * K + k])).ToArray();
    }

    [Theory]
    [InlineData("token", false, 17)]
    [InlineData("avg", false, 18)]
    [InlineData("token", true, 20)]
    public void FloatExportMatchesOurForward(string pool, bool distilled, int opset)
    {
        var cfg = Tiny with { GlobalPool = pool, Distilled = distilled };
        var m = new VisionTransformer(cfg, seed: 3);
        using var dir = new TinyModels.TempDir();
        string st = dir.File("m.safetensors"), onnx = dir.File("m.onnx");
        ModelIO.Save(m, st);
        var res = OnnxExporter.ExportFile(st, onnx, new OnnxExportOptions { Opset = opset });
        Assert.False(res.Quantized);
        Assert.Equal(new FileInfo(onnx).Length, res.FileBytes);
        var x = Batches(1, 5, 7)[0];
        Tensor ours;
        using (Autograd.NoGrad()) ours = m.Forward(x);
        var ort = Ort(onnx, x);
        // Float32 throughout; only summation order differs (GEMM, conv, softmax, layer norm).
        Assert.True(MaxAbsDiff(ours, ort) <= 1e-4 * Math.Max(1, MaxAbs(ours)), $"max |Δ| {MaxAbsDiff(ours, ort)}");
        using var e = new OnnxEngine(onnx);
        Assert.Equal(cfg.ToJson(), e.Config.ToJson());
        Assert.Equal(OnnxExporter.FormatValue, e.Metadata[ModelIO.FormatKey]);
    }

    /// <summary>A one-quantizer graph x → subgraph → y, run in ORT with every optimisation on.</summary>
    private static float[] RunQuantizer(Quantizer q, Tensor x, out string form, bool lsqAsQdq = false)
    {
        var g = new OnnxGraph();
        var r = new OnnxQuantOps(g, lsqAsQdq).Apply("p", q, "x");
        form = r.Form;
        g.Graph.Input.Add(OnnxGraph.FloatValue("x", x.Shape.Cast<object>().ToArray()));
        g.Graph.Node.Add(new NodeProto { OpType = "Identity", Input = { r.Value }, Output = { "y" } });
        g.Graph.Output.Add(OnnxGraph.FloatValue("y", x.Shape.Cast<object>().ToArray()));
        var m = new ModelProto { IrVersion = 8, Graph = g.Graph };
        m.OpsetImport.Add(new OperatorSetIdProto { Version = 17 });
        using var s = new InferenceSession(m.ToByteArray());
        using var input = OrtValue.CreateTensorValueFromMemory(x.ToArray(), x.Shape.Select(d => (long)d).ToArray());
        using var runOptions = new RunOptions(); // kept alive through Run (OnnxEngine.Run says why)
        using var outs = s.Run(runOptions, new[] { "x" }, new[] { input }, new[] { "y" });
        return outs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    public static TheoryData<string> QuantizerCases => new()
    {
        "uniform8", "uniform4", "uniform3sym", "uniform4-token", "lsq4", "lsq4-offset", "lsq4-offset-qdq", "lsq8-signed-token",
        "patch8", "patch4", "log2-4", "logsqrt2-8", "logsqrt2-3", "shiftlog4", "shiftlog8-base2",
    };

    [Theory]
    [MemberData(nameof(QuantizerCases))]
    public void EachQuantizerSubgraphEqualsItsForwardBitForBit(string name)
    {
        var rng = new Rng(11);
        // [B, N, C] activations with a heavy tail (outliers past the per-patch α = 5), exact zeros and
        // values on grid points, and softmax-like values in [0, 1] for the log quantizers.
        bool probs = name.StartsWith("log");
        var x = Tensor.Randn(rng, 2f, 3, 6, 40);
        for (int i = 0; i < x.Size; i++)
        {
            if (probs) x.Data[i] = MathF.Exp(-MathF.Abs(x.Data[i]) * 4f) * (i % 7 == 0 ? 1f : 0.3f);
            else if (i % 13 == 0) x.Data[i] *= 4f;
            if (i % 29 == 0) x.Data[i] = 0f;
        }
        var calib = x.Clone();
        QuantSpec spec = name switch
        {
            "uniform8" => new QuantSpec { Bits = 8, Range = RangeMethod.Percentile },
            "uniform4" => new QuantSpec { Bits = 4 },
            "uniform3sym" => new QuantSpec { Bits = 3, Symmetric = true },
            "uniform4-token" => new QuantSpec { Bits = 4, Granularity = Granularity.PerToken },
            "lsq4" or "lsq4-offset" or "lsq4-offset-qdq" => new QuantSpec { Kind = QuantKind.Lsq, Bits = 4 },
            "lsq8-signed-token" => new QuantSpec { Kind = QuantKind.Lsq, Bits = 8, Granularity = Granularity.PerToken },
            "patch8" => new QuantSpec { Kind = QuantKind.PerPatchOutlier, Bits = 8, Granularity = Granularity.PerToken, Range = RangeMethod.Percentile },
            "patch4" => new QuantSpec { Kind = QuantKind.PerPatchOutlier, Bits = 4, Granularity = Granularity.PerToken },
            "log2-4" => new QuantSpec { Kind = QuantKind.Log2, Bits = 4 },
            "logsqrt2-8" => new QuantSpec { Kind = QuantKind.LogSqrt2, Bits = 8 },
            "logsqrt2-3" => new QuantSpec { Kind = QuantKind.LogSqrt2, Bits = 3, Range = RangeMethod.Percentile },
            "shiftlog4" => new QuantSpec { Kind = QuantKind.ShiftLog, Bits = 4 },
            "shiftlog8-base2" => new QuantSpec { Kind = QuantKind.ShiftLog, Bits = 8, SqrtTwoBase = false },
            _ => throw new ArgumentException(name),
        };
        var q = QuantizerFactory.Create(spec, isWeight: false);
        q.Observe(calib);
        q.Calibrate();
        if (q is LsqQuantizer l)
        {
            // Learned values as after fine-tuning: α moved off its initial value, offsets ⌊z⌉ = −1 or 2.
            for (int g = 0; g < l.Alpha!.Size; g++) l.Alpha.Data[g] *= 1.13f + 0.01f * g;
            if (name.StartsWith("lsq4-offset")) l.ZeroPoint!.Data[0] = 1.6f;
            if (name.EndsWith("token")) for (int g = 0; g < l.ZeroPoint!.Size; g++) l.ZeroPoint.Data[g] = g % 2 == 0 ? 0.2f : -1.3f;
        }
        Tensor expected;
        using (Autograd.NoGrad()) expected = q.Forward(x);
        // lsq4-offset-qdq: QDQ with zero point ⌊z⌉ is not exact in general (file header of OnnxQuantOps), but
        // a mismatch needs x/α + ⌊z⌉ within one float rounding of a half-integer; none of these 720 values is.
        var got = RunQuantizer(q, x, out var form, lsqAsQdq: name.EndsWith("-qdq"));
        Assert.Equal(expected.ToArray(), got);
        bool qdq = name is "uniform8" or "uniform4" or "uniform3sym" or "lsq4" or "lsq4-offset-qdq";
        Assert.Equal(qdq, form.Contains("QDQ"));
    }
}
