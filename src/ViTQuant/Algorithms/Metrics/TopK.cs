// The k most probable classes of one logit row, with their softmax probabilities: what `vitq infer`
// reports per image. Ties keep the lower class index first, as the accuracy ranking in Evaluator does.
namespace ViTQuant.Algorithms.Metrics;

/// <summary>Top-k classes of a logit vector.</summary>
internal static class TopK
{
    /// <summary>
    /// The min(k, classes) most probable classes of <paramref name="logits"/> in descending probability
    /// (softmax over the whole row, in double precision), lower index first on ties.
    /// </summary>
    /// <exception cref="ArgumentException">The row is empty or k is below 1.</exception>
    public static (int[] Indices, float[] Probabilities) Of(ReadOnlySpan<float> logits, int k)
    {
        if (logits.Length == 0) throw new ArgumentException("empty logit row", nameof(logits));
        if (k < 1) throw new ArgumentException($"k must be at least 1, got {k}", nameof(k));
        int K = logits.Length;
        k = Math.Min(k, K);
        float max = float.NegativeInfinity;
        foreach (float v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in logits) sum += Math.Exp(v - max);
        var order = Enumerable.Range(0, K).ToArray();
        var keys = logits.ToArray();
        // Stable sort on descending logits: equal logits keep ascending class order.
        var sorted = order.OrderByDescending(i => keys[i]).ThenBy(i => i).Take(k).ToArray();
        var probs = sorted.Select(i => (float)(Math.Exp(keys[i] - max) / sum)).ToArray();
        return (sorted, probs);
    }
}
