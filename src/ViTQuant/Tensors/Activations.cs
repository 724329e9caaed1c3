// Softmax, log-softmax, layer norm and exact GELU as differentiable ops over the Kernels/ row kernels.
//
// Softmax/LogSoftmax over the last axis hand the tensor to the kernels as [rows, cols] directly.
// Over another axis the tensor is viewed as [outer, n, inner]; the axis is moved last into a scratch
// buffer ([outer, inner, n]), the row kernel runs, and the result is moved back. The backward does the
// same with the saved output and the incoming gradient.
using System.Numerics.Tensors;
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

/// <summary>Differentiable tensor operations; each records its backward on the autograd tape when an input requires a gradient.</summary>
internal static partial class Ops
{
    /// <summary>
    /// softmax(x) along <paramref name="axis"/> (negative counts from the end), shifted by the maximum
    /// for stability. Output has x's shape. Throws ArgumentOutOfRangeException for a bad axis.
    /// </summary>
    public static Tensor Softmax(Tensor x, int axis = -1) => SoftmaxAlongAxis(x, axis, log: false);

    /// <summary>
    /// log(softmax(x)) along <paramref name="axis"/>, computed as x − max − log Σ exp(x − max) (no
    /// log of a rounded-to-zero probability). Throws ArgumentOutOfRangeException for a bad axis.
    /// </summary>
    public static Tensor LogSoftmax(Tensor x, int axis = -1) => SoftmaxAlongAxis(x, axis, log: true);

    private static Tensor SoftmaxAlongAxis(Tensor x, int axis, bool log)
    {
        int ax = Tensor.NormAxis(axis, x.Rank);
        var (outer, n, inner) = RowLayout.SplitAtAxis(x.Shape, ax);
        var y = Tensor.OutputUninitialized(x.Shape); // every row written below
        if (inner == 1)
        {
            if (log) SoftmaxKernel.LogSoftmaxRows(x.Span, y.Span, outer, n);
            else SoftmaxKernel.SoftmaxRows(x.Span, y.Span, outer, n);
        }
        else
        {
            var t = RowLayout.MoveAxisLast(x.Span, outer, n, inner);
            if (log) SoftmaxKernel.LogSoftmaxRows(t, t, outer * inner, n);
            else SoftmaxKernel.SoftmaxRows(t, t, outer * inner, n);
            RowLayout.MoveAxisBack(t, y.Span, outer, n, inner);
        }
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record(log ? "log_softmax" : "softmax", y, new[] { x }, g =>
        {
            if (inner == 1)
            {
                if (log) SoftmaxKernel.LogSoftmaxRowsBackward(y.Span, g.Span, x.GradSpan(), outer, n);
                else SoftmaxKernel.SoftmaxRowsBackward(y.Span, g.Span, x.GradSpan(), outer, n);
                return;
            }
            var yt = RowLayout.MoveAxisLast(y.Span, outer, n, inner);
            var gt = RowLayout.MoveAxisLast(g.Span, outer, n, inner);
            var dt = new float[yt.Length];
            if (log) SoftmaxKernel.LogSoftmaxRowsBackward(yt, gt, dt, outer * inner, n);
            else SoftmaxKernel.SoftmaxRowsBackward(yt, gt, dt, outer * inner, n);
            var dx = new float[dt.Length];
            RowLayout.MoveAxisBack(dt, dx, outer, n, inner);
            var gx = x.GradSpan();
            TensorPrimitives.Add(gx, dx, gx);
        });
    }

