// Binary arithmetic with broadcasting: add, sub, mul, div (forward and backward together).
//   d(a+b) = g, g          d(a−b) = g, −g
//   d(a·b) = g·b, g·a      d(a/b) = g/b, −g·a/b²
// Gradients of broadcast operands are summed back to their shapes (Broadcast.ReduceInto).
using System.Numerics.Tensors;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>Elementwise a + b with broadcasting (differentiable).</summary>
    public static Tensor Add(Tensor a, Tensor b)
    {
        var y = Binary(a, b, "add", TensorPrimitives.Add, static (x, z) => x + z);
        if (!Autograd.Needs(a, b)) return y;
        return Autograd.Record("add", y, new[] { a, b }, g =>
        {
            // Same shape (the residual adds): the gradient passes through, its buffer taken by a when a has no
            // gradient yet, else copied into a fresh gradient or added.
            if (a.RequiresGrad && Broadcast.SameShape(a.Shape, y.Shape)) a.TakeOrAccumulateGrad(g);
            else if (a.RequiresGrad) Broadcast.ReduceInto(g.Span, y.Shape, a.GradSpan(), a.Shape);
            if (b.RequiresGrad && Broadcast.SameShape(b.Shape, y.Shape)) b.AccumulateGrad(g);
            else if (b.RequiresGrad) Broadcast.ReduceInto(g.Span, y.Shape, b.GradSpan(), b.Shape);
        });
    }

    /// <summary>Elementwise a − b with broadcasting (differentiable).</summary>
    public static Tensor Sub(Tensor a, Tensor b)
    {
        var y = Binary(a, b, "sub", TensorPrimitives.Subtract, static (x, z) => x - z);
        if (!Autograd.Needs(a, b)) return y;
        return Autograd.Record("sub", y, new[] { a, b }, g =>
        {
            if (a.RequiresGrad) Broadcast.ReduceInto(g.Span, y.Shape, a.GradSpan(), a.Shape);
            if (b.RequiresGrad)
            {
                var neg = TensorArena.Rent(g.Size);
                TensorPrimitives.Negate(g.Span, neg);
                Broadcast.ReduceInto(neg, y.Shape, b.GradSpan(), b.Shape);
            }
        });
    }

    /// <summary>Elementwise a·b with broadcasting (differentiable).</summary>
    public static Tensor Mul(Tensor a, Tensor b)
    {
        var y = Binary(a, b, "mul", TensorPrimitives.Multiply, static (x, z) => x * z);
        if (!Autograd.Needs(a, b)) return y;
        return Autograd.Record("mul", y, new[] { a, b }, g =>
        {
            if (a.RequiresGrad) Broadcast.ReduceInto(Binary(g, b, "mul", TensorPrimitives.Multiply, static (x, z) => x * z).Span, y.Shape, a.GradSpan(), a.Shape);
            if (b.RequiresGrad) Broadcast.ReduceInto(Binary(g, a, "mul", TensorPrimitives.Multiply, static (x, z) => x * z).Span, y.Shape, b.GradSpan(), b.Shape);
        });
    }

    /// <summary>Elementwise a / b with broadcasting (differentiable).</summary>
    public static Tensor Div(Tensor a, Tensor b)
    {
        var y = Binary(a, b, "div", TensorPrimitives.Divide, static (x, z) => x / z);
        if (!Autograd.Needs(a, b)) return y;
        return Autograd.Record("div", y, new[] { a, b }, g =>
        {
            var gb = Binary(g, b, "div", TensorPrimitives.Divide, static (x, z) => x / z); // g / b
            if (a.RequiresGrad) Broadcast.ReduceInto(gb.Span, y.Shape, a.GradSpan(), a.Shape);
            if (b.RequiresGrad)
            {
                // −g·a/b² = −(g/b)·(a/b) = −(g/b)·y
                var t = TensorArena.Rent(y.Size);
                TensorPrimitives.Multiply(gb.Span, y.Span, t);
                TensorPrimitives.Negate(t, t);
                Broadcast.ReduceInto(t, y.Shape, b.GradSpan(), b.Shape);
            }
        });
    }

    /// <summary>a + s for a scalar s (differentiable in a).</summary>
    public static Tensor Add(Tensor a, float s) => Add(a, Tensor.Scalar(s));
    /// <summary>a·s for a scalar s (differentiable in a).</summary>
    public static Tensor Mul(Tensor a, float s) => Mul(a, Tensor.Scalar(s));

    /// <summary>Elementwise op over broadcast operands: same shapes take one vectorised call, others go run by run.</summary>
    private static Tensor Binary(Tensor a, Tensor b, string op, SpanOp vec, Func<float, float, float> scalar)
    {
        if (Broadcast.SameShape(a.Shape, b.Shape))
        {
            var y = Tensor.OutputUninitialized(a.Shape); // vec writes every element
            ElementwiseChunks(a.Size, a.Data, b.Data, y.Data, vec);
            return y;
        }
        var shape = Broadcast.Shape(a.Shape, b.Shape, op);
        var res = Tensor.Output(shape);
        var sa = Broadcast.Strides(a.Shape, shape);
        var sb = Broadcast.Strides(b.Shape, shape);
        float[] ad = a.Data, bd = b.Data, yd = res.Data;
        Broadcast.ForEachRun(shape, sa, sb, (o, ia, ib, len, stA, stB) =>
        {
            if (stA == 1 && stB == 1) vec(ad.AsSpan(ia, len), bd.AsSpan(ib, len), yd.AsSpan(o, len));
            else for (int i = 0; i < len; i++) yd[o + i] = scalar(ad[ia + i * stA], bd[ib + i * stB]);
        });
        return res;
    }

    internal delegate void SpanOp(ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> dst);

    // Elements per worker below which an elementwise pass stays on one thread.
    private const int ElementwiseGrain = 1 << 15;

    // dst[i] = vec(x[i], y[i]) for i < n, split across workers when n is large (a residual add of vit_fmnist at batch 64
    // is 410k elements; one thread took 2.5 ms of a training step's forward for the 13 of them). Elementwise: the
    // same bits for any split.
    internal static void ElementwiseChunks(int n, float[] x, float[] y, float[] dst, SpanOp vec)
    {
        if (n < 2 * ElementwiseGrain)
        {
            vec(x.AsSpan(0, n), y.AsSpan(0, n), dst.AsSpan(0, n));
            return;
        }
        Kernels.Parallelism.ForChunks(n, ElementwiseGrain, (s, e) => vec(x.AsSpan(s, e - s), y.AsSpan(s, e - s), dst.AsSpan(s, e - s)));
    }
}

