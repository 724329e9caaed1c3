// MimiQ's head-wise structural attention distillation L_HAD (MimiQ paper) and its ablation
// distances, one fused autograd op per block.
//
// Input per block: the per-head attention output O = attn·V of the student and of the teacher,
// [B, Hh, N, dh] (B images, Hh heads, N tokens, dh channels per head). The first P = prefix tokens
// (class / distillation token) are dropped; the remaining Np positions of every column (b, h, c) form a
// signal: s (student) and t (teacher). With population statistics over those Np positions
//     μ_t = Σt/Np,  var_t = Σ(t−μ_t)²/Np,  cov = Σ(t−μ_t)(s−μ_s)/Np,  D = var_t + var_s + C2
//     ssim = (2·cov + C2) / D,   C2 = 0.03²
//     ∂ssim/∂s_n = 2/(Np·D) · ((t_n − μ_t) − ssim·(s_n − μ_s))     (and symmetrically for t)
// (the mean terms drop out because Σ(t_n − μ_t) = Σ(s_n − μ_s) = 0).
// Per block the op returns
//     Ssim  1 − mean over (b, h, c) of ssim
//     Mse   mean over (b, h, n ≥ P, c) of (s − t)²            ∂/∂s = 2(s − t)/count
//     L1    mean over (b, h, n ≥ P, c) of |s − t|             ∂/∂s = sign(s − t)/count
//     Kl    mean over (b, h, c) of KL(p_t ‖ p_s), p = softmax over the Np positions
//           ∂/∂s = (p_s − p_t)/count,  ∂/∂t = p_t ⊙ (a − Σ p_t a)/count,  a = log p_t − log p_s
// and L_HAD is the mean of the blocks' values; on a ViT every block has the same number of columns, so for
// Ssim that is exactly 1 − mean over (l, b, h, c) of ssim.
// Swin: a block's attn·V is [B·nW, Hh, M², dh], one row per window, and no prefix: the signals are the
// M² positions of one window, i.e. L_HAD per window (mimiq.md), each block's mean counting once. Statistics are accumulated in double; gradients
// flow to both inputs (the trainer passes a teacher without gradient).
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Qat;

/// <summary>The distance L_HAD uses between student and teacher attention outputs (Ssim is MimiQ's; the rest are ablations).</summary>
public enum HadDistance
{
    /// <summary>1 − structural similarity over patch positions per (b, h, c) (MimiQ).</summary>
    Ssim,
    /// <summary>Mean squared error over all patch-position elements.</summary>
    Mse,
    /// <summary>Mean absolute error over all patch-position elements.</summary>
    L1,
    /// <summary>KL(teacher ‖ student) of the softmax over patch positions, per (b, h, c).</summary>
    Kl,
    /// <summary>No attention distillation (L_HAD = 0).</summary>
    Off,
}

/// <summary>Head-wise attention distillation loss L_HAD (file header).</summary>
internal static class HeadAttentionDistillation
{
    /// <summary>The SSIM stabiliser C2 = 0.03².</summary>
    public const double C2 = 0.03 * 0.03;

    /// <summary>The model tap holding block <paramref name="block"/>'s per-head attn·V, [B, Hh, N, dh].</summary>
    public static string TapName(int block) => $"blocks.{block}.attn.out";

    /// <summary>True for the attn·V tap of any block (ViT's blocks.{i}.attn.out, Swin's layers.{s}.blocks.{b}.attn.out).</summary>
    public static bool IsTap(string name) => name.EndsWith(".attn.out", StringComparison.Ordinal) && name.Contains("blocks.", StringComparison.Ordinal);

