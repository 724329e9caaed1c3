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

    public readonly struct NoGradScope : IDisposable
    {
        public void Dispose() => _noGradDepth--;
    }

    /// <summary>True when an op over these inputs must record a node.</summary>
    public static bool Needs(Tensor a) => IsEnabled && a.RequiresGrad;

    public static bool Needs(Tensor a, Tensor b) => IsEnabled && (a.RequiresGrad || b.RequiresGrad);

    public static bool Needs(Tensor a, Tensor b, Tensor c) => IsEnabled && (a.RequiresGrad || b.RequiresGrad || c.RequiresGrad);

    public static bool Needs(ReadOnlySpan<Tensor> inputs)
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
    public static Tensor Record(string opName, Tensor output, Tensor[] parents, Action<Tensor> backward)
    {
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
            if (g != null && node.BackwardFn != null) node.BackwardFn(g);
            // Free the graph as we go: intermediate gradients and closures are not needed any more.
            node.BackwardFn = null;
            node.Parents = Array.Empty<Tensor>();
            if (!t.RetainsGrad) t.Grad = null;
        }
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
