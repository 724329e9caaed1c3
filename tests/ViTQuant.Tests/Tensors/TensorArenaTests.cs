using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

public class TensorArenaTests
{
    [Fact]
    public void OutputsAreRecycledAfterTheScopeAndComeBackZeroed()
    {
        float[] first;
        using (TensorArena.Scope())
        {
            var t = Tensor.Output(64, 64);
            t.Span.Fill(3f);
            first = t.Data;
        }
        using (TensorArena.Scope())
        {
            var again = Tensor.Output(64, 64);
            Assert.Same(first, again.Data);
            Assert.All(again.ToArray(), v => Assert.Equal(0f, v));
        }
        // Outside a scope: a fresh array every time.
        Assert.NotSame(Tensor.Output(64, 64).Data, Tensor.Output(64, 64).Data);
    }

    [Fact]
    public void LeafGradientsAndUserTensorsAreNeverRecycled()
    {
        var w = Tensor.Ones(64, 64).RequireGrad();
        float[] grad;
        using (TensorArena.Scope())
        {
            var y = Ops.Sum(Ops.Mul(w, w));
            y.Backward();
            grad = w.Grad!.Data;
        }
        using (TensorArena.Scope())
        {
            for (int i = 0; i < 8; i++) Assert.NotSame(grad, Tensor.Output(64, 64).Data);
        }
        Assert.All(w.Grad!.ToArray(), v => Assert.Equal(2f, v));
    }

    [Fact]
    public void ScopesNestAndMustCloseInOrder()
    {
        var outer = TensorArena.Scope();
        var inner = TensorArena.Scope();
        Assert.Throws<InvalidOperationException>(() => outer.Dispose());
        inner.Dispose();
        outer.Dispose();
        Assert.False(TensorArena.IsActive);
    }

    [Fact]
    public void OtherThreadsAllocateNormally()
    {
        using (TensorArena.Scope())
        {
            bool activeThere = true;
            var th = new Thread(() => activeThere = TensorArena.IsActive);
            th.Start();
            th.Join();
            Assert.False(activeThere);
        }
    }

    [Fact]
    public void TrainingStepResultsAreIdenticalWithAndWithoutRecycling()
    {
        float[] Run(bool pooled)
        {
            var rng = new Rng(3);
            var w = Tensor.Randn(rng, 1f, 40, 50).RequireGrad();
            var x = Tensor.Randn(rng, 1f, 30, 50);
            for (int step = 0; step < 3; step++)
            {
                using var scope = pooled ? TensorArena.Scope() : null;
                w.ZeroGrad();
                var loss = Ops.Sum(Ops.Gelu(Ops.MatMul(x, w, transB: true)));
                loss.Backward();
                for (int i = 0; i < w.Size; i++) w.Data[i] -= 0.01f * w.Grad!.Data[i];
            }
            return w.ToArray();
        }
        Assert.Equal(Run(false), Run(true));
    }

    [Fact]
    public void FreeListsUnusedByTheLastTwoOutermostScopesAreDropped()
    {
        float[] kept;
        using (TensorArena.Scope()) kept = Tensor.Output(1031, 3).Data; // a size no other step here uses
        using (TensorArena.Scope()) Tensor.Output(64, 64);
        using (TensorArena.Scope())
        {
            using (TensorArena.Scope()) Tensor.Output(64, 64); // nested scopes do not count as steps
            Assert.Same(kept, Tensor.Output(1031, 3).Data); // one step without it: still pooled
        }
        using (TensorArena.Scope()) Tensor.Output(64, 64);
        using (TensorArena.Scope()) Tensor.Output(64, 64);
        using (TensorArena.Scope()) Assert.NotSame(kept, Tensor.Output(1031, 3).Data); // two steps without it: dropped
    }

    [Fact]
    public void PoolHoldsOnlyWhatTheLastTwoStepsUsedWhateverTheShapesBefore()
    {
        // Every step a new shape (e.g. a different batch size per phase): without eviction the pool would
        // keep all 100 of them.
        for (int i = 0; i < 100; i++)
            using (TensorArena.Scope()) Tensor.Output(2000 + i);
        Assert.Equal(2098 + 2099, TensorArena.PooledFloats);
    }

    // A chunk of images on a worker (inside a parallel body) keeps a size through more of its scopes: chunks of two
    // sizes come in any order, and a size missing for a few chunks must not be allocated afresh.
    [Fact]
    public void InsideAParallelBodyASizeSurvivesSeveralScopesWithoutIt()
    {
        float[]? kept = null, again = null;
        ViTQuant.Kernels.Parallelism.For(0, 1, _ =>
        {
            using (TensorArena.Scope()) kept = Tensor.Output(1033, 3).Data;
            for (int i = 0; i < TensorArena.KeepGenerations + 3; i++)
                using (TensorArena.Scope()) Tensor.Output(64, 64);
            using (TensorArena.Scope()) again = Tensor.Output(1033, 3).Data;
        });
        Assert.Same(kept, again);
    }
}
