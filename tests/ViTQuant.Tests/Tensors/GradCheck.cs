// Central finite-difference gradient checker.
//
// The scalar probed is L(x) = Σ w ⊙ f(x) with fixed random weights w, accumulated in double, so the
// check exercises the full output gradient (not just ∂Σf). For each input element the analytic
// gradient from Backward() is compared with (L(x+h) − L(x−h)) / 2h. The forward runs in float32,
// so h and the tolerance are chosen for float32 round-off: |a − n| ≤ atol + rtol·max(|a|, |n|).
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

public static class GradCheck
{
    /// <summary>Asserts that the gradients of f with respect to every input requiring grad match finite differences.</summary>
    public static void Check(Func<Tensor[], Tensor> f, Tensor[] inputs, double h = 1e-2, double atol = 2e-3, double rtol = 2e-2, int maxProbesPerInput = 64, ulong seed = 7)
    {
        var rng = new Rng(seed);
        var y0 = f(inputs);
        var w = new double[y0.Size];
        for (int i = 0; i < w.Length; i++) w[i] = rng.NextNormal();
        foreach (var x in inputs) x.ZeroGrad();

        var y = f(inputs);
        var wt = new Tensor(w.Select(v => (float)v).ToArray(), y.Shape);
        var loss = Ops.Sum(Ops.Mul(y, wt));
        loss.Backward();

        double Eval()
        {
            using var _ = Autograd.NoGrad();
            var o = f(inputs);
            double s = 0;
            for (int i = 0; i < o.Size; i++) s += w[i] * o.Data[i];
            return s;
        }

        for (int xi = 0; xi < inputs.Length; xi++)
        {
            var x = inputs[xi];
            if (!x.RequiresGrad) continue;
            Assert.True(x.Grad != null, $"input {xi} received no gradient");
            var probes = Enumerable.Range(0, x.Size).ToArray();
            if (probes.Length > maxProbesPerInput) { rng.Shuffle(probes.AsSpan()); probes = probes[..maxProbesPerInput]; }
            foreach (int i in probes)
            {
                float orig = x.Data[i];
                x.Data[i] = (float)(orig + h); double lp = Eval();
                x.Data[i] = (float)(orig - h); double lm = Eval();
                x.Data[i] = orig;
                double num = (lp - lm) / (2 * h);
                double ana = x.Grad!.Data[i];
                double tol = atol + rtol * Math.Max(Math.Abs(num), Math.Abs(ana));
                Assert.True(Math.Abs(num - ana) <= tol, $"input {xi} element {i}: analytic {ana:G6} vs numeric {num:G6} (tol {tol:G3})");
            }
        }
    }

    public static Tensor Rand(Rng rng, params int[] shape) => Tensor.Randn(rng, 1f, shape).RequireGrad();
}
