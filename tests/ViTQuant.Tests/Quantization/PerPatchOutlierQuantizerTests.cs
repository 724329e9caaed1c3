using ViTQuant.Quantization;
using ViTQuant.Tensors;
using static ViTQuant.Tests.Quantization.QuantTestUtil;

namespace ViTQuant.Tests.Quantization;

public class PerPatchOutlierQuantizerTests
{
    private static QuantSpec Spec(int bits, RangeMethod range = RangeMethod.Percentile, float alpha = 5f) => new()
    {
        Kind = QuantKind.PerPatchOutlier, Bits = bits, Granularity = Granularity.PerToken, Range = range, OutlierThreshold = alpha,
    };

    [Fact]
    public void HandWorkedTwoTokens()
    {
        // 2 bits, α = 5, min–max: token 0 = [−1, 0, 1, 2] → Δ = 1, z = 1 (grid −1..2);
        // token 1 = [0, 3, 6, −3], the outlier 6 is zeroed for calibration → [−3, 3]: Δ = 2, z = round(1.5) = 2
        // (grid −4, −2, 0, 2). Forward token 1: 3 → round(1.5) + 2 = 4 → 3 → 2; 6 stays; −3 → −2 + 2 = 0 → −4.
        var x = Tensor.FromArray(new[] { -1f, 0f, 1f, 2f, 0f, 3f, 6f, -3f }, 1, 2, 4);
        var q = Calibrated(new PerPatchOutlierQuantizer(Spec(2, RangeMethod.MinMax)), x);
        Assert.Equal(new UniformParams(1f, 1f, 0, 3), q.Params(0));
        Assert.Equal(new UniformParams(2f, 2f, 0, 3), q.Params(1));
        Assert.Equal(new[] { -1f, 0f, 1f, 2f, 0f, 2f, 6f, -4f }, q.Forward(x).ToArray());
        Assert.Equal(1.0 / 8, q.OutlierFraction);
    }

    [Fact]
    public void OutliersPassThroughBitExactlyAndAreCounted()
    {
        var rng = new Rng(4);
        var calib = Tensor.Randn(rng, 1.5f, 4, 10, 16);
        var q = Calibrated(new PerPatchOutlierQuantizer(Spec(4)), calib);
        var x = Tensor.Randn(rng, 1.5f, 3, 10, 16);
        int planted = 0;
        for (int i = 0; i < x.Size; i += 37) { x.Data[i] = (i % 2 == 0 ? 1 : -1) * (5.001f + i * 0.0123456f); planted++; }
        x.Data[1] = 5f; // exactly α is not an outlier (|x| > α)
        int outliers = x.ToArray().Count(v => MathF.Abs(v) > 5f);
        var y = q.Forward(x);
        var layout = GroupLayout.For(Granularity.PerToken, x.Shape);
        for (int i = 0; i < x.Size; i++)
        {
            if (MathF.Abs(x.Data[i]) > 5f) Assert.Equal(BitConverter.SingleToInt32Bits(x.Data[i]), BitConverter.SingleToInt32Bits(y.Data[i]));
            else Assert.Equal(q.Params(layout.GroupOf(i)).FakeQuant(x.Data[i]), y.Data[i]);
        }
        Assert.True(outliers >= planted);
        Assert.Equal((double)outliers / x.Size, q.OutlierFraction);

        var clean = Tensor.Zeros(1, 10, 16);
        q.Forward(clean);
        Assert.Equal(0.0, q.OutlierFraction);
        Assert.Equal((double)outliers / (x.Size + clean.Size), q.CumulativeOutlierFraction, 12);
    }

