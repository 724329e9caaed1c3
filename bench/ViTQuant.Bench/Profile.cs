// Where the time of a model step goes: per-op forward and backward seconds from the autograd
// profiler (OpProfiler), for the training step and the input gradient as users run them (VisionModel.ForwardBackward,
// in chunks of images); the forward without gradients records no ops and gets its total only.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- profile [--arch vit_fmnist] [--batch 64] [--threads 2] [--iters 5]
//       [--before]   the engine before issue 13: OpenBLAS top-level GEMMs, AVX2 managed kernel, unfused attention
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class ProfileCommand
{
    private sealed class PassThrough : IModelHooks { }

    public static int Run(string[] args)
    {
        string arch = "vit_fmnist";
        int batch = 64, iters = 5;
        bool before = false;
        for (int i = 0; i < args.Length; i += 2)
        {
            if (args[i] == "--before") { before = true; i--; continue; }
            if (i + 1 >= args.Length) { Console.Error.WriteLine($"profile: {args[i]} needs a value"); return 2; }
            switch (args[i])
            {
                case "--arch": arch = args[i + 1]; break;
                case "--batch": batch = int.Parse(args[i + 1]); break;
                case "--threads": Parallelism.Threads = int.Parse(args[i + 1]); break;
                case "--iters": iters = int.Parse(args[i + 1]); break;
                default: Console.Error.WriteLine($"profile: unknown argument '{args[i]}'"); return 2;
            }
        }
        IModelHooks? hooks = null;
        using var kernelScope = before ? ManagedGemm.ForceKernel(GemmKernel.Avx2) : null;
        if (before)
        {
            hooks = new PassThrough(); // any hooks object keeps the unfused attention graph
            if (OpenBlas.IsAvailable) Gemm.Backend = GemmBackend.OpenBlas;
        }
        var model = new VisionTransformer(ViTConfig.FromArchitecture(arch), 1);
        var c = model.Config;
        var rng = new Rng(1);
        var x = Tensor.Randn(rng, 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(i => rng.NextInt(c.NumClasses)).ToArray();
        Console.WriteLine($"{arch} batch {batch} threads {Parallelism.Threads}, GEMM {Gemm.Describe()}, in-body kernel {ManagedGemm.Describe()}, attention {(before ? "unfused" : "fused")}, {iters} iterations each");

        void Forward() { using var _ = Autograd.NoGrad(); model.Forward(x, hooks); }
        void InputGrad()
        {
            foreach (var p in model.Parameters()) p.RequiresGrad = false;
            var xi = x.Clone().RequireGrad();
            OpProfiler.Mark();
            if (before) Ops.CrossEntropy(model.Forward(xi, hooks), labels).Backward();
            else model.ForwardBackward(xi, Loss);
            foreach (var p in model.Parameters()) p.RequiresGrad = true;
        }
        // The path users run: ForwardBackward's chunks of images (one after another with one thread); the loss divides
        // by the whole batch as a chunk's loss must.
        Tensor Loss(Tensor logits, int first) => Ops.CrossEntropy(logits, labels[first..(first + logits.Shape[0])], meanOver: batch);
        var opt = new AdamW(model.Parameters(), lr: 1e-4f, weightDecay: 0.05f);
        void Train()
        {
            opt.ZeroGrad();
            OpProfiler.Mark();
            if (before) Ops.CrossEntropy(model.Forward(x, hooks), labels).Backward();
            else model.ForwardBackward(x, Loss);
            opt.Step();
        }
        foreach (var (name, step) in new (string, Action)[] { ("forward (no grad)", Forward), ("training step", Train), ("input gradient", InputGrad) })
        {
            using (TensorArena.Scope()) step();
            OpProfiler.Enabled = false;
            var sw = System.Diagnostics.Stopwatch.StartNew();
            for (int i = 0; i < iters; i++) using (TensorArena.Scope()) step();
            double total = sw.Elapsed.TotalSeconds / iters;
            OpProfiler.Enabled = true;
            OpProfiler.Report();
            for (int i = 0; i < iters; i++) using (TensorArena.Scope()) step();
            OpProfiler.Enabled = false;
            Console.WriteLine($"== {name}: {total * 1e3:F1} ms/step unprofiled; per-op ms/step (profiled):");
            foreach (var line in OpProfiler.Report().Split('\n', StringSplitOptions.RemoveEmptyEntries))
                Console.WriteLine(ScaleLine(line, iters));
        }
        return 0;
    }

    // The report is in seconds over all iterations; show milliseconds per step.
    private static string ScaleLine(string line, int iters)
    {
        var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length != 4 || !double.TryParse(parts[2], out double f) || !double.TryParse(parts[3], out double b)) return line;
        return $"{parts[0],-20} {long.Parse(parts[1]) / iters,8} {f * 1e3 / iters,9:F2} {b * 1e3 / iters,9:F2}";
    }
}
