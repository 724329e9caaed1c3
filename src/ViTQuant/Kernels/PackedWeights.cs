// Weights packed once for many inference calls, as ONNX Runtime packs a session's constant weights at load.
//
// Why: every linear layer's GEMM packs its weight (op(B) = Wᵀ) into kernel panels on each call. Within one
// forward each weight is used once, and by then it is cold: GemmPacking.PackB timed on DeiT-Tiny's weights
// after flushing the caches took about 0.1 ms per qkv/fc1/fc2 weight at one thread, ≈ 5 ms of a 230 ms
// forward — what separated our GEMMs from ORT's prepacked ones (163 ms against 157 ms, same run, one thread).
//
// Safety: the cache lives only inside a Freeze() scope on the calling thread, which promises that no weight
// changes until the scope ends (an evaluation loop, a benchmark); it holds only weights a Linear module passes
// as its own parameter (never a per-call override such as a fake-quantized copy), is keyed by the weight array
// itself, and is dropped when the outermost scope ends. Outside a scope nothing is cached. A training step in
// chunks of images (VisionModel.ForwardBackward) packs each weight once for all its chunks, in a Freeze(keep)
// scope whose cache the model keeps: the next step packs the changed weights again into the same buffers (no
// new pinned arrays every step: DeiT-Tiny's weights are 22 MB). Its backward packs each weight a second way, as B = W
// for the input gradient dx = dy·W, once for all chunks too (per call, that packing was part of PackB's 5 % of a
// vit_fmnist training step's samples; kept, the step took 1 % less, `bench engine-ab --train`, one thread).
namespace ViTQuant.Kernels;

/// <summary>
/// A weight packed as the B operand of one GEMM kernel: every K block of its blocking, every panel of its tile width
/// (AVX-512: 32 columns, K blocks ≤ 192; AVX2: 16 columns, K blocks ≤ 256). Transposed (a layer's forward): W [n, k]
/// as B = Wᵀ; not transposed (the input gradient): W [k, n] as B = W.
/// </summary>
internal sealed unsafe class PackedWeight
{
    private readonly float[] _buffer;

    /// <summary>The kernel (Avx512 or Avx2) whose layout the panels have.</summary>
    public GemmKernel Kernel { get; }
    public int N { get; }
    public int K { get; }
    /// <summary>True: B = Wᵀ of W [n, k]; false: B = W of W [k, n].</summary>
    public bool Transposed { get; }
    public int KBlocks { get; }
    /// <summary>Floats per K block (all panels of one K block).</summary>
    public long BlockFloats { get; }
    /// <summary>64-byte aligned start of the panels (the buffer is pinned).</summary>
    public float* Panels { get; }

    /// <summary>Packs W for <paramref name="kernel"/> (Avx512 or Avx2; ArgumentException for another).</summary>
    public PackedWeight(ReadOnlySpan<float> w, int n, int k, GemmKernel kernel, bool transposed = true)
    {
        if (kernel == GemmKernel.Portable) throw new ArgumentException("weights are prepacked for the AVX-512 or AVX2 kernel only", nameof(kernel));
        Kernel = kernel;
        N = n;
        K = k;
        Transposed = transposed;
        bool wide = kernel == GemmKernel.Avx512;
        int nr = wide ? GemmPacking.NR512 : GemmPacking.NR;
        (KBlocks, int kcMax) = ManagedGemm.KBlocking(k, wide ? ManagedGemm.KC512 : ManagedGemm.KC);
        int np = (n + nr - 1) / nr * nr;
        BlockFloats = (long)np * kcMax;
        _buffer = GC.AllocateUninitializedArray<float>((int)(BlockFloats * KBlocks) + GemmPacking.Slack + 16, pinned: true);
        Panels = (float*)(((nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref _buffer[0]) + 63) & ~(nint)63);
        Pack(w);
    }

    /// <summary>The <see cref="PackedWeightCache"/> scope that packed it last (0 in a Freeze() scope's own cache).</summary>
    public int Scope { get; set; }

    /// <summary>Packs W (same n, k) into the panels, over what they held.</summary>
    public void Pack(ReadOnlySpan<float> w)
    {
        int nr = Kernel == GemmKernel.Avx512 ? GemmPacking.NR512 : GemmPacking.NR;
        fixed (float* pw = w)
            for (int kb = 0; kb < KBlocks; kb++)
            {
                var (pc, kc) = ManagedGemm.KBlock(K, kb, KBlocks);
                GemmPacking.PackB(Transposed, pw, Transposed ? K : N, pc, 0, kc, N, Panels + kb * BlockFloats, nr);
            }
    }
}

