// Tensor: a float32, row-major, contiguous array with a shape, plus the autograd links.
//
// Storage is always contiguous from index 0 of Data. Reshape returns a view that shares Data;
// every other shape change (permute, transpose, slice) copies, so kernels never see strides.
// A tensor takes part in autograd when RequiresGrad is set (a leaf the user asked gradients for)
// or when it was produced by an op from such a tensor while gradients were enabled (GradFn != null).
using System.Runtime.CompilerServices;

namespace ViTQuant.Tensors;

/// <summary>A float32 tensor with reverse-mode automatic differentiation.</summary>
public sealed partial class Tensor
{
    /// <summary>Backing storage; elements [0, Size) are this tensor's values in row-major order.</summary>
    public float[] Data { get; }

    /// <summary>Dimensions, outermost first. Never mutated after construction.</summary>
    public int[] Shape { get; }

    /// <summary>Number of elements (product of Shape; 1 for a scalar of rank 0).</summary>
    public int Size { get; }

    /// <summary>
    /// Gradient of the last Backward() with respect to this tensor, same shape; null until written. A leaf's
    /// gradient buffer, once the engine allocated it, is reused by the next backward after the gradient is
    /// dropped (ZeroGrad, or Grad = null), as PyTorch's zero_grad(set_to_none=False) reuses p.grad: clone a
    /// gradient to keep it past the next backward. A tensor assigned to Grad by the caller is never reused.
    /// </summary>
    public Tensor? Grad
    {
        // A leaf read or written inside a chunk of VisionModel.ForwardBackward goes to the chunk's own copy (ChunkGradients).
        get => GradFn == null && ChunkGradients.IsActive ? ChunkGradients.Find(this)._grad : _grad;
        set => GradHolder._grad = value;
    }

    private Tensor? _grad;

    // Where this tensor's gradient lives: itself, or for a leaf inside a chunk of VisionModel.ForwardBackward the
    // chunk's own copy, so that workers running chunks at once never add into one buffer (ChunkGradients).
    private Tensor GradHolder => GradFn == null && ChunkGradients.IsActive ? ChunkGradients.HolderOf(this) : this;

    // The leaf gradient buffer the engine allocated for this tensor (see Grad). Why: a fresh buffer per step is
    // fresh memory, and first touching it costs page faults inside the backward's GEMMs (vit_fmnist training at
    // batch 64, 2 threads: the weight-gradient GEMMs took 45–48 ms per step with fresh buffers, 35–38 ms with
    // kept ones, on a loaded machine; the whole step 2 % faster on a quiet one).
    private Tensor? _ownGrad;

    /// <summary>The recorded op that produced this tensor, if it is part of an autograd graph.</summary>
    internal Node? GradFn { get; set; }

    private bool _requiresGrad;

    /// <summary>True when gradients flow to or through this tensor.</summary>
    public bool RequiresGrad
    {
        get => _requiresGrad;
        set
        {
            if (!value && GradFn != null) throw new InvalidOperationException("cannot clear RequiresGrad on a non-leaf tensor; use Detach()");
            _requiresGrad = value;
        }
    }

    /// <summary>True for tensors not produced by a recorded op (parameters, inputs, constants).</summary>
    public bool IsLeaf => GradFn == null;

    /// <summary>Keep this non-leaf tensor's gradient after Backward() (leaves always keep theirs).</summary>
    public bool RetainsGrad { get; set; }

    /// <summary>Optional name used in error messages and reports.</summary>
    public string? Name { get; set; }

    /// <summary>Wraps existing storage (not copied). Data must hold at least the shape's element count.</summary>
    public Tensor(float[] data, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        Shape = (int[])shape.Clone();
        Size = Numel(Shape);
        if (data.Length < Size) throw new ArgumentException($"data has {data.Length} elements, shape [{string.Join(", ", shape)}] needs {Size}");
        Data = data;
    }

    /// <summary>Allocates a zero-filled tensor (never recycled; see <see cref="Output"/>).</summary>
    public Tensor(params int[] shape) : this(new float[Numel(shape)], shape) { }

    /// <summary>
    /// A zero-filled op output: recycled when the calling thread is inside a <see cref="TensorArena"/>
    /// scope, an ordinary allocation otherwise. Ops use this for every result and temporary.
    /// </summary>
    public static Tensor Output(params int[] shape) => new(TensorArena.Rent(Numel(shape)), shape);

