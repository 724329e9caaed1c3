// PSAQ-ViT's patch-similarity entropy (Li et al., ECCV 2022) as one fused
// autograd op per attention layer, with its double-precision reference twin.
//
//   O = attn·V per head [B, Hh, N, dh]  →  F[b, n] = mean_h O[b, h, prefix + n]   (patch features, [B, P, dh])
//   s[b, i, j] = F_i·F_j / (max(‖F_i‖, ε)·max(‖F_j‖, ε))                 (all P² pairs, ε = 1e-8, as ATen)
//   t_k = lo + k·Δ, k = 0..K−1, Δ = (hi − lo)/(K − 1), lo/hi = min/max of s over the whole batch
//         (constants: the original takes them with .item(), so no gradient flows through them)
//   p[b, k] = (1/P²) Σ_m φ((t_k − s_bm)/h)/h                             (Gaussian KDE, bandwidth h)
//   q = p + 1e-4,  e_k = −q_k·ln q_k,  E_b = Σ_k Δ(e_k + e_{k+1})/2       (trapezoid rule)
//   result = mean_b E_b   (the synthesis loss subtracts it, summed over blocks)
// Backward: ∂E/∂p_k = −(ln q_k + 1)·τ_k with trapezoid weights τ = Δ·(½, 1, …, 1, ½);
//   ∂p_k/∂s_m = φ((t_k − s_m)/h)·(t_k − s_m)/(h³·P²);
//   with G = ∂/∂s as a P×P matrix and Gs = G + Gᵀ (s is symmetric in its two arguments),
//   ∂/∂F_i = (1/n_i)·(Σ_j Gs_ij·F̂_j − (Σ_j Gs_ij·s_ij)·F̂_i),  F̂ = F/n;  then ∂/∂O[b, h] = ∂/∂F / Hh.
// Images are independent, so the work runs in parallel over b with per-image results combined in order.
// s is symmetric, so the kernel runs on each pair once (the P(P − 1)/2 above the diagonal weighted 2, the P on
// it 1): half the exponentials of all P² (vit_fmnist: 39 of a 188 ms PSAQ iteration were this op).
// The P²·K kernel evaluations dominate on large maps (Swin's first stage: P = 256, 655k per image and layer,
// forward and backward again), so they run in one vectorised double pass over the pairs with all K points per
// load (Vector256.Exp, several times the scalar Math.Exp loop); the ∂/∂F pass and the similarities use the
// features in double, vectorised over the feature width. Reference() is the literal scalar twin.
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>PSAQ-ViT's differential entropy of the patch-similarity distribution of one attention layer.</summary>
internal static class PatchSimilarityEntropy
{
    /// <summary>PSAQ-ViT's KDE bandwidth.</summary>
    public const float DefaultBandwidth = 0.01f;

    /// <summary>PSAQ-ViT's number of evaluation points.</summary>
    public const int DefaultPoints = 10;

    /// <summary>Added to the density before the logarithm (PSAQ-ViT's differential_entropy).</summary>
    public const double DensityEps = 1e-4;

    private const double CosEps = 1e-8;

    /// <summary>
    /// Floor of the kernel's exponent. Why: the vectorised exp leaves its fast path for arguments whose result
    /// underflows, and with PSAQ's narrow bandwidth most of the P²·K kernel values do; exp(−700) ≈ 1e−304
    /// changes no sum it joins.
    /// </summary>
    private const double ExpFloor = -700;

