// GEMM throughput and accuracy probes shared by the benchmark program and `vitq bench`.
// Inputs are uniform in [-1, 1) from a seeded generator, stored densely (lda/ldb/ldc = stored width),
// so every backend sees the same numbers. Throughput is the median of timed calls after warm-up,
// counting 2·M·N·K floating-point operations per call.
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

/// <summary>What a GEMM benchmark can time: OpenBLAS, or the managed SGEMM with one micro-kernel.</summary>
internal enum GemmVariant
{
    /// <summary>OpenBLAS cblas_sgemm.</summary>
    OpenBlas,
    /// <summary>The managed SGEMM with its AVX-512 micro-kernel.</summary>
    ManagedAvx512,
    /// <summary>The managed SGEMM with its AVX2 micro-kernel.</summary>
    ManagedAvx2,
    /// <summary>The managed SGEMM with its portable (Vector&lt;T&gt;) micro-kernel.</summary>
    ManagedPortable,
}

/// <summary>GEMM throughput and accuracy probes for the benchmark program and `vitq bench` (seeded inputs, median of timed calls).</summary>
internal static class GemmBenchmark
{
    /// <summary>
    /// Median GFLOP/s of C = op(A)·op(B) (M×N, inner size K) on <paramref name="backend"/> with
    /// Parallelism.Threads threads, over <paramref name="reps"/> (rounded up to a multiple of three) timed calls after two warm-up calls.
    /// The managed backend runs multi-threaded, as the dispatcher runs it at top level.
    /// Throws ArgumentOutOfRangeException for a non-positive size or reps, and
    /// InvalidOperationException when the OpenBLAS backend is requested but not loaded.
    /// </summary>
    public static double Measure(GemmBackend backend, int m, int n, int k, int reps, bool transA = false, bool transB = false)
        => Compare(new[] { backend }, m, n, k, reps, transA, transB)[0];

    /// <summary>
    /// Median GFLOP/s of each backend in <paramref name="backends"/>, as <see cref="Measure"/>. The
    /// timed calls run in up to three rounds that visit every backend in turn, so slow drift in the
    /// load from other processes falls on all backends alike; each visit starts with a warm-up call
    /// and ends with a pause, because OpenBLAS's idle workers keep spinning for ~0.1 s after a call
    /// and would otherwise steal the cores of whatever runs next. Throws as <see cref="Measure"/> does.
    /// </summary>
    public static double[] Compare(GemmBackend[] backends, int m, int n, int k, int reps, bool transA = false, bool transB = false)
        => Compare(backends.Select(Variant).ToArray(), m, n, k, reps, transA, transB);

    /// <summary>
    /// The GEMM variants this machine runs: OpenBLAS when it loads, then each managed kernel the CPU
    /// supports, fastest kernel first.
    /// </summary>
    public static GemmVariant[] AvailableVariants()
    {
        var list = new List<GemmVariant>();
        if (OpenBlas.IsAvailable) list.Add(GemmVariant.OpenBlas);
        if (ManagedGemm.Best >= GemmKernel.Avx512) list.Add(GemmVariant.ManagedAvx512);
        if (ManagedGemm.Best >= GemmKernel.Avx2) list.Add(GemmVariant.ManagedAvx2);
        list.Add(GemmVariant.ManagedPortable);
        return list.ToArray();
    }

    /// <summary>A short description of a variant (library or kernel, tile and block sizes).</summary>
    public static string Describe(GemmVariant v) => v switch
    {
        GemmVariant.OpenBlas => OpenBlas.IsAvailable ? $"OpenBLAS ({OpenBlas.ConfigString})" : "OpenBLAS (not loaded)",
        GemmVariant.ManagedAvx512 => ManagedGemm.Describe(GemmKernel.Avx512),
        GemmVariant.ManagedAvx2 => ManagedGemm.Describe(GemmKernel.Avx2),
        _ => ManagedGemm.Describe(GemmKernel.Portable),
    };

