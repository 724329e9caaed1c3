// Micro-benchmarks of the integer runtime's pieces at DeiT-Tiny batch-8 shapes (one thread unless --threads):
//   dotnet run -c Release --project bench/ViTQuant.Bench -- int8 [--threads T] [--reps R] [--engine | --swin]
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
        if (args.Contains("--engine")) return Engine(reps);
        if (args.Contains("--swin")) return Swin(reps);
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
            if (Int8GemmVnni.IsSupported)
            {
                var q8 = new byte[M * 3 * D];
                rng.NextBytes(q8);
                var kb8 = PackedB8.For(dh, N, null);
                var vb8 = PackedB8.For(N, dh, null);
                var rs = new int[N];
                var p8 = new byte[N * 200];
                Console.WriteLine($"vnni pack K (1 head)    {Fastest(reps, () => kb8.PackShiftedColumns(q8.AsSpan(D), 3 * D)) * 1e3,8:F3} ms");
                Console.WriteLine($"vnni pack V (1 head)    {Fastest(reps, () => vb8.PackShiftedRows(q8.AsSpan(2 * D), 3 * D)) * 1e3,8:F3} ms");
                Console.WriteLine($"vnni rowsums q (1 head) {Fastest(reps, () => Int8GemmVnni.RowSums(q8, 3 * D, N, dh, rs)) * 1e3,8:F3} ms");
                Console.WriteLine($"vnni quant P u8         {Fastest(reps, () => ActQuantize.RowsU8(lg2, N, N, N, p8, 200, 200, gp)) * 1e3,8:F3} ms");
                Console.WriteLine($"vnni rowsums P          {Fastest(reps, () => Int8GemmVnni.RowSums(p8, 200, N, N, rs)) * 1e3,8:F3} ms");
                var zc = new int[256]; var sc2 = new float[256]; var lgo = new float[N * N];
                Console.WriteLine($"vnni qk gemm            {Fastest(reps, () => Int8GemmVnni.Gemm(q8, 3 * D, N, kb8, rs, zc, sc2, sc2, lgo, N)) * 1e3,8:F3} ms");
                Console.WriteLine($"vnni pv gemm            {Fastest(reps, () => Int8GemmVnni.Gemm(p8, 200, N, vb8, rs, zc, sc2, sc2, lgo, D)) * 1e3,8:F3} ms");
            }
            PackedB? kb = null, vb = null;
            Console.WriteLine($"pack K (1 head)         {Fastest(reps, () => kb = PackedB.FromRowsOfColumns(qkv16.AsSpan(D), N, dh, 3 * D, kb)) * 1e3,8:F3} ms");
            Console.WriteLine($"pack V (1 head)         {Fastest(reps, () => vb = PackedB.FromRows(qkv16.AsSpan(2 * D), N, dh, 3 * D, vb)) * 1e3,8:F3} ms");
        }
        return 0;
    }

    /// <summary>The int8 engine on DeiT-Tiny batch 8 (min–max W8A8 on the fly): the smallest time of each stage over reps profiled forwards.</summary>
    private static int Engine(int reps)
    {
        var cfg = ViTQuant.Models.ViTConfig.FromArchitecture("deit_tiny_patch16_224");
        var model = new ViTQuant.Models.VisionTransformer(cfg, 1);
        var rng = new ViTQuant.Tensors.Rng(1);
        var q = new ViTQuant.Quantization.QuantizedModel(model, ViTQuant.Quantization.QuantPresets.Create("minmax", 8, 8));
        q.Calibrate(Enumerable.Range(0, 2).Select(_ => ViTQuant.Tensors.Tensor.Randn(rng, 1f, 8, 3, 224, 224)));
        ViTQuant.Quantization.QuantizedCheckpoint.Freeze(q);
        var e = new ViTQuant.Runtime.Int8Engine(ViTQuant.Runtime.Int8Plan.Compile(q));
        var x = ViTQuant.Tensors.Tensor.Randn(rng, 1f, 8, 3, 224, 224);
        for (int i = 0; i < 5; i++) e.Forward(x);
        // A/B, interleaved: row-wise passes on/off, the last block on the head's tokens or on all, and the int16 kernel
        // (Avx512) against the VNNI path.
        var configs = new (string Name, bool RowWise, IntGemmPath Path, bool HeadRows)[]
            {
                ("vnni+rowwise", true, IntGemmPath.Avx512Vnni, true), ("vnni+rowwise, all rows", true, IntGemmPath.Avx512Vnni, false),
                ("vnni op-by-op", false, IntGemmPath.Avx512Vnni, true), ("avx512 op-by-op", false, IntGemmPath.Avx512, true),
                ("avx2+rowwise", true, IntGemmPath.Avx2, true), ("avx2+rowwise, all rows", true, IntGemmPath.Avx2, false),
            }
            .Where(cf => Int8Gemm.IsSupported(cf.Path)).ToArray();
        var times = configs.Select(_ => new List<double>()).ToArray();
        for (int i = 0; i < reps; i++)
            for (int k = 0; k < configs.Length; k++)
            {
                e.RowWisePasses = configs[k].RowWise;
                e.HeadRowsOnly = configs[k].HeadRows;
                Int8Gemm.Path = configs[k].Path;
                long t1 = Stopwatch.GetTimestamp();
                e.Forward(x);
                times[k].Add(Stopwatch.GetElapsedTime(t1).TotalSeconds);
            }
        for (int k = 0; k < configs.Length; k++)
        {
            var ts = times[k].OrderBy(v => v).ToArray();
            Console.WriteLine($"A/B {configs[k].Name,-24} median {ts[ts.Length / 2] * 1e3,7:F1} ms  fastest {ts[0] * 1e3,7:F1} ms  ({8 / ts[ts.Length / 2]:F1} img/s median)");
        }
        e.RowWisePasses = e.HeadRowsOnly = true;
        Int8Gemm.ResetPath();
        var best = new Dictionary<string, double>();
        double total = double.MaxValue;
        e.Profile = true;
        for (int i = 0; i < reps; i++)
        {
            e.StageSeconds.Clear();
            long t0 = Stopwatch.GetTimestamp();
            e.Forward(x);
            total = Math.Min(total, Stopwatch.GetElapsedTime(t0).TotalSeconds);
            foreach (var kv in e.StageSeconds) best[kv.Key] = Math.Min(best.GetValueOrDefault(kv.Key, double.MaxValue), kv.Value);
        }
        Console.WriteLine($"int8 engine DeiT-Tiny b8, threads {Parallelism.Threads}, kernel {Int8Gemm.Path}: fastest forward {total * 1e3:F1} ms ({8 / total:F1} img/s); fastest stage times (ms):");
        foreach (var kv in best.OrderByDescending(kv => kv.Value)) Console.WriteLine($"  {kv.Key,-10} {kv.Value * 1e3,7:F2}");
        Console.WriteLine($"  sum        {best.Values.Sum() * 1e3,7:F2}");
        return 0;
    }

    /// <summary>Swin-T 224 b8 (min–max W8A8 on the fly): our float forward against the int8 engine, interleaved, medians.</summary>
    private static int Swin(int reps)
    {
        var model = new ViTQuant.Models.SwinTransformer(ViTQuant.Models.SwinConfig.FromArchitecture("swin_tiny_patch4_window7_224"), 1);
        var rng = new ViTQuant.Tensors.Rng(1);
        var q = new ViTQuant.Quantization.QuantizedModel(model.Clone(), ViTQuant.Quantization.QuantPresets.Create("minmax", 8, 8));
        q.Calibrate(Enumerable.Range(0, 2).Select(_ => ViTQuant.Tensors.Tensor.Randn(rng, 1f, 8, 3, 224, 224)));
        ViTQuant.Quantization.QuantizedCheckpoint.Freeze(q);
        var e = new ViTQuant.Runtime.Int8Engine(ViTQuant.Runtime.Int8Plan.Compile(q));
        var x = ViTQuant.Tensors.Tensor.Randn(rng, 1f, 8, 3, 224, 224);
        var runs = new (string Name, Action Body)[]
        {
            ("float Infer", () => { using var _ = ViTQuant.Tensors.Autograd.NoGrad(); using var a = ViTQuant.Tensors.TensorArena.Scope(); model.Infer(x); }),
            ("int8 engine", () => e.Forward(x)),
        };
        foreach (var r in runs) r.Body();
        var times = runs.Select(_ => new List<double>()).ToArray();
        for (int i = 0; i < reps; i++)
            for (int k = 0; k < runs.Length; k++)
            {
                long t1 = Stopwatch.GetTimestamp();
                runs[k].Body();
                times[k].Add(Stopwatch.GetElapsedTime(t1).TotalSeconds);
            }
        Console.WriteLine($"Swin-T 224 b8, threads {Parallelism.Threads}, kernel {Int8Gemm.Path}, {e.Plan.IntegerMacFraction:P1} of GEMM MACs integer");
        for (int k = 0; k < runs.Length; k++)
        {
            var ts = times[k].OrderBy(v => v).ToArray();
            Console.WriteLine($"  {runs[k].Name,-12} median {ts[ts.Length / 2] * 1e3,8:F1} ms  fastest {ts[0] * 1e3,8:F1} ms  ({8 / ts[ts.Length / 2]:F1} img/s median)");
        }
        e.Profile = true;
        e.Forward(x);
        Console.WriteLine("  int8 stages (ms): " + string.Join(", ", e.StageSeconds.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value * 1e3:F1}")));
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
