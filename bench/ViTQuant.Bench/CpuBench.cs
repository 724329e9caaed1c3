// Load-robust model timing for before/after comparisons across builds: one thread, the calling thread's
// CPU time per step (Linux CLOCK_THREAD_CPUTIME_ID), so the time other processes take the core drops out.
// Uses only long-standing public APIs, so the same file builds against older trees.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- cpubench [--arch A] [--batch B] [--iters N]
// Prints one JSON line: median thread-CPU seconds per inference forward (Infer), training step (AdamW)
// and input gradient.
using System.Diagnostics;
using System.Runtime.InteropServices;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class CpuBench
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec { public long Sec, Nsec; }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGettime(int clock, out Timespec ts);

    private static double Cpu() { ClockGettime(3, out var ts); return ts.Sec + ts.Nsec / 1e9; }

    public static int Run(string[] args)
    {
        string arch = "deit_tiny_patch16_224";
        int batch = 8, iters = 7;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--arch": arch = args[i + 1]; break;
                case "--batch": batch = int.Parse(args[i + 1]); break;
                case "--iters": iters = int.Parse(args[i + 1]); break;
                default: Console.Error.WriteLine($"cpubench: unknown argument '{args[i]}'"); return 2;
            }
        }
        Parallelism.Threads = 1;
        var model = new VisionTransformer(ViTConfig.FromArchitecture(arch), 1);
        var c = model.Config;
        var rng = new Rng(1);
        var x = Tensor.Randn(rng, 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(i => rng.NextInt(c.NumClasses)).ToArray();
        var opt = new AdamW(model.Parameters(), lr: 1e-4f, weightDecay: 0.05f);
        double Med(Action a)
        {
            using (TensorArena.Scope()) a();
            var t = new double[iters];
            for (int i = 0; i < iters; i++)
            {
                double c0 = Cpu();
                using (TensorArena.Scope()) a();
                t[i] = Cpu() - c0;
            }
            Array.Sort(t);
            return t[iters / 2];
        }
        double fwd = Med(() => model.Infer(x));
        double train = Med(() => { opt.ZeroGrad(); Ops.CrossEntropy(model.Forward(x), labels).Backward(); opt.Step(); });
        foreach (var p in model.Parameters()) p.RequiresGrad = false;
        double ig = Med(() => { var xi = x.Clone().RequireGrad(); Ops.CrossEntropy(model.Forward(xi), labels).Backward(); });
        Console.WriteLine($"{{\"arch\": \"{arch}\", \"batch\": {batch}, \"forward_cpu_s\": {fwd:F5}, \"train_cpu_s\": {train:F5}, \"input_grad_cpu_s\": {ig:F5}}}");
        return 0;
    }
}
