// Parameter-holding layers used by the models. The math lives in Ops; these only own parameters.
using ViTQuant.Tensors;

namespace ViTQuant.Nn;

/// <summary>y = x·Wᵀ + b with W [out, in] (PyTorch layout).</summary>
public sealed class Linear : Module
{
    /// <summary>Weight W [out, in].</summary>
    public Tensor Weight { get; }
    /// <summary>Bias [out], or null without bias.</summary>
    public Tensor? Bias { get; }
    /// <summary>Input features (last axis of x).</summary>
    public int InFeatures { get; }
    /// <summary>Output features.</summary>
    public int OutFeatures { get; }

    /// <summary>Weights from a truncated normal (std 0.02, ±2σ) and zero bias, as timm initialises ViTs.</summary>
    public Linear(int inFeatures, int outFeatures, bool bias, Rng rng)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        Weight = RegisterParameter("weight", Init.TruncNormal(rng, 0.02f, outFeatures, inFeatures));
        if (bias) Bias = RegisterParameter("bias", Tensor.Zeros(outFeatures));
    }

    /// <summary>x [.., in] → [.., out]; <paramref name="weightOverride"/> (e.g. a fake-quantized W, same shape) replaces W for this call.</summary>
    public Tensor Forward(Tensor x, Tensor? weightOverride = null) =>
        weightOverride == null ? Ops.Linear(x, Weight, Bias, frozenWeight: true) : Ops.Linear(x, weightOverride, Bias);
}

/// <summary>Layer normalisation over the last axis with affine parameters.</summary>
public sealed class LayerNorm : Module
{
    /// <summary>Scale γ [dim], initialised to ones.</summary>
    public Tensor Weight { get; }
    /// <summary>Shift β [dim], initialised to zeros.</summary>
    public Tensor Bias { get; }
    /// <summary>Epsilon added to the variance.</summary>
    public float Eps { get; }

    /// <summary>A LayerNorm over a last axis of <paramref name="dim"/> features (γ = 1, β = 0).</summary>
    public LayerNorm(int dim, float eps)
    {
        Eps = eps;
        Weight = RegisterParameter("weight", Tensor.Ones(dim));
        Bias = RegisterParameter("bias", Tensor.Zeros(dim));
    }

    /// <summary>(x − mean)/√(var + eps)·γ + β over the last axis; same shape as x.</summary>
    public Tensor Forward(Tensor x) => Ops.LayerNorm(x, Weight, Bias, Eps);
}

/// <summary>Parameter initialisers.</summary>
internal static class Init
{
    /// <summary>Normal(0, std) truncated to [−2std, 2std] by redrawing (timm's trunc_normal_ with a = −2std, b = 2std).</summary>
    public static Tensor TruncNormal(Rng rng, float std, params int[] shape)
    {
        var t = new Tensor(shape);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++)
        {
            float v;
            do v = rng.NextNormal(); while (v < -2f || v > 2f);
            s[i] = v * std;
        }
        return t;
    }
}
