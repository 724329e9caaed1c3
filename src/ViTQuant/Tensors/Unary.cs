// Elementwise unary ops, plus the elementwise binary Maximum/Minimum (forward and backward together).
//   y = −x         dx = −g
//   y = eˣ         dx = g·y
//   y = ln x       dx = g / x
//   y = √x         dx = g / (2y)
//   y = x²         dx = 2x·g
//   y = xᵖ         dx = p·xᵖ⁻¹·g            (p = 0: no gradient, as PyTorch)
//   y = |x|        dx = sign(x)·g            (0 at x = 0, the subgradient PyTorch uses)
//   y = clamp      dx = g where min ≤ x ≤ max, else 0 (PyTorch's rule: the bounds themselves pass)
//   y = relu x     dx = g where x > 0
//   y = σ(x)       dx = g·y·(1 − y)
//   y = tanh x     dx = g·(1 − y²)
//   y = s·x        dx = s·g;      y = x + s   dx = g
//   y = max(a, b)  g goes to a where a ≥ b (ties go to a), to b elsewhere; min likewise with a ≤ b.
// Forward and backward run over blocks of at most Block elements, split across Parallelism workers for
// large tensors, so backward temporaries live on the stack instead of allocating a tensor-sized buffer.
// Elementwise results do not depend on the split, so the thread count never changes a value.
using System.Numerics.Tensors;
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>Elements per stack-allocated scratch block in backward passes.</summary>
    private const int Block = 2048;

    /// <summary>Smallest number of elements worth handing to another worker.</summary>
    private const int ParallelGrain = 1 << 15;

    private delegate void SpanMap(ReadOnlySpan<float> x, Span<float> y);

    /// <summary>Accumulates dL/dx into gx from g = dL/dy, the input x and the output y; tmp is scratch of the same length.</summary>
    private delegate void GradAccum(ReadOnlySpan<float> g, ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> gx, Span<float> tmp);

    /// <summary>−x elementwise.</summary>
    public static Tensor Neg(Tensor x) => Unary(x, "neg", TensorPrimitives.Negate,
        static (g, _, _, gx, _) => TensorPrimitives.Subtract(gx, g, gx));

    /// <summary>eˣ elementwise.</summary>
    public static Tensor Exp(Tensor x) => Unary(x, "exp", TensorPrimitives.Exp,
        static (g, _, y, gx, _) => TensorPrimitives.MultiplyAdd(g, y, gx, gx));

    /// <summary>Natural logarithm elementwise (−∞ at 0, NaN below 0; the gradient g/x is infinite at 0).</summary>
    public static Tensor Log(Tensor x) => Unary(x, "log", TensorPrimitives.Log,
        static (g, x, _, gx, tmp) =>
        {
            TensorPrimitives.Divide(g, x, tmp);
            TensorPrimitives.Add(gx, tmp, gx);
        });

    /// <summary>Square root elementwise (NaN below 0; the gradient g/(2√x) is infinite at 0).</summary>
    public static Tensor Sqrt(Tensor x) => Unary(x, "sqrt", static (x, y) => TensorPrimitives.Sqrt(x, y),
        static (g, _, y, gx, tmp) =>
        {
            TensorPrimitives.Divide(g, y, tmp);
            TensorPrimitives.MultiplyAdd(tmp, 0.5f, gx, gx);
        });

    /// <summary>x² elementwise.</summary>
    public static Tensor Square(Tensor x) => Unary(x, "square", static (x, y) => TensorPrimitives.Multiply(x, x, y),
        static (g, x, _, gx, tmp) =>
        {
            TensorPrimitives.Multiply(g, x, tmp);
            TensorPrimitives.MultiplyAdd(tmp, 2f, gx, gx);
        });

    /// <summary>
    /// xᵖ elementwise with MathF.Pow semantics (negative x gives NaN unless p is an integer).
    /// The gradient p·xᵖ⁻¹ is infinite at x = 0 when p &lt; 1; p = 0 passes no gradient.
    /// </summary>
    public static Tensor Pow(Tensor x, float p)
    {
        if (p == 2f) return Unary(x, "pow", static (x, y) => TensorPrimitives.Multiply(x, x, y),
            static (g, x, _, gx, tmp) =>
            {
                TensorPrimitives.Multiply(g, x, tmp);
                TensorPrimitives.MultiplyAdd(tmp, 2f, gx, gx);
            });
        return Unary(x, "pow", (x, y) => TensorPrimitives.Pow(x, p, y), (g, x, _, gx, tmp) =>
        {
            if (p == 0f) return;
            TensorPrimitives.Pow(x, p - 1f, tmp);
            TensorPrimitives.Multiply(tmp, g, tmp);
            TensorPrimitives.MultiplyAdd(tmp, p, gx, gx);
        });
    }

    /// <summary>|x| elementwise; the gradient at exactly 0 is 0.</summary>
    public static Tensor Abs(Tensor x) => Unary(x, "abs", TensorPrimitives.Abs,
        static (g, x, _, gx, _) =>
        {
            for (int i = 0; i < gx.Length; i++)
                gx[i] += x[i] > 0 ? g[i] : x[i] < 0 ? -g[i] : 0f;
        });

    /// <summary>
    /// min(max(x, min), max) elementwise. The gradient passes where min ≤ x ≤ max (bounds included).
    /// Throws ArgumentException when min &gt; max or either bound is NaN.
    /// </summary>
    public static Tensor Clamp(Tensor x, float min, float max)
    {
        if (!(min <= max)) throw new ArgumentException($"clamp: min {min} must not exceed max {max} (input {Tensor.ShapeString(x.Shape)})");
        return Unary(x, "clamp", (x, y) => TensorPrimitives.Clamp(x, min, max, y), (g, x, _, gx, _) =>
        {
            for (int i = 0; i < gx.Length; i++)
                if (x[i] >= min && x[i] <= max) gx[i] += g[i];
        });
    }

    /// <summary>max(x, 0) elementwise; the gradient at exactly 0 is 0.</summary>
    public static Tensor Relu(Tensor x) => Unary(x, "relu", static (x, y) => TensorPrimitives.Max(x, 0f, y),
        static (g, x, _, gx, _) =>
        {
            for (int i = 0; i < gx.Length; i++)
                if (x[i] > 0) gx[i] += g[i];
        });

    /// <summary>The logistic function 1 / (1 + e⁻ˣ) elementwise.</summary>
    public static Tensor Sigmoid(Tensor x) => Unary(x, "sigmoid", TensorPrimitives.Sigmoid,
        static (g, _, y, gx, tmp) =>
        {
            TensorPrimitives.Multiply(y, y, tmp);
            TensorPrimitives.Subtract(y, tmp, tmp); // y − y² = y(1 − y)
            TensorPrimitives.MultiplyAdd(g, tmp, gx, gx);
        });

    /// <summary>Hyperbolic tangent elementwise.</summary>
    public static Tensor Tanh(Tensor x) => Unary(x, "tanh", TensorPrimitives.Tanh,
        static (g, _, y, gx, tmp) =>
        {
            TensorPrimitives.Multiply(y, y, tmp);
            TensorPrimitives.Subtract(1f, tmp, tmp);
            TensorPrimitives.MultiplyAdd(g, tmp, gx, gx);
        });

    /// <summary>x·s elementwise (cheaper than Mul with a scalar tensor: no broadcasting, no scalar gradient).</summary>
    public static Tensor Scale(Tensor x, float s) => Unary(x, "scale", (x, y) => TensorPrimitives.Multiply(x, s, y),
        (g, _, _, gx, _) => TensorPrimitives.MultiplyAdd(g, s, gx, gx));

    /// <summary>x + s elementwise.</summary>
    public static Tensor AddScalar(Tensor x, float s) => Unary(x, "add_scalar", (x, y) => TensorPrimitives.Add(x, s, y),
        static (g, _, _, gx, _) => TensorPrimitives.Add(gx, g, gx));

    /// <summary>
    /// Elementwise maximum of a and b with broadcasting (NaN propagates). The gradient goes to a where
    /// a ≥ b (ties go to a) and to b elsewhere. Throws ArgumentException when the shapes do not broadcast.
    /// </summary>
    public static Tensor Maximum(Tensor a, Tensor b) => Extremum(a, b, "maximum", takeMax: true);

    /// <summary>
    /// Elementwise minimum of a and b with broadcasting (NaN propagates). The gradient goes to a where
    /// a ≤ b (ties go to a) and to b elsewhere. Throws ArgumentException when the shapes do not broadcast.
    /// </summary>
    public static Tensor Minimum(Tensor a, Tensor b) => Extremum(a, b, "minimum", takeMax: false);

    /// <summary>Runs fwd over x block by block (in parallel for large x) and records bwd when a gradient is needed.</summary>
    private static Tensor Unary(Tensor x, string op, SpanMap fwd, GradAccum bwd)
    {
        var y = Tensor.OutputUninitialized(x.Shape); // fwd writes every block
        float[] xd = x.Data, yd = y.Data;
        Parallelism.ForChunks(x.Size, ParallelGrain, (s, e) => fwd(xd.AsSpan(s, e - s), yd.AsSpan(s, e - s)));
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record(op, y, new[] { x }, g =>
        {
            x.GradSpan(); // allocate before the workers touch it
            float[] gd = g.Data, gxd = x.Grad!.Data;
            Parallelism.ForChunks(x.Size, ParallelGrain, (s, e) =>
            {
                Span<float> tmp = stackalloc float[Block];
                for (int i = s; i < e; i += Block)
                {
                    int n = Math.Min(Block, e - i);
                    bwd(gd.AsSpan(i, n), xd.AsSpan(i, n), yd.AsSpan(i, n), gxd.AsSpan(i, n), tmp[..n]);
                }
            });
        });
    }

    private static Tensor Extremum(Tensor a, Tensor b, string op, bool takeMax)
    {
        bool same = Broadcast.SameShape(a.Shape, b.Shape);
        var shape = same ? a.Shape : Broadcast.Shape(a.Shape, b.Shape, op);
        var y = Tensor.Output(shape);
        float[] ad = a.Data, bd = b.Data, yd = y.Data;
        var sa = Broadcast.Strides(a.Shape, shape);
        var sb = Broadcast.Strides(b.Shape, shape);
        if (same)
        {
            if (takeMax) TensorPrimitives.Max(a.Span, b.Span, y.Span);
            else TensorPrimitives.Min(a.Span, b.Span, y.Span);
        }
        else
        {
            Broadcast.ForEachRun(shape, sa, sb, (o, ia, ib, len, stA, stB) =>
            {
                for (int i = 0; i < len; i++)
                {
                    float va = ad[ia + i * stA], vb = bd[ib + i * stB];
                    yd[o + i] = takeMax ? MathF.Max(va, vb) : MathF.Min(va, vb);
                }
            });
        }
        if (!Autograd.Needs(a, b)) return y;

        // Which operand each output element came from, decided once in the forward pass.
        var pickA = new bool[y.Size];
        Broadcast.ForEachRun(shape, sa, sb, (o, ia, ib, len, stA, stB) =>
        {
            for (int i = 0; i < len; i++)
            {
                float va = ad[ia + i * stA], vb = bd[ib + i * stB];
                pickA[o + i] = (takeMax ? va >= vb : va <= vb) || float.IsNaN(va);
            }
        });
        return Autograd.Record(op, y, new[] { a, b }, g =>
        {
            var ga = new float[g.Size];
            var gb = new float[g.Size];
            var gd = g.Data;
            for (int i = 0; i < ga.Length; i++)
            {
                if (pickA[i]) ga[i] = gd[i];
                else gb[i] = gd[i];
            }
            if (a.RequiresGrad) Broadcast.ReduceInto(ga, shape, a.GradSpan(), a.Shape);
            if (b.RequiresGrad) Broadcast.ReduceInto(gb, shape, b.GradSpan(), b.Shape);
        });
    }
}
