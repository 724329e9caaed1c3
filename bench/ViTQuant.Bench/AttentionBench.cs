// Fused attention kernel speed on the ViT shapes, forward and backward, against the unfused op
// graph on the same inputs (interleaved rounds; fastest and median call reported). "fused" is Attention512.cs on
// AVX-512 CPUs and Attention256.cs on AVX2 + FMA ones; "GEMM-path" the two-GEMM path CPUs without FMA run.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- attn [--threads T] [--reps R] [--only PREFIX] [--shape PREFIX]
//       --only: just the cases whose name starts with PREFIX (e.g. "fused" to profile the kernel alone with perf; "packing fwd"
//       or "packing bwd": the AVX-512 kernels with their row operands packed against read in place, AttentionKernel.PackOperands);
//       --shape: just the shapes whose name starts with PREFIX ("vit" or "deit")
using System.Diagnostics;
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class AttentionBench
{
    public static int Run(string[] args)
    {
        int reps = 21;
        string only = "", shape = "";
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            if (args[i] == "--threads") Parallelism.Threads = int.Parse(args[i + 1]);
            else if (args[i] == "--reps") reps = int.Parse(args[i + 1]);
            else if (args[i] == "--only") only = args[i + 1];
            else if (args[i] == "--shape") shape = args[i + 1];
            else { Console.Error.WriteLine($"attn: unknown argument '{args[i]}'"); return 2; }
        }
        Console.WriteLine($"threads {Parallelism.Threads}, {reps} interleaved calls; ms fastest / median; GEMM {Gemm.Describe()}");
        foreach (var (name, B, N, H, D) in new[] { ("vit_fmnist b64", 64, 50, 4, 32), ("deit_tiny b8", 8, 197, 3, 64) })
        {
            if (!name.StartsWith(shape, StringComparison.Ordinal)) continue;
            int C = H * D;
            var rng = new Rng(1);
            var qkv = Tensor.Randn(rng, 1f, B, N, 3 * C);
            var w = Tensor.Randn(rng, 1f, B, N, C);
            float scale = 1f / MathF.Sqrt(D);
            var probs = new float[B * H * N * N];
            var o = new float[B * N * C];
            var d = new float[B * N * 3 * C];
            // Real probabilities for the backward cases, also when --only leaves out every forward.
            AttentionKernel.Forward(qkv.Span, B, N, H, D, scale, probs, o);
            var cases = new (string, Action)[]
            {
                ("fused fwd", () => AttentionKernel.Forward(qkv.Span, B, N, H, D, scale, probs, o)),
                ("fused fwd no probs", () => AttentionKernel.Forward(qkv.Span, B, N, H, D, scale, default, o)),
                ("GEMM-path fwd", () => GemmPath(() => AttentionKernel.Forward(qkv.Span, B, N, H, D, scale, probs, o))),
                ("fused bwd", () => AttentionKernel.Backward(qkv.Span, probs, w.Span, B, N, H, D, scale, d)),
                ("packing fwd packed v", () => AttentionKernel.Forward(qkv.Span, B, N, H, D, scale, probs, o)),
                ("packing fwd v in place", () => InPlace(() => AttentionKernel.Forward(qkv.Span, B, N, H, D, scale, probs, o))),
                ("packing bwd packed k,q,G", () => AttentionKernel.Backward(qkv.Span, probs, w.Span, B, N, H, D, scale, d)),
                ("packing bwd k,q,G in place", () => InPlace(() => AttentionKernel.Backward(qkv.Span, probs, w.Span, B, N, H, D, scale, d))),
                ("GEMM-path bwd", () => GemmPath(() => AttentionKernel.Backward(qkv.Span, probs, w.Span, B, N, H, D, scale, d))),
                ("unfused fwd", () => { using var _ = Autograd.NoGrad(); using var s = TensorArena.Scope(); Unfused(qkv, H, scale); }),
                ("fused fwd+bwd", () => { using var s = TensorArena.Scope(); var x = qkv.Clone().RequireGrad(); Ops.Sum(Ops.Mul(Ops.FusedAttention(x, H, scale), w)).Backward(); }),
                ("unfused fwd+bwd", () => { using var s = TensorArena.Scope(); var x = qkv.Clone().RequireGrad(); Ops.Sum(Ops.Mul(Unfused(x, H, scale), w)).Backward(); }),
            };
            cases = cases.Where(c => c.Item1.StartsWith(only, StringComparison.Ordinal)).ToArray();
            var t = cases.Select(_ => new List<double>()).ToArray();
            for (int r = -2; r < reps; r++)
                for (int c = 0; c < cases.Length; c++)
                {
                    var sw = Stopwatch.StartNew();
                    cases[c].Item2();
                    if (r >= 0) t[c].Add(sw.Elapsed.TotalMilliseconds);
                }
            Console.Write($"{name,-16}");
            for (int c = 0; c < cases.Length; c++)
            {
                t[c].Sort();
                Console.Write($"  {cases[c].Item1} {t[c][0]:F2}/{t[c][t[c].Count / 2]:F2}");
            }
            Console.WriteLine();
        }
        return 0;
    }

    // The AVX-512 kernels reading v (forward) and k, q, G (backward) in place instead of packed (AttentionKernel.PackOperands).
    private static void InPlace(Action a)
    {
        AttentionKernel.PackOperands = false;
        try { a(); }
        finally { AttentionKernel.PackOperands = true; }
    }

    // The two-GEMM path on any CPU (the AVX-512 and AVX2 kernels switched off).
    private static void GemmPath(Action a)
    {
        AttentionKernel.Avx512Path = AttentionKernel.Avx2Path = false;
        try { a(); }
        finally { AttentionKernel.Avx512Path = AttentionKernel.Avx2Path = true; }
    }

    private static Tensor Unfused(Tensor qkv, int heads, float scale)
    {
        var (q, k, v) = Ops.SplitQkv(qkv, heads);
        var probs = Ops.Softmax(Ops.Scale(Ops.MatMul(q, k, transB: true), scale), -1);
        return Ops.MergeHeads(Ops.MatMul(probs, v));
    }
}
