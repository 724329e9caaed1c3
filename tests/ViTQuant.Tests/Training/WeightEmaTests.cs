// The weight EMA of `vitq train --ema`: the update against the formula in double precision, swapping in
// and out, and a trainer interrupted after one epoch and resumed ends with the same live and averaged
// weights as an uninterrupted run.
using ViTQuant.Algorithms.Training;
using ViTQuant.Data;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.Models;

namespace ViTQuant.Tests.Training;

public class WeightEmaTests
{
    private static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 1, NumHeads = 2, MlpRatio = 2f };

    /// <summary>Random 28×28 images whose label is the brightest quadrant's index: learnable in a few steps.</summary>
    private sealed class QuadrantDataset(int count, ulong seed) : IImageDataset
    {
        private readonly float[][] _images = Enumerable.Range(0, count).Select(i => Tensor.Uniform(new Rng(seed + (ulong)i), 0f, 1f, 1, 28, 28).ToArray()).ToArray();
        public int Count => count;
        public int Channels => 1;
        public int Height => 28;
        public int Width => 28;
        public int NumClasses => 10;
        public IReadOnlyList<string> ClassNames { get; } = Enumerable.Range(0, 10).Select(i => i.ToString()).ToArray();
        public int Label(int index)
        {
            var img = _images[index];
            var sums = new double[4];
            for (int y = 0; y < 28; y++) for (int x = 0; x < 28; x++) sums[(y / 14) * 2 + x / 14] += img[y * 28 + x];
            return Array.IndexOf(sums, sums.Max());
        }
        public void GetImage(int index, Span<float> dst) { this.CheckGetImage(index, dst.Length); _images[index].CopyTo(dst); }
    }

    [Fact]
    public void UpdateFollowsTheFormulaAndSwapRestores()
    {
        var model = new VisionTransformer(Tiny, seed: 3);
        var ema = new WeightEma(model, 0.9f);
        var (name, p) = model.NamedParameters().First(x => x.Param.Size > 100);
        var expected = p.ToArray().Select(v => (double)v).ToArray();
        var rng = new Rng(7);
        for (int step = 0; step < 5; step++)
        {
            var noise = Tensor.Randn(rng, 0.1f, p.Shape);
            for (int i = 0; i < p.Size; i++)
            {
                p.Data[i] += noise.Data[i];
                expected[i] = 0.9 * expected[i] + 0.1 * p.Data[i];
            }
            ema.Update();
        }
        var live = p.ToArray();
        var avg = ema.State().Single(s => s.Name == name).Value.ToArray();
        for (int i = 0; i < avg.Length; i++) Assert.True(Math.Abs(expected[i] - avg[i]) < 1e-6 * (1 + Math.Abs(expected[i])), $"element {i}: {avg[i]} vs {expected[i]}");

        Assert.Equal(avg, ema.WithAveraged(() => p.ToArray()));
        Assert.Equal(live, p.ToArray()); // back to the live weights
        ema.Swap();
        Assert.Equal(avg, p.ToArray());
        ema.Swap();
        Assert.Equal(live, p.ToArray());

        Assert.Throws<ViTQuantException>(() => new WeightEma(model, 1f));
        Assert.Throws<ViTQuantException>(() => new TrainConfig { Epochs = 2, EmaDecay = -0.1f }.Validated());
    }

    [Fact]
    public void ResumedTrainingEndsWithTheSameLiveAndAveragedWeights()
    {
        var train = new QuadrantDataset(128, 1);
        var val = new QuadrantDataset(64, 1000);
        var cfg = new TrainConfig { Epochs = 2, BatchSize = 32, Lr = 3e-3f, WarmupEpochs = 0, CropPadding = 0, Flip = false, EmaDecay = 0.8f, Seed = 9 };
        using var dir = new TempDir();

        var full = new VisionTransformer(Tiny, seed: 4);
        var t1 = new Trainer(full, train, val, cfg);
        t1.Run(dir.File("full.resume.safetensors"));

        var part = new VisionTransformer(Tiny, seed: 4);
        string resume = dir.File("part.resume.safetensors");
        var t2 = new Trainer(part, train, val, cfg) { OnEpoch = _ => throw new OperationCanceledException("interrupted") };
        Assert.Throws<OperationCanceledException>(() => t2.Run(resume));
        var resumedModel = new VisionTransformer(Tiny, seed: 123); // other start: everything must come from the checkpoint
        var t3 = new Trainer(resumedModel, train, val, cfg);
        t3.Run(resume);

        Assert.Equal(2, t3.History.Count);
        Assert.Equal(t1.History.Select(h => (h.ValTop1, h.EmaValTop1, h.EmaValLoss)), t3.History.Select(h => (h.ValTop1, h.EmaValTop1, h.EmaValLoss)));
        Assert.All(t3.History, h => Assert.NotNull(h.EmaValLoss));
        var a = full.StateDict();
        foreach (var (n, t) in resumedModel.StateDict()) Assert.Equal(a[n].ToArray(), t.ToArray());
        var emaFull = t1.Ema!.State().ToDictionary(s => s.Name, s => s.Value.ToArray());
        foreach (var (n, t) in t3.Ema!.State()) Assert.Equal(emaFull[n], t.ToArray());
        // The average lags the live weights: it is not a copy of them.
        Assert.Contains(t3.Ema.State(), s => !s.Value.ToArray().SequenceEqual(a[s.Name].ToArray()));
    }
}
