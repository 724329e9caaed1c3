// Same-process A/B of the engine's speed changes on a whole model: every variant runs the forward
// (no grad), the training step and the input gradient, in interleaved rounds (so slow drift in the
// load of a shared machine falls on all variants alike); the median per variant is reported with its
// ratio to the first, in wall time and in process CPU time (the engine before the change: OpenBLAS for top-level GEMMs, the AVX2 managed
// kernel inside parallel bodies, unfused attention).
//   dotnet run -c Release --project bench/ViTQuant.Bench -- ab [--arch vit_fmnist] [--batch 64] [--threads 2] [--rounds 7]
using System.Diagnostics;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class ModelAb
{
    private sealed class PassThrough : IModelHooks { } // any hooks object keeps the unfused attention graph

    private sealed record Variant(string Name, GemmBackend Backend, GemmKernel Kernel, bool Fused);

    public static int Run(string[] args)
    {
        string arch = "vit_fmnist";
        int batch = 64, rounds = 7;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--arch": arch = args[i + 1]; break;
                case "--batch": batch = int.Parse(args[i + 1]); break;
                case "--threads": Parallelism.Threads = int.Parse(args[i + 1]); break;
                case "--rounds": rounds = int.Parse(args[i + 1]); break;
                default: Console.Error.WriteLine($"ab: unknown argument '{args[i]}'"); return 2;
            }
        }
        var top = OpenBlas.IsAvailable ? GemmBackend.OpenBlas : GemmBackend.Managed;
        var variants = new List<Variant>
        {
            new("before (AVX2, unfused)", top, GemmKernel.Avx2, false),
            new("AVX-512 kernel", top, GemmKernel.Avx512, false),
            new("AVX-512 + fused attn", top, GemmKernel.Avx512, true),
        };
        if (OpenBlas.IsAvailable) variants.Add(new("managed top-level too", GemmBackend.Managed, GemmKernel.Avx512, true));

        var model = new VisionTransformer(ViTConfig.FromArchitecture(arch), 1);
        var c = model.Config;
        var rng = new Rng(1);
        var x = Tensor.Randn(rng, 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(i => rng.NextInt(c.NumClasses)).ToArray();
        var opt = new Sgd(model.Parameters(), lr: 0f); // lr 0: the weights (and so the work) stay the same
        IModelHooks? Hooks(Variant v) => v.Fused ? null : new PassThrough();

        var tasks = new (string Name, Action<Variant> Step)[]
        {
            ("forward", v => { using var _ = Autograd.NoGrad(); model.Forward(x, Hooks(v)); }),
            ("train step", v => { opt.ZeroGrad(); Ops.CrossEntropy(model.Forward(x, Hooks(v)), labels).Backward(); opt.Step(); }),
            ("input grad", v =>
            {
                foreach (var p in model.Parameters()) p.RequiresGrad = false;
                var xi = x.Clone().RequireGrad();
                Ops.CrossEntropy(model.Forward(xi, Hooks(v)), labels).Backward();
                foreach (var p in model.Parameters()) p.RequiresGrad = true;
            }),
        };
        Console.WriteLine($"{arch} batch {batch}, threads {Parallelism.Threads}, {rounds} interleaved rounds; ms per step, median (min)");
        // Wall time, and the CPU time of the whole process over the same step: on a machine other
        // processes load, wall time mostly measures the share of the cores this process got, while CPU
        // time measures the work (spin-waiting threads included, which is real cost there too).
        var times = new List<double>[tasks.Length, variants.Count];
        var cpu = new List<double>[tasks.Length, variants.Count];
        for (int t = 0; t < tasks.Length; t++)
            for (int v = 0; v < variants.Count; v++) { times[t, v] = new List<double>(); cpu[t, v] = new List<double>(); }
        using var proc = Process.GetCurrentProcess();
        for (int r = -1; r < rounds; r++) // round -1 warms up every path
            for (int v = 0; v < variants.Count; v++)
            {
                var vr = variants[v];
                // OpenBLAS's idle workers spin for ~0.1 s after a call (GemmBenchmark's settle pause);
                // let them stop so that one variant's spinning does not slow the next.
                Thread.Sleep(150);
                Gemm.Backend = vr.Backend;
                using var _ = ManagedGemm.ForceKernel(vr.Kernel);
                for (int t = 0; t < tasks.Length; t++)
                {
                    var cpu0 = proc.TotalProcessorTime;
                    var sw = Stopwatch.StartNew();
                    using (TensorArena.Scope()) tasks[t].Step(vr);
                    if (r >= 0) times[t, v].Add(sw.Elapsed.TotalMilliseconds);
                    proc.Refresh();
                    if (r >= 0) cpu[t, v].Add((proc.TotalProcessorTime - cpu0).TotalMilliseconds);
                }
            }
        Gemm.Backend = Gemm.DefaultBackend();
        Console.Write($"{"variant",-26}");
        foreach (var (name, _) in tasks) Console.Write($"{name,24}");
        Console.WriteLine();
        for (int v = 0; v < variants.Count; v++)
        {
            Console.Write($"{variants[v].Name,-26}");
            for (int t = 0; t < tasks.Length; t++)
            {
                double med = Median(times[t, v]), baseMed = Median(times[t, 0]);
                Console.Write($"{$"{med:F1} ({times[t, v].Min():F1}) x{baseMed / med:F2}",24}");
            }
            Console.WriteLine();
        }
        Console.WriteLine("xN: speed relative to the first row (its median time / this median time)");
        Console.WriteLine("CPU ms per step (whole process), median:");
        for (int v = 0; v < variants.Count; v++)
        {
            Console.Write($"{variants[v].Name,-26}");
            for (int t = 0; t < tasks.Length; t++)
            {
                double med = Median(cpu[t, v]), baseMed = Median(cpu[t, 0]);
                Console.Write($"{$"{med:F1} x{baseMed / med:F2}",24}");
            }
            Console.WriteLine();
        }
        return 0;
    }

    private static double Median(List<double> xs)
    {
        var s = xs.OrderBy(v => v).ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : 0.5 * (s[s.Count / 2 - 1] + s[s.Count / 2]);
    }
}
