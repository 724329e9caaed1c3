using ViTQuant.Quantization;
using ViTQuant.Tensors;
using static ViTQuant.Tests.Quantization.QuantTestUtil;

namespace ViTQuant.Tests.Quantization;

public class LsqQuantizerTests
{
    private static QuantSpec Spec(int bits, Granularity g = Granularity.PerTensor, bool sym = false) =>
        new() { Kind = QuantKind.Lsq, Bits = bits, Granularity = g, Symmetric = sym };

    /// <summary>An LSQ quantizer whose α and z are set by hand through LoadState.</summary>
    private static LsqQuantizer WithParams(int bits, bool signed, float alpha, float zero)
    {
        var q = new LsqQuantizer(Spec(bits));
        q.LoadState(new Dictionary<string, Tensor>
        {
            ["alpha"] = T(alpha), ["zero_point"] = T(zero), ["signed"] = T(signed ? 1f : 0f),
        });
        return q;
    }

    [Fact]
    public void InitialisationFollowsMimiQ()
    {
        // signed from the first batch; α = 2·mean|x|/√q_max = 2·2/√7 at 4 bits signed
        var q = Calibrated(new LsqQuantizer(Spec(4)), T(1f, -1f, 3f, -3f));
        Assert.True(q.Signed);
        Assert.Equal((-8, 7), (q.QMin, q.QMax));
        Assert.Equal((float)(4 / Math.Sqrt(7)), q.Alpha!.Item(), 6);
        Assert.Equal(0f, q.ZeroPoint!.Item());

        // the first batch decides: non-negative first → unsigned [0, 15], even if later batches go negative
        var u = Calibrated(new LsqQuantizer(Spec(4)), T(0f, 2f, 4f), T(-1f, 1f, 1f));
        Assert.False(u.Signed);
        Assert.Equal((0, 15), (u.QMin, u.QMax));
        Assert.Equal((float)(2 * (9.0 / 6) / Math.Sqrt(15)), u.Alpha!.Item(), 6); // mean|x| over both batches = 9/6
        Assert.Equal(2, u.LearnableParameters().Count());
    }

    [Theory]
    [InlineData(RangeMethod.MinMax, 4)]
    [InlineData(RangeMethod.Percentile, 4)]
    [InlineData(RangeMethod.LpSearch, 3)]
    public void RangeInitStartsOnTheSearchedUniformGrid(RangeMethod range, int bits)
    {
        // The range-searched start must be exactly the asymmetric uniform grid the PTQ baselines pick: same
        // levels, so the same output for every value (signed data: LSQ's z is the uniform z shifted by q_min).
        var x = Tensor.Randn(new Rng(7), 1f, 4000);
        for (int i = 0; i < 40; i++) x.Data[i * 100] *= 8; // outliers, so the searches differ from min–max
        var u = Calibrated(new UniformQuantizer(new QuantSpec { Bits = bits, Range = range }), x);
        var l = Calibrated(new LsqQuantizer(Spec(bits) with { RangeInit = true, Range = range }), x);
        Assert.True(l.Signed);
        Assert.Equal(u.Forward(x).ToArray(), l.Forward(x).ToArray());
        if (range != RangeMethod.MinMax) // clipped below the extremes (min–max: the full range)
            Assert.True(l.Alpha!.Item() * ((1 << bits) - 1) < x.ToArray().Max() - x.ToArray().Min());

        var pos = Tensor.FromArray(x.ToArray().Select(MathF.Abs).ToArray(), x.Size); // unsigned data: z = 0 on [0, 2^b − 1]
        var lu = Calibrated(new LsqQuantizer(Spec(bits) with { RangeInit = true, Range = range }), pos);
        Assert.False(lu.Signed);
        Assert.Equal(0f, lu.ZeroPoint!.Item());
        Assert.Equal(Calibrated(new UniformQuantizer(new QuantSpec { Bits = bits, Range = range }), pos).Forward(pos).ToArray(), lu.Forward(pos).ToArray());
        Assert.Throws<ViTQuantException>(() => new QuantSpec { RangeInit = true }.Validated()); // uniform quantizers have no LSQ start
    }

