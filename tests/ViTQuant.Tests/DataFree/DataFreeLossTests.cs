// The data-free losses against literal double-precision implementations, their invariances, and
// finite-difference gradient checks on tiny inputs.
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Tensors;
using ViTQuant.Tests.Tensors;

namespace ViTQuant.Tests.DataFree;

public class DataFreeLossTests
{
    /// <summary>SSIM written independently of the library: two-pass variances and covariance (population).</summary>
    private static double TwoPassSsim(double[] x, double[] y)
    {
        int n = x.Length;
        double mx = x.Average(), my = y.Average();
        double vx = 0, vy = 0, cxy = 0;
        for (int k = 0; k < n; k++)
        {
            vx += (x[k] - mx) * (x[k] - mx);
            vy += (y[k] - my) * (y[k] - my);
            cxy += (x[k] - mx) * (y[k] - my);
        }
        vx /= n; vy /= n; cxy /= n;
        const double c1 = 1e-4, c2 = 9e-4;
        return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    }

    private static double[] MinMax(float[] s, int off, int len)
    {
        double lo = double.MaxValue, hi = double.MinValue;
        for (int k = 0; k < len; k++) { lo = Math.Min(lo, s[off + k]); hi = Math.Max(hi, s[off + k]); }
        return Enumerable.Range(0, len).Select(k => (s[off + k] - lo) / (hi - lo + 1e-8)).ToArray();
    }

    [Fact]
    public void IhcIsZeroWhenHeadsAgreeUpToAnAffineMap()
    {
        // Every head's row is a positive affine image of head 0's: min–max normalisation makes the maps equal.
        int B = 2, H = 4, N = 10, pre = 1;
        var rng = new Rng(3);
        var s = Tensor.Randn(rng, 1f, B, H, N, N);
        for (int b = 0; b < B; b++)
            for (int h = 1; h < H; h++)
                for (int q = 0; q < N; q++)
                    for (int k = 0; k < N; k++)
                        s[b, h, q, k] = 0.5f + h * 1.5f * s[b, 0, q, k];
        Assert.True(InterHeadCoherence.LayerLoss(s, pre).Item() < 1e-6f);
        // ...and a different head breaks it.
        s[0, 2, 3, 4] += 3f;
        Assert.True(InterHeadCoherence.LayerLoss(s, pre).Item() > 1e-4f);
    }

    [Theory]
    [InlineData(1, 3, 5, 1)]
    [InlineData(2, 4, 17, 1)]
    [InlineData(3, 2, 9, 0)]
    [InlineData(2, 3, 11, 2)]
    public void IhcMatchesLiteralDoubleReference(int B, int H, int N, int pre)
    {
        var s = Tensor.Randn(new Rng((ulong)(B * 100 + N)), 2f, B, H, N, N);
        double fast = InterHeadCoherence.LayerLoss(s, pre).Item();
        double reference = InterHeadCoherence.ReferenceLayerLoss(s.Data, s.Shape, pre);
        Assert.True(reference > 0.01, $"degenerate test input ({reference})");
        Assert.True(Math.Abs(fast - reference) <= 1e-6 * Math.Max(1, reference), $"fast {fast} vs reference {reference}");
    }

