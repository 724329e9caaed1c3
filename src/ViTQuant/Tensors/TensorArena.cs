// Buffer recycling for op outputs inside a scope.
//
// A training step allocates hundreds of megabytes of short-lived activations and gradients; as
// fresh .NET arrays that means large-object-heap churn, page faults and gen-2 collections every step.
// Inside `using (TensorArena.Scope())` the ops' outputs and intermediate gradients (Tensor.Output,
// non-leaf GradSpan) come from exact-size free lists and all go back to them when the scope ends.
// Steps repeat the same shapes, so after the first step nothing new is allocated.
//
// Rules: the scope belongs to the thread that opened it (work on other threads — the data loader's
// producer, parallel bodies — allocates normally); tensors created by ops inside a scope must not be
// used after it ends (copy out what you keep: ToArray(), Item()); leaves (parameters, inputs, their
// gradients) and everything created with `new Tensor(...)` are never recycled.
namespace ViTQuant.Tensors;

public sealed class TensorArena : IDisposable
{
    [ThreadStatic] private static TensorArena? _current;
    private static readonly Dictionary<int, Stack<float[]>> Free = new();
    private static long _pooledFloats;

    private readonly TensorArena? _parent;
    private readonly List<float[]> _rented = new();
    private bool _disposed;

    private TensorArena(TensorArena? parent) => _parent = parent;

    /// <summary>Opens a recycling scope on this thread (scopes nest; each returns its own buffers).</summary>
    public static TensorArena Scope() => _current = new TensorArena(_current);

    /// <summary>True when op outputs on this thread are being recycled.</summary>
    public static bool IsActive => _current != null;

    /// <summary>Floats currently held in free lists (for benchmark reports).</summary>
    public static long PooledFloats => Interlocked.Read(ref _pooledFloats);

    /// <summary>A zero-filled array of exactly n floats: recycled inside a scope, fresh otherwise.</summary>
    internal static float[] Rent(int n)
    {
        var scope = _current;
        if (scope == null || n < 1024) return new float[n]; // small buffers: the gen-0 allocator is cheaper
        float[]? a = null;
        lock (Free)
        {
            if (Free.TryGetValue(n, out var stack) && stack.Count > 0)
            {
                a = stack.Pop();
                _pooledFloats -= n;
            }
        }
        if (a != null) Array.Clear(a);
        else a = GC.AllocateArray<float>(n);
        scope._rented.Add(a);
        return a;
    }

    public void Dispose()
    {
        if (_disposed) return;
        if (_current != this) throw new InvalidOperationException("TensorArena scopes must be disposed in reverse order of creation, on the thread that opened them");
        _disposed = true;
        _current = _parent;
        lock (Free)
        {
            foreach (var a in _rented)
            {
                if (!Free.TryGetValue(a.Length, out var stack)) Free[a.Length] = stack = new Stack<float[]>();
                stack.Push(a);
                _pooledFloats += a.Length;
            }
        }
        _rented.Clear();
    }

    /// <summary>Drops every recycled buffer (memory goes back to the GC).</summary>
    public static void Trim()
    {
        lock (Free)
        {
            Free.Clear();
            _pooledFloats = 0;
        }
    }
}
