// Managed SGEMM: C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C, row-major, in the
// GotoBLAS/BLIS style. Used when OpenBLAS is absent and for every call from inside a parallel body.
//
// Loop nest (one thread's rectangle of C):
//
//   for jc in N step NC            B block of KC×NC floats (4 MB) lives in L2/L3
//     for pc in K step KC            pack op(B)[pc.., jc..] into NR-wide panels (GemmPacking.PackB)
//       for ic in M step MC          pack op(A)[ic.., pc..] into MR-tall panels  (GemmPacking.PackA)
//         for jr in NC step NR         one B micro-panel (KC×NR, 16 KB) stays in L1
//           for ir in MC step MR         the A block (MC×KC, 144 KB) streams from L2
//             C[ir.., jr..] (MR×NR) = alpha·Ap·Bp + beta'·C     (micro-kernel)
//
// beta' is the caller's beta for the first K block and 1 afterwards. With beta = 0 the kernel never
// reads C, so NaN or garbage already in C is ignored (BLAS semantics).
//
// Micro-kernel: 6×16 outputs in twelve Vector256 accumulators; per k step two B loads, six A
// broadcasts and twelve FMAs. That is 15 of the 16 ymm registers, and the twelve independent FMA
// chains cover Zen's 2 FMA ports × 4-cycle latency. Block sizes: KC = 256 keeps a B micro-panel
// (256·16·4 B = 16 KB) in half the 32 KB L1d, MC = 144 keeps the packed A block (144 KB) well inside
// the 512 KB L2 next to B's streams, NC = 4080 (a multiple of 16) keeps the packed B block ≈ 4 MB.
// K is split into equal blocks ≤ KC so no block is left tiny.
//
// Edge tiles: packing pads op(A) rows and op(B) columns with zeros, the kernel computes a full
// 6×16 tile into a scratch tile, and only the valid part is merged into C. The AVX-512 kernel's last block of
// fewer than 12 rows across a whole 32-column panel instead runs KernelRows512, which computes and stores only
// its rows (PartialRowsKernel; a 400-row chunk of vit_fmnist tokens ends in 4 rows: a padded tile did three
// times their work).
//
// Threads: with parallel = true and enough rows, op(B) is packed once into a shared buffer by all
// workers, then C's rows are cut into chunks of whole tiles (≥ 4 per worker) that workers take one at a
// time, each packing its own A rows (RunSharedB: a late or slowed worker takes fewer chunks instead of
// stretching the call). Otherwise (few rows, or a packed B over 1 MB) C is split into Parallelism.Threads
// contiguous row (or column) ranges, multiples of the tile, each worker running the whole blocked nest
// with its own packing buffers. Small products (< 2M multiply-adds) stay on the calling thread: a hand-off
// costs more than they do. Either way every element of C is computed by the same operations in the same
// order whatever the thread count: results are bit-identical.
//
// Kernels (GemmKernel), chosen at run time, best first:
//   Avx512    12×32 tile in 24 Vector512 accumulators (ManagedGemm512.cs), on CPUs with AVX-512F;
//   Avx2      the 6×16 tile (ManagedGemm256.cs), on CPUs with AVX2+FMA (and to test that path on AVX-512 machines);
//   Portable  the same 6×16 tile on Vector<float>; it owns the width ladder (any width dividing 16,
//             else scalar).
// Tests and benchmarks pick a kernel with Run(..., kernel) or, for whole computations that reach GEMM
// through other code, with ForceKernel(kernel) (an AsyncLocal scope, so it follows Parallel.For
// workers; inside such a scope Gemm runs the managed GEMM even where OpenBLAS is its backend); the
// environment variable VITQ_GEMM_KERNEL=avx2|portable caps the choice for a process.
// The blocking constants of the AVX-512 kernel are in ManagedGemm512.cs.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

/// <summary>Micro-kernels of the managed SGEMM, slowest first.</summary>
internal enum GemmKernel { Portable, Avx2, Avx512 }

internal static unsafe partial class ManagedGemm
{
    private const int MR = GemmPacking.MR, NR = GemmPacking.NR;
    internal const int MC = 144, KC = 256, NC = 4080;

    // Below this many multiply-adds (≈ 25 µs on one core) a Parallel.For hand-off costs more than it saves.
    internal const long ParallelMinMacs = 1L << 21;

