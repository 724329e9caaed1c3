// Adam (L2 weight decay) and AdamW (decoupled weight decay): torch.optim.Adam / AdamW (1.13,
// single-tensor path, foreach=False, capturable=False).
//
// With t the parameter's step count after increment, per element in float32:
//   AdamW only:  p ← p·(1 − lr·wd)                 (factor formed in double, rounded once)
//   Adam only:   g ← g + wd·p                      (only when wd ≠ 0)
//   m ← m·β₁ + (1 − β₁)·g
//   v ← v·β₂ + ((1 − β₂)·g)·g
//   amsgrad:     v̂ ← max(v̂, v), use v̂ for v below
//   denom ← √v / √(1 − β₂ᵗ) + ε
//   p ← p + ((−lr / (1 − β₁ᵗ))·m) / denom
// The bias corrections 1 − βᵗ, their square root and the step size are computed in double (torch
// does them in Python floats) and rounded to float once; every other constant is rounded as torch's
// scalar arguments are. Where torch calls add-with-alpha (g + wd·p, the m update) the CPU kernel is
// a fused multiply-add (vec::fmadd), so ours is too; addcmul/addcdiv are unfused in torch and here.
// The vector kernel repeats the reference's operations in the same order, so the two agree bit for bit.
using System.Runtime.Intrinsics;
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Nn;

/// <summary>Adam with L2 weight decay added to the gradient (torch.optim.Adam); base of <see cref="AdamW"/>.</summary>
internal class Adam : Optimizer
{
    private static readonly string[] Names = { "step", "exp_avg", "exp_avg_sq" };
    private static readonly string[] AmsNames = { "step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq" };
    private readonly bool _decoupled;

    /// <summary>Decay rate of the first moment.</summary>
    public double Beta1 { get; }

    /// <summary>Decay rate of the second moment.</summary>
    public double Beta2 { get; }

    /// <summary>Added to the bias-corrected root second moment.</summary>
    public double Eps { get; }

    /// <summary>True to normalise by the running maximum of the second moment (AMSGrad).</summary>
    public bool Amsgrad { get; }

    /// <summary>Adam over one group. See the groups overload for what is thrown.</summary>
    public Adam(IEnumerable<Tensor> parameters, float lr = 1e-3f, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, float weightDecay = 0, bool amsgrad = false)
        : this(new[] { new ParamGroup(parameters) }, lr, beta1, beta2, eps, weightDecay, amsgrad) { }

    /// <summary>
    /// Adam over parameter groups; lr and weightDecay are the defaults for groups that leave them unset.
    /// Throws ArgumentOutOfRangeException for a negative or non-finite lr, eps or weight decay, or a
    /// beta outside [0, 1); ArgumentException for an empty, repeated or non-leaf parameter.
    /// </summary>
    public Adam(IEnumerable<ParamGroup> groups, float lr = 1e-3f, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, float weightDecay = 0, bool amsgrad = false)
        : this(groups, lr, beta1, beta2, eps, weightDecay, amsgrad, decoupled: false) { }

    private protected Adam(IEnumerable<ParamGroup> groups, float lr, double beta1, double beta2, double eps, float weightDecay, bool amsgrad, bool decoupled)
        : base(groups, lr, weightDecay)
    {
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), $"beta1 must be in [0, 1), got {beta1}");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), $"beta2 must be in [0, 1), got {beta2}");
        ParamGroup.CheckNonNegative(eps, "eps");
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        Amsgrad = amsgrad;
        _decoupled = decoupled;
    }

    /// <inheritdoc/>
    protected override IReadOnlyList<string> StateNames => Amsgrad ? AmsNames : Names;

    /// <inheritdoc/>
    public override void Step()
    {
        foreach (var (group, p, index) in ParamsWithGrad())
        {
            var st = StateOf(index);
            if (st is null)
            {
                st = CreateState(index);
                st["step"] = Tensor.Scalar(0f);
                st["exp_avg"] = new Tensor(p.Shape);
                st["exp_avg_sq"] = new Tensor(p.Shape);
                if (Amsgrad) st["max_exp_avg_sq"] = new Tensor(p.Shape);
            }
            var stepT = st["step"];
            stepT.Data[0] += 1f;                           // torch keeps the count as a float tensor too
            double t = stepT.Data[0], lr = group.Lr, wd = group.WeightDecay;
            double bc1 = 1 - Math.Pow(Beta1, t), bc2 = 1 - Math.Pow(Beta2, t);
            var c = new AdamKernels.Coefs(
                Beta1: (float)Beta1, OneMinusBeta1: (float)(1 - Beta1),
                Beta2: (float)Beta2, OneMinusBeta2: (float)(1 - Beta2),
                L2: _decoupled ? 0f : (float)wd,
                Decoupled: _decoupled, DecayFactor: (float)(1 - lr * wd),
                Bc2Sqrt: (float)Math.Sqrt(bc2), Eps: (float)Eps, NegStepSize: (float)-(lr / bc1),
                Amsgrad: Amsgrad);
            float[] pd = p.Data, gd = p.Grad!.Data, m = st["exp_avg"].Data, v = st["exp_avg_sq"].Data;
            float[] vmax = Amsgrad ? st["max_exp_avg_sq"].Data : Array.Empty<float>();
            Parallelism.ForChunks(p.Size, AdamKernels.MinChunk, (s, e) =>
                AdamKernels.Update(pd.AsSpan(s, e - s), gd.AsSpan(s, e - s), m.AsSpan(s, e - s), v.AsSpan(s, e - s),
                                   c.Amsgrad ? vmax.AsSpan(s, e - s) : default, c));
        }
    }
}

