// ADFQ-ViT loss terms, schedule, QDrop and options: each against a direct double-precision computation
// (or an independent op), with finite-difference gradient checks for the differentiable terms.
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Tensors;

namespace ViTQuant.Tests.Ptq;

public class AdfqLossTests
{
    [Theory]
    [InlineData(new[] { 3, 5, 4 })]
    [InlineData(new[] { 2, 3, 2, 4 })]
    [InlineData(new[] { 3, 7 })]
    public void ReconstructionIsMeanOverBatchAndChannelsOfTokenSums(int[] shape)
    {
        var rng = new Rng(1);
        var oq = Tensor.Randn(rng, 1f, shape);
        var ofp = Tensor.Randn(rng, 1f, shape);
        int B = shape[0], C = shape[^1], tokens = oq.Size / (B * C);
        double direct = 0;
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
            {
                double tokenSum = 0;
                for (int t = 0; t < tokens; t++)
                {
                    int i = (b * tokens + t) * C + c;
                    double d = (double)oq.Data[i] - ofp.Data[i];
                    tokenSum += d * d;
                }
                direct += tokenSum;
            }
        direct /= B * C;
        Assert.Equal(direct, AdfqLoss.Reconstruction(oq, ofp).Item(), 5);
        GradCheck.Check(x => AdfqLoss.Reconstruction(x[0], ofp), new[] { oq.RequireGrad() });
        Assert.Throws<ArgumentException>(() => AdfqLoss.Reconstruction(oq, Tensor.Zeros(1, 2)));
    }

    private static Tensor Probs(Rng rng, params int[] shape)
    {
        using var _ = Autograd.NoGrad();
        return Ops.Softmax(Tensor.Randn(rng, 2f, shape), -1);
    }

    [Fact]
    public void AttentionKlMatchesDirectTemperedKl()
    {
        var rng = new Rng(2);
        var pq = Probs(rng, 2, 3, 4, 6);
        var pf = Probs(rng, 2, 3, 4, 6);
        pq.Data[5] = 0f; // a flushed probability: floored before the logarithm
        const double T = 4;
        int n = 6, rows = pq.Size / n;
        double total = 0;
        for (int r = 0; r < rows; r++)
        {
            double[] a = new double[n], b = new double[n];
            for (int k = 0; k < n; k++)
            {
                a[k] = Math.Pow(Math.Max(pq.Data[r * n + k], AdfqLoss.ProbFloor), 1 / T);
                b[k] = Math.Pow(Math.Max(pf.Data[r * n + k], AdfqLoss.ProbFloor), 1 / T);
            }
            double sa = a.Sum(), sb = b.Sum();
            for (int k = 0; k < n; k++) total += b[k] / sb * Math.Log(b[k] / sb / (a[k] / sa));
        }
        Assert.Equal(total / rows, AdfqLoss.AttentionKl(pq, pf, 4f).Item(), 5);
        Assert.Equal(0.0, AdfqLoss.AttentionKl(pf, pf, 4f).Item(), 6);
    }

    [Fact]
    public void AttentionKlEqualsTheDistillationKlOnLogProbabilities()
    {
        // Independent op: Ops.KlDivergence(s, t, T) = T²·mean KL(softmax(t/T) ‖ softmax(s/T)) with s = ln P_q, t = ln P_fp.
        var rng = new Rng(3);
        var pq = Probs(rng, 10, 7);
        var pf = Probs(rng, 10, 7);
        foreach (float T in new[] { 1f, 4f })
        {
            float viaOps;
            using (Autograd.NoGrad()) viaOps = Ops.KlDivergence(Ops.Log(pq), Ops.Log(pf), T).Item() / (T * T);
            Assert.Equal(viaOps, AdfqLoss.AttentionKl(pq, pf, T).Item(), 5);
        }
    }

    [Fact]
    public void AttentionKlGradientMatchesFiniteDifferences()
    {
        var rng = new Rng(4);
        var pq = Tensor.Uniform(rng, 0.2f, 1f, 3, 5).RequireGrad(); // unnormalised is fine: the tempered softmax normalises
        var pf = Probs(rng, 3, 5);
        GradCheck.Check(x => AdfqLoss.AttentionKl(x[0], pf, 4f), new[] { pq }, h: 1e-3, atol: 1e-5, rtol: 1e-2);
        Assert.Throws<ArgumentOutOfRangeException>(() => AdfqLoss.AttentionKl(pq, pf, 0f));
        Assert.Throws<ArgumentException>(() => AdfqLoss.AttentionKl(pq, Probs(rng, 3, 4), 4f));
    }

