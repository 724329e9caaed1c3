// What the toolkit needs of a classifier, whichever architecture it is: ViT/DeiT (VisionTransformer) or
// Swin (SwinTransformer). Both forwards are written once with named quantization points and taps
// (ModelHooks.cs); plans, calibration, evaluation and `vitq infer --taps` only see those names.
//
//   IModelConfig   the config basics callers read (input geometry, preprocessing, classes, names), the
//                  model's quantization points in forward order and its attention blocks; serialised as
//                  JSON in our checkpoints ("vitq.config"), told apart by ModelConfigs.FromJson
//   VisionModel    a Module with Forward(x, hooks), Infer, ForwardBackward, Clone, MacsPerImage; Create(config) builds either
using System.Runtime.ExceptionServices;
using System.Text.Json;
using ViTQuant.Kernels;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Models;

/// <summary>The configuration of any of our model families (ViTConfig, SwinConfig).</summary>
public interface IModelConfig
{
    /// <summary>The architecture name (timm's, e.g. "deit_tiny_patch16_224", or ours, "vit_fmnist").</summary>
    string Architecture { get; }

    /// <summary>Input height and width in pixels (square inputs).</summary>
    int ImageSize { get; }

    /// <summary>Patch side in pixels.</summary>
    int PatchSize { get; }

    /// <summary>Input channels (1 for Fashion-MNIST, 3 for RGB).</summary>
    int InChans { get; }

    /// <summary>Output classes (logits per image).</summary>
    int NumClasses { get; }

    /// <summary>Per-channel mean subtracted from [0, 1] pixels before the model (normalisation).</summary>
    float[] Mean { get; }

    /// <summary>Per-channel standard deviation pixels are divided by after the mean is subtracted.</summary>
    float[] Std { get; }

    /// <summary>Centre-crop fraction of the evaluation transform (resize to ImageSize / CropPct, then crop).</summary>
    float CropPct { get; }

    /// <summary>Resize interpolation of the evaluation transform ("bilinear", "bicubic").</summary>
    string Interpolation { get; }

    /// <summary>Class names in output order, or null when the checkpoint has none.</summary>
    string[]? ClassNames { get; }

    /// <summary>"vit" (ViT/DeiT) or "swin".</summary>
    string Family { get; }

    /// <summary>One line on the network's shape for reports (depth, widths, heads, tokens or windows).</summary>
    string DescribeShape();

    /// <summary>Every weight layer (quantization point of a weight), in forward order.</summary>
    IEnumerable<string> WeightLayers();

    /// <summary>Every activation quantization point, in forward order.</summary>
    IEnumerable<string> ActivationPoints();

    /// <summary>The transformer blocks' name prefixes in forward order ("blocks.3", "layers.1.blocks.0").</summary>
    IReadOnlyList<string> BlockPrefixes();

    /// <summary>
    /// Leading non-patch tokens on both axes of every attention map (ViT/DeiT: the class and distillation
    /// tokens; Swin, whose windows hold patches only: 0).
    /// </summary>
    int NumPrefixTokens => 0;

    /// <summary>The config as JSON (what our checkpoints store under vitq.config).</summary>
    string ToJson();
}

/// <summary>Configs of either family from our JSON.</summary>
public static class ModelConfigs
{
    /// <summary>
    /// Parses a config written by <see cref="IModelConfig.ToJson"/>: a Swin config (it has "Depths") or a ViT
    /// one. Throws ViTQuantException starting with <paramref name="source"/> on invalid JSON or values.
    /// </summary>
    public static IModelConfig FromJson(string json, string source)
    {
        bool swin;
        try
        {
            using var doc = JsonDocument.Parse(json);
            swin = doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("Depths", out _);
        }
        catch (JsonException e) { throw new ViTQuantException($"{source}: model config is not valid JSON ({e.Message})"); }
        return swin ? SwinConfig.FromJson(json, source) : ViTConfig.FromJson(json, source);
    }

    /// <summary>A known architecture of either family by name (ViT/DeiT names, Swin names, our Fashion-MNIST models).</summary>
    public static IModelConfig FromArchitecture(string name)
    {
        if (SwinConfig.KnownArchitectures.Contains(name)) return SwinConfig.FromArchitecture(name);
        if (ViTConfig.KnownArchitectures.Contains(name)) return ViTConfig.FromArchitecture(name);
        throw new ViTQuantException($"unknown architecture '{name}' (known: {string.Join(", ", KnownArchitectures)})");
    }

    /// <summary>Every architecture name <see cref="FromArchitecture"/> knows.</summary>
    public static IEnumerable<string> KnownArchitectures => ViTConfig.KnownArchitectures.Concat(SwinConfig.KnownArchitectures);
}

