using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

[Collection(ParallelismThreadsCollection.Name)]
public class ShapeOpsTests
{
    private static Tensor Iota(params int[] shape) =>
        Tensor.FromArray(Enumerable.Range(0, Tensor.Numel(shape)).Select(i => (float)i).ToArray(), shape);

    private static IEnumerable<int[]> Permutations(int n)
    {
        if (n == 0) { yield return Array.Empty<int>(); yield break; }
        foreach (var p in Permutations(n - 1))
            for (int at = 0; at <= p.Length; at++)
            {
                var q = new List<int>(p);
                q.Insert(at, n - 1);
                yield return q.ToArray();
            }
    }

    // ---- views ----

    [Fact]
    public void ReshapeIsAViewAndItsGradientFlows()
    {
        var x = Iota(2, 3, 4).RequireGrad();
        var y = Ops.Reshape(x, 6, -1);
        Assert.Equal(new[] { 6, 4 }, y.Shape);
        Assert.Same(x.Data, y.Data);
        y.Data[5] = 100f;
        Assert.Equal(100f, x[0, 1, 1]);

        var w = Tensor.Randn(new Rng(31), 1f, 6, 4);
        Ops.Sum(Ops.Mul(y, w)).Backward();
        Assert.Equal(new[] { 2, 3, 4 }, x.Grad!.Shape);
        Assert.Equal(w.ToArray(), x.Grad.ToArray());

        GradCheck.Check(t => Ops.Exp(Ops.Reshape(t[0], 3, -1, 2)), new[] { GradCheck.Rand(new Rng(32), 2, 3, 5) });
        Assert.Equal(new[] { 3, 4, 2 }, x.Reshape(-1, 4, 2).Shape);
        Assert.Equal(new[] { 24 }, x.Reshape(-1).Shape);
    }

    [Fact]
    public void ReshapeRejectsImpossibleShapes()
    {
        var x = Tensor.Zeros(2, 3);
        Assert.Contains("[2, 3]", Assert.Throws<ArgumentException>(() => Ops.Reshape(x, 4, 2)).Message);
        Assert.Throws<ArgumentException>(() => Ops.Reshape(x, -1, -1));
        Assert.Throws<ArgumentException>(() => Ops.Reshape(x, 4, -1));
        Assert.Throws<ArgumentException>(() => Ops.Reshape(x, -2, -3));
        Assert.Throws<ArgumentException>(() => Ops.Reshape(Tensor.Zeros(0, 3), 0, -1));
        Assert.Equal(new[] { 0, 5 }, Ops.Reshape(Tensor.Zeros(0, 3), -1, 5).Shape);
    }

    [Fact]
    public void FlattenUnsqueezeSqueezeShapesAndErrors()
    {
        var x = Iota(2, 3, 4, 5).RequireGrad();
        Assert.Equal(new[] { 2, 60 }, x.Flatten(1, -1).Shape);
        Assert.Equal(new[] { 6, 4, 5 }, Ops.Flatten(x, 0, 1).Shape);
        Assert.Equal(new[] { 2, 12, 5 }, Ops.Flatten(x, -3, -2).Shape);
        Assert.Equal(x.Shape, Ops.Flatten(x, 2, 2).Shape);
        Assert.Equal(new[] { 1 }, Ops.Flatten(Tensor.Scalar(3f), 0, 0).Shape);
        Assert.Same(x.Data, x.Flatten(0, 3).Data);
        Assert.Throws<ArgumentException>(() => Ops.Flatten(x, 2, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Flatten(x, 0, 4));

        Assert.Equal(new[] { 1, 2, 3, 4, 5 }, x.Unsqueeze(0).Shape);
        Assert.Equal(new[] { 2, 3, 4, 5, 1 }, x.Unsqueeze(4).Shape);
        Assert.Equal(new[] { 2, 3, 4, 5, 1 }, x.Unsqueeze(-1).Shape);
        Assert.Equal(new[] { 2, 3, 4, 1, 5 }, x.Unsqueeze(-2).Shape);
        Assert.Throws<ArgumentOutOfRangeException>(() => x.Unsqueeze(5));
        Assert.Throws<ArgumentOutOfRangeException>(() => x.Unsqueeze(-6));

        var u = x.Unsqueeze(2);
        Assert.Equal(x.Shape, u.Squeeze(2).Shape);
        Assert.Equal(x.Shape, u.Squeeze(-3).Shape);
        Assert.Contains("size 3", Assert.Throws<ArgumentException>(() => x.Squeeze(1)).Message);

        Ops.Sum(u.Squeeze(2).Flatten(0, 1)).Backward();
        Assert.All(x.Grad!.ToArray(), g => Assert.Equal(1f, g));
    }

    // ---- permute ----

    [Fact]
    public void PermuteReferenceMatchesIndexArithmeticByHand()
    {
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        Assert.Equal(new float[] { 1, 4, 2, 5, 3, 6 }, Ops.Transpose(x, 0, 1).ToArray());
        Assert.Equal(new[] { 3, 2 }, x.Transpose(-1, 0).Shape);

        var z = Iota(2, 3, 4);
        var dst = new float[24];
        Ops.PermuteReference(z.Data, z.Shape, new[] { 2, 0, 1 }, dst);
        var y = new Tensor(dst, 4, 2, 3);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < 4; k++)
                    Assert.Equal(z[i, j, k], y[k, i, j]);
        Assert.Equal(y.ToArray(), z.Permute(2, 0, 1).ToArray());
        Assert.Equal(y.ToArray(), z.Permute(-1, 0, 1).ToArray());
    }

