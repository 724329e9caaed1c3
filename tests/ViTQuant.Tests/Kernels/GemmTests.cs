using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Kernels;

// Every fast SGEMM path (managed AVX-512 kernel, AVX2+FMA kernel, portable kernel, OpenBLAS, the dispatcher)
// against Gemm.Reference, which sums in double.
//
// Tolerance, per entry: |C − C_ref| ≤ (k + 4)·u·(|alpha|·Σ_p |op(A)[i,p]|·|op(B)[p,j]| + |beta|·|C0[i,j]|)
// with u = 2⁻²⁴, the float32 unit roundoff. (k + 4)·u bounds the rounding of any order of k float
// multiply-adds plus the alpha/beta scaling and the reference's final rounding, so a correct kernel
// can never fail it, while any lost, doubled or misplaced product (≈ Σ/k) exceeds it by orders of
// magnitude. Integer-valued inputs are also checked for exact equality: their sums are exact in float.
[Collection(ViTQuant.Tests.Tensors.ParallelismThreadsCollection.Name)] // sets Parallelism.Threads
public class GemmTests
{
    private const float U = 1f / (1 << 24);

    // One GEMM problem with padded storage: every matrix has 0..3 extra columns of slack, which
    // the kernels must neither read as data nor write.
    private sealed class Problem
    {
        public readonly bool TransA, TransB;
        public readonly int M, N, K, Lda, Ldb, Ldc;
        public readonly float[] A, B, C0;
        public const float Sentinel = -12345.5f;

        public Problem(Rng rng, bool transA, bool transB, int m, int n, int k, int pad = 0, bool integers = false, bool nanC = false)
        {
            TransA = transA; TransB = transB; M = m; N = n; K = k;
            int aRows = transA ? k : m, aCols = transA ? m : k;
            int bRows = transB ? n : k, bCols = transB ? k : n;
            Lda = aCols + pad; Ldb = bCols + pad; Ldc = n + pad;
            A = Fill(rng, aRows, aCols, Lda, integers);
            B = Fill(rng, bRows, bCols, Ldb, integers);
            C0 = Fill(rng, m, n, Ldc, integers);
            if (nanC) for (int i = 0; i < m; i++) Array.Fill(C0, float.NaN, i * Ldc, n);
        }

        private static float[] Fill(Rng rng, int rows, int cols, int ld, bool integers)
        {
            var x = new float[Math.Max(1, rows * ld)];
            Array.Fill(x, Sentinel);
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                    x[r * ld + c] = integers ? rng.NextInt(-3, 3) : 2f * rng.NextFloat() - 1f;
            return x;
        }

        public float OpA(int i, int p) => TransA ? A[p * Lda + i] : A[i * Lda + p];
        public float OpB(int p, int j) => TransB ? B[j * Ldb + p] : B[p * Ldb + j];

        public float[] Reference(float alpha, float beta)
        {
            var c = (float[])C0.Clone();
            Gemm.Reference(TransA, TransB, M, N, K, alpha, A, Lda, B, Ldb, beta, c, Ldc);
            return c;
        }

        // Checks c against the reference within the bound in the file header, and that the
        // slack columns of C still hold what they held before.
        public void AssertClose(float[] c, float alpha, float beta, string what)
        {
            var r = Reference(alpha, beta);
            for (int i = 0; i < M; i++)
            {
                for (int j = 0; j < N; j++)
                {
                    double mag = 0;
                    for (int p = 0; p < K; p++) mag += Math.Abs((double)OpA(i, p) * OpB(p, j));
                    double c0 = beta == 0f ? 0 : Math.Abs((double)beta * C0[i * Ldc + j]);
                    double tol = (K + 4) * U * (Math.Abs(alpha) * mag + c0) + 1e-30;
                    float got = c[i * Ldc + j], want = r[i * Ldc + j];
                    if (!(Math.Abs(got - want) <= tol))
                        Assert.Fail($"{what}: C[{i},{j}] = {got}, reference {want}, tolerance {tol:E2}");
                }
                for (int j = N; j < Ldc && i * Ldc + j < c.Length; j++)
                    Assert.True(c[i * Ldc + j] == C0[i * Ldc + j], $"{what}: slack C[{i},{j}] overwritten");
            }
        }

        public float[] RunManaged(float alpha, float beta, int threads, bool portable)
            => RunManaged(alpha, beta, threads, portable ? GemmKernel.Portable : GemmKernel.Avx2);

        public float[] RunManaged(float alpha, float beta, int threads, GemmKernel kernel)
        {
            var c = (float[])C0.Clone();
            ManagedGemm.Run(TransA, TransB, M, N, K, alpha, A, Lda, B, Ldb, beta, c, Ldc, threads, kernel);
            return c;
        }

        public float[] RunOpenBlas(float alpha, float beta)
        {
            var c = (float[])C0.Clone();
            OpenBlas.Sgemm(TransA, TransB, M, N, K, alpha, A, Lda, B, Ldb, beta, c, Ldc);
            return c;
        }

        public float[] RunDispatcher(float alpha, float beta)
        {
            var c = (float[])C0.Clone();
            Gemm.Sgemm(TransA, TransB, M, N, K, alpha, A, Lda, B, Ldb, beta, c, Ldc);
            return c;
        }
    }

    private static readonly (bool TA, bool TB)[] Transposes = { (false, false), (false, true), (true, false), (true, true) };

