using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Nn;

public class OptimizerTests
{
    private static float[] RandArray(Rng rng, int n, float lo = -2f, float hi = 2f)
    {
        var a = new float[n];
        rng.FillUniform(a, lo, hi);
        return a;
    }

    // Lengths straddle the 8-wide vector body and its scalar tail.
    public static TheoryData<int> Lengths => new() { 1, 7, 8, 9, 31, 64, 1003 };

    [Theory]
    [MemberData(nameof(Lengths))]
    public void SgdVectorKernelEqualsReferenceBitForBit(int n)
    {
        var rng = new Rng((ulong)n);
        var configs = new[]
        {
            (new SgdKernels.Coefs(-0.1f, 0f, 0f, 1f, false), false),
            (new SgdKernels.Coefs(-0.1f, 1e-4f, 0.9f, 1f, true), true),
            (new SgdKernels.Coefs(-0.1f, 1e-4f, 0.9f, 1f, true), false),
            (new SgdKernels.Coefs(-0.05f, 1e-3f, 0.8f, 0.75f, false), false),
        };
        foreach (var (c, first) in configs)
        {
            var p = RandArray(rng, n); var g = RandArray(rng, n); var buf = RandArray(rng, n);
            var (p0, p2, buf2) = ((float[])p.Clone(), (float[])p.Clone(), (float[])buf.Clone());
            bool momentum = c.Momentum != 0;
            SgdKernels.Update(p, g, momentum ? buf : default, first, c);
            SgdKernels.UpdateReference(p2, g, momentum ? buf2 : default, first, c);
            Assert.Equal(p2, p);
            Assert.Equal(buf2, buf);
            Assert.NotEqual(p0, p);                          // p moved: the comparison is not between no-ops
        }
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void AdamVectorKernelEqualsReferenceBitForBit(int n)
    {
        var rng = new Rng(100 + (ulong)n);
        foreach (var (l2, decoupled, ams) in new[] { (0f, false, false), (1e-2f, false, false), (0f, true, false), (0f, false, true), (0f, true, true) })
        {
            var c = new AdamKernels.Coefs(0.9f, 0.1f, 0.999f, 1e-3f, l2, decoupled, 0.9995f, 0.0447f, 1e-8f, -0.0123f, ams);
            var p = RandArray(rng, n); var g = RandArray(rng, n); var m = RandArray(rng, n);
            var v = RandArray(rng, n, 0f, 1f); var vmax = RandArray(rng, n, 0f, 1f);
            var (p2, m2, v2, vmax2) = ((float[])p.Clone(), (float[])m.Clone(), (float[])v.Clone(), (float[])vmax.Clone());
            AdamKernels.Update(p, g, m, v, ams ? vmax : default, c);
            AdamKernels.UpdateReference(p2, g, m2, v2, ams ? vmax2 : default, c);
            Assert.Equal(p2, p); Assert.Equal(m2, m); Assert.Equal(v2, v); Assert.Equal(vmax2, vmax);
        }
    }

    [Fact]
    public void LargeParameterTakesParallelChunksAndStillMatchesReference()
    {
        // 100k elements exceed both kernels' MinChunk, so Step() splits the update across threads.
        var rng = new Rng(5);
        var p = Tensor.Randn(rng, 1f, 100_000).RequireGrad();
        var p0 = p.ToArray();
        var g = Tensor.Randn(rng, 1f, 100_000);
        p.Grad = g;
        var opt = new AdamW(new[] { p }, 1e-2f, weightDecay: 0.05f, amsgrad: true);
        opt.Step();

        var refP = (float[])p0.Clone();
        var (m, v, vmax) = (new float[refP.Length], new float[refP.Length], new float[refP.Length]);
        var c = new AdamKernels.Coefs(0.9f, (float)(1 - 0.9), 0.999f, (float)(1 - 0.999), 0f, true, (float)(1 - 1e-2f * (double)0.05f),
                                      (float)Math.Sqrt(1 - 0.999), 1e-8f, (float)-(1e-2f / (1 - 0.9)), true);
        AdamKernels.UpdateReference(refP, g.Data, m, v, vmax, c);
        Assert.Equal(refP, p.ToArray());

        var sgdP = Tensor.FromArray(p0, 100_000).RequireGrad();
        sgdP.Grad = g;
        new Sgd(new[] { sgdP }, 0.1f, momentum: 0.9, weightDecay: 1e-4f, nesterov: true).Step();
        var refS = (float[])p0.Clone();
        SgdKernels.UpdateReference(refS, g.Data, new float[refS.Length], true, new SgdKernels.Coefs(-0.1f, 1e-4f, 0.9f, 1f, true));
        Assert.Equal(refS, sgdP.ToArray());
    }

    [Fact]
    public void AdamFirstStepMovesEachWeightByAboutLr()
    {
        // With bias correction the first Adam step is −lr·g/(|g| + ε·…) ≈ −lr·sign(g): an independent check.
        var p = Tensor.FromArray(new float[] { 1f, -2f, 3f }, 3).RequireGrad();
        p.Grad = Tensor.FromArray(new float[] { 0.5f, -4f, 1e-3f }, 3);
        new Adam(new[] { p }, lr: 0.1f).Step();
        Assert.Equal(new[] { 0.9f, -1.9f, 2.9f }, p.ToArray().Select(x => MathF.Round(x, 5)));
    }

    [Fact]
    public void SaveAndLoadStateResumesExactly()
    {
        foreach (var make in new Func<Tensor[], Optimizer>[]
        {
            ps => new Adam(new[] { new ParamGroup(new[] { ps[0] }, weightDecay: 1e-2f), new ParamGroup(new[] { ps[1] }) }, lr: 1e-2f, amsgrad: true),
            ps => new AdamW(ps, lr: 1e-2f),
            ps => new Sgd(ps, 0.1f, momentum: 0.9, dampening: 0.1, weightDecay: 1e-3f),
        })
        {
            var rng = new Rng(9);
            var a = new[] { Tensor.Randn(rng, 1f, 4, 3).RequireGrad(), Tensor.Randn(rng, 1f, 5).RequireGrad() };
            var grads = Enumerable.Range(0, 6).Select(_ => new[] { Tensor.Randn(rng, 1f, 4, 3), Tensor.Randn(rng, 1f, 5) }).ToArray();
            var optA = make(a);
            var schedule = new CosineAnnealing(1e-2, 1e-4, 6);

            void StepWith(Optimizer opt, Tensor[] ps, int t)
            {
                ps[0].Grad = grads[t][0].Clone();
                ps[1].Grad = t == 1 ? null : grads[t][1].Clone(); // a skipped parameter's state stays behind
                schedule.Apply(opt, t);
                opt.Step();
            }

            for (int t = 0; t < 3; t++) StepWith(optA, a, t);
            var saved = optA.SaveState().ToDictionary(x => x.Name, x => x.Value);

            var b = a.Select(p => p.Clone().RequireGrad()).ToArray();
            var optB = make(b);
            optB.Groups[0].Lr = 123f;                        // restored from the saved group entries
            optB.LoadState(saved);
            Assert.Equal(optA.Groups[0].Lr, optB.Groups[0].Lr);
            Assert.Equal(Flatten(optA.SaveState()), Flatten(optB.SaveState()));

            for (int t = 3; t < 6; t++) { StepWith(optA, a, t); StepWith(optB, b, t); }
            Assert.Equal(a[0].ToArray(), b[0].ToArray());
            Assert.Equal(a[1].ToArray(), b[1].ToArray());
            Assert.Equal(Flatten(optA.SaveState()), Flatten(optB.SaveState()));

            // And a fresh optimizer without the state diverges: the state really mattered.
            var c = b.Select(p => p.Clone().RequireGrad()).ToArray();
            var optC = make(c);
            var d = b.Select(p => p.Clone().RequireGrad()).ToArray();
            var optD = make(d);
            optD.LoadState(optB.SaveState().ToDictionary(x => x.Name, x => x.Value));
            StepWith(optC, c, 5); StepWith(optD, d, 5);
            Assert.NotEqual(c[0].ToArray(), d[0].ToArray());
        }
    }

    private static IEnumerable<string> Flatten(IEnumerable<(string Name, Tensor Value)> state) =>
        state.Select(x => x.Name + "=" + string.Join(",", x.Value.ToArray()));

    [Fact]
    public void StateNamesFollowTorchKeys()
    {
        var w = Tensor.Zeros(2, 2).RequireGrad();
        var b = Tensor.Zeros(2).RequireGrad();
        var opt = new Adam(new[] { w, b }, amsgrad: true);
        w.Grad = Tensor.Ones(2, 2);                           // b has no gradient: no state for it
        opt.Step();
        opt.Step();
        var state = opt.SaveState().ToDictionary(x => x.Name, x => x.Value);
        Assert.Equal(new[] { "group.0.lr", "group.0.weight_decay", "state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq", "state.0.max_exp_avg_sq" }, state.Keys);
        Assert.Equal(2f, state["state.0.step"].Item());
        Assert.Equal(new float[2], b.ToArray());
        Assert.Equal(1e-3f, state["group.0.lr"].Item());
    }

    [Fact]
    public void LoadStateRejectsWhatDoesNotFitAndKeepsOldState()
    {
        var w = Tensor.Zeros(2, 2).RequireGrad();
        var opt = new Adam(new[] { w });
        w.Grad = Tensor.Ones(2, 2);
        opt.Step();
        var good = opt.SaveState().ToDictionary(x => x.Name, x => x.Value);

        var bad = new Dictionary<string, Tensor>(good);
        bad["state.0.exp_avg"] = Tensor.Zeros(4);             // wrong shape
        bad.Remove("state.0.exp_avg_sq");                      // incomplete
        bad["state.5.step"] = Tensor.Scalar(1f);               // no parameter 5
        bad["state.0.momentum_buffer"] = Tensor.Zeros(2, 2);   // an SGD name
        bad["group.0.lr"] = Tensor.Scalar(-1f);
        var ex = Assert.Throws<ViTQuantException>(() => opt.LoadState(bad));
        foreach (var s in new[] { "state.0.exp_avg has shape [4]", "state.0 lacks exp_avg, exp_avg_sq", "unexpected entry state.5.step", "unexpected entry state.0.momentum_buffer", "group.0.lr" })
            Assert.Contains(s, ex.Message);
        Assert.Equal(Flatten(good.Select(kv => (kv.Key, kv.Value))), Flatten(opt.SaveState()));

        Assert.Throws<ViTQuantException>(() => new Sgd(new[] { Tensor.Zeros(2).RequireGrad() }, 0.1f).LoadState(good));
    }

    [Fact]
    public void ParametersWithoutGradientAreSkipped()
    {
        var w = Tensor.Ones(3).RequireGrad();
        var b = Tensor.Ones(3).RequireGrad();
        var opt = new Sgd(new[] { w, b }, 0.5f, momentum: 0.9, weightDecay: 0.1f);
        w.Grad = Tensor.Full(2f, 3);
        opt.Step();
        Assert.Equal(new float[] { 1f, 1f, 1f }, b.ToArray());
        Assert.Equal(new float[] { 1 - 0.5f * (2f + 0.1f) }, w.ToArray().Distinct());
        opt.ZeroGrad();
        Assert.Null(w.Grad);
        Assert.DoesNotContain(opt.SaveState(), x => x.Name.StartsWith("state.1.", StringComparison.Ordinal));
    }

    [Fact]
    public void ConstructorsRejectBadArguments()
    {
        var p = Tensor.Zeros(2).RequireGrad();
        Assert.Throws<ArgumentException>(() => new Sgd(new[] { p, p }, 0.1f));
        Assert.Throws<ArgumentException>(() => new Sgd(Array.Empty<Tensor>(), 0.1f));
        Assert.Throws<ArgumentException>(() => new Sgd(new[] { p * 2f }, 0.1f));
        Assert.Throws<ArgumentException>(() => new Sgd(new[] { p }, 0.1f, nesterov: true));
        Assert.Throws<ArgumentException>(() => new Sgd(new[] { p }, 0.1f, momentum: 0.9, dampening: 0.1, nesterov: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sgd(new[] { p }, -0.1f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Adam(new[] { p }, beta1: 1.0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Adam(new[] { p }, eps: double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW(new[] { p }, weightDecay: -1f));
        var group = new ParamGroup(new[] { p });
        var opt = new Sgd(new[] { group }, 0.1f, weightDecay: 0.2f);
        Assert.Equal((0.1f, 0.2f), (group.Lr, group.WeightDecay));     // defaults filled in
        Assert.Throws<ArgumentException>(() => new Sgd(new[] { group }, 0.1f)); // a group serves one optimizer
        Assert.Throws<ArgumentOutOfRangeException>(() => opt.Groups[0].Lr = float.PositiveInfinity);
        p.Grad = Tensor.Zeros(3);
        Assert.Throws<InvalidOperationException>(() => opt.Step());
    }
}