    /// <summary>
    /// L_HAD over all blocks: the mean of <see cref="BlockLoss"/> over the paired lists (index = block).
    /// <see cref="HadDistance.Off"/> returns a constant 0. Throws ArgumentException when the lists are
    /// empty or of different lengths, or as BlockLoss.
    /// </summary>
    public static Tensor Loss(IReadOnlyList<Tensor> student, IReadOnlyList<Tensor> teacher, int prefixTokens, HadDistance distance)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        if (distance == HadDistance.Off) return Tensor.Scalar(0f);
        if (student.Count == 0 || student.Count != teacher.Count)
            throw new ArgumentException($"L_HAD needs one student and one teacher tensor per block, got {student.Count} and {teacher.Count}");
        Tensor total = BlockLoss(student[0], teacher[0], prefixTokens, distance);
        for (int l = 1; l < student.Count; l++) total = Ops.Add(total, BlockLoss(student[l], teacher[l], prefixTokens, distance));
        return student.Count == 1 ? total : Ops.Scale(total, 1f / student.Count);
    }

    /// <summary>
    /// One block's distance between student and teacher attention outputs [B, Hh, N, dh] over the patch
    /// positions n ≥ <paramref name="prefixTokens"/> (file header), as a one-element tensor with a fused
    /// backward. Throws ArgumentException when the shapes differ or are not rank 4, when no patch
    /// position remains, or for <see cref="HadDistance.Off"/>.
    /// </summary>
    public static Tensor BlockLoss(Tensor student, Tensor teacher, int prefixTokens, HadDistance distance)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        if (student.Rank != 4 || !student.Shape.AsSpan().SequenceEqual(teacher.Shape))
            throw new ArgumentException($"L_HAD needs two [B, H, N, dh] tensors of one shape, got {Tensor.ShapeString(student.Shape)} and {Tensor.ShapeString(teacher.Shape)}");
        if (prefixTokens < 0 || prefixTokens >= student.Shape[2])
            throw new ArgumentException($"L_HAD: {prefixTokens} prefix token(s) leave no patch position of {student.Shape[2]} tokens");
        var g = new Geometry(student.Shape, prefixTokens);
        return distance switch
        {
            HadDistance.Ssim => Ssim(student, teacher, g),
            HadDistance.Mse => Elementwise(student, teacher, g, l1: false),
            HadDistance.L1 => Elementwise(student, teacher, g, l1: true),
            HadDistance.Kl => KlOverPositions(student, teacher, g),
            _ => throw new ArgumentException($"L_HAD distance {distance} has no block loss", nameof(distance)),
        };
    }

    /// <summary>Layout of one block: Pairs = B·Hh (b, h) planes of N×Dh values, patches from row P on.</summary>
    private readonly record struct Geometry(int Pairs, int N, int Dh, int P)
    {
        public Geometry(int[] shape, int prefix) : this(shape[0] * shape[1], shape[2], shape[3], prefix) { }

        public int Np => N - P;

        /// <summary>Offset of patch row n (0-based among the patches) of pair q.</summary>
        public int Row(int q, int n) => (q * N + P + n) * Dh;

        /// <summary>Columns (b, h, c) averaged over by the per-column distances.</summary>
        public int Columns => Pairs * Dh;
    }

    private static Tensor Ssim(Tensor s, Tensor t, Geometry g)
    {
        int cols = g.Columns, np = g.Np, dh = g.Dh;
        // Per column: the means, the SSIM value and 2/(Np·D), kept for the backward.
        var muS = new double[cols];
        var muT = new double[cols];
        var ssim = new double[cols];
        var k = new double[cols];
        float[] sd = s.Data, td = t.Data;
        Parallelism.For(0, g.Pairs, q =>
        {
            int c0 = q * dh;
            for (int n = 0; n < np; n++)
            {
                int r = g.Row(q, n);
                for (int c = 0; c < dh; c++) { muS[c0 + c] += sd[r + c]; muT[c0 + c] += td[r + c]; }
            }
            for (int c = 0; c < dh; c++) { muS[c0 + c] /= np; muT[c0 + c] /= np; }
            var vs = new double[dh];
            var vt = new double[dh];
            var cv = new double[dh];
            for (int n = 0; n < np; n++)
            {
                int r = g.Row(q, n);
                for (int c = 0; c < dh; c++)
                {
                    double a = sd[r + c] - muS[c0 + c], b = td[r + c] - muT[c0 + c];
                    vs[c] += a * a; vt[c] += b * b; cv[c] += a * b;
                }
            }
            for (int c = 0; c < dh; c++)
            {
                double d = (vt[c] + vs[c]) / np + C2;
                ssim[c0 + c] = (2 * cv[c] / np + C2) / d;
                k[c0 + c] = 2 / (np * d);
            }
        });
        double sum = 0;
        foreach (double v in ssim) sum += v; // sequential: the same value whatever the thread count
        var y = Tensor.Scalar((float)(1 - sum / cols));
        if (!Autograd.Needs(s, t)) return y;
        return Autograd.Record("had_ssim", y, new[] { s, t }, gy =>
        {
            double scale = -gy.Data[0] / (double)cols; // ∂(1 − mean ssim)
            float[]? gsd = GradData(s), gtd = GradData(t);
            Parallelism.For(0, g.Pairs, q =>
            {
                int c0 = q * dh;
                for (int n = 0; n < np; n++)
                {
                    int r = g.Row(q, n);
                    for (int c = 0; c < dh; c++)
                    {
                        int j = c0 + c;
                        double a = sd[r + c] - muS[j], b = td[r + c] - muT[j], f = scale * k[j];
                        if (gsd != null) gsd[r + c] += (float)(f * (b - ssim[j] * a));
                        if (gtd != null) gtd[r + c] += (float)(f * (a - ssim[j] * b));
                    }
                }
            });
        });
    }

    private static Tensor Elementwise(Tensor s, Tensor t, Geometry g, bool l1)
    {
        int np = g.Np, dh = g.Dh, rowLen = np * dh;
        long count = (long)g.Pairs * rowLen;
        var partial = new double[g.Pairs];
        float[] sd = s.Data, td = t.Data;
        Parallelism.For(0, g.Pairs, q =>
        {
            int r0 = g.Row(q, 0);
            double acc = 0;
            for (int i = r0; i < r0 + rowLen; i++)
            {
                double d = (double)sd[i] - td[i];
                acc += l1 ? Math.Abs(d) : d * d;
            }
            partial[q] = acc;
        });
        double sum = 0;
        foreach (double v in partial) sum += v;
        var y = Tensor.Scalar((float)(sum / count));
        if (!Autograd.Needs(s, t)) return y;
        return Autograd.Record(l1 ? "had_l1" : "had_mse", y, new[] { s, t }, gy =>
        {
            double scale = gy.Data[0] / (double)count;
            float[]? gsd = GradData(s), gtd = GradData(t);
            Parallelism.For(0, g.Pairs, q =>
            {
                int r0 = g.Row(q, 0);
                for (int i = r0; i < r0 + rowLen; i++)
                {
                    double d = (double)sd[i] - td[i];
                    float v = (float)(scale * (l1 ? Math.Sign(d) : 2 * d));
                    if (gsd != null) gsd[i] += v;
                    if (gtd != null) gtd[i] -= v;
                }
            });
        });
    }

    private static Tensor KlOverPositions(Tensor s, Tensor t, Geometry g)
    {
        int cols = g.Columns, np = g.Np, dh = g.Dh;
        // log-softmax over positions of every column, [pairs, Np, dh] in double, kept for the backward.
        var lps = new double[cols * np];
        var lpt = new double[cols * np];
        var kl = new double[cols];
        float[] sd = s.Data, td = t.Data;
        Parallelism.For(0, g.Pairs, q =>
        {
            LogSoftmaxColumns(sd, g, q, lps);
            LogSoftmaxColumns(td, g, q, lpt);
            int b0 = q * np * dh;
            for (int n = 0; n < np; n++)
                for (int c = 0; c < dh; c++)
                {
                    int i = b0 + n * dh + c;
                    kl[q * dh + c] += Math.Exp(lpt[i]) * (lpt[i] - lps[i]);
                }
        });
        double sum = 0;
        foreach (double v in kl) sum += v;
        var y = Tensor.Scalar((float)(sum / cols));
        if (!Autograd.Needs(s, t)) return y;
        return Autograd.Record("had_kl", y, new[] { s, t }, gy =>
        {
            double scale = gy.Data[0] / (double)cols;
            float[]? gsd = GradData(s), gtd = GradData(t);
            Parallelism.For(0, g.Pairs, q =>
            {
                int b0 = q * np * dh;
                for (int n = 0; n < np; n++)
                {
                    int r = g.Row(q, n);
                    for (int c = 0; c < dh; c++)
                    {
                        int i = b0 + n * dh + c;
                        double pt = Math.Exp(lpt[i]);
                        if (gsd != null) gsd[r + c] += (float)(scale * (Math.Exp(lps[i]) - pt));
                        // Σ_n p_t·a over the column is the column's KL value.
                        if (gtd != null) gtd[r + c] += (float)(scale * pt * (lpt[i] - lps[i] - kl[q * dh + c]));
                    }
                }
            });
        });
    }

    /// <summary>log softmax over the patch positions of each of pair q's Dh columns, into dst[q·Np·Dh + n·Dh + c].</summary>
    private static void LogSoftmaxColumns(float[] x, Geometry g, int q, double[] dst)
    {
        int np = g.Np, dh = g.Dh, b0 = q * np * dh;
        var max = new double[dh];
        var sum = new double[dh];
        max.AsSpan().Fill(double.NegativeInfinity);
        for (int n = 0; n < np; n++)
        {
            int r = g.Row(q, n);
            for (int c = 0; c < dh; c++) max[c] = Math.Max(max[c], x[r + c]);
        }
        for (int n = 0; n < np; n++)
        {
            int r = g.Row(q, n);
            for (int c = 0; c < dh; c++) sum[c] += Math.Exp(x[r + c] - max[c]);
        }
        for (int c = 0; c < dh; c++) sum[c] = max[c] + Math.Log(sum[c]); // log Σ exp
        for (int n = 0; n < np; n++)
        {
            int r = g.Row(q, n);
            for (int c = 0; c < dh; c++) dst[b0 + n * dh + c] = x[r + c] - sum[c];
        }
    }

    /// <summary>The gradient buffer of x (allocated on first use) when x takes gradients, else null.</summary>
    private static float[]? GradData(Tensor x)
    {
        if (!x.RequiresGrad) return null;
        x.GradSpan();
        return x.Grad!.Data;
    }
}