// Inter-head attention similarity of an image set (MimiQ, Figures 1–2): how structurally alike the
// heads' attention maps are for the same query patch.
//
// Per image b: mean over blocks l, query patches n and ordered head pairs i ≠ j of SSIM_ij, the global
// SSIM between the min–max normalised q·kᵀ rows of heads i and j (prefix tokens dropped on both axes) —
// exactly the SSIM inside MimiQ's L_IHC (InterHeadCoherence), without the 1 − x² around it. Real images
// score high; Gaussian noise and earlier synthetic sets score lower; MimiQ synthesis raises it.
// Reported: mean ± std (sample, n − 1) over images, and the same per block.
//
// Second statistic, the coherence: the same mean over SSIM_ij² — the quantity L_IHC = mean(1 − SSIM²)
// actually raises. It counts anti-aligned heads (SSIM → −1) as aligned, as the loss does, so a set can
// gain coherence without gaining signed similarity; the two are reported side by side for that reason.
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Metrics;

/// <summary>The attention-similarity statistic of an image set, overall and per block.</summary>
public sealed record AttentionSimilarityReport(
    int Count, int Blocks, int Heads, double Mean, double Std,
    IReadOnlyList<double> PerImage, IReadOnlyList<double> PerBlockMean, IReadOnlyList<double> PerBlockStd,
    double CoherenceMean, double CoherenceStd);

/// <summary>Measures how alike the heads' attention maps are for the same query patch (file header).</summary>
internal static class AttentionSimilarity
{
    /// <summary>
    /// Per image, the mean SSIM (<paramref name="squared"/>: SSIM²) over query patches and head pairs i ≠ j of
    /// one layer's logits [B, H, N, N]. Throws ArgumentException when H &lt; 2 (no pairs) or the logits are malformed.
    /// </summary>
    public static double[] LayerPerImage(Tensor logits, int prefixTokens, bool squared = false)
    {
        var (signed, sq) = LayerBoth(logits, prefixTokens);
        return squared ? sq : signed;
    }

    /// <summary>Both per-image means of <see cref="LayerPerImage"/> from one pass over the SSIM matrices.</summary>
    private static (double[] Signed, double[] Squared) LayerBoth(Tensor logits, int prefixTokens)
    {
        var ssim = InterHeadCoherence.SsimMatrices(logits, prefixTokens);
        int B = logits.Shape[0], H = logits.Shape[1], P = logits.Shape[2] - prefixTokens;
        if (H < 2) throw new ArgumentException($"attention similarity needs at least 2 heads, the logits have {H}");
        var signed = new double[B];
        var squared = new double[B];
        int h2 = H * H;
        double pairs = (double)P * H * (H - 1);
        for (int b = 0; b < B; b++)
        {
            double s = 0, s2 = 0;
            for (int n = 0; n < P; n++)
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < H; j++)
                        if (i != j)
                        {
                            double v = ssim[(long)(b * P + n) * h2 + i * H + j];
                            s += v;
                            s2 += v * v;
                        }
            signed[b] = s / pairs;
            squared[b] = s2 / pairs;
        }
        return (signed, squared);
    }

    /// <summary>
    /// Runs the model (no gradients) over normalised image batches [B, C, H, W] and returns the statistic.
    /// progress(images so far) is called after each batch. Throws ViTQuantException for a model with one
    /// head or an empty input.
    /// </summary>
    public static AttentionSimilarityReport Measure(VisionTransformer model, IEnumerable<Tensor> batches, Action<int>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        var c = model.Config;
        if (c.NumHeads < 2) throw new ViTQuantException($"attention similarity needs a model with at least 2 heads; {c.Architecture} has {c.NumHeads}");
        var perBlock = new List<double>[c.Depth];
        for (int l = 0; l < c.Depth; l++) perBlock[l] = new List<double>();
        var perImage = new List<double>();
        var coherence = new List<double>();
        using var noGrad = Autograd.NoGrad();
        foreach (var x in batches)
        {
            using var arena = TensorArena.Scope();
            var rec = new TapRecorder(n => n.EndsWith(".attn.logits", StringComparison.Ordinal));
            model.Forward(x, rec);
            var taps = Synthesis.BlockTaps(rec, c.Depth, "attn.logits");
            int B = x.Shape[0];
            var sum = new double[B];
            var sumSq = new double[B];
            for (int l = 0; l < c.Depth; l++)
            {
                var (v, v2) = LayerBoth(taps[l], c.NumPrefixTokens);
                perBlock[l].AddRange(v);
                for (int b = 0; b < B; b++) { sum[b] += v[b]; sumSq[b] += v2[b]; }
            }
            foreach (double s in sum) perImage.Add(s / c.Depth);
            foreach (double s in sumSq) coherence.Add(s / c.Depth);
            progress?.Invoke(perImage.Count);
        }
        if (perImage.Count == 0) throw new ViTQuantException("attention similarity: the image set is empty");
        var (mean, std) = MeanStd(perImage);
        var bm = new double[c.Depth];
        var bs = new double[c.Depth];
        for (int l = 0; l < c.Depth; l++) (bm[l], bs[l]) = MeanStd(perBlock[l]);
        var (cm, cs) = MeanStd(coherence);
        return new AttentionSimilarityReport(perImage.Count, c.Depth, c.NumHeads, mean, std, perImage, bm, bs, cm, cs);
    }

    /// <summary>
    /// Per-head attention maps for one block and one query token: [n, H, P] values, each head's
    /// q·kᵀ row over the patch keys min–max normalised to [0, 1] (the maps the statistic compares).
    /// <paramref name="queryToken"/> indexes the full token sequence (0 is the class token when there is one).
    /// Throws ArgumentOutOfRangeException for a bad block or token index.
    /// </summary>
    public static float[] HeadMaps(VisionTransformer model, Tensor images, int block, int queryToken)
    {
        var c = model.Config;
        if ((uint)block >= (uint)c.Depth) throw new ArgumentOutOfRangeException(nameof(block), $"block {block} is outside [0, {c.Depth})");
        if ((uint)queryToken >= (uint)c.NumTokens) throw new ArgumentOutOfRangeException(nameof(queryToken), $"query token {queryToken} is outside [0, {c.NumTokens})");
        string name = $"blocks.{block}.attn.logits";
        using var noGrad = Autograd.NoGrad();
        using var arena = TensorArena.Scope();
        var rec = new TapRecorder(n => n == name);
        model.Forward(images, rec);
        var s = rec.Taps[name];
        int B = s.Shape[0], H = s.Shape[1], N = s.Shape[2], pre = c.NumPrefixTokens, P = N - pre;
        var maps = new float[B * H * P];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
            {
                var row = s.Data.AsSpan(((b * H + h) * N + queryToken) * N + pre, P);
                float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
                foreach (float v in row) { lo = Math.Min(lo, v); hi = Math.Max(hi, v); }
                var dst = maps.AsSpan((b * H + h) * P, P);
                for (int k = 0; k < P; k++) dst[k] = (float)((row[k] - lo) / (hi - lo + InterHeadCoherence.NormEps));
            }
        return maps;
    }

    /// <summary>Mean and sample standard deviation (0 for a single value).</summary>
    public static (double Mean, double Std) MeanStd(IReadOnlyList<double> v)
    {
        double m = 0;
        foreach (double x in v) m += x;
        m /= v.Count;
        if (v.Count < 2) return (m, 0);
        double ss = 0;
        foreach (double x in v) ss += (x - m) * (x - m);
        return (m, Math.Sqrt(ss / (v.Count - 1)));
    }
}