    /// <summary>
    /// Mean over images of the differential entropy (file header) of the cosine similarities between all
    /// patch-feature pairs, from per-head attention outputs [B, H, N, dh] with <paramref name="prefixTokens"/>
    /// leading tokens dropped. Differentiable in the attention output; returns shape [].
    /// <paramref name="range"/> fixes the evaluation interval instead of the similarities' min and max
    /// (either way it is a constant of the gradient). Throws ArgumentException for a non-4-D input, fewer
    /// than 1 patch token, points &lt; 2, a bandwidth that is not positive and finite, or a range with lo &gt; hi.
    /// </summary>
    public static Tensor Entropy(Tensor attnOut, int prefixTokens, float bandwidth = DefaultBandwidth, int points = DefaultPoints,
        (float Lo, float Hi)? range = null)
    {
        if (range is { } rg && !(rg.Lo <= rg.Hi)) throw new ArgumentException($"patch similarity entropy: range [{rg.Lo}, {rg.Hi}] is empty");
        var g = Layout.Of(attnOut, prefixTokens, bandwidth, points);
        int B = g.B, P = g.P, D = g.D, M = P * P;
        var feats = MeanPatchFeatures(attnOut.Data, g);            // [B, P, D]
        var norms = new double[B * P];
        var sims = new double[B * M];                               // [B, P, P]
        Parallelism.For(0, B, b => Similarities(feats, norms, sims, g, b));
        double lo, hi;
        if (range is { } fixedRange) (lo, hi) = (fixedRange.Lo, fixedRange.Hi);
        else (lo, hi) = (TensorPrimitives.Min<double>(sims), TensorPrimitives.Max<double>(sims));
        double delta = (hi - lo) / (points - 1);
        var t = new double[points];
        for (int k = 0; k < points; k++) t[k] = lo + k * delta;
        var dens = new double[B * points];
        var ent = new double[B];
        // s is symmetric (s_ij and s_ji are the same double), so the kernel runs on each pair once: the P(P − 1)/2
        // values above the diagonal count twice, the P on it once.
        int T = P * (P - 1) / 2;
        var upper = new double[B * T];
        var diag = new double[B * P];
        Parallelism.For(0, B, b =>
        {
            var sb = sims.AsSpan(b * M, M);
            int at = b * T;
            for (int i = 0; i < P; i++)
            {
                diag[b * P + i] = sb[i * P + i];
                sb.Slice(i * P + i + 1, P - i - 1).CopyTo(upper.AsSpan(at));
                at += P - i - 1;
            }
            var pb = dens.AsSpan(b * points, points);
            Density(upper.AsSpan(b * T, T), diag.AsSpan(b * P, P), M, t, bandwidth, pb);
            double e = 0;
            for (int k = 0; k + 1 < points; k++) e += delta * (Term(pb[k]) + Term(pb[k + 1])) / 2;
            ent[b] = e;
        });
        double total = 0;
        foreach (double e in ent) total += e;
        var y = new Tensor(new[] { (float)(total / B) });
        if (!Autograd.Needs(attnOut)) return y;
        return Autograd.Record("patch_similarity_entropy", y, new[] { attnOut }, gOut =>
        {
            double up = gOut.Data[0] / B;
            attnOut.GradSpan();
            float[] gx = attnOut.Grad!.Data;
            Parallelism.For(0, B, b =>
            {
                // ∂/∂p_k for this image
                var gp = new double[points];
                for (int k = 0; k < points; k++)
                {
                    double tau = (k == 0 || k == points - 1) ? delta / 2 : delta;
                    gp[k] = -up * (Math.Log(dens[b * points + k] + DensityEps) + 1) * tau;
                }
                // ∂/∂s_m = dcoef·Σ_k gp_k·exp(−z²/2h²)·z, z = t_k − s_m
                var gs = new double[M];
                double inv2 = 1.0 / (2.0 * bandwidth * bandwidth), norm = 1.0 / (Math.Sqrt(2 * Math.PI) * bandwidth);
                double dcoef = norm / ((double)bandwidth * bandwidth * M);
                var sb = sims.AsSpan(b * M, M);
                for (int k = 0; k < points; k++) gp[k] *= dcoef;
                // ∂/∂s_m depends on s_m alone: each pair once, mirrored.
                var gu = new double[T];
                var gd = new double[P];
                KernelGradient(upper.AsSpan(b * T, T), t, gp, inv2, gu);
                KernelGradient(diag.AsSpan(b * P, P), t, gp, inv2, gd);
                for (int i = 0, at = 0; i < P; i++)
                {
                    gs[i * P + i] = gd[i];
                    for (int j = i + 1; j < P; j++, at++) gs[i * P + j] = gs[j * P + i] = gu[at];
                }
                // ∂/∂F through the cosine similarities, then spread over the heads.
                var fb = feats.AsSpan(b * P * D, P * D);
                var gf = new double[D];
                float invH = 1f / g.H;
                for (int i = 0; i < P; i++)
                {
                    Array.Clear(gf);
                    double ni = norms[b * P + i], diag = 0;
                    for (int j = 0; j < P; j++)
                    {
                        double gsym = gs[i * P + j] + gs[j * P + i];
                        if (gsym == 0) continue;
                        diag += gsym * sb[i * P + j];
                        TensorPrimitives.MultiplyAdd(fb.Slice(j * D, D), gsym / norms[b * P + j], gf, gf);
                    }
                    var fi = fb.Slice(i * D, D);
                    for (int d = 0; d < D; d++) gf[d] = (gf[d] - diag * fi[d] / ni) / ni;
                    for (int h = 0; h < g.H; h++)
                    {
                        int off = ((b * g.H + h) * g.N + g.Prefix + i) * D;
                        for (int d = 0; d < D; d++) gx[off + d] += (float)gf[d] * invH;
                    }
                }
            });
        });
    }

