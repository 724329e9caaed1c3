// Reverse-mode autograd on a tape of Nodes.
//
// Every op that sees an input requiring gradients (while gradients are enabled) calls Autograd.Record,
// which attaches a Node to its output: the parent tensors plus a closure that, given the gradient of
// the output, accumulates into the parents' gradient buffers (Tensor.GradSpan). Backward() orders the
// graph topologically (iteratively, so deep graphs cannot overflow the stack), seeds the root, runs
// the closures from the root down, and frees the graph and the intermediate gradients as it goes.
namespace ViTQuant.Tensors;

/// <summary>One recorded op: which tensors it read and how to push the output gradient into them.</summary>
internal sealed class Node
{
    public Tensor[] Parents;
    public Action<Tensor>? BackwardFn;
    public string OpName;

    public Node(string opName, Tensor[] parents, Action<Tensor> backward)
    {
        OpName = opName;
        Parents = parents;
        BackwardFn = backward;
    }
}

/// <summary>Global autograd switches and the backward pass.</summary>
public static class Autograd
{
    [ThreadStatic] private static int _noGradDepth;

    /// <summary>False inside a <see cref="NoGrad"/> scope on this thread.</summary>
    public static bool IsEnabled => _noGradDepth == 0;

    /// <summary>Disables graph recording on this thread until the returned scope is disposed.</summary>
    public static NoGradScope NoGrad()
    {
        _noGradDepth++;
        return new NoGradScope();
    }

    /// <summary>The scope <see cref="NoGrad"/> returns; disposing it re-enables recording (scopes nest).</summary>
    public readonly struct NoGradScope : IDisposable
    {
        /// <summary>Ends the no-grad scope.</summary>
        public void Dispose() => _noGradDepth--;
    }

    /// <summary>True when an op over these inputs must record a node.</summary>
    internal static bool Needs(Tensor a) => IsEnabled && a.RequiresGrad;

    /// <summary>True when an op over these inputs must record a node.</summary>
    internal static bool Needs(Tensor a, Tensor b) => IsEnabled && (a.RequiresGrad || b.RequiresGrad);

    /// <summary>True when an op over these inputs must record a node.</summary>
    internal static bool Needs(Tensor a, Tensor b, Tensor c) => IsEnabled && (a.RequiresGrad || b.RequiresGrad || c.RequiresGrad);

    /// <summary>True when an op over these inputs must record a node.</summary>
    internal static bool Needs(ReadOnlySpan<Tensor> inputs)
    {
        if (!IsEnabled) return false;
        foreach (var t in inputs) if (t.RequiresGrad) return true;
        return false;
    }

    /// <summary>
    /// Attaches a node to <paramref name="output"/>. The closure receives the output gradient and must
    /// accumulate (+=) into <c>parent.GradSpan()</c> for each parent whose RequiresGrad is true.
    /// Returns output for chaining.
    /// </summary>
    internal static Tensor Record(string opName, Tensor output, Tensor[] parents, Action<Tensor> backward)
    {
        OpProfiler.Forward(opName);
        output.GradFn = new Node(opName, parents, backward);
        output.RequiresGrad = true;
        return output;
    }

    internal static void Backward(Tensor root, Tensor? seed)
    {
        if (!root.RequiresGrad) throw new InvalidOperationException($"Backward() on {root} which does not require gradients");
        if (seed == null)
        {
            if (root.Size != 1) throw new InvalidOperationException($"Backward() without a gradient needs a one-element tensor, got shape {Tensor.ShapeString(root.Shape)}");
            seed = Tensor.Scalar(1f);
        }
        else if (seed.Size != root.Size)
            throw new ArgumentException($"gradient shape {Tensor.ShapeString(seed.Shape)} does not match tensor shape {Tensor.ShapeString(root.Shape)}");

        var order = TopologicalOrder(root);
        var rootGrad = root.GradSpan();
        for (int i = 0; i < rootGrad.Length; i++) rootGrad[i] += seed.Data[i];

        // Reverse topological order: every consumer of a tensor runs before the tensor's own node.
        for (int k = order.Count - 1; k >= 0; k--)
        {
            var t = order[k];
            var node = t.GradFn!;
            var g = t.Grad;
            bool taken = false;
            if (g != null && node.BackwardFn != null)
            {
                long t0 = OpProfiler.Enabled ? System.Diagnostics.Stopwatch.GetTimestamp() : 0;
                var saved = (_consumed, _taken);
                (_consumed, _taken) = (t.RetainsGrad ? null : g, false);
                try { node.BackwardFn(g); }
                finally
                {
                    taken = _taken;
                    (_consumed, _taken) = saved;
                }
                if (OpProfiler.Enabled) OpProfiler.Backward(node.OpName, t0);
            }
            // Free the graph as we go: intermediate gradients and closures are not needed any more
            // (every consumer of t ran before this node, and closures only accumulate into GradSpan
            // buffers, never keep g), so t's gradient buffer goes straight back to the arena.
            node.BackwardFn = null;
            node.Parents = Array.Empty<Tensor>();
            if (!t.RetainsGrad && t.Grad is { } done)
            {
                t.Grad = null;
                if (!taken) TensorArena.Release(done.Data); // a taken buffer is a parent's gradient now
            }
        }
    }

