using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Models;

// VisionTransformer.Infer (per-stage scopes, residual sums written into ping-pong buffers, GELU in place)
// computes exactly what Forward computes: the same ops in the same order, bit for bit.
[Collection(ViTQuant.Tests.Tensors.ParallelismThreadsCollection.Name)] // sets Parallelism.Threads
public class ViTInferTests
{
    [Theory]
    [InlineData("vit_fmnist", 3)]
    [InlineData("deit_tiny_patch16_224", 1)]
    public void InferEqualsForwardBitForBit(string arch, int batch)
    {
        var m = new VisionTransformer(ViTConfig.FromArchitecture(arch), 5);
        var c = m.Config;
        var x = Tensor.Randn(new Rng(6), 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        float[] forward, forwardNoGrad, infer;
        using (TensorArena.Scope()) forward = m.Forward(x).ToArray();
        using (TensorArena.Scope())
        using (Autograd.NoGrad()) forwardNoGrad = m.Forward(x).ToArray();
        using (TensorArena.Scope()) infer = m.Infer(x).ToArray();
        Assert.Equal(forward, forwardNoGrad);
        Assert.Equal(forward, infer);
    }

    // Infer without hooks runs the batch in chunks of images, one worker per chunk (the file header of
    // VisionTransformer): every chunking gives the whole batch's logits bit for bit, with and without packed weights.
    [Theory]
    [InlineData("vit_fmnist", 1)]
    [InlineData("vit_fmnist", 2)]
    [InlineData("distilled", 2)]
    [InlineData("avg", 2)]
    public void ChunkedInferGivesTheWholeBatchsBits(string config, int threads)
    {
        var c = config switch
        {
            "distilled" => new ViTConfig
            {
                Architecture = "deit_test", ImageSize = 32, PatchSize = 8, InChans = 3, NumClasses = 7, EmbedDim = 48, Depth = 2,
                NumHeads = 3, MlpRatio = 4f, Distilled = true,
            },
            "avg" => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 2, ClassToken = false, GlobalPool = "avg" },
            _ => ViTConfig.FromArchitecture(config),
        };
        var m = new VisionTransformer(c, 5);
        var x = Tensor.Randn(new Rng(6), 1f, 11, c.InChans, c.ImageSize, c.ImageSize);
        float[] Frozen(int chunk)
        {
            using var packed = WeightPacking.Freeze();
            return Chunking.Infer(m, x, chunk);
        }
        Chunking.With(-1, () =>
        {
            float[] forward;
            using (TensorArena.Scope()) forward = m.Forward(x).ToArray();
            var whole = Chunking.Infer(m, x, -1);
            Assert.Equal(forward, whole);
            foreach (int chunk in new[] { 0, 1, 3, 4, 10 }) // 0: the default rule; 3 and 4 leave a short last chunk
            {
                Assert.Equal(whole, Chunking.Infer(m, x, chunk));
                Assert.Equal(whole, Frozen(chunk));
            }
            return 0;
        }, threads);
    }

