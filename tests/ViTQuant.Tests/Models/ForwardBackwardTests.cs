// VisionModel.ForwardBackward: a batch's forward and backward in chunks of images, one worker per chunk.
// An input gradient must be the whole batch's bits; parameter gradients must be the chunks' own gradients added in
// chunk order (each chunk computed alone, on the whole-batch path), whatever the thread count.
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Models;

[Collection(ViTQuant.Tests.Tensors.ParallelismThreadsCollection.Name)] // sets Parallelism.Threads
public class ForwardBackwardTests
{
    private static readonly ViTConfig Small = ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 2, MlpRatio = 2f };

    private static Func<Tensor, int, Tensor> CrossEntropy(int[] labels) =>
        (logits, first) => Ops.CrossEntropy(logits, labels[first..(first + logits.Shape[0])], labelSmoothing: 0.1f, meanOver: labels.Length);

    private static int[] Labels(int n, int classes) => Enumerable.Range(0, n).Select(i => (i * 7 + 3) % classes).ToArray();

    [Theory]
    [InlineData("vit", 1)]
    [InlineData("vit", 2)]
    [InlineData("swin", 2)]
    public void InputGradientInChunksIsTheWholeBatchs(string family, int threads)
    {
        VisionModel m = family == "vit"
            ? new VisionTransformer(Small, 3)
            : new SwinTransformer(Chunking.OddSwin, 3);
        foreach (var p in m.Parameters()) p.RequiresGrad = false;
        var c = m.Config;
        var x = Tensor.Randn(new Rng(4), 1f, 9, c.InChans, c.ImageSize, c.ImageSize);
        var loss = CrossEntropy(Labels(9, c.NumClasses));
        (float[] Logits, float[] Grad, float Loss) Run(int chunk, float[]? earlier) => Chunking.With(chunk, () =>
        {
            var xi = x.Clone().RequireGrad();
            if (earlier != null) xi.Grad = new Tensor((float[])earlier.Clone(), x.Shape);
            using var scope = TensorArena.Scope();
            var (logits, l) = m.ForwardBackward(xi, loss);
            return (logits.ToArray(), xi.Grad!.ToArray(), l);
        }, threads);
        var whole = Run(-1, null);
        var earlierGrad = Tensor.Randn(new Rng(5), 1f, x.Shape).ToArray(); // a gradient already there is added onto
        var wholeOnto = Run(-1, earlierGrad);
        foreach (int chunk in new[] { 0, 1, 4 })
        {
            var chunked = Run(chunk, null);
            Assert.Equal(whole.Logits, chunked.Logits);
            Assert.Equal(whole.Grad, chunked.Grad);
            Assert.Equal(whole.Loss, chunked.Loss, 1e-5);
            Assert.Equal(wholeOnto.Grad, Run(chunk, earlierGrad).Grad);
        }
        Assert.All(m.Parameters(), p => Assert.Null(p.Grad));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void ParameterGradientsInChunksAreTheChunksAddedInOrder(int threads)
    {
        var m = new VisionTransformer(Small, 7);
        var parameters = m.Parameters().ToArray();
        var temperature = Tensor.Scalar(1.5f).RequireGrad(); // a leaf of the loss that is not the model's
        var x = Tensor.Randn(new Rng(8), 1f, 8, 1, 28, 28);
        var labels = Labels(8, Small.NumClasses);
        var ce = CrossEntropy(labels);
        Tensor Loss(Tensor logits, int first) => ce(Ops.Mul(logits, temperature), first);
        var leaves = parameters.Append(temperature).ToArray();
        float[][] Grads() => leaves.Select(p => p.Grad!.ToArray()).ToArray();
        void Zero() { foreach (var p in leaves) p.Grad = null; }

        // Chunks of 3 images: 3 chunks of 2, 3 and 3 images (firsts 0, 2, 5), each run alone on the whole-batch path.
        int[] firsts = { 0, 2, 5, 8 };
        var perChunk = new List<float[][]>();
        void RunChunksAlone()
        {
            perChunk.Clear();
            for (int i = 0; i < 3; i++)
            {
                Zero();
                var xc = Tensor.FromArray(x.ToArray()[(firsts[i] * 784)..(firsts[i + 1] * 784)], firsts[i + 1] - firsts[i], 1, 28, 28);
                int first = firsts[i];
                Chunking.With(-1, () => { using (TensorArena.Scope()) m.ForwardBackward(xc, (logits, _) => Loss(logits, first)); return 0; }, threads);
                perChunk.Add(Grads());
            }
        }
        float[][] AddedInOrder(float[][]? onto)
        {
            var sum = (onto ?? perChunk[0]).Select(g => (float[])g.Clone()).ToArray();
            foreach (var chunk in perChunk.Skip(onto == null ? 1 : 0))
                for (int p = 0; p < sum.Length; p++)
                    for (int k = 0; k < sum[p].Length; k++) sum[p][k] += chunk[p][k];
            return sum;
        }
        RunChunksAlone();
        var expected = AddedInOrder(null);

        Zero();
        Chunking.With(-1, () => { using (TensorArena.Scope()) m.ForwardBackward(x, Loss); return 0; }, threads);
        var whole = Grads();
        Zero();
        float chunkedLoss = Chunking.With(3, () => { using (TensorArena.Scope()) return m.ForwardBackward(x, Loss).Loss; }, threads);
        var chunked = Grads();
        for (int p = 0; p < leaves.Length; p++)
        {
            Assert.Equal(expected[p], chunked[p]);
            float scale = whole[p].Max(Math.Abs) + 1e-6f;
            for (int k = 0; k < whole[p].Length; k++) Assert.True(Math.Abs(whole[p][k] - chunked[p][k]) <= 1e-4f * scale, $"leaf {p} element {k}");
        }
        // A second call without zeroing adds its chunks onto the gradients there, still in chunk order.
        Chunking.With(3, () => { using (TensorArena.Scope()) m.ForwardBackward(x, Loss); return 0; }, threads);
        var twice = Grads();
        var expectedTwice = AddedInOrder(chunked);
        for (int p = 0; p < leaves.Length; p++) Assert.Equal(expectedTwice[p], twice[p]);
        // The loss value is the sum of the chunks'; the whole-batch path afterwards is untouched by the chunks' holders.
        Zero();
        float wholeLoss = Chunking.With(-1, () => { using (TensorArena.Scope()) return m.ForwardBackward(x, Loss).Loss; }, threads);
        Assert.Equal(wholeLoss, chunkedLoss, 1e-5);
        for (int p = 0; p < leaves.Length; p++) Assert.Equal(whole[p], leaves[p].Grad!.ToArray());
        // After the weights change (as an optimizer step changes them), the chunks see the new weights: the kept packed
        // weights are packed again.
        foreach (var p in parameters) { var d = p.Span; for (int k = 0; k < d.Length; k++) d[k] *= 1.01f; }
        RunChunksAlone();
        var expectedAfter = AddedInOrder(null);
        Zero();
        Chunking.With(3, () => { using (TensorArena.Scope()) m.ForwardBackward(x, Loss); return 0; }, threads);
        for (int p = 0; p < leaves.Length; p++) Assert.Equal(expectedAfter[p], leaves[p].Grad!.ToArray());
    }

    // The rule's chunks of 6–7 images are the case that caught LayerNorm's dγ split into Threads partials; the whole
    // batch (−1) split it so too, until its partial count stopped following Threads.
    [Theory]
    [InlineData("vit_fmnist", -1)]
    [InlineData("vit_fmnist", 3)]
    [InlineData("vit_fmnist", 0)]
    [InlineData("swin_fmnist", 0)]
    public void ParameterGradientsInChunksAreTheSameAtAnyThreadCount(string arch, int chunk)
    {
        var m = VisionModel.Create(ModelConfigs.FromArchitecture(arch), 7);
        var parameters = m.Parameters().ToArray();
        var x = Tensor.Randn(new Rng(8), 1f, 20, 1, 28, 28);
        var ce = CrossEntropy(Labels(20, 10));
        Assert.True(Gemm.UsesOpenBlas || chunk != 0 || m.BackwardChunkCount(20, m.ParameterCount()) > 1);
        float[][] Grads(int threads)
        {
            foreach (var p in parameters) p.Grad = null;
            Chunking.With(chunk, () => { using (TensorArena.Scope()) m.ForwardBackward(x, ce); return 0; }, threads);
            return parameters.Select(p => p.Grad!.ToArray()).ToArray();
        }
        var one = Grads(1);
        foreach (int threads in new[] { 2, 3 })
        {
            var other = Grads(threads);
            for (int p = 0; p < parameters.Length; p++) Assert.True(one[p].AsSpan().SequenceEqual(other[p]), $"{parameters[p].Name ?? p.ToString()} at {threads} threads");
        }
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(3)]
    public void ALossThatThrowsThrowsAsOnTheWholeBatch(int chunk)
    {
        var m = new VisionTransformer(Small, 7);
        var x = Tensor.Randn(new Rng(8), 1f, 8, 1, 28, 28);
        var e = Assert.Throws<InvalidOperationException>(() => Chunking.With(chunk, () =>
        {
            using (TensorArena.Scope()) return m.ForwardBackward(x, (logits, first) => throw new InvalidOperationException($"no loss for {first}"));
        }, threads: 2));
        Assert.StartsWith("no loss for", e.Message);
        using (Autograd.NoGrad())
            Assert.Throws<InvalidOperationException>(() => m.ForwardBackward(x, (logits, _) => Ops.Sum(logits)));
    }

    [Fact]
    public void TrainingChunksDependOnTheBatchAndTheModelNotTheThreads()
    {
        var fm = new VisionTransformer(ViTConfig.FromArchitecture("vit_fmnist"), 1); // 75 KB of activations, 805,130 parameters
        var deit = new VisionTransformer(ViTConfig.FromArchitecture("deit_tiny_patch16_224"), 1); // 591 KB, 5.7 M parameters
        long fmFloats = fm.ParameterCount(), deitFloats = deit.ParameterCount();
        int saved = Parallelism.Threads;
        try
        {
            foreach (int threads in new[] { 1, 2, 3 })
            {
                Parallelism.Threads = threads;
                if (Gemm.UsesOpenBlas)
                {
                    Assert.Equal(0, fm.BackwardChunkCount(64, fmFloats));
                    continue;
                }
                Assert.Equal(8, fm.BackwardChunkCount(64, fmFloats)); // 8 images a chunk, as Infer's budget
                Assert.Equal(0, fm.BackwardChunkCount(8, fmFloats)); // one chunk: the whole batch
                Assert.Equal(2, deit.BackwardChunkCount(8, deitFloats)); // 8 by the budget, but 2 copies of 23 MB of gradients at most
                Assert.Equal(fm.ChunkCount(64), fm.BackwardChunkCount(64, 0)); // an input gradient: Infer's rule
            }
        }
        finally { Parallelism.Threads = saved; }
    }
}
