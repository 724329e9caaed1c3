// Kernel micro-benchmarks. Whole-model throughput is `vitq bench`.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- gemm [--threads N] [--reps R] [--fastest]
//       quick GFLOP/s table for every backend and shape (validated first, then timed)
//   dotnet run -c Release --project bench/ViTQuant.Bench -- chunk-ab [--arch A | --quantized Q] [--step infer|train|input-grad] [--batch B] [--threads T] [--rounds R]
//       Infer, a training step's or an input gradient's forward and backward on the whole batch against chunks of images
//   dotnet run -c Release --project bench/ViTQuant.Bench -- kernel [--kc K] [--reps R]
//       the AVX-512 micro-kernels alone on L1-resident panels, against the one-thread FMA roofline
//   dotnet run -c Release --project bench/ViTQuant.Bench -- gemm-pair [--reps R]
//       one GEMM on one thread, split over two, and two independent one-thread GEMMs at once (whose loss is it)
//   dotnet run -c Release --project bench/ViTQuant.Bench -- gemm-ab [--threads T] [--reps R] [--shape MxNxK[tn][tn]]...
//       the managed GEMM's switches (A in place or packed, B shared or per worker) toggled call by call on products
//   dotnet run -c Release --project bench/ViTQuant.Bench -- profile [--arch A] [--batch B] [--threads T]
//       per-op forward/backward time of the forward, training step and input gradient
//   dotnet run -c Release --project bench/ViTQuant.Bench -- ab [--arch A] [--batch B] [--threads T] [--rounds R]
//       same-process A/B of the engine before and after the AVX-512 kernel and fused attention
//   dotnet run -c Release --project bench/ViTQuant.Bench -- fwdops [--arch A] [--batch B] [--threads T] [--reps R]
//       no-grad forward op by op (fastest and median per op, interleaved)
//   dotnet run -c Release --project bench/ViTQuant.Bench -- cpubench [--arch A] [--batch B] [--iters N]
//       one-thread CPU time per inference forward, training step, input gradient (JSON; before/after across builds)
//   dotnet run -c Release --project bench/ViTQuant.Bench -- attn [--threads T] [--reps R]
//       fused attention kernel (AVX-512 path and GEMM path) against the unfused op graph
//   dotnet run -c Release --project bench/ViTQuant.Bench -- engine-ab [--arch A] [--batch B] [--threads T] [--rounds R] [--sleep MS] [--train]
//       whole model with each run-time engine switch (worker pool, GEMM split, attention path) off in turn
//   dotnet run -c Release --project bench/ViTQuant.Bench -- swin-ab [--arch A] [--batch B] [--threads T] [--rounds R] [--train | --input-grad]
//       a Swin with its fused window attention, row gathers and MLP residual in the GEMM against the op graph, the separate window ops and add
//   dotnet run -c Release --project bench/ViTQuant.Bench -- ort-ab [--arch A] [--batch B] [--threads T] [--iters N]
//       ONNX Runtime on our float export, the last block for the head's tokens against the full graph
//   dotnet run -c Release --project bench/ViTQuant.Bench -- --filter '*'
//       BenchmarkDotNet
using BenchmarkDotNet.Running;
using ViTQuant.Bench;
using ViTQuant.Kernels;

if (args.Length > 0 && args[0] == "gemm-pair")
    return GemmPair.Run(args[1..]);
if (args.Length > 0 && args[0] == "gemm-ab")
    return GemmAb.Run(args[1..]);
if (args.Length > 0 && args[0] == "engine-ab")
    return EngineAb.Run(args[1..]);
if (args.Length > 0 && args[0] == "ort-ab")
    return OrtAb.Run(args[1..]);
if (args.Length > 0 && args[0] == "handoff")
    return HandOff.Run(args[1..]);
if (args.Length > 0 && args[0] == "scaling")
    return Scaling.Run(args[1..]);
if (args.Length > 0 && args[0] == "micro")
    return MicroOps.Run(args[1..]);
if (args.Length > 0 && args[0] == "fwdops")
    return ForwardOps.Run(args[1..]);
if (args.Length > 0 && args[0] == "cpubench")
    return CpuBench.Run(args[1..]);
if (args.Length > 0 && args[0] == "int8")
    return ViTQuant.Bench.Int8Bench.Run(args[1..]);
if (args.Length > 0 && args[0] == "attn")
    return AttentionBench.Run(args[1..]);
if (args.Length > 0 && args[0] == "ab")
    return ModelAb.Run(args[1..]);
if (args.Length > 0 && args[0] == "profile")
    return ProfileCommand.Run(args[1..]);
