using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

public class ActivationTests
{
    [Fact]
    public void SoftmaxAndLogSoftmaxForwardValues()
    {
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 0, 0, 0 }, 2, 3);
        var p = Ops.Softmax(x).ToArray();
        float[] expected = { 0.09003057f, 0.24472847f, 0.66524096f, 1 / 3f, 1 / 3f, 1 / 3f };
        for (int i = 0; i < 6; i++) Assert.Equal(expected[i], p[i], 1e-6f);
        var lp = Ops.LogSoftmax(x).ToArray();
        for (int i = 0; i < 6; i++) Assert.Equal(MathF.Log(expected[i]), lp[i], 1e-6f);
        // along axis 0 of [2, 3]: each column of two is softmaxed
        var p0 = Ops.Softmax(x, 0).ToArray();
        Assert.Equal(1 / (1 + MathF.Exp(-1)), p0[0], 1e-6f); // e^1 / (e^1 + e^0)
        Assert.Equal(1 / (1 + MathF.Exp(3)), p0[5], 1e-6f);  // e^0 / (e^3 + e^0)
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(-2)]
    public void SoftmaxOverAnyAxisMatchesScalarLoop(int axis)
    {
        var rng = new Rng(1);
        var x = Tensor.Randn(rng, 2f, 3, 4, 5);
        var y = Ops.Softmax(x, axis);
        var ly = Ops.LogSoftmax(x, axis);
        int ax = axis < 0 ? axis + 3 : axis;
        var st = Tensor.Strides(x.Shape);
        for (int flat = 0; flat < x.Size; flat++)
        {
            // walk the axis through this element's fibre
            int pos = flat / st[ax] % x.Shape[ax], start = flat - pos * st[ax];
            double max = double.NegativeInfinity, sum = 0;
            for (int j = 0; j < x.Shape[ax]; j++) max = Math.Max(max, x.Data[start + j * st[ax]]);
            for (int j = 0; j < x.Shape[ax]; j++) sum += Math.Exp(x.Data[start + j * st[ax]] - max);
            Assert.Equal(Math.Exp(x.Data[flat] - max) / sum, y.Data[flat], 1e-6);
            Assert.Equal(x.Data[flat] - max - Math.Log(sum), ly.Data[flat], 1e-5);
        }
    }

    [Fact]
    public void SoftmaxFamilyGradientsMatchFiniteDifferences()
    {
        var rng = new Rng(2);
        foreach (var (shape, axis) in new (int[], int)[] { ([3, 5], -1), ([2, 3, 7], -1), ([2, 3, 7], 1), ([4, 3], 0), ([1, 11], 1) })
        {
            GradCheck.Check(v => Ops.Softmax(v[0], axis), new[] { GradCheck.Rand(rng, shape) });
            GradCheck.Check(v => Ops.LogSoftmax(v[0], axis), new[] { GradCheck.Rand(rng, shape) });
        }
    }

    [Fact]
    public void LayerNormForwardValues()
    {
        // mean 2.5, biased variance 1.25: (x − 2.5)/√1.25
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4, 10, 10, 10, 10 }, 2, 4);
        var y = Ops.LayerNorm(x, null, null, 0f).ToArray();
        float[] expected = { -1.3416408f, -0.4472136f, 0.4472136f, 1.3416408f };
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], y[i], 1e-6f);
        // a constant row normalises to 0 (not NaN) because eps > 0 keeps the division finite
        var yc = Ops.LayerNorm(x, null, null, 1e-5f).ToArray();
        for (int i = 4; i < 8; i++) Assert.Equal(0f, yc[i]);
        var g = Tensor.FromArray(new float[] { 2, 2, 2, 2 }, 4);
        var b = Tensor.FromArray(new float[] { 1, 1, 1, 1 }, 4);
        var ya = Ops.LayerNorm(x, g, b, 0f).ToArray();
        for (int i = 0; i < 4; i++) Assert.Equal(2 * expected[i] + 1, ya[i], 1e-5f);
        Assert.Throws<ArgumentException>(() => Ops.LayerNorm(x, Tensor.Zeros(3), null, 1e-5f));
        Assert.Throws<ArgumentException>(() => Ops.LayerNorm(x, null, Tensor.Zeros(4, 1), 1e-5f));
    }

    [Fact]
    public void LayerNormGradientsMatchFiniteDifferences()
    {
        var rng = new Rng(3);
        GradCheck.Check(v => Ops.LayerNorm(v[0], v[1], v[2], 1e-5f), new[] { GradCheck.Rand(rng, 3, 13), GradCheck.Rand(rng, 13), GradCheck.Rand(rng, 13) }, h: 5e-3);
        GradCheck.Check(v => Ops.LayerNorm(v[0], null, null, 1e-6f), new[] { GradCheck.Rand(rng, 2, 3, 9) }, h: 5e-3);
        GradCheck.Check(v => Ops.LayerNorm(v[0], v[1], null, 1e-6f), new[] { GradCheck.Rand(rng, 4, 8), GradCheck.Rand(rng, 8) }, h: 5e-3);
        // frozen input, trainable affine only
        GradCheck.Check(v => Ops.LayerNorm(v[0], v[1], v[2], 1e-6f), new[] { Tensor.Randn(rng, 1f, 5, 17), GradCheck.Rand(rng, 17), GradCheck.Rand(rng, 17) }, h: 5e-3);
    }

    [Fact]
    public void GeluForwardValuesAreTheExactErfForm()
    {
        // x·Φ(x) to 1e-7, from Φ(1) = 0.8413447460685429, Φ(2) = 0.9772498680518208, Φ(−3) = 0.0013498980316301
        var x = Tensor.FromArray(new float[] { 0f, 1f, -1f, 2f, -3f, 10f, -10f }, 7);
        var y = Ops.Gelu(x).ToArray();
        double[] expected = { 0, 0.8413447460685429, -0.15865525393145707, 1.9544997361036416, -0.0040496940948903, 10, -7.6e-23 };
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], y[i], 3e-7);
        // the tanh approximation differs from the exact form by ~1e-4 at x = −3; make sure we are not it
        double tanhForm = 0.5 * -3 * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (-3 + 0.044715 * -27)));
        Assert.True(Math.Abs(tanhForm - y[4]) > 1e-5);
    }

    [Fact]
    public void GeluGradientsMatchFiniteDifferences()
    {
        var rng = new Rng(4);
        GradCheck.Check(v => Ops.Gelu(v[0]), new[] { Tensor.Randn(rng, 2f, 4, 9).RequireGrad() }, h: 1e-3);
        GradCheck.Check(v => Ops.Gelu(v[0]), new[] { GradCheck.Rand(rng, 23) }, h: 1e-3);
    }

    [Fact]
    public void RoundSteRoundsHalfToEvenAndPassesGradientsStraightThrough()
    {
        var x = Tensor.FromArray(new float[] { 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 0.49999997f, 2.6f, -2.6f, 7f }, 10).RequireGrad();
        var y = Ops.RoundSte(x);
        Assert.Equal(new float[] { 0, 2, 2, 0, -2, -2, 0, 3, -3, 7 }, y.ToArray());
        var w = Tensor.FromArray(Enumerable.Range(1, 10).Select(i => (float)i).ToArray(), 10);
        Ops.Sum(Ops.Mul(y, w)).Backward();
        Assert.Equal(w.ToArray(), x.Grad!.ToArray());

        var f = Tensor.FromArray(new float[] { 0.5f, -0.5f, 2f, -2.000001f, 3.999f }, 5).RequireGrad();
        var fy = Ops.FloorSte(f);
        Assert.Equal(new float[] { 0, -1, 2, -3, 3 }, fy.ToArray());
        Ops.Sum(Ops.Mul(fy, Tensor.Full(3f, 5))).Backward();
        Assert.Equal(new float[] { 3, 3, 3, 3, 3 }, f.Grad!.ToArray());
    }

    /// <summary>
    /// The extension point: a user-defined op is a forward computation plus Autograd.Record with a
    /// closure that accumulates the input gradient. This test-only op computes y = x³ (dy/dx = 3x²).
    /// </summary>
    private static Tensor Cube(Tensor x)
    {
        var y = new Tensor(x.Shape);
        for (int i = 0; i < x.Size; i++) y.Data[i] = x.Data[i] * x.Data[i] * x.Data[i];
        if (!Autograd.Needs(x)) return y; // inference, or no input wants gradients: no graph node
        return Autograd.Record("cube", y, new[] { x }, g =>
        {
            var gx = x.GradSpan(); // allocated zero-filled on first use; += so several consumers add up
            for (int i = 0; i < x.Size; i++) gx[i] += 3 * x.Data[i] * x.Data[i] * g.Data[i];
        });
    }

    [Fact]
    public void CustomOpWithUserBackwardComposesWithBuiltInOps()
    {
        var rng = new Rng(5);
        var x = GradCheck.Rand(rng, 3, 7);
        GradCheck.Check(v => Ops.Softmax(Cube(Ops.Gelu(v[0]))), new[] { x }, h: 1e-3);

        // used twice in one graph: the gradients from both uses accumulate (d/dx (x³ + x³) = 6x²)
        var z = Tensor.FromArray(new float[] { 1f, -2f }, 2).RequireGrad();
        Ops.Sum(Ops.Add(Cube(z), Cube(z))).Backward();
        Assert.Equal(new float[] { 6f, 24f }, z.Grad!.ToArray());

        using (Autograd.NoGrad()) Assert.False(Cube(z).RequiresGrad);
    }
}
