// One chunk's own leaf gradients, for a batch whose chunks of images run their forward and backward on different
// workers at once (VisionModel.ForwardBackward).
//
// Why: a training step in chunks of a few images keeps each chunk's activations in its core's L2 and lets the workers
// meet once per step instead of at every op, as Infer's chunks do, but every chunk's backward adds into the same
// parameter gradients. While a chunk is active on a thread (Enter), Tensor's gradient accessors give each leaf the
// chunk's own holder instead (made on first use and kept, with its buffer, for the next step). Reduce then adds the
// chunks' gradients into the leaves, chunk by chunk in order. The sums have the same bits whichever worker ran which
// chunk, at any thread count; they are not the whole batch's bits (a weight gradient is summed over a chunk's rows in
// its GEMM, then over the chunks).
using System.Numerics.Tensors;
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

/// <summary>One chunk's own gradients of the leaves its backward reaches (file header).</summary>
internal sealed class ChunkGradients
{
    [ThreadStatic] private static ChunkGradients? _active;

    // Leaf → its holder in this chunk, in first-use order.
    private readonly Dictionary<Tensor, Tensor> _holders = new(ReferenceEqualityComparer.Instance);

    // The chunk's own input leaf: its gradient is the chunk's alone, so it keeps it.
    private Tensor? _exempt;

    /// <summary>True while a chunk is active on this thread.</summary>
    internal static bool IsActive => _active != null;

    /// <summary>The active chunk's holder of <paramref name="leaf"/>'s gradient, made on first use.</summary>
    internal static Tensor HolderOf(Tensor leaf)
    {
        var chunk = _active!;
        if (ReferenceEquals(leaf, chunk._exempt)) return leaf;
        if (!chunk._holders.TryGetValue(leaf, out var holder)) chunk._holders.Add(leaf, holder = new Tensor(leaf.Data, leaf.Shape));
        return holder;
    }

    /// <summary>The active chunk's holder of <paramref name="leaf"/>'s gradient if it has one, else the leaf (reading makes none).</summary>
    internal static Tensor Find(Tensor leaf) => _active!._holders.TryGetValue(leaf, out var holder) ? holder : leaf;

    /// <summary>Makes this chunk the active one on this thread until disposed; <paramref name="input"/> keeps its own gradient.</summary>
    internal Scope Enter(Tensor? input)
    {
        var saved = _active;
        _exempt = input;
        _active = this;
        return new Scope(saved, this);
    }

    /// <summary>Restores the thread's previous chunk (none, outside ForwardBackward).</summary>
    internal readonly struct Scope(ChunkGradients? saved, ChunkGradients chunk) : IDisposable
    {
        /// <summary>Ends the chunk's scope.</summary>
        public void Dispose()
        {
            _active = saved;
            chunk._exempt = null;
        }
    }

    /// <summary>
    /// Adds the chunks' gradients into their leaves in chunk order (a leaf without a gradient takes the first chunk's
    /// as it is) and empties the holders for the next step; their buffers stay. Each leaf is summed on one worker.
    /// </summary>
    internal static void Reduce(IReadOnlyList<ChunkGradients> chunks)
    {
        var leaves = new List<Tensor>();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var chunk in chunks)
            foreach (var (leaf, holder) in chunk._holders)
                if (holder.Grad != null && seen.Add(leaf)) leaves.Add(leaf);
        Parallelism.For(0, leaves.Count, i =>
        {
            var leaf = leaves[i];
            var sum = leaf.GradSpanForOverwrite(out bool fresh);
            foreach (var chunk in chunks)
            {
                if (!chunk._holders.TryGetValue(leaf, out var holder) || holder.Grad is not { } g) continue;
                if (fresh) g.Span.CopyTo(sum);
                else TensorPrimitives.Add(sum, g.Span, sum);
                fresh = false;
                holder.Grad = null;
            }
        });
    }
}