    private static readonly bool HasFma = Fma.IsSupported && Avx2.IsSupported;

    // VITQ_GEMM_KERNEL's cap for the process (AVX-512 when unset): ForceKernel scopes and explicit kernels above it
    // fall back to it, as to a kernel the CPU lacks. Declared before Best, whose initializer reads it.
    private static readonly GemmKernel Cap = Environment.GetEnvironmentVariable("VITQ_GEMM_KERNEL")?.Trim().ToLowerInvariant() switch
    {
        "avx2" => GemmKernel.Avx2,
        "portable" => GemmKernel.Portable,
        _ => GemmKernel.Avx512,
    };

    /// <summary>The fastest kernel this CPU runs, capped by VITQ_GEMM_KERNEL (avx2 or portable) when set.</summary>
    internal static GemmKernel Best { get; } = ChooseBest();

    private static readonly AsyncLocal<GemmKernel?> Forced = new();

    /// <summary>The kernel top-level calls use now: Best, or the one a ForceKernel scope set.</summary>
    internal static GemmKernel Current => Forced.Value is { } k ? Supported(k) : Best;

    /// <summary>True inside a ForceKernel scope (Gemm then runs the managed kernel even where OpenBLAS is the backend).</summary>
    internal static bool IsForced => Forced.Value != null;

    private static GemmKernel ChooseBest() => Supported(GemmKernel.Avx512);

    // A kernel above the cap, or one the CPU cannot run, falls back to the next slower one.
    private static GemmKernel Supported(GemmKernel k) => k switch
    {
        _ when k > Cap => Supported(Cap),
        GemmKernel.Avx512 when !(Avx512F.IsSupported && HasFma) => Supported(GemmKernel.Avx2),
        GemmKernel.Avx2 when !HasFma => GemmKernel.Portable,
        _ => k,
    };

    /// <summary>
    /// Until the returned scope is disposed, managed GEMM calls from this flow of execution (including
    /// Parallel.For workers it starts) use <paramref name="kernel"/>, or the next slower one the CPU
    /// supports. For tests and A/B benchmarks.
    /// </summary>
    internal static IDisposable ForceKernel(GemmKernel kernel)
    {
        var previous = Forced.Value;
        Forced.Value = kernel;
        return new Restore(previous);
    }

    private sealed class Restore(GemmKernel? previous) : IDisposable
    {
        public void Dispose() => Forced.Value = previous;
    }

    /// <summary>Kernel, tile and block sizes, for `vitq info` and benchmark output.</summary>
    public static string Describe() => Describe(Current);

    internal static string Describe(GemmKernel kernel) => Supported(kernel) switch
    {
        GemmKernel.Avx512 => $"blocked {MR512}x{NR512} AVX-512F, MC={MC} KC={KC512} NC={NC512}",
        GemmKernel.Avx2 => $"blocked {MR}x{NR} AVX2+FMA, MC={MC} KC={KC} NC={NC}",
        _ => $"blocked {MR}x{NR} portable Vector<float>[{Vector<float>.Count}], MC={MC} KC={KC} NC={NC}",
    };

    /// <summary>
    /// C = alpha·op(A)·op(B) + beta·C (row-major, BLAS semantics: beta = 0 overwrites C, k = 0 or
    /// alpha = 0 gives beta·C). When <paramref name="parallel"/> is true the work is split over
    /// Parallelism.Threads workers; otherwise it runs on the calling thread.
    /// Throws ArgumentException when a size is negative, a leading dimension is smaller than the
    /// stored width, or a buffer is too short for the described matrix.
    /// </summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc, bool parallel)
    {
        int threads = parallel && (long)m * n * k >= ParallelMinMacs ? Parallelism.Threads : 1;
        Run(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads, Current);
    }

    /// <summary>
    /// Sgemm with the worker count and kernel choice exposed, so tests can run any split (at any
    /// size) and the portable kernel on any CPU. portable = false means the AVX2 kernel (falling back
    /// to portable without AVX2+FMA).
    /// </summary>
    internal static void Run(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc,
        int threads, bool portable)
        => Run(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads, portable ? GemmKernel.Portable : GemmKernel.Avx2);

    /// <summary>
    /// Sgemm on the given worker count and kernel (a kernel the CPU lacks falls back to the next
    /// slower one). Throws as <see cref="Sgemm"/> does.
    /// </summary>
    internal static void Run(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc,
        int threads, GemmKernel kernel)
        => Run(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, default, threads, kernel);

