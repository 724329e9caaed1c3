// P/Invoke binding to OpenBLAS's cblas_sgemm, loaded at run time so the library stays optional.
using System.Runtime.InteropServices;

namespace ViTQuant.Kernels;

internal static unsafe class OpenBlas
{
    private const int CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112;

    private static readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> _sgemm;
    private static readonly delegate* unmanaged<int, void> _setThreads;

    // OpenBLAS does not promise that openblas_set_num_threads may run while another thread is inside cblas_sgemm
    // (the count sizes the pool the running call uses), and Parallelism.Threads may be set from any thread (every CLI
    // verb sets it; tests run side by side in one process). Every call into the library takes this lock: uncontended
    // it costs nothing next to a GEMM, and concurrent top-level OpenBLAS GEMMs from several threads are not worth
    // having anyway (each would start the library's own workers on the same cores). A precaution: no crash was
    // traced to the race (300 products against a thread toggling the count, without the lock, ran clean here).
    private static readonly object Gate = new();

    public static bool IsAvailable { get; }
    public static string LibraryName { get; } = "none";
    public static string ConfigString { get; } = "";

    static OpenBlas()
    {
        if (Environment.GetEnvironmentVariable("VITQ_NO_OPENBLAS") == "1") return;
        foreach (var name in new[] { "libopenblas.so.0", "libopenblas.so", "libopenblasp.so.0" })
        {
            if (!NativeLibrary.TryLoad(name, out var lib)) continue;
            if (!NativeLibrary.TryGetExport(lib, "cblas_sgemm", out var sgemm)) continue;
            _sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)sgemm;
            if (NativeLibrary.TryGetExport(lib, "openblas_set_num_threads", out var st))
                _setThreads = (delegate* unmanaged<int, void>)st;
            if (NativeLibrary.TryGetExport(lib, "openblas_get_config", out var cfg))
                ConfigString = Marshal.PtrToStringAnsi(((delegate* unmanaged<nint>)cfg)())?.Trim() ?? "";
            LibraryName = name;
            IsAvailable = true;
            SetThreads(Parallelism.Threads);
            Parallelism.ThreadsChanged += SetThreads;
            return;
        }
    }

    private static void SetThreads(int n)
    {
        if (_setThreads == null) return;
        lock (Gate) _setThreads(n);
    }

    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        if (k == 0)
        {
            // Some BLAS builds skip the beta scaling when k = 0; do it here so the result is defined.
            for (int i = 0; i < m; i++)
            {
                var row = c.Slice(i * ldc, n);
                if (beta == 0f) row.Clear(); else for (int j = 0; j < n; j++) row[j] *= beta;
            }
            return;
        }
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            lock (Gate)
                _sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
    }
}