/// <summary>A classifier of any of our families: ViT/DeiT or Swin.</summary>
public abstract class VisionModel : Module
{
    /// <summary>The model's validated configuration.</summary>
    public abstract IModelConfig Config { get; }

    /// <summary>Logits [B, classes] for normalised images [B, C, H, W]. Throws ArgumentException on a wrong input shape.</summary>
    public abstract Tensor Forward(Tensor x, IModelHooks? hooks = null);

    /// <summary>
    /// Logits exactly as <see cref="Forward"/> computes them, gradients off; an architecture may recycle its
    /// temporaries stage by stage (hooks must then copy what they keep). Without hooks, or with hooks that act on each
    /// image alone (IImageLocalHooks: a calibrated quantized model's static fake quantizers), the batch runs in chunks
    /// of a few images, each chunk's whole forward on one worker (<see cref="ChunkCount"/>), with the same logits bit
    /// for bit. Throws ArgumentException on a wrong input shape.
    /// </summary>
    public virtual Tensor Infer(Tensor x, IModelHooks? hooks = null)
    {
        bool chunkable = hooks == null || hooks is IImageLocalHooks { ImageLocal: true };
        if (chunkable && FitsInput(x) && ChunkCount(x.Shape[0]) is > 0 and var chunks) return InferChunks(x, hooks, chunks);
        return InferBatch(x, hooks);
    }

    /// <summary>True when x is a batch of images [B, C, H, W] of the config's channels and size.</summary>
    private protected bool FitsInput(Tensor x)
    {
        var c = Config;
        return x.Rank == 4 && x.Shape[1] == c.InChans && x.Shape[2] == c.ImageSize && x.Shape[3] == c.ImageSize;
    }

    /// <summary>Throws ArgumentException unless <see cref="FitsInput"/>.</summary>
    private protected void CheckInput(Tensor x)
    {
        var c = Config;
        if (!FitsInput(x))
            throw new ArgumentException($"model expects images [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}], got {Tensor.ShapeString(x.Shape)}");
    }

    /// <summary><see cref="Infer"/> on the whole batch at once: by default <see cref="Forward"/> without gradients.</summary>
    private protected virtual Tensor InferBatch(Tensor x, IModelHooks? hooks)
    {
        using var _ = Autograd.NoGrad();
        return Forward(x, hooks);
    }

    /// <summary>
    /// Bytes of the largest activation of one image's forward (what a chunk of images must keep in L2); 0 (the default,
    /// and any model whose ops may mix images) keeps <see cref="Infer"/> on the whole batch.
    /// </summary>
    private protected virtual long ActivationBytesPerImage => 0;

    /// <summary>
    /// Bytes of the largest activation of a chunk of images that <see cref="Infer"/> aims at: about half the L2 of the
    /// cores measured (1 MB on Zen 4, 1.25 MB on Ice Lake, 2 MB on Sapphire Rapids), so a chunk's activations stay
    /// in its core's L2 from one op to the next.
    /// </summary>
    private const int ChunkBytes = 640 * 1024;

    /// <summary>
    /// Images per chunk for <see cref="Infer"/> from this thread: 0 the rule of <see cref="ChunkCount"/>, a negative
    /// count the whole batch at once (tests and same-process A/B benchmarks; the last chunk may be shorter).
    /// </summary>
    internal static int ChunkOverride { get => _chunkOverride; set => _chunkOverride = value; }

    [ThreadStatic] private static int _chunkOverride;

    /// <summary>
    /// Chunks of images for <see cref="Infer"/> (and MimiQ's synthesis on a ViT) of <paramref name="batch"/>
    /// images, or 0 for the whole batch at once. A chunk's activations then stay in its core's L2 from op to op
    /// instead of streaming through L3 at batch size, and the workers meet once per batch instead of at every op.
    /// The rule: a chunk's largest activation within ChunkBytes, and with several workers at least one chunk each,
    /// as many for each as the batch allows (a batch under two images a worker keeps the op-by-op split). Not inside
    /// a parallel body (the batch is then one piece of someone's parallel work), nor under the row kernels'
    /// thread-local test switches, nor where OpenBLAS is the GEMM (a CPU without the managed kernels' AVX2: inside a
    /// worker the GEMM would be the portable managed one, with other bits).
    /// </summary>
    internal int ChunkCount(int batch)
    {
        if (!MayChunk(batch)) return 0;
        int images = ImagesPerChunk(batch), chunks = (batch + images - 1) / images, workers = Parallelism.Threads;
        if (_chunkOverride == 0 && workers > 1)
        {
            if (batch < 2 * workers) return 0;
            chunks = Math.Min(batch, (Math.Max(chunks, workers) + workers - 1) / workers * workers);
        }
        return chunks > 1 ? chunks : 0;
    }

