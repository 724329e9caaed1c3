// Instance conveniences: each forwards to the Ops function of the same name, so x.Reshape(2, -1).Sum(0)
// reads left to right. Semantics, gradients and exceptions are those of the Ops functions.
namespace ViTQuant.Tensors;

public sealed partial class Tensor
{
    /// <summary>−x; see <see cref="Ops.Neg"/>.</summary>
    public static Tensor operator -(Tensor x) => Ops.Neg(x);

    /// <summary>A view with a new shape (one −1 allowed); see <see cref="Ops.Reshape"/>.</summary>
    public Tensor Reshape(params int[] shape) => Ops.Reshape(this, shape);

    /// <summary>Copy with axes reordered; see <see cref="Ops.Permute"/>.</summary>
    public Tensor Permute(params int[] perm) => Ops.Permute(this, perm);

    /// <summary>Copy with two axes swapped; see <see cref="Ops.Transpose"/>.</summary>
    public Tensor Transpose(int d0, int d1) => Ops.Transpose(this, d0, d1);

    /// <summary>Index of the first maximum along the axis, for every position of the other axes (row-major over the
    /// shape with the axis removed), e.g. the predicted class of each row of logits [B, classes] with axis 1. No
    /// gradient; see <see cref="Ops.ArgMax"/>.</summary>
    public int[] ArgMax(int axis) => Ops.ArgMax(this, axis);

    /// <summary>Sum of all elements, shape []; see <see cref="Ops.Sum(Tensor)"/>.</summary>
    public Tensor Sum() => Ops.Sum(this);

    /// <summary>Sum over one axis; see <see cref="Ops.Sum(Tensor, int, bool)"/>.</summary>
    public Tensor Sum(int axis, bool keepDim = false) => Ops.Sum(this, axis, keepDim);

    /// <summary>Mean of all elements, shape []; see <see cref="Ops.Mean(Tensor)"/>.</summary>
    public Tensor Mean() => Ops.Mean(this);

    /// <summary>Mean over one axis; see <see cref="Ops.Mean(Tensor, int, bool)"/>.</summary>
    public Tensor Mean(int axis, bool keepDim = false) => Ops.Mean(this, axis, keepDim);

    /// <summary>eˣ elementwise; see <see cref="Ops.Exp"/>.</summary>
    public Tensor Exp() => Ops.Exp(this);

    /// <summary>ln x elementwise; see <see cref="Ops.Log"/>.</summary>
    public Tensor Log() => Ops.Log(this);

    /// <summary>√x elementwise; see <see cref="Ops.Sqrt"/>.</summary>
    public Tensor Sqrt() => Ops.Sqrt(this);

    /// <summary>|x| elementwise; see <see cref="Ops.Abs"/>.</summary>
    public Tensor Abs() => Ops.Abs(this);

    /// <summary>−x elementwise; see <see cref="Ops.Neg"/>.</summary>
    public Tensor Neg() => Ops.Neg(this);

    /// <summary>xᵖ elementwise; see <see cref="Ops.Pow"/>.</summary>
    public Tensor Pow(float p) => Ops.Pow(this, p);

    /// <summary>Clamp into [lo, hi]; see <see cref="Ops.Clamp"/>.</summary>
    public Tensor Clamp(float lo, float hi) => Ops.Clamp(this, lo, hi);

    /// <summary>Copy of a range along an axis; see <see cref="Ops.Narrow"/>.</summary>
    public Tensor Narrow(int axis, int start, int length) => Ops.Narrow(this, axis, start, length);

    /// <summary>A view with a new unit axis; see <see cref="Ops.Unsqueeze"/>.</summary>
    public Tensor Unsqueeze(int axis) => Ops.Unsqueeze(this, axis);

    /// <summary>A view without a unit axis; see <see cref="Ops.Squeeze"/>.</summary>
    public Tensor Squeeze(int axis) => Ops.Squeeze(this, axis);

    /// <summary>A view merging a range of axes; see <see cref="Ops.Flatten"/>.</summary>
    public Tensor Flatten(int startAxis, int endAxis) => Ops.Flatten(this, startAxis, endAxis);
}
