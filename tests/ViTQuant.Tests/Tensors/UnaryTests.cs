using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

[Collection(ParallelismThreadsCollection.Name)]
public class UnaryTests
{
    /// <summary>Each op with its scalar definition, its scalar derivative and an input range away from singularities.</summary>
    private static readonly (string name, Func<Tensor, Tensor> op, Func<float, float> f, Func<float, float> df, float lo, float hi)[] Cases =
    {
        ("neg", Ops.Neg, v => -v, _ => -1f, -2f, 2f),
        ("exp", Ops.Exp, MathF.Exp, MathF.Exp, -2f, 2f),
        ("log", Ops.Log, MathF.Log, v => 1f / v, 0.5f, 3f),
        ("sqrt", Ops.Sqrt, MathF.Sqrt, v => 0.5f / MathF.Sqrt(v), 0.5f, 3f),
        ("square", Ops.Square, v => v * v, v => 2 * v, -2f, 2f),
        ("pow2", x => Ops.Pow(x, 2f), v => v * v, v => 2 * v, -2f, 2f),
        ("pow3", x => Ops.Pow(x, 3f), v => v * v * v, v => 3 * v * v, -2f, 2f),
        ("pow1.5", x => Ops.Pow(x, 1.5f), v => MathF.Pow(v, 1.5f), v => 1.5f * MathF.Sqrt(v), 0.5f, 3f),
        ("pow-0.5", x => Ops.Pow(x, -0.5f), v => 1f / MathF.Sqrt(v), v => -0.5f * MathF.Pow(v, -1.5f), 0.5f, 3f),
        ("abs", Ops.Abs, MathF.Abs, v => MathF.Sign(v), -2f, 2f),
        ("clamp", x => Ops.Clamp(x, -0.7f, 0.9f), v => Math.Clamp(v, -0.7f, 0.9f), v => v >= -0.7f && v <= 0.9f ? 1f : 0f, -2f, 2f),
        ("relu", Ops.Relu, v => MathF.Max(v, 0f), v => v > 0 ? 1f : 0f, -2f, 2f),
        ("sigmoid", Ops.Sigmoid, v => 1f / (1f + MathF.Exp(-v)), v => { float s = 1f / (1f + MathF.Exp(-v)); return s * (1 - s); }, -4f, 4f),
        ("tanh", Ops.Tanh, MathF.Tanh, v => 1f - MathF.Tanh(v) * MathF.Tanh(v), -3f, 3f),
        ("scale", x => Ops.Scale(x, -1.75f), v => v * -1.75f, _ => -1.75f, -2f, 2f),
        ("add_scalar", x => Ops.AddScalar(x, 0.25f), v => v + 0.25f, _ => 1f, -2f, 2f),
    };

    public static TheoryData<string> CaseNames => new(Cases.Select(c => c.name));

