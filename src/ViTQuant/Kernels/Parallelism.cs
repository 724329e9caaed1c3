// The single threading knob. Every parallel loop in the library goes through Parallelism.For so that
// (1) --threads bounds all of them, (2) OpenBLAS is told the same count, and (3) code running inside
// a parallel body knows it must not start nested parallel work (GEMM then runs single-threaded),
// which keeps the two cores from being oversubscribed.
namespace ViTQuant.Kernels;

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
            _threads = value;
            ThreadsChanged?.Invoke(value);
        }
    }

    /// <summary>Raised when Threads changes (the GEMM backend forwards it to OpenBLAS).</summary>
    internal static event Action<int>? ThreadsChanged;

    /// <summary>True on a thread that is executing the body of a Parallelism.For.</summary>
    public static bool InsideParallelBody => _insideBody > 0;

    /// <summary>
    /// Runs body(i) for i in [from, to) on up to Threads workers. Runs inline when there is one
    /// worker, one item, or when already inside a parallel body.
    /// </summary>
    public static void For(int from, int to, Action<int> body)
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
        var opts = new ParallelOptions { MaxDegreeOfParallelism = _threads };
        Parallel.For(from, to, opts, i =>
        {
            _insideBody++;
            try { body(i); }
            finally { _insideBody--; }
        });
    }

    /// <summary>
    /// Splits [0, n) into at most Threads contiguous chunks and runs body(start, end) on each;
    /// chunks hold at least minChunk items so tiny loops stay on one thread.
    /// </summary>
    public static void ForChunks(int n, int minChunk, Action<int, int> body)
    {
        if (n <= 0) return;
        int chunks = Math.Max(1, Math.Min(_insideBody > 0 ? 1 : _threads, n / Math.Max(1, minChunk)));
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
