// L_HAD: zero on identical inputs, values against a direct double-precision transcription of the spec
// formulas, finite-difference gradients for every distance (both inputs), prefix tokens ignored, and
// the mean over blocks.
using ViTQuant.Algorithms.Qat;
using ViTQuant.Tensors;
using ViTQuant.Tests.Tensors;

namespace ViTQuant.Tests.Qat;

public class HeadAttentionDistillationTests
{
    public static readonly TheoryData<HadDistance> Distances = new() { HadDistance.Ssim, HadDistance.Mse, HadDistance.L1, HadDistance.Kl };

    [Theory]
    [MemberData(nameof(Distances))]
    public void IdenticalInputsGiveZero(HadDistance d)
    {
        var rng = new Rng(1);
        var o = Tensor.Randn(rng, 1f, 2, 3, 6, 4);
        Assert.Equal(0f, HeadAttentionDistillation.BlockLoss(o, o.Clone(), 1, d).Item(), 6);
        // and a different tensor gives a clearly positive value
        var other = Tensor.Randn(rng, 1f, 2, 3, 6, 4);
        Assert.True(HeadAttentionDistillation.BlockLoss(o, other, 1, d).Item() > 0.05f);
    }

    [Theory]
    [MemberData(nameof(Distances))]
    public void MatchesDirectDoublePrecisionFormula(HadDistance d)
    {
        var rng = new Rng(2);
        var s = Tensor.Randn(rng, 1f, 3, 2, 7, 5);
        var t = Tensor.Uniform(rng, -2f, 2f, 3, 2, 7, 5);
        // Make some columns nearly constant so C2 matters.
        for (int n = 0; n < 7; n++) t[0, 0, n, 0] = 0.3f + 0.001f * n;
        for (int prefix = 0; prefix <= 2; prefix++)
        {
            double want = Reference(s, t, prefix, d);
            float got = HeadAttentionDistillation.BlockLoss(s, t, prefix, d).Item();
            Assert.True(Math.Abs(got - want) <= 1e-6 * Math.Max(1, Math.Abs(want)), $"{d} prefix {prefix}: {got} vs {want}");
        }
    }

    [Theory]
    [MemberData(nameof(Distances))]
    public void GradientsMatchFiniteDifferences(HadDistance d)
    {
        var rng = new Rng(3);
        var s = GradCheck.Rand(rng, 2, 2, 5, 3);
        var t = GradCheck.Rand(rng, 2, 2, 5, 3);
        if (d == HadDistance.L1) // keep |s − t| away from the kink at 0
            for (int i = 0; i < t.Size; i++) t.Data[i] = s.Data[i] + (rng.NextFloat() < 0.5f ? -1 : 1) * (0.2f + rng.NextFloat());
        GradCheck.Check(x => HeadAttentionDistillation.BlockLoss(x[0], x[1], 1, d), new[] { s, t }, h: 1e-3, atol: 1e-4, rtol: 1e-2);
    }

    [Fact]
    public void PrefixTokensAreIgnoredAndGetNoGradient()
    {
        var rng = new Rng(4);
        var s = Tensor.Randn(rng, 1f, 2, 2, 6, 3).RequireGrad();
        var t = Tensor.Randn(rng, 1f, 2, 2, 6, 3);
        float before = HeadAttentionDistillation.BlockLoss(s, t, 2, HadDistance.Ssim).Item();
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 2; h++)
                for (int c = 0; c < 3; c++) { s[b, h, 0, c] += 5f; t[b, h, 1, c] -= 3f; }
        var loss = HeadAttentionDistillation.BlockLoss(s, t, 2, HadDistance.Ssim);
        Assert.Equal(before, loss.Item());
        loss.Backward();
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 2; h++)
                for (int c = 0; c < 3; c++)
                {
                    Assert.Equal(0f, s.Grad![b, h, 0, c]);
                    Assert.Equal(0f, s.Grad![b, h, 1, c]);
                }
    }

    [Fact]
    public void LossIsTheMeanOverBlocksAndOffIsZero()
    {
        var rng = new Rng(5);
        var s = Enumerable.Range(0, 3).Select(_ => Tensor.Randn(rng, 1f, 2, 2, 5, 4)).ToList();
        var t = Enumerable.Range(0, 3).Select(_ => Tensor.Randn(rng, 1f, 2, 2, 5, 4)).ToList();
        double mean = Enumerable.Range(0, 3).Average(l => Reference(s[l], t[l], 1, HadDistance.Ssim));
        Assert.Equal(mean, HeadAttentionDistillation.Loss(s, t, 1, HadDistance.Ssim).Item(), 5);
        Assert.Equal(0f, HeadAttentionDistillation.Loss(s, t, 1, HadDistance.Off).Item());
    }

    [Fact]
    public void BadShapesThrow()
    {
        var a = Tensor.Zeros(2, 2, 5, 4);
        Assert.Throws<ArgumentException>(() => HeadAttentionDistillation.BlockLoss(a, Tensor.Zeros(2, 2, 5, 3), 1, HadDistance.Ssim));
        Assert.Throws<ArgumentException>(() => HeadAttentionDistillation.BlockLoss(Tensor.Zeros(2, 5, 4), Tensor.Zeros(2, 5, 4), 1, HadDistance.Mse));
        Assert.Throws<ArgumentException>(() => HeadAttentionDistillation.BlockLoss(a, a, 5, HadDistance.Kl));
        Assert.Throws<ArgumentException>(() => HeadAttentionDistillation.BlockLoss(a, a, 1, HadDistance.Off));
        Assert.Throws<ArgumentException>(() => HeadAttentionDistillation.Loss(new[] { a }, new[] { a, a }, 1, HadDistance.Ssim));
    }

    /// <summary>The spec's formulas, written out directly in double over [B, H, N, dh] index loops.</summary>
    private static double Reference(Tensor s, Tensor t, int prefix, HadDistance d)
    {
        int B = s.Shape[0], H = s.Shape[1], N = s.Shape[2], C = s.Shape[3], np = N - prefix;
        double total = 0;
        long count = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int c = 0; c < C; c++)
                {
                    var x = Enumerable.Range(prefix, np).Select(n => (double)s[b, h, n, c]).ToArray();
                    var y = Enumerable.Range(prefix, np).Select(n => (double)t[b, h, n, c]).ToArray();
                    switch (d)
                    {
                        case HadDistance.Ssim:
                        {
                            double mx = x.Average(), my = y.Average();
                            double vx = x.Select(v => (v - mx) * (v - mx)).Average(), vy = y.Select(v => (v - my) * (v - my)).Average();
                            double cov = x.Zip(y, (a, b2) => (a - mx) * (b2 - my)).Average();
                            total += 1 - (2 * cov + 0.03 * 0.03) / (vx + vy + 0.03 * 0.03);
                            count++;
                            break;
                        }
                        case HadDistance.Mse:
                            total += x.Zip(y, (a, b2) => (a - b2) * (a - b2)).Sum();
                            count += np;
                            break;
                        case HadDistance.L1:
                            total += x.Zip(y, (a, b2) => Math.Abs(a - b2)).Sum();
                            count += np;
                            break;
                        case HadDistance.Kl:
                        {
                            double zx = x.Sum(Math.Exp), zy = y.Sum(Math.Exp);
                            for (int n = 0; n < np; n++)
                            {
                                double pt = Math.Exp(y[n]) / zy, ps = Math.Exp(x[n]) / zx;
                                total += pt * Math.Log(pt / ps);
                            }
                            count++;
                            break;
                        }
                    }
                }
        return total / count;
    }
}