    // The output gradient of the node running on this thread, while its buffer is free to change owner (null when the
    // tensor keeps its gradient), and whether a parent took it.
    [ThreadStatic] private static Tensor? _consumed;
    [ThreadStatic] private static bool _taken;

    /// <summary>
    /// True, once, when <paramref name="g"/> is the output gradient Backward hands to the node running now and would free
    /// right after it: the caller makes g's buffer a parent's gradient, and Backward drops it without freeing it.
    /// </summary>
    internal static bool TakeConsumed(Tensor g)
    {
        if (_taken || !ReferenceEquals(_consumed, g)) return false;
        _taken = true;
        return true;
    }

    /// <summary>Non-leaf tensors reachable from root, each after all of its parents.</summary>
    private static List<Tensor> TopologicalOrder(Tensor root)
    {
        var order = new List<Tensor>();
        if (root.GradFn == null) return order;
        var visited = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<(Tensor t, int next)>();
        stack.Push((root, 0));
        visited.Add(root);
        while (stack.Count > 0)
        {
            var (t, next) = stack.Pop();
            var parents = t.GradFn!.Parents;
            if (next < parents.Length)
            {
                stack.Push((t, next + 1));
                var p = parents[next];
                if (p.GradFn != null && visited.Add(p)) stack.Push((p, 0));
            }
            else order.Add(t);
        }
        return order;
    }
}

/// <summary>
/// Time per op, for finding where a training step goes (VITQ_PROFILE=1 or Enabled = true). Backward
/// time is measured around each node's closure; forward time is the wall time since the previous
/// recorded op on this thread, which attributes a sequential forward pass to the ops that end it.
/// </summary>
internal static class OpProfiler
{
    /// <summary>Whether op times are collected (initially true when the VITQ_PROFILE environment variable is "1").</summary>
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("VITQ_PROFILE") == "1";
    private static readonly Dictionary<string, (double Fwd, double Bwd, long Calls)> Times = new();
    [ThreadStatic] private static long _last;

    internal static void Forward(string op)
    {
        if (!Enabled) return;
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        if (_last != 0) Add(op, (now - _last) / (double)System.Diagnostics.Stopwatch.Frequency, 0, 1);
        _last = now;
    }

    internal static void Backward(string op, long t0)
    {
        Add(op, 0, (System.Diagnostics.Stopwatch.GetTimestamp() - t0) / (double)System.Diagnostics.Stopwatch.Frequency, 0);
        _last = 0;
    }

    /// <summary>Starts a new forward measurement window (call before each forward pass).</summary>
    public static void Mark() => _last = System.Diagnostics.Stopwatch.GetTimestamp();

    private static void Add(string op, double f, double b, long calls)
    {
        lock (Times)
        {
            Times.TryGetValue(op, out var v);
            Times[op] = (v.Fwd + f, v.Bwd + b, v.Calls + calls);
        }
    }

    /// <summary>A table of seconds per op (forward, backward), largest total first; resets the counters.</summary>
    public static string Report()
    {
        lock (Times)
        {
            var sb = new System.Text.StringBuilder();
            sb.AppendLine($"{"op",-20} {"calls",8} {"fwd s",9} {"bwd s",9}");
            foreach (var (k, v) in Times.OrderByDescending(kv => kv.Value.Fwd + kv.Value.Bwd))
                sb.AppendLine($"{k,-20} {v.Calls,8} {v.Fwd,9:F3} {v.Bwd,9:F3}");
            Times.Clear();
            return sb.ToString();
        }
    }
}
