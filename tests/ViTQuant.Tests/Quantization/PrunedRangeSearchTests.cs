// The Lp searches rule most candidates out with histogram bounds (RangeSearch.ArgMinError); they must
// pick exactly the grid that scoring every candidate on every value picks. The data are large enough
// (> 4·2^16 values) for the bounds to be used, with the shapes that make bounds loose: heavy tails,
// many repeated values, a spike at one value, one-sided data.
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Quantization;

public class PrunedRangeSearchTests
{
    private static float[] Data(string shape, int n, ulong seed)
    {
        var rng = new Rng(seed);
        var x = Tensor.Randn(rng, 1f, n).Data;
        for (int i = 0; i < n; i++)
            x[i] = shape switch
            {
                "gauss" => x[i],
                "skewed" => x[i] > 0 ? 3f * x[i] * x[i] * x[i] : 0.5f * x[i], // post-attention q/k/v look like this
                "repeated" => MathF.Round(x[i] * 4f) / 4f,                     // few distinct values: bins hold one each
                "spike" => i % 3 == 0 ? 0.37f : x[i] * 10f,
                "positive" => MathF.Abs(x[i]) + 0.01f,
                _ => throw new ArgumentException(shape),
            };
        return x;
    }

    [Theory]
    [InlineData("gauss", 4, 2.4f)]
    [InlineData("skewed", 4, 2.4f)]
    [InlineData("skewed", 3, 2f)]
    [InlineData("repeated", 4, 2.4f)]
    [InlineData("spike", 4, 1f)]
    public void StepAndZeroPointSearchPicksWhatScoringEveryCandidatePicks(string shape, int bits, float p)
    {
        var x = Data(shape, 300_000, (ulong)bits * 31 + (ulong)shape.Length);
        float min = x.Min(), max = x.Max();
        var pruned = RangeSearch.SearchStepAndZeroPoint(x, min, max, bits, p);
        var all = RangeSearch.SearchStepAndZeroPointBruteForce(x, min, max, bits, p);
        Assert.Equal(all, pruned);
    }

    [Theory]
    [InlineData("skewed", 2.4f)]
    [InlineData("repeated", 2f)]
    public void EightBitSearchWithACoarseHistogramPicksWhatScoringEveryCandidatePicks(string shape, float p)
    {
        // 25,600 candidates: a 2^12-bin histogram reaches the bounded path on 20,000 values (bins wider
        // than the finest steps, the hardest case for the bounds).
        var x = Data(shape, 20_000, 11);
        float min = x.Min(), max = x.Max();
        var grids = Enumerable.Range(0, 100 * 256)
            .Select(c => new UniformParams(RangeSearch.SafeScale((max - min) / 100 * (c / 256 + 1) / 255), c % 256, 0, 255)).ToArray();
        int pruned = RangeSearch.ArgMinError(x, grids, p, out int scored, bins: 1 << 12);
        var errs = grids.Select(g => RangeSearch.Error(x, g, p)).ToArray();
        int arg = 0;
        for (int k = 1; k < errs.Length; k++) if (errs[k] < errs[arg]) arg = k;
        Assert.Equal(arg, pruned);
        Assert.True(scored < grids.Length / 4, $"{scored} of {grids.Length} scored");
    }

    [Theory]
    [InlineData("skewed", false)]
    [InlineData("positive", false)]
    [InlineData("gauss", true)]
    public void LpSearchPicksWhatScoringEveryCandidatePicks(string shape, bool symmetric)
    {
        var x = Data(shape, 300_000, 7);
        float min = x.Min(), max = x.Max();
        var pruned = RangeSearch.Search(RangeMethod.LpSearch, x, min, max, 4, symmetric, 2.4f);
        var grids = Enumerable.Range(1, RangeSearch.LpCandidates)
            .Select(k => RangeSearch.FromRange(k / (float)RangeSearch.LpCandidates * min, k / (float)RangeSearch.LpCandidates * max, 4, symmetric)).ToArray();
        var errs = grids.Select(g => RangeSearch.Error(x, g, 2.4f)).ToArray();
        int arg = 0;
        for (int k = 1; k < errs.Length; k++) if (errs[k] < errs[arg]) arg = k;
        Assert.Equal(grids[arg], pruned);
    }

    [Fact]
    public void BoundsRuleOutMostCandidates()
    {
        // Not a timing: the point of the bounds is that few candidates need exact scoring. Counted by
        // the search's own bookkeeping on the skewed data at 4 bits (1,600 candidates).
        var x = Data("skewed", 300_000, 3);
        float min = x.Min(), max = x.Max();
        var grids = Enumerable.Range(0, 100 * 16)
            .Select(c => new UniformParams(RangeSearch.SafeScale((max - min) / 100 * (c / 16 + 1) / 15), c % 16, 0, 15)).ToArray();
        RangeSearch.ArgMinError(x, grids, 2.4f, out int scored);
        Assert.InRange(scored, 1, 160);
    }
}