    /// <summary>Inputs in [lo, hi] kept at least `gap` away from the kinks of abs/clamp/relu so finite differences do not straddle one.</summary>
    private static Tensor Input(Rng rng, float lo, float hi, int[] shape)
    {
        var x = Tensor.Uniform(rng, lo, hi, shape);
        var d = x.Data;
        foreach (float kink in new[] { 0f, -0.7f, 0.9f })
            for (int i = 0; i < x.Size; i++)
                if (MathF.Abs(d[i] - kink) < 0.05f) d[i] = kink + (d[i] >= kink ? 0.05f : -0.05f);
        return x.RequireGrad();
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void ForwardMatchesScalarDefinition(string name)
    {
        var c = Cases.Single(k => k.name == name);
        var rng = new Rng(11);
        foreach (var shape in new[] { new[] { 1 }, new[] { 9 }, new[] { 4, 13 }, new[] { 2, 3, 5, 7 } })
        {
            var x = Tensor.Uniform(rng, c.lo, c.hi, shape);
            var y = c.op(x);
            Assert.Equal(shape, y.Shape);
            for (int i = 0; i < x.Size; i++)
            {
                float want = c.f(x.Data[i]);
                Assert.True(MathF.Abs(y.Data[i] - want) <= 1e-6f + 2e-6f * MathF.Abs(want), $"{name}({x.Data[i]}) = {y.Data[i]}, want {want}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void GradientsMatchFiniteDifferences(string name)
    {
        var c = Cases.Single(k => k.name == name);
        var rng = new Rng(12);
        // Sizes that are not multiples of the 8-wide SIMD vector, so the remainder paths run.
        foreach (var shape in new[] { new[] { 7 }, new[] { 3, 5 }, new[] { 2, 3, 9 }, new[] { 17 } })
            GradCheck.Check(t => c.op(t[0]), new[] { Input(rng, c.lo, c.hi, shape) }, h: 1e-3);
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void LargeInputSplitAcrossWorkersMatchesScalarDerivative(string name)
    {
        // 70001 elements: more than one parallel chunk and many scratch blocks, plus a ragged tail.
        var c = Cases.Single(k => k.name == name);
        int saved = Parallelism.Threads;
        Parallelism.Threads = 2;
        try
        {
            var rng = new Rng(13);
            var x = Input(rng, c.lo, c.hi, new[] { 70001 });
            var w = Tensor.Uniform(rng, -1f, 1f, 70001);
            var y = c.op(x);
            Ops.Sum(Ops.Mul(y, w)).Backward();
            for (int i = 0; i < x.Size; i++)
            {
                float v = x.Data[i];
                float want = c.df(v) * w.Data[i];
                // Assert.Fail only on a miss: formatting a message for all 70001 elements would dominate the test.
                if (!(MathF.Abs(x.Grad!.Data[i] - want) <= 1e-5f + 1e-5f * MathF.Abs(want))) Assert.Fail($"{name}' at {v}: {x.Grad.Data[i]}, want {want}");
                float fy = c.f(v);
                if (!(MathF.Abs(y.Data[i] - fy) <= 1e-6f + 2e-6f * MathF.Abs(fy))) Assert.Fail($"{name}({v}) = {y.Data[i]}, want {fy}");
            }
        }
        finally { Parallelism.Threads = saved; }
    }

    [Fact]
    public void KinksUsePyTorchSubgradients()
    {
        var x = Tensor.FromArray(new float[] { -1f, 0f, 1f, 2f, 3f }, 5).RequireGrad();
        Ops.Sum(Ops.Abs(x)).Backward();
        Assert.Equal(new float[] { -1, 0, 1, 1, 1 }, x.Grad!.ToArray());

        x.ZeroGrad();
        Ops.Sum(Ops.Relu(x)).Backward();
        Assert.Equal(new float[] { 0, 0, 1, 1, 1 }, x.Grad!.ToArray());

        // Clamp: the bounds themselves pass the gradient (min <= x <= max).
        x.ZeroGrad();
        var y = Ops.Clamp(x, 0f, 2f);
        Assert.Equal(new float[] { 0, 0, 1, 2, 2 }, y.ToArray());
        Ops.Sum(y).Backward();
        Assert.Equal(new float[] { 0, 1, 1, 1, 0 }, x.Grad!.ToArray());

        // Pow with p = 0 is constant: no gradient.
        x.ZeroGrad();
        Ops.Sum(Ops.Pow(x, 0f)).Backward();
        Assert.Equal(new float[5], x.Grad!.ToArray());
    }

    [Fact]
    public void ClampRejectsInvertedBounds()
    {
        var ex = Assert.Throws<ArgumentException>(() => Ops.Clamp(Tensor.Zeros(3), 1f, 0f));
        Assert.Contains("clamp", ex.Message);
    }

    /// <summary>a on a grid of 0.3 and b offset by 0.15, so |a − b| ≥ 0.15 and no finite difference flips the choice.</summary>
    private static (Tensor a, Tensor b) Separated(Rng rng, int[] sa, int[] sb)
    {
        var a = Tensor.Zeros(sa);
        var b = Tensor.Zeros(sb);
        for (int i = 0; i < a.Size; i++) a.Data[i] = 0.3f * rng.NextInt(-5, 5);
        for (int i = 0; i < b.Size; i++) b.Data[i] = 0.3f * rng.NextInt(-5, 5) + 0.15f;
        return (a.RequireGrad(), b.RequireGrad());
    }

    [Theory]
    [InlineData(new[] { 3, 5 }, new[] { 3, 5 })]
    [InlineData(new[] { 2, 3, 9 }, new[] { 9 })]
    [InlineData(new[] { 2, 1, 5 }, new[] { 3, 1 })]
    [InlineData(new[] { 1 }, new[] { 4, 7 })]
    public void MaximumMinimumGradientsWithBroadcasting(int[] sa, int[] sb)
    {
        var rng = new Rng(14);
        var (a, b) = Separated(rng, sa, sb);
        GradCheck.Check(t => Ops.Maximum(t[0], t[1]), new[] { a, b });
        GradCheck.Check(t => Ops.Minimum(t[0], t[1]), new[] { a, b });

        // Forward values against a direct broadcast loop over the output shape.
        var mx = Ops.Maximum(a, b);
        var mn = Ops.Minimum(a, b);
        var ab = Ops.BroadcastTo(a, mx.Shape);
        var bb = Ops.BroadcastTo(b, mx.Shape);
        for (int i = 0; i < mx.Size; i++)
        {
            Assert.Equal(Math.Max(ab.Data[i], bb.Data[i]), mx.Data[i]);
            Assert.Equal(Math.Min(ab.Data[i], bb.Data[i]), mn.Data[i]);
        }
    }

    [Fact]
    public void MaximumTiesSendTheGradientToA()
    {
        var a = Tensor.FromArray(new float[] { 1, 2, 3 }, 3).RequireGrad();
        var b = Tensor.FromArray(new float[] { 1, 5, 0 }, 3).RequireGrad();
        Ops.Sum(Ops.Maximum(a, b)).Backward();
        Assert.Equal(new float[] { 1, 0, 1 }, a.Grad!.ToArray());
        Assert.Equal(new float[] { 0, 1, 0 }, b.Grad!.ToArray());

        a.ZeroGrad(); b.ZeroGrad();
        Ops.Sum(Ops.Minimum(a, b)).Backward();
        Assert.Equal(new float[] { 1, 1, 0 }, a.Grad!.ToArray());
        Assert.Equal(new float[] { 0, 0, 1 }, b.Grad!.ToArray());

        // A broadcast b collects the gradient of every output position it wins.
        var c = Tensor.FromArray(new float[] { 2.5f }, 1).RequireGrad();
        a.ZeroGrad();
        Ops.Sum(Ops.Maximum(a, c)).Backward();
        Assert.Equal(new float[] { 0, 0, 1 }, a.Grad!.ToArray());
        Assert.Equal(new float[] { 2 }, c.Grad!.ToArray());
    }

    [Fact]
    public void MaximumPropagatesNaNAndRejectsBadShapes()
    {
        var a = Tensor.FromArray(new float[] { float.NaN, 1 }, 2);
        var b = Tensor.FromArray(new float[] { 0, float.NaN }, 2);
        Assert.All(Ops.Maximum(a, b).ToArray(), v => Assert.True(float.IsNaN(v)));
        Assert.All(Ops.Minimum(a, Tensor.Zeros(2, 2)).ToArray()[..1], v => Assert.True(float.IsNaN(v)));
        var ex = Assert.Throws<ArgumentException>(() => Ops.Maximum(Tensor.Zeros(2, 3), Tensor.Zeros(4)));
        Assert.Contains("[2, 3]", ex.Message);
    }

    [Fact]
    public void NoGradScopeRecordsNothingAndUnaryMinusNegates()
    {
        var x = Tensor.FromArray(new float[] { 1, -2, 3 }, 3).RequireGrad();
        using (Autograd.NoGrad()) Assert.False(Ops.Exp(x).RequiresGrad);
        var y = -x;
        Assert.Equal(new float[] { -1, 2, -3 }, y.ToArray());
        Ops.Sum(y * Tensor.FromArray(new float[] { 1, 2, 3 }, 3)).Backward();
        Assert.Equal(new float[] { -1, -2, -3 }, x.Grad!.ToArray());
        Assert.Equal(new float[] { 1, 2, 3 }, x.Abs().ToArray());
        Assert.Equal(new float[] { 1, 4, 9 }, x.Pow(2f).ToArray());
    }

    [Fact]
    public void EmptyTensorsPassThrough()
    {
        var x = Tensor.Zeros(0, 3).RequireGrad();
        var y = Ops.Tanh(x);
        Assert.Equal(new[] { 0, 3 }, y.Shape);
        Assert.Equal(0, Ops.Sum(Ops.Maximum(y, Tensor.Zeros(3))).Item());
    }
}
