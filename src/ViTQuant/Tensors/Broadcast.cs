// NumPy-style broadcasting for binary elementwise ops.
//
// Shapes are aligned on their trailing dimensions; a dimension of 1 (or a missing one) stretches.
// The forward kernel walks the output in row-major order, keeping each operand's offset by strides
// in which broadcast dimensions have stride 0. Gradients of a broadcast operand are summed back over
// the stretched dimensions (ReduceTo).
namespace ViTQuant.Tensors;

internal static class Broadcast
{
    /// <summary>The broadcast shape of a and b; throws naming both shapes when they are incompatible.</summary>
    public static int[] Shape(int[] a, int[] b, string op)
    {
        int r = Math.Max(a.Length, b.Length);
        var s = new int[r];
        for (int i = 0; i < r; i++)
        {
            int da = i - (r - a.Length) >= 0 ? a[i - (r - a.Length)] : 1;
            int db = i - (r - b.Length) >= 0 ? b[i - (r - b.Length)] : 1;
            if (da != db && da != 1 && db != 1)
                throw new ArgumentException($"{op}: shapes {Tensor.ShapeString(a)} and {Tensor.ShapeString(b)} cannot be broadcast");
            s[i] = da == 1 ? db : da;
        }
        return s;
    }

    /// <summary>Strides of `shape` viewed inside `outShape`, with 0 for broadcast dimensions.</summary>
    public static int[] Strides(int[] shape, int[] outShape)
    {
        var st = Tensor.Strides(shape);
        var res = new int[outShape.Length];
        int off = outShape.Length - shape.Length;
        for (int i = 0; i < shape.Length; i++) res[i + off] = shape[i] == 1 ? 0 : st[i];
        return res;
    }

    public static bool SameShape(int[] a, int[] b) => a.AsSpan().SequenceEqual(b);

    /// <summary>
    /// Calls visit(outIndex, aIndex, bIndex) for every output element, in row-major order, where
    /// aIndex/bIndex are offsets into the (possibly broadcast) operands.
    /// The innermost dimension is handed over as a run: visit(o, ia, ib, len, sa, sb).
    /// </summary>
    public delegate void RunVisitor(int outOffset, int aOffset, int bOffset, int length, int aStride, int bStride);

    public static void ForEachRun(int[] outShape, int[] aStrides, int[] bStrides, RunVisitor visit)
    {
        int r = outShape.Length;
        int total = Tensor.Numel(outShape);
        if (total == 0) return;
        if (r == 0) { visit(0, 0, 0, 1, 0, 0); return; }
        int inner = outShape[r - 1];
        int sa = aStrides[r - 1], sb = bStrides[r - 1];
        var idx = new int[r];
        int ia = 0, ib = 0;
        for (int o = 0; o < total; o += inner)
        {
            visit(o, ia, ib, inner, sa, sb);
            // advance the outer index (odometer over dims 0..r-2)
            for (int d = r - 2; d >= 0; d--)
            {
                idx[d]++;
                ia += aStrides[d]; ib += bStrides[d];
                if (idx[d] < outShape[d]) break;
                ia -= aStrides[d] * outShape[d]; ib -= bStrides[d] * outShape[d];
                idx[d] = 0;
            }
        }
    }

    /// <summary>Accumulates grad (of shape outShape) into dst (of shape `shape`), summing broadcast dims.</summary>
    public static void ReduceInto(ReadOnlySpan<float> grad, int[] outShape, Span<float> dst, int[] shape)
    {
        if (SameShape(shape, outShape))
        {
            System.Numerics.Tensors.TensorPrimitives.Add(dst, grad, dst);
            return;
        }
        var st = Strides(shape, outShape);
        var zero = new int[outShape.Length];
        var g = TensorArena.Rent(grad.Length);
        grad.CopyTo(g);
        var d = TensorArena.Rent(dst.Length);
        ForEachRun(outShape, st, zero, (o, ia, _, len, sa, _) =>
        {
            if (sa == 0) { float s = 0; for (int i = 0; i < len; i++) s += g[o + i]; d[ia] += s; }
            else for (int i = 0; i < len; i++) d[ia + i * sa] += g[o + i];
        });
        System.Numerics.Tensors.TensorPrimitives.Add(dst, d, dst);
    }
}
