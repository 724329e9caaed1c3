// Same-process A/B of the managed GEMM's run-time switches on single products: A read in place or packed
// (ManagedGemm.DirectA) and B packed once and shared or packed per worker (ManagedGemm.SharedB), visited call by
// call in turn so that load from other processes falls on every variant alike. The fastest and the median call of each,
// timed by the thread's CPU clock with one thread (the hypervisor's steals drop out), else by the wall clock.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- gemm-ab [--threads T] [--reps R] [--shape MxNxK[t|n][t|n]]...
// A shape's suffix says whether A and B are transposed (default: the weight gradients of vit_fmnist and DeiT-Tiny,
// and their forward fc2).
using System.Diagnostics;
using ViTQuant.Kernels;

namespace ViTQuant.Bench;

internal static class GemmAb
{
    private sealed record Variant(string Name, bool DirectA, bool SharedB);

    public static int Run(string[] args)
    {
        int reps = 60;
        var shapes = new List<(int M, int N, int K, bool TA, bool TB)>();
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            if (args[i] == "--threads" && int.TryParse(value, out int t) && t >= 1) { Parallelism.Threads = t; i++; }
            else if (args[i] == "--reps" && int.TryParse(value, out int r) && r >= 1) { reps = r; i++; }
            else if (args[i] == "--shape" && value != null && TryShape(value, out var s)) { shapes.Add(s); i++; }
            else
            {
                Console.Error.WriteLine($"gemm-ab: unknown or invalid argument '{args[i]}' (expected --threads N, --reps R, --shape MxNxK[tn][tn])");
                return 2;
            }
        }
        if (shapes.Count == 0)
            shapes.AddRange(new[]
            {
                (256, 128, 3200, true, false), (384, 128, 3200, true, false), (128, 256, 3200, true, false),
                (768, 192, 1576, true, false), (192, 768, 1576, true, false), (3200, 128, 256, false, true), (1576, 192, 768, false, true),
            });
        var variants = new[]
        {
            new Variant("in place, shared B", true, true), new Variant("packed A, shared B", false, true),
            new Variant("in place, B per worker", true, false), new Variant("packed A, B per worker", false, false),
        };
        var saved = (ManagedGemm.DirectA, ManagedGemm.SharedB);
        bool cpu = Parallelism.Threads == 1;
        Func<double> clock = cpu ? () => ForwardOps.ThreadCpuMs() / 1e3 : () => Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;
        Console.WriteLine($"{ManagedGemm.Describe()}, {Parallelism.Threads} threads; GFLOP/s by {(cpu ? "thread CPU time" : "wall clock")}, "
            + $"fastest / median of {reps} calls per variant, variants in turn");
        Console.WriteLine($"{"shape",-24}" + string.Concat(variants.Select(v => $"{v.Name,24}")));
        try
        {
            foreach (var (m, n, k, ta, tb) in shapes)
            {
                var rng = new Random(1);
                float[] Rand(int len) => Enumerable.Range(0, len).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
                float[] a = Rand(m * k), b = Rand(n * k), c = new float[m * n];
                int lda = ta ? m : k, ldb = tb ? k : n;
                var times = variants.Select(_ => new List<double>()).ToArray();
                for (int r = 0; r < reps + 2; r++)
                    for (int v = 0; v < variants.Length; v++)
                    {
                        (ManagedGemm.DirectA, ManagedGemm.SharedB) = (variants[v].DirectA, variants[v].SharedB);
                        double t0 = clock();
                        Gemm.Sgemm(ta, tb, m, n, k, 1f, a, lda, b, ldb, 0f, c, n);
                        if (r >= 2) times[v].Add(clock() - t0);
                    }
                double gflop = 2.0 * m * n * k / 1e9;
                Console.WriteLine($"{$"{m}x{n}x{k} {(ta ? "Aᵀ" : "A")}{(tb ? "Bᵀ" : "B")}",-24}" + string.Concat(times.Select(t =>
                {
                    t.Sort();
                    return $"{$"{gflop / t[0]:F1} / {gflop / t[t.Count / 2]:F1}",24}";
                })));
            }
        }
        finally { (ManagedGemm.DirectA, ManagedGemm.SharedB) = saved; }
        return 0;
    }

    private static bool TryShape(string s, out (int M, int N, int K, bool TA, bool TB) shape)
    {
        shape = default;
        string dims = s.TrimEnd('t', 'n');
        string flags = s[dims.Length..];
        var p = dims.Split('x');
        if (p.Length != 3 || !int.TryParse(p[0], out int m) || !int.TryParse(p[1], out int n) || !int.TryParse(p[2], out int k)
            || m < 1 || n < 1 || k < 1 || flags.Length is not (0 or 2)) return false;
        shape = (m, n, k, flags.Length == 2 && flags[0] == 't', flags.Length == 2 && flags[1] == 't');
        return true;
    }
}
