// Fused uniform fake quantization: one forward loop and one backward loop over spans, recorded as a
// single autograd node (faster than composing round/clamp/mul ops, and the gradient rules are explicit).
//
// Per group g (GroupLayout), with Δ = Δ_g, z = z_g and r = round(x/Δ) + z:
//     x̂ = (clamp(r, q_min, q_max) − z)·Δ                         (RangeSearch's uniform rule)
//     ∂x̂/∂x = 1 if q_min ≤ r ≤ q_max else 0                      (straight-through inside the grid,
//                                                                 PyTorch fake_quantize's mask)
//     ∂x̂/∂Δ = round(x/Δ) − x/Δ  inside,  clamp(r) − z  outside    (LSQ's step gradient; what autograd
//                                                                 gives for round_ste, as in QDrop)
// With an outlier threshold α (ADFQ's per-patch quantizer), elements with |x| > α pass through
// unchanged (x̂ = x, ∂x̂/∂x = 1, no contribution to ∂Δ).
// A learned Δ below RangeSearch.MinScale is used as MinScale and receives no gradient (a clamp).
//
// The forward runs one vector pass over each run of one group (UniformSpan); its slow twin is the
// scalar UniformParams.FakeQuant, and tests check the two bit for bit. The backward is scalar.
// Work is split in fixed chunks of Chunk elements; per-group gradient sums are kept per chunk in double
// and added in chunk order, so results do not depend on the thread count.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

internal static class FakeQuant
{
    /// <summary>Elements per work item of the parallel loops.</summary>
    public const int Chunk = 16384;

    public delegate void SegmentBody(int chunk, int start, int end, int group);

    public static int Chunks(int n) => (n + Chunk - 1) / Chunk;

    /// <summary>Runs body on every maximal run of one group inside each fixed chunk, chunks in parallel.</summary>
    public static void ForSegments(int n, GroupLayout layout, SegmentBody body)
    {
        Parallelism.For(0, Chunks(n), c =>
        {
            int start = c * Chunk, end = Math.Min(n, start + Chunk);
            int i = start;
            while (i < end)
            {
                int run = i / layout.Inner;
                int segEnd = (int)Math.Min(end, (long)(run + 1) * layout.Inner);
                body(c, i, segEnd, run % layout.Groups);
                i = segEnd;
            }
        });
    }

    /// <summary>The gradient buffer of t (allocated zero-filled on first use) as an array, for parallel loops.</summary>
    public static float[] GradData(Tensor t)
    {
        t.GradSpan();
        return t.Grad!.Data;
    }

    /// <summary>Adds per-chunk partial sums [chunks × groups] into dst[groups], chunk by chunk.</summary>
    public static void AddPartials(double[] partials, int groups, Span<float> dst)
    {
        int chunks = partials.Length / groups;
        for (int g = 0; g < groups; g++)
        {
            double s = 0;
            for (int c = 0; c < chunks; c++) s += partials[c * groups + g];
            dst[g] += (float)s;
        }
    }

    /// <summary>
    /// y = (clamp(round(x/Δ) + z, q_min, q_max) − z)·Δ over a span (y may be x), in one pass: the same IEEE
    /// operations in the same order as the reference <see cref="UniformParams.FakeQuant"/> (round half to even,
    /// a true division), so the result is bit-identical to it (tests compare the two). It replaced six
    /// TensorPrimitives passes over the span, which cost 7 % of a W4A4 simulation's evaluation.
    /// </summary>
    // The clamp is the native max and min (maxps, minps: a > b ? a : b, else the second operand, NaN included) with the
    // bound first: v < lo gives lo, v > hi gives hi, anything else (NaN, a −0 against a bound of 0) v itself, which
    // is Math.Clamp lane for lane. Vector512.Clamp is IEEE 754-2019's min and max: +0 for a −0 against 0, and on
    // AVX-512 a vrangeps and two vfixupimmps for each of the two.
    public static void UniformSpan(ReadOnlySpan<float> x, Span<float> y, float scale, float zero, float qmin, float qmax)
    {
        if (y.Length < x.Length) throw new ArgumentException($"destination holds {y.Length} elements, source {x.Length}", nameof(y));
        int n = x.Length, i = 0;
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float yr = ref MemoryMarshal.GetReference(y);
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> vs = Vector512.Create(scale), vz = Vector512.Create(zero), lo = Vector512.Create(qmin), hi = Vector512.Create(qmax);
            for (; i + 16 <= n; i += 16)
            {
                var r = Vector512.MinNative(hi, Vector512.MaxNative(lo, Vector512.Round(Vector512.LoadUnsafe(ref xr, (nuint)i) / vs) + vz));
                ((r - vz) * vs).StoreUnsafe(ref yr, (nuint)i);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> vs = Vector256.Create(scale), vz = Vector256.Create(zero), lo = Vector256.Create(qmin), hi = Vector256.Create(qmax);
            for (; i + 8 <= n; i += 8)
            {
                var r = Vector256.MinNative(hi, Vector256.MaxNative(lo, Vector256.Round(Vector256.LoadUnsafe(ref xr, (nuint)i) / vs) + vz));
                ((r - vz) * vs).StoreUnsafe(ref yr, (nuint)i);
            }
        }
        for (; i < n; i++)
            Unsafe.Add(ref yr, i) = (Math.Clamp(MathF.Round(Unsafe.Add(ref xr, i) / scale) + zero, qmin, qmax) - zero) * scale;
    }