    /// <summary>
    /// The machine's FMA roofline in GFLOP/s: every one of Parallelism.Threads workers runs a loop of independent
    /// vector FMAs on registers only (no loads or stores), the widest the GEMM's kernel uses (16 lanes with the
    /// AVX-512 kernel, 8 with the AVX2 one), and the best of a few timed runs counts. No GEMM can pass it; how close
    /// the measured GEMMs come says how much of the core the kernel and its packing leave unused. 0 on CPUs without
    /// FMA (the portable kernel has no fixed width to measure).
    /// </summary>
    public static double FmaRoofline(int reps = 5)
    {
        var kernel = ManagedGemm.Current;
        if (kernel == GemmKernel.Portable) return 0;
        const long Iterations = 4_000_000; // × 12 FMAs: 12 ms per worker at 2 FMAs per cycle and 2 GHz
        int workers = Parallelism.Threads;
        double best = 0;
        for (int r = 0; r < reps; r++)
        {
            var sw = Stopwatch.StartNew();
            // The loops are not inlined, so their calls (and the work in them) stay though the results are dropped.
            Parallelism.For(0, workers, worker => _ = kernel == GemmKernel.Avx512 ? FmaLoop512(Iterations) : FmaLoop256(Iterations));
            double seconds = sw.Elapsed.TotalSeconds;
            int lanes = kernel == GemmKernel.Avx512 ? 16 : 8;
            best = Math.Max(best, workers * Iterations * 12.0 * lanes * 2 / seconds / 1e9);
        }
        return best;
    }