/// <summary>
/// Packed weights, by weight array: a Freeze() scope's own (dropped with it), or kept by their owner from one
/// Freeze(keep) scope to the next (a model's training steps in chunks: the weights change between steps, so each is
/// packed again once a scope, into the buffer it had, instead of into a new one).
/// </summary>
internal sealed class PackedWeightCache
{
    public Dictionary<float[], PackedWeight> Map { get; } = new(ReferenceEqualityComparer.Instance);

    /// <summary>The same weights packed as B = W (PackedWeight.Transposed false), for input gradients.</summary>
    public Dictionary<float[], PackedWeight> PlainMap { get; } = new(ReferenceEqualityComparer.Instance);

    /// <summary>The number of the Freeze(keep) scope that uses it now.</summary>
    public int Scope { get; set; }
}

/// <summary>The Freeze() scope and its cache of packed weights (file header).</summary>
internal static class WeightPacking
{
    [ThreadStatic] private static PackedWeightCache? _cache;
    [ThreadStatic] private static int _depth;

    /// <summary>
    /// Until the returned scope is disposed, Linear weights on this thread are packed once and reused: the
    /// caller promises not to change any weight meanwhile. Scopes nest; the cache is dropped with the outermost.
    /// </summary>
    public static IDisposable Freeze()
    {
        _depth++;
        return new Scope();
    }

    /// <summary>
    /// <see cref="Freeze()"/> with <paramref name="keep"/> as the cache when no scope is open: what it packed in an
    /// earlier scope is packed again (the weights may have changed since) into the same buffers.
    /// </summary>
    public static IDisposable Freeze(PackedWeightCache keep)
    {
        if (_depth == 0)
        {
            keep.Scope++;
            _cache = keep;
        }
        _depth++;
        return new Scope();
    }

    private sealed class Scope : IDisposable
    {
        private bool _disposed;

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            if (--_depth == 0) _cache = null;
        }
    }

    /// <summary>True inside a Freeze() scope on this thread.</summary>
    public static bool Active => _depth > 0;

    // Set on a worker that uses the calling thread's cache (Adopt): every access then takes the cache's lock.
    [ThreadStatic] private static bool _adopted;

    /// <summary>
    /// The calling thread's cache, for workers that run whole forwards of the frozen model each on their own part of
    /// a batch (VisionTransformer.Infer in chunks), or null outside a Freeze() scope.
    /// </summary>
    public static object? ShareWithWorkers() => _depth > 0 ? _cache ??= new PackedWeightCache() : null;

    /// <summary>
    /// On a worker inside a parallel body: until disposed, Get uses <paramref name="shared"/> (from ShareWithWorkers on
    /// the thread that froze the weights, which waits for its workers meanwhile) under its lock. Null: nothing changes.
    /// </summary>
    public static IDisposable? Adopt(object? shared)
    {
        if (shared == null) return null;
        var saved = (_cache, _depth, _adopted);
        (_cache, _depth, _adopted) = ((PackedWeightCache)shared, _depth + 1, true);
        return new Adoption(saved);
    }

    private sealed class Adoption((PackedWeightCache?, int, bool) saved) : IDisposable
    {
        public void Dispose() => (_cache, _depth, _adopted) = saved;
    }

    /// <summary>
    /// The packed form of weight <paramref name="key"/> (the first n·k floats of the array; transposed: W [n, k] as
    /// B = Wᵀ, else W [k, n] as B = W) when a Freeze() scope is open on this thread and the managed AVX-512 or AVX2 GEMM
    /// runs here (not OpenBLAS), else null.
    /// </summary>
    public static PackedWeight? Get(float[] key, int n, int k, bool transposed = true)
    {
        var kernel = ManagedGemm.Current;
        if (_depth == 0 || kernel == GemmKernel.Portable || Gemm.UsesOpenBlas || (Parallelism.InsideParallelBody && !_adopted) || n == 0 || k == 0)
            return null;
        var cache = _cache ??= new PackedWeightCache();
        if (!_adopted) return Lookup(cache, key, n, k, kernel, transposed);
        lock (cache) return Lookup(cache, key, n, k, kernel, transposed);
    }

    private static PackedWeight Lookup(PackedWeightCache cache, float[] key, int n, int k, GemmKernel kernel, bool transposed)
    {
        var map = transposed ? cache.Map : cache.PlainMap;
        if (map.TryGetValue(key, out var p) && p.N == n && p.K == k && p.Kernel == kernel)
        {
            if (p.Scope != cache.Scope) // kept from an earlier scope
            {
                p.Pack(key.AsSpan(0, n * k));
                p.Scope = cache.Scope;
            }
            return p;
        }
        return map[key] = new PackedWeight(key.AsSpan(0, n * k), n, k, kernel, transposed) { Scope = cache.Scope };
    }
}
