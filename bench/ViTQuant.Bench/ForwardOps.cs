// Where a no-grad forward goes, op by op: each op of one DeiT/ViT block (and the patch embedding and
// head) timed alone on the model's shapes, fastest and median of many calls, ops interleaved round by
// round (so a loaded machine slows all alike). The per-op profiler (profile) only sees recorded ops.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- fwdops [--arch deit_tiny_patch16_224] [--batch 8] [--threads 1] [--reps 30]
using System.Diagnostics;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class ForwardOps
{
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct Timespec { public long Sec, Nsec; }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGettime(int clock, out Timespec ts);

    /// <summary>
    /// CPU time of the calling thread in ms (Linux CLOCK_THREAD_CPUTIME_ID): with --threads 1 it counts only
    /// the time this thread ran, so other processes' load (which stretches wall time) mostly drops out.
    /// </summary>
    internal static double ThreadCpuMs()
    {
        ClockGettime(3, out var ts);
        return ts.Sec * 1e3 + ts.Nsec / 1e6;
    }

    private static void WithoutEpilogue(Action a)
    {
        DenseCore.BiasEpilogue = false;
        try { a(); } finally { DenseCore.BiasEpilogue = true; }
    }

    public static int Run(string[] args)
    {
        string arch = "deit_tiny_patch16_224";
        int batch = 8, reps = 30;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--arch": arch = args[i + 1]; break;
                case "--batch": batch = int.Parse(args[i + 1]); break;
                case "--threads": Parallelism.Threads = int.Parse(args[i + 1]); break;
                case "--reps": reps = int.Parse(args[i + 1]); break;
                default: Console.Error.WriteLine($"fwdops: unknown argument '{args[i]}'"); return 2;
            }
        }
        var model = new VisionTransformer(ViTConfig.FromArchitecture(arch), 1);
        var c = model.Config;
        var rng = new Rng(1);
        var img = Tensor.Randn(rng, 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        var blk = model.Blocks[0];
        using var ng = Autograd.NoGrad();
        var x = Tensor.Randn(rng, 1f, batch, c.NumTokens, c.EmbedDim);
        var qkv = blk.Qkv.Forward(x);
        var hid = blk.Fc1.Forward(x);
        var heads = c.NumHeads;
        var patches = Ops.PatchEmbed(img, model.PatchWeight, model.PatchBias, c.PatchSize);
        float scale = 1f / MathF.Sqrt(c.HeadDim);
        var ops = new (string Name, double Weight, Action Body)[]
        {
            ("patch_embed", 1, () => Ops.PatchEmbed(img, model.PatchWeight, model.PatchBias, c.PatchSize)),
            ("layer_norm", 2 * c.Depth, () => blk.Norm1.Forward(x)),
            ("qkv linear", c.Depth, () => blk.Qkv.Forward(x)),
            ("fused attention", c.Depth, () => Ops.FusedAttention(qkv, heads, scale)),
            ("proj linear", c.Depth, () => blk.Proj.Forward(x)),
            ("add (residual)", 2 * c.Depth, () => Ops.Add(x, x)),
            ("fc1 linear", c.Depth, () => blk.Fc1.Forward(x)),
            ("gelu", c.Depth, () => Ops.Gelu(hid)),
            ("fc2 linear", c.Depth, () => blk.Fc2.Forward(hid)),
            ("qkv (bias pass)", 0, () => WithoutEpilogue(() => blk.Qkv.Forward(x))),
            ("fc1 (bias pass)", 0, () => WithoutEpilogue(() => blk.Fc1.Forward(x))),
            ("fc2 (bias pass)", 0, () => WithoutEpilogue(() => blk.Fc2.Forward(hid))),
            ("prepend tokens", 1, () => Ops.PrependTokens(patches, model.ClsToken!)),
            ("+ pos_embed", 1, () => Ops.Add(x, model.PosEmbed)),
            ("head", 1, () => model.ForwardHead(x)),
            ("whole Infer", 0, () => model.Infer(img)),
            ("whole forward", 0, () => model.Forward(img)),
        };
        var t = ops.Select(_ => new List<double>()).ToArray();
        var cpu = ops.Select(_ => new List<double>()).ToArray();
        for (int r = -2; r < reps; r++)
            for (int o = 0; o < ops.Length; o++)
            {
                if (o >= ops.Length - 2 && r % 5 != 0) continue; // the whole forward less often
                var sw = Stopwatch.StartNew();
                double c0 = ThreadCpuMs();
                using (TensorArena.Scope()) ops[o].Body();
                if (r >= 0) t[o].Add(sw.Elapsed.TotalMilliseconds);
                if (r >= 0) cpu[o].Add(ThreadCpuMs() - c0);
            }
        Console.WriteLine($"{arch} batch {batch} threads {Parallelism.Threads}, {reps} rounds; GEMM {Gemm.Describe()}");
        Console.WriteLine($"{"op",-18} {"calls",6} {"min ms",9} {"med ms",9} {"fwd ms (min·calls)",20} {"thread CPU med ms",18}");
        double sum = 0;
        for (int o = 0; o < ops.Length; o++)
        {
            var s = t[o].OrderBy(v => v).ToList();
            double min = s[0], med = s[s.Count / 2];
            var cs = cpu[o].OrderBy(v => v).ToList();
            if (ops[o].Weight > 0) sum += min * ops[o].Weight;
            Console.WriteLine($"{ops[o].Name,-18} {ops[o].Weight,6} {min,9:F3} {med,9:F3} {(ops[o].Weight > 0 ? min * ops[o].Weight : 0),20:F2} {cs[cs.Count / 2],18:F3}");
        }
        Console.WriteLine($"sum of per-op minima × calls: {sum:F1} ms (whole forward min {t[^1].Min():F1} ms)");
        Console.WriteLine("thread CPU time is meaningful with --threads 1 only (other workers' time is not counted)");
        return 0;
    }
}