if (args.Length > 0 && args[0] == "gemm")
    return QuickGemm.Run(args[1..]);
if (args.Length > 0 && args[0] == "chunk-ab")
    return ChunkAb.Run(args[1..]);
if (args.Length > 0 && args[0] == "swin-ab")
    return SwinAb.Run(args[1..]);
if (args.Length > 0 && args[0] == "kernel")
    return KernelBench.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;

internal static class QuickGemm
{
    public static int Run(string[] args)
    {
        int reps = 9;
        bool fastest = false; // --fastest: the fastest call instead of the median (for a loaded machine)
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            if (args[i] == "--threads" && int.TryParse(value, out int t) && t >= 1) { Parallelism.Threads = t; i++; }
            else if (args[i] == "--reps" && int.TryParse(value, out int r) && r >= 1) { reps = r; i++; }
            else if (args[i] == "--fastest") fastest = true;
            else
            {
                Console.Error.WriteLine($"gemm: unknown or invalid argument '{args[i]}' (expected --threads N, --reps R, --fastest)");
                return 2;
            }
        }

        // OpenBLAS and every managed kernel this CPU runs except the portable one (slow, for other CPUs).
        var backends = GemmBenchmark.AvailableVariants().Where(v => v != GemmVariant.ManagedPortable).ToArray();
        Console.WriteLine($"threads: {Parallelism.Threads}; {(fastest ? "fastest" : "median")} of ≥ {reps} timed calls per variant after 2 warm-up calls, variants interleaved");
        foreach (var be in backends) Console.WriteLine($"{be,-14} {GemmBenchmark.Describe(be)}");
        Console.WriteLine();

        // Validate before timing: every variant against a double reference on sampled rows, and
        // against the first on the whole product.
        bool ok = true;
        foreach (var s in GemmShape.All)
        {
            var products = backends.Select(be => GemmBenchmark.Product(be, s.M, s.N, s.K, s.TransA, s.TransB)).ToArray();
            for (int i = 0; i < backends.Length; i++)
            {
                double err = GemmBenchmark.ReferenceError(products[i], s.M, s.N, s.K, s.TransA, s.TransB);
                if (err > 1e-5) { Console.WriteLine($"FAIL {s}: {backends[i]} error {err:E2} of Σ|a||b|"); ok = false; }
            }
            for (int i = 1; i < products.Length; i++)
            {
                double maxAbs = products[0].Max(MathF.Abs), maxDiff = 0;
                for (int j = 0; j < products[0].Length; j++)
                    maxDiff = Math.Max(maxDiff, Math.Abs(products[0][j] - products[i][j]));
                if (maxDiff > 1e-5 * Math.Max(1.0, maxAbs)) { Console.WriteLine($"FAIL {s}: {backends[i]} differs from {backends[0]} by {maxDiff:E2}"); ok = false; }
            }
        }
        if (!ok) return 1;
        Console.WriteLine("validation: all variants agree with the double reference and with each other");
        var (peak, peakVariant) = GemmBenchmark.MeasurePeak(fastest: fastest);
        string peakBy = $"{peakVariant} on {GemmBenchmark.PeakM}x{GemmBenchmark.PeakN}x{GemmBenchmark.PeakK}";
        var rows = new List<(GemmShape Shape, double[] Gflops)>();
        foreach (var s in GemmShape.All)
        {
            // At least reps calls, and enough to fill about 0.2 s per variant at 100 GFLOP/s.
            double estimate = 2.0 * s.M * s.N * s.K / 100e9;
            int n = Math.Max(reps, (int)Math.Min(2000, 0.2 / estimate));
            var g = GemmBenchmark.Compare(backends, s.M, s.N, s.K, n, s.TransA, s.TransB, fastest);
            rows.Add((s, g));
            // As vitq bench: the peak is the best of the peak shape and every product measured (no fraction above 1).
            for (int i = 0; i < g.Length; i++) if (g[i] > peak) (peak, peakBy) = (g[i], $"{backends[i]} on {s}");
        }
        Console.WriteLine($"peak: {peak:F1} GFLOP/s ({peakBy}); each cell: GFLOP/s (fraction of peak)");
        Console.WriteLine();
        Console.Write($"{"shape",-34}");
        foreach (var be in backends) Console.Write($"{be,20}");
        Console.WriteLine();
        foreach (var (s, g) in rows)
        {
            Console.Write($"{s.ToString(),-34}");
            foreach (var v in g) Console.Write($"{$"{v:F1} ({v / peak:P0})",20}");
            Console.WriteLine();
        }
        return 0;
    }
}
