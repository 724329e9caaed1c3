// Micro-benchmarks of the integer runtime's pieces at DeiT-Tiny batch-8 shapes (one thread unless --threads):
//   dotnet run -c Release --project bench/ViTQuant.Bench -- int8 [--threads T] [--reps R]
// Fastest of R calls each (the machines here are shared; the fastest call is the least disturbed one).
using System.Diagnostics;
using System.Runtime.Intrinsics;
using ViTQuant.Kernels;

namespace ViTQuant.Bench;

internal static class Int8Bench
{
    public static int Run(string[] args)
    {
        int reps = 15;
        Parallelism.Threads = 1;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--threads") Parallelism.Threads = int.Parse(args[++i]);
            else if (args[i] == "--reps") reps = int.Parse(args[++i]);
        }
        var rng = new Random(1);
        int M = 1576, D = 192, Hd = 768, N = 197, dh = 64;
        Console.WriteLine($"threads {Parallelism.Threads}, kernel {Int8Gemm.Path}, fastest of {reps}");
        foreach (var (name, m, k, n) in new[] { ("qkv", M, D, 3 * D), ("proj", M, D, D), ("fc1", M, D, Hd), ("fc2", M, Hd, D), ("q·kᵀ head", N, dh, N), ("p·v head", N, N, dh) })
        {
            var a = new short[m * (k + 2)];
            for (int i = 0; i < a.Length; i++) a[i] = (short)rng.Next(-128, 128);
            var w = new short[n * k];
            for (int i = 0; i < w.Length; i++) w[i] = (short)rng.Next(-127, 128);
            var pb = PackedB.FromRowsOfColumns(w, n, k, k);
            var sc = Int8Gemm.PadToPanels(Enumerable.Repeat(0.01f, n).ToArray(), n);
            var bi = Int8Gemm.PadToPanels(new float[n], n);
            var c = new float[m * n];
            int lda = pb.Kp;
            if (Int8GemmVnni.IsSupported)
            {
                int lda8 = (k + 3) / 4 * 4;
                var a8 = new byte[m * lda8];
                rng.NextBytes(a8);
                var pb8 = PackedB8.FromRowsOfColumns(w, n, k, k)!;
                var corr = pb8.Correction(3);
                double t8 = Fastest(reps, () => Int8GemmVnni.Gemm(a8, lda8, m, pb8, corr, sc, bi, c, n));
                Console.WriteLine($"gemm {name,-10} {m}x{k}x{n} {"vnni(u8)",-8} {t8 * 1e3,8:F3} ms  {2.0 * m * k * n / t8 / 1e9,7:F1} GOP/s");
            }
            foreach (var p in Int8Gemm.SupportedPaths.Where(p => p is IntGemmPath.Avx512 or IntGemmPath.Avx2))
            {
                double t = Fastest(reps, () => Int8Gemm.Gemm(a, lda, m, pb, sc, bi, c, n, p));
                Console.WriteLine($"gemm {name,-10} {m}x{k}x{n} {p,-8} {t * 1e3,8:F3} ms  {2.0 * m * k * n / t / 1e9,7:F1} GOP/s");
            }
        }
        {
            var x = new float[M * Hd];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 4 - 2);
            var dst = new short[M * (Hd + 2)];
            var g = new ActGrid(0.02f, 3, 0, 255, false);
            Console.WriteLine($"quantize {M}x{D}      {Fastest(reps, () => ActQuantize.Rows(x, D, M, D, dst, D, g)) * 1e3,8:F3} ms");
            Console.WriteLine($"quantize {M}x{Hd}      {Fastest(reps, () => ActQuantize.Rows(x, Hd, M, Hd, dst, Hd, g)) * 1e3,8:F3} ms");
            var y = new float[M * Hd];
            Console.WriteLine($"gelu {M}x{Hd}          {Fastest(reps, () => GeluKernel.Gelu(x, y)) * 1e3,8:F3} ms");
            var gam = new float[D]; var bet = new float[D]; Array.Fill(gam, 1f);
            var mean = new float[M]; var rstd = new float[M];
            Console.WriteLine($"layernorm {M}x{D}     {Fastest(reps, () => LayerNormKernel.LayerNormRows(x, gam, bet, y, mean, rstd, M, D, 1e-6f)) * 1e3,8:F3} ms");
            var lg = new float[N * N];
            for (int i = 0; i < lg.Length; i++) lg[i] = (float)(rng.NextDouble() * 8 - 4);
            var lg2 = new float[N * N];
            Console.WriteLine($"softmax {N}x{N} (1 head) {Fastest(reps, () => SoftmaxKernel.SoftmaxRows(lg, lg2, N, N)) * 1e3,8:F3} ms");
            Console.WriteLine($"softmax 192x192          {Fastest(reps, () => SoftmaxKernel.SoftmaxRows(lg, lg2, 192, 192)) * 1e3,8:F3} ms");
            Console.WriteLine($"softmax 197x197 ref      {Fastest(reps, () => SoftmaxKernel.ReferenceSoftmaxRows(lg, lg2, N, N)) * 1e3,8:F3} ms");
            Console.WriteLine($"exp only 197x197         {Fastest(reps, () => ExpOnly(lg, lg2)) * 1e3,8:F3} ms");
            Console.WriteLine($"softmax 197x197 x1000    {Fastest(3, () => { for (int i = 0; i < 1000; i++) SoftmaxKernel.SoftmaxRows(lg, lg2, N, N); }) * 1e3,8:F3} us");
            var p16 = new short[N * (N + 1)];
            var gp = new ActGrid(1f / 255, 0, 0, 255, false);
            Console.WriteLine($"quant probs (1 head)    {Fastest(reps, () => ActQuantize.Rows(lg2, N, N, N, p16, N + 1, gp)) * 1e3,8:F3} ms");
            var qkv16 = new short[M * 3 * D];
            for (int i = 0; i < qkv16.Length; i++) qkv16[i] = (short)rng.Next(-128, 128);
            PackedB? kb = null, vb = null;
            Console.WriteLine($"pack K (1 head)         {Fastest(reps, () => kb = PackedB.FromRowsOfColumns(qkv16.AsSpan(D), N, dh, 3 * D, kb)) * 1e3,8:F3} ms");
            Console.WriteLine($"pack V (1 head)         {Fastest(reps, () => vb = PackedB.FromRows(qkv16.AsSpan(2 * D), N, dh, 3 * D, vb)) * 1e3,8:F3} ms");
        }
        return 0;
    }

    private static unsafe void ExpOnly(float[] x, float[] y)
    {
        fixed (float* px = x, py = y)
        {
            var m = System.Runtime.Intrinsics.Vector256.Create(4f);
            for (int i = 0; i + 8 <= x.Length; i += 8)
                RowSimd.ExpNonPositive(System.Runtime.Intrinsics.Vector256.Load(px + i) - m).Store(py + i);
        }
    }

    private static double Fastest(int reps, Action a)
    {
        for (int i = 0; i < 60; i++) a();
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            a();
            best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        return best;
    }
}
