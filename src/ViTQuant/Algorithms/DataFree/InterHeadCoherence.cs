// MimiQ's inter-head coherency loss L_IHC (MimiQ paper) as a fused autograd op, with the
// double-precision reference twin it is tested against.
//
//   B images, Hh heads, N tokens (Np = N − prefix patch tokens), logits S = q·kᵀ [B, Hh, N, N] unscaled.
//   For every (b, query patch n) and head h: a_h = S[b, h, prefix + n, prefix:] (length P = Np),
//     u_h = (a_h − min a_h) / (max a_h − min a_h + 1e-8)                (min–max over keys)
//     μ_h = mean u_h,  q_h = mean u_h²,  p_ij = mean u_i·u_j,  σ_h² = q_h − μ_h²,  σ_ij = p_ij − μ_i μ_j
//     SSIM_ij = A·Bn / (C·D),  A = 2μ_iμ_j + C1, Bn = 2σ_ij + C2, C = μ_i² + μ_j² + C1, D = σ_i² + σ_j² + C2
//   L = mean over (b, n, i, j), i = j included, of 1 − SSIM_ij²; a list of layers averages the layers.
//   Ablation (not the spec): the signed form 1 − SSIM_ij. The square's gradient −2·SSIM vanishes at
//   SSIM = 0, where noise-like images start, and rewards anti-aligned heads as much as aligned ones;
//   the signed form pushes with a constant force towards SSIM = +1.
// The spec views u_h as an h_p×w_p map, but a global (single-window) SSIM only uses whole-map means,
// so the grid shape never enters the arithmetic; any P works.
//
// Backward, per (b, n), with w_ij = ∂L/∂SSIM_ij = −2·SSIM_ij·ḡ/count (signed form: −ḡ/count):
//   ∂S/∂μ_i|direct = S(2μ_j/A − 2μ_i/C),  ∂S/∂σ_ij = 2S/Bn,  ∂S/∂σ_i² = ∂S/∂σ_j² = −S/D,
//   carried to the raw moments (μ, q, p) through σ_ij = p_ij − μ_iμ_j and σ_h² = q_h − μ_h², then
//   ∂/∂u_h[k] = gμ_h/P + 2·gq_h·u_h[k]/P + Σ_j (gp_hj + gp_jh)·u_j[k]/P.
//   Every ordered pair (i, j) contributes to both of its slots, which is also right for i = j.
//   Min–max: ∂u_k/∂a_k = 1/r, ∂u_k/∂min = (u_k − 1)/r, ∂u_k/∂max = −u_k/r with r = max − min + 1e-8;
//   the min/max gradient goes to the first arg-extreme, as Ops.Min/Max do.
// The statistics run in double: σ² = q − μ² cancels badly in float for near-constant maps. The op is a few
// H²·P multiply-adds per query patch, yet as scalar loops it was 23 % of a MimiQ synthesis iteration
// (vit_fmnist, batch 64, one thread: 11.6 ms per layer, fwd + bwd); the row loops now run on 4 double lanes
// (4.9 ms per layer, synthesis iteration 256 → 226 ms). Nothing is stored between forward and backward; the
// backward recomputes the statistics.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>The inter-head coherency loss of MimiQ and the per-query-patch head-pair SSIM it is built on.</summary>
internal static unsafe class InterHeadCoherence
{
    /// <summary>SSIM stabilisers of the spec (0.01², 0.03²).</summary>
    public const double C1 = 0.01 * 0.01, C2 = 0.03 * 0.03;

    /// <summary>Added to max − min in the min–max normalisation.</summary>
    public const double NormEps = 1e-8;