    /// <summary>
    /// An op output with undefined contents (recycled as <see cref="Output"/> is), for ops whose kernel
    /// writes every element: it skips the zero fill, a full memory pass per output.
    /// </summary>
    internal static Tensor OutputUninitialized(params int[] shape) => new(TensorArena.RentUninitialized(Numel(shape)), shape);

    /// <summary>The values as a span of length Size.</summary>
    public Span<float> Span => Data.AsSpan(0, Size);

    /// <summary>Number of dimensions.</summary>
    public int Rank => Shape.Length;

    /// <summary>Dimension i; negative i counts from the end.</summary>
    public int Dim(int i) => Shape[NormAxis(i, Shape.Length)];

    /// <summary>Element at a full index (one coordinate per dimension, row-major); no autograd.</summary>
    [System.Runtime.CompilerServices.IndexerName("At")]
    public float this[params int[] index]
    {
        get => Data[FlatIndex(index)];
        set => Data[FlatIndex(index)] = value;
    }

    /// <summary>The single value of a one-element tensor.</summary>
    public float Item() => Size == 1 ? Data[0] : throw new InvalidOperationException($"Item() needs one element, tensor has shape {ShapeString(Shape)}");

    /// <summary>A copy of the values (length Size).</summary>
    public float[] ToArray() => Span.ToArray();

    /// <summary>Shape and name, e.g. "Tensor[2, 3] blocks.0.attn.qkv.weight".</summary>
    public override string ToString() => $"Tensor{ShapeString(Shape)}{(Name != null ? " " + Name : "")}";

    // ---- construction ----

    /// <summary>A zero-filled tensor (never recycled).</summary>
    public static Tensor Zeros(params int[] shape) => new(shape);

    /// <summary>A tensor filled with <paramref name="value"/> (never recycled).</summary>
    public static Tensor Full(float value, params int[] shape)
    {
        var t = new Tensor(shape);
        t.Span.Fill(value);
        return t;
    }

    /// <summary>A tensor of ones (never recycled).</summary>
    public static Tensor Ones(params int[] shape) => Full(1f, shape);

    /// <summary>A one-element tensor [1] holding <paramref name="value"/>.</summary>
    public static Tensor Scalar(float value) => new(new[] { value });

    /// <summary>Copies the values into a new tensor of the given shape.</summary>
    public static Tensor FromArray(ReadOnlySpan<float> values, params int[] shape)
    {
        int n = Numel(shape);
        if (values.Length != n) throw new ArgumentException($"{values.Length} values do not fill shape {ShapeString(shape)} ({n} elements)");
        return new Tensor(values.ToArray(), shape);
    }

    /// <summary>Standard normal values times std, from the given generator.</summary>
    public static Tensor Randn(Rng rng, float std = 1f, params int[] shape)
    {
        var t = new Tensor(shape);
        rng.FillNormal(t.Span, 0f, std);
        return t;
    }

    /// <summary>Uniform values in [lo, hi) from the given generator.</summary>
    public static Tensor Uniform(Rng rng, float lo, float hi, params int[] shape)
    {
        var t = new Tensor(shape);
        rng.FillUniform(t.Span, lo, hi);
        return t;
    }

    /// <summary>A copy of the values with no autograd history.</summary>
    public Tensor Clone() => new(Span.ToArray(), Shape);

    /// <summary>A tensor sharing this one's storage but cut from the graph (no gradient flows through it).</summary>
    public Tensor Detach() => new(Data, Shape) { Name = Name };

    /// <summary>Marks this leaf as requiring gradients and returns it (fluent).</summary>
    public Tensor RequireGrad()
    {
        RequiresGrad = true;
        return this;
    }

    /// <summary>Drops the stored gradient.</summary>
    public void ZeroGrad() => Grad = null;

    /// <summary>The gradient buffer, zero-filled on first use. Backward closures accumulate into it.</summary>
    internal Span<float> GradSpan()
    {
        var h = GradHolder;
        if (h._grad == null)
        {
            h._grad = h.NewGrad(out bool reused, uninitialized: false);
            if (reused) h._grad.Span.Clear();
        }
        return h._grad.Span;
    }

    // A gradient buffer: a leaf's own earlier one (reused = true, old contents), a new leaf buffer (zeroed; leaf
    // gradients outlive any scope), or an intermediate's from the arena.
    private Tensor NewGrad(out bool reused, bool uninitialized)
    {
        reused = false;
        if (!IsLeaf) return uninitialized ? OutputUninitialized(Shape) : Output(Shape);
        if (_ownGrad != null)
        {
            reused = true;
            return _ownGrad;
        }
        return _ownGrad = new Tensor(Shape);
    }