    /// <summary>
    /// C = alpha·op(A)·op(B) + bias (bias[j] added to every row; beta = 0 semantics, C is not read) when
    /// <paramref name="bias"/> is not empty, else as the overload without it. The bias goes into each C tile
    /// right before the tile's first K block is accumulated onto it with beta = 1, so the result is bit for
    /// bit that of filling C with the bias rows and calling with beta = 1 (DenseCore's former two passes),
    /// without the pass over C. Throws as <see cref="Sgemm"/> does, or when bias is shorter than n.
    /// </summary>
    internal static void Run(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc,
        ReadOnlySpan<float> bias, int threads, GemmKernel kernel)
    {
        // Validated here as well as in Gemm.Sgemm: everything below uses raw pointers.
        Gemm.Validate(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        bool hasBias = !bias.IsEmpty;
        if (hasBias && bias.Length < n) throw new ArgumentException($"GEMM bias has {bias.Length} elements, need {n}");
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f)
        {
            if (hasBias) for (int i = 0; i < m; i++) bias[..n].CopyTo(c.Slice(i * ldc, n));
            else ScaleC(m, n, beta, c, ldc);
            return;
        }
        kernel = Supported(kernel);
        fixed (float* pa = a, pb = b, pc = c, pbias = bias)
        {
            float* bs = hasBias ? pbias : null;
            if (threads <= 1)
            {
                Blocked(transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc, bs, kernel);
                return;
            }
            RunParallel(threads, transA, transB, m, n, k, alpha, (nint)pa, lda, (nint)pb, ldb, beta, (nint)pc, ldc, (nint)bs, kernel);
        }
    }

    // Parallel C: the shared-B row split when there are enough rows for it, else one contiguous row (or
    // column) range per worker, each running the whole blocked nest. The caller keeps a, b and c pinned.
    private static void RunParallel(int threads, bool transA, bool transB, int m, int n, int k, float alpha,
        nint a, int lda, nint b, int ldb, float beta, nint c, int ldc, nint bias, GemmKernel kernel)
    {
        if (SharedB && RunSharedB(threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, kernel)) return;
        bool splitRows = m >= n;
        bool wide = kernel == GemmKernel.Avx512;
        int unit = splitRows ? (wide ? MR512 : MR) : (wide ? NR512 : NR), extent = splitRows ? m : n;
        int units = (extent + unit - 1) / unit;
        int parts = Math.Min(threads, units);
        Parallelism.For(0, parts, t =>
        {
            int start = (int)((long)units * t / parts) * unit;
            int end = Math.Min(extent, (int)((long)units * (t + 1) / parts) * unit);
            if (end <= start) return;
            float* pa = (float*)a, pb = (float*)b, pc = (float*)c, pbias = (float*)bias;
            if (splitRows)
            {
                float* aSub = transA ? pa + start : pa + (nint)start * lda;
                Blocked(transA, transB, end - start, n, k, alpha, aSub, lda, pb, ldb, beta, pc + (nint)start * ldc, ldc, pbias, kernel);
            }
            else
            {
                float* bSub = transB ? pb + (nint)start * ldb : pb + start;
                Blocked(transA, transB, m, end - start, k, alpha, pa, lda, bSub, ldb, beta, pc + start, ldc, pbias == null ? null : pbias + start, kernel);
            }
        });
    }

    /// <summary>False: every parallel call splits C into one range per worker (kept for same-process A/B benchmarks).</summary>
    internal static bool SharedB = true;

    // Packed B larger than this (floats, 1 MB) is not worth one shared copy. Each chunk streams all of the shared B, and
    // once it no longer stays in each core's L2 between chunks, half of every pass comes from the other core's cache;
    // the per-worker split keeps one packed B block (KC × NC) in its own L2 for all its rows. Two threads, fastest /
    // median of 40 calls, shared B against per worker (Xeon, AVX-512; `bench gemm-ab`): DeiT-Tiny's qkv and fc1 weight
    // gradients (B 1576×192) 238–262 / 224–241 against 275–287 / 210–269 GFLOP/s, a 512×128×3200 one (B 3200×128) 211–222 /
    // 197–210 against 252–259 / 193–245, ViT-B's fc1 and fc2 (B 768×3072) 243–264 / 199–251 against 275–290 / 191–285.
    // Forward products of DeiT-Tiny and vit_fmnist (B ≤ 768×192) stay shared: their medians are better there.
    private const long SharedBMaxFloats = 1L << 18;

