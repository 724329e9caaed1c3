// The counter-based weight and image generator shared with tools/reference/make_vit_fixtures.py, so
// the parity fixtures need not store the big models. Bit-for-bit the Python definition:
//   u_j = (splitmix64(seed·2^32 + j) >> 40) · 2^-24,  r_j = 2·u_j − 1  (both exact in float32),
// j counting over all parameters in state-dict order (images: over the flattened [B, C, H, W] input),
// each value computed in double and rounded once to float:
//   LayerNorm gains 1 + 0.1·r;  other 1-D tensors, cls/dist tokens and pos_embed 0.02·r;
//   matrices and conv kernels r·sqrt(3 / fan_in) with fan_in = numel / shape[0];  images r.
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Models;

internal static class HashInit
{
    public static ulong SplitMix64(ulong x)
    {
        ulong z = x + 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>r_j = 2·u_j − 1 ∈ [−1, 1) for counter j under seed.</summary>
    public static double R(ulong seed, long j) => 2.0 * ((SplitMix64((seed << 32) + (ulong)j) >> 40) * (1.0 / (1 << 24))) - 1.0;

    /// <summary>Values of one state-dict entry whose first element has counter <paramref name="start"/>.</summary>
    public static float[] ParamValues(string name, int[] shape, ulong seed, long start)
    {
        int n = Tensor.Numel(shape);
        var v = new float[n];
        Func<double, double> map;
        if (name.EndsWith("norm.weight") || name.EndsWith("norm1.weight") || name.EndsWith("norm2.weight")) map = r => 1.0 + 0.1 * r;
        else if (name is "cls_token" or "dist_token" or "pos_embed" || shape.Length == 1) map = r => 0.02 * r;
        else
        {
            double scale = Math.Sqrt(3.0 / (n / shape[0]));
            map = r => r * scale;
        }
        for (int i = 0; i < n; i++) v[i] = (float)map(R(seed, start + i));
        return v;
    }

    /// <summary>Hashed values for every state-dict entry of the model, keyed and ordered as StateDict().</summary>
    public static Dictionary<string, Tensor> State(Module model, ulong seed)
    {
        var state = new Dictionary<string, Tensor>();
        long j = 0;
        foreach (var (name, t) in model.StateDict())
        {
            state[name] = new Tensor(ParamValues(name, t.Shape, seed, j), (int[])t.Shape.Clone());
            j += t.Size;
        }
        return state;
    }

    /// <summary>Overwrites the model's parameters with the hash (state-dict order) and returns it.</summary>
    public static VisionTransformer Apply(VisionTransformer model, ulong seed)
    {
        model.LoadStateDict(State(model, seed), strict: true);
        return model;
    }

    /// <summary>Hashed input images, flattened counter over [B, C, H, W].</summary>
    public static Tensor Images(ulong seed, params int[] shape)
    {
        var x = new Tensor(shape);
        for (int i = 0; i < x.Size; i++) x.Data[i] = (float)R(seed, i);
        return x;
    }

    /// <summary>Sum of the float32 bit patterns mod 2^64 (the fixture's per-parameter checksum).</summary>
    public static ulong BitsSum(ReadOnlySpan<float> v)
    {
        ulong s = 0;
        foreach (float f in v) s += BitConverter.SingleToUInt32Bits(f);
        return s;
    }

    /// <summary>max|ours − ref| / max(max|ref|, 1e-6), the parity metric of DESIGN.md.</summary>
    public static double RelErr(ReadOnlySpan<float> ours, ReadOnlySpan<float> reference)
    {
        Assert.Equal(reference.Length, ours.Length);
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < ours.Length; i++)
        {
            double d = Math.Abs((double)ours[i] - reference[i]);
            if (double.IsNaN(d)) return double.NaN; // fails every "≤ tol" assertion
            maxDiff = Math.Max(maxDiff, d);
            maxRef = Math.Max(maxRef, Math.Abs((double)reference[i]));
        }
        return maxDiff / Math.Max(maxRef, 1e-6);
    }
}
