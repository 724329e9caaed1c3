using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Kernels;

// The fused attention (Kernels/Attention.cs, Ops.FusedAttention) against
//   - its scalar double reference twin, forward and backward, on every GEMM kernel this CPU runs;
//   - finite differences of a double-precision forward written here from the definition;
//   - the unfused op composition (SplitQkv → MatMul → Scale → Softmax → MatMul → MergeHeads), values and gradients;
//   - the model: hooks = null (fused) against a hook that changes nothing (unfused), logits and gradients.
[Collection(ViTQuant.Tests.Tensors.ParallelismThreadsCollection.Name)]
public class AttentionTests
{
    private static readonly GemmKernel[] Kernels = { GemmKernel.Avx512, GemmKernel.Avx2, GemmKernel.Portable };

    // (B, N, H, D): the ViT shapes (50 tokens × 32 wide heads, DeiT-Tiny's 197 × 64) and odd ones
    // that leave every GEMM edge tile partial.
    public static IEnumerable<object[]> Shapes => new[]
    {
        new object[] { 2, 50, 4, 32 },
        new object[] { 1, 197, 3, 64 },
        new object[] { 3, 7, 2, 5 },
        new object[] { 2, 13, 1, 17 },
        new object[] { 1, 1, 2, 3 },
        // AVX-512 path: 64 + 32 columns, 64 + a 16-column tail, 32 + an 8-column tail; 25 rows = 2 blocks + 1;
        // exactly one 12-row block; 13 rows = a block + 1 (the backward's AVX-512 path takes widths 32k only).
        new object[] { 1, 25, 2, 96 },
        new object[] { 1, 12, 2, 64 },
        new object[] { 3, 13, 1, 32 },
        new object[] { 2, 12, 1, 80 },
        new object[] { 1, 33, 3, 40 },
        // AVX2 path (6-row blocks, 16-column panels; the backward takes widths 16k): exactly one block and three
        // panels; 3 blocks + 1 row with a 16 + 8-column head.
        new object[] { 2, 6, 2, 48 },
        new object[] { 1, 19, 2, 24 },
    };