    /// <summary>
    /// Uniform fake quantization of x with per-group steps <paramref name="scale"/> (a tensor, so it can
    /// learn) and zero points. Elements with |x| &gt; outlierThreshold stay in float; their count is
    /// returned in <paramref name="outliers"/>. Records one autograd node when x or scale needs gradients.
    /// </summary>
    public static Tensor Uniform(Tensor x, GroupLayout layout, Tensor scale, float[] zero, int qmin, int qmax,
        float outlierThreshold, out long outliers, string opName = "fake_quant")
    {
        int n = x.Size;
        var y = Tensor.OutputUninitialized(x.Shape); // an op output (every element written below): recycled with the caller's arena scope
        float[] xd = x.Data, yd = y.Data, sd = scale.Data;
        var counts = new long[Chunks(n)];
        ForSegments(n, layout, (c, start, end, g) =>
        {
            float s = RangeSearch.SafeScale(sd[g]), z = zero[g];
            var xs = xd.AsSpan(start, end - start);
            var ys = yd.AsSpan(start, end - start);
            UniformSpan(xs, ys, s, z, qmin, qmax);
            if (float.IsPositiveInfinity(outlierThreshold)) return;
            long o = 0;
            for (int i = 0; i < xs.Length; i++)
                if (MathF.Abs(xs[i]) > outlierThreshold) { ys[i] = xs[i]; o++; }
            counts[c] += o;
        });
        outliers = counts.Sum();
        if (!Autograd.Needs(x, scale)) return y;

        return Autograd.Record(opName, y, new[] { x, scale }, gy =>
        {
            float[] gd = gy.Data;
            float[]? gxd = x.RequiresGrad ? GradData(x) : null;
            bool wantScale = scale.RequiresGrad;
            var partial = wantScale ? new double[Chunks(n) * layout.Groups] : null;
            ForSegments(n, layout, (c, start, end, g) =>
            {
                float s = RangeSearch.SafeScale(sd[g]), z = zero[g];
                bool scaleClamped = !(sd[g] >= RangeSearch.MinScale);
                double acc = 0;
                for (int i = start; i < end; i++)
                {
                    float v = xd[i];
                    if (MathF.Abs(v) > outlierThreshold)
                    {
                        if (gxd != null) gxd[i] += gd[i];
                        continue;
                    }
                    float u = v / s, r = MathF.Round(u), q = r + z;
                    if (q >= qmin && q <= qmax)
                    {
                        if (gxd != null) gxd[i] += gd[i];
                        acc += gd[i] * (double)(r - u);
                    }
                    else acc += gd[i] * (double)(Math.Clamp(q, qmin, qmax) - z);
                }
                if (partial != null && !scaleClamped) partial[c * layout.Groups + g] += acc;
            });
            if (partial != null) AddPartials(partial, layout.Groups, scale.GradSpan());
        });
    }
}

/// <summary>Validation helpers shared by the quantizers' LoadState.</summary>
internal static class QuantState
{
    /// <summary>Throws ViTQuantException unless the state has exactly these names.</summary>
    public static void ExpectNames(IReadOnlyDictionary<string, Tensor> state, QuantSpec spec, params string[] names)
    {
        ArgumentNullException.ThrowIfNull(state);
        foreach (var name in names)
            if (!state.ContainsKey(name)) throw new ViTQuantException($"{spec} quantizer state is missing '{name}'");
        foreach (var key in state.Keys)
            if (Array.IndexOf(names, key) < 0) throw new ViTQuantException($"{spec} quantizer state has an unexpected entry '{key}'");
    }

    /// <summary>The named tensor, checked to have the given number of elements (and to be 1-D unless size is 1).</summary>
    public static Tensor Get(IReadOnlyDictionary<string, Tensor> state, QuantSpec spec, string name, int size)
    {
        var t = state[name];
        if (t.Size != size) throw new ViTQuantException($"{spec} quantizer state '{name}' has shape {Tensor.ShapeString(t.Shape)}, expected {size} element(s)");
        foreach (float v in t.Span)
            if (!float.IsFinite(v)) throw new ViTQuantException($"{spec} quantizer state '{name}' holds a non-finite value");
        return t;
    }

    /// <summary>A 1-D state tensor from values (copied).</summary>
    public static Tensor Vector(ReadOnlySpan<float> values) => Tensor.FromArray(values, values.Length);

    /// <summary>Copies src into dst when dst exists with the same shape (keeping the tensor an optimiser may hold), else returns a fresh copy.</summary>
    public static Tensor Assign(Tensor? dst, Tensor src, bool requiresGrad)
    {
        if (dst != null && dst.Shape.AsSpan().SequenceEqual(src.Shape) && dst.IsLeaf)
        {
            src.Span.CopyTo(dst.Span);
            dst.ZeroGrad();
            return dst;
        }
        var t = new Tensor(src.Span.ToArray(), src.Shape);
        if (requiresGrad) t.RequireGrad();
        return t;
    }
}
