// Is the two-thread GEMM's shortfall ours or the machine's? Times, on forward shapes of vit_fmnist and DeiT-Tiny, one
// product on one thread, the same product split over two (the library's parallel GEMM), and two independent
// one-thread products at once, one per worker (no shared packing, no barrier inside): if the last is no faster than
// the second, two busy cores lose the speed by themselves (caches, memory, clocks), not by how the work is split;
// the L2-sized shape (operands fit in each core's L2) separates memory bandwidth from the rest, and the last two lines
// (the micro-kernel on L1-resident panels, the register-only FMA loop; threads of our own) take memory out altogether.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- gemm-pair [--reps R]
using System.Diagnostics;
using ViTQuant.Kernels;

namespace ViTQuant.Bench;

internal static class GemmPair
{
    public static int Run(string[] args)
    {
        int reps = args.Length == 2 && args[0] == "--reps" ? int.Parse(args[1]) : 40;
        var shapes = new (string Name, int M, int N, int K)[]
        {
            ("vit_fmnist qkv", 3200, 384, 128), ("vit_fmnist fc1", 3200, 256, 128), ("L2-sized 300x384x128", 300, 384, 128), ("deit qkv", 1576, 576, 192), ("deit fc1", 1576, 768, 192),
        };
        Parallelism.Threads = 2;
        var kernel = ManagedGemm.Best;
        Console.WriteLine($"{ManagedGemm.Describe(kernel)}; GFLOP/s, fastest of {reps} rounds (the three timed in turn each round)");
        foreach (var (name, m, n, k) in shapes)
        {
            var rng = new Random(1);
            float[] Rand(int len)
            {
                var x = new float[len];
                for (int i = 0; i < len; i++) x[i] = (float)rng.NextDouble();
                return x;
            }
            var a = new[] { Rand(m * k), Rand(m * k) };
            var b = new[] { Rand(n * k), Rand(n * k) };
            var c = new[] { new float[m * n], new float[m * n] };
            double one = double.MaxValue, split = double.MaxValue, pair = double.MaxValue;
            for (int r = 0; r < reps; r++)
            {
                var sw = Stopwatch.StartNew();
                ManagedGemm.Run(false, true, m, n, k, 1f, a[0], k, b[0], k, 0f, c[0], n, 1, kernel);
                one = Math.Min(one, sw.Elapsed.TotalSeconds);
                sw.Restart();
                ManagedGemm.Run(false, true, m, n, k, 1f, a[0], k, b[0], k, 0f, c[0], n, 2, kernel);
                split = Math.Min(split, sw.Elapsed.TotalSeconds);
                sw.Restart();
                Parallelism.For(0, 2, i => ManagedGemm.Run(false, true, m, n, k, 1f, a[i], k, b[i], k, 0f, c[i], n, 1, kernel));
                pair = Math.Min(pair, sw.Elapsed.TotalSeconds);
            }
            double gflop = 2.0 * m * n * k / 1e9;
            Console.WriteLine($"{name,-15} one thread {gflop / one,6:F1}   split over two {gflop / split,6:F1}   two one-thread products at once {2 * gflop / pair,6:F1}");
        }
        // The micro-kernel alone on panels that stay in L1 (no packing, no L2 traffic), on one thread and then on two
        // threads of our own started together (not the pool, whose worker may join late), and the register-only FMA
        // loop of vitq bench's roofline the same two ways.
        double Concurrent(int threads, Action work, double flopPerCall)
        {
            double best = double.MaxValue;
            for (int r = 0; r < 5; r++)
            {
                using var start = new Barrier(threads + 1);
                var ts = Enumerable.Range(0, threads).Select(_ => new Thread(() => { start.SignalAndWait(); work(); })).ToArray();
                foreach (var t in ts) t.Start();
                start.SignalAndWait();
                var sw = Stopwatch.StartNew();
                foreach (var t in ts) t.Join();
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
            return threads * flopPerCall / best / 1e9;
        }
        if (kernel == GemmKernel.Avx2)
        {
            const int Kc = 256, Calls = 20000;
            double kernelFlop = 2.0 * 6 * 16 * Kc * Calls;
            Console.WriteLine($"6x16 micro-kernel, L1-resident panels: one thread {Concurrent(1, () => KernelLoop(Kc, Calls), kernelFlop):F1}, "
                + $"two at once {Concurrent(2, () => KernelLoop(Kc, Calls), kernelFlop):F1}");
            const long Iterations = 8_000_000;
            double fmaFlop = Iterations * 12.0 * 8 * 2;
            Console.WriteLine($"register-only FMA loop:              one thread {Concurrent(1, () => GemmBenchmark.FmaLoop256(Iterations), fmaFlop):F1}, "
                + $"two at once {Concurrent(2, () => GemmBenchmark.FmaLoop256(Iterations), fmaFlop):F1}");
        }
        return 0;
    }

    private static unsafe void KernelLoop(int kc, int calls)
    {
        var a = GC.AllocateArray<float>(6 * kc + 16, pinned: true);
        var b = GC.AllocateArray<float>(16 * kc + 16, pinned: true);
        var c = GC.AllocateArray<float>(6 * 16 + 16, pinned: true);
        for (int i = 0; i < a.Length; i++) a[i] = 1e-3f * (i % 7);
        for (int i = 0; i < b.Length; i++) b[i] = 1e-3f * (i % 5);
        fixed (float* pa = a, pb = b, pc = c)
            for (int i = 0; i < calls; i++) ManagedGemm.KernelFma(kc, pa, pb, pc, 16, 1f, 0f);
    }
}