    // The override's images a chunk, or as many as ChunkBytes holds.
    private int ImagesPerChunk(int batch) => _chunkOverride > 0 ? _chunkOverride : (int)Math.Clamp(ChunkBytes / ActivationBytesPerImage, 1, batch);

    private bool MayChunk(int batch) => batch >= 2 && ActivationBytesPerImage > 0 && _chunkOverride >= 0 && !Parallelism.InsideParallelBody
        && !RowSimd.ForceNarrow && !GeluKernel.ForceDoublePath && !Gemm.UsesOpenBlas;

    /// <summary>
    /// Bytes of parameter gradients that the chunks of one <see cref="ForwardBackward"/> may hold between them (each
    /// chunk sums its own; the shipped model's 805,130 parameters take 3.2 MB a chunk).
    /// </summary>
    private const long ChunkGradientBytes = 64L << 20;

    /// <summary>
    /// Chunks for <see cref="ForwardBackward"/> of <paramref name="batch"/> images when <paramref name="gradientFloats"/>
    /// parameter elements take gradients, or 0 for the whole batch at once. With no parameter gradients (an input
    /// gradient) the chunks change no bits and <see cref="ChunkCount"/>'s rule holds. With them the count decides how the
    /// weight gradients are summed, so it depends on the batch and the model alone, never on the thread count: a chunk's
    /// largest activation within ChunkBytes, and all chunks' gradient copies within ChunkGradientBytes.
    /// </summary>
    internal int BackwardChunkCount(int batch, long gradientFloats)
    {
        if (gradientFloats == 0) return ChunkCount(batch);
        if (!MayChunk(batch)) return 0;
        int images = ImagesPerChunk(batch);
        long chunks = (batch + images - 1) / images;
        if (_chunkOverride == 0) chunks = Math.Min(chunks, ChunkGradientBytes / (gradientFloats * sizeof(float)));
        return chunks > 1 ? (int)chunks : 0;
    }

    /// <summary>
    /// One forward and backward of <paramref name="loss"/> on the logits of <paramref name="x"/> [B, C, H, W]: gradients
    /// accumulate into the parameters that require them and into x when it requires them, as
    /// <c>loss(Forward(x), 0).Backward()</c> would. Returns the logits (no graph) and the loss value.
    /// <para>
    /// The batch may run in chunks of a few images (<see cref="BackwardChunkCount"/>), each chunk's forward and backward
    /// on one worker, with its activations in its core's L2. <paramref name="loss"/> is then called once a chunk, maybe
    /// on several threads at once, with the chunk's logits and the index of its first image in the batch: it must add
    /// a term per image and divide by the whole batch (<c>Ops.CrossEntropy(logits, labels[first..(first + n)],
    /// meanOver: B)</c>). x's gradient and the logits are the whole batch's bits; the parameters' gradients are summed
    /// chunk by chunk in order (the same bits at any thread count, not the whole batch's: rounding differs) and the
    /// loss value is the sum of the chunks'.
    /// </para>
    /// </summary>
    public (Tensor Logits, float Loss) ForwardBackward(Tensor x, Func<Tensor, int, Tensor> loss)
    {
        ArgumentNullException.ThrowIfNull(loss);
        if (!Autograd.IsEnabled) throw new InvalidOperationException("ForwardBackward inside a NoGrad scope");
        long gradientFloats = 0;
        foreach (var p in Parameters()) if (p.RequiresGrad) gradientFloats += p.Size;
        int chunks = FitsInput(x) && x.IsLeaf ? BackwardChunkCount(x.Shape[0], gradientFloats) : 0;
        if (chunks == 0)
        {
            var logits = Forward(x);
            var l = loss(logits, 0);
            l.Backward();
            return (logits.Detach(), l.Item());
        }
        return ForwardBackwardChunks(x, loss, chunks);
    }

    // Each chunk's own parameter gradients (ChunkGradients) and the packed weights the chunks share, kept with their
    // buffers from step to step; taken by one call at a time (a concurrent call makes its own).
    private ChunkGradients[]? _chunkGradients;
    private PackedWeightCache? _packedWeights;