    /// <summary>Reference twin of <see cref="Entropy"/>'s forward, literally in double.</summary>
    public static double Reference(float[] attnOut, int[] shape, int prefixTokens, double bandwidth = DefaultBandwidth, int points = DefaultPoints)
    {
        int B = shape[0], H = shape[1], N = shape[2], D = shape[3], P = N - prefixTokens;
        var f = new double[B, P, D];
        for (int b = 0; b < B; b++)
            for (int n = 0; n < P; n++)
                for (int d = 0; d < D; d++)
                {
                    double s = 0;
                    for (int h = 0; h < H; h++) s += attnOut[((b * H + h) * N + prefixTokens + n) * D + d];
                    f[b, n, d] = s / H;
                }
        var sims = new double[B, P * P];
        double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < P; i++)
                for (int j = 0; j < P; j++)
                {
                    double dot = 0, ni = 0, nj = 0;
                    for (int d = 0; d < D; d++) { dot += f[b, i, d] * f[b, j, d]; ni += f[b, i, d] * f[b, i, d]; nj += f[b, j, d] * f[b, j, d]; }
                    double v = dot / (Math.Max(Math.Sqrt(ni), CosEps) * Math.Max(Math.Sqrt(nj), CosEps));
                    sims[b, i * P + j] = v;
                    lo = Math.Min(lo, v); hi = Math.Max(hi, v);
                }
        double delta = (hi - lo) / (points - 1), total = 0;
        for (int b = 0; b < B; b++)
        {
            var e = new double[points];
            for (int k = 0; k < points; k++)
            {
                double x = lo + k * delta, p = 0;
                for (int m = 0; m < P * P; m++)
                {
                    double z = (x - sims[b, m]) / bandwidth;
                    p += Math.Exp(-z * z / 2) / (Math.Sqrt(2 * Math.PI) * bandwidth);
                }
                double q = p / (P * P) + DensityEps;
                e[k] = -q * Math.Log(q);
            }
            for (int k = 0; k + 1 < points; k++) total += delta * (e[k] + e[k + 1]) / 2;
        }
        return total / B;
    }

    private static double Term(double p)
    {
        double q = p + DensityEps;
        return -q * Math.Log(q);
    }

    /// <summary>
    /// KDE at the points t of the <paramref name="pairs"/> similarities given as the values above the diagonal
    /// (each counted twice) and on it (once), in double.
    /// </summary>
    private static void Density(ReadOnlySpan<double> upper, ReadOnlySpan<double> diag, int pairs, double[] t, float bandwidth, Span<double> p)
    {
        double inv2 = 1.0 / (2.0 * bandwidth * bandwidth), norm = 1.0 / (Math.Sqrt(2 * Math.PI) * bandwidth * pairs);
        int K = t.Length;
        Span<double> pd = stackalloc double[K];
        KernelSums(upper, t, inv2, p);
        KernelSums(diag, t, inv2, pd);
        for (int k = 0; k < K; k++) p[k] = (2 * p[k] + pd[k]) * norm;
    }

    /// <summary>p[k] = Σ_m exp(−(t_k − s_m)²·inv2) (the exponent floored at ExpFloor).</summary>
    private static void KernelSums(ReadOnlySpan<double> s, double[] t, double inv2, Span<double> p)
    {
        int K = t.Length, m = 0;
        p.Clear();
        if (Vector256.IsHardwareAccelerated)
        {
            var acc = new Vector256<double>[K];
            var vi = Vector256.Create(-inv2);
            ref double s0 = ref MemoryMarshal.GetReference(s);
            for (; m + 4 <= s.Length; m += 4)
            {
                var v = Vector256.LoadUnsafe(ref s0, (nuint)m);
                for (int k = 0; k < K; k++)
                {
                    var z = Vector256.Create(t[k]) - v;
                    acc[k] += Vector256.Exp(Vector256.Max(z * z * vi, Vector256.Create(ExpFloor)));
                }
            }
            for (int k = 0; k < K; k++) p[k] = Vector256.Sum(acc[k]);
        }
        for (; m < s.Length; m++)
            for (int k = 0; k < K; k++)
            {
                double z = t[k] - s[m];
                p[k] += Math.Exp(Math.Max(-z * z * inv2, ExpFloor));
            }
    }

    /// <summary>g[m] = Σ_k c_k·exp(−z²·inv2)·z with z = t_k − s[m] (the exponent floored as in Density).</summary>
    private static void KernelGradient(ReadOnlySpan<double> s, double[] t, double[] c, double inv2, Span<double> g)
    {
        int K = t.Length, m = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vi = Vector256.Create(-inv2);
            ref double s0 = ref MemoryMarshal.GetReference(s);
            ref double g0 = ref MemoryMarshal.GetReference(g);
            for (; m + 4 <= s.Length; m += 4)
            {
                var v = Vector256.LoadUnsafe(ref s0, (nuint)m);
                var acc = Vector256<double>.Zero;
                for (int k = 0; k < K; k++)
                {
                    var z = Vector256.Create(t[k]) - v;
                    acc += Vector256.Create(c[k]) * Vector256.Exp(Vector256.Max(z * z * vi, Vector256.Create(ExpFloor))) * z;
                }
                acc.StoreUnsafe(ref g0, (nuint)m);
            }
        }
        for (; m < s.Length; m++)
        {
            double acc = 0;
            for (int k = 0; k < K; k++)
            {
                double z = t[k] - s[m];
                acc += c[k] * Math.Exp(Math.Max(-z * z * inv2, ExpFloor)) * z;
            }
            g[m] = acc;
        }
    }

    /// <summary>Patch features averaged over heads, [B, P, D], in double.</summary>
    private static double[] MeanPatchFeatures(float[] o, Layout g)
    {
        var f = new double[g.B * g.P * g.D];
        double invH = 1.0 / g.H;
        Parallelism.For(0, g.B, b =>
        {
            var dst = f.AsSpan(b * g.P * g.D, g.P * g.D);
            var sum = new float[g.P * g.D];
            for (int h = 0; h < g.H; h++)
                TensorPrimitives.Add(sum, o.AsSpan(((b * g.H + h) * g.N + g.Prefix) * g.D, g.P * g.D), sum);
            for (int i = 0; i < sum.Length; i++) dst[i] = sum[i] * invH;
        });
        return f;
    }

    private static void Similarities(double[] feats, double[] norms, double[] sims, Layout g, int b)
    {
        int P = g.P, D = g.D;
        var fb = feats.AsSpan(b * P * D, P * D);
        for (int i = 0; i < P; i++) norms[b * P + i] = Math.Max(TensorPrimitives.Norm<double>(fb.Slice(i * D, D)), CosEps);
        var sb = sims.AsSpan(b * P * P, P * P);
        for (int i = 0; i < P; i++)
        {
            var fi = fb.Slice(i * D, D);
            for (int j = i; j < P; j++)
                sb[i * P + j] = sb[j * P + i] = TensorPrimitives.Dot<double>(fi, fb.Slice(j * D, D)) / (norms[b * P + i] * norms[b * P + j]);
        }
    }

    private readonly record struct Layout(int B, int H, int N, int D, int Prefix)
    {
        public int P => N - Prefix;

        public static Layout Of(Tensor o, int prefix, float bandwidth, int points)
        {
            ArgumentNullException.ThrowIfNull(o);
            if (o.Rank != 4) throw new ArgumentException($"patch similarity entropy: attention output must be [B, H, N, dh], got {Tensor.ShapeString(o.Shape)}");
            if (prefix < 0 || o.Shape[2] - prefix < 1)
                throw new ArgumentException($"patch similarity entropy: {o.Shape[2]} tokens with {prefix} prefix tokens leave no patch token");
            if (points < 2) throw new ArgumentException($"patch similarity entropy: need at least 2 evaluation points, got {points}");
            if (!(bandwidth > 0) || float.IsInfinity(bandwidth)) throw new ArgumentException($"patch similarity entropy: bandwidth must be positive and finite, got {bandwidth}");
            return new Layout(o.Shape[0], o.Shape[1], o.Shape[2], o.Shape[3], prefix);
        }
    }
}
