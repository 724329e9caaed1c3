// The AVX-512 GEMM micro-kernels alone, on panels that stay in L1, against the one-thread FMA roofline:
// how much of the core the kernel's own instruction stream leaves unused, before packing, caches and edges.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- kernel [--kc K] [--reps R]
using System.Runtime.Intrinsics.X86;
using ViTQuant.Kernels;

namespace ViTQuant.Bench;

internal static unsafe class KernelBench
{
    public static int Run(string[] args)
    {
        int kc = ManagedGemm.KC512, reps = 9;
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            if (args[i] == "--kc" && int.TryParse(value, out int k) && k >= 1 && k <= 1024) { kc = k; i++; }
            else if (args[i] == "--reps" && int.TryParse(value, out int r) && r >= 1) { reps = r; i++; }
            else
            {
                Console.Error.WriteLine($"kernel: unknown or invalid argument '{args[i]}' (expected --kc K (1–1024), --reps R)");
                return 2;
            }
        }
        if (!Avx512F.IsSupported)
        {
            Console.Error.WriteLine("kernel: this CPU has no AVX-512; the micro-kernels timed here are the AVX-512 ones");
            return 1;
        }
        Parallelism.Threads = 1;
        double roofline = GemmBenchmark.FmaRoofline();
        // A packed A panel (12 per k), A in place (12 rows of kc, lda = kc), a packed B panel (32 per k), one C tile:
        // 12·kc·4 + 32·kc·4 B = 33 KB at kc = 192, inside any AVX-512 core's L1d (32–48 KB) with the tile.
        var buffer = GC.AllocateUninitializedArray<float>(12 * kc + 32 * kc + 12 * 32 + 64, pinned: true);
        var rng = new Random(1);
        for (int i = 0; i < buffer.Length; i++) buffer[i] = (float)rng.NextDouble();
        fixed (float* p = buffer)
        {
            float* b = (float*)(((nint)p + 63) & ~(nint)63), a = b + 32 * kc, c = a + 12 * kc;
            const int Calls = 2000;
            double flop = 2.0 * 12 * 32 * kc * Calls;
            var kernels = new (string Name, Action Call)[]
            {
                ("Kernel512 (packed A)", () => { for (int i = 0; i < Calls; i++) ManagedGemm.Kernel512(kc, a, b, c, 32, 1f, 1f); }),
                ("Kernel512Direct (A in place)", () => { for (int i = 0; i < Calls; i++) ManagedGemm.Kernel512Direct(kc, a, kc, b, 32, c, 32, 1f, 1f); }),
            };
            var best = new double[kernels.Length];
            Array.Fill(best, double.MaxValue);
            for (int r = -1; r < reps; r++) // alternating, the first round a warm-up
                for (int v = 0; v < kernels.Length; v++)
                {
                    double t0 = ForwardOps.ThreadCpuMs();
                    kernels[v].Call();
                    double ms = ForwardOps.ThreadCpuMs() - t0;
                    if (r >= 0) best[v] = Math.Min(best[v], ms);
                }
            Console.WriteLine($"kc {kc}, one thread, thread CPU time, fastest of {reps}; FMA roofline {roofline:F1} GFLOP/s");
            for (int v = 0; v < kernels.Length; v++)
            {
                double gflops = flop / best[v] / 1e6;
                Console.WriteLine($"  {kernels[v].Name,-30} {gflops,7:F1} GFLOP/s  {gflops / roofline,4:P0} of the roofline");
            }
        }
        return 0;
    }
}
