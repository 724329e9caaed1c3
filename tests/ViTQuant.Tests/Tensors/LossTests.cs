using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

public class LossTests
{
    /// <summary>log_softmax of one row in double.</summary>
    private static double[] LogSoftmaxRow(Tensor z, int row)
    {
        int k = z.Shape[1];
        var r = Enumerable.Range(0, k).Select(j => (double)z.Data[row * k + j]).ToArray();
        double max = r.Max(), lse = max + Math.Log(r.Sum(v => Math.Exp(v - max)));
        return r.Select(v => v - lse).ToArray();
    }

    [Fact]
    public void CrossEntropyForwardMatchesDefinition()
    {
        var z = Tensor.FromArray(new float[] { 1, 2, 3, 0.5f, -1, 4 }, 2, 3);
        int[] labels = { 2, 0 };
        // no smoothing, hand value for row 0: −log softmax([1,2,3])[2] = 0.40760596
        var single = Ops.CrossEntropy(Tensor.FromArray(new float[] { 1, 2, 3 }, 1, 3), new[] { 2 });
        Assert.Equal(0.40760596f, single.Item(), 1e-6f);
        foreach (float eps in new[] { 0f, 0.1f, 1f })
        {
            double expected = 0;
            for (int b = 0; b < 2; b++)
            {
                var lp = LogSoftmaxRow(z, b);
                expected += -(1 - eps) * lp[labels[b]] - eps / 3 * lp.Sum();
            }
            Assert.Equal(expected / 2, Ops.CrossEntropy(z, labels, eps).Item(), 1e-6);
        }
    }

    [Fact]
    public void CrossEntropyGradientsMatchFiniteDifferences()
    {
        var rng = new Rng(1);
        int[] labels = { 3, 0, 6, 2 };
        GradCheck.Check(v => Ops.CrossEntropy(v[0], labels), new[] { GradCheck.Rand(rng, 4, 7) });
        GradCheck.Check(v => Ops.CrossEntropy(v[0], labels, 0.1f), new[] { GradCheck.Rand(rng, 4, 7) });
        GradCheck.Check(v => Ops.CrossEntropy(v[0], new[] { 8 }, 0.3f), new[] { GradCheck.Rand(rng, 1, 9) });
    }

