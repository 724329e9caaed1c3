// SGEMM entry point: C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C, all row-major.
// op(X) = X or Xᵀ. lda/ldb/ldc are the row strides of A, B, C as stored (so for transA, A is stored
// K×M with row stride lda ≥ M).
//
// Backends: the managed blocked SIMD GEMM when its AVX-512 or AVX2 + FMA kernel runs on this CPU, otherwise
// OpenBLAS cblas_sgemm (Debian's libopenblas0-pthread) when the library loads, otherwise the managed GEMM
// with its portable kernel. Why: measured side by side (bench `gemm`, 1 and 2 threads, an AVX-512 EPYC),
// the AVX-512 managed kernel beats OpenBLAS 0.3.21 on every ViT linear shape, forward and backward. The
// AVX2 kernel is level with it (a Zen 3 EPYC: ahead on the forward shapes, behind on some backward ones;
// one-thread model steps within 3 %), but with 2 threads OpenBLAS's own workers, which spin after each
// call, and ours took turns on the two cores (114,000–129,000 involuntary context switches in a 12 s
// `vitq bench` of vit_fmnist, against 330 without OpenBLAS): vit_fmnist training 236–280 → 308–381 img/s, DeiT-Tiny 11.4–13.7 →
// 15.2–16.3 (three alternating runs each). Inside a Parallelism.For body the
// managed kernel always runs, single-threaded, because OpenBLAS's thread count is process-global and
// must not nest. Inside a ManagedGemm.ForceKernel scope the managed kernel runs too.
// Reference() is the slow, obviously-correct twin every backend is tested against.
namespace ViTQuant.Kernels;

/// <summary>Which SGEMM implementation top-level calls use.</summary>
internal enum GemmBackend
{
    /// <summary>OpenBLAS cblas_sgemm (when libopenblas loads).</summary>
    OpenBlas,
    /// <summary>The managed blocked SIMD GEMM with the best micro-kernel this CPU runs.</summary>
    Managed,
}

/// <summary>SGEMM C = α·op(A)·op(B) + β·C over row-major matrices, dispatched to OpenBLAS or the managed kernel (file header).</summary>
public static class Gemm
{
    private static GemmBackend _backend = DefaultBackend();

    /// <summary>The backend chosen at start-up (see the file header).</summary>
    internal static GemmBackend DefaultBackend() =>
        OpenBlas.IsAvailable && ManagedGemm.Best == GemmKernel.Portable ? GemmBackend.OpenBlas : GemmBackend.Managed;

    /// <summary>The backend used for top-level calls. Setting OpenBlas when it is absent throws.</summary>
    internal static GemmBackend Backend
    {
        get => _backend;
        set
        {
            if (value == GemmBackend.OpenBlas && !OpenBlas.IsAvailable)
                throw new InvalidOperationException("OpenBLAS is not available (install libopenblas0-pthread)");
            _backend = value;
        }
    }

    /// <summary>
    /// True where a GEMM called from here goes to OpenBLAS: the OpenBLAS backend, at top level, outside a
    /// ManagedGemm.ForceKernel scope (a forced kernel is a managed one: tests that compare paths bit for bit and A/B
    /// benchmarks mean the managed GEMM on every machine). Weight prepacking asks it too.
    /// </summary>
    internal static bool UsesOpenBlas =>
        _backend == GemmBackend.OpenBlas && !Parallelism.InsideParallelBody && !ManagedGemm.IsForced;

    /// <summary>Human-readable backend description for `vitq info` and benchmark output.</summary>
    public static string Describe() => _backend == GemmBackend.OpenBlas
        ? $"OpenBLAS ({OpenBlas.LibraryName}, {OpenBlas.ConfigString})"
        : $"managed SIMD ({ManagedGemm.Describe()})";

    /// <summary>C = alpha·op(A)·op(B) + beta·C. Throws ArgumentException on inconsistent sizes.</summary>
    internal static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        Validate(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        if (m == 0 || n == 0) return;
        if (UsesOpenBlas)
            OpenBlas.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        else
            ManagedGemm.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                parallel: !Parallelism.InsideParallelBody);
    }

    /// <summary>
    /// C = alpha·op(A)·op(B) + bias, bias[j] added to every row of C (C is not read; bias has ≥ n
    /// elements). The same numbers as filling C's rows with the bias and calling <see cref="Sgemm"/> with
    /// beta = 1, which is what the OpenBLAS backend does; the managed GEMM adds the bias tile by tile
    /// instead of in a separate pass over C. Throws ArgumentException as Sgemm does, or on a short bias.
    /// </summary>
    internal static void SgemmBias(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, ReadOnlySpan<float> bias, Span<float> c, int ldc)
    {
        Validate(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        if (bias.Length < n) throw new ArgumentException($"GEMM bias has {bias.Length} elements, need {n}");
        if (m == 0 || n == 0) return;
        if (UsesOpenBlas)
        {
            for (int i = 0; i < m; i++) bias[..n].CopyTo(c.Slice(i * ldc, n));
            OpenBlas.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, 1f, c, ldc);
        }
        else
        {
            bool parallel = !Parallelism.InsideParallelBody;
            int threads = parallel && (long)m * n * k >= ManagedGemm.ParallelMinMacs ? Parallelism.Threads : 1;
            ManagedGemm.Run(transA, transB, m, n, k, alpha, a, lda, b, ldb, 0f, c, ldc, bias, threads, ManagedGemm.Current);
        }
    }

    /// <summary>Scalar triple loop, accumulating in double. The reference twin of every backend.</summary>
    internal static void Reference(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        Validate(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double acc = 0;
                for (int p = 0; p < k; p++)
                {
                    float av = transA ? a[p * lda + i] : a[i * lda + p];
                    float bv = transB ? b[j * ldb + p] : b[p * ldb + j];
                    acc += (double)av * bv;
                }
                float prev = beta == 0f ? 0f : beta * c[i * ldc + j]; // beta = 0 ignores NaN in C, as BLAS does
                c[i * ldc + j] = (float)(alpha * acc) + prev;
            }
    }

    internal static void Validate(bool transA, bool transB, int m, int n, int k,
        int aLen, int lda, int bLen, int ldb, int cLen, int ldc)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"negative GEMM size m={m} n={n} k={k}");
        int aRows = transA ? k : m, aCols = transA ? m : k;
        int bRows = transB ? n : k, bCols = transB ? k : n;
        if (lda < Math.Max(1, aCols) || ldb < Math.Max(1, bCols) || ldc < Math.Max(1, n))
            throw new ArgumentException($"GEMM leading dimension too small: lda={lda} (need {aCols}), ldb={ldb} (need {bCols}), ldc={ldc} (need {n})");
        if (aRows > 0 && aCols > 0 && (long)(aRows - 1) * lda + aCols > aLen)
            throw new ArgumentException($"GEMM A buffer too small: {aLen} < {(long)(aRows - 1) * lda + aCols}");
        if (bRows > 0 && bCols > 0 && (long)(bRows - 1) * ldb + bCols > bLen)
            throw new ArgumentException($"GEMM B buffer too small: {bLen} < {(long)(bRows - 1) * ldb + bCols}");
        if (m > 0 && n > 0 && (long)(m - 1) * ldc + n > cLen)
            throw new ArgumentException($"GEMM C buffer too small: {cLen} < {(long)(m - 1) * ldc + n}");
    }
}