/// <summary>Adam with decoupled weight decay p ← p·(1 − lr·wd) before the Adam step (torch.optim.AdamW).</summary>
internal sealed class AdamW : Adam
{
    /// <summary>AdamW over one group (torch's defaults, weight decay 0.01). See the groups overload for what is thrown.</summary>
    public AdamW(IEnumerable<Tensor> parameters, float lr = 1e-3f, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, float weightDecay = 1e-2f, bool amsgrad = false)
        : this(new[] { new ParamGroup(parameters) }, lr, beta1, beta2, eps, weightDecay, amsgrad) { }

    /// <summary>AdamW over parameter groups. Throws as <see cref="Adam"/>'s constructor does.</summary>
    public AdamW(IEnumerable<ParamGroup> groups, float lr = 1e-3f, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, float weightDecay = 1e-2f, bool amsgrad = false)
        : base(groups, lr, beta1, beta2, eps, weightDecay, amsgrad, decoupled: true) { }
}

/// <summary>The Adam/AdamW update on spans: a Vector256 kernel and its scalar reference twin.</summary>
internal static class AdamKernels
{
    /// <summary>Elements per parallel chunk: below this the update stays on one thread.</summary>
    public const int MinChunk = 1 << 14;

    /// <summary>Per-step float coefficients, each rounded from double where torch rounds it (see file header).</summary>
    public readonly record struct Coefs(float Beta1, float OneMinusBeta1, float Beta2, float OneMinusBeta2, float L2,
                                        bool Decoupled, float DecayFactor, float Bc2Sqrt, float Eps, float NegStepSize, bool Amsgrad);

    /// <summary>Updates p, m (first moment), v (second moment) and, with AMSGrad, vmax in place from gradient g.</summary>
    public static void Update(Span<float> p, ReadOnlySpan<float> g, Span<float> m, Span<float> v, Span<float> vmax, Coefs c)
    {
        int n = p.Length, i = 0;
        bool l2 = c.L2 != 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var b1 = Vector256.Create(c.Beta1); var omb1 = Vector256.Create(c.OneMinusBeta1);
            var b2 = Vector256.Create(c.Beta2); var omb2 = Vector256.Create(c.OneMinusBeta2);
            var wd = Vector256.Create(c.L2); var decay = Vector256.Create(c.DecayFactor);
            var bc2 = Vector256.Create(c.Bc2Sqrt); var eps = Vector256.Create(c.Eps);
            var negStep = Vector256.Create(c.NegStepSize);
            for (; i <= n - 8; i += 8)
            {
                var pv = Vector256.Create((ReadOnlySpan<float>)p.Slice(i));
                var gv = Vector256.Create(g.Slice(i));
                if (c.Decoupled) pv *= decay;
                if (l2) gv = Vector256.FusedMultiplyAdd(wd, pv, gv);
                var mv = Vector256.FusedMultiplyAdd(omb1, gv, Vector256.Create((ReadOnlySpan<float>)m.Slice(i)) * b1);
                var vv = Vector256.Create((ReadOnlySpan<float>)v.Slice(i)) * b2 + omb2 * gv * gv;
                mv.CopyTo(m.Slice(i));
                vv.CopyTo(v.Slice(i));
                if (c.Amsgrad)
                {
                    vv = Vector256.Max(Vector256.Create((ReadOnlySpan<float>)vmax.Slice(i)), vv);
                    vv.CopyTo(vmax.Slice(i));
                }
                var denom = Vector256.Sqrt(vv) / bc2 + eps;
                (pv + negStep * mv / denom).CopyTo(p.Slice(i));
            }
        }
        UpdateReference(p.Slice(i), g.Slice(i), m.Slice(i), v.Slice(i), c.Amsgrad ? vmax.Slice(i) : default, c);
    }

    /// <summary>Scalar reference of <see cref="Update"/>, written as torch's _single_tensor_adam(w) reads.</summary>
    public static void UpdateReference(Span<float> p, ReadOnlySpan<float> g, Span<float> m, Span<float> v, Span<float> vmax, Coefs c)
    {
        for (int i = 0; i < p.Length; i++)
        {
            float pi = p[i], gi = g[i];
            if (c.Decoupled) pi = pi * c.DecayFactor;
            if (c.L2 != 0) gi = MathF.FusedMultiplyAdd(c.L2, pi, gi);                  // g + wd·p
            float mi = MathF.FusedMultiplyAdd(c.OneMinusBeta1, gi, m[i] * c.Beta1);     // m·β₁ + (1−β₁)·g
            float vi = v[i] * c.Beta2 + c.OneMinusBeta2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            if (c.Amsgrad)
            {
                vi = MathF.Max(vmax[i], vi);
                vmax[i] = vi;
            }
            float denom = MathF.Sqrt(vi) / c.Bc2Sqrt + c.Eps;
            p[i] = pi + c.NegStepSize * mi / denom;
        }
    }
}
