// --engine int8 for eval, infer and bench: compiles the integer runtime from a quantized checkpoint, or
// (bench without a checkpoint) from a min–max W8A8 plan calibrated on random images.
using System.Diagnostics;
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
        var plan = Int8Plan.Compile(quant);
        Console.Error.WriteLine($"int8 engine: plan '{plan.PlanName}', {plan.Layers.Count(l => l.Mode == Int8Mode.Integer)}/{plan.Layers.Count} layers integer " +
            $"({plan.IntegerMacFraction:P1} of GEMM MACs), kernel {Int8Gemm.Path}");
        return new Int8Engine(plan);
    }

    /// <summary>Logits of a batch through the chosen engine (sim: the float or fake-quant model; int8: the runtime).</summary>
    public static Func<Tensor, Tensor> LogitsOf(string engine, VisionTransformer m, QuantizedModel? quant, string? modelPath)
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
    public static Dictionary<string, object> Bench(VisionTransformer model, QuantizedModel? quant, int B, int iters, ulong seed)
    {
        var c = model.Config;
        var rng = new Rng(seed);
        bool onTheFly = quant == null;
        if (quant == null)
        {
            quant = new QuantizedModel(model.Clone(), QuantPresets.Create("minmax", 8, 8));
            quant.Calibrate(Enumerable.Range(0, 2).Select(_ => Tensor.Randn(rng, 1f, Math.Min(B, 8), c.InChans, c.ImageSize, c.ImageSize)));
            QuantizedCheckpoint.Freeze(quant);
        }
        var plan = Int8Plan.Compile(quant);
        var engine = new Int8Engine(plan);
        var x = Tensor.Randn(rng, 1f, B, c.InChans, c.ImageSize, c.ImageSize);
        var logits = engine.Forward(x);
        if (logits.Span.ToArray().Any(v => !float.IsFinite(v))) throw new InvalidOperationException("int8 forward produced non-finite logits");
        // The float baseline: the float weights of the same model (for a checkpoint, its frozen weights).
        var fp = onTheFly ? model : quant.Model;
        // Interleaved, so that both engines see the same machine load (medians of each).
        var (tInt, tFloat) = MedianPair(iters, () => engine.Forward(x), () => { using var _ = Autograd.NoGrad(); fp.Infer(x); });
        // One profiled pass: where the int8 forward spends its time.
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
            ["gemm_backend"] = Gemm.Describe(),
            ["stage_ms"] = engine.StageSeconds.ToDictionary(kv => kv.Key, kv => Math.Round(kv.Value * 1e3, 2)),
            ["layers"] = plan.Layers.Select(l => new Dictionary<string, string> { ["name"] = l.Name, ["mode"] = l.Mode == Int8Mode.Integer ? "int" : "float", ["detail"] = l.Detail }).ToList(),
        };
    }

    public static void Print(Dictionary<string, object> r)
    {
        var e = Console.Error;
        e.WriteLine("layer                     mode   detail");
        foreach (var l in (List<Dictionary<string, string>>)r["layers"]) e.WriteLine($"  {l["name"],-24}{l["mode"],-7}{l["detail"]}");
        e.WriteLine($"{r["architecture"]}: batch {r["batch"]}, threads {r["threads"]}, int8 kernel {r["int8_kernel"]}, plan {r["plan"]}, {(double)r["integer_mac_fraction"]:P1} of GEMM MACs integer");
        e.WriteLine($"int8 forward  {(double)r["forward_img_per_s"],10:F1} img/s");
        e.WriteLine($"float forward {(double)r["float_forward_img_per_s"],10:F1} img/s   (int8 {(double)r["speedup_vs_float"]:F2}×, float GEMM {r["gemm_backend"]})");
        e.WriteLine("int8 stages (ms, one profiled batch): " + string.Join(", ", ((Dictionary<string, double>)r["stage_ms"]).Select(kv => $"{kv.Key} {kv.Value:F1}")));
    }

    private static (double A, double B) MedianPair(int iters, Action a, Action b)
    {
        a(); // warm-up (also allocates the engine's buffers for this batch size)
        using (TensorArena.Scope()) b();
        var ta = new double[iters];
        var tb = new double[iters];
        for (int i = 0; i < iters; i++)
        {
            ta[i] = Time(a);
            tb[i] = Time(b);
        }
        Array.Sort(ta);
        Array.Sort(tb);
        return (ta[iters / 2], tb[iters / 2]);
    }

    private static double Time(Action a)
    {
        var sw = Stopwatch.StartNew();
        using (TensorArena.Scope()) a();
        return sw.Elapsed.TotalSeconds;
    }
}