    [Fact]
    public void CalibrationZeroesOutliersAndSearchesPercentilesPerToken()
    {
        var rng = new Rng(5);
        var batches = Enumerable.Range(0, 3).Select(_ => Tensor.Randn(rng, 1f + 0.2f, 2, 6, 300)).ToArray();
        foreach (var b in batches) for (int i = 0; i < b.Size; i += 101) b.Data[i] = 9f; // outliers must not stretch the grid
        var q = Calibrated(new PerPatchOutlierQuantizer(Spec(4)), batches);
        for (int t = 0; t < 6; t++)
        {
            var vals = new List<float>();
            foreach (var b in batches)
                for (int n = 0; n < 2; n++)
                    for (int c = 0; c < 300; c++) { float v = b[n, t, c]; vals.Add(MathF.Abs(v) > 5f ? 0f : v); }
            var data = vals.ToArray();
            var sorted = data.Select(v => (double)v).OrderBy(v => v).ToArray();
            UniformParams best = default;
            double bestErr = double.PositiveInfinity;
            foreach (double p in new[] { 0.999, 0.9999, 0.99999 })
            {
                var grid = RangeSearch.FromRange((float)RefQuantile(sorted, 1 - p), (float)RefQuantile(sorted, p), 4, false);
                double err = data.Average(v => Math.Pow(v - grid.FakeQuant(v), 2));
                if (err < bestErr) { bestErr = err; best = grid; }
            }
            Assert.Equal(best, q.Params(t));
            Assert.True(q.Params(t).Scale * 15 < 9f, "outliers were excluded from the range");
        }
    }

    [Fact]
    public void StepGradientMatchesComposedOps()
    {
        // Reference from engine ops: y = m·x + (1 − m)·(clamp(round_ste(x/Δ) + z, 0, 15) − z)·Δ, Δ [N, 1].
        var rng = new Rng(6);
        var q = Calibrated(new PerPatchOutlierQuantizer(Spec(4, alpha: 2.5f)), Tensor.Randn(rng, 1f, 2, 5, 24));
        var x = Tensor.Randn(rng, 1.3f, 2, 5, 24).RequireGrad();
        var y = q.Forward(x);
        Assert.True(q.OutlierFraction > 0.02);
        var w = BackwardWeighted(y);

        var scale = new Tensor(q.Scale!.ToArray(), 5, 1).RequireGrad();
        var zero = new Tensor(Enumerable.Range(0, 5).Select(t => q.Params(t).ZeroPoint).ToArray(), 5, 1);
        var mask = new Tensor(x.ToArray().Select(v => MathF.Abs(v) > 2.5f ? 1f : 0f).ToArray(), x.Shape);
        var inv = new Tensor(mask.ToArray().Select(m => 1 - m).ToArray(), x.Shape);
        var x2 = x.Detach().Clone().RequireGrad();
        var fq = Ops.Mul(Ops.Sub(Ops.Clamp(Ops.Add(Ops.RoundSte(Ops.Div(x2, scale)), zero), 0, 15), zero), scale);
        var r = Ops.Add(Ops.Mul(mask, x2), Ops.Mul(inv, fq));
        Close(r.ToArray(), y.ToArray(), 0, 0, "forward");
        Ops.Sum(Ops.Mul(r, new Tensor(w, r.Shape))).Backward();
        Close(x2.Grad!.ToArray(), x.Grad!.ToArray(), 1e-6, 1e-6, "dx");
        Close(scale.Grad!.ToArray(), q.Scale!.Grad!.ToArray(), 1e-4, 1e-4, "dΔ");
        Assert.Same(q.Scale, Assert.Single(q.LearnableParameters()));
    }

    [Fact]
    public void ShapesAndSpecsAreChecked()
    {
        var q = Calibrated(new PerPatchOutlierQuantizer(Spec(4)), Tensor.Randn(new Rng(1), 1f, 2, 7, 8));
        Assert.Throws<ViTQuantException>(() => q.Forward(Tensor.Zeros(2, 8, 8)));
        Assert.Throws<ViTQuantException>(() => q.Forward(Tensor.Zeros(56)));
        Assert.Throws<ViTQuantException>(() => new PerPatchOutlierQuantizer(Spec(4) with { Granularity = Granularity.PerTensor }));
        Assert.Throws<ViTQuantException>(() => new PerPatchOutlierQuantizer(Spec(4) with { OutlierThreshold = 0f }));
        Assert.Throws<ViTQuantException>(() => QuantizerFactory.Create(Spec(4), isWeight: true));
    }
}