    // Twelve independent accumulator chains (more than FMA latency × FMA ports on current x86 cores), in a method of
    // its own so the JIT keeps them in registers: written inline in a method that also calls out, the same loop
    // spilled every accumulator to the stack and ran at a third of this speed.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static float FmaLoop256(long iterations)
    {
        var x = Vector256.Create(1.0000001f);
        var y = Vector256.Create(0.9999999f);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        Vector256<float> c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (long i = 0; i < iterations; i++)
        {
            c0 = Fma.MultiplyAdd(x, y, c0); c1 = Fma.MultiplyAdd(x, y, c1); c2 = Fma.MultiplyAdd(x, y, c2);
            c3 = Fma.MultiplyAdd(x, y, c3); c4 = Fma.MultiplyAdd(x, y, c4); c5 = Fma.MultiplyAdd(x, y, c5);
            c6 = Fma.MultiplyAdd(x, y, c6); c7 = Fma.MultiplyAdd(x, y, c7); c8 = Fma.MultiplyAdd(x, y, c8);
            c9 = Fma.MultiplyAdd(x, y, c9); c10 = Fma.MultiplyAdd(x, y, c10); c11 = Fma.MultiplyAdd(x, y, c11);
        }
        return (c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11).ToScalar();
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop512(long iterations)
    {
        var x = Vector512.Create(1.0000001f);
        var y = Vector512.Create(0.9999999f);
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        Vector512<float> c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (long i = 0; i < iterations; i++)
        {
            c0 = Avx512F.FusedMultiplyAdd(x, y, c0); c1 = Avx512F.FusedMultiplyAdd(x, y, c1); c2 = Avx512F.FusedMultiplyAdd(x, y, c2);
            c3 = Avx512F.FusedMultiplyAdd(x, y, c3); c4 = Avx512F.FusedMultiplyAdd(x, y, c4); c5 = Avx512F.FusedMultiplyAdd(x, y, c5);
            c6 = Avx512F.FusedMultiplyAdd(x, y, c6); c7 = Avx512F.FusedMultiplyAdd(x, y, c7); c8 = Avx512F.FusedMultiplyAdd(x, y, c8);
            c9 = Avx512F.FusedMultiplyAdd(x, y, c9); c10 = Avx512F.FusedMultiplyAdd(x, y, c10); c11 = Avx512F.FusedMultiplyAdd(x, y, c11);
        }
        return (c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11).ToScalar();
    }

    /// <summary>
    /// The shape that defines "peak": a product whose packed operands stay cache-resident (A and B
    /// 384 KB each, C 1 MB; each of two workers reads half of A and all of B) and whose sizes are
    /// multiples of every tile, so no edge tiles or packing of odd panels dilute the micro-kernel's speed.
    /// </summary>
    public const int PeakM = 768, PeakN = 384, PeakK = 256;

    /// <summary>
    /// The measured peak of the machine: the best median GFLOP/s of any available variant on the
    /// peak shape (<see cref="PeakM"/>×<see cref="PeakN"/>×<see cref="PeakK"/>, NN), with
    /// Parallelism.Threads threads, and which variant reached it. GEMM speeds are reported as a fraction of it.
    /// </summary>
    public static (double Gflops, GemmVariant Variant) MeasurePeak(int reps = 30, bool fastest = false)
    {
        var variants = AvailableVariants().Where(v => v != GemmVariant.ManagedPortable).ToArray();
        if (variants.Length == 0) variants = new[] { GemmVariant.ManagedPortable };
        var g = Compare(variants, PeakM, PeakN, PeakK, reps, false, false, fastest);
        int best = 0;
        for (int i = 1; i < g.Length; i++) if (g[i] > g[best]) best = i;
        return (g[best], variants[best]);
    }

    /// <summary>
    /// Median GFLOP/s of each variant (OpenBLAS or one managed kernel), measured as the backend
    /// overload of Compare measures backends. Throws as <see cref="Measure"/> does, and
    /// InvalidOperationException for a variant that is not in <see cref="AvailableVariants"/>.
    /// </summary>
    public static double[] Compare(GemmVariant[] backends, int m, int n, int k, int reps, bool transA = false, bool transB = false)
        => Compare(backends, m, n, k, reps, transA, transB, fastest: false);

    /// <summary>
    /// As the other variant overload; with <paramref name="fastest"/> the fastest timed call counts
    /// instead of the median, which estimates the speed of an undisturbed core on a machine that other
    /// processes load (a long call is more often preempted, which inflates the median of large shapes).
    /// </summary>
    public static double[] Compare(GemmVariant[] backends, int m, int n, int k, int reps, bool transA, bool transB, bool fastest)
    {
        CheckSizes(m, n, k);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(reps);
        var available = AvailableVariants();
        foreach (var be in backends)
            if (!available.Contains(be)) throw new InvalidOperationException($"GEMM variant {be} is not available on this machine");
        var (a, b) = Inputs(m, n, k, 1);
        var c = new float[(long)m * n];
        int lda = transA ? m : k, ldb = transB ? k : n;
        int rounds = Math.Min(3, reps), perVisit = (reps + rounds - 1) / rounds;
        var seconds = new List<double>[backends.Length];
        for (int i = 0; i < backends.Length; i++) seconds[i] = new List<double>();
        for (int r = 0; r < rounds; r++)
            for (int i = 0; i < backends.Length; i++)
            {
                Call(backends[i], transA, transB, m, n, k, a, lda, b, ldb, c);
                if (r == 0) Call(backends[i], transA, transB, m, n, k, a, lda, b, ldb, c);
                for (int t = 0; t < perVisit; t++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    Call(backends[i], transA, transB, m, n, k, a, lda, b, ldb, c);
                    seconds[i].Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
                }
                if (backends.Length > 1) Thread.Sleep(SettleMilliseconds);
            }
        var gflops = new double[backends.Length];
        for (int i = 0; i < backends.Length; i++)
        {
            var s = seconds[i];
            s.Sort();
            int cnt = s.Count;
            double median = fastest ? s[0] : cnt % 2 == 1 ? s[cnt / 2] : 0.5 * (s[cnt / 2 - 1] + s[cnt / 2]);
            gflops[i] = 2.0 * m * n * k / median / 1e9;
        }
        return gflops;
    }

    // OpenBLAS's pthreads busy-wait for 2^28 cycles (its THREAD_TIMEOUT default, ≈ 0.1 s) before
    // sleeping; wait that out between backends.
    private const int SettleMilliseconds = 150;

    /// <summary>
    /// C = op(A)·op(B) (M×N, row-major, dense) computed by <paramref name="backend"/> on the
    /// inputs that <paramref name="seed"/> determines; the same seed gives the same A and B for
    /// every backend, so results can be compared. Throws as <see cref="Measure"/> does.
    /// </summary>
    public static float[] Product(GemmBackend backend, int m, int n, int k, bool transA = false, bool transB = false, int seed = 1)
    {
        CheckBackend(backend);
        return Product(Variant(backend), m, n, k, transA, transB, seed);
    }

    /// <summary>As the backend overload of Product, for one variant (which must be available).</summary>
    public static float[] Product(GemmVariant backend, int m, int n, int k, bool transA = false, bool transB = false, int seed = 1)
    {
        CheckSizes(m, n, k);
        if (!AvailableVariants().Contains(backend)) throw new InvalidOperationException($"GEMM variant {backend} is not available on this machine");
        var (a, b) = Inputs(m, n, k, seed);
        var c = new float[(long)m * n];
        Call(backend, transA, transB, m, n, k, a, transA ? m : k, b, transB ? k : n, c);
        return c;
    }

    /// <summary>
    /// Largest |C[i,j] − Σ_p op(A)[i,p]·op(B)[p,j]| / Σ_p |op(A)[i,p]|·|op(B)[p,j]| over up to
    /// <paramref name="sampleRows"/> evenly spaced rows of <paramref name="c"/> (the reference sum is
    /// in double), for a C that Product made with the same sizes, flags and seed.
    /// The ratio is the error in units of the worst-case rounding scale; float32 GEMMs land near
    /// 1e-7 to 1e-6. Throws ArgumentException when c does not hold M·N values.
    /// </summary>
    public static double ReferenceError(float[] c, int m, int n, int k, bool transA = false, bool transB = false, int seed = 1, int sampleRows = 8)
    {
        CheckSizes(m, n, k);
        if (c.Length != (long)m * n) throw new ArgumentException($"C holds {c.Length} values, expected {m}x{n}");
        var (a, b) = Inputs(m, n, k, seed);
        int lda = transA ? m : k, ldb = transB ? k : n;
        double worst = 0;
        int rows = Math.Max(1, Math.Min(sampleRows, m));
        for (int s = 0; s < rows; s++)
        {
            int i = rows == 1 ? 0 : (int)((long)(m - 1) * s / (rows - 1));
            for (int j = 0; j < n; j++)
            {
                double acc = 0, mag = 0;
                for (int p = 0; p < k; p++)
                {
                    double av = transA ? a[p * lda + i] : a[i * lda + p];
                    double bv = transB ? b[j * ldb + p] : b[p * ldb + j];
                    acc += av * bv;
                    mag += Math.Abs(av * bv);
                }
                if (mag > 0) worst = Math.Max(worst, Math.Abs(c[(long)i * n + j] - acc) / mag);
            }
        }
        return worst;
    }

    private static void Call(GemmBackend backend, bool transA, bool transB, int m, int n, int k,
        float[] a, int lda, float[] b, int ldb, float[] c)
        => Call(Variant(backend), transA, transB, m, n, k, a, lda, b, ldb, c);

    private static void Call(GemmVariant v, bool transA, bool transB, int m, int n, int k,
        float[] a, int lda, float[] b, int ldb, float[] c)
    {
        if (v == GemmVariant.OpenBlas)
        {
            OpenBlas.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, n);
            return;
        }
        var kernel = v switch { GemmVariant.ManagedAvx512 => GemmKernel.Avx512, GemmVariant.ManagedAvx2 => GemmKernel.Avx2, _ => GemmKernel.Portable };
        int threads = (long)m * n * k >= ManagedGemm.ParallelMinMacs ? Parallelism.Threads : 1;
        ManagedGemm.Run(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, n, threads, kernel);
    }

