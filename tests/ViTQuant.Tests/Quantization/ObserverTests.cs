using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Quantization;

public class ObserverTests
{
    [Fact]
    public void GroupLayoutsFollowTheGranularity()
    {
        Assert.Equal(new GroupLayout(1, 24), GroupLayout.For(Granularity.PerTensor, new[] { 2, 3, 4 }));
        Assert.Equal(new GroupLayout(2, 12), GroupLayout.For(Granularity.PerChannel, new[] { 2, 3, 4 }));
        Assert.Equal(new GroupLayout(3, 4), GroupLayout.For(Granularity.PerToken, new[] { 2, 3, 4 }));
        var tok = GroupLayout.For(Granularity.PerToken, new[] { 2, 3, 4 });
        // element [b, t, c] = b·12 + t·4 + c belongs to token t
        Assert.Equal(2, tok.GroupOf(1 * 12 + 2 * 4 + 3));
        Assert.Equal(0, tok.GroupOf(1 * 12 + 0 * 4 + 1));
        Assert.Throws<ViTQuantException>(() => GroupLayout.For(Granularity.PerToken, new[] { 5 }));
        Assert.Throws<ViTQuantException>(() => GroupLayout.For(Granularity.PerTensor, new[] { 0, 3 }));
    }

    [Theory]
    [InlineData(Granularity.PerTensor)]
    [InlineData(Granularity.PerChannel)]
    [InlineData(Granularity.PerToken)]
    public void MinMaxIsExactOverManyBatches(Granularity granularity)
    {
        var rng = new Rng(3);
        var obs = new MinMaxObserver(granularity);
        var shape = new[] { 4, 7, 5 };
        var layout = GroupLayout.For(granularity, shape);
        var min = Enumerable.Repeat(float.PositiveInfinity, layout.Groups).ToArray();
        var max = Enumerable.Repeat(float.NegativeInfinity, layout.Groups).ToArray();
        for (int b = 0; b < 300; b++)
        {
            var x = Tensor.Randn(rng, 1f + b % 7, shape);
            if (b == 123) x.Data[17] = 1e4f; // a rare extreme must survive all later batches
            if (b == 200) x.Data[33] = float.NaN; // NaN is ignored
            obs.Observe(x);
            for (int i = 0; i < x.Size; i++)
            {
                int g = layout.GroupOf(i);
                if (x.Data[i] < min[g]) min[g] = x.Data[i];
                if (x.Data[i] > max[g]) max[g] = x.Data[i];
            }
        }
        Assert.Equal(min, obs.Min.ToArray());
        Assert.Equal(max, obs.Max.ToArray());
        Assert.Equal(1e4f, obs.GlobalMax);
        Assert.Equal(300L * 140, obs.Count);
    }

    [Fact]
    public void ObserversRejectAChangedGroupCount()
    {
        var mm = new MinMaxObserver(Granularity.PerToken);
        mm.Observe(Tensor.Zeros(2, 5, 3));
        Assert.Throws<ViTQuantException>(() => mm.Observe(Tensor.Zeros(2, 6, 3)));
        mm.Observe(Tensor.Zeros(7, 5, 9)); // batch and channels may change, the token count may not
        var rs = new ReservoirObserver(Granularity.PerChannel);
        rs.Observe(Tensor.Zeros(4, 3));
        Assert.Throws<ViTQuantException>(() => rs.Observe(Tensor.Zeros(5, 3)));
    }

    [Fact]
    public void ReservoirMemoryIsBoundedWhateverTheNumberOfBatches()
    {
        var rng = new Rng(5);
        var obs = new ReservoirObserver(Granularity.PerToken, capacityPerGroup: 512, seed: 9);
        for (int b = 0; b < 100; b++) obs.Observe(Tensor.Randn(rng, 1f, 8, 3, 64));
        Assert.Equal(3, obs.Groups);
        for (int t = 0; t < 3; t++)
        {
            Assert.Equal(512, obs.Sample(t).Length);
            Assert.Equal(100L * 8 * 64, obs.Seen(t));
            Assert.False(obs.IsExact(t));
        }
        Assert.Equal(3 * 512, obs.StoredCount);
    }

    [Fact]
    public void ReservoirIsExactWhileTheDataFits()
    {
        var rng = new Rng(6);
        var obs = new ReservoirObserver(Granularity.PerToken, capacityPerGroup: 64);
        var batches = Enumerable.Range(0, 4).Select(_ => Tensor.Randn(rng, 1f, 2, 3, 8)).ToArray(); // 4·2·8 = 64 per token
        foreach (var x in batches) obs.Observe(x);
        for (int t = 0; t < 3; t++)
        {
            var expected = new List<float>();
            foreach (var x in batches)
                for (int b = 0; b < 2; b++)
                    for (int c = 0; c < 8; c++) expected.Add(x[b, t, c]);
            Assert.True(obs.IsExact(t));
            Assert.Equal(expected, obs.Sample(t).ToArray());
        }
    }