    // The shared-B split. Why: with one fixed range per worker, a worker that starts late or runs on a core
    // another process holds stretches the whole call (measured: the median DeiT-Tiny fc1 call 1.5× its fastest),
    // and every worker packs all of B again. Here op(B) is packed once, all K blocks, by all workers (region 1,
    // one item per K block and group of panels), then C's rows are cut into chunks of whole tiles, at least
    // 4 per worker, that workers take one at a time (region 2), each packing its own A rows. Every C tile sees
    // the same K blocks in the same order with the same kernel as in Blocked, so results are bit for bit
    // those of one thread. False (nothing done) when there are too few rows or B is too large.
    private static bool RunSharedB(int threads, bool transA, bool transB, int m, int n, int k, float alpha,
        nint a, int lda, nint b, int ldb, float beta, nint c, int ldc, nint bias, GemmKernel kernel)
    {
        bool wide = kernel == GemmKernel.Avx512;
        int tr = wide ? MR512 : MR, tc = wide ? NR512 : NR;
        var (kBlocks, kcMax) = KBlocking(k, wide ? KC512 : KC);
        int np = RoundUp(n, tc), panels = np / tc;
        long blockFloats = (long)np * kcMax;
        if (blockFloats * kBlocks > SharedBMaxFloats) return false;
        int rows = ChunkRows(m, threads, tr), chunks = (m + rows - 1) / rows;
        // Each chunk streams all of packed B once, so a chunk must reuse each B micro-panel on enough A rows: with
        // few rows (a weight gradient: M = out features, K = every token of the batch) the per-worker split, which
        // keeps its B block in L2 for all its rows, is faster (vit_fmnist training at batch 64, 2 threads: the
        // weight-gradient GEMMs took 49.6 ms per step on shared B, 40–45 ms with this limit; a noisy machine).
        if (chunks < 2 * threads || rows < MC / 2) return false;

        nint shared = (nint)SharedBuffer(blockFloats * kBlocks);
        const int PanelsPerItem = 4;
        int groups = (panels + PanelsPerItem - 1) / PanelsPerItem;
        Parallelism.For(0, kBlocks * groups, it =>
        {
            int kb = it / groups, j0 = it % groups * PanelsPerItem * tc;
            var (pc, kc) = KBlock(k, kb, kBlocks);
            float* dst = (float*)shared + kb * blockFloats + (nint)(j0 / tc) * kc * tc;
            GemmPacking.PackB(transB, (float*)b, ldb, pc, j0, kc, Math.Min(PanelsPerItem * tc, n - j0), dst, tc);
        });
        Parallelism.For(0, chunks, ch => RowChunk(ch * rows, Math.Min(rows, m - ch * rows), rows, transA, (float*)a, lda, n, k,
            kBlocks, kcMax, (float*)shared, blockFloats, alpha, beta, (float*)c, ldc, (float*)bias, kernel));
        return true;
    }

    // Rows per chunk of the chunked splits: whole tiles, ≤ MC, and at least 4 chunks per worker (a multiple of
    // the worker count when M allows), so that a late worker costs at most a small share of the call.
    private static int ChunkRows(int m, int threads, int tileRows)
    {
        int perWorker = Math.Max(4, (m + threads * MC - 1) / (threads * MC));
        return RoundUp((m + threads * perWorker - 1) / (threads * perWorker), tileRows);
    }

    // Rows i0 .. i0+mc of C against a B packed for all K blocks (block kb at b + kb·blockFloats), each K block's A
    // rows packed (or read in place) into this thread's buffer first: the same tiles in the same order as Blocked.
    private static void RowChunk(int i0, int mc, int maxRows, bool transA, float* a, nint lda, int n, int k, int kBlocks, int kcMax,
        float* b, long blockFloats, float alpha, float beta, float* c, nint ldc, float* bias, GemmKernel kernel, float* residual = null)
    {
        GemmPacking.Buffers(maxRows * kcMax, 0, out float* ap, out _);
        float* tile = stackalloc float[MR512 * NR512 + 16];
        tile = (float*)(((nint)tile + 63) & ~(nint)63);
        float* cRows = c + (nint)i0 * ldc;
        for (int kb = 0; kb < kBlocks; kb++)
        {
            var (pc, kc) = KBlock(k, kb, kBlocks);
            float* direct = PackA(transA, a, lda, i0, pc, mc, kc, ap, kernel);
            Tiles(kc, mc, n, ap, direct, lda, b + kb * blockFloats, cRows, ldc, alpha,
                kb == 0 && bias == null ? beta : 1f, kb == 0 ? bias : null, tile, kernel,
                kb == kBlocks - 1 && residual != null ? residual + (nint)i0 * ldc : null);
        }
    }