    // The managed backend is measured with the kernel top-level calls use.
    private static GemmVariant Variant(GemmBackend backend) => backend == GemmBackend.OpenBlas ? GemmVariant.OpenBlas
        : ManagedGemm.Current switch { GemmKernel.Avx512 => GemmVariant.ManagedAvx512, GemmKernel.Avx2 => GemmVariant.ManagedAvx2, _ => GemmVariant.ManagedPortable };

    // A holds M·K values and B K·N values; the storage order (and so which matrix the flags read
    // as transposed) does not change the count, only how the numbers are read.
    private static (float[] A, float[] B) Inputs(int m, int n, int k, int seed)
    {
        var rng = new Random(seed);
        var a = new float[(long)m * k];
        var b = new float[(long)k * n];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(2 * rng.NextDouble() - 1);
        for (int i = 0; i < b.Length; i++) b[i] = (float)(2 * rng.NextDouble() - 1);
        return (a, b);
    }

    private static void CheckSizes(int m, int n, int k)
    {
        if (m <= 0 || n <= 0 || k <= 0)
            throw new ArgumentOutOfRangeException(nameof(m), $"GEMM benchmark sizes must be positive, got m={m} n={n} k={k}");
    }

    private static void CheckBackend(GemmBackend backend)
    {
        if (backend == GemmBackend.OpenBlas && !OpenBlas.IsAvailable)
            throw new InvalidOperationException("OpenBLAS is not available (install libopenblas0-pthread)");
    }
}
