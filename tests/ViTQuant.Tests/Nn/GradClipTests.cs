using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Nn;

public class GradClipTests
{
    private static Tensor WithGrad(float[] grad)
    {
        var p = Tensor.Zeros(grad.Length).RequireGrad();
        p.Grad = Tensor.FromArray(grad, grad.Length);
        return p;
    }

    [Fact]
    public void ScalesToMaxNormWhenAbove()
    {
        var a = WithGrad(new[] { 3f, 4f });
        var b = WithGrad(new[] { 12f });
        var none = Tensor.Zeros(3).RequireGrad();            // no gradient: skipped, stays null
        double norm = GradClip.ClipGradNorm(new[] { a, none, b }, 6.5f);
        Assert.Equal(13.0, norm, 1e-12);
        float coef = 6.5f / (13f + 1e-6f);
        Assert.Equal(new[] { 3f * coef, 4f * coef }, a.Grad!.ToArray());
        Assert.Equal(new[] { 12f * coef }, b.Grad!.ToArray());
        Assert.Null(none.Grad);
        double after = Math.Sqrt(a.Grad.ToArray().Concat(b.Grad.ToArray()).Sum(x => (double)x * x));
        Assert.InRange(after, 6.5 - 1e-5, 6.5);
    }

    [Fact]
    public void LeavesGradientsAloneWhenBelowOrNonFinite()
    {
        var a = WithGrad(new[] { 0.3f, -0.4f });
        Assert.Equal(0.5, GradClip.ClipGradNorm(new[] { a }, 1f), 1e-7);
        Assert.Equal(new[] { 0.3f, -0.4f }, a.Grad!.ToArray());
        Assert.Equal(0.0, GradClip.ClipGradNorm(new[] { Tensor.Zeros(2).RequireGrad() }, 1f));

        var inf = WithGrad(new[] { float.PositiveInfinity, 1f });
        Assert.True(double.IsPositiveInfinity(GradClip.ClipGradNorm(new[] { inf }, 1f)));
        Assert.Equal(new[] { float.PositiveInfinity, 1f }, inf.Grad!.ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => GradClip.ClipGradNorm(new[] { a }, float.NaN));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(29)]
    [InlineData(100_003)]
    public void SumOfSquaresMatchesReference(int n)
    {
        var x = new float[n];
        new Rng((ulong)n).FillNormal(x, 0f, 3f);
        double fast = GradClip.SumOfSquares(x), reference = GradClip.SumOfSquaresReference(x);
        Assert.Equal(reference, fast, 1e-13 * reference);
    }

    [Fact]
    public void NormIsAccurateBeyondFloatAccumulation()
    {
        // 4096² = 2^24 followed by 1000 ones: a float accumulator stalls at 2^24 (2^24 + 1 rounds back
        // down); the double sum is exact, so the norm is the correctly rounded √(2^24 + 1000).
        var g = new float[1001];
        Array.Fill(g, 1f);
        g[0] = 4096f;
        var p = WithGrad(g);
        Assert.Equal(Math.Sqrt((1 << 24) + 1000), GradClip.ClipGradNorm(new[] { p }, float.MaxValue));
    }
}
