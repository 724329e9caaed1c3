// Buffer recycling for op outputs inside a scope.
//
// A training step allocates hundreds of megabytes of short-lived activations and gradients; as
// fresh .NET arrays that means large-object-heap churn, page faults and gen-2 collections every step.
// Inside `using (TensorArena.Scope())` the ops' outputs and intermediate gradients (Tensor.Output,
// non-leaf GradSpan) come from exact-size free lists and all go back to them when the scope ends.
// Steps repeat the same shapes, so after the first step nothing new is allocated.
//
// A scope keeps every buffer it rented until it ends (a backward pass may need any of them), except
// intermediate gradients, which Autograd.Backward releases as soon as their node has run. Inference
// therefore nests one scope per stage (VisionTransformer.Infer) so that only one stage's temporaries
// are alive at a time.
//
// Bounded: the free lists belong to the thread whose scopes filled them, and a free list that neither
// of the last two outermost scopes on that thread asked for (sixteen for those that end inside a parallel body:
// chunks of images on a worker) is dropped when an outermost scope ends
// (its buffers go back to the GC). Repeating steps keep their buffers; shapes of a finished phase
// (another batch size, the last partial batch, an evaluation between training epochs) do not pile up.
//
// Rules: the scope belongs to the thread that opened it (work on other threads — the data loader's
// producer, parallel bodies — allocates normally); tensors created by ops inside a scope must not be
// used after it ends (copy out what you keep: ToArray(), Item()); leaves (parameters, inputs, their
// gradients) and everything created with `new Tensor(...)` are never recycled.
namespace ViTQuant.Tensors;

/// <summary>A per-thread scope that recycles op output buffers: tensors made by ops inside it return to a pool when it ends. Open one with Scope(); dispose in reverse order of creation.</summary>
public sealed class TensorArena : IDisposable
{
    /// <summary>Outermost scopes a free list may go unused before it is dropped.</summary>
    internal const int KeepGenerations = 2;

    /// <summary>
    /// The same for outermost scopes that end inside a parallel body: a chunk of images on a worker
    /// (VisionModel.Infer, ForwardBackward). Chunk sizes may differ by one image, and a worker takes whichever chunk
    /// comes next, so one size can skip a few of its scopes: swin_fmnist's training step at batch 64 (chunks of 6 and
    /// 7 images) allocated 63.7 MB a step afresh with 2, 10.2 MB with 16. A worker's lists hold only chunk-sized
    /// buffers.
    /// </summary>
    internal const int KeepGenerationsInParallelBody = 16;

    [ThreadStatic] private static TensorArena? _current;
    [ThreadStatic] private static Dictionary<int, FreeList>? _free;
    [ThreadStatic] private static long _pooledFloats;
    [ThreadStatic] private static int _generation; // outermost scopes ended on this thread

    private readonly TensorArena? _parent;
    private readonly List<float[]> _rented = new();
    private bool _disposed;

    private TensorArena(TensorArena? parent) => _parent = parent;

    /// <summary>Opens a recycling scope on this thread (scopes nest; each returns its own buffers).</summary>
    public static TensorArena Scope() => _current = new TensorArena(_current);

    /// <summary>True when op outputs on this thread are being recycled.</summary>
    internal static bool IsActive => _current != null;

    /// <summary>Floats currently held in this thread's free lists (for benchmark and memory reports).</summary>
    internal static long PooledFloats => _pooledFloats;

    /// <summary>A zero-filled array of exactly n floats: recycled inside a scope, fresh otherwise.</summary>
    internal static float[] Rent(int n) => Rent(n, clear: true);

    /// <summary>
    /// An array of exactly n floats whose contents are undefined (a recycled buffer keeps its old values),
    /// for op outputs the kernel overwrites completely: it saves a memset pass over every such output.
    /// </summary>
    internal static float[] RentUninitialized(int n) => Rent(n, clear: false);

    private static float[] Rent(int n, bool clear)
    {
        var scope = _current;
        if (scope == null || n < 1024) return new float[n]; // small buffers: the gen-0 allocator is cheaper
        var free = _free ??= new Dictionary<int, FreeList>();
        if (!free.TryGetValue(n, out var list)) free[n] = list = new FreeList();
        list.LastUsed = _generation;
        float[] a;
        if (list.Items.Count > 0)
        {
            a = list.Items.Pop();
            _pooledFloats -= n;
            if (clear) Array.Clear(a);
        }
        else a = clear ? GC.AllocateArray<float>(n) : GC.AllocateUninitializedArray<float>(n);
        scope._rented.Add(a);
        return a;
    }

    /// <summary>Ends the scope: its buffers go back to the pool. Throws InvalidOperationException when not the innermost scope of this thread.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        if (_current != this) throw new InvalidOperationException("TensorArena scopes must be disposed in reverse order of creation, on the thread that opened them");
        _disposed = true;
        _current = _parent;
        foreach (var a in _rented) Return(a);
        _rented.Clear();
        if (_parent == null) EndGeneration();
    }

    /// <summary>
    /// Hands back, before its scope ends, a buffer that nothing references any more (Autograd.Backward:
    /// an intermediate gradient once its node has run). A no-op for arrays no open scope on this thread
    /// rented (fresh allocations, small buffers).
    /// </summary>
    internal static void Release(float[] a)
    {
        if (a.Length < 1024) return;
        for (var s = _current; s != null; s = s._parent)
        {
            int i = s._rented.LastIndexOf(a); // reference equality; recent rentals are found first
            if (i < 0) continue;
            s._rented.RemoveAt(i);
            Return(a);
            return;
        }
    }

    private static void Return(float[] a)
    {
        var free = _free ??= new Dictionary<int, FreeList>();
        if (!free.TryGetValue(a.Length, out var list)) free[a.Length] = list = new FreeList { LastUsed = _generation }; // after a Trim
        list.Items.Push(a);
        _pooledFloats += a.Length;
    }

    /// <summary>After an outermost scope: drops the free lists the last KeepGenerations (in a parallel body KeepGenerationsInParallelBody) outermost scopes did not use.</summary>
    private static void EndGeneration()
    {
        int gen = ++_generation;
        var free = _free;
        if (free == null) return;
        int keep = Kernels.Parallelism.InsideParallelBody ? KeepGenerationsInParallelBody : KeepGenerations;
        List<int>? stale = null;
        foreach (var (n, list) in free)
            if (gen - list.LastUsed > keep) (stale ??= new List<int>()).Add(n);
        if (stale == null) return;
        foreach (int n in stale)
        {
            _pooledFloats -= (long)n * free[n].Items.Count;
            free.Remove(n);
        }
    }

    /// <summary>Drops every recycled buffer of this thread (memory goes back to the GC).</summary>
    internal static void Trim()
    {
        _free?.Clear();
        _pooledFloats = 0;
    }

    private sealed class FreeList
    {
        public readonly Stack<float[]> Items = new();
        public int LastUsed; // generation of the last outermost scope that asked for this size
    }
}
