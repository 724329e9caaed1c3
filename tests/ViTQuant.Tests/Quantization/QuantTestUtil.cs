using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Quantization;

/// <summary>Small helpers shared by the quantizer tests.</summary>
internal static class QuantTestUtil
{
    public static Tensor T(params float[] v) => Tensor.FromArray(v, v.Length);

    /// <summary>Observes the batches and calibrates.</summary>
    public static TQ Calibrated<TQ>(TQ q, params Tensor[] batches) where TQ : Quantizer
    {
        foreach (var b in batches) q.Observe(b);
        q.Calibrate();
        return q;
    }

    /// <summary>Backpropagates Σ w·y with fixed random weights and returns w.</summary>
    public static float[] BackwardWeighted(Tensor y, ulong seed = 17)
    {
        var rng = new Rng(seed);
        var w = new float[y.Size];
        for (int i = 0; i < w.Length; i++) w[i] = rng.NextNormal();
        Ops.Sum(Ops.Mul(y, new Tensor(w, y.Shape))).Backward();
        return w;
    }

    /// <summary>|a − b| ≤ atol + rtol·max(|a|, |b|) elementwise, with the first failing index in the message.</summary>
    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double atol, double rtol, string what = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double tol = atol + rtol * Math.Max(Math.Abs(expected[i]), Math.Abs(actual[i]));
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"{what}[{i}]: expected {expected[i]:G9}, got {actual[i]:G9}");
        }
    }

    /// <summary>Bitwise equality of two float spans (NaN-aware, −0 ≠ +0 is not distinguished by Equal, so compare bits).</summary>
    public static void BitEqual(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what}[{i}]: expected {expected[i]:G9}, got {actual[i]:G9}");
    }

    /// <summary>torch.quantile-style linear interpolation, written independently of RangeSearch.</summary>
    public static double RefQuantile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = (int)Math.Ceiling(pos);
        return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
    }
}