    [Theory]
    [InlineData(new[] { 5, 7 })]
    [InlineData(new[] { 3, 1, 4 })]
    [InlineData(new[] { 2, 3, 5 })]
    [InlineData(new[] { 2, 3, 5, 7 })]
    [InlineData(new[] { 1, 9, 1, 4 })]
    [InlineData(new[] { 3, 2, 1, 2, 3 })]
    public void EveryPermutationMatchesTheReference(int[] shape)
    {
        var x = Tensor.Randn(new Rng(33), 1f, shape);
        foreach (var p in Permutations(shape.Length))
        {
            var want = new float[x.Size];
            Ops.PermuteReference(x.Data, x.Shape, p, want);
            var y = Ops.Permute(x, p);
            Assert.Equal(p.Select(a => shape[a]).ToArray(), y.Shape);
            Assert.Equal(want, y.ToArray());
        }
    }

    [Theory]
    [InlineData(new[] { 70, 33 }, new[] { 1, 0 })]                     // tiled 2-D transpose with ragged tiles
    [InlineData(new[] { 3, 37, 45 }, new[] { 0, 2, 1 })]               // batched transpose
    [InlineData(new[] { 4, 3, 197, 9 }, new[] { 0, 1, 3, 2 })]         // leading axes merge into the batch
    [InlineData(new[] { 2, 197, 3, 3, 8 }, new[] { 2, 0, 3, 1, 4 })]   // ViT qkv split: last axis kept (run copies)
    [InlineData(new[] { 2, 3, 197, 8 }, new[] { 0, 2, 1, 3 })]         // heads back to tokens
    [InlineData(new[] { 16, 9, 300 }, new[] { 2, 1, 0 })]              // strided gather
    public void LargePermutesMatchTheReferenceAtAnyThreadCount(int[] shape, int[] perm)
    {
        var x = Tensor.Randn(new Rng(34), 1f, shape);
        var want = new float[x.Size];
        Ops.PermuteReference(x.Data, x.Shape, perm, want);
        int saved = Parallelism.Threads;
        try
        {
            foreach (int threads in new[] { 1, 2 })
            {
                Parallelism.Threads = threads;
                Assert.Equal(want, Ops.Permute(x, perm).ToArray());
            }
        }
        finally { Parallelism.Threads = saved; }
    }

    [Theory]
    [InlineData(new[] { 3, 5 }, new[] { 1, 0 })]
    [InlineData(new[] { 2, 3, 5 }, new[] { 2, 0, 1 })]
    [InlineData(new[] { 2, 3, 4, 5 }, new[] { 0, 2, 1, 3 })]
    [InlineData(new[] { 2, 3, 4, 5 }, new[] { 3, 1, 0, 2 })]
    public void PermuteGradientsMatchFiniteDifferences(int[] shape, int[] perm)
    {
        GradCheck.Check(t => Ops.Permute(t[0], perm), new[] { GradCheck.Rand(new Rng(35), shape) });
        GradCheck.Check(t => Ops.Transpose(t[0], 0, -1), new[] { GradCheck.Rand(new Rng(36), shape) });
    }

