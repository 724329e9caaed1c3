// vitq bench: whole-model throughput of the engine (forward = inference, training step, input gradient), GEMM
// GFLOP/s per variant (OpenBLAS, managed kernels) on the model's own linear shapes with each one's
// fraction of the machine's measured GEMM peak, managed allocations per training step and peak memory.
// Validates before timing: the forward must be finite and every GEMM variant must match a double
// reference on the shapes it is timed on.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class BenchCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "checkpoint to benchmark (default: the shipped model unless --arch is given)" };
        var arch = new Option<string?>("--arch") { Description = $"architecture with random weights: {string.Join(", ", ViTConfig.KnownArchitectures)}" };
        var batch = new Option<int>("--batch") { Description = "images per batch", DefaultValueFactory = _ => 32 };
        var iters = new Option<int>("--iters") { Description = "timed iterations per measurement (median reported)", DefaultValueFactory = _ => 5 };
        var threads = CommonOptions.Threads();
        var seed = CommonOptions.Seed();
        var json = CommonOptions.Json();
        var engine = CommonOptions.Engine();
        var cmd = new Command("bench", "measure forward / training / input-gradient throughput and GEMM speed") { model, arch, batch, iters, threads, seed, json, engine };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            int B = r.GetValue(batch), n = r.GetValue(iters);
            if (B < 1) throw new ViTQuantException($"--batch must be at least 1, got {B}");
            if (n < 1) throw new ViTQuantException($"--iters must be at least 1, got {n}");
            var a = r.GetValue(arch);
            if (r.GetValue(engine) == "onnx")
            {
                if (a != null && r.GetValue(model) != null) throw new ViTQuantException("give --model or --arch, not both");
                if (r.GetValue(model) is string om && om.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
                    throw new ViTQuantException($"--model {om}: bench --engine onnx exports the model itself; give the .safetensors model or quantized checkpoint");
                var fm = a != null ? new VisionTransformer(ViTConfig.FromArchitecture(a), r.GetValue(seed)) : DataSources.LoadAny(r.GetValue(model)).Model.RequireViT("vitq bench");
                var ort = OnnxCli.Bench(fm, a == null ? r.GetValue(model) : null, B, n, r.GetValue(threads), r.GetValue(seed));
                if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(ort));
                OnnxCli.PrintBench(ort);
                return 0;
            }
            if (r.GetValue(engine) == "int8")
            {
                var (qmodel, quant) = a != null ? ((VisionModel)new VisionTransformer(ViTConfig.FromArchitecture(a), r.GetValue(seed)), null) : DataSources.LoadAny(r.GetValue(model));
                var ir = Int8Cli.Bench(qmodel, quant, a == null ? r.GetValue(model) : null, B, n, r.GetValue(threads), r.GetValue(seed));
                if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(ir));
                Int8Cli.Print(ir);
                return 0;
            }
            var m = a != null ? new VisionTransformer(ViTConfig.FromArchitecture(a), r.GetValue(seed)) : ModelIO.LoadViT(r.GetValue(model), "vitq bench");
            var result = Run(m, B, n, r.GetValue(seed));
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(result));
            Print(result, m.Config);
            return 0;
        });
        return cmd;
    }

    public static Dictionary<string, object> Run(VisionTransformer model, int B, int iters, ulong seed)
    {
        var c = model.Config;
        var rng = new Rng(seed);
        var x = Tensor.Randn(rng, 1f, B, c.InChans, c.ImageSize, c.ImageSize);
        var labels = Enumerable.Range(0, B).Select(i => rng.NextInt(c.NumClasses)).ToArray();
        var res = new Dictionary<string, object>
        {
            ["architecture"] = c.Architecture,
            ["batch"] = B,
            ["threads"] = Parallelism.Threads,
            ["gemm_backend"] = Gemm.Describe(),
            ["params"] = model.ParameterCount(),
            ["gflop_per_image"] = 2.0 * model.MacsPerImage() / 1e9,
        };

        // Validation: a finite forward pass.
        using (Autograd.NoGrad())
        {
            var logits = model.Forward(x);
            if (logits.Data.Take(logits.Size).Any(v => !float.IsFinite(v))) throw new InvalidOperationException("benchmark forward produced non-finite logits");
        }

        // Inference as evaluation runs it (Infer: no gradients, one stage's temporaries alive at a time, so
        // buffers are recycled while still in cache, as PyTorch's allocator and ORT's memory plan do).
        double fwd = Median(iters, () => model.Infer(x), out double fwdCpu);
        res["forward_img_per_s"] = B / fwd;
        res["forward_gflop_per_s"] = B / fwd * (double)res["gflop_per_image"];
        // Process CPU seconds per step (all threads, medians): with --threads 1, the work itself, which the load
        // of other processes on a shared machine leaves alone (bench_compare.sh compares it with PyTorch's).
        res["forward_cpu_s"] = fwdCpu;

        var opt = new AdamW(model.Parameters(), lr: 1e-4f, weightDecay: 0.05f);
        void TrainStep()
        {
            opt.ZeroGrad();
            var loss = Ops.CrossEntropy(model.Forward(x), labels);
            loss.Backward();
            opt.Step();
        }
        using (TensorArena.Scope()) TrainStep();
        long alloc0 = GC.GetTotalAllocatedBytes(precise: true);
        int gc0 = GC.CollectionCount(0), gc2 = GC.CollectionCount(2);
        double train = Median(iters, TrainStep, out double trainCpu);
        res["train_img_per_s"] = B / train;
        res["train_cpu_s"] = trainCpu;
        res["train_alloc_mb_per_step"] = (GC.GetTotalAllocatedBytes(precise: true) - alloc0) / (1024.0 * 1024.0) / (iters + 1);
        res["train_gc_gen0_per_step"] = (double)(GC.CollectionCount(0) - gc0) / (iters + 1);
        res["train_gc_gen2_per_step"] = (double)(GC.CollectionCount(2) - gc2) / (iters + 1);

        // Input gradient (what image synthesis needs): parameters frozen, gradient w.r.t. pixels only.
        foreach (var p in model.Parameters()) p.RequiresGrad = false;
        void InputGrad()
        {
            var xi = x.Clone().RequireGrad();
            Ops.CrossEntropy(model.Forward(xi), labels).Backward();
        }
        using (TensorArena.Scope()) InputGrad();
        double ig = Median(iters, InputGrad, out double igCpu);
        foreach (var p in model.Parameters()) p.RequiresGrad = true;
        res["input_grad_img_per_s"] = B / ig;
        res["input_grad_cpu_s"] = igCpu;

        // GEMM: every variant this machine runs (OpenBLAS, each managed kernel but the portable one) on
        // this model's linear shapes as the forward and backward call them, each also as a fraction of
        // the measured peak: the best variant's speed on a cache-resident, tile-aligned product
        // (GemmBenchmark.MeasurePeak), which is what the micro-kernel reaches when nothing dilutes it.
        var variants = GemmBenchmark.AvailableVariants().Where(v => v != GemmVariant.ManagedPortable).ToArray();
        var (peak, peakBy) = GemmBenchmark.MeasurePeak();
        res["gemm_peak_gflop_per_s"] = peak;
        res["gemm_peak_variant"] = $"{peakBy} on {GemmBenchmark.PeakM}x{GemmBenchmark.PeakN}x{GemmBenchmark.PeakK}";
        var gemm = new Dictionary<string, double>();
        var fraction = new Dictionary<string, double>();
        int rows = B * c.NumTokens, D = c.EmbedDim, Hd = c.MlpHidden;
        var shapes = new (string Name, int M, int N, int K, bool TA, bool TB)[]
        {
            ($"qkv {rows}x{3 * D}x{D}", rows, 3 * D, D, false, true),
            ($"fc1 {rows}x{Hd}x{D}", rows, Hd, D, false, true),
            ($"fc2 {rows}x{D}x{Hd}", rows, D, Hd, false, true),
            ($"fc1 dX {rows}x{D}x{Hd}", rows, D, Hd, false, false),
            ($"fc1 dW {Hd}x{D}x{rows}", Hd, D, rows, true, false),
        };
        foreach (var (name, mm, nn, kk, ta, tb) in shapes)
        {
            foreach (var v in variants)
            {
                double err = GemmBenchmark.ReferenceError(GemmBenchmark.Product(v, mm, nn, kk, ta, tb), mm, nn, kk, ta, tb);
                if (!(err < 1e-5)) throw new InvalidOperationException($"GEMM {v} on {name} is off by {err:E2} of Σ|a·b| against the double reference");
            }
            var g = GemmBenchmark.Compare(variants, mm, nn, kk, 9, ta, tb);
            for (int i = 0; i < variants.Length; i++)
            {
                gemm[$"{Short(variants[i])} {name}"] = g[i];
                fraction[$"{Short(variants[i])} {name}"] = g[i] / peak;
            }
        }
        res["gemm_gflop_per_s"] = gemm;
        res["gemm_fraction_of_peak"] = fraction;
        res["peak_memory_mb"] = Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024.0);
        return res;
    }

    private static string Short(GemmVariant v) => v switch
    {
        GemmVariant.OpenBlas => "OpenBLAS",
        GemmVariant.ManagedAvx512 => "managed AVX-512",
        GemmVariant.ManagedAvx2 => "managed AVX2",
        _ => "managed portable",
    };

    private static double Median(int iters, Action a) => Median(iters, a, out _);

    // Median wall seconds per call; cpuSeconds: the median process CPU seconds per call.
    private static double Median(int iters, Action a, out double cpuSeconds)
    {
        using (TensorArena.Scope()) a(); // warm-up
        var t = new double[iters];
        var c = new double[iters];
        using var proc = Process.GetCurrentProcess();
        for (int i = 0; i < iters; i++)
        {
            proc.Refresh();
            var c0 = proc.TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            using (TensorArena.Scope()) a();
            t[i] = sw.Elapsed.TotalSeconds;
            proc.Refresh();
            c[i] = (proc.TotalProcessorTime - c0).TotalSeconds;
        }
        Array.Sort(t);
        Array.Sort(c);
        cpuSeconds = c[iters / 2];
        return t[iters / 2];
    }

    private static void Print(Dictionary<string, object> r, ViTConfig c)
    {
        var e = Console.Error;
        e.WriteLine($"model {c.Architecture}: {c.ImageSize}px patch {c.PatchSize}, dim {c.EmbedDim}, depth {c.Depth}, heads {c.NumHeads}; {r["params"]:N0} params, {(double)r["gflop_per_image"]:F3} GFLOP/image");
        e.WriteLine($"batch {r["batch"]}, threads {r["threads"]}, GEMM {r["gemm_backend"]}");
        e.WriteLine($"forward      {(double)r["forward_img_per_s"],10:F1} img/s  ({(double)r["forward_gflop_per_s"]:F1} GFLOP/s)");
        e.WriteLine($"train step   {(double)r["train_img_per_s"],10:F1} img/s  ({(double)r["train_alloc_mb_per_step"]:F1} MB allocated/step, {(double)r["train_gc_gen2_per_step"]:F2} gen2 GCs/step)");
        e.WriteLine($"input grad   {(double)r["input_grad_img_per_s"],10:F1} img/s");
        e.WriteLine($"GEMM peak    {(double)r["gemm_peak_gflop_per_s"],10:F1} GFLOP/s ({r["gemm_peak_variant"]})");
        var frac = (Dictionary<string, double>)r["gemm_fraction_of_peak"];
        foreach (var (k, v) in (Dictionary<string, double>)r["gemm_gflop_per_s"]) e.WriteLine($"GEMM {k,-44} {v,8:F1} GFLOP/s {frac[k],6:P0} of peak");
        e.WriteLine($"peak memory  {(double)r["peak_memory_mb"],10:F0} MB");
    }
}
