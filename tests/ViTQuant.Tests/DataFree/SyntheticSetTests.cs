// Synthetic-set files: an interrupted and resumed run equals an uninterrupted one byte for byte,
// shards are validated, NaN batches are redrawn, and bad inputs fail with a ViTQuantException.
using ViTQuant.Algorithms.DataFree;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.DataFree;

public class SyntheticSetTests
{
    private static readonly SynthesisSettings Small = SynthesisSettings.For("mimiq") with { Count = 5, BatchSize = 2, Iterations = 3, Seed = 9 };

    [Fact]
    public void InterruptedThenResumedRunEqualsAnUninterruptedOne()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model();
        string full = dir.File("full.safetensors"), split = dir.File("split.safetensors");

        var a = SynthesisRunner.Run(model, Small, full, resume: false);
        Assert.True(a.Complete);
        Assert.Equal(3, a.BatchesMade);

        var first = SynthesisRunner.Run(model, Small, split, resume: false, maxNewBatches: 2);
        Assert.False(first.Complete);
        Assert.False(File.Exists(split));
        Assert.True(File.Exists(SynthesisRunner.ShardPath(split, 0)));
        Assert.True(File.Exists(SynthesisRunner.ShardPath(split, 1)));
        Assert.False(File.Exists(SynthesisRunner.ShardPath(split, 2)));
        // Without --resume the leftover shards are refused rather than silently reused or clobbered.
        var refused = Assert.Throws<ViTQuantException>(() => SynthesisRunner.Run(model, Small, split, resume: false));
        Assert.Contains("--resume", refused.Message);

        var second = SynthesisRunner.Run(model, Small, split, resume: true);
        Assert.True(second.Complete);
        Assert.Equal(1, second.BatchesMade);
        Assert.Equal(2, second.BatchesResumed);
        Assert.Equal(File.ReadAllBytes(full), File.ReadAllBytes(split));
        Assert.False(Directory.Exists(SynthesisRunner.ShardDirectory(split)));

        var set = SyntheticSet.Load(split, model.Config);
        Assert.Equal(new[] { 5, 1, 8, 8 }, set.Images.Shape);
        Assert.Equal(5, set.Labels.Length);
        Assert.Equal(Small, set.Settings);
        Assert.Equal(3, set.Batches.Count);
        Assert.All(set.Batches, b => Assert.True(b.Losses.Ihc is double v && double.IsFinite(v)));
        Assert.Equal(SyntheticSet.ModelFingerprint(model), set.ModelHash);
        Assert.Equal("mimiq", set.Metadata[SyntheticSet.MethodKey]);

        // Batch b depends on (seed, b) only: the last (smaller) batch equals a direct synthesis with its seed.
        var direct = Synthesis.Create(Small).Generate(model, 1, new Rng(SynthesisRunner.BatchSeed(Small.Seed, 2, 0)));
        Assert.Equal(direct.Images.ToArray(), set.Images.ToArray()[(4 * 64)..]);
        Assert.Equal(direct.Labels[0], set.Labels[4]);