    [Fact]
    public void PermuteRejectsNonPermutations()
    {
        var x = Tensor.Zeros(2, 3, 4);
        Assert.Contains("[2, 3, 4]", Assert.Throws<ArgumentException>(() => Ops.Permute(x, 0, 1)).Message);
        Assert.Contains("repeats", Assert.Throws<ArgumentException>(() => Ops.Permute(x, 0, 1, 1)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Permute(x, 0, 1, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Transpose(x, 0, 3));
    }

    // ---- joins and slices ----

    [Fact]
    public void ConcatAndStackValues()
    {
        var a = Tensor.FromArray(new float[] { 1, 2, 3, 4 }, 2, 2);
        var b = Tensor.FromArray(new float[] { 5, 6 }, 2, 1);
        var c = Tensor.FromArray(new float[] { 7, 8 }, 1, 2);
        Assert.Equal(new float[] { 1, 2, 5, 3, 4, 6 }, Ops.Concat(new[] { a, b }, -1).ToArray());
        Assert.Equal(new[] { 2, 3 }, Ops.Concat(new[] { a, b }, 1).Shape);
        Assert.Equal(new float[] { 1, 2, 3, 4, 7, 8 }, Ops.Concat(new[] { a, c }, 0).ToArray());

        var d = Tensor.FromArray(new float[] { 5, 6, 7, 8 }, 2, 2);
        Assert.Equal(new[] { 2, 2, 2 }, Ops.Stack(new[] { a, d }, 0).Shape);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6, 7, 8 }, Ops.Stack(new[] { a, d }, 0).ToArray());
        Assert.Equal(new float[] { 1, 2, 5, 6, 3, 4, 7, 8 }, Ops.Stack(new[] { a, d }, 1).ToArray());
        Assert.Equal(new float[] { 1, 5, 2, 6, 3, 7, 4, 8 }, Ops.Stack(new[] { a, d }, -1).ToArray());
        Assert.Equal(new[] { 2, 2, 2 }, Ops.Stack(new[] { a, d }, 2).Shape);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(-1)]
    public void ConcatAndStackGradientsMatchFiniteDifferences(int axis)
    {
        var rng = new Rng(37);
        int[] Shape(int extent) { var s = new[] { 2, 3, 5 }; s[axis < 0 ? axis + 3 : axis] = extent; return s; }
        var xs = new[] { GradCheck.Rand(rng, Shape(1)), GradCheck.Rand(rng, Shape(3)), GradCheck.Rand(rng, Shape(2)) };
        GradCheck.Check(t => Ops.Concat(t, axis), xs);
        var same = new[] { GradCheck.Rand(rng, 2, 3, 5), Tensor.Randn(rng, 1f, 2, 3, 5), GradCheck.Rand(rng, 2, 3, 5) };
        GradCheck.Check(t => Ops.Stack(t, axis), same);
        Assert.Null(same[1].Grad); // a constant input gets no gradient
    }

