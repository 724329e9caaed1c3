using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

[Collection(ParallelismThreadsCollection.Name)]
public class ReductionTests
{
    /// <summary>
    /// The independent reference: groups x's elements by their position with the given axes zeroed
    /// (row-major, so each group lists the reduced elements in order) and applies f in double.
    /// </summary>
    private static double[] Reference(Tensor x, int[] axes, Func<List<double>, double> f)
    {
        int r = x.Rank;
        var reduced = new bool[r];
        foreach (int a in axes) reduced[a < 0 ? a + r : a] = true;
        var keep = x.Shape.Select((d, i) => reduced[i] ? 1 : d).ToArray();
        var keepStrides = Tensor.Strides(keep);
        var groups = Enumerable.Range(0, Tensor.Numel(keep)).Select(_ => new List<double>()).ToArray();
        var idx = new int[r];
        for (int flat = 0; flat < x.Size; flat++)
        {
            int rem = flat, o = 0;
            for (int k = r - 1; k >= 0; k--) { idx[k] = rem % x.Shape[k]; rem /= x.Shape[k]; }
            for (int k = 0; k < r; k++) if (!reduced[k]) o += idx[k] * keepStrides[k];
            groups[o].Add(x.Data[flat]);
        }
        return groups.Select(f).ToArray();
    }

    private static int[] Expected(int[] shape, int[] axes, bool keepDim)
    {
        int r = shape.Length;
        var red = axes.Select(a => a < 0 ? a + r : a).ToHashSet();
        return shape.Select((d, i) => (d, i)).Where(t => keepDim || !red.Contains(t.i)).Select(t => red.Contains(t.i) ? 1 : t.d).ToArray();
    }