        var again = Assert.Throws<ViTQuantException>(() => SynthesisRunner.Run(model, Small, full, resume: true));
        Assert.Contains("refusing to overwrite", again.Message);
    }

    [Fact]
    public void ResumeRejectsShardsOfOtherSettingsOtherModelsAndCorruptShards()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model();
        var gauss = SynthesisSettings.For("gaussian") with { Count = 6, BatchSize = 2, Seed = 1 };
        string outPath = dir.File("set.safetensors");
        SynthesisRunner.Run(model, gauss, outPath, resume: false, maxNewBatches: 2);

        var otherSeed = Assert.Throws<ViTQuantException>(() => SynthesisRunner.Run(model, gauss with { Seed = 2 }, outPath, resume: true));
        Assert.Contains(SynthesisRunner.ShardPath(outPath, 0), otherSeed.Message);
        Assert.Contains("different settings", otherSeed.Message);

        var otherModel = Assert.Throws<ViTQuantException>(() => SynthesisRunner.Run(TinyModels.Model(seed: 2), gauss, outPath, resume: true));
        Assert.Contains("different model", otherModel.Message);

        string shard1 = SynthesisRunner.ShardPath(outPath, 1);
        var bytes = File.ReadAllBytes(shard1);
        File.WriteAllBytes(shard1, bytes[..(bytes.Length - 7)]); // truncated: the data runs past the end
        var corrupt = Assert.Throws<ViTQuantException>(() => SynthesisRunner.Run(model, gauss, outPath, resume: true));
        Assert.Contains(shard1, corrupt.Message);
        Assert.False(File.Exists(outPath));

        // Deleting the bad shard lets the resume remake just that batch.
        File.Delete(shard1);
        var done = SynthesisRunner.Run(model, gauss, outPath, resume: true);
        Assert.Equal(2, done.BatchesMade);
        Assert.Equal(1, done.BatchesResumed);
        Assert.Equal(6, SyntheticSet.Load(outPath).Count);
    }

    /// <summary>Diverges on its first <c>failures</c> calls, then behaves like the Gaussian synthesizer.</summary>
    private sealed class FlakySynthesizer(int failures) : IImageSynthesizer
    {
        private int _failed;
        public int Iterations => 1;

        public SyntheticBatch Generate(VisionModel model, int count, Rng rng, Action<int, SynthesisLosses>? onIteration = null)
        {
            if (_failed < failures)
            {
                _failed++;
                throw new SynthesisDivergedException("NaN (test)");
            }
            return new GaussianSynthesizer().Generate(model, count, rng, onIteration);
        }
    }

    [Fact]
    public void DivergingBatchesAreRedrawnWithTheNextSeedAndEventuallyRefused()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model();
        var s = SynthesisSettings.For("gaussian") with { Count = 2, BatchSize = 2, MaxAttempts = 3 };
        var r = SynthesisRunner.Run(model, s, dir.File("a.safetensors"), resume: false, synthesizer: new FlakySynthesizer(2));
        Assert.Equal(3, r.Batches[0].Attempts);
        var set = SyntheticSet.Load(dir.File("a.safetensors"));
        var expect = new GaussianSynthesizer().Generate(model, 2, new Rng(SynthesisRunner.BatchSeed(0, 0, 2)));
        Assert.Equal(expect.Images.ToArray(), set.Images.ToArray());
        Assert.Equal(3, set.Batches[0].Attempts);

        var e = Assert.Throws<ViTQuantException>(() =>
            SynthesisRunner.Run(model, s, dir.File("b.safetensors"), resume: false, synthesizer: new FlakySynthesizer(3)));
        Assert.Contains("diverged in all 3 attempts", e.Message);
    }

    [Fact]
    public void LoadChecksShapesAgainstTheModelAndRejectsBadFiles()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model();
        string path = dir.File("set.safetensors");
        SynthesisRunner.Run(model, SynthesisSettings.For("gaussian") with { Count = 3, BatchSize = 3 }, path, resume: false);

        var big = TinyModels.Config(imageSize: 16);
        var mismatch = Assert.Throws<ViTQuantException>(() => SyntheticSet.Load(path, big));
        Assert.Contains("[1, 8, 8]", mismatch.Message);
        Assert.Contains("[1, 16, 16]", mismatch.Message);
        Assert.Contains(path, mismatch.Message);

        // An empty set, hand-made with otherwise valid metadata.
        var meta = new Dictionary<string, string>(SyntheticSet.Load(path).Metadata);
        string empty = dir.File("empty.safetensors");
        SafeTensorsWriter.Write(empty, new[]
        {
            SafeTensorsEntry.FromTensor("images", new Tensor(0, 1, 8, 8)),
            SafeTensorsEntry.FromInt32("labels", Array.Empty<int>(), 0),
        }, meta);
        Assert.Contains("empty", Assert.Throws<ViTQuantException>(() => SyntheticSet.Load(empty)).Message);

        // Inconsistent counts: 3 images, 2 labels.
        string counts = dir.File("counts.safetensors");
        SafeTensorsWriter.Write(counts, new[]
        {
            SafeTensorsEntry.FromTensor("images", new Tensor(3, 1, 8, 8)),
            SafeTensorsEntry.FromInt32("labels", new[] { 0, 1 }, 2),
        }, meta);
        Assert.Contains("2 labels for 3 images", Assert.Throws<ViTQuantException>(() => SyntheticSet.Load(counts)).Message);

        // A model file is not a set.
        string modelFile = dir.File("model.safetensors");
        ModelIO.Save(model, modelFile);
        Assert.Contains("vitq-float/1", Assert.Throws<ViTQuantException>(() => SyntheticSet.Load(modelFile)).Message);

        // Garbage bytes.
        string junk = dir.File("junk.safetensors");
        File.WriteAllBytes(junk, new byte[] { 1, 2, 3 });
        Assert.Contains(junk, Assert.Throws<ViTQuantException>(() => SyntheticSet.Load(junk)).Message);
    }

    [Fact]
    public void ASetIsADatasetOfUnitRangePixelsAndRenormalisesForOtherModels()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model();
        string path = dir.File("set.safetensors");
        SynthesisRunner.Run(model, SynthesisSettings.For("gaussian") with { Count = 4, BatchSize = 4 }, path, resume: false);
        var set = SyntheticSet.Load(path, model.Config);
        var img = new float[64];
        set.GetImage(1, img);
        Assert.All(img, v => Assert.InRange(v, 0f, 1f));
        Assert.Equal(set.Images[1, 0, 2, 3] * 0.4f + 0.3f, img[2 * 8 + 3], 5);
        Assert.Equal(set.Labels[3], set.Label(3));

        var other = model.Config with { Mean = new[] { 0.5f }, Std = new[] { 0.25f } };
        var renorm = set.ImagesFor(other);
        Assert.Equal((img[2 * 8 + 3] - 0.5f) / 0.25f, renorm[1, 0, 2, 3], 4);
        Assert.Same(set.Images, set.ImagesFor(model.Config));
    }
}
