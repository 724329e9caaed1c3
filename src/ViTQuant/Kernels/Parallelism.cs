// The single threading knob. Every parallel loop in the library goes through Parallelism.For so that
// (1) --threads bounds all of them, (2) OpenBLAS is told the same count, and (3) code running inside
// a parallel body knows it must not start nested parallel work (GEMM then runs single-threaded),
// which keeps the two cores from being oversubscribed.
//
// Workers (the default; VITQ_SPIN_POOL=0 turns them off, see UseSpinPool): a small pool of our own (SpinPool) rather
// than Parallel.For on the .NET thread pool. A model step
// is a chain of short parallel regions (each GEMM, the attention, every row kernel: ~120 per DeiT-Tiny forward);
// thread-pool workers park between them and take tens of microseconds to wake (more in a VM, measured with
// bench `handoff`), which the caller waits out every time. SpinPool's workers spin for a short while after
// each region before they sleep, as ONNX Runtime's and OpenMP's pools do. Items are handed out one at a time
// to whoever asks next (the caller takes part), so the result of each item never depends on which thread ran
// it, and the caller alone can always finish a region (no deadlock if the workers are slow to come). One region
// at a time: a call made while the pool is busy (another thread's region) goes to Parallel.For as before.
// Exceptions are collected and rethrown as an AggregateException, as Parallel.For does; the caller's
// ExecutionContext (AsyncLocal scopes such as ManagedGemm.ForceKernel) flows to the workers.
namespace ViTQuant.Kernels;

/// <summary>The library's single threading knob: Parallelism.For bounds every parallel loop by Threads, tells OpenBLAS the same count and runs nested work sequentially (file header).</summary>
public static class Parallelism
{
    private static int _threads = Environment.ProcessorCount;
    [ThreadStatic] private static int _insideBody;

    /// <summary>Worker count for all parallel loops and for OpenBLAS. Defaults to the core count.</summary>
    public static int Threads
    {
        get => _threads;
        set
        {
            if (value < 1) throw new ArgumentOutOfRangeException(nameof(value), $"--threads must be at least 1, got {value}");
            if (value == _threads) return; // nothing to tell OpenBLAS (every CLI verb sets the count, mostly to what it is)
            _threads = value;
            ThreadsChanged?.Invoke(value);
        }
    }

    /// <summary>Raised when Threads changes (the GEMM backend forwards it to OpenBLAS).</summary>
    internal static event Action<int>? ThreadsChanged;

    /// <summary>True on a thread that is executing the body of a Parallelism.For.</summary>
    internal static bool InsideParallelBody => _insideBody > 0;

    /// <summary>
    /// Workers a loop started here gets: 1 inside a parallel body (it runs inline), else Threads. Size a split into
    /// partial results by it, so a body's results do not depend on Threads (a chunk of images in ForwardBackward).
    /// </summary>
    internal static int AvailableWorkers => _insideBody > 0 ? 1 : _threads;

    /// <summary>
    /// Runs body(i) for i in [from, to) on up to Threads workers. Runs inline when there is one
    /// worker, one item, or when already inside a parallel body.
    /// </summary>
    internal static void For(int from, int to, Action<int> body)
    {
        int n = to - from;
        if (n <= 0) return;
        if (n == 1 || _threads == 1 || _insideBody > 0)
        {
            _insideBody++;
            try { for (int i = from; i < to; i++) body(i); }
            finally { _insideBody--; }
            return;
        }
        if (UseSpinPool && SpinPool.TryRun(from, to, _threads - 1, body)) return;
        var opts = new ParallelOptions { MaxDegreeOfParallelism = _threads };
        Parallel.For(from, to, opts, i =>
        {
            _insideBody++;
            try { body(i); }
            finally { _insideBody--; }
        });
    }

    /// <summary>
    /// True (the default; VITQ_SPIN_POOL=0 sets false): regions run on SpinPool. Measured on the idle 2-core
    /// machine, same process, interleaved (bench `engine-ab`, 2026-12-07): vit_fmnist training step at
    /// batch 64 141 ms against 164 ms on the .NET thread pool (medians), DeiT-Tiny inference at batch 8
    /// 122 against 125 ms. On a loaded machine neither pool's worker gets a core in time (bench `handoff`).
    /// </summary>
    internal static bool UseSpinPool { get; set; } = Environment.GetEnvironmentVariable("VITQ_SPIN_POOL") != "0";

    internal static void EnterBody() => _insideBody++;

    internal static void ExitBody() => _insideBody--;