    /// <summary>K split into equal blocks of at most kcLimit (Blocked's blocking): block count and the largest block.</summary>
    internal static (int Blocks, int KcMax) KBlocking(int k, int kcLimit = KC512)
    {
        int blocks = (k + kcLimit - 1) / kcLimit;
        return (blocks, (k + blocks - 1) / blocks);
    }

    /// <summary>Start and depth of K block kb of <paramref name="blocks"/> over a depth k (as in Blocked).</summary>
    internal static (int Pc, int Kc) KBlock(int k, int kb, int blocks)
    {
        int pc = (int)((long)k * kb / blocks);
        return (pc, (int)((long)k * (kb + 1) / blocks) - pc);
    }

    /// <summary>
    /// C[m, n] = A[m, k]·B + bias, or A·B + beta·C when bias is empty (beta 0: C is not read), with B a weight already
    /// packed (<see cref="PackedWeight"/>: Wᵀ or W), on the kernel it was packed for (AVX-512 or AVX2): the rows of C in
    /// chunks across workers when parallel, as RunSharedB without its packing region. The same tiles in the same order
    /// as Blocked, so the same bits as the unpacked call. <paramref name="residual"/> (not empty: laid out as C, row
    /// stride ldc) is added to each finished tile: C = residual + (A·B + bias), the bits of adding it after the call.
    /// Throws ArgumentException on inconsistent sizes.
    /// </summary>
    internal static void RunPrepacked(int m, ReadOnlySpan<float> a, int lda, PackedWeight b, ReadOnlySpan<float> bias, Span<float> c, int ldc, bool parallel,
        float beta = 0f, ReadOnlySpan<float> residual = default)
    {
        int n = b.N, k = b.K;
        if (m < 0 || lda < k || ldc < n || (m > 0 && ((long)(m - 1) * lda + k > a.Length || (long)(m - 1) * ldc + n > c.Length)) || (!bias.IsEmpty && bias.Length < n)
            || (!residual.IsEmpty && m > 0 && (long)(m - 1) * ldc + n > residual.Length))
            throw new ArgumentException($"prepacked GEMM: sizes m={m} n={n} k={k} lda={lda} ldc={ldc} do not fit the buffers");
        if (m == 0) return;
        int threads = parallel && (long)m * n * k >= ParallelMinMacs ? Parallelism.Threads : 1;
        bool wide = b.Kernel == GemmKernel.Avx512;
        int rows = threads > 1 ? ChunkRows(m, threads, wide ? MR512 : MR) : MC, chunks = (m + rows - 1) / rows;
        var (_, kcMax) = KBlocking(k, wide ? KC512 : KC);
        fixed (float* pa = a, pc = c, pbias = bias, pres = residual)
        {
            nint aa = (nint)pa, cc = (nint)pc, bb = bias.IsEmpty ? 0 : (nint)pbias, rr = residual.IsEmpty ? 0 : (nint)pres;
            void Chunk(int ch) => RowChunk(ch * rows, Math.Min(rows, m - ch * rows), rows, false, (float*)aa, lda, n, k,
                b.KBlocks, kcMax, b.Panels, b.BlockFloats, 1f, beta, (float*)cc, ldc, (float*)bb, b.Kernel, (float*)rr);
            if (threads > 1 && chunks > 1) Parallelism.For(0, chunks, Chunk);
            else for (int ch = 0; ch < chunks; ch++) Chunk(ch);
        }
    }

    // The caller's shared packed-B buffer (64-byte aligned, grows only). Workers read it while the caller
    // waits in the same region, so a thread-static buffer of the calling thread is safe.
    [ThreadStatic] private static float[]? _sharedB;

