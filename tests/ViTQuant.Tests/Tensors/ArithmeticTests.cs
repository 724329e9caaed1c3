using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

[Collection(ParallelismThreadsCollection.Name)] // sets Parallelism.Threads
public class ArithmeticTests
{
    [Theory]
    [InlineData(new[] { 3, 4 }, new[] { 3, 4 })]
    [InlineData(new[] { 2, 3, 5 }, new[] { 5 })]
    [InlineData(new[] { 2, 1, 5 }, new[] { 3, 1 })]
    [InlineData(new[] { 1 }, new[] { 4, 3 })]
    [InlineData(new[] { 17 }, new[] { 17 })]
    public void BinaryOpsMatchFiniteDifferences(int[] sa, int[] sb)
    {
        var rng = new Rng(1);
        var a = GradCheck.Rand(rng, sa);
        var b = GradCheck.Rand(rng, sb);
        GradCheck.Check(x => Ops.Add(x[0], x[1]), new[] { a, b });
        GradCheck.Check(x => Ops.Sub(x[0], x[1]), new[] { a, b });
        GradCheck.Check(x => Ops.Mul(x[0], x[1]), new[] { a, b });
        var bPos = Tensor.Uniform(rng, 0.5f, 2f, sb).RequireGrad();
        GradCheck.Check(x => Ops.Div(x[0], x[1]), new[] { a, bPos }, h: 1e-3);
    }

    [Fact]
    public void BroadcastForwardValues()
    {
        var a = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        var b = Tensor.FromArray(new float[] { 10, 20 }, 2, 1);
        Assert.Equal(new float[] { 11, 12, 13, 24, 25, 26 }, (a + b).ToArray());
        Assert.Equal(new float[] { 10, 20, 30, 80, 100, 120 }, (a * b).ToArray());
        Assert.Throws<ArgumentException>(() => a + Tensor.Zeros(4));
    }

    [Fact]
    public void GradientsAccumulateAcrossBackwardCalls()
    {
        var a = Tensor.FromArray(new float[] { 1, 2 }, 2).RequireGrad();
        Ops.Sum(a * 3f).Backward();
        Ops.Sum(a * 3f).Backward();
        Assert.Equal(new float[] { 6, 6 }, a.Grad!.ToArray());
        using (Autograd.NoGrad()) Assert.False((a * 2f).RequiresGrad);
    }

    // Tensors big enough for the elementwise passes to split across workers (≥ 2 × 32768 elements): the sum and the
    // accumulated gradients are the element-by-element float results, whatever the split.
    [Fact]
    public void LargeSameShapeAddIsElementwiseExactForwardAndBackward()
    {
        var rng = new Rng(9);
        int rows = 600, cols = 130; // 78,000 elements
        var a = Tensor.Randn(rng, 1f, rows, cols).RequireGrad();
        var b = Tensor.Randn(rng, 1f, rows, cols).RequireGrad();
        var up = Tensor.Randn(rng, 1f, rows, cols);
        int saved = ViTQuant.Kernels.Parallelism.Threads;
        try
        {
            foreach (int threads in new[] { 1, 2, 3 })
            {
                ViTQuant.Kernels.Parallelism.Threads = threads;
                a.ZeroGrad(); b.ZeroGrad();
                var y = Ops.Add(a, b);
                for (int i = 0; i < y.Size; i++) Assert.Equal(a.Data[i] + b.Data[i], y.Data[i]);
                // a reaches the loss twice (through a + b and through a·up): a fresh gradient up, then up added onto it.
                Ops.Sum(Ops.Add(Ops.Mul(y, up), Ops.Mul(a, up))).Backward();
                for (int i = 0; i < y.Size; i++)
                {
                    Assert.Equal(up.Data[i], b.Grad!.Data[i]);
                    Assert.Equal(up.Data[i] + up.Data[i], a.Grad!.Data[i]);
                }
            }
        }
        finally { ViTQuant.Kernels.Parallelism.Threads = saved; }
    }
    // A residual add hands its output gradient's buffer to its first parent when that intermediate has no gradient yet
    // (Tensor.TakeOrAccumulateGrad): the gradients are the copying path's bits, also when the parent gets more later, when
    // both parents are one tensor (x + x: g, then g added onto itself) and when the output keeps its gradient.
    [Fact]
    public void ResidualAddPassesItsGradientOnWithoutChangingIt()
    {
        var rng = new Rng(10);
        var leaf = Tensor.Randn(rng, 1f, 40, 30).RequireGrad();
        var up = Tensor.Randn(rng, 1f, 40, 30);
        float[] Run(bool retain, bool same)
        {
            leaf.Grad = null;
            var h = Ops.Mul(leaf, 3f);                                // an intermediate: the add's first parent
            var y = same ? Ops.Add(h, h) : Ops.Add(h, Ops.Mul(h, h)); // h gets the add's gradient, then (not same) 2h·g more
            y.RetainsGrad = retain;
            Ops.Sum(Ops.Mul(y, up)).Backward();
            if (retain) Assert.Equal(up.ToArray(), y.Grad!.ToArray()); // kept, so not handed on
            return leaf.Grad!.ToArray();
        }
        foreach (bool same in new[] { false, true })
        {
            var taken = Run(retain: false, same);
            Assert.Equal(Run(retain: true, same), taken);
            for (int i = 0; i < taken.Length; i++)
            {
                float h = 3f * leaf.Data[i], g = up.Data[i];
                float want = same ? 3f * (g + g) : 3f * (g + (h + h) * g);
                Assert.Equal(want, taken[i], 1e-5f * (1f + MathF.Abs(want)));
            }
        }
    }
}