    /// <summary>
    /// The gradient buffer for a backward that writes every element before it reads any: when there is no
    /// gradient yet (<paramref name="fresh"/>), an intermediate's comes uninitialised and the caller overwrites
    /// it (a GEMM with beta = 0, a copy) instead of accumulating onto a zero fill — one pass over the buffer
    /// less. The same values (0 + g = g).
    /// </summary>
    internal Span<float> GradSpanForOverwrite(out bool fresh) => GradForOverwrite(out fresh).Span;

    // GradSpanForOverwrite's gradient tensor (looked up once: a leaf inside a chunk finds its holder in a dictionary).
    private Tensor GradForOverwrite(out bool fresh)
    {
        var h = GradHolder;
        fresh = h._grad == null;
        return h._grad ??= h.NewGrad(out _, uninitialized: true);
    }

    /// <summary>grad += g (same size): a copy into a fresh gradient, an add onto an existing one (split across workers when large).</summary>
    internal void AccumulateGrad(Tensor g)
    {
        var grad = GradForOverwrite(out bool fresh).Data;
        Ops.ElementwiseChunks(Size, g.Data, grad, grad, fresh ? CopyFirst : System.Numerics.Tensors.TensorPrimitives.Add);
    }

    private static void CopyFirst(ReadOnlySpan<float> x, ReadOnlySpan<float> _, Span<float> dst) => x.CopyTo(dst);

    /// <summary>
    /// <see cref="AccumulateGrad"/>, or, when this intermediate has no gradient yet and g is the output gradient that
    /// Autograd.Backward hands to the node running now and would free right after it (Autograd.TakeConsumed), g's
    /// buffer itself as this gradient: no copy. A residual add passes its gradient on this way to one of its two
    /// parents (the copies were 0.9 % of a vit_fmnist training step's samples, `bench profile`).
    /// </summary>
    internal void TakeOrAccumulateGrad(Tensor g)
    {
        if (!IsLeaf && _grad == null && g.Size == Size && Autograd.TakeConsumed(g))
        {
            _grad = g;
            return;
        }
        AccumulateGrad(g);
    }

    /// <summary>
    /// Reverse-mode differentiation from this tensor. With no argument the tensor must hold one element
    /// and its gradient is 1; otherwise <paramref name="gradOutput"/> seeds it (same shape).
    /// Gradients accumulate into every reachable leaf with RequiresGrad; intermediate gradients are freed.
    /// </summary>
    public void Backward(Tensor? gradOutput = null) => Autograd.Backward(this, gradOutput);

    // ---- shape helpers ----

    /// <summary>Element count of a shape; throws ArgumentException for a negative dimension or more than 2^31 elements.</summary>
    public static int Numel(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape {ShapeString(shape)}");
            n *= d;
        }
        if (n > int.MaxValue) throw new ArgumentException($"shape {ShapeString(shape)} has more than 2^31 elements");
        return (int)n;
    }

    /// <summary>A shape as "[d0, d1, …]".</summary>
    public static string ShapeString(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    /// <summary>Axis normalised to [0, rank) (negative counts from the end); throws ArgumentOutOfRangeException outside.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NormAxis(int axis, int rank)
    {
        int a = axis < 0 ? axis + rank : axis;
        if ((uint)a >= (uint)rank) throw new ArgumentOutOfRangeException(nameof(axis), $"axis {axis} out of range for rank {rank}");
        return a;
    }

    /// <summary>Row-major strides of a contiguous tensor of this shape.</summary>
    public static int[] Strides(ReadOnlySpan<int> shape)
    {
        var s = new int[shape.Length];
        int acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
        return s;
    }

    private int FlatIndex(int[] index)
    {
        if (index.Length != Shape.Length) throw new ArgumentException($"index of rank {index.Length} for tensor of shape {ShapeString(Shape)}");
        int flat = 0;
        for (int i = 0; i < index.Length; i++)
        {
            if ((uint)index[i] >= (uint)Shape[i]) throw new IndexOutOfRangeException($"index {index[i]} out of range for dim {i} of shape {ShapeString(Shape)}");
            flat = flat * Shape[i] + index[i];
        }
        return flat;
    }
}
