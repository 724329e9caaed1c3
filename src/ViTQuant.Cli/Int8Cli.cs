// --engine int8 for eval, infer and bench: compiles the integer runtime from a quantized checkpoint, or
// (bench without a checkpoint) from a min–max W8A8 plan calibrated on random images.
using System.Diagnostics;
using ViTQuant.Api;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Runtime;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class Int8Cli
{
    /// <summary>The integer engine for a loaded model; a ViTQuantException naming the fix when the model is float.</summary>
    public static Int8Engine EngineFor(QuantizedModel? quant, string? modelPath)
    {
        if (quant == null)
            throw new ViTQuantException($"--engine int8 needs a quantized checkpoint; {modelPath ?? "the shipped model"} is a float model " +
                "(make one with `vitq quantize --method minmax --wbits 8 --abits 8 --out q.safetensors`, or use --engine sim)");
        var engine = Vitq.CompileInt8(quant);
        var plan = engine.Plan;
        Console.Error.WriteLine($"int8 engine: plan '{plan.PlanName}', {plan.Layers.Count(l => l.Mode == Int8Mode.Integer)}/{plan.Layers.Count} layers integer " +
            $"({plan.IntegerMacFraction:P1} of GEMM MACs), kernel {Int8Gemm.Path}");
        return engine;
    }

    /// <summary>Logits of a batch through the chosen engine (sim: the float or fake-quant model; int8: the runtime).</summary>
    public static Func<Tensor, Tensor> LogitsOf(string engine, VisionModel m, QuantizedModel? quant, string? modelPath)
    {
        if (engine != "int8") return x => m.Infer(x, quant);
        var e = EngineFor(quant, modelPath);
        return e.Forward;
    }

    /// <summary>
    /// vitq bench --engine int8: the runtime's forward img/s and, in the same run, the float model's, with
    /// their ratio. Without a quantized checkpoint the model is quantized on the fly (min–max W8A8, two random
    /// batches of calibration images).
    /// </summary>
    public static Dictionary<string, object> Bench(VisionModel model, QuantizedModel? quant, string? checkpoint, int B, int iters, int threads, ulong seed)
    {
        var c = model.Config;
        var rng = new Rng(seed);
        bool onTheFly = quant == null;
        var fly = quant == null ? OnTheFly(model, B, seed) : null;
        quant ??= fly!.Model;
        var engine = Vitq.CompileInt8(quant);
        var plan = engine.Plan;
        var x = Tensor.Randn(rng, 1f, B, c.InChans, c.ImageSize, c.ImageSize);
        var logits = engine.Forward(x);
        if (logits.Span.ToArray().Any(v => !float.IsFinite(v))) throw new InvalidOperationException("int8 forward produced non-finite logits");
        // The float baseline: the float weights of the same model (for a checkpoint, its frozen weights).
        var fp = onTheFly ? model : quant.Model;
        // ONNX Runtime on the float export and on the QDQ export of the same quantized model: the anchors the
        // issue sets (≥ 2× our float, ≥ ORT float). All four are timed interleaved, so that every engine sees
        // the same machine load (medians of each).
        using var ort = new OnnxCli.OrtPair(fp, fly, checkpoint, threads);
        var ortLogits = ort.Qdq.Run(x);
        var t = Medians(iters, () => engine.Forward(x), () => { using var _ = Autograd.NoGrad(); fp.Infer(x); }, () => ort.Float.Run(x), () => ort.Qdq.Run(x));
        double tInt = t[0], tFloat = t[1], tOrtFloat = t[2], tOrtQdq = t[3];
        // One profiled pass: where the int8 forward spends its time (after the same pause as the timed calls).
        Thread.Sleep(100);
        engine.Profile = true;
        engine.Forward(x);
        engine.Profile = false;
        return new Dictionary<string, object>
        {
            ["architecture"] = c.Architecture,
            ["engine"] = "int8",
            ["batch"] = B,
            ["threads"] = Parallelism.Threads,
            ["int8_kernel"] = Int8Gemm.Path.ToString(),
            ["plan"] = plan.PlanName + (onTheFly ? " W8A8 (on the fly, random calibration)" : ""),
            ["integer_mac_fraction"] = plan.IntegerMacFraction,
            ["weight_bytes"] = plan.WeightBytes,
            ["gflop_per_image"] = 2.0 * model.MacsPerImage() / 1e9,
            ["forward_img_per_s"] = B / tInt,
            ["float_forward_img_per_s"] = B / tFloat,
            ["speedup_vs_float"] = tFloat / tInt,
            ["ort_float_forward_img_per_s"] = B / tOrtFloat,
            ["ort_qdq_forward_img_per_s"] = B / tOrtQdq,
            ["speedup_vs_ort_float"] = tOrtFloat / tInt,
            // the integer engine against ORT on the same QDQ graph: how far apart the two integer paths' logits are
            ["max_abs_logit_diff_vs_ort_qdq"] = MaxAbsDiff(logits, ortLogits),
            ["onnx_float_bytes"] = ort.FloatBytes,
            ["onnx_qdq_bytes"] = ort.QdqBytes,
            ["gemm_backend"] = Gemm.Describe(),
            ["stage_ms"] = engine.StageSeconds.ToDictionary(kv => kv.Key, kv => Math.Round(kv.Value * 1e3, 2)),
            ["layers"] = plan.Layers.Select(l => new Dictionary<string, string> { ["name"] = l.Name, ["mode"] = l.Mode == Int8Mode.Integer ? "int" : "float", ["detail"] = l.Detail }).ToList(),
        };
    }

    /// <summary>The benchmarks' plan for a float model: min–max W8A8 calibrated on two batches of Gaussian images (speed only).</summary>
    internal static QuantizationResult OnTheFly(VisionModel model, int batch, ulong seed) =>
        Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, count: 2 * Math.Min(batch, 8), seed: seed),
            new QuantizeOptions { Method = "minmax", WeightBits = 8, ActivationBits = 8, Seed = seed });

    public static void Print(Dictionary<string, object> r)
    {
        var e = Console.Error;
        e.WriteLine("layer                     mode   detail");
        foreach (var l in (List<Dictionary<string, string>>)r["layers"]) e.WriteLine($"  {l["name"],-24}{l["mode"],-7}{l["detail"]}");
        e.WriteLine($"{r["architecture"]}: batch {r["batch"]}, threads {r["threads"]}, int8 kernel {r["int8_kernel"]}, plan {r["plan"]}, {(double)r["integer_mac_fraction"]:P1} of GEMM MACs integer");
        e.WriteLine($"int8 forward  {(double)r["forward_img_per_s"],10:F1} img/s");
        e.WriteLine($"float forward {(double)r["float_forward_img_per_s"],10:F1} img/s   (int8 {(double)r["speedup_vs_float"]:F2}×, float GEMM {r["gemm_backend"]})");
        e.WriteLine($"ORT float     {(double)r["ort_float_forward_img_per_s"],10:F1} img/s   (int8 {(double)r["speedup_vs_ort_float"]:F2}×; ONNX Runtime, same threads)");
        e.WriteLine($"ORT QDQ       {(double)r["ort_qdq_forward_img_per_s"],10:F1} img/s   (ONNX Runtime on our QDQ export of the same checkpoint; logits within {(double)r["max_abs_logit_diff_vs_ort_qdq"]:G3} of int8)");
        e.WriteLine("int8 stages (ms, one profiled batch): " + string.Join(", ", ((Dictionary<string, double>)r["stage_ms"]).Select(kv => $"{kv.Key} {kv.Value:F1}")));
    }

    /// <summary>
    /// Median seconds of each action over <paramref name="iters"/> rounds, the actions interleaved within a round (so
    /// the load of a shared machine falls on all alike), with a pause before each call: ONNX Runtime's idle workers
    /// spin for a while after a run (as ours do), and without the pause they took a core from whichever engine ran
    /// next — measured, our int8 forward lost 15–25 % that way.
    /// </summary>
    private static double[] Medians(int iters, params Action[] actions)
    {
        foreach (var a in actions) Time(a); // warm-up (allocates each engine's buffers for this batch size)
        var t = actions.Select(_ => new double[iters]).ToArray();
        for (int i = 0; i < iters; i++)
            for (int k = 0; k < actions.Length; k++)
            {
                Thread.Sleep(100);
                t[k][i] = Time(actions[k]);
            }
        return t.Select(ts => { Array.Sort(ts); return ts[iters / 2]; }).ToArray();
    }

    private static double MaxAbsDiff(Tensor a, Tensor b)
    {
        double m = 0;
        for (int i = 0; i < a.Size; i++) m = Math.Max(m, Math.Abs(a.Data[i] - b.Data[i]));
        return m;
    }

    private static double Time(Action a)
    {
        var sw = Stopwatch.StartNew();
        using (TensorArena.Scope()) a();
        return sw.Elapsed.TotalSeconds;
    }
}