    /// <summary>
    /// Splits [0, n) into at most Threads contiguous chunks and runs body(start, end) on each;
    /// chunks hold at least minChunk items so tiny loops stay on one thread.
    /// </summary>
    internal static void ForChunks(int n, int minChunk, Action<int, int> body)
    {
        if (n <= 0) return;
        int chunks = Math.Max(1, Math.Min(AvailableWorkers, n / Math.Max(1, minChunk)));
        if (chunks == 1)
        {
            _insideBody++;
            try { body(0, n); }
            finally { _insideBody--; }
            return;
        }
        For(0, chunks, c =>
        {
            int start = (int)((long)n * c / chunks), end = (int)((long)n * (c + 1) / chunks);
            body(start, end);
        });
    }
}

/// <summary>
/// The worker pool behind Parallelism.For (see the file header): persistent background threads that spin
/// for up to <see cref="SpinMicroseconds"/> after a region before they block.
/// </summary>
internal static class SpinPool
{
    /// <summary>How long an idle worker keeps polling for the next region before it sleeps.</summary>
    internal const int SpinMicroseconds = 200;

    private sealed class Job
    {
        public required Action<int> Body;
        public required int From, To, MaxWorkers;
        public required ExecutionContext? Context;
        public int Next, Done, Joined;
        public Exception? Error;
    }

    private static int _busy;
    private static Job? _job;
    private static long _generation;
    private static int _sleepers;
    private static readonly SemaphoreSlim Wake = new(0);
    private static readonly object Grow = new();
    private static int _workers;
    private static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency * SpinMicroseconds / 1_000_000;

    /// <summary>
    /// Runs body(i) for i in [from, to) on the caller and up to maxWorkers pool threads. False (nothing run)
    /// when another region holds the pool. Exceptions: an AggregateException of those the items threw.
    /// </summary>
    internal static bool TryRun(int from, int to, int maxWorkers, Action<int> body)
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0) return false;
        Job job;
        try
        {
            EnsureWorkers(maxWorkers);
            job = new Job { Body = body, From = from, To = to, MaxWorkers = maxWorkers, Next = from, Context = ExecutionContext.Capture() };
            Volatile.Write(ref _job, job);
            Interlocked.Increment(ref _generation);
            int sleeping = Volatile.Read(ref _sleepers);
            if (sleeping > 0) Wake.Release(Math.Min(sleeping, maxWorkers));
            Work(job, onWorker: false);
            // Wait for items other threads are still running (spin: they are short).
            var spin = new SpinWait();
            while (Volatile.Read(ref job.Done) < to - from) spin.SpinOnce(sleep1Threshold: -1);
        }
        finally
        {
            Volatile.Write(ref _job, null);
            Volatile.Write(ref _busy, 0);
        }
        if (job.Error != null) throw job.Error is AggregateException ? job.Error : new AggregateException(job.Error);
        return true;
    }

    // Takes items until none are left.
    private static void Work(Job job, bool onWorker)
    {
        int total = job.To - job.From;
        while (true)
        {
            int i = Interlocked.Increment(ref job.Next) - 1;
            if (i >= job.To) return;
            Parallelism.EnterBody();
            try { job.Body(i); }
            catch (Exception e)
            {
                lock (job) job.Error = job.Error == null ? e : new AggregateException(job.Error, e);
            }
            finally
            {
                Parallelism.ExitBody();
                Interlocked.Increment(ref job.Done);
            }
        }
    }

    private static void EnsureWorkers(int n)
    {
        if (Volatile.Read(ref _workers) >= n) return;
        lock (Grow)
        {
            while (_workers < n)
            {
                var t = new Thread(WorkerLoop) { IsBackground = true, Name = $"vitq-worker-{_workers + 1}" };
                t.Start();
                _workers++;
            }
        }
    }

    private static void WorkerLoop()
    {
        long seen = Volatile.Read(ref _generation);
        while (true)
        {
            // Spin for the next region, then sleep until one is posted.
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            var spin = new SpinWait();
            while (Volatile.Read(ref _generation) == seen)
            {
                if (System.Diagnostics.Stopwatch.GetTimestamp() - start > SpinTicks)
                {
                    Interlocked.Increment(ref _sleepers);
                    // Re-check after announcing: a region posted in between would otherwise not wake us.
                    if (Volatile.Read(ref _generation) == seen) Wake.Wait();
                    Interlocked.Decrement(ref _sleepers);
                    start = System.Diagnostics.Stopwatch.GetTimestamp();
                    continue;
                }
                spin.SpinOnce(sleep1Threshold: -1);
            }
            seen = Volatile.Read(ref _generation);
            var job = Volatile.Read(ref _job);
            if (job == null || Interlocked.Increment(ref job.Joined) > job.MaxWorkers) continue;
            if (job.Context != null) ExecutionContext.Run(job.Context, static j => Work((Job)j!, onWorker: true), job);
            else Work(job, onWorker: true);
        }
    }
}
