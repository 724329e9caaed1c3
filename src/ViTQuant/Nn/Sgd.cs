// SGD with momentum, dampening, Nesterov and L2 weight decay: torch.optim.SGD (1.13, foreach=False).
//
// Per element, in float32, with every coefficient rounded to float as torch's kernels round them:
//   d ← g + wd·p                         (only when wd ≠ 0)
//   first update:  buf ← d
//   later updates: buf ← buf·μ + (1 − τ)·d        (μ momentum, τ dampening; only when μ ≠ 0)
//   d ← d + μ·buf  (Nesterov)   or   d ← buf
//   p ← p + (−lr)·d
// Every "x + α·y" is one fused multiply-add, because torch's CPU add-with-alpha kernel is
// vec::fmadd (AVX2 build); that makes our results bit-identical to torch's in almost every element.
// The vector kernel performs the same operations in the same order as the scalar reference, so the
// two agree bit for bit.
using System.Runtime.Intrinsics;
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Nn;

/// <summary>Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay.</summary>
internal sealed class Sgd : Optimizer
{
    private static readonly string[] MomentumState = { "momentum_buffer" };

    /// <summary>Momentum factor μ (0 disables the momentum buffer).</summary>
    public double Momentum { get; }

    /// <summary>Dampening τ applied to the gradient when it enters the momentum buffer.</summary>
    public double Dampening { get; }

    /// <summary>True for Nesterov momentum.</summary>
    public bool Nesterov { get; }

    /// <summary>SGD over one group. See the groups overload for what is thrown.</summary>
    public Sgd(IEnumerable<Tensor> parameters, float lr, double momentum = 0, double dampening = 0, float weightDecay = 0, bool nesterov = false)
        : this(new[] { new ParamGroup(parameters) }, lr, momentum, dampening, weightDecay, nesterov) { }

    /// <summary>
    /// SGD over parameter groups; lr and weightDecay are the defaults for groups that leave them unset.
    /// Throws ArgumentOutOfRangeException for a negative or non-finite lr, momentum, dampening or weight
    /// decay, and ArgumentException when Nesterov is asked without momentum or with dampening (as torch).
    /// </summary>
    public Sgd(IEnumerable<ParamGroup> groups, float lr, double momentum = 0, double dampening = 0, float weightDecay = 0, bool nesterov = false)
        : base(groups, lr, weightDecay)
    {
        ParamGroup.CheckNonNegative(momentum, "momentum");
        ParamGroup.CheckNonNegative(dampening, "dampening");
        if (nesterov && (momentum <= 0 || dampening != 0)) throw new ArgumentException("Nesterov momentum requires momentum > 0 and zero dampening");
        Momentum = momentum;
        Dampening = dampening;
        Nesterov = nesterov;
    }

    /// <inheritdoc/>
    protected override IReadOnlyList<string> StateNames => Momentum != 0 ? MomentumState : Array.Empty<string>();

    /// <inheritdoc/>
    public override void Step()
    {
        foreach (var (group, p, index) in ParamsWithGrad())
        {
            var c = new SgdKernels.Coefs((float)-(double)group.Lr, group.WeightDecay, (float)Momentum, (float)(1 - Dampening), Nesterov);
            float[] buf = Array.Empty<float>();
            bool first = false;
            if (Momentum != 0)
            {
                var st = StateOf(index);
                if (st is null)
                {
                    st = CreateState(index);
                    st["momentum_buffer"] = new Tensor(p.Shape);
                    first = true;
                }
                buf = st["momentum_buffer"].Data;
            }
            float[] pd = p.Data, gd = p.Grad!.Data;
            bool hasBuf = Momentum != 0;
            Parallelism.ForChunks(p.Size, SgdKernels.MinChunk, (s, e) =>
                SgdKernels.Update(pd.AsSpan(s, e - s), gd.AsSpan(s, e - s), hasBuf ? buf.AsSpan(s, e - s) : default, first, c));
        }
    }
}

/// <summary>The SGD update on spans: a Vector256 kernel and its scalar reference twin.</summary>
internal static class SgdKernels
{
    /// <summary>Elements per parallel chunk: below this the update stays on one thread.</summary>
    public const int MinChunk = 1 << 15;

    /// <summary>Float coefficients as torch rounds them: NegLr = (float)(−lr), OneMinusDampening = (float)(1 − τ).</summary>
    public readonly record struct Coefs(float NegLr, float WeightDecay, float Momentum, float OneMinusDampening, bool Nesterov);

    /// <summary>
    /// Updates p in place from gradient g. buf is the momentum buffer (empty when momentum is 0);
    /// firstStep means buf is uninitialised and receives d.
    /// </summary>
    public static void Update(Span<float> p, ReadOnlySpan<float> g, Span<float> buf, bool firstStep, Coefs c)
    {
        int n = p.Length, i = 0;
        bool momentum = c.Momentum != 0, decay = c.WeightDecay != 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var wd = Vector256.Create(c.WeightDecay);
            var mu = Vector256.Create(c.Momentum);
            var omd = Vector256.Create(c.OneMinusDampening);
            var negLr = Vector256.Create(c.NegLr);
            for (; i <= n - 8; i += 8)
            {
                var pv = Vector256.Create((ReadOnlySpan<float>)p.Slice(i));
                var d = Vector256.Create(g.Slice(i));
                if (decay) d = Vector256.FusedMultiplyAdd(wd, pv, d);
                if (momentum)
                {
                    var b = firstStep ? d : Vector256.FusedMultiplyAdd(omd, d, Vector256.Create((ReadOnlySpan<float>)buf.Slice(i)) * mu);
                    b.CopyTo(buf.Slice(i));
                    d = c.Nesterov ? Vector256.FusedMultiplyAdd(mu, b, d) : b;
                }
                Vector256.FusedMultiplyAdd(negLr, d, pv).CopyTo(p.Slice(i));
            }
        }
        UpdateReference(p.Slice(i), g.Slice(i), momentum ? buf.Slice(i) : default, firstStep, c);
    }

    /// <summary>Scalar reference of <see cref="Update"/>, written as torch's _single_tensor_sgd reads.</summary>
    public static void UpdateReference(Span<float> p, ReadOnlySpan<float> g, Span<float> buf, bool firstStep, Coefs c)
    {
        for (int i = 0; i < p.Length; i++)
        {
            float d = g[i];
            if (c.WeightDecay != 0) d = MathF.FusedMultiplyAdd(c.WeightDecay, p[i], d);             // d + wd·p
            if (c.Momentum != 0)
            {
                float b = firstStep ? d : MathF.FusedMultiplyAdd(c.OneMinusDampening, d, buf[i] * c.Momentum); // buf·μ + (1−τ)·d
                buf[i] = b;
                d = c.Nesterov ? MathF.FusedMultiplyAdd(c.Momentum, b, d) : b;                          // d + μ·buf
            }
            p[i] = MathF.FusedMultiplyAdd(c.NegLr, d, p[i]);                                            // p − lr·d
        }
    }
}