    [Fact]
    public void ReservoirSampleIsUniformOverTheStream()
    {
        // Values 0..n−1 in arrival order: a uniform sample has mean ≈ n/2 and half its values from each
        // half of the stream; a reservoir that favoured early or late values would fail both.
        const int n = 200_000, k = 4000;
        var obs = new ReservoirObserver(Granularity.PerTensor, capacityPerGroup: k, seed: 1);
        for (int start = 0; start < n; start += 1000)
            obs.Observe(Tensor.FromArray(Enumerable.Range(start, 1000).Select(i => (float)i).ToArray(), 1000));
        var s = obs.Sample(0).ToArray();
        Assert.Equal(k, s.Length);
        Assert.Equal(s.Length, s.Distinct().Count());
        double mean = s.Average(v => (double)v);
        Assert.InRange(mean / n, 0.47, 0.53); // std of the mean ≈ 0.0046·n
        double firstHalf = s.Count(v => v < n / 2) / (double)k;
        Assert.InRange(firstHalf, 0.47, 0.53);
        double lastTenth = s.Count(v => v >= 0.9 * n) / (double)k;
        Assert.InRange(lastTenth, 0.08, 0.12);
        var sorted = obs.SortedSample(0);
        Assert.InRange(RangeSearch.Quantile(sorted, 0.5) / n, 0.46, 0.54);
    }

    [Fact]
    public void ReservoirIsDeterministicGivenTheSeed()
    {
        float[] Run(ulong seed)
        {
            var rng = new Rng(8);
            var obs = new ReservoirObserver(Granularity.PerTensor, capacityPerGroup: 300, seed: seed);
            for (int b = 0; b < 20; b++) obs.Observe(Tensor.Randn(rng, 1f, 500));
            return obs.Sample(0).ToArray();
        }
        Assert.Equal(Run(42), Run(42));
        Assert.NotEqual(Run(42), Run(43));
    }

    [Fact]
    public void ByDefaultEveryValueIsKeptAndClearFreesThem()
    {
        var obs = new ReservoirObserver(Granularity.PerToken);
        Assert.True(obs.KeepsEverything);
        var rng = new Rng(2);
        var all = new List<float>[4];
        for (int t = 0; t < 4; t++) all[t] = new List<float>();
        for (int b = 0; b < 12; b++)
        {
            var x = Tensor.Randn(rng, 1f, 16, 4, 48); // 9216 values per token in all, more than the old 4096 reservoir
            obs.Observe(x);
            for (int i = 0; i < x.Size; i++) all[i / 48 % 4].Add(x.Data[i]);
        }
        Assert.Equal(4 * 9216, obs.StoredCount);
        Assert.Equal(4 * 9216, obs.SeenCount);
        for (int t = 0; t < 4; t++)
        {
            Assert.True(obs.IsExact(t));
            Assert.Equal(all[t].OrderBy(v => v).ToArray(), obs.SortedSample(t));
        }
        obs.Clear();
        Assert.Equal(0, obs.Groups);
        Assert.Equal(0, obs.StoredCount);
    }

    // Percentile searches get the sample with only the order statistics the quantiles read in place
    // (both tails selected and sorted): every quantile they read equals the fully sorted sample's, and the
    // values are the same multiset. Sizes below, at and far above where the tails meet; heavy duplicates;
    // non-finite values take the full sort.
    [Theory]
    [InlineData(1, "gauss")]
    [InlineData(7, "gauss")]
    [InlineData(2_000, "gauss")]
    [InlineData(150_001, "gauss")]
    [InlineData(150_000, "dupes")]
    [InlineData(100_000, "nan")]
    public void PlacedQuantilesEqualTheSortedSamples(int n, string kind)
    {
        var rng = new Rng((ulong)n);
        var a = Tensor.Randn(rng, 1f, n).Data;
        for (int i = 0; i < n; i++)
        {
            if (kind == "dupes") a[i] = MathF.Round(a[i] * 2f) / 2f;
            if (kind == "nan" && i % 1000 == 7) a[i] = float.NaN;
        }
        var sorted = (float[])a.Clone();
        Array.Sort(sorted);
        var placed = (float[])a.Clone();
        ReservoirObserver.PlaceQuantiles(placed, RangeSearch.Percentiles);
        foreach (double p in RangeSearch.Percentiles)
            foreach (double q in new[] { p, 1 - p })
                Assert.Equal(RangeSearch.Quantile(sorted, q), RangeSearch.Quantile(placed, q));
        var again = (float[])placed.Clone();
        Array.Sort(again);
        Assert.Equal(sorted, again);
        if (kind == "nan") Assert.Equal(sorted, placed);
    }
}