    [Fact]
    public void ConcatAndStackRejectMismatchedInputs()
    {
        var a = Tensor.Zeros(2, 3);
        Assert.Throws<ArgumentException>(() => Ops.Concat(Array.Empty<Tensor>(), 0));
        Assert.Contains("[2, 3], [3, 3]", Assert.Throws<ArgumentException>(() => Ops.Concat(new[] { a, Tensor.Zeros(3, 3) }, 1)).Message);
        Assert.Throws<ArgumentException>(() => Ops.Concat(new[] { a, Tensor.Zeros(2, 3, 1) }, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Concat(new[] { a, a }, 2));
        Assert.Throws<ArgumentException>(() => Ops.Stack(new[] { a, Tensor.Zeros(3, 2) }, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Stack(new[] { a, a }, 3));
        Assert.Throws<ArgumentException>(() => Ops.Stack(Array.Empty<Tensor>(), 0));
    }

    [Fact]
    public void NarrowValuesGradientsAndErrors()
    {
        var x = Iota(3, 4);
        Assert.Equal(new float[] { 1, 2, 5, 6, 9, 10 }, x.Narrow(1, 1, 2).ToArray());
        Assert.Equal(new float[] { 8, 9, 10, 11 }, Ops.Narrow(x, 0, -1, 1).ToArray());
        Assert.Equal(new[] { 3, 0 }, Ops.Narrow(x, -1, 4, 0).Shape);
        foreach (int axis in new[] { 0, 1, -1 })
            GradCheck.Check(t => Ops.Narrow(t[0], axis, 1, 2), new[] { GradCheck.Rand(new Rng(38), 3, 4, 5) });
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Narrow(x, 1, 3, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Narrow(x, 1, -5, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Narrow(x, 0, 0, -1));
    }

    [Fact]
    public void IndexSelectAccumulatesDuplicateIndices()
    {
        var x = Iota(4, 3).RequireGrad();
        var rows = Ops.IndexSelect(x, 0, new[] { 2, 0, 2, 2 });
        Assert.Equal(new float[] { 6, 7, 8, 0, 1, 2, 6, 7, 8, 6, 7, 8 }, rows.ToArray());
        Ops.Sum(rows).Backward();
        Assert.Equal(new float[] { 1, 1, 1, 0, 0, 0, 3, 3, 3, 0, 0, 0 }, x.Grad!.ToArray());

        x.ZeroGrad();
        var cols = Ops.IndexSelect(x, -1, new[] { 1, 1, 0 }); // inner == 1 path
        Assert.Equal(new float[] { 1, 1, 0, 4, 4, 3, 7, 7, 6, 10, 10, 9 }, cols.ToArray());
        Ops.Sum(cols).Backward();
        Assert.Equal(new float[] { 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0 }, x.Grad!.ToArray());

        GradCheck.Check(t => Ops.IndexSelect(t[0], 1, new[] { 3, 0, 3 }), new[] { GradCheck.Rand(new Rng(39), 2, 5, 3) });
        Assert.Equal(new[] { 4, 0 }, Ops.IndexSelect(x, 1, Array.Empty<int>()).Shape);
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.IndexSelect(x, 0, new[] { 4 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.IndexSelect(x, 0, new[] { -1 }));
    }

    [Fact]
    public void GatherRowsPicksOnePerRow()
    {
        var x = Iota(3, 4).RequireGrad();
        var y = Ops.GatherRows(x, new[] { 3, 0, 2 });
        Assert.Equal(new float[] { 3, 4, 10 }, y.ToArray());
        Ops.Sum(Ops.Mul(y, Tensor.FromArray(new float[] { 1, 2, 3 }, 3))).Backward();
        Assert.Equal(new float[] { 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 3, 0 }, x.Grad!.ToArray());
        GradCheck.Check(t => Ops.GatherRows(t[0], new[] { 1, 1, 0, 4 }), new[] { GradCheck.Rand(new Rng(40), 4, 5) });
        Assert.Throws<ArgumentException>(() => Ops.GatherRows(Tensor.Zeros(3), new[] { 0, 0, 0 }));
        Assert.Throws<ArgumentException>(() => Ops.GatherRows(x, new[] { 0, 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.GatherRows(x, new[] { 0, 4, 0 }));
    }

    // TakeRows: rows of C floats moved into a new shape by a pattern repeated per group, −1 giving a zero row; its backward
    // writes a fresh gradient row by row when no row is taken twice (the rows never taken cleared), else adds, and adds
    // onto a gradient already there.
    [Fact]
    public void TakeRowsMovesRowsAndScattersTheGradientBack()
    {
        var x = Iota(4, 3).RequireGrad();
        var y = Ops.TakeRows(x, new[] { 2, -1, 0 }, new[] { 1, 3, 3 });
        Assert.Equal(new[] { 1, 3, 3 }, y.Shape);
        Assert.Equal(new float[] { 6, 7, 8, 0, 0, 0, 0, 1, 2 }, y.ToArray());
        var up = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 1, 3, 3);
        Ops.Sum(Ops.Mul(y, up)).Backward();
        Assert.Equal(new float[] { 7, 8, 9, 0, 0, 0, 1, 2, 3, 0, 0, 0 }, x.Grad!.ToArray()); // fresh: rows 1 and 3 cleared
        Ops.Sum(Ops.Mul(Ops.TakeRows(x, new[] { 2, -1, 0 }, new[] { 3, 3 }), Ops.Reshape(up, 3, 3))).Backward();
        Assert.Equal(new float[] { 14, 16, 18, 0, 0, 0, 2, 4, 6, 0, 0, 0 }, x.Grad!.ToArray()); // added onto the first
        x.ZeroGrad();
        Ops.Sum(Ops.TakeRows(x, new[] { 3, 3, -1, 1 }, new[] { 4, 3 })).Backward(); // row 3 twice: added
        Assert.Equal(new float[] { 0, 0, 0, 1, 1, 1, 0, 0, 0, 2, 2, 2 }, x.Grad!.ToArray());
        GradCheck.Check(t => Ops.TakeRows(t[0], new[] { 1, -1, 4, 1 }, new[] { 2, 2, 3 }), new[] { GradCheck.Rand(new Rng(41), 5, 3) });
        // A pattern repeated per group: two groups of two source rows, each read as (row 1, zeros, row 0).
        var twice = Ops.TakeRows(Iota(4, 3), new[] { 1, -1, 0 }, new[] { 2, 3, 3 });
        Assert.Equal(new float[] { 3, 4, 5, 0, 0, 0, 0, 1, 2, 9, 10, 11, 0, 0, 0, 6, 7, 8 }, twice.ToArray());
        GradCheck.Check(t => Ops.TakeRows(t[0], new[] { 2, -1, 0, 2 }, new[] { 3, 4, 2 }), new[] { GradCheck.Rand(new Rng(42), 9, 2) });
        Assert.Throws<ArgumentException>(() => Ops.TakeRows(x, new[] { 0, 1, 2 }, new[] { 2, 3, 3 })); // 2 groups of 4 rows: 2 each, row 2 past them
        Assert.Throws<ArgumentException>(() => Ops.TakeRows(Iota(3, 3), new[] { 0 }, new[] { 2, 3 })); // 3 rows in 2 groups
        // An addend: Add(addend, TakeRows(...)) bit for bit, its gradient the output's and x's the rows scattered back.
        var src = Tensor.Randn(new Rng(43), 1f, 4, 3).RequireGrad();
        var leaf = Tensor.Randn(new Rng(44), 1f, 3, 3).RequireGrad();
        var weights = Tensor.Randn(new Rng(45), 1f, 3, 3);
        (float[] Y, float[] Src, float[] Leaf) Grads(bool fusedAdd)
        {
            src.ZeroGrad();
            leaf.ZeroGrad();
            var addend = Ops.Scale(leaf, 1.5f); // not a leaf: it may take the output gradient's buffer
            var y = fusedAdd ? Ops.TakeRows(src, new[] { 2, -1, 0 }, new[] { 3, 3 }, addend)
                : Ops.Add(addend, Ops.TakeRows(src, new[] { 2, -1, 0 }, new[] { 3, 3 }));
            Ops.Sum(Ops.Mul(y, weights)).Backward();
            return (y.ToArray(), src.Grad!.ToArray(), leaf.Grad!.ToArray());
        }
        var (fy, fs, fl) = Grads(true);
        var (ay, asrc, al) = Grads(false);
        Assert.Equal(ay, fy);
        Assert.Equal(asrc, fs);
        Assert.Equal(al, fl);
        GradCheck.Check(t => Ops.TakeRows(t[0], new[] { 1, -1, 2 }, new[] { 3, 2 }, t[1]), new[] { GradCheck.Rand(new Rng(46), 3, 2), GradCheck.Rand(new Rng(47), 3, 2) });
        Assert.Throws<ArgumentException>(() => Ops.TakeRows(x, new[] { 0, 1 }, new[] { 2, 3 }, Tensor.Zeros(3, 2)));
        Assert.Throws<ArgumentException>(() => Ops.TakeRows(x, new[] { 0, 4 }, new[] { 2, 3 }));
        Assert.Throws<ArgumentException>(() => Ops.TakeRows(x, new[] { 0, -2 }, new[] { 2, 3 }));
        Assert.Throws<ArgumentException>(() => Ops.TakeRows(x, new[] { 0, 1 }, new[] { 3, 2 }));
    }

    // ---- roll, flip, broadcast, pad ----

    [Fact]
    public void RollMatchesTorchRoll()
    {
        var x = Iota(5);
        Assert.Equal(new float[] { 3, 4, 0, 1, 2 }, Ops.Roll(x, 2, 0).ToArray());
        Assert.Equal(new float[] { 1, 2, 3, 4, 0 }, Ops.Roll(x, -1, 0).ToArray());
        Assert.Equal(new float[] { 3, 4, 0, 1, 2 }, Ops.Roll(x, 7, -1).ToArray());
        Assert.Equal(x.ToArray(), Ops.Roll(x, -10, 0).ToArray());
        var m = Iota(3, 2);
        Assert.Equal(new float[] { 4, 5, 0, 1, 2, 3 }, Ops.Roll(m, 1, 0).ToArray());
        Assert.Equal(new float[] { 1, 0, 3, 2, 5, 4 }, Ops.Roll(m, 1, 1).ToArray());
        foreach (var (shift, axis) in new[] { (2, 1), (-1, 0), (4, -1) })
            GradCheck.Check(t => Ops.Roll(t[0], shift, axis), new[] { GradCheck.Rand(new Rng(41), 2, 3, 5) });
        Assert.Equal(new[] { 0, 3 }, Ops.Roll(Tensor.Zeros(0, 3), 1, 0).Shape);
    }

    [Fact]
    public void FlipReversesOneAxis()
    {
        var m = Iota(2, 3);
        Assert.Equal(new float[] { 2, 1, 0, 5, 4, 3 }, Ops.Flip(m, 1).ToArray());
        Assert.Equal(new float[] { 3, 4, 5, 0, 1, 2 }, Ops.Flip(m, -2).ToArray());
        foreach (int axis in new[] { 0, 1, -1 })
            GradCheck.Check(t => Ops.Flip(t[0], axis), new[] { GradCheck.Rand(new Rng(42), 2, 3, 5) });
    }

    [Fact]
    public void BroadcastToCopiesAndSumsBack()
    {
        var x = Tensor.FromArray(new float[] { 1, 2, 3 }, 3, 1).RequireGrad();
        var y = Ops.BroadcastTo(x, 2, 3, 4);
        Assert.Equal(new[] { 2, 3, 4 }, y.Shape);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < 4; k++)
                    Assert.Equal(j + 1f, y[i, j, k]);
        Ops.Sum(y).Backward();
        Assert.Equal(new float[] { 8, 8, 8 }, x.Grad!.ToArray());
        GradCheck.Check(t => Ops.BroadcastTo(t[0], 2, 3, 5), new[] { GradCheck.Rand(new Rng(43), 3, 1) });
        GradCheck.Check(t => Ops.BroadcastTo(t[0], 4, 5), new[] { GradCheck.Rand(new Rng(44), 5) });
        Assert.Contains("[3, 1]", Assert.Throws<ArgumentException>(() => Ops.BroadcastTo(x, 2, 4)).Message);
        Assert.Throws<ArgumentException>(() => Ops.BroadcastTo(x, 3));
    }

    [Fact]
    public void Pad2dSurroundsTheLastTwoAxes()
    {
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4 }, 1, 2, 2);
        var y = Ops.Pad2d(x, 1, -1f);
        Assert.Equal(new[] { 1, 4, 4 }, y.Shape);
        Assert.Equal(new float[] { -1, -1, -1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1, -1, -1, -1 }, y.ToArray());
        Assert.Equal(x.ToArray(), Ops.Pad2d(x, 0, 5f).ToArray());
        GradCheck.Check(t => Ops.Pad2d(t[0], 2, 0.5f), new[] { GradCheck.Rand(new Rng(45), 2, 3, 5) });
        GradCheck.Check(t => Ops.Pad2d(t[0], 1, 0f), new[] { GradCheck.Rand(new Rng(46), 3, 7) });
        Assert.Throws<ArgumentException>(() => Ops.Pad2d(Tensor.Zeros(4), 1, 0f));
        Assert.Throws<ArgumentException>(() => Ops.Pad2d(x, -1, 0f));
    }
}