    /// <summary>
    /// Layer normalisation over the last axis with PyTorch semantics (biased variance):
    /// (x − mean)/√(var + eps)·gamma + beta. gamma and beta are optional, each of shape [C] where C is
    /// x's last dimension. Throws ArgumentException for a rank-0 x, a gamma/beta of the wrong shape, or eps &lt; 0.
    /// </summary>
    public static Tensor LayerNorm(Tensor x, Tensor? gamma, Tensor? beta, float eps)
    {
        if (x.Rank == 0) throw new ArgumentException("layer_norm: x must have at least one dimension");
        int c = x.Shape[^1];
        int rows = c == 0 ? 0 : x.Size / c;
        if (gamma != null && (gamma.Rank != 1 || gamma.Shape[0] != c))
            throw new ArgumentException($"layer_norm: gamma has shape {Tensor.ShapeString(gamma.Shape)}, expected [{c}] for x of shape {Tensor.ShapeString(x.Shape)}");
        if (beta != null && (beta.Rank != 1 || beta.Shape[0] != c))
            throw new ArgumentException($"layer_norm: beta has shape {Tensor.ShapeString(beta.Shape)}, expected [{c}] for x of shape {Tensor.ShapeString(x.Shape)}");

        var y = Tensor.OutputUninitialized(x.Shape); // the kernel writes every row
        var mean = new float[rows];
        var rstd = new float[rows];
        LayerNormKernel.LayerNormRows(x.Span, gamma != null ? gamma.Span : default, beta != null ? beta.Span : default,
            y.Span, mean, rstd, rows, c, eps);

        var parents = new List<Tensor> { x };
        if (gamma != null) parents.Add(gamma);
        if (beta != null) parents.Add(beta);
        if (!Autograd.Needs(parents.ToArray())) return y;
        return Autograd.Record("layer_norm", y, parents.ToArray(), g =>
        {
            LayerNormKernel.LayerNormRowsBackward(x.Span, gamma != null ? gamma.Span : default, mean, rstd, g.Span,
                x.RequiresGrad ? x.GradSpan() : default,
                gamma is { RequiresGrad: true } ? gamma.GradSpan() : default,
                beta is { RequiresGrad: true } ? beta.GradSpan() : default,
                rows, c);
        });
    }

    /// <summary>
    /// Exact GELU, x·Φ(x) = ½·x·(1 + erf(x/√2)) (PyTorch's default, approximate='none'), with a
    /// vectorised erf accurate to about 1e-7. Output has x's shape.
    /// </summary>
    public static Tensor Gelu(Tensor x)
    {
        var y = Tensor.OutputUninitialized(x.Shape); // the kernel writes every element
        GeluKernel.Gelu(x.Span, y.Span);
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("gelu", y, new[] { x }, g =>
        {
            var dx = x.GradSpanForOverwrite(out bool fresh);
            GeluKernel.GeluBackward(x.Span, g.Span, dx, accumulate: !fresh);
        });
    }
}

/// <summary>Views a tensor as [outer, n, inner] around one axis and moves that axis last and back.</summary>
internal static class RowLayout
{
    /// <summary>Sizes of the dimensions before, at, and after axis.</summary>
    public static (int outer, int n, int inner) SplitAtAxis(int[] shape, int axis)
    {
        int outer = 1, inner = 1;
        for (int i = 0; i < axis; i++) outer *= shape[i];
        for (int i = axis + 1; i < shape.Length; i++) inner *= shape[i];
        return (outer, shape[axis], inner);
    }

    /// <summary>[outer, n, inner] → a new [outer, inner, n] buffer.</summary>
    public static float[] MoveAxisLast(ReadOnlySpan<float> src, int outer, int n, int inner)
    {
        var dst = new float[outer * n * inner];
        for (int o = 0; o < outer; o++)
        {
            int bs = o * n * inner;
            for (int j = 0; j < n; j++)
                for (int i = 0; i < inner; i++) dst[bs + i * n + j] = src[bs + j * inner + i];
        }
        return dst;
    }

    /// <summary>[outer, inner, n] → [outer, n, inner] (the inverse of MoveAxisLast).</summary>
    public static void MoveAxisBack(ReadOnlySpan<float> src, Span<float> dst, int outer, int n, int inner)
    {
        for (int o = 0; o < outer; o++)
        {
            int bs = o * n * inner;
            for (int j = 0; j < n; j++)
                for (int i = 0; i < inner; i++) dst[bs + j * inner + i] = src[bs + i * n + j];
        }
    }
}