public sealed partial class Tensor
{
    /// <summary><see cref="Ops.Add(Tensor, Tensor)"/>.</summary>
    public static Tensor operator +(Tensor a, Tensor b) => Ops.Add(a, b);
    /// <summary><see cref="Ops.Sub(Tensor, Tensor)"/>.</summary>
    public static Tensor operator -(Tensor a, Tensor b) => Ops.Sub(a, b);
    /// <summary><see cref="Ops.Mul(Tensor, Tensor)"/>.</summary>
    public static Tensor operator *(Tensor a, Tensor b) => Ops.Mul(a, b);
    /// <summary><see cref="Ops.Div(Tensor, Tensor)"/>.</summary>
    public static Tensor operator /(Tensor a, Tensor b) => Ops.Div(a, b);
    /// <summary><see cref="Ops.Add(Tensor, float)"/>.</summary>
    public static Tensor operator +(Tensor a, float s) => Ops.Add(a, s);
    /// <summary><see cref="Ops.Mul(Tensor, float)"/>.</summary>
    public static Tensor operator *(Tensor a, float s) => Ops.Mul(a, s);
    /// <summary><see cref="Ops.Mul(Tensor, float)"/>.</summary>
    public static Tensor operator *(float s, Tensor a) => Ops.Mul(a, s);
}