internal static class MicroOps
{
    public static int Run(string[] args)
    {
        if (args.Length == 2 && args[0] == "--threads") Parallelism.Threads = int.Parse(args[1]);
        var rng = new Random(1);
        float[] Rand(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 4 - 2); return a; }
        double Time(Action a, int reps)
        {
            a();
            double best = double.MaxValue;
            for (int r = 0; r < 15; r++)
            {
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < reps; i++) a();
                best = Math.Min(best, sw.Elapsed.TotalMilliseconds / reps);
            }
            return best;
        }
        int big = 1576 * 768, small = 12 * 768;
        var xb = Rand(big); var yb = new float[big];
        var xs = Rand(small); var ys = new float[small];
        double gb = Time(() => GeluKernel.Gelu(xb, yb), 3), gs = Time(() => GeluKernel.Gelu(xs, ys), 200);
        Console.WriteLine($"gelu: {gb / big * 1e6:F3} ns/elem on {big} (L3), {gs / small * 1e6:F3} ns/elem on {small} (L1/L2)");
        var dyb = Rand(big);
        double gbw = Time(() => GeluKernel.GeluBackward(xb, dyb, yb), 3);
        GeluKernel.ForceDoublePath = true;
        double gd = Time(() => GeluKernel.Gelu(xs, ys), 200), gdb = Time(() => GeluKernel.GeluBackward(xb, dyb, yb), 3);
        GeluKernel.ForceDoublePath = false;
        Console.WriteLine($"gelu double-lane path: {gd / small * 1e6:F3} ns/elem (L1/L2); backward {gbw / big * 1e6:F3} ns/elem, double-lane path {gdb / big * 1e6:F3}");
        int rows = 1576, cols = 192;
        var lx = Rand(rows * cols); var ly = new float[rows * cols]; var g = Rand(cols); var b = Rand(cols);
        var m = new float[rows]; var rs = new float[rows];
        double lb = Time(() => LayerNormKernel.LayerNormRows(lx, g, b, ly, m, rs, rows, cols, 1e-6f), 5);
        double ls = Time(() => LayerNormKernel.LayerNormRows(lx.AsSpan(0, 32 * cols), g, b, ly.AsSpan(0, 32 * cols), m, rs, 32, cols, 1e-6f), 200);
        Console.WriteLine($"layernorm: {lb / (rows * cols) * 1e6:F3} ns/elem on {rows}x{cols}, {ls / (32 * cols) * 1e6:F3} on 32x{cols}");
        var ldy = Rand(rows * cols); var ldx = new float[rows * cols]; var ldg = new float[cols]; var ldb = new float[cols];
        double lbb = Time(() => LayerNormKernel.LayerNormRowsBackward(lx, g, m, rs, ldy, ldx, ldg, ldb, rows, cols), 5);
        double lbs = Time(() => LayerNormKernel.LayerNormRowsBackward(lx.AsSpan(0, 32 * cols), g, m, rs, ldy.AsSpan(0, 32 * cols), ldx.AsSpan(0, 32 * cols), ldg, ldb, 32, cols), 200);
        Console.WriteLine($"layernorm backward: {lbb / (rows * cols) * 1e6:F3} ns/elem on {rows}x{cols}, {lbs / (32 * cols) * 1e6:F3} on 32x{cols}");
        int N = 197;
        var sx = Rand(N * N); var sy = new float[N * N];
        double sm = Time(() => SoftmaxKernel.SoftmaxRows(sx, sy, N, N), 50);
        Console.WriteLine($"softmax {N}x{N}: {sm * 1e3:F1} us ({sm / (N * N) * 1e6:F3} ns/elem)");
        const int Heads = 4, T = 50; // the attention rows of one vit_fmnist image (in L2)
        var ax = Rand(Heads * T * T); var ay = new float[Heads * T * T];
        double sa = Time(() => SoftmaxKernel.SoftmaxRows(ax, ay, Heads * T, T), 300);
        Console.WriteLine($"softmax {Heads * T}x{T}: {sa * 1e3:F1} us ({sa / (Heads * T * T) * 1e6:F3} ns/elem)");
        // MimiQ's inter-head coherency loss on one vit_fmnist layer's logits at batch 64, forward and backward.
        var ihcLogits = new Tensor(Rand(64 * 4 * 50 * 50), 64, 4, 50, 50).RequireGrad();
        double ihc = Time(() => { ihcLogits.Grad = null; ViTQuant.Algorithms.DataFree.InterHeadCoherence.LayerLoss(ihcLogits, 1).Backward(); }, 3);
        Console.WriteLine($"inter-head coherency loss [64, 4, 50, 50], forward + backward: {ihc:F3} ms");
        var fq = Rand(3200 * 128); var fy = new float[fq.Length]; // a W4A4 simulation's activation quantizer on vit_fmnist b64
        double uq = Time(() => ViTQuant.Quantization.FakeQuant.UniformSpan(fq, fy, 0.05f, 7f, 0, 15), 20);
        Console.WriteLine($"uniform fake quantization {fq.Length} floats: {uq * 1e3:F1} us ({uq / fq.Length * 1e6:F3} ns/elem)");
        double cp = Time(() => xb.AsSpan().CopyTo(yb), 5);
        Console.WriteLine($"copy {big} floats: {cp:F3} ms ({big * 8.0 / cp / 1e6:F1} GB/s)");
        // The bias gradient of vit_fmnist's linear layers (column sums of dY over batch × tokens rows) next to the
        // weight gradient's GEMM it follows, on the same dY.
        foreach (int outF in new[] { 384, 128, 256 })
        {
            const int Rows = 3200, InF = 128;
            var dy = Rand(Rows * outF); var x = Rand(Rows * InF); var db = new float[outF]; var dw = new float[outF * InF];
            double bias = Time(() => DenseCore.Backward(dy, x, default, Rows, InF, outF, default, default, db), 10);
            double weight = Time(() => DenseCore.Backward(dy, x, default, Rows, InF, outF, default, dw, default, dwFresh: true), 10);
            Console.WriteLine($"linear backward {Rows}x{InF}->{outF}, {Parallelism.Threads} threads: bias gradient {bias:F3} ms, weight gradient {weight:F3} ms");
        }
        return 0;
    }
}

