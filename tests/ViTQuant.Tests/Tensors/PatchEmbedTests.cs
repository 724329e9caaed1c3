using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

public class PatchEmbedTests
{
    /// <summary>
    /// Direct strided convolution, out[b, d, gy, gx] = bias[d] + Σ_{c,ky,kx} w[d,c,ky,kx]·x[b,c,gy·P+ky,gx·P+kx],
    /// then flatten(2).transpose(1, 2) into [B, Gh·Gw, D] — PyTorch's Conv2d and timm's token order, by loops.
    /// </summary>
    private static float[] ConvReference(Tensor x, Tensor w, Tensor? bias, int p)
    {
        int bs = x.Shape[0], c = x.Shape[1], h = x.Shape[2], wd = x.Shape[3], d = w.Shape[0];
        int gh = h / p, gw = wd / p;
        var conv = new double[bs, d, gh, gw];
        for (int b = 0; b < bs; b++)
            for (int o = 0; o < d; o++)
                for (int gy = 0; gy < gh; gy++)
                    for (int gx = 0; gx < gw; gx++)
                    {
                        double s = bias?.Data[o] ?? 0;
                        for (int ch = 0; ch < c; ch++)
                            for (int ky = 0; ky < p; ky++)
                                for (int kx = 0; kx < p; kx++)
                                    s += (double)w[o, ch, ky, kx] * x[b, ch, gy * p + ky, gx * p + kx];
                        conv[b, o, gy, gx] = s;
                    }
        var tokens = new float[bs * gh * gw * d];
        for (int b = 0; b < bs; b++)
            for (int gy = 0; gy < gh; gy++)
                for (int gx = 0; gx < gw; gx++)
                    for (int o = 0; o < d; o++) tokens[((b * gh + gy) * gw + gx) * d + o] = (float)conv[b, o, gy, gx];
        return tokens;
    }

    [Theory]
    [InlineData(2, 3, 8, 12, 4, 5)]
    [InlineData(1, 1, 3, 3, 1, 2)]   // patch 1: a per-pixel linear map
    [InlineData(2, 2, 6, 6, 6, 3)]   // one patch covering the image: a single token
    [InlineData(1, 3, 14, 7, 7, 9)]  // non-square image, 2×1 grid
    public void ForwardMatchesDirectConvolution(int bs, int c, int h, int wd, int p, int d)
    {
        var rng = new Rng(1);
        var x = Tensor.Randn(rng, 1f, bs, c, h, wd);
        var w = Tensor.Randn(rng, 1f, d, c, p, p);
        var b = Tensor.Randn(rng, 1f, d);
        foreach (var bias in new[] { b, null })
        {
            var y = Ops.PatchEmbed(x, w, bias, p);
            Assert.Equal(new[] { bs, h / p * (wd / p), d }, y.Shape);
            var expected = ConvReference(x, w, bias, p);
            for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], y.Data[i], 1e-4f);
        }
    }

    [Fact]
    public void TokensAreInRowMajorGridOrder()
    {
        // One channel and an all-ones 2×2 kernel: each token is the sum of its patch. On a 4×6 ramp
        // image (pixel value 6·row + col) the 2×3 grid of tokens must come out row by row.
        var x = new Tensor(Enumerable.Range(0, 24).Select(i => (float)i).ToArray(), 1, 1, 4, 6);
        var y = Ops.PatchEmbed(x, Tensor.Ones(1, 1, 2, 2), null, 2);
        float[] expected = { 0 + 1 + 6 + 7, 2 + 3 + 8 + 9, 4 + 5 + 10 + 11, 12 + 13 + 18 + 19, 14 + 15 + 20 + 21, 16 + 17 + 22 + 23 };
        Assert.Equal(expected, y.ToArray());
    }

    [Fact]
    public void GradientsMatchFiniteDifferences()
    {
        var rng = new Rng(2);
        GradCheck.Check(v => Ops.PatchEmbed(v[0], v[1], v[2], 2),
            new[] { GradCheck.Rand(rng, 2, 2, 4, 6), GradCheck.Rand(rng, 3, 2, 2, 2), GradCheck.Rand(rng, 3) });
        GradCheck.Check(v => Ops.PatchEmbed(v[0], v[1], null, 3),
            new[] { GradCheck.Rand(rng, 1, 3, 3, 6), GradCheck.Rand(rng, 5, 3, 3, 3) });
        // frozen image (the usual case: only the projection trains)
        GradCheck.Check(v => Ops.PatchEmbed(v[0], v[1], v[2], 2),
            new[] { Tensor.Randn(rng, 1f, 1, 1, 4, 4), GradCheck.Rand(rng, 2, 1, 2, 2), GradCheck.Rand(rng, 2) });
    }

    [Fact]
    public void ImageGradientIsTheAdjointOfIm2Col()
    {
        // ⟨dy, PatchEmbed(x)⟩ is linear in x (no bias), so x·∇x must equal ⟨dy, y⟩ exactly up to rounding.
        var rng = new Rng(3);
        var x = Tensor.Randn(rng, 1f, 2, 3, 8, 8).RequireGrad();
        var w = Tensor.Randn(rng, 1f, 4, 3, 4, 4);
        var y = Ops.PatchEmbed(x, w, null, 4);
        var dy = Tensor.Randn(rng, 1f, y.Shape);
        y.Backward(dy);
        double lhs = 0, rhs = 0;
        for (int i = 0; i < x.Size; i++) lhs += (double)x.Data[i] * x.Grad!.Data[i];
        for (int i = 0; i < y.Size; i++) rhs += (double)y.Data[i] * dy.Data[i];
        Assert.Equal(rhs, lhs, Math.Abs(rhs) * 1e-5 + 1e-4);
    }

    [Fact]
    public void RejectsBadShapes()
    {
        var w = Tensor.Zeros(4, 3, 4, 4);
        Assert.Throws<ArgumentException>(() => Ops.PatchEmbed(Tensor.Zeros(1, 3, 8, 10), w, null, 4));
        Assert.Throws<ArgumentException>(() => Ops.PatchEmbed(Tensor.Zeros(1, 3, 9, 8), w, null, 4));
        Assert.Throws<ArgumentException>(() => Ops.PatchEmbed(Tensor.Zeros(1, 2, 8, 8), w, null, 4));
        Assert.Throws<ArgumentException>(() => Ops.PatchEmbed(Tensor.Zeros(3, 8, 8), w, null, 4));
        Assert.Throws<ArgumentException>(() => Ops.PatchEmbed(Tensor.Zeros(1, 3, 8, 8), w, Tensor.Zeros(5), 4));
        Assert.Throws<ArgumentException>(() => Ops.PatchEmbed(Tensor.Zeros(1, 3, 8, 8), w, null, 0));
    }
}