    [Fact]
    public void WeightInitialisationIsPerChannelMinMax()
    {
        var w = Tensor.FromArray(new[] { 1.5f, -0.5f, 0.2f, -3f, 1f, 2f }, 2, 3);
        var sym = Calibrated(new LsqQuantizer(Spec(4, Granularity.PerChannel, sym: true), isWeight: true), w);
        Assert.True(sym.Signed);
        Assert.Equal(new[] { 2 * 1.5f / 15, 2 * 3f / 15 }, sym.Alpha!.ToArray());
        var asym = Calibrated(new LsqQuantizer(Spec(2, Granularity.PerChannel), isWeight: true), w);
        Assert.Equal(new[] { 2f / 3, 5f / 3 }, asym.Alpha!.ToArray()); // [−0.5, 1.5] and [−3, 2] over 3 steps
        Assert.Equal(new[] { 1f, 2f }, asym.ZeroPoint!.ToArray());     // round(0.75) = 1, round(1.8) = 2
    }

    [Fact]
    public void ForwardHandWorked()
    {
        // α = 0.5, z = 0, 3 bits signed [−4, 3]: x/α = 0.5, 1.5, −0.5, 3.2, −5, −6 → clamp → round (half to even)
        var q = WithParams(3, signed: true, alpha: 0.5f, zero: 0f);
        Assert.Equal(new[] { 0f, 1f, 0f, 1.5f, -2f, -2f }, q.Forward(T(0.25f, 0.75f, -0.25f, 1.6f, -2.5f, -3f)).ToArray());
        // α = 1, z = 1.4 (used as round(z) = 1), 2 bits unsigned [0, 3]: v = x + 1 = −0.2, 1.6, 3.5, 4
        var z = WithParams(2, signed: false, alpha: 1f, zero: 1.4f);
        Assert.Equal(new[] { -1f, 1f, 2f, 2f }, z.Forward(T(-1.2f, 0.6f, 2.5f, 3f)).ToArray());
    }

    [Fact]
    public void GradientsHandWorked()
    {
        // α = 0.5, z = 0, [−4, 3]; x = 0.25, 0.75, 1.6, −3 → v = 0.5, 1.5, 3.2 (out), −6 (out)
        // ∂α: round(v) − v inside = −0.5, 0.5; q_max = 3, q_min = −4 outside → Σ = −1, times g = 1/√(4·3)
        // ∂z: −α per clamped element → −1, times g;   ∂x: 1, 1, 0, 0
        var q = WithParams(3, signed: true, alpha: 0.5f, zero: 0f);
        var x = T(0.25f, 0.75f, 1.6f, -3f).RequireGrad();
        Ops.Sum(q.Forward(x)).Backward();
        Assert.Equal(new[] { 1f, 1f, 0f, 0f }, x.Grad!.ToArray());
        float g = (float)(1 / Math.Sqrt(12));
        Assert.Equal(-g, q.Alpha!.Grad!.Item(), 6);
        Assert.Equal(-g, q.ZeroPoint!.Grad!.Item(), 6);
    }

    [Theory]
    [InlineData(Granularity.PerTensor, 4)]
    [InlineData(Granularity.PerChannel, 3)]
    public void GradientsMatchComposedRoundSteOps(Granularity granularity, int bits)
    {
        // Reference: (round_ste(clamp(x/α + round_ste(z), q_min, q_max)) − round_ste(z))·α from engine
        // ops; LSQ scales the α and z gradients by g = 1/√(n·q_max), n = elements per group.
        var rng = new Rng(31);
        var calib = Tensor.Randn(rng, 1f, 5, 48);
        var q = Calibrated(new LsqQuantizer(Spec(bits, granularity)), calib);
        int groups = q.Alpha!.Size;
        for (int k = 0; k < groups; k++)
        {
            q.Alpha.Data[k] *= 0.6f + 0.1f * k; // move away from the init so some values clamp
            q.ZeroPoint!.Data[k] = k % 3 - 0.7f;
        }
        var x = Tensor.Randn(rng, 1.2f, 5, 48).RequireGrad();
        var y = q.Forward(x);
        var w = BackwardWeighted(y);

        var shape = groups == 1 ? new[] { 1 } : new[] { groups, 1 };
        var alpha = new Tensor(q.Alpha.ToArray(), shape).RequireGrad();
        var zero = new Tensor(q.ZeroPoint!.ToArray(), shape).RequireGrad();
        var x2 = x.Detach().Clone().RequireGrad();
        var rz = Ops.RoundSte(zero);
        var r = Ops.Mul(Ops.Sub(Ops.RoundSte(Ops.Clamp(Ops.Add(Ops.Div(x2, alpha), rz), q.QMin, q.QMax)), rz), alpha);
        BitEqual(r.ToArray(), y.ToArray(), "forward");
        Ops.Sum(Ops.Mul(r, new Tensor(w, r.Shape))).Backward();

        double gScale = 1 / Math.Sqrt(x.Size / groups * (double)q.QMax);
        Close(x2.Grad!.ToArray(), x.Grad!.ToArray(), 1e-6, 1e-6, "dx");
        Close(alpha.Grad!.ToArray().Select(v => (float)(v * gScale)).ToArray(), q.Alpha.Grad!.ToArray(), 1e-5, 1e-4, "dα");
        Close(zero.Grad!.ToArray().Select(v => (float)(v * gScale)).ToArray(), q.ZeroPoint.Grad!.ToArray(), 1e-5, 1e-4, "dz");
        Assert.Contains(x.Grad!.ToArray(), v => v == 0f);
        Assert.Contains(q.ZeroPoint.Grad!.ToArray(), v => v != 0f);
    }

