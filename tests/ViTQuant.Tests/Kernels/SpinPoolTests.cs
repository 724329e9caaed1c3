using ViTQuant.Kernels;

namespace ViTQuant.Tests.Kernels;

// SpinPool, the worker pool behind Parallelism.For (off with VITQ_SPIN_POOL=0): every item runs exactly once,
// the caller's AsyncLocal scopes reach the workers, item exceptions come back as an AggregateException (as
// from Parallel.For), bodies see InsideParallelBody, and a second caller while the pool is busy is refused
// (Parallelism.For then uses Parallel.For).
public class SpinPoolTests
{
    private static readonly AsyncLocal<int> Scope = new();

    // The pool is the default for every Parallelism.For, so a test running beside this one may hold it for a
    // moment: ask again until it is free (a refused TryRun runs nothing).
    private static bool WhenFree(Func<bool> tryRun)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (tryRun()) return true;
            Thread.Sleep(1);
        }
        return false;
    }

    [Fact]
    public void RunsEveryItemOnceWithTheCallersContext()
    {
        for (int round = 0; round < 50; round++)
        {
            int n = 1 + round * 7;
            var hits = new int[n];
            int wrongScope = 0, outside = 0;
            Scope.Value = round + 1;
            Assert.True(WhenFree(() => SpinPool.TryRun(0, n, 2, i =>
            {
                Interlocked.Increment(ref hits[i]);
                if (Scope.Value != round + 1) Interlocked.Increment(ref wrongScope);
                if (!Parallelism.InsideParallelBody) Interlocked.Increment(ref outside);
                if (i % 5 == 0) Thread.SpinWait(200);
            })));
            Assert.All(hits, h => Assert.Equal(1, h));
            Assert.Equal(0, wrongScope);
            Assert.Equal(0, outside);
        }
        Assert.False(Parallelism.InsideParallelBody);
    }

    [Fact]
    public void ItemExceptionsComeBackAsAggregateAfterAllItemsRan()
    {
        int ran = 0;
        var e = Assert.Throws<AggregateException>(() => WhenFree(() => SpinPool.TryRun(0, 40, 1, i =>
        {
            Interlocked.Increment(ref ran);
            if (i == 7) throw new InvalidOperationException("item 7");
        })));
        Assert.Contains(e.Flatten().InnerExceptions, x => x is InvalidOperationException { Message: "item 7" });
        Assert.Equal(40, ran);
        // The pool is free again afterwards.
        int count = 0;
        Assert.True(WhenFree(() => SpinPool.TryRun(0, 10, 1, _ => Interlocked.Increment(ref count))));
        Assert.Equal(10, count);
    }

    [Fact]
    public void ASecondCallerWhileBusyIsRefused()
    {
        bool? other = null;
        Assert.True(WhenFree(() => SpinPool.TryRun(0, 2, 1, i =>
        {
            if (i != 0) return;
            // Another thread asks for the pool while this region holds it.
            other = Task.Run(() => SpinPool.TryRun(0, 3, 1, _ => { })).Result;
        })));
        Assert.False(other);
    }
}