    [Fact]
    public void RoundingSumsEachQuantizersRegulariser()
    {
        var rng = new Rng(5);
        var quantizers = new List<AdaRoundQuantizer>();
        foreach (var shape in new[] { new[] { 4, 6 }, new[] { 3, 5 } })
        {
            var q = new AdaRoundQuantizer(new QuantSpec { Bits = 4, Granularity = Granularity.PerChannel, AdaRound = true });
            q.Observe(Tensor.Randn(rng, 1f, shape));
            q.Calibrate();
            rng.FillNormal(q.V!.Span, 0f, 2f); // away from the initial fractions
            quantizers.Add(q);
        }
        foreach (float beta in new[] { 20f, 2f })
        {
            double direct = 0;
            foreach (var q in quantizers)
                foreach (float v in q.V!.Span) direct += 1 - Math.Pow(Math.Abs(2.0 * AdaRoundQuantizer.RectifiedSigmoid(v) - 1), beta);
            var r = AdfqLoss.Rounding(quantizers, beta);
            Assert.Equal(direct, r.Item(), 3);
            Assert.True(r.RequiresGrad);
        }
        Assert.Equal(0f, AdfqLoss.Rounding(Array.Empty<AdaRoundQuantizer>(), 2f).Item());
    }

    [Fact]
    public void RoundScheduleFollowsBrecqAtItsBoundaries()
    {
        var o = new AdfqOptions { Iterations = 3000 };
        Assert.Equal(0f, o.RoundWeightAt(0));
        Assert.Equal(0f, o.RoundWeightAt(598));   // step count 599 < 600 = 20 % of 3000
        Assert.Equal(0.01f, o.RoundWeightAt(599)); // step count 600: on
        Assert.Equal(0.01f, o.RoundWeightAt(2999));
        Assert.Equal(20f, o.BetaAt(0));
        Assert.Equal(20f, o.BetaAt(599));
        Assert.Equal(11f, o.BetaAt(1799), 4);      // half way through the decay
        Assert.Equal(2f, o.BetaAt(2999));
        Assert.True(o.BetaAt(1000) > o.BetaAt(1001));
        var tiny = new AdfqOptions { Iterations = 10 };
        Assert.Equal(0f, tiny.RoundWeightAt(0));
        Assert.Equal(0.01f, tiny.RoundWeightAt(1));
        Assert.Equal(20f, tiny.BetaAt(1));
        Assert.Equal(2f, tiny.BetaAt(9));
        Assert.Throws<ArgumentOutOfRangeException>(() => tiny.BetaAt(10));
        Assert.Throws<ArgumentOutOfRangeException>(() => tiny.RoundWeightAt(-1));
        var noWarmup = new AdfqOptions { Iterations = 5, WarmupFraction = 0 };
        Assert.Equal(0.01f, noWarmup.RoundWeightAt(0));
    }

    [Theory]
    [InlineData(0.5f)]
    [InlineData(0.2f)]
    [InlineData(0f)]
    [InlineData(1f)]
    public void QDropMixesTheExpectedFraction(float p)
    {
        int n = 200_000;
        var xq = new Tensor(n);
        var xf = new Tensor(n);
        for (int i = 0; i < n; i++) { xq.Data[i] = -1 - i; xf.Data[i] = 1 + i; }
        var y = AdfqLoss.QDrop(xq, xf, p, new Rng(6));
        int fromFloat = 0;
        for (int i = 0; i < n; i++)
        {
            Assert.True(y.Data[i] == xq.Data[i] || y.Data[i] == xf.Data[i]);
            if (y.Data[i] == xf.Data[i]) fromFloat++;
        }
        double frac = fromFloat / (double)n, sd = Math.Sqrt(p * (1 - p) / n);
        Assert.InRange(frac, p - 5 * sd - 1e-12, p + 5 * sd + 1e-12);
        Assert.False(y.RequiresGrad);
        Assert.Equal(y.ToArray(), AdfqLoss.QDrop(xq, xf, p, new Rng(6)).ToArray()); // seeded
    }