    [Fact]
    public void LearningTheStepReducesTheError()
    {
        // A few plain gradient steps on MSE(x̂, x) with LSQ's gradient must lower the error: a
        // behavioural check that the sign and scale of ∂α are usable.
        var rng = new Rng(5);
        var x = Tensor.Randn(rng, 1f, 4096);
        var q = Calibrated(new LsqQuantizer(Spec(3)), x);
        q.Alpha!.Data[0] *= 3f; // start from a poor step
        double Loss()
        {
            using var _ = Autograd.NoGrad();
            var y = q.Forward(x);
            double s = 0;
            for (int i = 0; i < x.Size; i++) s += Math.Pow(y.Data[i] - x.Data[i], 2);
            return s / x.Size;
        }
        double before = Loss();
        for (int step = 0; step < 30; step++)
        {
            q.Alpha.ZeroGrad();
            q.ZeroPoint!.ZeroGrad();
            var d = Ops.Sub(q.Forward(x), x);
            Ops.Mean(Ops.Mul(d, d)).Backward();
            q.Alpha.Data[0] -= 20f * q.Alpha.Grad!.Item(); // g ≈ 0.009 scales the step gradient down
        }
        Assert.True(Loss() < 0.5 * before, $"MSE {before} → {Loss()}");
    }

    // The eight-lane segment passes against their scalar forms: values inside, on and beyond the grid edges,
    // exact half steps (round half to even), NaN, and lengths that leave a tail.
    [Theory]
    [InlineData(1, 0f)]
    [InlineData(37, 0f)]
    [InlineData(64, 3f)]
    [InlineData(203, -2f)]
    public void SegmentPassesMatchTheScalarForm(int len, float rz)
    {
        var rng = new Rng((ulong)len);
        float a = 0.37f;
        int qmin = -8, qmax = 7;
        var x = new float[len];
        var g = new float[len];
        for (int i = 0; i < len; i++)
        {
            x[i] = (i % 5) switch
            {
                0 => (rng.NextFloat() * 30f - 15f) * a,          // inside and far outside
                1 => ((int)(rng.NextFloat() * 20) - 10 + 0.5f - rz) * a, // half steps
                2 => (qmin - rz) * a,                            // on the edges
                3 => (qmax - rz) * a,
                _ => i == 4 ? float.NaN : rng.NextNormal() * a,
            };
            g[i] = rng.NextNormal();
        }
        var yFast = new float[len];
        LsqQuantizer.ForwardSegment(x, yFast, a, rz, qmin, qmax);
        for (int i = 0; i < len; i++)
        {
            float want = (MathF.Round(Math.Clamp(x[i] / a + rz, qmin, qmax)) - rz) * a;
            Assert.True(want.Equals(yFast[i]), $"forward [{i}] x={x[i]}: {yFast[i]} vs {want}");
        }
        var gxFast = new float[len];
        var gxSlow = new float[len];
        for (int i = 0; i < len; i++) gxFast[i] = gxSlow[i] = 0.25f * i;
        var fast = LsqQuantizer.BackwardSegment(x, g, gxFast, a, rz, qmin, qmax);
        var slow = LsqQuantizer.ReferenceBackwardSegment(x, g, gxSlow, a, rz, qmin, qmax);
        Assert.Equal(gxSlow, gxFast);
        Assert.Equal(slow.Sa, fast.Sa, 1e-9 * Math.Max(1, Math.Abs(slow.Sa)));
        Assert.Equal(slow.SOut, fast.SOut, 1e-9 * Math.Max(1, Math.Abs(slow.SOut)));
        // Without an input gradient the sums are the same.
        var noGx = LsqQuantizer.BackwardSegment(x, g, default, a, rz, qmin, qmax);
        Assert.Equal(fast, noGx);
    }
}