    private static float* SharedBuffer(long floats)
    {
        int need = (int)floats + GemmPacking.Slack + 16;
        if (_sharedB == null || _sharedB.Length < need)
            _sharedB = GC.AllocateUninitializedArray<float>(need, pinned: true);
        return (float*)(((nint)Unsafe.AsPointer(ref _sharedB[0]) + 63) & ~(nint)63);
    }

    /// <summary>
    /// False: the AVX-512 kernel reads A only from packed panels, as the others do (kept for same-process A/B
    /// benchmarks and tests; the numbers are the same bit for bit).
    /// </summary>
    internal static bool DirectA = true;

    // Packs op(A)[ic .., pc ..] (mc × kc) for the kernel, or as little of it as needed. With the AVX-512 kernel and
    // A not transposed, full 12-row panels are read in place (Kernel512Direct broadcasts from A's rows, as MLAS
    // does). That saves a copy of all of A per call (timed on DeiT-Tiny's shapes after flushing the caches, one
    // thread: 0.23 ms for a 1576×192 A, 0.48 ms for fc2's 1576×768, against ~2.2 and ~8.5 ms of product). Only a
    // partial last panel is packed, at ap. Returns A's storage address at (ic, pc) in that case, else null.
    // A transposed (a weight gradient gᵀ·x) is always packed. Read in place, a panel's 12 values at each k are 12
    // adjacent floats of one row of g, so every k step lands on a new cache line (two, for half the panels) and the
    // panel touches 192–384 lines of L1 beside the 384 of the B micro-panel. In place against packed, one thread by
    // thread CPU time, fastest of 30 (`bench gemm-ab`): an Ice Lake Xeon lost 10–23 % at every row stride of
    // vit_fmnist's weight gradients (128–384 floats) and 10–28 % on two threads; a Sapphire Rapids had gained 2–7 %
    // on one thread and was level on two in the model.
    private static float* PackA(bool transA, float* a, nint lda, int ic, int pc, int mc, int kc, float* ap, GemmKernel kernel)
    {
        if (kernel == GemmKernel.Avx512 && DirectA && !transA)
        {
            int full = mc / MR512 * MR512;
            if (full < mc) GemmPacking.PackA(false, a, lda, ic + full, pc, mc - full, kc, ap, MR512);
            return a + (nint)ic * lda + pc;
        }
        GemmPacking.PackA(transA, a, lda, ic, pc, mc, kc, ap, kernel == GemmKernel.Avx512 ? MR512 : MR);
        return null;
    }

    // C[0..mc, 0..nc] (row stride ldc) = alpha·Ap·Bp + beta·C for one A block (mc rows: packed at ap, or full
    // panels read in place at direct with only a partial last panel at ap, see PackA) and one packed B block (nc
    // columns), tile by tile: B micro-panels outer (each stays in L1), A panels inner. bias (null: none) fills each
    // tile just before the product lands on it with beta = 1 (the caller passes beta = 1). residual (null: none; laid
    // out as C) is added to each tile once it is finished (the caller passes it with the last K block only).
    private static void Tiles(int kc, int mc, int nc, float* ap, float* direct, nint lda, float* bp, float* c, nint ldc,
        float alpha, float beta, float* bias, float* tile, GemmKernel kernel, float* residual = null)
    {
        bool wide = kernel == GemmKernel.Avx512;
        int tr = wide ? MR512 : MR, tc = wide ? NR512 : NR;
        for (int jr = 0; jr < nc; jr += tc)
        {
            int nr = Math.Min(tc, nc - jr);
            float* bPanel = bp + (nint)(jr / tc) * kc * tc;
            for (int ir = 0; ir < mc; ir += tr)
            {
                int mr = Math.Min(tr, mc - ir);
                bool inPlace = direct != null && mr == tr;
                float* aPanel = direct != null ? ap : ap + (nint)(ir / tr) * kc * tr;
                float* cTile = c + ir * ldc + jr;
                // A full AVX-512 tile adds the bias in its store (StoreTile512, the same bits); others fill C first.
                bool biasInKernel = bias != null && wide && mr == tr && nr == tc;
                if (bias != null && !biasInKernel) FillRows(cTile, ldc, mr, nr, bias + jr);
                if (wide && mr < tr && nr == tc && PartialRowsKernel)
                {
                    // A last block of rows across a whole B panel: only its rows, straight into C (KernelRows512 stores
                    // as StoreTile512 does; see the method's comment for the bits).
                    if (direct != null) KernelRows512(mr, kc, direct + ir * lda, lda, 1, bPanel, NR512, cTile, ldc, alpha, beta);
                    else KernelRows512(mr, kc, aPanel, 1, MR512, bPanel, NR512, cTile, ldc, alpha, beta);
                }
                else
                {
                    bool full = mr == tr && nr == tc;
                    float* target = full ? cTile : tile;
                    nint ldt = full ? ldc : tc;
                    float at = full ? alpha : 1f, bt = full ? beta : 0f;
                    float* bs = biasInKernel ? bias + jr : null;
                    // A full AVX-512 tile adds the residual in its store too; other tiles get it below.
                    float* rs = residual != null && full && wide ? residual + ir * ldc + jr : null;
                    if (inPlace) Kernel512Direct(kc, direct + ir * lda, lda, bPanel, NR512, target, ldt, at, bt, bs, rs);
                    else if (biasInKernel || rs != null) Kernel512(kc, aPanel, bPanel, target, ldt, at, bt, bs, residual: rs);
                    else Kernel(kernel, kc, aPanel, bPanel, target, ldt, at, bt);
                    if (!full && wide) MergeEdge512(tile, mr, nr, cTile, ldc, alpha, beta);
                    else if (!full) MergeEdge(tile, tc, mr, nr, cTile, ldc, alpha, beta);
                    if (rs != null) continue;
                }
                // The finished tile is still in L1: the residual goes onto it now rather than in a pass over all of C.
                if (residual != null) AddRows(cTile, residual + ir * ldc + jr, ldc, mr, nr);
            }
        }
    }

