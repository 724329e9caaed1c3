// Gradient clipping by global L2 norm (torch.nn.utils.clip_grad_norm_ with norm_type = 2).
//
//   total = √(Σ over all gradients of g²)          accumulated in double
//   coef  = maxNorm / (total + 1e-6)               in float32 as torch; scale every gradient by coef when < 1
// Parameters whose Grad is null are skipped, as in torch; a parameter listed twice counts once. One deliberate difference: torch scales by
// a NaN coefficient when the norm is not finite (turning every gradient into NaN); here the gradients
// are left as they are and the non-finite norm is returned so the caller can skip the step.
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using System.Runtime.Intrinsics;
using ViTQuant.Tensors;

namespace ViTQuant.Nn;

/// <summary>Gradient clipping.</summary>
internal static class GradClip
{
    /// <summary>
    /// Scales the gradients of <paramref name="parameters"/> in place so that their joint L2 norm is at
    /// most <paramref name="maxNorm"/> (torch's clip_grad_norm_) and returns the norm before clipping
    /// (0 when no parameter has a gradient). Throws ArgumentOutOfRangeException for a negative or NaN maxNorm.
    /// </summary>
    public static double ClipGradNorm(IEnumerable<Tensor> parameters, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(maxNorm >= 0)) throw new ArgumentOutOfRangeException(nameof(maxNorm), $"max norm must be ≥ 0, got {maxNorm}");
        var grads = parameters.Select(p => p.Grad).OfType<Tensor>().Distinct<Tensor>(ReferenceEqualityComparer.Instance).ToList();
        double sumSq = 0;
        foreach (var g in grads) sumSq += SumOfSquares(g.Span);
        double total = Math.Sqrt(sumSq);
        if (!double.IsFinite(total)) return total;
        // torch forms the coefficient from its float32 norm in float32 arithmetic; doing the same
        // (from the correctly rounded norm) gives the very same coefficient and so identical gradients.
        float coef = maxNorm / ((float)total + 1e-6f);
        if (coef < 1f)
            foreach (var g in grads) TensorPrimitives.Multiply(g.Span, coef, g.Span);
        return total;
    }

    /// <summary>Σ x² accumulated in double, four double lanes at a time.</summary>
    internal static double SumOfSquares(ReadOnlySpan<float> x)
    {
        int i = 0;
        double s = 0;
        if (Vector256.IsHardwareAccelerated && x.Length >= 8)
        {
            // Two independent accumulators hide the add latency; squares of floats are exact in double.
            var acc0 = Vector256<double>.Zero;
            var acc1 = Vector256<double>.Zero;
            for (; i <= x.Length - 8; i += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Create(x.Slice(i)));
                acc0 += lo * lo;
                acc1 += hi * hi;
            }
            s = Vector256.Sum(acc0 + acc1);
        }
        for (; i < x.Length; i++) s += (double)x[i] * x[i];
        return s;
    }

    /// <summary>Scalar reference of <see cref="SumOfSquares"/>.</summary>
    internal static double SumOfSquaresReference(ReadOnlySpan<float> x)
    {
        double s = 0;
        foreach (float v in x) s += (double)v * v;
        return s;
    }
}