    [Fact]
    public void CrossEntropyRejectsBadInput()
    {
        var z = Tensor.Zeros(2, 3);
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(z, new[] { 0, 3 }));
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(z, new[] { -1, 0 }));
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(z, new[] { 0 }));
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(z, new[] { 0, 1 }, 1.5f));
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(Tensor.Zeros(6), new[] { 0 }));
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(Tensor.Zeros(0, 3), Array.Empty<int>()));
    }

    [Fact]
    public void SoftCrossEntropyWithSmoothedOneHotTargetsEqualsSmoothedCrossEntropy()
    {
        var rng = new Rng(2);
        var z = Tensor.Randn(rng, 2f, 5, 6);
        int[] labels = { 0, 5, 2, 2, 4 };
        const float eps = 0.2f;
        var t = new Tensor(5, 6);
        for (int b = 0; b < 5; b++)
            for (int j = 0; j < 6; j++) t.Data[b * 6 + j] = eps / 6 + (j == labels[b] ? 1 - eps : 0);
        Assert.Equal(Ops.CrossEntropy(z, labels, eps).Item(), Ops.SoftCrossEntropy(z, t).Item(), 1e-5f);
    }

    [Fact]
    public void SoftCrossEntropyGradientsMatchFiniteDifferencesInBothInputs()
    {
        var rng = new Rng(3);
        var z = GradCheck.Rand(rng, 3, 5);
        var t = Tensor.Uniform(rng, 0f, 1f, 3, 5).RequireGrad(); // need not sum to 1: the op is linear in t
        GradCheck.Check(v => Ops.SoftCrossEntropy(v[0], v[1]), new[] { z, t });
        Assert.Throws<ArgumentException>(() => Ops.SoftCrossEntropy(z, Tensor.Zeros(3, 4)));
    }

    [Fact]
    public void KlDivergenceMatchesDefinition()
    {
        var rng = new Rng(4);
        var s = Tensor.Randn(rng, 2f, 3, 8);
        var t = Tensor.Randn(rng, 2f, 3, 8);
        foreach (float temp in new[] { 1f, 4f })
        {
            double total = 0;
            var ss = Tensor.FromArray(s.ToArray().Select(v => v / temp).ToArray(), 3, 8);
            var ts = Tensor.FromArray(t.ToArray().Select(v => v / temp).ToArray(), 3, 8);
            for (int b = 0; b < 3; b++)
            {
                var lps = LogSoftmaxRow(ss, b);
                var lpt = LogSoftmaxRow(ts, b);
                for (int j = 0; j < 8; j++) total += Math.Exp(lpt[j]) * (lpt[j] - lps[j]);
            }
            Assert.Equal(temp * temp * total / 3, Ops.KlDivergence(s, t, temp).Item(), 2e-5);
        }
        Assert.Equal(0f, Ops.KlDivergence(s, s, 2f).Item(), 1e-6f);
        Assert.True(Ops.KlDivergence(s, t, 1f).Item() > 0);
        Assert.Throws<ArgumentException>(() => Ops.KlDivergence(s, t, 0f));
        Assert.Throws<ArgumentException>(() => Ops.KlDivergence(s, Tensor.Zeros(3, 7), 1f));
    }

    [Fact]
    public void KlDivergenceGradientsMatchFiniteDifferencesForStudentAndTeacher()
    {
        var rng = new Rng(5);
        GradCheck.Check(v => Ops.KlDivergence(v[0], v[1], 1f), new[] { GradCheck.Rand(rng, 3, 6), GradCheck.Rand(rng, 3, 6) });
        GradCheck.Check(v => Ops.KlDivergence(v[0], v[1], 2.5f), new[] { GradCheck.Rand(rng, 2, 9), GradCheck.Rand(rng, 2, 9) });
        // teacher frozen (the usual distillation setting)
        GradCheck.Check(v => Ops.KlDivergence(v[0], v[1], 3f), new[] { GradCheck.Rand(rng, 4, 5), Tensor.Randn(rng, 1f, 4, 5) });
    }

    [Fact]
    public void CosineSimilarityForwardOverEachAxis()
    {
        var rng = new Rng(6);
        var a = Tensor.Randn(rng, 1f, 3, 4, 5);
        var b = Tensor.Randn(rng, 1f, 3, 4, 5);
        for (int axis = 0; axis < 3; axis++)
        {
            var y = Ops.CosineSimilarity(a, b, axis);
            Assert.Equal(a.Shape.Where((_, i) => i != axis).ToArray(), y.Shape);
            var st = Tensor.Strides(a.Shape);
            int outIdx = 0;
            for (int flat = 0; flat < a.Size; flat++)
            {
                if (flat / st[axis] % a.Shape[axis] != 0) continue; // first element of each fibre, in row-major order
                double dot = 0, na = 0, nb = 0;
                for (int j = 0; j < a.Shape[axis]; j++)
                {
                    double av = a.Data[flat + j * st[axis]], bv = b.Data[flat + j * st[axis]];
                    dot += av * bv; na += av * av; nb += bv * bv;
                }
                Assert.Equal(dot / Math.Sqrt(na * nb), y.Data[outIdx++], 1e-6);
            }
            Assert.Equal(y.Size, outIdx);
        }
        Assert.Equal(1f, Ops.CosineSimilarity(a, Ops.Mul(a, 3f)).Data[0], 1e-6f);
        Assert.Throws<ArgumentException>(() => Ops.CosineSimilarity(a, Tensor.Zeros(3, 4, 6)));
    }

    [Fact]
    public void CosineSimilarityClampsEachNormAtEpsLikePyTorch113()
    {
        // Values checked against torch 1.13.1: F.cosine_similarity([1e-9, 2e-9, 0], [3, 1, 2], eps=1e-8)
        // = 0.1336 (each norm clamped separately: 5e-9 / (1e-8·√14)), gradient ≈ [7.884e7, 2.405e7, 5.345e7].
        var a = Tensor.FromArray(new float[] { 1e-9f, 2e-9f, 0f, 0f, 0f, 0f }, 2, 3).RequireGrad();
        var b = Tensor.FromArray(new float[] { 3f, 1f, 2f, 1f, 2f, 3f }, 2, 3).RequireGrad();
        var y = Ops.CosineSimilarity(a, b, 1, 1e-8f);
        Assert.Equal(5e-9 / (1e-8 * Math.Sqrt(14)), y.Data[0], 1e-6);
        Assert.Equal(0f, y.Data[1]); // a zero vector gives 0, not NaN
        Ops.Sum(y).Backward();
        double[] ga = { 7.8842e7, 2.4054e7, 5.3452e7, 2.6726e7, 5.3452e7, 8.0178e7 };
        for (int i = 0; i < 6; i++) Assert.Equal(ga[i], a.Grad!.Data[i], ga[i] * 1e-4);
        for (int i = 3; i < 6; i++) Assert.Equal(0f, b.Grad!.Data[i]);
    }

    [Fact]
    public void CosineSimilarityGradientsMatchFiniteDifferences()
    {
        var rng = new Rng(7);
        GradCheck.Check(v => Ops.CosineSimilarity(v[0], v[1]), new[] { GradCheck.Rand(rng, 4, 9), GradCheck.Rand(rng, 4, 9) }, h: 1e-3);
        GradCheck.Check(v => Ops.CosineSimilarity(v[0], v[1], 1), new[] { GradCheck.Rand(rng, 2, 5, 3), GradCheck.Rand(rng, 2, 5, 3) }, h: 1e-3);
        GradCheck.Check(v => Ops.CosineSimilarity(v[0], v[1], 0), new[] { GradCheck.Rand(rng, 6, 2), Tensor.Randn(rng, 1f, 6, 2) }, h: 1e-3);
    }
}