    [Fact]
    public void SsimMatricesMatchAnIndependentTwoPassSsim()
    {
        int B = 2, H = 3, N = 7, pre = 1, P = N - pre;
        var s = Tensor.Randn(new Rng(11), 1f, B, H, N, N);
        var m = InterHeadCoherence.SsimMatrices(s, pre);
        for (int b = 0; b < B; b++)
            for (int n = 0; n < P; n++)
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < H; j++)
                    {
                        var mi = MinMax(s.Data, ((b * H + i) * N + pre + n) * N + pre, P);
                        var mj = MinMax(s.Data, ((b * H + j) * N + pre + n) * N + pre, P);
                        double expect = TwoPassSsim(mi, mj);
                        Assert.Equal(expect, m[(b * P + n) * H * H + i * H + j], 9);
                        Assert.Equal(expect, InterHeadCoherence.ReferenceSsim(mi, mj), 9);
                    }
        // Sanity of the SSIM form itself: self-similarity is 1, an inverted map is negatively similar.
        var x = MinMax(s.Data, 0, 6);
        Assert.Equal(1.0, TwoPassSsim(x, x), 12);
        Assert.True(InterHeadCoherence.ReferenceSsim(x, x.Select(v => 1 - v).ToArray()) < -0.5);
    }

    [Fact]
    public void SimilarityIsSignedButCoherenceCountsInvertedHeadsAsAligned()
    {
        // Two heads, head 1 = −head 0: L_IHC is 0 (SSIM² = 1 everywhere) while the signed similarity is near −1.
        int B = 1, H = 2, N = 8, pre = 1;
        var s = Tensor.Randn(new Rng(9), 1f, B, H, N, N);
        for (int q = 0; q < N; q++)
            for (int k = 0; k < N; k++) s[0, 1, q, k] = -s[0, 0, q, k];
        var ssim = InterHeadCoherence.SsimMatrices(s, pre);
        double expectSigned = 0;
        for (int n = 0; n < N - pre; n++) expectSigned += ssim[n * 4 + 1];
        expectSigned /= N - pre;
        double signed = Algorithms.Metrics.AttentionSimilarity.LayerPerImage(s, pre)[0];
        double coherence = Algorithms.Metrics.AttentionSimilarity.LayerPerImage(s, pre, squared: true)[0];
        Assert.Equal(expectSigned, signed, 9);
        Assert.True(signed < -0.5, $"signed similarity {signed}");
        Assert.True(coherence > 0.25 && coherence <= 1, $"coherence {coherence}");
        double expectSq = 0;
        for (int n = 0; n < N - pre; n++) expectSq += ssim[n * 4 + 1] * ssim[n * 4 + 1];
        Assert.Equal(expectSq / (N - pre), coherence, 9);
    }

    [Fact]
    public void IhcIgnoresPrefixRowsAndColumns()
    {
        int B = 2, H = 3, N = 6;
        var s = Tensor.Randn(new Rng(5), 1f, B, H, N, N);
        float before = InterHeadCoherence.LayerLoss(s, 1).Item();
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int k = 0; k < N; k++) { s[b, h, 0, k] = 100f * k; s[b, h, k, 0] = -50f; }
        Assert.Equal(before, InterHeadCoherence.LayerLoss(s, 1).Item());
    }

    [Fact]
    public void IhcGradientMatchesFiniteDifferences()
    {
        var s = GradCheck.Rand(new Rng(21), 2, 3, 5, 5);
        GradCheck.Check(t => InterHeadCoherence.LayerLoss(t[0], 1), new[] { s }, h: 1e-3, atol: 1e-3, rtol: 2e-2, maxProbesPerInput: 150);
    }

    [Fact]
    public void IhcRoutesTheMinAndMaxGradientToTheFirstOfTiedExtremes()
    {
        // 49 keys per row: ties in different 8-key blocks and in the scalar tail. With the later duplicates moved off the
        // extremes by a hair the loss is smooth there, and its gradient must be what the tied rows get (the first
        // index takes the min's and max's terms; a later duplicate only its own).
        const int N = 50, H = 2;
        var rng = new Rng(31);
        float[] Row(Rng r) => Enumerable.Range(0, N * N * H).Select(_ => r.NextFloat() * 2 - 1).ToArray();
        var tied = Row(rng);
        var (lowFirst, lowLater, highFirst, highLater) = (1 + 10, 1 + 30, 1 + 17, 1 + 48);
        for (int h = 0; h < H; h++)
            for (int n = 1; n < N; n++)
            {
                int row = (h * N + n) * N;
                tied[row + lowFirst] = tied[row + lowLater] = -3f;
                tied[row + highFirst] = tied[row + highLater] = 3f;
            }
        var moved = (float[])tied.Clone();
        for (int h = 0; h < H; h++)
            for (int n = 1; n < N; n++) { moved[(h * N + n) * N + lowLater] = -2.999f; moved[(h * N + n) * N + highLater] = 2.999f; }
        float[] Grad(float[] logits)
        {
            var t = new Tensor(logits, 1, H, N, N).RequireGrad();
            InterHeadCoherence.LayerLoss(t, 1).Backward();
            return t.Grad!.ToArray();
        }
        float[] gt = Grad(tied), gm = Grad(moved);
        double scale = gm.Max(v => Math.Abs((double)v));
        for (int i = 0; i < gt.Length; i++) Assert.True(Math.Abs(gt[i] - gm[i]) <= 0.02 * scale, $"[{i}]: {gt[i]} vs {gm[i]}");
        // And the check can tell: with the first duplicates moved off instead, the later ones take the terms.
        var swapped = (float[])tied.Clone();
        for (int h = 0; h < H; h++)
            for (int n = 1; n < N; n++) { swapped[(h * N + n) * N + lowFirst] = -2.999f; swapped[(h * N + n) * N + highFirst] = 2.999f; }
        var gs = Grad(swapped);
        Assert.Contains(Enumerable.Range(0, gt.Length), i => Math.Abs(gt[i] - gs[i]) > 0.2 * scale);
    }

    [Fact]
    public void SignedIhcMatchesItsReferenceAndItsGradientChecks()
    {
        var s = Tensor.Randn(new Rng(33), 2f, 2, 4, 17, 17);
        double fast = InterHeadCoherence.LayerLoss(s, 1, signed: true).Item();
        double reference = InterHeadCoherence.ReferenceLayerLoss(s.Data, s.Shape, 1, signed: true);
        Assert.True(Math.Abs(fast - reference) <= 1e-6, $"fast {fast} vs reference {reference}");
        // The two forms differ on the same input (1 − S vs 1 − S²), so the flag is not ignored.
        Assert.True(Math.Abs(fast - InterHeadCoherence.ReferenceLayerLoss(s.Data, s.Shape, 1)) > 1e-3);
        var g = GradCheck.Rand(new Rng(22), 2, 3, 5, 5);
        GradCheck.Check(t => InterHeadCoherence.Loss(new[] { t[0] }, 1, signed: true), new[] { g }, h: 1e-3, atol: 1e-3, rtol: 2e-2, maxProbesPerInput: 150);
    }

    [Fact]
    public void SignedIhcPenalisesInvertedHeadsWhereTheSquaredFormDoesNot()
    {
        // Head 1 is head 0 reflected (1 − u after min–max): SSIM < 0, so 1 − SSIM > 1 while 1 − SSIM² < 1.
        var s = Tensor.Randn(new Rng(5), 1f, 1, 2, 10, 10);
        for (int n = 0; n < 10; n++)
            for (int k = 0; k < 10; k++) s.Data[(10 + n) * 10 + k] = -s.Data[n * 10 + k];
        double squared = InterHeadCoherence.LayerLoss(s, 0).Item(), signed = InterHeadCoherence.LayerLoss(s, 0, signed: true).Item();
        Assert.True(signed > squared + 0.2, $"signed {signed}, squared {squared}");
    }

    [Fact]
    public void IhcOverLayersIsTheMeanOfTheLayersAndDifferentiable()
    {
        var rng = new Rng(8);
        var a = GradCheck.Rand(rng, 1, 2, 5, 5);
        var b = GradCheck.Rand(rng, 1, 2, 5, 5);
        float la = InterHeadCoherence.LayerLoss(a, 1).Item(), lb = InterHeadCoherence.LayerLoss(b, 1).Item();
        Assert.Equal((la + lb) / 2, InterHeadCoherence.Loss(new[] { a, b }, 1).Item(), 6);
        GradCheck.Check(t => InterHeadCoherence.Loss(new[] { t[0], t[1] }, 1), new[] { a, b }, h: 1e-3, atol: 1e-3);
    }

    [Fact]
    public void IhcRejectsMalformedLogits()
    {
        Assert.Throws<ArgumentException>(() => InterHeadCoherence.LayerLoss(Tensor.Zeros(2, 3, 4, 5), 0));
        Assert.Throws<ArgumentException>(() => InterHeadCoherence.LayerLoss(Tensor.Zeros(2, 3, 2, 2), 1));
        Assert.Throws<ArgumentException>(() => InterHeadCoherence.Loss(Array.Empty<Tensor>(), 1));
    }

    [Theory]
    [InlineData(0.70710678f)]
    [InlineData(1f)]
    public void TotalVariationMatchesReferenceAndItsGradientChecks(float diag)
    {
        var x = GradCheck.Rand(new Rng(4), 2, 3, 5, 4);
        double fast = TotalVariation.Loss(x, diag).Item();
        double reference = TotalVariation.Reference(x.Data, x.Shape, diag);
        Assert.True(Math.Abs(fast - reference) <= 1e-6 * reference, $"{fast} vs {reference}");
        GradCheck.Check(t => TotalVariation.Loss(t[0], diag), new[] { x }, h: 1e-3, atol: 1e-3);
    }

    [Fact]
    public void TotalVariationHandWorked()
    {
        // A 2×2 image [[0, 1], [2, 4]]: d1 = (−1, −2), d2 = (−2, −3), d3 = 2 − 1 = 1, d4 = 0 − 4 = −4.
        var x = Tensor.FromArray(new float[] { 0, 1, 2, 4 }, 1, 1, 2, 2);
        double expect = Math.Sqrt(5) + Math.Sqrt(13) + (1 + 4) / Math.Sqrt(2);
        Assert.Equal(expect, TotalVariation.Loss(x, TotalVariation.MimiqDiagonalWeight).Item(), 5);
        Assert.Equal(0f, TotalVariation.Loss(Tensor.Full(3f, 1, 2, 3, 3), 1f).Item());
    }

    [Theory]
    [InlineData(2, 3, 6, 4, 1)]
    [InlineData(1, 2, 10, 8, 1)]
    [InlineData(3, 1, 5, 3, 0)]
    [InlineData(2, 2, 72, 13, 1)] // 71² pairs and a feature width that leave vector tails
    public void EntropyMatchesLiteralDoubleReference(int B, int H, int N, int D, int pre)
    {
        var o = Tensor.Randn(new Rng((ulong)(N * 7 + D)), 1f, B, H, N, D);
        double fast = PatchSimilarityEntropy.Entropy(o, pre).Item();
        double reference = PatchSimilarityEntropy.Reference(o.Data, o.Shape, pre);
        Assert.True(Math.Abs(fast - reference) <= 1e-4 * Math.Max(1, Math.Abs(reference)), $"fast {fast} vs reference {reference}");
        Assert.NotEqual(0.0, reference);
    }

    [Fact]
    public void EntropyGradientMatchesFiniteDifferencesWithAFixedRange()
    {
        // The evaluation range is a constant of the gradient (as PSAQ's .item()); fix it so that finite
        // differences see the same function. A wide bandwidth keeps the density smooth at this step size.
        var o = GradCheck.Rand(new Rng(31), 2, 2, 7, 3);
        GradCheck.Check(t => PatchSimilarityEntropy.Entropy(t[0], 1, bandwidth: 0.2f, points: 10, range: (-1f, 1f)),
            new[] { o }, h: 1e-2, atol: 2e-5, rtol: 1e-2, maxProbesPerInput: 84);
    }

    [Fact]
    public void EntropyGradientMatchesFiniteDifferencesOnALargerMapWithVectorTails()
    {
        // 37 patches (1,369 pairs) of width 11: the vectorised passes' tails, on the narrow default bandwidth's
        // neighbour, 0.05, which keeps finite differences at this step meaningful.
        var o = GradCheck.Rand(new Rng(32), 1, 2, 38, 11);
        GradCheck.Check(t => PatchSimilarityEntropy.Entropy(t[0], 1, bandwidth: 0.05f, points: 10, range: (-1f, 1f)),
            new[] { o }, h: 1e-3, atol: 2e-5, rtol: 2e-2, maxProbesPerInput: 40);
    }

    [Fact]
    public void EntropyIgnoresPrefixTokens()
    {
        var rng = new Rng(9);
        var o = Tensor.Randn(rng, 1f, 2, 2, 9, 4);
        float before = PatchSimilarityEntropy.Entropy(o, 1).Item();
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 2; h++)
                for (int d = 0; d < 4; d++) o[b, h, 0, d] = 1000f;
        Assert.Equal(before, PatchSimilarityEntropy.Entropy(o, 1).Item());
    }

    [Fact]
    public void JitterMatchesComposedOpsForwardAndBackward()
    {
        var rng = new Rng(12);
        foreach (bool flip in new[] { false, true })
        {
            var x1 = GradCheck.Rand(rng, 2, 3, 5, 6);
            var x2 = x1.Clone().RequireGrad();
            var scale = Enumerable.Range(0, 6).Select(_ => 0.5f + rng.NextFloat()).ToArray();
            var shift = Enumerable.Range(0, 6).Select(_ => rng.NextNormal()).ToArray();
            var y1 = JitterOp.Apply(x1, -2, 7, flip, scale, shift);
            var y2 = JitterOp.Reference(x2, -2, 7, flip, scale, shift);
            Assert.Equal(y2.ToArray(), y1.ToArray());
            var g = Tensor.Randn(rng, 1f, y1.Shape);
            y1.Backward(g);
            y2.Backward(g);
            Assert.Equal(x2.Grad!.ToArray(), x1.Grad!.ToArray());
        }
    }
}
