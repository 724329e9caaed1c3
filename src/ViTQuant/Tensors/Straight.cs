// Straight-through rounding for quantisers: the forward rounds, the backward pretends it did not.
//
// round/floor have zero derivative almost everywhere, which would stop all learning through a
// quantiser. The straight-through estimator (Bengio et al. 2013) uses d(round x)/dx := 1, so the
// gradient passes unchanged; LSQ-style step-size gradients are built from these by the quantisers.
using System.Numerics.Tensors;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>
    /// Rounds to the nearest integer, ties to even (as torch.round: 0.5 → 0, 1.5 → 2, −2.5 → −2); the
    /// gradient passes straight through (dx = dy). Output has x's shape.
    /// </summary>
    public static Tensor RoundSte(Tensor x)
    {
        var y = Tensor.Output(x.Shape);
        // TensorPrimitives.Round uses MidpointRounding.ToEven, the IEEE default that torch.round uses.
        TensorPrimitives.Round(x.Span, y.Span);
        return StraightThrough("round_ste", x, y);
    }

    /// <summary>Rounds down to an integer (as torch.floor); the gradient passes straight through (dx = dy).</summary>
    public static Tensor FloorSte(Tensor x)
    {
        var y = Tensor.Output(x.Shape);
        TensorPrimitives.Floor(x.Span, y.Span);
        return StraightThrough("floor_ste", x, y);
    }

    private static Tensor StraightThrough(string name, Tensor x, Tensor y)
    {
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record(name, y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            TensorPrimitives.Add(gx, g.Span, gx);
        });
    }
}