    private static void AssertClose(double[] want, Tensor got, double rtol = 1e-5, double atol = 1e-5)
    {
        Assert.Equal(want.Length, got.Size);
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(got.Data[i] - want[i]) <= atol + rtol * Math.Abs(want[i]), $"element {i}: {got.Data[i]} vs {want[i]}");
    }

    private static double Var(List<double> v, bool unbiased)
    {
        double m = v.Average();
        return v.Sum(e => (e - m) * (e - m)) / (unbiased ? v.Count - 1 : v.Count);
    }

    public static TheoryData<int[], int> AxisCases()
    {
        var d = new TheoryData<int[], int>();
        foreach (var s in new[] { new[] { 9 }, new[] { 4, 7 }, new[] { 2, 3, 5 }, new[] { 3, 1, 6, 5 } })
            for (int a = -s.Length; a < s.Length; a++) d.Add(s, a);
        return d;
    }

    [Theory]
    [MemberData(nameof(AxisCases))]
    public void OneAxisReductionsMatchScalarLoops(int[] shape, int axis)
    {
        var x = Tensor.Randn(new Rng(21), 1f, shape);
        foreach (bool keep in new[] { false, true })
        {
            var ax = new[] { axis };
            var s = Ops.Sum(x, axis, keep);
            Assert.Equal(Expected(shape, ax, keep), s.Shape);
            AssertClose(Reference(x, ax, v => v.Sum()), s);
            AssertClose(Reference(x, ax, v => v.Average()), Ops.Mean(x, axis, keep));
            AssertClose(Reference(x, ax, v => Var(v, false)), Ops.Var(x, axis, keep));
            var max = Ops.Max(x, axis, keep);
            Assert.Equal(Expected(shape, ax, keep), max.Shape);
            Assert.Equal(Reference(x, ax, v => v.Max()).Select(v => (float)v), max.ToArray());
            Assert.Equal(Reference(x, ax, v => v.Min()).Select(v => (float)v), Ops.Min(x, axis, keep).ToArray());
            Assert.Equal(Reference(x, ax, v => v.IndexOf(v.Max())).Select(v => (int)v), Ops.ArgMax(x, axis));
        }
        if (x.Shape[axis < 0 ? axis + x.Rank : axis] > 1)
            AssertClose(Reference(x, new[] { axis }, v => Var(v, true)), Ops.Var(x, axis, unbiased: true));
    }

    [Theory]
    [InlineData(0, 2)]
    [InlineData(1, 2)]
    [InlineData(-1, 0)]
    [InlineData(3, 1)]
    [InlineData(0, 1, 2, 3)]
    [InlineData(2)]
    public void SeveralAxesMatchScalarLoops(params int[] axes)
    {
        var x = Tensor.Randn(new Rng(22), 1f, 2, 3, 4, 5);
        foreach (bool keep in new[] { false, true })
        {
            var s = Ops.Sum(x, axes, keep);
            Assert.Equal(Expected(x.Shape, axes, keep), s.Shape);
            AssertClose(Reference(x, axes, v => v.Sum()), s);
            AssertClose(Reference(x, axes, v => v.Average()), Ops.Mean(x, axes, keep));
        }
    }

    [Theory]
    [InlineData(new[] { 3, 5 }, new[] { 0 })]
    [InlineData(new[] { 3, 5 }, new[] { -1 })]
    [InlineData(new[] { 2, 3, 9 }, new[] { 1 })]
    [InlineData(new[] { 2, 3, 9 }, new[] { 0, 2 })]
    [InlineData(new[] { 2, 3, 9 }, new[] { -1, -2 })]
    [InlineData(new[] { 17 }, new[] { 0 })]
    public void SumMeanVarGradientsMatchFiniteDifferences(int[] shape, int[] axes)
    {
        var rng = new Rng(23);
        var x = GradCheck.Rand(rng, shape);
        foreach (bool keep in new[] { false, true })
        {
            GradCheck.Check(t => Ops.Sum(t[0], axes, keep), new[] { x });
            GradCheck.Check(t => Ops.Mean(t[0], axes, keep), new[] { x });
        }
        GradCheck.Check(t => Ops.Sum(t[0], axes[0]), new[] { x });
        GradCheck.Check(t => Ops.Var(t[0], axes[0]), new[] { x }, h: 1e-3);
        GradCheck.Check(t => Ops.Var(t[0], axes[0], keepDim: true, unbiased: true), new[] { x }, h: 1e-3);
        GradCheck.Check(t => Ops.Mean(t[0]), new[] { x });
        GradCheck.Check(t => Ops.Norm(t[0]), new[] { x }, h: 1e-3);
    }

    [Theory]
    [InlineData(new[] { 7 }, 0)]
    [InlineData(new[] { 3, 5 }, 0)]
    [InlineData(new[] { 3, 5 }, -1)]
    [InlineData(new[] { 2, 3, 9 }, 1)]
    public void MaxMinGradientsMatchFiniteDifferences(int[] shape, int axis)
    {
        // Distinct values 0.1 apart, so a finite-difference step cannot change which element wins.
        var rng = new Rng(24);
        int n = Tensor.Numel(shape);
        var vals = Enumerable.Range(0, n).Select(i => 0.1f * i - 1f).ToArray();
        rng.Shuffle(vals.AsSpan());
        var x = Tensor.FromArray(vals, shape).RequireGrad();
        GradCheck.Check(t => Ops.Max(t[0], axis), new[] { x }, h: 1e-3);
        GradCheck.Check(t => Ops.Min(t[0], axis, keepDim: true), new[] { x }, h: 1e-3);
        GradCheck.Check(t => Ops.Max(t[0]), new[] { x }, h: 1e-3);
        GradCheck.Check(t => Ops.Min(t[0]), new[] { x }, h: 1e-3);
    }

    [Fact]
    public void ExtremesSendTheGradientToTheFirstTie()
    {
        // [2, 3, 2] with ties along axis 1 in every column (inner > 1 path) and along the last axis;
        // the first tie is not always at index 0.
        var x = Tensor.FromArray(new float[] { 0, 3, 5, 1, 5, 3, 1, 0, 4, 4, 4, 4 }, 2, 3, 2).RequireGrad();
        Ops.Sum(Ops.Max(x, 1)).Backward();
        Assert.Equal(new float[] { 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0 }, x.Grad!.ToArray());
        Assert.Equal(new[] { 1, 0, 1, 1 }, Ops.ArgMax(x, 1));

        x.ZeroGrad();
        Ops.Sum(Ops.Max(x, -1)).Backward();
        Assert.Equal(new float[] { 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0 }, x.Grad!.ToArray());
        Assert.Equal(new[] { 1, 0, 0, 0, 0, 0 }, Ops.ArgMax(x, -1));

        x.ZeroGrad();
        Ops.Max(x).Backward();
        Assert.Equal(1f, x.Grad!.Data[2]);
        Assert.Equal(1f, x.Grad.ToArray().Sum());

        x.ZeroGrad();
        var mn = Ops.Min(x);
        Assert.Equal(0f, mn.Item());
        mn.Backward();
        Assert.Equal(1f, x.Grad!.Data[0]);
        Assert.Equal(1f, x.Grad.ToArray().Sum());
    }

    [Fact]
    public void NormValueAndGradientAtZero()
    {
        var x = Tensor.FromArray(new float[] { 3, -4, 0, 12 }, 2, 2).RequireGrad();
        var n = Ops.Norm(x);
        Assert.Equal(13f, n.Item());
        n.Backward();
        AssertClose(new[] { 3.0 / 13, -4.0 / 13, 0, 12.0 / 13 }, x.Grad!, 1e-6, 0);

        var z = Tensor.Zeros(3).RequireGrad();
        Ops.Norm(z).Backward();
        Assert.Equal(new float[3], z.Grad!.ToArray());
    }

    [Fact]
    public void MeanOfAllAndVarianceByHand()
    {
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 7 }, 2, 3).RequireGrad();
        var m = x.Mean();
        Assert.Equal(22f / 6, m.Item(), 6);
        Assert.Empty(m.Shape);
        m.Backward();
        Assert.All(x.Grad!.ToArray(), g => Assert.Equal(1f / 6, g, 6));
        AssertClose(new[] { 2.0 / 3, 14.0 / 9 }, Ops.Var(x, 1), 1e-6, 0);
        AssertClose(new[] { 1.0, 7.0 / 3 }, Ops.Var(x, 1, unbiased: true), 1e-6, 0);
        AssertClose(new[] { 4.5, 4.5, 8 }, Ops.Var(x, 0, keepDim: true, unbiased: true), 1e-6, 0);
        Assert.Equal(new[] { 1, 3 }, Ops.Var(x, 0, keepDim: true).Shape);
        AssertClose(new[] { 2.5, 3.5, 5 }, x.Mean(0), 1e-6, 0);
        Assert.Equal(new[] { 2, 1 }, x.Sum(1, keepDim: true).Shape);
        Assert.Equal(new float[] { 6, 16 }, x.Sum(1).ToArray());
        Assert.True(float.IsNaN(Ops.Var(Tensor.Ones(3, 1), 1, unbiased: true).Data[0]));
        Assert.All(Ops.Var(Tensor.Zeros(2, 0), 1, unbiased: true).ToArray(), v => Assert.True(float.IsNaN(v)));
        Assert.All(Ops.Var(Tensor.Zeros(0, 2), 0).ToArray(), v => Assert.True(float.IsNaN(v)));
    }

    [Theory]
    [InlineData(new[] { 3, 5000, 7 }, 1)]
    [InlineData(new[] { 7, 40001 }, -1)]
    [InlineData(new[] { 40001, 3 }, 0)]
    [InlineData(new[] { 2, 700, 1100 }, 1)]
    public void LargeReductionsMatchReferenceAndIgnoreThreadCount(int[] shape, int axis)
    {
        var x = Tensor.Randn(new Rng(25), 1f, shape);
        int saved = Parallelism.Threads;
        try
        {
            Parallelism.Threads = 1;
            var s1 = Ops.Sum(x, axis); var v1 = Ops.Var(x, axis); var m1 = Ops.Max(x, axis);
            Parallelism.Threads = 2;
            var s2 = Ops.Sum(x, axis); var v2 = Ops.Var(x, axis); var m2 = Ops.Max(x, axis);
            Assert.Equal(s1.ToArray(), s2.ToArray());
            Assert.Equal(v1.ToArray(), v2.ToArray());
            Assert.Equal(m1.ToArray(), m2.ToArray());
            var ax = new[] { axis };
            // Sums of ~N(0, n) values: absolute tolerance scaled by √n.
            double n = x.Dim(axis);
            AssertClose(Reference(x, ax, v => v.Sum()), s2, rtol: 1e-5, atol: 2e-6 * n);
            AssertClose(Reference(x, ax, v => Var(v, false)), v2, rtol: 1e-4);
            Assert.Equal(Reference(x, ax, v => v.Max()).Select(v => (float)v), m2.ToArray());
        }
        finally { Parallelism.Threads = saved; }
    }

    [Fact]
    public void BadAxesAndEmptyExtentsThrow()
    {
        var x = Tensor.Zeros(2, 3);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Sum(x, 2));
        Assert.Contains("sum", ex.Message);
        Assert.Contains("[2, 3]", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Mean(x, -3));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Var(x, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.ArgMax(x, 2));
        Assert.Contains("repeated", Assert.Throws<ArgumentException>(() => Ops.Sum(x, new[] { 1, -1 })).Message);
        Assert.Throws<ArgumentException>(() => Ops.Mean(x, Array.Empty<int>()));
        Assert.Throws<ArgumentException>(() => Ops.Max(Tensor.Zeros(0)));
        Assert.Throws<ArgumentException>(() => Ops.Min(Tensor.Zeros(2, 0), 1));
        Assert.Throws<ArgumentException>(() => Ops.ArgMax(Tensor.Zeros(2, 0), 1));
        // Summing an empty extent is fine: zeros, as PyTorch.
        Assert.Equal(new float[3], Ops.Sum(Tensor.Zeros(0, 3), 0).ToArray());
    }
}

/// <summary>
/// Tests that change the process-wide Parallelism.Threads join this collection; it never runs beside
/// another collection, so no concurrently running test sees the thread count change under it.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ParallelismThreadsCollection
{
    public const string Name = "Parallelism.Threads";
}
