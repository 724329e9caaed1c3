// Classification accuracy of a model (float or fake-quantized, through hooks) over a batch source.
using System.Diagnostics;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Metrics;

/// <summary>Top-1/top-5 accuracy, mean cross-entropy and throughput of one evaluation pass.</summary>
public sealed record EvalResult(double Top1, double? Top5, double Loss, int Count, double Seconds)
{
    /// <summary>Throughput: images evaluated per second of wall time.</summary>
    public double ImagesPerSecond => Count / Math.Max(Seconds, 1e-9);
}

/// <summary>Accuracy evaluation of float or fake-quantized models.</summary>
internal static class Evaluator
{
    /// <summary>
    /// Runs the model without gradients over every batch. Top-5 is reported only when the model has
    /// more than 5 classes (with 5 or fewer it is always 100 %). progress(done) is called after each batch with the images seen so far.
    /// The forward is <see cref="VisionModel.Infer"/>: hooks must not keep the tensors they are shown. No weight changes
    /// during an evaluation, so each Linear weight is packed once for all its batches and chunks (WeightPacking.Freeze;
    /// `vitq train`'s validation passes packed them again in every chunk before).
    /// </summary>
    internal static EvalResult Evaluate(VisionModel model, IEnumerable<(Tensor Images, int[] Labels)> batches,
        IModelHooks? hooks = null, Action<int>? progress = null)
    {
        using var frozen = WeightPacking.Freeze();
        return Evaluate(x => model.Infer(x, hooks), model.Config.NumClasses, batches, progress); // one stage's temporaries at a time
    }

    /// <summary>
    /// The same measurement for any engine that maps a batch of images to logits [B, classes] (the float or
    /// fake-quantized model, the integer runtime, ONNX Runtime). Each batch runs in its own arena scope.
    /// </summary>
    public static EvalResult Evaluate(Func<Tensor, Tensor> logitsOf, int numClasses, IEnumerable<(Tensor Images, int[] Labels)> batches,
        Action<int>? progress = null)
    {
        var sw = Stopwatch.StartNew();
        int count = 0, correct1 = 0, correct5 = 0;
        double lossSum = 0;
        bool top5 = numClasses > 5;
        using var _ = Autograd.NoGrad();
        foreach (var (x, y) in batches)
        {
            using var arena = TensorArena.Scope();
            var logits = logitsOf(x);
            int B = y.Length, K = logits.Shape[1];
            if (logits.Rank != 2 || logits.Shape[0] != B || K != numClasses)
                throw new InvalidOperationException($"engine returned logits {Tensor.ShapeString(logits.Shape)} for {B} images of {numClasses} classes");
            lossSum += Ops.CrossEntropy(logits, y).Item() * B;
            for (int b = 0; b < B; b++)
            {
                var row = logits.Data.AsSpan(b * K, K);
                float target = row[y[b]];
                int greater = 0; // rank of the true class: how many logits beat it (ties count against us)
                for (int k = 0; k < K; k++) if (row[k] > target || (row[k] == target && k < y[b])) greater++;
                if (greater == 0) correct1++;
                if (greater < 5) correct5++;
            }
            count += B;
            progress?.Invoke(count);
        }
        if (count == 0) throw new ViTQuantException("evaluation set is empty");
        return new EvalResult(100.0 * correct1 / count, top5 ? 100.0 * correct5 / count : null, lossSum / count, count, sw.Elapsed.TotalSeconds);
    }
}