    private (Tensor Logits, float Loss) ForwardBackwardChunks(Tensor x, Func<Tensor, int, Tensor> loss, int chunks)
    {
        int batch = x.Shape[0], per = x.Size / batch, classes = Config.NumClasses;
        var grads = Interlocked.Exchange(ref _chunkGradients, null) ?? [];
        var packedWeights = Interlocked.Exchange(ref _packedWeights, null) ?? new PackedWeightCache();
        if (grads.Length < chunks)
        {
            int had = grads.Length;
            Array.Resize(ref grads, chunks);
            for (int i = had; i < chunks; i++) grads[i] = new ChunkGradients();
        }
        var logits = Tensor.OutputUninitialized(batch, classes);
        var values = new float[chunks];
        bool inputGrad = x.RequiresGrad, freshInput = false;
        if (inputGrad) x.GradSpanForOverwrite(out freshInput);
        float[]? gx = x.Grad?.Data;
        float[] output = logits.Data;
        // No weight changes until the backward is done, so each Linear weight is packed once for all chunks, into the
        // buffers of the last call.
        using (WeightPacking.Freeze(packedWeights))
        {
            var packed = WeightPacking.ShareWithWorkers();
            try { Parallelism.For(0, chunks, Chunk); }
            catch (AggregateException e) { ExceptionDispatchInfo.Capture(e.Flatten().InnerExceptions[0]).Throw(); } // as the whole batch throws it

            void Chunk(int i)
            {
                using var adopted = WeightPacking.Adopt(packed);
                using var scope = TensorArena.Scope();
                var xi = ChunkOfImages(x, i, chunks, out int first);
                int count = xi.Shape[0];
                xi.RequiresGrad = inputGrad;
                using (grads[i].Enter(xi))
                {
                    var li = Forward(xi);
                    var l = loss(li, first);
                    l.Backward();
                    values[i] = l.Item();
                    li.Span.CopyTo(output.AsSpan(first * classes, count * classes));
                    if (inputGrad)
                    {
                        var g = xi.Grad!.Span;
                        var dst = gx.AsSpan(first * per, count * per);
                        if (freshInput) g.CopyTo(dst);
                        else System.Numerics.Tensors.TensorPrimitives.Add(dst, g, dst);
                    }
                }
            }
        }
        ChunkGradients.Reduce(grads[..chunks]);
        (_chunkGradients, _packedWeights) = (grads, packedWeights);
        double sum = 0;
        foreach (float v in values) sum += v;
        return (logits, (float)sum);
    }

    /// <summary>
    /// <see cref="InferBatch"/> on <paramref name="chunks"/> chunks of the batch (their sizes differ by one at most), one
    /// worker per chunk running the chunk's whole forward alone (inside a WeightPacking.Freeze() scope with the caller's
    /// packed weights); the logits are copied into one [B, classes] tensor of the caller's scope. Every op works per
    /// image or per row, so they are the whole batch's bits.
    /// </summary>
    private Tensor InferChunks(Tensor x, IModelHooks? hooks, int chunks)
    {
        int batch = x.Shape[0], classes = Config.NumClasses;
        var logits = Tensor.OutputUninitialized(batch, classes);
        float[] output = logits.Data;
        var packed = WeightPacking.ShareWithWorkers();
        Parallelism.For(0, chunks, i =>
        {
            using var adopted = WeightPacking.Adopt(packed);
            using var scope = TensorArena.Scope();
            var xi = ChunkOfImages(x, i, chunks, out int first);
            InferBatch(xi, hooks).Span.CopyTo(output.AsSpan(first * classes, xi.Shape[0] * classes));
        });
        return logits;
    }

    /// <summary>
    /// Chunk <paramref name="i"/> of <paramref name="chunks"/> of x's images (sizes differ by one at most), copied into
    /// the calling thread's arena scope, and the index of its first image in x.
    /// </summary>
    internal static Tensor ChunkOfImages(Tensor x, int i, int chunks, out int first)
    {
        int batch = x.Shape[0], per = x.Size / batch;
        first = (int)((long)i * batch / chunks);
        int count = (int)((long)(i + 1) * batch / chunks) - first;
        var shape = (int[])x.Shape.Clone();
        shape[0] = count;
        var xi = Tensor.OutputUninitialized(shape);
        x.Data.AsSpan(first * per, count * per).CopyTo(xi.Span);
        return xi;
    }

    /// <summary>An independent copy (same config, copied parameters).</summary>
    public abstract VisionModel Clone();

    /// <summary>Multiply–accumulate count of one image's forward pass.</summary>
    public abstract long MacsPerImage();

    /// <summary>
    /// This model as a ViT/DeiT for a feature that has no Swin path yet; otherwise a ViTQuantException saying so
    /// in one line (the CLI prints it as `vitq: error: …`).
    /// </summary>
    public VisionTransformer RequireViT(string feature) => this as VisionTransformer
        ?? throw new ViTQuantException($"{feature} supports ViT/DeiT models only, not yet Swin ({Config.Architecture})");

    /// <summary>A fresh model of the config's family with timm's initialisation drawn from the seed.</summary>
    public static VisionModel Create(IModelConfig config, ulong seed = 0) => config switch
    {
        ViTConfig v => new VisionTransformer(v, seed),
        SwinConfig s => new SwinTransformer(s, seed),
        _ => throw new ArgumentException($"unknown model config type {config.GetType().Name}", nameof(config)),
    };
}