    // Every small size around the SIMD width (8), the micro-tiles (6 × 16 and 12 × 32) and a few odd
    // ones, all transpose combinations, every managed kernel (one the CPU lacks falls back to the next
    // slower one, so on this machine each runs its own path), padded storage, 1 to 3 workers.
    [Theory]
    [InlineData((int)GemmKernel.Portable)]
    [InlineData((int)GemmKernel.Avx2)]
    [InlineData((int)GemmKernel.Avx512)]
    public void ManagedMatchesReferenceOnAllSmallShapes(int kernelId)
    {
        var kernel = (GemmKernel)kernelId;
        int[] mn = { 1, 2, 5, 6, 7, 8, 9, 12, 13, 15, 16, 17, 31, 33 };
        int[] ks = { 1, 7, 8, 9, 16, 17, 33 };
        var rng = new Rng(11);
        foreach (var (ta, tb) in Transposes)
            foreach (int m in mn)
                foreach (int n in mn)
                    foreach (int k in ks)
                    {
                        var pr = new Problem(rng, ta, tb, m, n, k, pad: (m + n + k) % 4);
                        int threads = 1 + (m + n + k) % 3;
                        pr.AssertClose(pr.RunManaged(1.5f, -0.5f, threads, kernel), 1.5f, -0.5f,
                            $"managed {kernel} threads={threads} {ta}/{tb} {m}x{n}x{k}");
                    }
    }

    // Shapes that cross the cache blocks: M > MC (144), K > KC (256 for AVX2, 192 for AVX-512, so
    // several K blocks with beta applied once), N > NC (4080 / 4064), and the multi-threaded splits
    // along M and along N, for the AVX2 and AVX-512 kernels.
    [Theory]
    [InlineData(100, 257, 33)]
    [InlineData(257, 100, 129)]
    [InlineData(33, 300, 257)]
    [InlineData(150, 40, 600)]
    [InlineData(7, 4100, 20)]
    [InlineData(300, 17, 513)]
    [InlineData(197, 197, 64)]
    public void ManagedMatchesReferenceAcrossBlocksAndThreads(int m, int n, int k)
    {
        var rng = new Rng(12);
        foreach (var kernel in new[] { GemmKernel.Avx2, GemmKernel.Avx512 })
            foreach (var (ta, tb) in Transposes)
            {
                var pr = new Problem(rng, ta, tb, m, n, k, pad: 3);
                var serial = pr.RunManaged(0.75f, 0.5f, 1, kernel);
                pr.AssertClose(serial, 0.75f, 0.5f, $"managed {kernel} {ta}/{tb} {m}x{n}x{k}");
                // Workers compute the same tiles in the same order, so the split changes no bit.
                foreach (int threads in new[] { 2, 3 })
                    Assert.Equal(serial, pr.RunManaged(0.75f, 0.5f, threads, kernel));
                // Nor does reading A in place instead of from packed panels (the AVX-512 kernel, A not transposed).
                ManagedGemm.DirectA = false;
                try { Assert.Equal(serial, pr.RunManaged(0.75f, 0.5f, 2, kernel)); }
                finally { ManagedGemm.DirectA = true; }
            }
        var port = new Problem(rng, false, true, m, n, k, pad: 1);
        port.AssertClose(port.RunManaged(1f, 0f, 2, portable: true), 1f, 0f, $"portable {m}x{n}x{k}");
    }

    // The kernel a ForceKernel scope names is the one Gemm's top-level and in-parallel-body calls use,
    // also on Parallel.For workers; a kernel the CPU lacks falls back, and the scope restores the choice.
    [Fact]
    public void ForceKernelSelectsThePathEverywhere()
    {
        var before = ManagedGemm.Current;
        using (ManagedGemm.ForceKernel(GemmKernel.Avx2))
        {
            Assert.Equal(GemmKernel.Avx2 <= ManagedGemm.Best ? GemmKernel.Avx2 : ManagedGemm.Best, ManagedGemm.Current);
            var seen = new GemmKernel[4];
            Parallelism.For(0, 4, i => seen[i] = ManagedGemm.Current);
            Assert.All(seen, k => Assert.Equal(ManagedGemm.Current, k));
            Assert.Contains("6x16", ManagedGemm.Describe());
        }
        Assert.Equal(before, ManagedGemm.Current);
        using (ManagedGemm.ForceKernel(GemmKernel.Avx512))
            Assert.Equal(System.Runtime.Intrinsics.X86.Avx512F.IsSupported && ManagedGemm.Best == GemmKernel.Avx512 ? GemmKernel.Avx512 : ManagedGemm.Best, ManagedGemm.Current);
    }

    [Theory]
    [InlineData(1f, 0f)]
    [InlineData(2.5f, 0f)]
    [InlineData(1f, 1f)]
    [InlineData(-0.5f, 0.75f)]
    [InlineData(0f, 2f)]
    [InlineData(0f, 0f)]
    public void AlphaBetaVariants(float alpha, float beta)
    {
        var rng = new Rng(13);
        foreach (var (ta, tb) in Transposes)
            foreach (var (m, n, k) in new[] { (13, 37, 19), (6, 16, 300), (50, 50, 32), (12, 32, 200), (24, 64, 7) })
            {
                var pr = new Problem(rng, ta, tb, m, n, k, pad: 2);
                pr.AssertClose(pr.RunManaged(alpha, beta, 1, GemmKernel.Avx512), alpha, beta, $"avx512 a={alpha} b={beta}");
                pr.AssertClose(pr.RunManaged(alpha, beta, 1, false), alpha, beta, $"fma a={alpha} b={beta}");
                pr.AssertClose(pr.RunManaged(alpha, beta, 1, true), alpha, beta, $"portable a={alpha} b={beta}");
                if (OpenBlas.IsAvailable)
                    pr.AssertClose(pr.RunOpenBlas(alpha, beta), alpha, beta, $"openblas a={alpha} b={beta}");
            }
    }

