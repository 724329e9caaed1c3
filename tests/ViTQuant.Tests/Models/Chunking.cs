// Runs code under a chosen chunking of VisionModel.Infer (and MimiQ's synthesis) and thread count, both restored after.
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Models;

internal static class Chunking
{
    /// <summary>A tiny Swin whose 10×10 patch map is padded to its 4×4 windows, with shifted windows in each stage's second block.</summary>
    public static SwinConfig OddSwin => new() { ImageSize = 20, PatchSize = 2, InChans = 3, NumClasses = 4, EmbedDim = 8, Depths = new[] { 2, 2 }, NumHeads = new[] { 2, 2 }, WindowSize = 4 };

    /// <summary>f() with VisionModel.ChunkOverride = <paramref name="chunk"/> (−1: the whole batch, 0: the rule) and, when given, that many threads.</summary>
    public static T With<T>(int chunk, Func<T> f, int? threads = null)
    {
        var saved = (Parallelism.Threads, VisionModel.ChunkOverride);
        if (threads is { } t) Parallelism.Threads = t;
        VisionModel.ChunkOverride = chunk;
        try { return f(); }
        finally { (Parallelism.Threads, VisionModel.ChunkOverride) = saved; }
    }

    /// <summary>The logits of <c>model.Infer(x, hooks)</c> in chunks of <paramref name="chunk"/> images (as <see cref="With"/>), in a scope of their own.</summary>
    public static float[] Infer(VisionModel model, Tensor x, int chunk, IModelHooks? hooks = null) => With(chunk, () =>
    {
        using (TensorArena.Scope()) return model.Infer(x, hooks).ToArray();
    });
}
