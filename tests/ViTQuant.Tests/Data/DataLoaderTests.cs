using ViTQuant.Data;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Data;

public class DataLoaderTests
{
    // Pixel k of image i encodes i, so a batch row reveals which image it holds.
    private static FunctionDataset Numbered(int count, int c = 1, int h = 4, int w = 4, Func<int, int>? jitter = null, int failAt = -1)
        => new(count, c, h, w, (i, k) => i + k * 1e-3f) { Jitter = jitter, FailAt = failAt };

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void AnEpochVisitsEveryImageExactlyOnce(bool shuffle, bool dropLast)
    {
        var ds = Numbered(103);
        var loader = new DataLoader(ds, 10, shuffle, seed: 4, dropLast: dropLast);
        Assert.Equal(dropLast ? 10 : 11, loader.BatchCount);
        var seen = new List<int>();
        int batches = 0;
        foreach (var b in loader.Epoch(0))
        {
            batches++;
            Assert.Equal(new[] { b.Size, 1, 4, 4 }, b.Images.Shape);
            for (int r = 0; r < b.Size; r++)
            {
                Assert.Equal(b.Indices[r], (int)Math.Round(b.Images.Data[r * 16]));   // the row holds that image
                Assert.Equal(ds.Label(b.Indices[r]), b.Labels[r]);
            }
            seen.AddRange(b.Indices);
        }
        Assert.Equal(loader.BatchCount, batches);
        Assert.Equal(dropLast ? 100 : 103, seen.Count);
        Assert.Equal(seen.Count, seen.Distinct().Count());
        if (!dropLast) Assert.Equal(Enumerable.Range(0, 103), seen.Order());
        if (!shuffle) Assert.Equal(Enumerable.Range(0, 103), seen);
        else Assert.NotEqual(Enumerable.Range(0, seen.Count), seen);
    }