    [Fact]
    public void OptionsValidateOnConstructionNamingTheFlag()
    {
        Assert.Contains("--iters", Assert.Throws<ViTQuantException>(() => new AdfqOptions { Iterations = 0 }).Message);
        Assert.Contains("--qdrop-prob", Assert.Throws<ViTQuantException>(() => new AdfqOptions { QDropProbability = 1.5f }).Message);
        Assert.Contains("--fc1-alpha", Assert.Throws<ViTQuantException>(() => new AdfqOptions { Fc1Alpha = 0f }).Message);
        Assert.Throws<ViTQuantException>(() => new AdfqOptions { WarmupFraction = 1 });
        Assert.Throws<ViTQuantException>(() => new AdfqOptions { KlTemperature = float.NaN });
        Assert.Throws<ViTQuantException>(() => new AdfqOptions() with { StepLr = -1f });
        var d = new AdfqOptions();
        Assert.Equal((3000, 32, 0.5f, 0.01f, 4f, 0.1f, 3e-3f, 4e-5f), (d.Iterations, d.BatchSize, d.QDropProbability, d.RoundWeight, d.KlTemperature, d.KlLambda, d.WeightLr, d.StepLr));
    }

    [Fact]
    public void PlanSwitchesRewriteOnlyTheirPoints()
    {
        var preset = QuantPresets.Create("adfq", 4, 4);
        Assert.Equal(preset.ToJson(), new AdfqOptions().CreatePlan(4, 4).ToJson());

        var plan = new AdfqOptions { PerPatch = false, ShiftLog = false }.CreatePlan(4, 4);
        foreach (var p in new[] { "blocks.2.attn.qkv", "blocks.2.mlp.fc1", "blocks.2.mlp.fc2" })
        {
            var s = plan.ActivationSpec(p)!;
            Assert.Equal((QuantKind.Uniform, Granularity.PerTensor, RangeMethod.Percentile, true), (s.Kind, s.Granularity, s.Range, s.Learnable));
        }
        Assert.Equal(preset.ActivationSpec("blocks.0.attn.q"), plan.ActivationSpec("blocks.0.attn.q"));
        Assert.Equal(preset.WeightSpec("blocks.0.mlp.fc1"), plan.WeightSpec("blocks.0.mlp.fc1"));

        var alpha = new AdfqOptions { Fc1Alpha = 10f, ShiftLogSqrtTwoBase = false }.CreatePlan(4, 4);
        Assert.Equal(10f, alpha.ActivationSpec("blocks.1.mlp.fc1")!.OutlierThreshold);
        Assert.Equal(5f, alpha.ActivationSpec("blocks.1.attn.qkv")!.OutlierThreshold);
        Assert.Equal(QuantKind.ShiftLog, alpha.ActivationSpec("blocks.1.mlp.fc2")!.Kind);
        Assert.False(alpha.ActivationSpec("blocks.1.mlp.fc2")!.SqrtTwoBase);

        Assert.Equal(QuantKind.LogSqrt2, preset.ActivationSpec("blocks.3.attn.probs")!.Kind);
        // auto: the spec's log√2 from 4 bits up, uniform percentile below
        Assert.Equal(QuantKind.LogSqrt2, new AdfqOptions().CreatePlan(4, 4).ActivationSpec("blocks.3.attn.probs")!.Kind);
        Assert.Equal(QuantKind.Uniform, new AdfqOptions().CreatePlan(4, 3).ActivationSpec("blocks.3.attn.probs")!.Kind);
        Assert.Equal(QuantKind.LogSqrt2, new AdfqOptions { Probs = QuantKind.LogSqrt2 }.CreatePlan(3, 3).ActivationSpec("blocks.3.attn.probs")!.Kind);
        var log2 = new AdfqOptions { Probs = QuantKind.Log2 }.CreatePlan(3, 3).ActivationSpec("blocks.3.attn.probs")!;
        Assert.Equal((QuantKind.Log2, 3), (log2.Kind, log2.Bits));
        var uniform = new AdfqOptions { Probs = QuantKind.Uniform }.CreatePlan(3, 3).ActivationSpec("blocks.3.attn.probs")!;
        Assert.Equal((QuantKind.Uniform, RangeMethod.Percentile, true, 3), (uniform.Kind, uniform.Range, uniform.Learnable, uniform.Bits));
        Assert.Throws<ViTQuantException>(() => new AdfqOptions { Probs = QuantKind.ShiftLog });
    }
}