    // BLAS semantics: beta = 0 overwrites C without reading it, so NaN already there vanishes.
    [Theory]
    [InlineData(0)]
    [InlineData(8)]
    [InlineData(300)]
    public void BetaZeroIgnoresNaNInC(int k)
    {
        var rng = new Rng(14);
        foreach (var (ta, tb) in Transposes)
        {
            var pr = new Problem(rng, ta, tb, 23, 41, k, pad: 1, nanC: true);
            foreach (var c in new[] { pr.RunManaged(1f, 0f, 1, GemmKernel.Avx512), pr.RunManaged(1f, 0f, 1, false), pr.RunManaged(1f, 0f, 2, true), pr.RunDispatcher(1f, 0f) })
            {
                for (int i = 0; i < pr.M; i++)
                    for (int j = 0; j < pr.N; j++) Assert.False(float.IsNaN(c[i * pr.Ldc + j]), $"NaN left at C[{i},{j}], k={k}");
                pr.AssertClose(c, 1f, 0f, $"nan-C k={k}");
            }
        }
    }

    [Fact]
    public void KZeroScalesCByBeta()
    {
        var rng = new Rng(15);
        var pr = new Problem(rng, false, false, 9, 20, 0, pad: 2);
        var c = pr.RunManaged(3f, 0.5f, 2, false);
        for (int i = 0; i < 9; i++)
            for (int j = 0; j < 20; j++) Assert.Equal(0.5f * pr.C0[i * pr.Ldc + j], c[i * pr.Ldc + j]);
        pr.AssertClose(pr.RunDispatcher(3f, 0.5f), 3f, 0.5f, "dispatcher k=0");
        Assert.Equal(pr.C0, pr.RunManaged(3f, 1f, 1, false));
    }

    [Fact]
    public void EmptyOutputIsANoOp()
    {
        var c = new float[] { 1, 2, 3 };
        ManagedGemm.Sgemm(false, false, 0, 3, 5, 1f, Array.Empty<float>(), 5, new float[15], 3, 0f, c, 3, parallel: true);
        ManagedGemm.Sgemm(false, false, 3, 0, 5, 1f, new float[15], 5, Array.Empty<float>(), 1, 0f, Array.Empty<float>(), 1, parallel: false);
        Gemm.Sgemm(true, true, 0, 0, 0, 1f, Array.Empty<float>(), 1, Array.Empty<float>(), 1, 0f, c, 1);
        Assert.Equal(new float[] { 1, 2, 3 }, c);
    }

    // Small integers multiply and add exactly in float, so every path must match the reference
    // bit for bit, whatever its summation order.
    [Fact]
    public void IntegerInputsAreExact()
    {
        var rng = new Rng(16);
        foreach (var (ta, tb) in Transposes)
            foreach (var (m, n, k) in new[] { (17, 33, 9), (145, 70, 260), (64, 200, 200) })
            {
                var pr = new Problem(rng, ta, tb, m, n, k, pad: 1, integers: true);
                var want = pr.Reference(1f, 1f);
                Assert.Equal(want, pr.RunManaged(1f, 1f, 1, false));
                Assert.Equal(want, pr.RunManaged(1f, 1f, 2, true));
                Assert.Equal(want, pr.RunDispatcher(1f, 1f));
                if (OpenBlas.IsAvailable) Assert.Equal(want, pr.RunOpenBlas(1f, 1f));
            }
    }

    // OpenBLAS through our binding, same cases as the managed kernel. Passes trivially when the
    // library is not installed (the managed tests still run).
    [Fact]
    public void OpenBlasMatchesReference()
    {
        if (!OpenBlas.IsAvailable) return;
        var rng = new Rng(17);
        foreach (var (ta, tb) in Transposes)
            foreach (var (m, n, k) in new[] { (1, 1, 1), (7, 9, 8), (15, 17, 16), (33, 100, 257), (257, 33, 100), (6, 16, 0) })
            {
                var pr = new Problem(rng, ta, tb, m, n, k, pad: 3);
                pr.AssertClose(pr.RunOpenBlas(1.25f, 0.5f), 1.25f, 0.5f, $"openblas {ta}/{tb} {m}x{n}x{k}");
                var nan = new Problem(rng, ta, tb, m, n, k, pad: 1, nanC: true);
                nan.AssertClose(nan.RunOpenBlas(1f, 0f), 1f, 0f, $"openblas nan-C {m}x{n}x{k}");
            }
    }