    /// <summary>
    /// L_IHC averaged over layers: the mean of <see cref="LayerLoss"/> over <paramref name="layerLogits"/>
    /// (on a ViT every layer has the same number of terms, so this is the mean over (l, b, n, i, j); Swin's
    /// window layers [B·nW, H, M², M²] differ in windows and heads, and each layer's mean counts once, as
    /// the spec's "averaged per layer, then over layers").
    /// Throws ArgumentException for an empty list or a tensor that <see cref="LayerLoss"/> rejects.
    /// <paramref name="batchImages"/>: as in <see cref="LayerLoss"/>.
    /// </summary>
    public static Tensor Loss(IReadOnlyList<Tensor> layerLogits, int prefixTokens, bool signed = false, int batchImages = 0)
    {
        ArgumentNullException.ThrowIfNull(layerLogits);
        if (layerLogits.Count == 0) throw new ArgumentException("inter-head coherence: no attention layers given");
        Tensor? sum = null;
        foreach (var l in layerLogits)
        {
            var term = LayerLoss(l, prefixTokens, signed, batchImages);
            sum = sum == null ? term : Ops.Add(sum, term);
        }
        return layerLogits.Count == 1 ? sum! : Ops.Scale(sum!, 1f / layerLogits.Count);
    }

    /// <summary>
    /// L_IHC of one attention layer: the mean over images, query patches and all head pairs (i = j
    /// included) of 1 − SSIM² (<paramref name="signed"/>: 1 − SSIM), from unscaled logits [B, H, N, N]
    /// with <paramref name="prefixTokens"/> leading non-patch tokens dropped on both axes. Differentiable
    /// in the logits; returns shape []. Throws ArgumentException when the logits are not [B, H, N, N] or
    /// fewer than 2 patch tokens remain. <paramref name="batchImages"/> &gt; 0: the logits are a chunk of a batch
    /// with that leading dimension, and the mean is the whole batch's (each logit's gradient is then the whole
    /// batch's, bit for bit).
    /// </summary>
    public static Tensor LayerLoss(Tensor logits, int prefixTokens, bool signed = false, int batchImages = 0)
    {
        var g = Geometry.Of(logits, prefixTokens, "inter-head coherence");
        int items = g.B * g.P;
        var partial = new double[items];
        float[] s = logits.Data;
        Parallelism.ForChunks(items, 8, (start, end) =>
        {
            var w = new Workspace(g.H, g.P);
            fixed (float* ps = s)
            for (int it = start; it < end; it++)
            {
                w.Load(ps, g, it);
                double acc = 0;
                for (int i = 0; i < g.H; i++)
                    for (int j = 0; j < g.H; j++)
                    {
                        double v = w.Ssim(i, j);
                        acc += 1 - (signed ? v : v * v);
                    }
                partial[it] = acc;
            }
        });
        double total = 0;
        foreach (double v in partial) total += v; // fixed order: the result does not depend on the thread count
        double count = (double)(batchImages > 0 ? batchImages * g.P : items) * g.H * g.H;
        var y = new Tensor(new[] { (float)(total / count) });
        if (!Autograd.Needs(logits)) return y;
        return Autograd.Record("inter_head_coherence", y, new[] { logits }, gOut =>
        {
            double scale = gOut.Data[0] / count;
            logits.GradSpan();
            float[] gs = logits.Grad!.Data;
            // Items write disjoint rows of the gradient (row prefix + n of every head of image b).
            Parallelism.ForChunks(items, 8, (start, end) =>
            {
                var w = new Workspace(g.H, g.P);
                fixed (float* ps = s, pg = gs)
                for (int it = start; it < end; it++)
                {
                    w.Load(ps, g, it);
                    w.Backward(scale, signed, pg, g, it);
                }
            });
        });
    }

    /// <summary>
    /// The head-pair SSIM matrices of one layer without the loss around them: for image b and query patch
    /// n, ssim[(b·P + n)·H² + i·H + j] = SSIM between heads i and j of the min–max normalised logits rows
    /// (P = N − prefix). Used by the attention-similarity analysis. Throws as <see cref="LayerLoss"/>.
    /// </summary>
    public static double[] SsimMatrices(Tensor logits, int prefixTokens)
    {
        var g = Geometry.Of(logits, prefixTokens, "attention similarity");
        int items = g.B * g.P, h2 = g.H * g.H;
        var result = new double[(long)items * h2];
        float[] s = logits.Data;
        Parallelism.ForChunks(items, 8, (start, end) =>
        {
            var w = new Workspace(g.H, g.P);
            fixed (float* ps = s)
            for (int it = start; it < end; it++)
            {
                w.Load(ps, g, it);
                for (int i = 0; i < g.H; i++)
                    for (int j = 0; j < g.H; j++) result[(long)it * h2 + i * g.H + j] = w.Ssim(i, j);
            }
        });
        return result;
    }