// Threads 1 vs 2 on the whole inference forward, alternating round by round: wall time and process CPU
// time (all threads). CPU(2)/CPU(1) above 1 is work the second thread adds (duplicate packing, spinning,
// hand-offs); wall(1)/wall(2) is the speed-up, meaningful only on an idle machine.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- scaling [--arch A] [--batch B] [--rounds R] [--train]
// --train: an AdamW training step (forward, cross-entropy, backward, update) instead of Infer.
internal static class Scaling
{
    public static int Run(string[] args)
    {
        string arch = "deit_tiny_patch16_224";
        int batch = 8, rounds = 15;
        bool train = false;
        for (int i = 0; i < args.Length; i += 2)
        {
            if (args[i] == "--train") { train = true; i--; continue; }
            if (i + 1 >= args.Length) { Console.Error.WriteLine($"scaling: {args[i]} needs a value"); return 2; }
            switch (args[i])
            {
                case "--arch": arch = args[i + 1]; break;
                case "--batch": batch = int.Parse(args[i + 1]); break;
                case "--rounds": rounds = int.Parse(args[i + 1]); break;
                default: Console.Error.WriteLine($"scaling: unknown argument '{args[i]}'"); return 2;
            }
        }
        var model = new VisionTransformer(ViTConfig.FromArchitecture(arch), 1);
        var c = model.Config;
        var rng = new Rng(1);
        var img = Tensor.Randn(rng, 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(_ => rng.NextInt(c.NumClasses)).ToArray();
        var opt = new AdamW(model.Parameters(), lr: 1e-4f, weightDecay: 0.05f);
        Action step = train
            ? () => { opt.ZeroGrad(); Ops.CrossEntropy(model.Forward(img), labels).Backward(); opt.Step(); }
            : () => model.Infer(img);
        using var proc = Process.GetCurrentProcess();
        var wall = new[] { new List<double>(), new List<double>() };
        var cpu = new[] { new List<double>(), new List<double>() };
        var main = new[] { new List<double>(), new List<double>() };
        bool pool = Parallelism.UseSpinPool; // VITQ_SPIN_POOL=0: the .NET thread pool
        for (int r = -2; r < rounds; r++)
            for (int t = 1; t <= 2; t++)
            {
                Parallelism.Threads = t;
                Parallelism.UseSpinPool = pool;
                Thread.Sleep(50);
                proc.Refresh();
                var c0 = proc.TotalProcessorTime;
                double m0 = ForwardOps.ThreadCpuMs();
                var sw = Stopwatch.StartNew();
                using (TensorArena.Scope()) step();
                double w = sw.Elapsed.TotalMilliseconds;
                double m = ForwardOps.ThreadCpuMs() - m0;
                proc.Refresh();
                if (r >= 0) { wall[t - 1].Add(w); cpu[t - 1].Add((proc.TotalProcessorTime - c0).TotalMilliseconds); main[t - 1].Add(m); }
            }
        double Med(List<double> l) { var s = l.OrderBy(v => v).ToList(); return s[s.Count / 2]; }
        Console.WriteLine($"{arch} batch {batch}, {rounds} rounds, {(train ? "training step" : "Infer")}; ms median (min)");
        for (int t = 0; t < 2; t++)
            Console.WriteLine($"threads {t + 1}: wall {Med(wall[t]),8:F1} ({wall[t].Min(),7:F1})   process CPU {Med(cpu[t]),8:F1} ({cpu[t].Min(),7:F1})   calling thread CPU {Med(main[t]),8:F1}");
        Console.WriteLine($"CPU(2)/CPU(1) = {Med(cpu[1]) / Med(cpu[0]):F3} (min-based {cpu[1].Min() / cpu[0].Min():F3}); wall(1)/wall(2) = {Med(wall[0]) / Med(wall[1]):F2}");
        return 0;
    }
}

// How late a Parallelism.For(0, 2) worker starts after the call, with the pool idle for `gap` µs before.
internal static class HandOff
{
    public static int Run(string[] args)
    {
        Parallelism.Threads = 2;
        foreach (bool pool in new[] { false, true })
        foreach (int gapUs in new[] { 0, 20, 200, 2000 })
        {
            Parallelism.UseSpinPool = pool;
            var lat = new List<double>();
            var who = new List<int>();
            for (int r = 0; r < 300; r++)
            {
                var sw0 = Stopwatch.StartNew();
                while (sw0.Elapsed.TotalMilliseconds * 1000 < gapUs) { }
                long t0 = Stopwatch.GetTimestamp();
                long t1 = 0;
                int caller = Environment.CurrentManagedThreadId, other = 0;
                Parallelism.For(0, 2, i =>
                {
                    if (Environment.CurrentManagedThreadId != caller) { t1 = Stopwatch.GetTimestamp(); other = 1; }
                    else { var s = Stopwatch.StartNew(); while (s.Elapsed.TotalMilliseconds < 0.3) { } } // 300 µs of work on the caller
                });
                if (other == 1) lat.Add((t1 - t0) * 1e6 / Stopwatch.Frequency);
                who.Add(other);
            }
            lat.Sort();
            Console.WriteLine($"{(pool ? "spin pool   " : "Parallel.For")} idle gap {gapUs,5} µs: worker took part in {who.Sum()}/{who.Count} calls; start latency µs median {(lat.Count > 0 ? lat[lat.Count / 2] : double.NaN):F1}, p90 {(lat.Count > 0 ? lat[lat.Count * 9 / 10] : double.NaN):F1}");
        }
        return 0;
    }
}
