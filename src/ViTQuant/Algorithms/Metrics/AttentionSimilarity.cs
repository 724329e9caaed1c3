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
    /// progress(images so far) is called after each batch. Swin: each block's logits are per window
    /// [B·nW, H, M², M²]; an image's value for the block is the mean over its windows (so, as on a ViT, the mean
    /// over query patches and head pairs, each query compared within its window), and Heads is the fewest heads
    /// of any block. Throws ViTQuantException for a block with one head or an empty input.
    /// </summary>
    public static AttentionSimilarityReport Measure(VisionModel model, IEnumerable<Tensor> batches, Action<int>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        var c = model.Config;
        int depth = c.BlockPrefixes().Count, heads = MinHeads(c);
        if (heads < 2) throw new ViTQuantException($"attention similarity needs a model with at least 2 heads in every block; {c.Architecture} has a block with {heads}");
        var perBlock = new List<double>[depth];
        for (int l = 0; l < depth; l++) perBlock[l] = new List<double>();
        var perImage = new List<double>();
        var coherence = new List<double>();
        using var noGrad = Autograd.NoGrad();
        foreach (var x in batches)
        {
            using var arena = TensorArena.Scope();
            var rec = new TapRecorder(n => n.EndsWith(".attn.logits", StringComparison.Ordinal));
            model.Forward(x, rec);
            var taps = Synthesis.BlockTaps(rec, c, "attn.logits");
            int B = x.Shape[0];
            var sum = new double[B];
            var sumSq = new double[B];
            for (int l = 0; l < depth; l++)
            {
                var (v, v2) = LayerBoth(taps[l], c.NumPrefixTokens);
                // per window → per image (a ViT has one "window" per image)
                int w = v.Length / B;
                for (int b = 0; b < B; b++)
                {
                    double s1 = 0, s2 = 0;
                    for (int k = 0; k < w; k++) { s1 += v[b * w + k]; s2 += v2[b * w + k]; }
                    perBlock[l].Add(s1 / w);
                    sum[b] += s1 / w;
                    sumSq[b] += s2 / w;
                }
            }
            foreach (double s in sum) perImage.Add(s / depth);
            foreach (double s in sumSq) coherence.Add(s / depth);
            progress?.Invoke(perImage.Count);
        }
        if (perImage.Count == 0) throw new ViTQuantException("attention similarity: the image set is empty");
        var (mean, std) = MeanStd(perImage);
        var bm = new double[depth];
        var bs = new double[depth];
        for (int l = 0; l < depth; l++) (bm[l], bs[l]) = MeanStd(perBlock[l]);
        var (cm, cs) = MeanStd(coherence);
        return new AttentionSimilarityReport(perImage.Count, depth, heads, mean, std, perImage, bm, bs, cm, cs);
    }

    /// <summary>The fewest attention heads of any block (a Swin's first stage; a ViT's only count).</summary>
    internal static int MinHeads(IModelConfig c) => c switch
    {
        ViTConfig v => v.NumHeads,
        SwinConfig sw => sw.NumHeads.Min(),
        _ => throw new ArgumentException($"no attention heads known for a {c.Family} model"),
    };

    /// <summary>
    /// Per-head attention maps for one block and one query: [n, H, side²] values, each head's q·kᵀ row over the keys
    /// min–max normalised to [0, 1] (the maps the statistic compares). ViT: <paramref name="queryToken"/> indexes the
    /// full token sequence (0 is the class token when there is one), keys are the G×G patches. Swin: the query is the
    /// patch of the block's map at (⌊r/2⌋, ⌊r/2⌋) (<paramref name="queryToken"/> ignored), keys are the M×M patches of
    /// its window (in the rolled map's order on shifted blocks). Returns the maps, the heads and the side.
    /// Throws ArgumentOutOfRangeException for a bad block or token index.
    /// </summary>
    public static (float[] Maps, int Heads, int Side) HeadMaps(VisionModel model, Tensor images, int block, int queryToken)
    {
        var c = model.Config;
        var prefixes = c.BlockPrefixes();
        if ((uint)block >= (uint)prefixes.Count) throw new ArgumentOutOfRangeException(nameof(block), $"block {block} is outside [0, {prefixes.Count})");
        string name = $"{prefixes[block]}.attn.logits";
        int pre = c.NumPrefixTokens, row0, keys0, side, window = 0;
        if (c is SwinConfig sw)
        {
            // which stage and block, its map r, window M and shift; the center patch's window and index in it
            int s = 0, bi = block;
            while (bi >= sw.Depths[s]) bi -= sw.Depths[s++];
            int r = sw.ActualResolution(s), M = sw.StageWindow(s), shift = sw.BlockShift(s, bi), Rp = (r + M - 1) / M * M, nw = Rp / M;
            int y = ((r / 2 - shift) % r + r) % r; // the center's row (= column: the map is square) in the rolled map
            window = y / M * nw + y / M;
            row0 = y % M * M + y % M;
            keys0 = 0;
            side = M;
        }
        else
        {
            var v = (ViTConfig)c;
            if ((uint)queryToken >= (uint)v.NumTokens) throw new ArgumentOutOfRangeException(nameof(queryToken), $"query token {queryToken} is outside [0, {v.NumTokens})");
            row0 = queryToken;
            keys0 = pre;
            side = v.GridSize;
        }
        using var noGrad = Autograd.NoGrad();
        using var arena = TensorArena.Scope();
        var rec = new TapRecorder(n => n == name);
        model.Forward(images, rec);
        var t = rec.Taps[name];
        int B = images.Shape[0], W = t.Shape[0] / B, H = t.Shape[1], N = t.Shape[2], P = side * side;
        var maps = new float[B * H * P];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
            {
                var row = t.Data.AsSpan((((b * W + window) * H + h) * N + row0) * N + keys0, P);
                float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
                foreach (float v in row) { lo = Math.Min(lo, v); hi = Math.Max(hi, v); }
                var dst = maps.AsSpan((b * H + h) * P, P);
                for (int k = 0; k < P; k++) dst[k] = (float)((row[k] - lo) / (hi - lo + InterHeadCoherence.NormEps));
            }
        return (maps, H, side);
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
