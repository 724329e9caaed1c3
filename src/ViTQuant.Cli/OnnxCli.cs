// The ONNX Runtime engine behind `--engine onnx` of eval, infer and bench. A model for eval/infer is an
// .onnx file written by `vitq export`; its config (image size, normalisation, classes) comes from the
// file's metadata_props, so the dataset is prepared exactly as for the model it came from.
using System.Diagnostics;
using System.Text.Json;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Data;
using ViTQuant.Api;
using ViTQuant.Export;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Onnx;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class OnnxCli
{
    /// <summary>Opens the .onnx model of --engine onnx. Throws ViTQuantException for a missing path or another file kind.</summary>
    public static OnnxEngine Open(string? modelPath, int threads)
    {
        if (modelPath == null || !modelPath.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            throw new ViTQuantException($"--engine onnx needs --model FILE.onnx (write one with 'vitq export --model M --out FILE.onnx'), got {(modelPath == null ? "no --model" : modelPath)}");
        var engine = new OnnxEngine(modelPath, new OnnxEngineOptions { Threads = threads });
        if (engine.Warning != null) Console.Error.WriteLine(engine.Warning);
        return engine;
    }

    /// <summary>Our simulation cannot read .onnx files: says which engine can.</summary>
    public static void RefuseOnnxFile(string? modelPath)
    {
        if (modelPath != null && modelPath.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            throw new ViTQuantException($"--model {modelPath} is an ONNX file: run it with --engine onnx");
    }

    /// <summary>
    /// vitq eval --engine onnx: accuracy of the .onnx model on a dataset. With <paramref name="agreeWith"/>
    /// (our .safetensors model or quantized checkpoint) the simulation runs on the same batches and the
    /// result adds its accuracy and the fraction of images where both predict the same class.
    /// </summary>
    public static int Eval(string? modelPath, string dataset, string split, int? limit, int batch, int threads, bool json, string? agreeWith)
    {
        using var engine = Open(modelPath, threads);
        var c = engine.Config;
        var ds = DataSources.Limit(DataSources.Open(dataset, split, c), limit);
        (VisionModel Model, QuantizedModel? Quant)? sim = null;
        if (agreeWith != null)
        {
            sim = DataSources.LoadAny(agreeWith);
            if (sim.Value.Model.Config.ToJson() != c.ToJson())
                throw new ViTQuantException($"--agree-with {agreeWith}: its model config differs from {modelPath}'s; compare a model with its own export");
        }
        int simCorrect = 0, agree = 0;
        var simPredictions = new List<int>();
        var res = Progress.Staged(p => Vitq.Evaluate(x =>
        {
            var logits = engine.Run(x);
            if (sim is var (m, q))
            {
                // The labels are not visible here; predictions are compared now, the sim's accuracy below.
                var s = m.Infer(x, q);
                var po = logits.ArgMax(1);
                var ps = s.ArgMax(1);
                for (int i = 0; i < po.Length; i++) if (po[i] == ps[i]) agree++;
                simPredictions.AddRange(ps);
            }
            return logits;
        }, c, ds, batch, p), title: "eval (onnx)");
        double? simTop1 = null, agreement = null;
        if (sim != null)
        {
            for (int i = 0; i < ds.Count; i++) if (simPredictions[i] == ds.Label(i)) simCorrect++;
            simTop1 = 100.0 * simCorrect / ds.Count;
            agreement = 100.0 * agree / ds.Count;
        }
        Console.Error.WriteLine($"{c.Architecture} (onnx: {Path.GetFileName(modelPath)}) on {dataset} ({split}, {res.Count} images): top-1 {res.Top1:F2}%"
            + (res.Top5 is double t5 ? $", top-5 {t5:F2}%" : "") + $", loss {res.Loss:F4}, {res.ImagesPerSecond:F0} img/s ({res.Seconds:F1} s)");
        if (sim != null)
            Console.Error.WriteLine($"simulation ({agreeWith}): top-1 {simTop1:F2}%; predictions agree on {agreement:F2}% of images ({agree}/{ds.Count}); accuracy difference {res.Top1 - simTop1:+0.00;-0.00;0.00} pt");
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                top1 = res.Top1, top5 = res.Top5, loss = res.Loss, count = res.Count, images_per_s = res.ImagesPerSecond,
                seconds = res.Seconds, model = c.Architecture, dataset, split, engine = "onnx",
                sim_top1 = simTop1, agreement_percent = agreement,
            }));
        return 0;
    }

    /// <summary>vitq infer --engine onnx: logits of the .onnx model for pixel_values (already checked by the caller).</summary>
    public static (Tensor Logits, IModelConfig Config) Infer(string? modelPath, int threads, Func<IModelConfig, Tensor> pixels)
    {
        using var engine = Open(modelPath, threads);
        var c = engine.Config;
        return (engine.Run(pixels(c)), c);
    }

    /// <summary>
    /// ORT forward throughput of a model's float export and of a QDQ export: <paramref name="checkpoint"/>
    /// when it is a quantized checkpoint, else minmax W8A8 calibrated on two random batches (speed only).
    /// Both files go to a temporary folder that is deleted afterwards. Kept apart from BenchCommand so that
    /// the engines' numbers can be put side by side.
    /// </summary>
    public static Dictionary<string, object> Bench(VisionModel model, string? checkpoint, int B, int iters, int threads, ulong seed)
    {
        var c = model.Config;
        var dir = Path.Combine(Path.GetTempPath(), "vitq-bench-onnx-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string fp = Path.Combine(dir, "float.onnx"), q = Path.Combine(dir, "qdq.onnx"), qr = Path.Combine(dir, "qdq-rounded-bias.onnx"), qs = Path.Combine(dir, "qdq-u8s8.onnx");
            var rounded = new OnnxExportOptions { ExactBias = false };
            var u8s8 = new OnnxExportOptions { Int8Layout = Int8Layout.U8S8 };
            Vitq.ExportOnnx(model, fp, overwrite: true);
            string qdqSource;
            if (checkpoint != null && File.Exists(checkpoint) && checkpoint.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
                && SafeTensorsFile.Read(checkpoint) is var f && QuantizedCheckpoint.IsQuantized(f))
            {
                OnnxExporter.ExportFile(checkpoint, q, new OnnxExportOptions());
                OnnxExporter.ExportFile(checkpoint, qr, rounded);
                OnnxExporter.ExportFile(checkpoint, qs, u8s8);
                qdqSource = $"{Path.GetFileName(checkpoint)}";
            }
            else
            {
                var fly = Int8Cli.OnTheFly(model, B, seed + 1);
                fly.ExportOnnx(q, overwrite: true);
                fly.ExportOnnx(qr, rounded, overwrite: true);
                fly.ExportOnnx(qs, u8s8, overwrite: true);
                qdqSource = "minmax w8a8 on random calibration (speed only)";
            }
            var x = Tensor.Randn(new Rng(seed), 1f, B, c.InChans, c.ImageSize, c.ImageSize);
            // The QDQ exports' sessions timed call by call in turn (so the load of a shared machine falls on
            // every layout alike), each call after a short pause; the median per session, as img/s.
            double[] MeasureInterleaved(params (string Path, string? Optimized)[] models)
            {
                var engines = models.Select(m => new OnnxEngine(m.Path, new OnnxEngineOptions { Threads = threads, OptimizedModelPath = m.Optimized })).ToArray();
                try
                {
                    for (int m = 0; m < engines.Length; m++)
                        if (engines[m].Run(x).Span.ToArray().Any(v => !float.IsFinite(v)))
                            throw new InvalidOperationException($"{models[m].Path}: ORT produced non-finite logits");
                    var t = new double[engines.Length][];
                    for (int m = 0; m < engines.Length; m++) t[m] = new double[iters];
                    for (int i = 0; i < iters; i++)
                        for (int m = 0; m < engines.Length; m++)
                        {
                            Thread.Sleep(20);
                            var sw = Stopwatch.StartNew();
                            engines[m].Run(x);
                            t[m][i] = sw.Elapsed.TotalSeconds;
                        }
                    return t.Select(tm => { Array.Sort(tm); return B / tm[iters / 2]; }).ToArray();
                }
                finally
                {
                    foreach (var e in engines) e.Dispose();
                }
            }
            // Our float forward and ORT's on the same export, interleaved call by call (so the load of a
            // shared machine falls on both alike), with a pause before each call so that one engine's
            // spinning idle workers do not slow the other.
            (double Ours, double Ort, double OursCpu, double OrtCpu) Interleaved()
            {
                using var e = new OnnxEngine(fp, new OnnxEngineOptions { Threads = threads });
                var first = e.Run(x);
                if (first.Span.ToArray().Any(v => !float.IsFinite(v))) throw new InvalidOperationException($"{fp}: ORT produced non-finite logits");
                using var frozen = Vitq.FreezeWeights(); // our weights packed once, as ORT's session packs its own
                void Ours() { using var _ = TensorArena.Scope(); model.Infer(x); }
                Ours();
                var to = new double[iters];
                var tr = new double[iters];
                var co = new double[iters];
                var cr = new double[iters];
                for (int i = 0; i < iters; i++)
                {
                    Thread.Sleep(100);
                    double c0 = ThreadCpuSeconds();
                    var sw = Stopwatch.StartNew();
                    e.Run(x);
                    tr[i] = sw.Elapsed.TotalSeconds;
                    cr[i] = ThreadCpuSeconds() - c0;
                    Thread.Sleep(100);
                    c0 = ThreadCpuSeconds();
                    sw.Restart();
                    Ours();
                    to[i] = sw.Elapsed.TotalSeconds;
                    co[i] = ThreadCpuSeconds() - c0;
                }
                Array.Sort(to);
                Array.Sort(tr);
                Array.Sort(co);
                Array.Sort(cr);
                return (B / to[iters / 2], B / tr[iters / 2], co[iters / 2], cr[iters / 2]);
            }
            var (oursFloat, ortFloat, oursCpu, ortCpu) = Interleaved();
            string optimizedQdq = Path.Combine(dir, "qdq.ort.onnx");
            var qdq = MeasureInterleaved((q, optimizedQdq), (qr, null), (qs, null));
            return new Dictionary<string, object>
            {
                ["architecture"] = c.Architecture,
                ["batch"] = B,
                ["threads"] = threads,
                ["ort_float_forward_img_per_s"] = ortFloat,
                // our float forward (vitq bench's forward), timed interleaved with ORT's float forward above
                ["vitq_float_forward_img_per_s"] = oursFloat,
                // with one thread both engines run on the calling thread: its CPU seconds per batch (medians)
                // leave out the time other processes took the core, so their ratio holds on a loaded machine
                ["vitq_float_forward_thread_cpu_s"] = oursCpu,
                ["ort_float_forward_thread_cpu_s"] = ortCpu,
                ["ort_qdq_forward_img_per_s"] = qdq[0],
                // the same QDQ graph with the bias only on the int32 grid (no residue Add; not exact)
                ["ort_qdq_rounded_bias_forward_img_per_s"] = qdq[1],
                // the same QDQ graph in the u8s8 layout (int8 weights: ORT's U8S8 kernels, VNNI where the CPU has it)
                ["ort_qdq_u8s8_forward_img_per_s"] = qdq[2],
                ["cpu_has_vnni"] = OnnxEngine.HasVnni,
                // what ORT made of the QDQ graph: integer kernels (QGemm, QLinearMatMul, …) or float ones
                ["ort_qdq_ops"] = OnnxEngine.OpTypeCounts(optimizedQdq),
                ["ort_qdq_source"] = qdqSource,
                ["onnx_float_bytes"] = new FileInfo(fp).Length,
                ["onnx_qdq_bytes"] = new FileInfo(q).Length,
            };
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// ONNX Runtime sessions on the float export of <paramref name="floatModel"/> and on the QDQ export of the
    /// same quantized model the integer engine runs (<paramref name="onTheFly"/> when the benchmark quantized the
    /// model itself, else the <paramref name="checkpoint"/> file), for timing side by side with our engines. The
    /// files live in a temporary folder that Dispose deletes.
    /// </summary>
    internal sealed class OrtPair : IDisposable
    {
        private readonly string _dir;
        public OnnxEngine Float { get; }
        public OnnxEngine Qdq { get; }
        public long FloatBytes { get; }
        public long QdqBytes { get; }

        public OrtPair(VisionModel floatModel, QuantizationResult? onTheFly, string? checkpoint, int threads)
        {
            _dir = Path.Combine(Path.GetTempPath(), "vitq-bench-ort-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(_dir);
            string fp = Path.Combine(_dir, "float.onnx"), q = Path.Combine(_dir, "qdq.onnx");
            Vitq.ExportOnnx(floatModel, fp, overwrite: true);
            if (onTheFly != null) onTheFly.ExportOnnx(q, overwrite: true);
            else OnnxExporter.ExportFile(checkpoint, q, new OnnxExportOptions());
            FloatBytes = new FileInfo(fp).Length;
            QdqBytes = new FileInfo(q).Length;
            Float = new OnnxEngine(fp, new OnnxEngineOptions { Threads = threads });
            Qdq = new OnnxEngine(q, new OnnxEngineOptions { Threads = threads });
        }

        public void Dispose()
        {
            Float.Dispose();
            Qdq.Dispose();
            try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        }
    }

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct Timespec { public long Sec, Nsec; }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGettime(int clock, out Timespec ts);

    /// <summary>CPU seconds of the calling thread (Linux CLOCK_THREAD_CPUTIME_ID); NaN elsewhere.</summary>
    private static double ThreadCpuSeconds()
    {
        if (!OperatingSystem.IsLinux()) return double.NaN;
        try { return ClockGettime(3, out var ts) == 0 ? ts.Sec + ts.Nsec / 1e9 : double.NaN; }
        catch (DllNotFoundException) { return double.NaN; }
        catch (EntryPointNotFoundException) { return double.NaN; }
    }

    public static void PrintBench(Dictionary<string, object> r)
    {
        var e = Console.Error;
        e.WriteLine($"ONNX Runtime, {r["architecture"]}, batch {r["batch"]}, threads {r["threads"]}");
        e.WriteLine($"ORT float forward {(double)r["ort_float_forward_img_per_s"],10:F1} img/s  ({(long)r["onnx_float_bytes"]:N0} bytes)");
        e.WriteLine($"vitq float fwd    {(double)r["vitq_float_forward_img_per_s"],10:F1} img/s  (interleaved with the line above: {(double)r["vitq_float_forward_img_per_s"] / (double)r["ort_float_forward_img_per_s"]:F2}x ORT)");
        if ((int)r["threads"] == 1 && double.IsFinite((double)r["vitq_float_forward_thread_cpu_s"]))
            e.WriteLine($"  thread CPU      vitq {(double)r["vitq_float_forward_thread_cpu_s"] * 1e3:F1} ms, ORT {(double)r["ort_float_forward_thread_cpu_s"] * 1e3:F1} ms per batch: {(double)r["ort_float_forward_thread_cpu_s"] / (double)r["vitq_float_forward_thread_cpu_s"]:F2}x ORT (robust to other processes' load)");
        e.WriteLine($"ORT QDQ forward   {(double)r["ort_qdq_forward_img_per_s"],10:F1} img/s  ({(long)r["onnx_qdq_bytes"]:N0} bytes; {r["ort_qdq_source"]}; this line and the two below interleaved call by call)");
        e.WriteLine($"  rounded bias    {(double)r["ort_qdq_rounded_bias_forward_img_per_s"],10:F1} img/s  (bias on the int32 grid only, as ORT's quantizer writes it; not exact)");
        e.WriteLine($"  u8s8 layout     {(double)r["ort_qdq_u8s8_forward_img_per_s"],10:F1} img/s  (int8 weights, --int8-layout u8s8; " +
            ((bool)r["cpu_has_vnni"] ? "VNNI kernels on this CPU)" : "this CPU has no VNNI: ORT's U8S8 kernels saturate here, speed only)"));
        var ops = (SortedDictionary<string, int>)r["ort_qdq_ops"];
        e.WriteLine($"ORT's optimised QDQ graph: {string.Join(", ", ops.Select(kv => $"{kv.Key}×{kv.Value}"))}");
    }
}