    // c[r, 0..nr) += res[r, 0..nr) for r < mr (both with row stride ld): fl(c + res), an addition's bits.
    private static void AddRows(float* c, float* res, nint ld, int mr, int nr)
    {
        for (int r = 0; r < mr; r++, c += ld, res += ld)
        {
            int j = 0;
            if (Vector256.IsHardwareAccelerated)
                for (; j + 8 <= nr; j += 8) (Vector256.Load(c + j) + Vector256.Load(res + j)).Store(c + j);
            for (; j < nr; j++) c[j] += res[j];
        }
    }

    /// <summary>
    /// False: a last block of rows is a padded tile merged from scratch, as on the other kernels (same-process A/B
    /// benchmarks and tests; the same bits with alpha = 1).
    /// </summary>
    internal static bool PartialRowsKernel = true;

    // The single-threaded blocked nest described in the file header, for the kernel's tile and block sizes.
    // k ≥ 1, m, n ≥ 1. bias (null: none) is C's column bias: each tile is filled with it just before its
    // first K block, which then accumulates with beta = 1 (the tile is in L1 by then).
    private static void Blocked(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, nint lda, float* b, nint ldb, float beta, float* c, nint ldc, float* bias, GemmKernel kernel)
    {
        bool wide = kernel == GemmKernel.Avx512;
        int tr = wide ? MR512 : MR, tc = wide ? NR512 : NR;
        int ncLimit = wide ? NC512 : NC;
        var (kBlocks, kcMax) = KBlocking(k, wide ? KC512 : KC);
        int mcMax = Math.Min(MC, RoundUp(m, tr)), ncMax = Math.Min(ncLimit, RoundUp(n, tc));
        GemmPacking.Buffers(mcMax * kcMax, ncMax * kcMax, out float* ap, out float* bp);
        float* tile = stackalloc float[MR512 * NR512 + 16];
        tile = (float*)(((nint)tile + 63) & ~(nint)63);

        for (int jc = 0; jc < n; jc += ncLimit)
        {
            int nc = Math.Min(ncLimit, n - jc);
            for (int kb = 0; kb < kBlocks; kb++)
            {
                var (pc, kc) = KBlock(k, kb, kBlocks);
                bool fillBias = kb == 0 && bias != null;
                float betaK = kb == 0 && bias == null ? beta : 1f;
                GemmPacking.PackB(transB, b, ldb, pc, jc, kc, nc, bp, tc);
                for (int ic = 0; ic < m; ic += MC)
                {
                    int mc = Math.Min(MC, m - ic);
                    float* direct = PackA(transA, a, lda, ic, pc, mc, kc, ap, kernel);
                    Tiles(kc, mc, nc, ap, direct, lda, bp, c + ic * ldc + jc, ldc, alpha, betaK, fillBias ? bias + jc : null, tile, kernel);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Kernel(GemmKernel kernel, int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        if (kernel == GemmKernel.Avx512) Kernel512(kc, a, b, c, ldc, alpha, beta);
        else if (kernel == GemmKernel.Avx2) KernelFma(kc, a, b, c, ldc, alpha, beta);
        else KernelPortable(kc, a, b, c, ldc, alpha, beta);
    }

    // C[0..mr, 0..nr] = alpha·tile + beta·C (tile rows tileCols apart), where beta = 0 does not read C.
    private static void MergeEdge(float* tile, int tileCols, int mr, int nr, float* c, nint ldc, float alpha, float beta)
    {
        for (int r = 0; r < mr; r++)
        {
            float* t = tile + r * tileCols, cr = c + r * ldc;
            if (beta == 0f) for (int j = 0; j < nr; j++) cr[j] = alpha * t[j];
            else for (int j = 0; j < nr; j++) cr[j] = alpha * t[j] + beta * cr[j];
        }
    }

    // c[r, 0..nr] = bias[0..nr] for r < mr (nr ≤ 32: the widest tile).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FillRows(float* c, nint ldc, int mr, int nr, float* bias)
    {
        if ((nr == NR512 || nr == NR) && Vector256.IsHardwareAccelerated)
        {
            // A full tile row in 8-float stores: a span copy here cost a Memmove call per row (the AVX2 tile's:
            // 2.4 % of `bench profile`'s samples, vit_fmnist).
            for (int r = 0; r < mr; r++, c += ldc)
                for (int v = 0; v < nr; v += 8) Vector256.Load(bias + v).Store(c + v);
            return;
        }
        for (int r = 0; r < mr; r++, c += ldc)
            new ReadOnlySpan<float>(bias, nr).CopyTo(new Span<float>(c, nr));
    }

    // k = 0 or alpha = 0: C = beta·C, with beta = 0 clearing (and so dropping NaN).
    private static void ScaleC(int m, int n, float beta, Span<float> c, int ldc)
    {
        if (beta == 1f) return;
        for (int i = 0; i < m; i++)
        {
            var row = c.Slice(i * ldc, n);
            if (beta == 0f) row.Clear();
            else System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
        }
    }

    private static int RoundUp(int x, int unit) => (x + unit - 1) / unit * unit;

    // Same tile on Vector<float>: the 16 columns are covered W lanes at a time with six
    // accumulators each (the A panel is re-read per slice; it is 6·kc floats and sits in L1).
    private static void KernelPortable(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        int w = Vector<float>.Count;
        if (NR % w != 0)
        {
            KernelScalar(kc, a, b, c, ldc, alpha, beta);
            return;
        }
        for (int v = 0; v < NR; v += w)
        {
            Vector<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default;
            float* ap = a, bp = b + v;
            for (int p = 0; p < kc; p++, ap += MR, bp += NR)
            {
                var bv = Vector.Load(bp);
                s0 += new Vector<float>(ap[0]) * bv; s1 += new Vector<float>(ap[1]) * bv;
                s2 += new Vector<float>(ap[2]) * bv; s3 += new Vector<float>(ap[3]) * bv;
                s4 += new Vector<float>(ap[4]) * bv; s5 += new Vector<float>(ap[5]) * bv;
            }
            float* cv = c + v;
            StorePortable(cv, s0, alpha, beta); StorePortable(cv + ldc, s1, alpha, beta);
            StorePortable(cv + 2 * ldc, s2, alpha, beta); StorePortable(cv + 3 * ldc, s3, alpha, beta);
            StorePortable(cv + 4 * ldc, s4, alpha, beta); StorePortable(cv + 5 * ldc, s5, alpha, beta);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StorePortable(float* c, Vector<float> s, float alpha, float beta)
    {
        var r = s * alpha;
        if (beta != 0f) r += Vector.Load(c) * beta;
        Vector.Store(r, c);
    }

    // Last rung of the ladder, for a Vector<float> width that does not divide 16.
    private static void KernelScalar(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta)
    {
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < NR; j++)
            {
                float s = 0f;
                for (int p = 0; p < kc; p++) s += a[p * MR + r] * b[p * NR + j];
                float* cr = c + r * ldc + j;
                *cr = beta == 0f ? alpha * s : alpha * s + beta * *cr;
            }
    }
}