    // A calibrated quantized model evaluates in the same chunks (IImageLocalHooks): static per-tensor grids, LSQ and
    // ADFQ's per-patch grid all act on each image alone, so the logits are the whole batch's bits.
    [Theory]
    [InlineData("minmax", 2)]
    [InlineData("mimiq", 1)]
    [InlineData("adfq", 2)]
    public void QuantizedEvaluationInChunksGivesTheWholeBatchsBits(string method, int threads)
    {
        var c = ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };
        var qm = new QuantizedModel(new VisionTransformer(c, 4), QuantPresets.Create(method, 4, 4));
        var local = (IImageLocalHooks)qm;
        var rng = new Rng(9);
        Assert.False(local.ImageLocal); // not calibrated: the first forward calibrates
        qm.Calibrate(new[] { Tensor.Randn(rng, 1f, 16, 1, 28, 28) });
        Assert.True(local.ImageLocal);
        qm.Observer = new TapRecorder(_ => true);
        Assert.False(local.ImageLocal); // an observer sees whole tensors
        qm.Observer = null;
        var x = Tensor.Randn(rng, 1f, 9, 1, 28, 28);
        Chunking.With(-1, () =>
        {
            float[] forward;
            using (Autograd.NoGrad()) forward = qm.Model.Forward(x, qm).ToArray();
            var whole = Chunking.Infer(qm.Model, x, -1, qm);
            Assert.Equal(forward, whole);
            foreach (int chunk in new[] { 0, 1, 4 }) Assert.Equal(whole, Chunking.Infer(qm.Model, x, chunk, qm));
            return 0;
        }, threads);
    }

    // Swin takes the same chunks (VisionModel.Infer): a map padded to its windows and shifted windows, and swin_fmnist.
    [Theory]
    [InlineData("odd", 1)]
    [InlineData("odd", 2)]
    [InlineData("swin_fmnist", 2)]
    public void ChunkedSwinInferGivesTheWholeBatchsBits(string config, int threads)
    {
        var c = config == "odd"
            ? Chunking.OddSwin
            : SwinConfig.FromArchitecture(config);
        var m = new SwinTransformer(c, 5);
        var x = Tensor.Randn(new Rng(6), 1f, 7, c.InChans, c.ImageSize, c.ImageSize);
        Chunking.With(-1, () =>
        {
            float[] forward;
            using (TensorArena.Scope()) forward = m.Forward(x).ToArray();
            var whole = Chunking.Infer(m, x, -1);
            Assert.Equal(forward, whole);
            foreach (int chunk in new[] { 0, 1, 3 }) Assert.Equal(whole, Chunking.Infer(m, x, chunk));
            return 0;
        }, threads);
    }

    [Fact]
    public void ChunksFollowTheCacheBudgetAndTheWorkers()
    {
        var fm = new VisionTransformer(ViTConfig.FromArchitecture("vit_fmnist"), 1); // 50 tokens × 384 floats: 75 KB an image
        var deit = new VisionTransformer(ViTConfig.FromArchitecture("deit_tiny_patch16_224"), 1); // 197 × 768: 591 KB
        if (Gemm.UsesOpenBlas) // no managed AVX2 kernel (VITQ_GEMM_KERNEL=portable): chunks would change the GEMM, and its bits
        {
            Assert.Equal(0, fm.ChunkCount(64));
            return;
        }
        int saved = Parallelism.Threads;
        try
        {
            Parallelism.Threads = 1;
            Assert.Equal(8, fm.ChunkCount(64)); // 8 images, 600 KB of activations, a chunk
            Assert.Equal(0, fm.ChunkCount(8)); // one chunk: the whole batch
            Assert.Equal(8, deit.ChunkCount(8));
            Assert.Equal(0, deit.ChunkCount(1));
            Parallelism.Threads = 2;
            Assert.Equal(8, fm.ChunkCount(64)); // as many for each worker
            Assert.Equal(8, fm.ChunkCount(63));
            Assert.Equal(2, fm.ChunkCount(8)); // one chunk per worker
            Assert.Equal(0, fm.ChunkCount(3)); // fewer than two images a worker: the ops split instead
            Parallelism.Threads = 3;
            Assert.Equal(9, fm.ChunkCount(64)); // 8 by the budget, rounded up to 3 for each worker
            Assert.Equal(7, deit.ChunkCount(7)); // no chunk is empty
            Assert.Equal(0, deit.ChunkCount(5));
            var swin = new SwinTransformer(SwinConfig.FromArchitecture("swin_tiny_patch4_window7_224"), 1); // 56² × 384 floats: 4.6 MB
            Assert.Equal(8, swin.ChunkCount(8)); // one image a chunk
            int inside = -1;
            Parallelism.For(0, 1, _ => inside = fm.ChunkCount(64));
            Assert.Equal(0, inside); // inside a parallel body the batch is one piece of someone's parallel work
            Assert.Equal(0, Chunking.With(-1, () => fm.ChunkCount(64)));
            Assert.Equal(22, Chunking.With(3, () => fm.ChunkCount(64)));
        }
        finally { Parallelism.Threads = saved; }
    }
}
