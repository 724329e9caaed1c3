// Is the two-thread GEMM's shortfall ours or the machine's? Times, on forward shapes of vit_fmnist and DeiT-Tiny, one
// product on one thread, the same product split over two (the library's parallel GEMM), and two independent
// one-thread products at once, one per worker (no shared packing, no barrier inside): if the last is no faster than
// the second, two busy cores lose the speed by themselves (caches, memory, clocks), not by how the work is split;
// the L2-sized shape (operands fit in each core's L2) separates memory bandwidth from the rest.
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
        return 0;
    }
}
