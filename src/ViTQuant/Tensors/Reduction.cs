// Reductions. Sum over all elements here; axis reductions (sum/mean/var/min/max) live beside it.
using System.Numerics.Tensors;

namespace ViTQuant.Tensors;

public static partial class Ops
{
    /// <summary>Sum of all elements, as a one-element tensor of shape [].</summary>
    public static Tensor Sum(Tensor x)
    {
        double s = 0;
        var span = x.Span;
        // Pairwise-ish: TensorPrimitives.Sum over chunks, accumulated in double, for stable large sums.
        for (int i = 0; i < span.Length; i += 4096) s += TensorPrimitives.Sum(span.Slice(i, Math.Min(4096, span.Length - i)));
        var y = new Tensor(new[] { (float)s });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("sum", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            TensorPrimitives.Add(gx, g.Data[0], gx);
        });
    }
}