    // The dispatcher at top level (configured backend, threaded) and inside a Parallelism.For body
    // (managed, single-threaded), as attention's batched small products call it.
    [Fact]
    public void DispatcherInsideAndOutsideParallelBodies()
    {
        var rng = new Rng(18);
        var outer = new Problem(rng, false, true, 200, 120, 96, pad: 2);
        Assert.False(Parallelism.InsideParallelBody);
        outer.AssertClose(outer.RunDispatcher(1f, 0f), 1f, 0f, "dispatcher top level");

        var problems = new Problem[6];
        for (int i = 0; i < problems.Length; i++)
            problems[i] = new Problem(rng, i % 2 == 1, i % 3 == 0, 50, 50, 32, pad: i % 3);
        var results = new float[problems.Length][];
        var inside = new bool[problems.Length];
        Parallelism.For(0, problems.Length, i =>
        {
            inside[i] = Parallelism.InsideParallelBody;
            results[i] = problems[i].RunDispatcher(0.5f, 0.25f);
        });
        Assert.All(inside, x => Assert.True(x));
        for (int i = 0; i < problems.Length; i++)
            problems[i].AssertClose(results[i], 0.5f, 0.25f, $"dispatcher in body #{i}");
    }

    // Called inside parallel loops for tiny products, the serial path must not allocate once the
    // thread's packing buffers exist.
    [Fact]
    public void SerialSmallCallDoesNotAllocate()
    {
        var pr = new Problem(new Rng(19), false, true, 50, 50, 32);
        var c = new float[50 * 50];
        ManagedGemm.Sgemm(false, true, 50, 50, 32, 1f, pr.A, pr.Lda, pr.B, pr.Ldb, 0f, c, 50, parallel: false);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int r = 0; r < 10; r++)
            ManagedGemm.Sgemm(false, true, 50, 50, 32, 1f, pr.A, pr.Lda, pr.B, pr.Ldb, 0f, c, 50, parallel: false);
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
    }

    [Fact]
    public void ArgumentErrors()
    {
        var a = new float[12];
        var b = new float[12];
        var c = new float[9];
        var calls = new List<Action<int, int, int, int, int, int, int, int>>
        {
            (m, n, k, lda, ldb, ldc, aLen, cLen) => Gemm.Sgemm(false, false, m, n, k, 1f, a.AsSpan(0, aLen), lda, b, ldb, 0f, c.AsSpan(0, cLen), ldc),
            (m, n, k, lda, ldb, ldc, aLen, cLen) => Gemm.Reference(false, false, m, n, k, 1f, a.AsSpan(0, aLen), lda, b, ldb, 0f, c.AsSpan(0, cLen), ldc),
            (m, n, k, lda, ldb, ldc, aLen, cLen) => ManagedGemm.Sgemm(false, false, m, n, k, 1f, a.AsSpan(0, aLen), lda, b, ldb, 0f, c.AsSpan(0, cLen), ldc, true),
            (m, n, k, lda, ldb, ldc, aLen, cLen) => ManagedGemm.Run(false, false, m, n, k, 1f, a.AsSpan(0, aLen), lda, b, ldb, 0f, c.AsSpan(0, cLen), ldc, 1, true),
        };
        foreach (var call in calls)
        {
            call(3, 3, 4, 4, 3, 3, 12, 9); // A 3×4, B 4×3, C 3×3: valid
            Assert.Contains("negative", Assert.Throws<ArgumentException>(() => call(-1, 3, 4, 4, 3, 3, 12, 9)).Message);
            Assert.Contains("negative", Assert.Throws<ArgumentException>(() => call(3, 3, -4, 4, 3, 3, 12, 9)).Message);
            Assert.Contains("leading dimension", Assert.Throws<ArgumentException>(() => call(3, 3, 4, 3, 3, 3, 12, 9)).Message);
            Assert.Contains("leading dimension", Assert.Throws<ArgumentException>(() => call(3, 3, 4, 4, 2, 3, 12, 9)).Message);
            Assert.Contains("leading dimension", Assert.Throws<ArgumentException>(() => call(3, 3, 4, 4, 3, 2, 12, 9)).Message);
            Assert.Contains("A buffer", Assert.Throws<ArgumentException>(() => call(3, 3, 4, 4, 3, 3, 11, 9)).Message);
            Assert.Contains("B buffer", Assert.Throws<ArgumentException>(() => call(3, 3, 4, 4, 4, 3, 12, 9)).Message);
            Assert.Contains("C buffer", Assert.Throws<ArgumentException>(() => call(3, 3, 4, 4, 3, 3, 12, 8)).Message);
        }
        // Transposed A is stored K×M: lda must cover M.
        Assert.Throws<ArgumentException>(() => Gemm.Sgemm(true, false, 4, 3, 3, 1f, a, 3, b, 3, 0f, new float[12], 3));
    }

    [Fact]
    public void BenchmarkHelpersValidateAndMeasure()
    {
        var c = GemmBenchmark.Product(GemmBackend.Managed, 20, 30, 40, transA: true, transB: false, seed: 3);
        Assert.True(GemmBenchmark.ReferenceError(c, 20, 30, 40, true, false, seed: 3) < 1e-6);
        c[5 * 30 + 7] += 0.5f;
        Assert.True(GemmBenchmark.ReferenceError(c, 20, 30, 40, true, false, seed: 3, sampleRows: 20) > 1e-3);
        // A different seed means different inputs, which the check must notice.
        Assert.True(GemmBenchmark.ReferenceError(GemmBenchmark.Product(GemmBackend.Managed, 8, 8, 8, seed: 4), 8, 8, 8, seed: 5) > 1e-3);

        double g = GemmBenchmark.Measure(GemmBackend.Managed, 32, 32, 32, reps: 3);
        Assert.True(g > 0 && double.IsFinite(g));
        Assert.Throws<ArgumentOutOfRangeException>(() => GemmBenchmark.Measure(GemmBackend.Managed, 0, 4, 4, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => GemmBenchmark.Measure(GemmBackend.Managed, 4, 4, 4, 0));
        Assert.Throws<ArgumentException>(() => GemmBenchmark.ReferenceError(new float[5], 2, 3, 4));
        if (!OpenBlas.IsAvailable)
            Assert.Throws<InvalidOperationException>(() => GemmBenchmark.Measure(GemmBackend.OpenBlas, 4, 4, 4, 1));
        else
        {
            var co = GemmBenchmark.Product(GemmBackend.OpenBlas, 20, 30, 40, false, true, seed: 3);
            Assert.True(GemmBenchmark.ReferenceError(co, 20, 30, 40, false, true, seed: 3) < 1e-6);
        }
    }

    // Top-level calls go to the managed GEMM where its AVX-512 or AVX2 + FMA kernel runs (Gemm.cs header), to
    // OpenBLAS elsewhere when it loads.
    [Fact]
    public void DefaultBackendFollowsTheKernelThisCpuRuns()
    {
        var want = OpenBlas.IsAvailable && ManagedGemm.Best == GemmKernel.Portable ? GemmBackend.OpenBlas : GemmBackend.Managed;
        Assert.Equal(want, Gemm.DefaultBackend());
    }

    [Fact]
    public void DescribeNamesTheKernel()
    {
        Assert.Contains(ManagedGemm.Current == GemmKernel.Avx512 ? "12x32 AVX-512F" : "6x16", ManagedGemm.Describe());
        Assert.Contains(Gemm.Backend == GemmBackend.OpenBlas ? "OpenBLAS" : "managed", Gemm.Describe());
    }

    // The bias epilogue (C = op(A)·op(B) + bias, used by Linear): on every managed kernel, 1 to 3 workers,
    // all transposes, edge tiles and K over several blocks, bit for bit what filling C with the bias rows
    // and accumulating with beta = 1 gives (the two-pass form it replaces, and OpenBLAS's path), and within
    // the reference bound of that form. C's slack columns stay untouched; NaN in C is ignored.
    [Theory]
    [InlineData((int)GemmKernel.Portable)]
    [InlineData((int)GemmKernel.Avx2)]
    [InlineData((int)GemmKernel.Avx512)]
    public void BiasEpilogueEqualsBiasRowsThenBetaOne(int kernelId)
    {
        var kernel = (GemmKernel)kernelId;
        var rng = new Rng(23);
        var shapes = new (int M, int N, int K)[] { (1, 1, 1), (5, 7, 9), (12, 32, 16), (13, 33, 200), (40, 70, 300), (30, 100, 520), (197, 64, 64) };
        foreach (var (ta, tb) in Transposes)
            foreach (var (m, n, k) in shapes)
                foreach (int threads in new[] { 1, 2, 3 })
                {
                    var pr = new Problem(rng, ta, tb, m, n, k, pad: 2, nanC: threads == 2);
                    var bias = new float[n + 3];
                    for (int j = 0; j < bias.Length; j++) bias[j] = 2f * rng.NextFloat() - 1f;
                    float alpha = threads == 3 ? 0.75f : 1f;
                    var want = (float[])pr.C0.Clone();
                    for (int i = 0; i < m; i++) Array.Copy(bias, 0, want, i * pr.Ldc, n);
                    var seeded = (float[])want.Clone();
                    ManagedGemm.Run(ta, tb, m, n, k, alpha, pr.A, pr.Lda, pr.B, pr.Ldb, 1f, want, pr.Ldc, threads, kernel);
                    var got = (float[])pr.C0.Clone();
                    ManagedGemm.Run(ta, tb, m, n, k, alpha, pr.A, pr.Lda, pr.B, pr.Ldb, 0f, got, pr.Ldc, bias, threads, kernel);
                    string what = $"{kernel} {(ta ? "Aᵀ" : "A")}·{(tb ? "Bᵀ" : "B")} {m}x{n}x{k} threads {threads}";
                    Assert.True(want.AsSpan().SequenceEqual(got), $"{what}: bias epilogue differs from bias rows + beta 1");
                    var r = (float[])seeded.Clone();
                    Gemm.Reference(ta, tb, m, n, k, alpha, pr.A, pr.Lda, pr.B, pr.Ldb, 1f, r, pr.Ldc);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++)
                        {
                            double mag = Math.Abs(bias[j]);
                            for (int p = 0; p < k; p++) mag += Math.Abs((double)pr.OpA(i, p) * pr.OpB(p, j));
                            Assert.True(Math.Abs(got[i * pr.Ldc + j] - r[i * pr.Ldc + j]) <= (k + 4) * U * mag + 1e-30, $"{what}: C[{i},{j}] off the reference");
                        }
                }
        // The dispatcher (whichever backend is selected) gives the same numbers as the managed kernel path.
        var p2 = new Problem(rng, false, true, 50, 70, 90);
        var b2 = Enumerable.Range(0, 70).Select(j => 0.01f * j - 0.3f).ToArray();
        var viaGemm = (float[])p2.C0.Clone();
        Gemm.SgemmBias(false, true, 50, 70, 90, 1f, p2.A, p2.Lda, p2.B, p2.Ldb, b2, viaGemm, p2.Ldc);
        var rows = (float[])p2.C0.Clone();
        for (int i = 0; i < 50; i++) Array.Copy(b2, 0, rows, i * p2.Ldc, 70);
        Gemm.Sgemm(false, true, 50, 70, 90, 1f, p2.A, p2.Lda, p2.B, p2.Ldb, 1f, rows, p2.Ldc);
        Assert.True(rows.AsSpan().SequenceEqual(viaGemm));
        Assert.Throws<ArgumentException>(() => Gemm.SgemmBias(false, true, 50, 70, 90, 1f, p2.A, p2.Lda, p2.B, p2.Ldb, b2.AsSpan(0, 69), viaGemm, p2.Ldc));
    }

    // A last block of fewer than 12 rows across whole 32-column panels runs KernelRows512 straight into C instead of a
    // padded 12-row tile merged from a scratch tile. With alpha = 1 (every model GEMM) the two give the same bits, with
    // and without beta and bias, A in place or packed, transposed or not; with alpha ≠ 1 and beta ≠ 0 the row kernel
    // rounds alpha·acc + beta·C once (an FMA) where the merge rounds twice, and both stay within the reference bound.
    [Fact]
    public void PartialRowBlockEqualsThePaddedTile()
    {
        if (ManagedGemm.Best != GemmKernel.Avx512) return; // the AVX-512 kernel's path only
        var rng = new Rng(29);
        foreach (var (ta, tb) in Transposes)
            foreach (var (m, n, k) in new[] { (400, 64, 128), (13, 32, 7), (143, 96, 300), (100, 70, 33) })
                foreach (float beta in new[] { 0f, 1f, 0.5f })
                    foreach (bool withBias in new[] { false, true })
                    {
                        var pr = new Problem(rng, ta, tb, m, n, k, pad: 2, nanC: beta == 0f);
                        var bias = withBias ? Enumerable.Range(0, n).Select(j => 0.01f * j - 0.2f).ToArray() : Array.Empty<float>();
                        float b = withBias ? 0f : beta;
                        float[] Run(bool rowsKernel, float alpha)
                        {
                            var c = (float[])pr.C0.Clone();
                            ManagedGemm.PartialRowsKernel = rowsKernel;
                            try { ManagedGemm.Run(ta, tb, m, n, k, alpha, pr.A, pr.Lda, pr.B, pr.Ldb, b, c, pr.Ldc, bias, 2, GemmKernel.Avx512); }
                            finally { ManagedGemm.PartialRowsKernel = true; }
                            return c;
                        }
                        string what = $"{(ta ? "Aᵀ" : "A")}·{(tb ? "Bᵀ" : "B")} {m}x{n}x{k} beta {b} bias {withBias}";
                        Assert.True(Run(false, 1f).AsSpan().SequenceEqual(Run(true, 1f)), what);
                        if (!withBias) pr.AssertClose(Run(true, -0.75f), -0.75f, b, what);
                    }
    }

    // A weight packed once (WeightPacking / PackedWeight) gives the bits of the GEMM that packs it per call: with
    // and without bias, 1–3 workers, several K blocks, edge tiles, a padded A and C; for each kernel this CPU runs.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PrepackedWeightEqualsPackingPerCall(bool avx512)
    {
        var kernel = avx512 ? GemmKernel.Avx512 : GemmKernel.Avx2;
        if (kernel > ManagedGemm.Best) return; // a kernel this CPU cannot run
        var rng = new Rng(41);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (13, 33, 200), (197, 64, 64), (300, 40, 520), (1576 / 4, 96, 192) })
            foreach (bool withBias in new[] { false, true })
                foreach (int threads in new[] { 1, 2, 3 })
                {
                    var pr = new Problem(rng, false, true, m, n, k, pad: 2);
                    var w = new float[n * k];
                    for (int j = 0; j < n; j++) Array.Copy(pr.B, j * pr.Ldb, w, j * k, k);
                    var bias = withBias ? Enumerable.Range(0, n).Select(j => 0.01f * j - 0.2f).ToArray() : Array.Empty<float>();
                    var want = (float[])pr.C0.Clone();
                    if (withBias) ManagedGemm.Run(false, true, m, n, k, 1f, pr.A, pr.Lda, w, k, 0f, want, pr.Ldc, bias, threads, kernel);
                    else ManagedGemm.Run(false, true, m, n, k, 1f, pr.A, pr.Lda, w, k, 0f, want, pr.Ldc, threads, kernel);
                    var got = (float[])pr.C0.Clone();
                    int saved = Parallelism.Threads;
                    Parallelism.Threads = threads;
                    try { ManagedGemm.RunPrepacked(m, pr.A, pr.Lda, new PackedWeight(w, n, k, kernel), bias, got, pr.Ldc, parallel: true); }
                    finally { Parallelism.Threads = saved; }
                    Assert.True(want.AsSpan().SequenceEqual(got), $"prepacked {kernel} {m}x{n}x{k} bias {withBias} threads {threads}");
                }
    }

    // A residual added in the prepacked GEMM (full AVX-512 tiles in their store, other tiles after it) gives the bits of
    // adding it to C after the call: with and without bias, beta 0 (C full of NaN, never read) and beta 0.5, several K
    // blocks (added once, after the last), edge rows and columns, 1 and 2 workers; for each kernel this CPU runs.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PrepackedResidualEqualsAddingItAfter(bool avx512)
    {
        var kernel = avx512 ? GemmKernel.Avx512 : GemmKernel.Avx2;
        if (kernel > ManagedGemm.Best) return;
        var rng = new Rng(43);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (13, 33, 200), (400, 64, 128), (100, 96, 400) })
            foreach (bool withBias in new[] { false, true })
                foreach (float beta in withBias ? new[] { 0f } : new[] { 0f, 0.5f })
                    foreach (int threads in new[] { 1, 2 })
                    {
                        var pr = new Problem(rng, false, true, m, n, k, pad: 2, nanC: beta == 0f);
                        var w = new float[n * k];
                        for (int j = 0; j < n; j++) Array.Copy(pr.B, j * pr.Ldb, w, j * k, k);
                        var bias = withBias ? Enumerable.Range(0, n).Select(j => 0.01f * j - 0.2f).ToArray() : Array.Empty<float>();
                        var residual = new float[pr.C0.Length];
                        for (int i = 0; i < residual.Length; i++) residual[i] = 2f * rng.NextFloat() - 1f;
                        var packed = new PackedWeight(w, n, k, kernel);
                        int saved = Parallelism.Threads;
                        Parallelism.Threads = threads;
                        try
                        {
                            var want = (float[])pr.C0.Clone();
                            ManagedGemm.RunPrepacked(m, pr.A, pr.Lda, packed, bias, want, pr.Ldc, parallel: true, beta: beta);
                            for (int i = 0; i < m; i++)
                                for (int j = 0; j < n; j++) want[i * pr.Ldc + j] = residual[i * pr.Ldc + j] + want[i * pr.Ldc + j];
                            var got = (float[])pr.C0.Clone();
                            ManagedGemm.RunPrepacked(m, pr.A, pr.Lda, packed, bias, got, pr.Ldc, parallel: true, beta: beta, residual: residual);
                            Assert.True(want.AsSpan().SequenceEqual(got), $"{kernel} {m}x{n}x{k} bias {withBias} beta {beta} threads {threads}");
                        }
                        finally { Parallelism.Threads = saved; }
                    }
    }

    // A weight packed as B = W (not transposed: the input gradient dx = dy·W of a layer) gives the bits of the GEMM
    // that packs it per call, overwriting C (beta 0, C full of NaN: never read) and accumulating onto it (beta 1).
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PlainPrepackedWeightEqualsPackingPerCall(bool avx512)
    {
        var kernel = avx512 ? GemmKernel.Avx512 : GemmKernel.Avx2;
        if (kernel > ManagedGemm.Best) return;
        var rng = new Rng(43);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (13, 33, 200), (400, 128, 384), (300, 40, 520) })
            foreach (float beta in new[] { 0f, 1f })
                foreach (int threads in new[] { 1, 2 })
                {
                    var pr = new Problem(rng, false, false, m, n, k, pad: 2, nanC: beta == 0f);
                    var w = new float[k * n];
                    for (int p = 0; p < k; p++) Array.Copy(pr.B, p * pr.Ldb, w, p * n, n);
                    var want = (float[])pr.C0.Clone();
                    ManagedGemm.Run(false, false, m, n, k, 1f, pr.A, pr.Lda, w, n, beta, want, pr.Ldc, threads, kernel);
                    var got = (float[])pr.C0.Clone();
                    int saved = Parallelism.Threads;
                    Parallelism.Threads = threads;
                    try { ManagedGemm.RunPrepacked(m, pr.A, pr.Lda, new PackedWeight(w, n, k, kernel, transposed: false), default, got, pr.Ldc, parallel: true, beta: beta); }
                    finally { Parallelism.Threads = saved; }
                    Assert.True(want.AsSpan().SequenceEqual(got), $"plain prepacked {kernel} {m}x{n}x{k} beta {beta} threads {threads}");
                    Assert.DoesNotContain(got.Where((v, i) => i % pr.Ldc < n && i / pr.Ldc < m), float.IsNaN);
                }
    }

    // The partial-block kernel (1 to 11 rows) gives, row for row, the 12-row kernels' bits, in both of its A
    // layouts (rows read in place, and a panel whose k-th column of rows is contiguous), for beta 0 with an alpha
    // and beta 1; C's rows past the block and the row slack are left alone.
    [Fact]
    public unsafe void PartialRowKernelMatchesTheFullTile()
    {
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return; // the AVX-512 kernels need the CPU
        var rng = new Rng(47);
        const int K = 37, Ld = 41, Ldc = 40, Panel = 14;
        foreach (int rows in Enumerable.Range(1, 11))
            foreach (var (alpha, beta) in new[] { (0.37f, 0f), (1f, 1f) })
            {
                // A: 12 rows of K in place (rows past `rows` are NaN: never read); its transpose as a panel of Panel floats per k.
                var a = new float[12 * Ld];
                var panel = new float[K * Panel];
                for (int r = 0; r < 12; r++)
                    for (int p = 0; p < K; p++)
                    {
                        float v = r < rows ? rng.NextFloat() * 2 - 1 : float.NaN;
                        a[r * Ld + p] = v;
                        panel[p * Panel + r] = v;
                    }
                var b = new float[K * 48];
                for (int i = 0; i < b.Length; i++) b[i] = rng.NextFloat() * 2 - 1;
                var c0 = new float[12 * Ldc];
                for (int i = 0; i < c0.Length; i++) c0[i] = rng.NextFloat() * 2 - 1;
                // The reference: the 12-row kernels on A with zero rows past the block.
                var aZero = a.Select(v => float.IsNaN(v) ? 0f : v).ToArray();
                var panelZero = panel.Select(v => float.IsNaN(v) ? 0f : v).ToArray();
                var want = (float[])c0.Clone();
                var wantPanel = (float[])c0.Clone();
                var got = (float[])c0.Clone();
                var gotPanel = (float[])c0.Clone();
                fixed (float* pa = aZero, pp = panelZero, pb = b, pw = want, pwp = wantPanel)
                {
                    ManagedGemm.Kernel512Direct(K, pa, Ld, pb, 48, pw, Ldc, alpha, beta);
                    ManagedGemm.Kernel512(K, pp, pb, pwp, Ldc, alpha, beta, null, Panel, 48);
                }
                fixed (float* pa = a, pp = panel, pb = b, pg = got, pgp = gotPanel)
                {
                    ManagedGemm.KernelRows512(rows, K, pa, Ld, 1, pb, 48, pg, Ldc, alpha, beta);
                    ManagedGemm.KernelRows512(rows, K, pp, 1, Panel, pb, 48, pgp, Ldc, alpha, beta);
                }
                for (int r = 0; r < 12; r++)
                    for (int j = 0; j < Ldc; j++)
                    {
                        int i = r * Ldc + j;
                        float expect = r < rows && j < 32 ? want[i] : c0[i];
                        Assert.True(BitConverter.SingleToInt32Bits(expect) == BitConverter.SingleToInt32Bits(got[i]), $"in place, {rows} rows, alpha {alpha} beta {beta}: C[{r},{j}] {got[i]} != {expect}");
                        float expectPanel = r < rows && j < 32 ? wantPanel[i] : c0[i];
                        Assert.True(BitConverter.SingleToInt32Bits(expectPanel) == BitConverter.SingleToInt32Bits(gotPanel[i]), $"panel, {rows} rows, alpha {alpha} beta {beta}: C[{r},{j}] {gotPanel[i]} != {expectPanel}");
                    }
            }
        Assert.Throws<ArgumentOutOfRangeException>(() => { fixed (float* z = new float[1]) ManagedGemm.KernelRows512(12, 1, z, 1, 1, z, 1, z, 1, 1f, 0f); });
    }

    // Ops.Linear through a Linear module inside Freeze() equals the call outside it, and the cache lives only as
    // long as the outermost scope.
    [Fact]
    public void FrozenWeightsGiveTheSameLinear()
    {
        var rng = new Rng(43);
        var layer = new ViTQuant.Nn.Linear(48, 80, bias: true, rng);
        var x = Tensor.Randn(rng, 1f, 5, 60, 48);
        float[] plain;
        using (Autograd.NoGrad()) plain = layer.Forward(x).ToArray();
        Assert.False(WeightPacking.Active);
        using (WeightPacking.Freeze())
        {
            using (WeightPacking.Freeze()) Assert.True(WeightPacking.Active);
            Assert.True(WeightPacking.Active);
            using (Autograd.NoGrad())
                for (int round = 0; round < 2; round++) Assert.Equal(plain, layer.Forward(x).ToArray());
        }
        Assert.False(WeightPacking.Active);
        // After the scope the weight may change again and is packed afresh.
        layer.Weight.Span[0] += 1f;
        using (Autograd.NoGrad())
        {
            var changed = layer.Forward(x).ToArray();
            using (WeightPacking.Freeze()) Assert.Equal(changed, layer.Forward(x).ToArray());
            Assert.NotEqual(plain, changed);
        }
    }

    // A kept cache (Freeze(keep), a training step's chunks) packs a weight that changed between its scopes again, into
    // the same PackedWeight; a nested scope uses it without packing anew.
    [Fact]
    public void AKeptCacheRepacksChangedWeightsIntoTheSameBuffers()
    {
        var rng = new Rng(44);
        var layer = new ViTQuant.Nn.Linear(48, 80, bias: true, rng);
        var x = Tensor.Randn(rng, 1f, 5, 60, 48);
        var keep = new PackedWeightCache();
        float[] Forward()
        {
            using (Autograd.NoGrad()) return layer.Forward(x).ToArray();
        }
        float[] plain = Forward(), first;
        using (WeightPacking.Freeze(keep)) first = Forward();
        Assert.Equal(plain, first);
        var packed = keep.Map.Values.SingleOrDefault();
        if (packed == null) return; // OpenBLAS or the portable GEMM: nothing is prepacked
        layer.Weight.Span[0] += 1f;
        var changed = Forward();
        Assert.NotEqual(plain, changed);
        using (WeightPacking.Freeze(keep))
        {
            Assert.Equal(changed, Forward());
            using (WeightPacking.Freeze(new PackedWeightCache())) Assert.Equal(changed, Forward()); // nested: the outer cache
            Assert.Equal(changed, Forward());
        }
        Assert.Same(packed, keep.Map.Values.Single());
        Assert.Equal(2, keep.Scope);
    }
}