    /// <summary>
    /// Reference twin of <see cref="LayerLoss"/>'s forward: the spec's formulas evaluated literally in
    /// double (maps normalised, then μ, σ², σ_ij as means over the map for every pair separately).
    /// </summary>
    public static double ReferenceLayerLoss(float[] logits, int[] shape, int prefixTokens, bool signed = false)
    {
        int B = shape[0], H = shape[1], N = shape[2], P = N - prefixTokens;
        double sum = 0;
        var maps = new double[H][];
        for (int b = 0; b < B; b++)
            for (int n = 0; n < P; n++)
            {
                for (int h = 0; h < H; h++)
                {
                    int off = ((b * H + h) * N + prefixTokens + n) * N + prefixTokens;
                    double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
                    for (int k = 0; k < P; k++) { lo = Math.Min(lo, logits[off + k]); hi = Math.Max(hi, logits[off + k]); }
                    maps[h] = new double[P];
                    for (int k = 0; k < P; k++) maps[h][k] = (logits[off + k] - lo) / (hi - lo + NormEps);
                }
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < H; j++)
                    {
                        double v = ReferenceSsim(maps[i], maps[j]);
                        sum += 1 - (signed ? v : v * v);
                    }
            }
        return sum / ((double)B * P * H * H);
    }

    /// <summary>Global SSIM of two equally long maps, literally as the spec writes it, in double.</summary>
    public static double ReferenceSsim(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        int n = x.Length;
        double mx = 0, my = 0;
        for (int k = 0; k < n; k++) { mx += x[k]; my += y[k]; }
        mx /= n; my /= n;
        double xx = 0, yy = 0, xy = 0;
        for (int k = 0; k < n; k++) { xx += x[k] * x[k]; yy += y[k] * y[k]; xy += x[k] * y[k]; }
        double vx = xx / n - mx * mx, vy = yy / n - my * my, cxy = xy / n - mx * my;
        return (2 * mx * my + C1) * (2 * cxy + C2) / ((mx * mx + my * my + C1) * (vx + vy + C2));
    }

    /// <summary>Layout of a logits tensor: B images, H heads, N tokens, P patch tokens after the prefix.</summary>
    internal readonly record struct Geometry(int B, int H, int N, int Prefix)
    {
        public int P => N - Prefix;

        /// <summary>Offset of the patch-key part of row (b, h, query patch n).</summary>
        public int RowOffset(int b, int h, int n) => ((b * H + h) * N + Prefix + n) * N + Prefix;

        public static Geometry Of(Tensor logits, int prefix, string what)
        {
            ArgumentNullException.ThrowIfNull(logits);
            if (logits.Rank != 4 || logits.Shape[2] != logits.Shape[3])
                throw new ArgumentException($"{what}: logits must be [B, H, N, N], got {Tensor.ShapeString(logits.Shape)}");
            if (prefix < 0 || logits.Shape[2] - prefix < 2)
                throw new ArgumentException($"{what}: {logits.Shape[2]} tokens with {prefix} prefix tokens leave fewer than 2 patch tokens");
            return new Geometry(logits.Shape[0], logits.Shape[1], logits.Shape[2], prefix);
        }
    }

    /// <summary>
    /// Per-thread scratch for one (image, query patch): normalised rows and their moments. The row loops run
    /// on 4 double lanes (the rows are zero-padded to a multiple of 8, so the Gram products need no tail);
    /// only the summation order differs from a scalar loop.
    /// </summary>
    private sealed unsafe class Workspace
    {
        private readonly int _h, _p, _stride;
        private readonly double[] _uStore, _mu, _q, _pp, _r, _gmu, _gq, _gp;
        private readonly double* _u;
        private readonly int[] _argMin, _argMax;

        public Workspace(int h, int p)
        {
            _h = h; _p = p;
            _stride = (p + 7) & ~7;
            _uStore = GC.AllocateUninitializedArray<double>(h * _stride, pinned: true);
            _u = (double*)Unsafe.AsPointer(ref _uStore[0]);
            _mu = new double[h]; _q = new double[h]; _r = new double[h];
            _pp = new double[h * h];
            _gmu = new double[h]; _gq = new double[h]; _gp = new double[h * h];
            _argMin = new int[h]; _argMax = new int[h];
        }

        /// <summary>Normalises the H rows of item (b, n) = divmod(item, P) and computes μ, q and the Gram p.</summary>
        public void Load(float* s, Geometry g, int item)
        {
            int b = item / g.P, n = item % g.P, P = _p;
            for (int h = 0; h < _h; h++)
            {
                float* row = s + g.RowOffset(b, h, n);
                var (lo, hi) = ArgMinMax(row, P);
                _argMin[h] = lo; _argMax[h] = hi;
                double min = row[lo], r = row[hi] - min + NormEps;
                _r[h] = r;
                double* u = _u + h * _stride;
                var vmin = Vector256.Create(min);
                var vr = Vector256.Create(r);
                var vs = Vector256<double>.Zero;
                int k = 0;
                for (; k + 4 <= P; k += 4)
                {
                    var x = Vector128.Load(row + k);
                    var v = (Vector256.Create(Vector128.WidenLower(x), Vector128.WidenUpper(x)) - vmin) / vr;
                    v.Store(u + k);
                    vs += v;
                }
                double sum = Vector256.Sum(vs);
                for (; k < P; k++)
                {
                    double v = (row[k] - min) / r;
                    u[k] = v; sum += v;
                }
                for (; k < _stride; k++) u[k] = 0;
                _mu[h] = sum / P;
            }
            for (int i = 0; i < _h; i++)
            {
                double* ui = _u + i * _stride;
                for (int j = i; j < _h; j++)
                {
                    double* uj = _u + j * _stride;
                    var d0 = Vector256<double>.Zero;
                    var d1 = Vector256<double>.Zero;
                    for (int k = 0; k < _stride; k += 8)
                    {
                        d0 = Vector256.FusedMultiplyAdd(Vector256.Load(ui + k), Vector256.Load(uj + k), d0);
                        d1 = Vector256.FusedMultiplyAdd(Vector256.Load(ui + k + 4), Vector256.Load(uj + k + 4), d1);
                    }
                    _pp[i * _h + j] = _pp[j * _h + i] = Vector256.Sum(d0 + d1) / P;
                }
                // q from the same product as the Gram entries, so identical heads give σ_ij = σ_i² = σ_j² to
                // the bit and SSIM = 1 exactly (a separately rounded Σu² left the loss at −2e-17 there).
                _q[i] = _pp[i * _h + i];
            }
        }

        /// <summary>
        /// The first indices of the smallest and the largest of row[0..P), as the scalar scan
        /// `if (row[k] &lt; row[lo]) lo = k` finds them (NaN never wins a comparison there, and here no NaN
        /// reaches the index scan unless the row is all NaN; NaN logits poison the loss either way).
        /// </summary>
        private static (int Lo, int Hi) ArgMinMax(float* row, int P)
        {
            float min = row[0], max = row[0];
            int k = 0;
            if (P >= 8)
            {
                var vmin = Vector256.Load(row);
                var vmax = vmin;
                for (k = 8; k + 8 <= P; k += 8)
                {
                    var x = Vector256.Load(row + k);
                    vmin = Vector256.MinNative(vmin, x);
                    vmax = Vector256.MaxNative(vmax, x);
                }
                for (int l = 0; l < 8; l++)
                {
                    min = Math.Min(min, vmin.GetElement(l));
                    max = Math.Max(max, vmax.GetElement(l));
                }
            }
            for (; k < P; k++)
            {
                if (row[k] < min) min = row[k];
                if (row[k] > max) max = row[k];
            }
            return (Math.Max(FirstIndexOf(row, P, min), 0), Math.Max(FirstIndexOf(row, P, max), 0));
        }

        // The first k with row[k] == value (−1: none), eight compares at a time. The scalar scan it replaced (both
        // values in one loop) made the loss on one vit_fmnist layer at batch 64, forward and backward, 4.6–4.7 ms
        // against 3.8–3.9 now (`bench micro --threads 1`).
        private static int FirstIndexOf(float* row, int P, float value)
        {
            int k = 0;
            var v = Vector256.Create(value);
            for (; k + 8 <= P; k += 8)
            {
                uint hits = Vector256.Equals(Vector256.Load(row + k), v).ExtractMostSignificantBits();
                if (hits != 0) return k + System.Numerics.BitOperations.TrailingZeroCount(hits);
            }
            for (; k < P; k++)
                if (row[k] == value) return k;
            return -1;
        }

        public double Ssim(int i, int j)
        {
            double mi = _mu[i], mj = _mu[j];
            double a = 2 * mi * mj + C1, bn = 2 * (_pp[i * _h + j] - mi * mj) + C2;
            double c = mi * mi + mj * mj + C1, d = (_q[i] - mi * mi) + (_q[j] - mj * mj) + C2;
            return a * bn / (c * d);
        }

        /// <summary>Accumulates scale·∂Σ_ij(1 − SSIM_ij²)/∂logits (signed: 1 − SSIM_ij) for the loaded item into gs.</summary>
        public void Backward(double scale, bool signed, float* gs, Geometry g, int item)
        {
            int H = _h, P = _p;
            Array.Clear(_gmu); Array.Clear(_gq); Array.Clear(_gp);
            for (int i = 0; i < H; i++)
                for (int j = 0; j < H; j++)
                {
                    double mi = _mu[i], mj = _mu[j];
                    double a = 2 * mi * mj + C1, bn = 2 * (_pp[i * H + j] - mi * mj) + C2;
                    double c = mi * mi + mj * mj + C1, d = (_q[i] - mi * mi) + (_q[j] - mj * mj) + C2;
                    double ss = a * bn / (c * d);
                    double w = (signed ? -1 : -2 * ss) * scale; // ∂(1 − S²)/∂S (or ∂(1 − S)/∂S) times the upstream factor
                    double dSig = w * 2 * ss / bn;         // through σ_ij = p_ij − μ_i μ_j
                    double dVar = -w * ss / d;             // through σ_i² = q_i − μ_i² (and the same for j)
                    _gp[i * H + j] += dSig;
                    _gq[i] += dVar; _gq[j] += dVar;
                    _gmu[i] += w * ss * (2 * mj / a - 2 * mi / c) - dSig * mj - 2 * mi * dVar;
                    _gmu[j] += w * ss * (2 * mi / a - 2 * mj / c) - dSig * mi - 2 * mj * dVar;
                }
            int b = item / g.P, n = item % g.P;
            double* cj = stackalloc double[H];
            for (int h = 0; h < H; h++)
            {
                double* u = _u + h * _stride;
                double c0 = _gmu[h] / P, c1 = 2 * _gq[h] / P;
                for (int j = 0; j < H; j++) cj[j] = (_gp[h * H + j] + _gp[j * H + h]) / P;
                double r = _r[h];
                float* dst = gs + g.RowOffset(b, h, n);
                // ∂/∂u[k] = c0 + c1·u[k] + Σ_j cj·u_j[k], then through the min–max normalisation.
                var vc0 = Vector256.Create(c0);
                var vc1 = Vector256.Create(c1);
                var vr = Vector256.Create(r);
                var vsum = Vector256<double>.Zero;
                var vdot = Vector256<double>.Zero;
                int k = 0;
                for (; k + 4 <= P; k += 4)
                {
                    var uk = Vector256.Load(u + k);
                    var gu = Vector256.FusedMultiplyAdd(vc1, uk, vc0);
                    for (int j = 0; j < H; j++)
                        if (cj[j] != 0) gu = Vector256.FusedMultiplyAdd(Vector256.Create(cj[j]), Vector256.Load(_u + j * _stride + k), gu);
                    vsum += gu;
                    vdot = Vector256.FusedMultiplyAdd(gu, uk, vdot);
                    var q = gu / vr;
                    (Vector128.Load(dst + k) + Vector128.Narrow(q.GetLower(), q.GetUpper())).Store(dst + k);
                }
                double gsum = Vector256.Sum(vsum), gdot = Vector256.Sum(vdot);
                for (; k < P; k++)
                {
                    double gu = c0 + c1 * u[k];
                    for (int j = 0; j < H; j++) gu += cj[j] * _u[j * _stride + k];
                    gsum += gu; gdot += gu * u[k];
                    dst[k] += (float)(gu / r);
                }
                dst[_argMin[h]] += (float)((gdot - gsum) / r);
                dst[_argMax[h]] += (float)(-gdot / r);
            }
        }
    }
}