    private static float[] Random(Rng rng, int n, float scale = 1f)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = scale * (2f * rng.NextFloat() - 1f);
        return x;
    }

    private static void AssertClose(float[] want, float[] got, double tol, string what)
    {
        Assert.Equal(want.Length, got.Length);
        double scale = Math.Max(1e-3, want.Max(v => Math.Abs((double)v)));
        for (int i = 0; i < want.Length; i++)
            if (!(Math.Abs(want[i] - got[i]) <= tol * scale))
                Assert.Fail($"{what}: element {i} = {got[i]}, want {want[i]} (tolerance {tol * scale:E2})");
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void KernelMatchesReferenceOnEveryGemmKernel(int B, int N, int H, int D)
    {
        var rng = new Rng(21);
        int C = H * D;
        var qkv = Random(rng, B * N * 3 * C, 2f);
        var dOut = Random(rng, B * N * C);
        var dInit = Random(rng, B * N * 3 * C); // backward accumulates onto what is there
        float scale = 1f / MathF.Sqrt(D);
        var refP = new float[B * H * N * N];
        var refO = new float[B * N * C];
        AttentionKernel.ReferenceForward(qkv, B, N, H, D, scale, refP, refO);
        var refD = (float[])dInit.Clone();
        AttentionKernel.ReferenceBackward(qkv, refP, dOut, B, N, H, D, scale, refD);
        foreach (var kernel in Kernels)
            using (ManagedGemm.ForceKernel(kernel))
            {
                var p = new float[refP.Length];
                var o = new float[refO.Length];
                AttentionKernel.Forward(qkv, B, N, H, D, scale, p, o);
                AssertClose(refP, p, 1e-5, $"{kernel} probs {B}x{N}x{H}x{D}");
                AssertClose(refO, o, 1e-5, $"{kernel} output {B}x{N}x{H}x{D}");
                // Without kept probabilities (inference) the output is the same bit for bit.
                var o2 = new float[refO.Length];
                AttentionKernel.Forward(qkv, B, N, H, D, scale, default, o2);
                Assert.Equal(o, o2);
                var d = (float[])dInit.Clone();
                AttentionKernel.Backward(qkv, p, dOut, B, N, H, D, scale, d);
                AssertClose(refD, d, 1e-5, $"{kernel} dQkv {B}x{N}x{H}x{D}");
            }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void QueryRowsAreTheFullAttentionsRows(int B, int N, int H, int D)
    {
        // The first M query rows alone: forward rows (probabilities and output) bit for bit the full kernel's, and a
        // backward equal to the full one's with dOut zero past row M (those rows add nothing), on every GEMM kernel.
        var rng = new Rng(23);
        int C = H * D;
        var qkv = Random(rng, B * N * 3 * C, 2f);
        var dInit = Random(rng, B * N * 3 * C);
        float scale = 1f / MathF.Sqrt(D);
        foreach (int M in new[] { 1, 2, 7, 13, N - 1, N }.Where(m => m >= 1 && m <= N).Distinct())
        {
            var dOut = Random(rng, B * M * C);
            var dPadded = new float[B * N * C];
            for (int b = 0; b < B; b++) Array.Copy(dOut, b * M * C, dPadded, b * N * C, M * C);
            foreach (var kernel in Kernels)
                using (ManagedGemm.ForceKernel(kernel))
                {
                    var pFull = new float[B * H * N * N];
                    var oFull = new float[B * N * C];
                    AttentionKernel.Forward(qkv, B, N, H, D, scale, pFull, oFull);
                    var p = new float[B * H * M * N];
                    var o = new float[B * M * C];
                    AttentionKernel.Forward(qkv, B, N, H, D, scale, p, o, queries: M);
                    for (int t = 0; t < B * H; t++) Assert.Equal(pFull.AsSpan(t * N * N, M * N).ToArray(), p.AsSpan(t * M * N, M * N).ToArray());
                    for (int b = 0; b < B; b++) Assert.Equal(oFull.AsSpan(b * N * C, M * C).ToArray(), o.AsSpan(b * M * C, M * C).ToArray());
                    var o2 = new float[B * M * C];
                    AttentionKernel.Forward(qkv, B, N, H, D, scale, default, o2, queries: M);
                    Assert.Equal(o, o2);
                    var dFull = (float[])dInit.Clone();
                    AttentionKernel.Backward(qkv, pFull, dPadded, B, N, H, D, scale, dFull);
                    var d = (float[])dInit.Clone();
                    AttentionKernel.Backward(qkv, p, dOut, B, N, H, D, scale, d, queries: M);
                    AssertClose(dFull, d, 1e-6, $"{kernel} dQkv {B}x{N}x{H}x{D}, {M} query rows");
                }
        }
        Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(qkv, B, N, H, D, scale, default, new float[B * N * C], queries: N + 1));
    }

    // L(qkv) = Σ w ⊙ attention(qkv), in double from the definition; central differences with h = 1e-4
    // have O(h²) ≈ 1e-8 truncation error, so the float gradient must match to float rounding.
    [Fact]
    public void GradientMatchesDoublePrecisionFiniteDifferences()
    {
        const int B = 2, N = 6, H = 2, D = 4, C = H * D;
        var rng = new Rng(22);
        var qkvData = Random(rng, B * N * 3 * C, 1.5f);
        var w = Random(rng, B * N * C);
        float scale = 0.7f;

        double Loss(double[] x)
        {
            double total = 0;
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++)
                    for (int i = 0; i < N; i++)
                    {
                        var s = new double[N];
                        double max = double.NegativeInfinity, sum = 0;
                        for (int j = 0; j < N; j++)
                        {
                            for (int e = 0; e < D; e++) s[j] += x[(b * N + i) * 3 * C + h * D + e] * x[(b * N + j) * 3 * C + C + h * D + e];
                            s[j] *= scale;
                            max = Math.Max(max, s[j]);
                        }
                        for (int j = 0; j < N; j++) sum += s[j] = Math.Exp(s[j] - max);
                        for (int e = 0; e < D; e++)
                        {
                            double o = 0;
                            for (int j = 0; j < N; j++) o += s[j] / sum * x[(b * N + j) * 3 * C + 2 * C + h * D + e];
                            total += w[(b * N + i) * C + h * D + e] * o;
                        }
                    }
            return total;
        }

        var qkv = new Tensor((float[])qkvData.Clone(), B, N, 3 * C).RequireGrad();
        Ops.Sum(Ops.Mul(Ops.FusedAttention(qkv, H, scale), new Tensor(w, B, N, C))).Backward();
        var xd = qkvData.Select(v => (double)v).ToArray();
        const double step = 1e-4;
        for (int i = 0; i < xd.Length; i++)
        {
            double orig = xd[i];
            xd[i] = orig + step; double lp = Loss(xd);
            xd[i] = orig - step; double lm = Loss(xd);
            xd[i] = orig;
            double num = (lp - lm) / (2 * step), ana = qkv.Grad!.Data[i];
            Assert.True(Math.Abs(num - ana) <= 1e-5 + 1e-4 * Math.Abs(num), $"element {i}: analytic {ana:G7} vs numeric {num:G7}");
        }
    }

    private static Tensor Unfused(Tensor qkv, int heads, float scale)
    {
        var (q, k, v) = Ops.SplitQkv(qkv, heads);
        var probs = Ops.Softmax(Ops.Scale(Ops.MatMul(q, k, transB: true), scale), -1);
        return Ops.MergeHeads(Ops.MatMul(probs, v));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void EqualsTheUnfusedCompositionWithGradients(int B, int N, int H, int D)
    {
        var rng = new Rng(23);
        int C = H * D;
        var data = Random(rng, B * N * 3 * C, 2f);
        var w = new Tensor(Random(rng, B * N * C), B, N, C);
        float scale = 1f / MathF.Sqrt(D);
        foreach (int threads in new[] { 1, 2 })
        {
            int saved = Parallelism.Threads;
            Parallelism.Threads = threads;
            try
            {
                var a = new Tensor((float[])data.Clone(), B, N, 3 * C).RequireGrad();
                var ya = Ops.FusedAttention(a, H, scale);
                Ops.Sum(Ops.Mul(ya, w)).Backward();
                var b = new Tensor((float[])data.Clone(), B, N, 3 * C).RequireGrad();
                var yb = Unfused(b, H, scale);
                Ops.Sum(Ops.Mul(yb, w)).Backward();
                AssertClose(yb.ToArray(), ya.ToArray(), 1e-6, $"output threads={threads}");
                AssertClose(b.Grad!.ToArray(), a.Grad!.ToArray(), 1e-6, $"dQkv threads={threads}");
            }
            finally { Parallelism.Threads = saved; }
        }
    }

    // Same inputs, another thread count: every (image, head) is computed by one thread in one order.
    [Fact]
    public void ThreadCountDoesNotChangeAnyBit()
    {
        const int B = 3, N = 50, H = 4, D = 32, C = H * D;
        var rng = new Rng(24);
        var qkv = Random(rng, B * N * 3 * C);
        var g = Random(rng, B * N * C);
        (float[], float[]) Run(int threads)
        {
            int saved = Parallelism.Threads;
            Parallelism.Threads = threads;
            try
            {
                var p = new float[B * H * N * N];
                var o = new float[B * N * C];
                var d = new float[qkv.Length];
                AttentionKernel.Forward(qkv, B, N, H, D, 0.25f, p, o);
                AttentionKernel.Backward(qkv, p, g, B, N, H, D, 0.25f, d);
                return (o, d);
            }
            finally { Parallelism.Threads = saved; }
        }
        var (o1, d1) = Run(1);
        var (o2, d2) = Run(2);
        var (o3, d3) = Run(3);
        Assert.Equal(o1, o2);
        Assert.Equal(o1, o3);
        Assert.Equal(d1, d2);
        Assert.Equal(d1, d3);
    }

    // The AVX-512 kernels with v (forward) and k, q, G (backward) packed next to each other, against read in place
    // in qkv's rows (AttentionKernel.PackOperands): the same bits, for every part of the backward (the fused op, its
    // logits-output halves) and for the first query rows alone.
    [Theory]
    [MemberData(nameof(Shapes))]
    public void PackedRowOperandsChangeNoBit(int B, int N, int H, int D)
    {
        if (!AttentionKernel.UsesAvx512) return; // the packing is the AVX-512 kernels'
        int C = H * D;
        var (data, wl, wo, scale) = LossInputs(new Rng(27), B, N, H, D);
        int M = Math.Max(1, N / 2);
        float[][] Run()
        {
            var a = new Tensor((float[])data.Clone(), B, N, 3 * C).RequireGrad();
            var o = Ops.FusedAttention(a, H, scale);
            Ops.Sum(Ops.Mul(o, wo)).Backward();
            var b = new Tensor((float[])data.Clone(), B, N, 3 * C).RequireGrad();
            var (ob, lb) = Ops.FusedAttentionWithLogits(b, H, scale);
            Ops.Add(Ops.Sum(Ops.Mul(lb, wl)), Ops.Sum(Ops.Mul(ob, wo))).Backward();
            var c = new Tensor((float[])data.Clone(), B, N, 3 * C).RequireGrad();
            var oc = Ops.FusedAttention(c, H, scale, M);
            Ops.Sum(oc).Backward();
            return new[] { o.ToArray(), a.Grad!.ToArray(), ob.ToArray(), lb.ToArray(), b.Grad!.ToArray(), oc.ToArray(), c.Grad!.ToArray() };
        }
        var packed = Run();
        AttentionKernel.PackOperands = false;
        try
        {
            var inPlace = Run();
            for (int i = 0; i < packed.Length; i++) Assert.True(packed[i].AsSpan().SequenceEqual(inPlace[i]), $"result {i}, {B}x{N}x{H}x{D}");
        }
        finally { AttentionKernel.PackOperands = true; }
    }

    // qkv [B, N, 3·H·D] and the weights of a loss on both outputs of the fused op with logits (Σ L·wl + Σ O·wo), and the
    // head scale 1/√D.
    private static (float[] Qkv, Tensor Wl, Tensor Wo, float Scale) LossInputs(Rng rng, int B, int N, int H, int D)
    {
        int C = H * D;
        var qkv = Random(rng, B * N * 3 * C, 2f);
        var wl = new Tensor(Random(rng, B * H * N * N, 0.1f), B, H, N, N);
        var wo = new Tensor(Random(rng, B * N * C), B, N, C);
        return (qkv, wl, wo, 1f / MathF.Sqrt(D));
    }

    private sealed class PassThrough : IModelHooks { }

    // The model uses the fused op only without hooks; a hook that changes nothing keeps the unfused
    // graph. Both must give the same logits and the same input and weight gradients.
    [Fact]
    public void ModelForwardWithAndWithoutHooksAgree()
    {
        var cfg = ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };
        var model = new VisionTransformer(cfg, 5);
        var rng = new Rng(25);
        var x = Tensor.Randn(rng, 1f, 3, 1, 28, 28);
        int[] labels = { 1, 4, 7 };
        (float[] Logits, float[] Dx, float[] DQkvW) Run(IModelHooks? hooks)
        {
            model.ZeroGrad();
            var xi = x.Clone().RequireGrad();
            var logits = model.Forward(xi, hooks);
            Ops.CrossEntropy(logits, labels).Backward();
            return (logits.ToArray(), xi.Grad!.ToArray(), model.Blocks[0].Qkv.Weight.Grad!.ToArray());
        }
        var fused = Run(null);
        var unfused = Run(new PassThrough());
        AssertClose(unfused.Logits, fused.Logits, 1e-5, "logits");
        AssertClose(unfused.Dx, fused.Dx, 1e-4, "input gradient");
        AssertClose(unfused.DQkvW, fused.DQkvW, 1e-4, "qkv weight gradient");
        using (Autograd.NoGrad())
            AssertClose(model.Forward(x, new PassThrough()).ToArray(), model.Infer(x).ToArray(), 1e-5, "Infer (fused) vs Forward with hooks");
    }

    // The fused op with its logits as a second output (observing hooks): the logits against the double twin and
    // bit for bit against the unfused graph's MatMul(q, k, transB), the output bit for bit against the plain
    // fused op, and the gradient of a loss on both outputs against the unfused graph, on every GEMM kernel.
    [Theory]
    [MemberData(nameof(Shapes))]
    public void FusedAttentionWithLogitsMatchesTheUnfusedGraph(int B, int N, int H, int D)
    {
        int C = H * D;
        var (data, wl, wo, scale) = LossInputs(new Rng(26), B, N, H, D);
        var reference = new float[B * H * N * N];
        AttentionKernel.ReferenceLogits(data, B, N, H, D, reference);
        foreach (var kernel in Kernels)
            using (ManagedGemm.ForceKernel(kernel))
            {
                var a = new Tensor((float[])data.Clone(), B, N, 3 * C).RequireGrad();
                var (oa, la) = Ops.FusedAttentionWithLogits(a, H, scale);
                Assert.Equal(new[] { B, H, N, N }, la.Shape);
                AssertClose(reference, la.ToArray(), 1e-6, $"{kernel} logits vs reference {B}x{N}x{H}x{D}");
                Assert.Equal(Ops.FusedAttention(new Tensor((float[])data.Clone(), B, N, 3 * C), H, scale).ToArray(), oa.ToArray());
                Ops.Add(Ops.Sum(Ops.Mul(la, wl)), Ops.Sum(Ops.Mul(oa, wo))).Backward();

                var b = new Tensor((float[])data.Clone(), B, N, 3 * C).RequireGrad();
                var (q, k, v) = Ops.SplitQkv(b, H);
                var lb = Ops.MatMul(q, k, transB: true);
                var ob = Ops.MergeHeads(Ops.MatMul(Ops.Softmax(Ops.Scale(lb, scale), -1), v));
                Ops.Add(Ops.Sum(Ops.Mul(lb, wl)), Ops.Sum(Ops.Mul(ob, wo))).Backward();
                Assert.Equal(lb.ToArray(), la.ToArray());
                AssertClose(ob.ToArray(), oa.ToArray(), 1e-6, $"{kernel} output {B}x{N}x{H}x{D}");
                AssertClose(b.Grad!.ToArray(), a.Grad!.ToArray(), 1e-5, $"{kernel} dQkv {B}x{N}x{H}x{D}");
            }
        // Without gradients: the same values, no nodes.
        using (Autograd.NoGrad())
        {
            var (o, l) = Ops.FusedAttentionWithLogits(new Tensor((float[])data.Clone(), B, N, 3 * C).RequireGrad(), H, scale);
            Assert.Null(o.GradFn);
            AssertClose(reference, l.ToArray(), 1e-6, "logits without gradients");
        }
    }

    // Swin's window attention core (Ops.WindowAttention: relative position bias and shifted-window mask added to the
    // scaled logits) against the op graph Swin ran before (SplitQkv → MatMul → Scale → Add bias → Add mask → Softmax →
    // MatMul → MergeHeads): output, dQkv and the bias gradient (summed over the windows), with and without the mask, on
    // every GEMM kernel; window shapes of Swin-T (7×7: 49 tokens) and ours (4×4, 3×3), head widths of every path.
    [Theory]
    [InlineData(8, 4, 16, 2, 32)]
    [InlineData(6, 3, 9, 3, 16)]
    [InlineData(4, 2, 49, 2, 32)]
    [InlineData(3, 1, 16, 1, 24)]
    public void WindowAttentionEqualsTheOpGraphWithGradients(int Bw, int nW, int N, int H, int D)
    {
        int C = H * D;
        var rng = new Rng(31);
        var data = Random(rng, Bw * N * 3 * C, 2f);
        var biasData = Random(rng, H * N * N);
        var maskData = new float[nW * N * N];
        for (int i = 0; i < maskData.Length; i++) maskData[i] = rng.NextFloat() < 0.3f ? -100f : 0f;
        var w = new Tensor(Random(rng, Bw * N * C), Bw, N, C);
        float scale = 1f / MathF.Sqrt(D);
        foreach (bool masked in new[] { false, true })
            foreach (var kernel in Kernels)
                foreach (int threads in new[] { 1, 2 })
                {
                    int saved = Parallelism.Threads;
                    Parallelism.Threads = threads;
                    try
                    {
                        using var _ = ManagedGemm.ForceKernel(kernel);
                        var mask = masked ? new Tensor((float[])maskData.Clone(), nW, 1, N, N) : null;
                        var a = new Tensor((float[])data.Clone(), Bw, N, 3 * C).RequireGrad();
                        var ba = new Tensor((float[])biasData.Clone(), H, N, N).RequireGrad();
                        var ya = Ops.WindowAttention(a, H, scale, ba, mask);
                        Ops.Sum(Ops.Mul(ya, w)).Backward();

                        var b = new Tensor((float[])data.Clone(), Bw, N, 3 * C).RequireGrad();
                        var bb = new Tensor((float[])biasData.Clone(), H, N, N).RequireGrad();
                        var (q, k, v) = Ops.SplitQkv(b, H);
                        var scores = Ops.Add(Ops.Scale(Ops.MatMul(q, k, transB: true), scale), bb);
                        if (mask != null) scores = Ops.Reshape(Ops.Add(Ops.Reshape(scores, Bw / nW, nW, H, N, N), mask), Bw, H, N, N);
                        var yb = Ops.MergeHeads(Ops.MatMul(Ops.Softmax(scores, -1), v));
                        Ops.Sum(Ops.Mul(yb, w)).Backward();
                        string what = $"{kernel} threads {threads} mask {masked} {Bw}x{N}x{H}x{D}";
                        AssertClose(yb.ToArray(), ya.ToArray(), 1e-6, $"{what} output");
                        AssertClose(b.Grad!.ToArray(), a.Grad!.ToArray(), 1e-5, $"{what} dQkv");
                        AssertClose(bb.Grad!.ToArray(), ba.Grad!.ToArray(), 1e-5, $"{what} dBias");
                    }
                    finally { Parallelism.Threads = saved; }
                }
        // A bias that takes no gradient (qkv's alone), and a qkv that takes none (the bias's alone).
        var q2 = new Tensor((float[])data.Clone(), Bw, N, 3 * C).RequireGrad();
        Ops.Sum(Ops.WindowAttention(q2, H, scale, new Tensor((float[])biasData.Clone(), H, N, N), null)).Backward();
        Assert.NotNull(q2.Grad);
        var b2 = new Tensor((float[])biasData.Clone(), H, N, N).RequireGrad();
        Ops.Sum(Ops.Mul(Ops.WindowAttention(new Tensor((float[])data.Clone(), Bw, N, 3 * C), H, scale, b2, null), w)).Backward();
        Assert.Contains(b2.Grad!.ToArray(), g => g != 0f);
        // Bad shapes: a bias of another size, a mask whose window count does not divide the batch, a mask that wants a gradient.
        var x = new Tensor((float[])data.Clone(), Bw, N, 3 * C);
        Assert.Throws<ArgumentException>(() => Ops.WindowAttention(x, H, scale, Tensor.Zeros(H, N, N + 1), null));
        Assert.Throws<ArgumentException>(() => Ops.WindowAttention(x, H, scale, Tensor.Zeros(H, N, N), Tensor.Zeros(Bw + 1, 1, N, N)));
        Assert.Throws<ArgumentException>(() => Ops.WindowAttention(x, H, scale, Tensor.Zeros(H, N, N), Tensor.Zeros(nW, 1, N, N).RequireGrad()));
    }

    // The Swin model with the fused window attention against its op graph (UnfusedWindowAttention): logits and every
    // parameter's gradient (the relative position bias tables among them) of a padded, shifted, window-shrinking Swin.
    [Fact]
    public void SwinWithTheFusedWindowAttentionEqualsTheOpGraph()
    {
        var model = new SwinTransformer(ViTQuant.Tests.Models.Chunking.OddSwin, seed: 3);
        var x = Tensor.Randn(new Rng(4), 1f, 3, 3, 20, 20);
        var labels = new[] { 0, 1, 3 };
        (float[] Logits, float[][] Grads) Run(bool unfused)
        {
            SwinBlock.UnfusedWindowAttention = unfused;
            try
            {
                model.ZeroGrad();
                var logits = model.Forward(x);
                Ops.CrossEntropy(logits, labels).Backward();
                return (logits.ToArray(), model.Parameters().Select(p => p.Grad!.ToArray()).ToArray());
            }
            finally { SwinBlock.UnfusedWindowAttention = false; }
        }
        var (fl, fg) = Run(false);
        var (ul, ug) = Run(true);
        AssertClose(ul, fl, 1e-5, "logits");
        for (int i = 0; i < fg.Length; i++) AssertClose(ug[i], fg[i], 1e-4, $"gradient {i}");
    }

    // The Swin block's two row gathers (SwinWindows.GatherIndices) and its MLP's residual added in fc2's GEMM
    // (Ops.LinearResidual, without hooks) against the roll, pad, partition, reverse, crop and roll ops and the separate
    // add they replace: the same logits and gradients bit for bit, on a padded, shifted, window-shrinking Swin and
    // on the shipped architecture's shape, with hooks that see the windows (a quantizer on every point) and without.
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    public void SwinRowGathersEqualTheWindowOps(bool shipped, bool hooked)
    {
        var config = shipped ? SwinConfig.FashionMnist() : ViTQuant.Tests.Models.Chunking.OddSwin;
        var model = new SwinTransformer(config, seed: 3);
        var x = Tensor.Randn(new Rng(5), 1f, 2, config.InChans, config.ImageSize, config.ImageSize);
        IModelHooks? hooks = hooked ? new ScaleEveryActivation() : null;
        (float[] Logits, float[][] Grads) Run(bool separate)
        {
            SwinBlock.SeparateWindowOps = VisionTransformer.SeparateResidualAdds = separate;
            try
            {
                model.ZeroGrad();
                var logits = model.Forward(x, hooks);
                Ops.CrossEntropy(logits, new[] { 1, 2 }).Backward();
                return (logits.ToArray(), model.Parameters().Select(p => p.Grad!.ToArray()).ToArray());
            }
            finally { SwinBlock.SeparateWindowOps = VisionTransformer.SeparateResidualAdds = false; }
        }
        var (gl, gg) = Run(false);
        var (sl, sg) = Run(true);
        Assert.Equal(sl, gl);
        for (int i = 0; i < gg.Length; i++) Assert.Equal(sg[i], gg[i]);
    }

    // A hook that changes every activation it is offered (so the windows' layout matters to it).
    private sealed class ScaleEveryActivation : IModelHooks
    {
        public Tensor Activation(string point, Tensor x) => Ops.Scale(x, 0.5f);
    }

    // Observing hooks (a TapRecorder) keep the fused attention and compute the taps beside it; a recorder
    // around a hook that is not known to pass through gets the unfused graph. Same taps, logits and
    // gradients, with a loss on the logits taps (as MimiQ synthesis) or on the per-head outputs (as PSAQ).
    [Theory]
    [InlineData("attn.logits")]
    [InlineData("attn.out")]
    public void ObservingHooksKeepTheFusedPathWithTheSameTapsAndGradients(string tap)
    {
        var cfg = ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };
        var model = new VisionTransformer(cfg, 5);
        var x = Tensor.Randn(new Rng(27), 1f, 3, 1, 28, 28);
        int[] labels = { 1, 4, 7 };
        (float[] Logits, float[] Taps, float[] Dx) Run(TapRecorder rec)
        {
            model.ZeroGrad();
            var xi = x.Clone().RequireGrad();
            var logits = model.Forward(xi, rec);
            var taps = model.Blocks.Select((_, i) => rec.Taps[$"blocks.{i}.{tap}"]).ToList();
            Tensor loss = Ops.CrossEntropy(logits, labels);
            foreach (var t in taps) loss = Ops.Add(loss, Ops.Scale(Ops.Sum(Ops.Mul(t, t)), 1e-3f));
            loss.Backward();
            return (logits.ToArray(), taps.SelectMany(t => t.ToArray()).ToArray(), xi.Grad!.ToArray());
        }
        var observing = new TapRecorder(n => n.EndsWith(tap, StringComparison.Ordinal));
        Assert.True(observing.PassesThrough);
        var fused = Run(observing);
        var opaque = new TapRecorder(n => n.EndsWith(tap, StringComparison.Ordinal), new PassThrough());
        Assert.False(opaque.PassesThrough);
        var unfused = Run(opaque);
        AssertClose(unfused.Logits, fused.Logits, 1e-5, "logits");
        AssertClose(unfused.Taps, fused.Taps, 1e-5, tap);
        AssertClose(unfused.Dx, fused.Dx, 1e-4, "input gradient");
        // The fused path really ran: its autograd graph has the fused node, the unfused one has none.
        var probe = new TapRecorder(n => n == $"blocks.0.{tap}");
        var y = model.Forward(x.Clone().RequireGrad(), probe);
        Assert.Contains("attention", GraphOps(y));
        Assert.DoesNotContain("attention", GraphOps(model.Forward(x.Clone().RequireGrad(), new TapRecorder(n => false, new PassThrough()))));
    }

    // The op names of the autograd graph behind t.
    private static HashSet<string> GraphOps(Tensor t)
    {
        var names = new HashSet<string>();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<Tensor>();
        stack.Push(t);
        while (stack.Count > 0)
        {
            var cur = stack.Pop();
            if (!seen.Add(cur) || cur.GradFn == null) continue;
            names.Add(cur.GradFn.OpName);
            foreach (var p in cur.GradFn.Parents) stack.Push(p);
        }
        return names;
    }

    // The split-heads kernels that a quantized model's inference runs (Ops.AttentionProbabilities and
    // Ops.AttentionOutput, with quantizers on q, k, v and the probabilities between them) equal the op graph
    // MatMul(q, k, transB) → Scale → Softmax and MatMul(probs, v) → MergeHeads bit for bit, on every GEMM kernel and
    // at N > 192 (where the AVX-512 P·v hands over to the GEMM to keep its K blocking).
    [Theory]
    [MemberData(nameof(Shapes))]
    [InlineData(1, 200, 2, 32)]
    public void SplitHeadKernelsEqualTheOpGraph(int B, int N, int H, int D)
    {
        var rng = new Rng(27);
        var q = new Tensor(Random(rng, B * H * N * D, 2f), B, H, N, D);
        var k = new Tensor(Random(rng, B * H * N * D, 2f), B, H, N, D);
        var v = new Tensor(Random(rng, B * H * N * D, 2f), B, H, N, D);
        // Probabilities rounded to a coarse grid, as a quantizer leaves them.
        var pq = new Tensor(Random(rng, B * H * N * N).Select(x => MathF.Round(MathF.Abs(x) * 16f) / 16f).ToArray(), B, H, N, N);
        float scale = 1f / MathF.Sqrt(D);
        using var _ = Autograd.NoGrad();
        foreach (var kernel in Kernels)
            using (ManagedGemm.ForceKernel(kernel))
            {
                var want = Ops.Softmax(Ops.Scale(Ops.MatMul(q, k, transB: true), scale), -1);
                var got = Ops.AttentionProbabilities(q, k, scale);
                Assert.True(want.Span.SequenceEqual(got.Span), $"{kernel} probabilities {B}x{N}x{H}x{D}");
                var wantO = Ops.MergeHeads(Ops.MatMul(pq, v));
                var gotO = Ops.AttentionOutput(pq, v);
                Assert.Equal(wantO.Shape, gotO.Shape);
                Assert.True(wantO.Span.SequenceEqual(gotO.Span), $"{kernel} output {B}x{N}x{H}x{D}");
            }
    }

    // A model with a quantizer-like hook on q, k, v and the probabilities: its inference takes the split-head kernels,
    // and gives the logits bit for bit of the op graph (forced by wanting the per-head output tap); with gradients
    // on, the op graph runs and the kernels, which have no backward, refuse.
    [Fact]
    public void QuantizedInferenceTakesTheSplitHeadKernelsWithTheSameLogits()
    {
        var cfg = ViTConfig.FashionMnistDefault() with { EmbedDim = 64, Depth = 2, NumHeads = 2, MlpRatio = 2f };
        var model = new VisionTransformer(cfg, 6);
        var x = Tensor.Randn(new Rng(28), 1f, 3, 1, 28, 28);
        float[] Logits(bool wantOutTap)
        {
            using var _ = Autograd.NoGrad();
            return model.Forward(x, new Rounding(wantOutTap)).ToArray();
        }
        var kernels = Logits(false);
        var graph = Logits(true);
        Assert.True(graph.AsSpan().SequenceEqual(kernels), "logits through the split-head kernels differ from the op graph's");
        // The hook really changed the numbers (against no hooks at all).
        using (Autograd.NoGrad()) Assert.False(model.Infer(x).Span.SequenceEqual(kernels));
        var q = Tensor.Randn(new Rng(29), 1f, 1, 2, 5, 4).RequireGrad();
        Assert.Throws<InvalidOperationException>(() => Ops.AttentionProbabilities(q, q, 1f));
        Assert.Throws<ArgumentException>(() => Ops.AttentionOutput(Tensor.Zeros(1, 2, 5, 4), Tensor.Zeros(1, 2, 5, 4)));
    }

    // Rounds q, k, v (to 1/8) and the probabilities (to 1/4096: a random model's are near 1/N, which a coarser grid
    // would flatten to one level) as a quantizer would; optionally wants the per-head output tap, which keeps the
    // model on the op graph.
    private sealed class Rounding(bool wantOutTap) : IModelHooks
    {
        public Tensor Activation(string point, Tensor x)
        {
            float step = point.EndsWith(".attn.probs", StringComparison.Ordinal) ? 1f / 4096 : point.EndsWith(".attn.q", StringComparison.Ordinal)
                || point.EndsWith(".attn.k", StringComparison.Ordinal) || point.EndsWith(".attn.v", StringComparison.Ordinal) ? 1f / 8 : 0f;
            return step == 0f ? x : new Tensor(x.ToArray().Select(v => MathF.Round(v / step) * step).ToArray(), x.Shape);
        }

        public bool WantsTap(string name) => wantOutTap && name.EndsWith(".attn.out", StringComparison.Ordinal);
    }

    [Fact]
    public void RejectsBadShapesAndBuffers()
    {
        Assert.Throws<ArgumentException>(() => Ops.FusedAttention(Tensor.Zeros(2, 3, 10), 2, 1f));
        Assert.Throws<ArgumentException>(() => Ops.FusedAttention(Tensor.Zeros(2, 12), 2, 1f));
        var p = new float[2 * 2 * 3 * 3];
        Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(new float[10], 2, 3, 2, 2, 1f, p, new float[24]));
        Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(new float[72], 2, 3, 2, 2, 1f, new float[5], new float[24]));
        Assert.Throws<ArgumentException>(() => AttentionKernel.Backward(new float[72], p, new float[24], 2, 3, 2, 2, 1f, new float[24]));
        Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(new float[72], 0, 3, 2, 2, 1f, p, new float[24]));
        // The split-head kernels: q, k, v [2, 2, 3, 2] are 24 floats, probs 36, the merged output 24.
        AttentionKernel.Probabilities(new float[24], new float[24], 2, 3, 2, 2, 1f, new float[36]);
        Assert.Throws<ArgumentException>(() => AttentionKernel.Probabilities(new float[24], new float[23], 2, 3, 2, 2, 1f, new float[36]));
        Assert.Throws<ArgumentException>(() => AttentionKernel.Probabilities(new float[24], new float[24], 2, 3, 2, 2, 1f, new float[35]));
        AttentionKernel.ProbsTimesV(new float[36], new float[24], 2, 3, 2, 2, new float[24]);
        Assert.Throws<ArgumentException>(() => AttentionKernel.ProbsTimesV(new float[36], new float[24], 2, 3, 2, 2, new float[23]));
        Assert.Throws<ArgumentException>(() => AttentionKernel.ProbsTimesV(new float[36], new float[24], 2, 0, 2, 2, new float[24]));
    }
}