    [Fact]
    public void SameSeedGivesIdenticalBatchesWhateverTheTiming()
    {
        // Index-dependent stalls reorder which worker finishes first; results must not change.
        var ds = new FunctionDataset(48, 3, 8, 8, (i, k) => ((i * 31 + k * 7) % 97) / 97f) { Jitter = i => (i * 7919) % 4 * 20000 };
        var aug = Transforms.PadCropFlip(2);
        float[] mean = { 0.5f, 0.4f, 0.3f }, std = { 0.2f, 0.25f, 0.3f };
        var a = new DataLoader(ds, 8, shuffle: true, seed: 99, augment: aug, mean: mean, std: std, prefetch: 2).Epoch(3).ToList();
        var b = new DataLoader(ds, 8, shuffle: true, seed: 99, augment: aug, mean: mean, std: std, prefetch: 0).Epoch(3).ToList();
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Indices, b[i].Indices);
            Assert.Equal(a[i].Labels, b[i].Labels);
            Assert.Equal(a[i].Images.ToArray(), b[i].Images.ToArray());
        }
        var other = new DataLoader(ds, 8, shuffle: true, seed: 99, augment: aug, mean: mean, std: std).Epoch(4).First();
        Assert.NotEqual(a[0].Indices, other.Indices); // a new epoch reshuffles
        var otherSeed = new DataLoader(ds, 8, shuffle: true, seed: 100, augment: aug, mean: mean, std: std).Epoch(3).First();
        Assert.NotEqual(a[0].Indices, otherSeed.Indices);
    }

    [Fact]
    public void AugmentationDependsOnTheImageNotItsPositionInTheEpoch()
    {
        var ds = new FunctionDataset(20, 1, 6, 6, (i, k) => (i + 1) * 0.01f + k * 0.02f);
        var aug = Transforms.PadCropFlip(2);
        Tensor Row(Batch b, int r) => Tensor.FromArray(b.Images.Data.AsSpan(r * 36, 36), 36);
        var ordered = new DataLoader(ds, 20, shuffle: false, seed: 5, augment: aug).Epoch(1).Single();
        var shuffled = new DataLoader(ds, 7, shuffle: true, seed: 5, augment: aug).Epoch(1).ToList();
        int differsFromPlain = 0;
        foreach (var b in shuffled)
            for (int r = 0; r < b.Size; r++)
            {
                int idx = b.Indices[r];
                Assert.Equal(Row(ordered, idx).ToArray(), Row(b, r).ToArray());
                if (!Row(b, r).ToArray().SequenceEqual(ds.GetImageTensor(idx).ToArray())) differsFromPlain++;
            }
        Assert.True(differsFromPlain > 10, "the augmentation should change most images");
    }

    [Fact]
    public void ImagesAreNormalisedPerChannel()
    {
        var ds = new FunctionDataset(3, 2, 2, 2, (i, k) => k < 4 ? 0.5f : 0.9f);
        var b = new DataLoader(ds, 3, mean: new[] { 0.5f, 0.1f }, std: new[] { 0.25f, 0.4f }).Epoch(0).Single();
        for (int r = 0; r < 3; r++)
        {
            Assert.All(b.Images.Data.AsSpan(r * 8, 4).ToArray(), v => Assert.Equal(0f, v));
            Assert.All(b.Images.Data.AsSpan(r * 8 + 4, 4).ToArray(), v => Assert.Equal(2f, v, 6));
        }
        Assert.Throws<ArgumentException>(() => new DataLoader(ds, 3, mean: new[] { 0f, 0f, 0f }));
        Assert.Throws<ArgumentException>(() => new DataLoader(ds, 0));
    }

    [Fact]
    public void LoadErrorsReachTheConsumerUnwrapped()
    {
        var ds = Numbered(40, failAt: 17);
        foreach (int prefetch in new[] { 0, 2 })
        {
            var loader = new DataLoader(ds, 8, prefetch: prefetch);
            int got = 0;
            var e = Assert.Throws<ViTQuantException>(() => { foreach (var _ in loader.Epoch(0)) got++; });
            Assert.Contains("17", e.Message);
            Assert.Equal(2, got); // batches 0 and 1 arrive; batch 2 holds image 17
        }
    }

    [Fact]
    public void BreakingEarlyStopsTheProducer()
    {
        var ds = Numbered(4000, jitter: _ => 2000);
        var loader = new DataLoader(ds, 4, prefetch: 2);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var first = loader.Epoch(0).Take(2).ToList();
        Assert.Equal(new[] { 4, 5, 6, 7 }, first[1].Indices);
        // Disposing the enumerator cancels and joins the producer; it must not run on to 1,000 batches.
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5));
    }

    [Fact]
    public void SubsetHelpers()
    {
        var ds = Numbered(50);
        var first = ds.First(5);
        Assert.Equal(5, first.Count);
        Assert.Equal(4, (int)Math.Round(first.GetImageTensor(4).Data[0]));
        Assert.Equal(50, ds.First(500).Count);

        var r1 = (SubsetDataset)ds.RandomSubset(12, seed: 3);
        var r2 = (SubsetDataset)ds.RandomSubset(12, seed: 3);
        var r3 = (SubsetDataset)ds.RandomSubset(12, seed: 4);
        var i1 = Enumerable.Range(0, 12).Select(r1.SourceIndex).ToArray();
        Assert.Equal(i1, Enumerable.Range(0, 12).Select(r2.SourceIndex));
        Assert.NotEqual(i1, Enumerable.Range(0, 12).Select(r3.SourceIndex));
        Assert.Equal(12, i1.Distinct().Count());
        Assert.Equal(i1.Order(), i1);
        Assert.Equal(ds.Label(i1[5]), r1.Label(5));
        Assert.Equal(50, ds.RandomSubset(50, 1).Count);

        var picked = ds.Subset(new[] { 7, 7, 2 });
        Assert.Equal(new[] { 7, 7, 2 }, Enumerable.Range(0, 3).Select(picked.Label));
        Assert.Throws<ArgumentOutOfRangeException>(() => ds.Subset(new[] { 50 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => ds.RandomSubset(51, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => picked.Label(3));
    }
}
