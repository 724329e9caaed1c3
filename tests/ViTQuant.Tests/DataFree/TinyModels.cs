// A tiny random ViT for the synthesis tests: 8×8 grey images, patch 2 (4×4 grid + class token),
// width 16, 4 heads, 2 blocks — small enough for dozens of synthesis steps in well under a second.
using ViTQuant.Models;

namespace ViTQuant.Tests.DataFree;

internal static class TinyModels
{
    public static ViTConfig Config(int imageSize = 8, int heads = 4) => new ViTConfig
    {
        Architecture = "vit_tiny_test", ImageSize = imageSize, PatchSize = 2, InChans = 1, NumClasses = 5,
        EmbedDim = 16, Depth = 2, NumHeads = heads, MlpRatio = 2f, Mean = new[] { 0.3f }, Std = new[] { 0.4f }, CropPct = 1f,
    }.Validated();

    public static VisionTransformer Model(ulong seed = 1, int imageSize = 8, int heads = 4) => new(Config(imageSize, heads), seed);

    /// <summary>
    /// A tiny model whose heads are partly aligned, as a trained ViT's are: in every block each head's q
    /// and k projections are head 0's plus <paramref name="own"/> times their own random weights. On such
    /// a model, raising head agreement means raising the (signed) SSIM; on a purely random one L_IHC can
    /// also be lowered by making heads anti-correlated (SSIM → −1), which the similarity statistic does not reward.
    /// </summary>
    public static VisionTransformer AlignedHeads(ulong seed = 5, float own = 0.5f)
    {
        var m = Model(seed);
        int D = m.Config.EmbedDim, dh = m.Config.HeadDim;
        foreach (var b in m.Blocks)
        {
            var w = b.Qkv.Weight.Data; // [3D, D]: q rows, then k rows, then v rows
            for (int part = 0; part < 2; part++)
                for (int h = 1; h < m.Config.NumHeads; h++)
                    for (int r = 0; r < dh; r++)
                        for (int c = 0; c < D; c++)
                            w[(part * D + h * dh + r) * D + c] = w[(part * D + r) * D + c] + own * w[(part * D + h * dh + r) * D + c];
        }
        return m;
    }

    /// <summary>A fresh temporary directory (deleted by the caller's Dispose).</summary>
    public sealed class TempDir : IDisposable
    {
        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "vitq-synth-" + Guid.NewGuid().ToString("N"));

        public TempDir() => Directory.CreateDirectory(Path);

        public string File(string name) => System.IO.Path.Combine(Path, name);

        public void Dispose()
        {
            try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
        }
    }
}
