// Losses for classification, distillation and feature matching (PyTorch 1.13 semantics).
//
// All take logits [B, K] and return a scalar mean over the batch. With lp = log_softmax(z), p = softmax(z):
//   CrossEntropy:      ℓ_b = −(1−ε)·lp[y_b] − (ε/K)·Σ_k lp_k          ∂ℓ_b/∂z = p − q,  q = (1−ε)·onehot + ε/K
//   SoftCrossEntropy:  ℓ_b = −Σ_k t_k·lp_k                           ∂/∂z = p·Σt − t,   ∂/∂t = −lp
//   KlDivergence:      ℓ_b = T²·Σ_k pt_k·(lpt_k − lps_k), pt = softmax(t/T), ps = softmax(s/T)
//                      ∂/∂s = T·(ps − pt)   (Σ pt = 1)
//                      ∂/∂t = T·pt ⊙ (a − Σ_j pt_j a_j),  a = lpt − lps  (softmax Jacobian applied to a + 1)
// CosineSimilarity follows ATen 1.13: y = a·b / √(max(‖a‖², ε²)·max(‖b‖², ε²)), the clamps applied under
// no_grad, so the backward treats them as identity on the squared norms:
//   ∂y/∂a = b/(n_a·n_b) − y·a/n_a²   with n_a = max(‖a‖, ε) (and symmetrically for b).
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>
    /// Mean cross-entropy of logits [B, K] against class indices, with PyTorch's label smoothing
    /// (target (1−ε)·onehot + ε/K). Returns a one-element tensor. Throws ArgumentException when logits
    /// are not 2-D or empty, labels.Length ≠ B, a label is outside [0, K), or ε is outside [0, 1].
    /// <paramref name="meanOver"/> &gt; 0: the sum divided by that count instead of B, for a chunk of a larger batch
    /// (each row's gradient is then the whole batch's, bit for bit).
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, int[] labels, float labelSmoothing = 0f, int meanOver = 0)
    {
        ArgumentNullException.ThrowIfNull(labels);
        var (bsz, k) = LossBatchShape(logits, "cross_entropy");
        if (labels.Length != bsz) throw new ArgumentException($"cross_entropy: {labels.Length} labels for {bsz} rows of logits {Tensor.ShapeString(logits.Shape)}");
        for (int i = 0; i < bsz; i++)
            if ((uint)labels[i] >= (uint)k) throw new ArgumentException($"cross_entropy: label {labels[i]} at position {i} is outside [0, {k})");
        if (!(labelSmoothing >= 0f && labelSmoothing <= 1f)) throw new ArgumentException($"cross_entropy: label smoothing must be in [0, 1], got {labelSmoothing}");

        var lp = new float[bsz * k];
        SoftmaxKernel.LogSoftmaxRows(logits.Span, lp, bsz, k);
        double eps = labelSmoothing, total = 0;
        for (int b = 0; b < bsz; b++)
        {
            double rowSum = 0;
            for (int j = 0; j < k; j++) rowSum += lp[b * k + j];
            total -= (1 - eps) * lp[b * k + labels[b]] + eps / k * rowSum;
        }
        int n = meanOver > 0 ? meanOver : bsz;
        var y = Tensor.Scalar((float)(total / n));
        if (!Autograd.Needs(logits)) return y;
        return Autograd.Record("cross_entropy", y, new[] { logits }, g =>
        {
            float s = g.Data[0] / n, smooth = (float)(eps / k), hit = (float)(1 - eps);
            var gz = logits.GradSpan();
            for (int b = 0; b < bsz; b++)
                for (int j = 0; j < k; j++)
                {
                    int i = b * k + j;
                    float q = smooth + (j == labels[b] ? hit : 0f);
                    gz[i] += s * (MathF.Exp(lp[i]) - q);
                }
        });
    }

    /// <summary>
    /// Mean over rows of −Σ_k target_k·log_softmax(logits)_k, for soft targets (distillation, mixup).
    /// Differentiable in both inputs. Throws ArgumentException unless both are 2-D, non-empty, and the same shape.
    /// </summary>
    public static Tensor SoftCrossEntropy(Tensor logits, Tensor targetProbs)
    {
        var (bsz, k) = LossBatchShape(logits, "soft_cross_entropy");
        LossSameShape(logits, targetProbs, "soft_cross_entropy");
        var lp = new float[bsz * k];
        SoftmaxKernel.LogSoftmaxRows(logits.Span, lp, bsz, k);
        var t = targetProbs.Span;
        double total = 0;
        for (int i = 0; i < lp.Length; i++) total -= (double)t[i] * lp[i];
        var y = Tensor.Scalar((float)(total / bsz));
        if (!Autograd.Needs(logits, targetProbs)) return y;
        return Autograd.Record("soft_cross_entropy", y, new[] { logits, targetProbs }, g =>
        {
            float s = g.Data[0] / bsz;
            var tp = targetProbs.Span;
            if (logits.RequiresGrad)
            {
                var gz = logits.GradSpan();
                for (int b = 0; b < bsz; b++)
                {
                    float ts = 0;
                    for (int j = 0; j < k; j++) ts += tp[b * k + j];
                    for (int j = 0; j < k; j++) gz[b * k + j] += s * (MathF.Exp(lp[b * k + j]) * ts - tp[b * k + j]);
                }
            }
            if (targetProbs.RequiresGrad)
            {
                var gt = targetProbs.GradSpan();
                for (int i = 0; i < lp.Length; i++) gt[i] -= s * lp[i];
            }
        });
    }

    /// <summary>
    /// Distillation loss T²·(1/B)·Σ_b KL(softmax(t_b/T) ‖ softmax(s_b/T)), equal to PyTorch's
    /// F.kl_div(F.log_softmax(s/T), F.softmax(t/T), reduction='batchmean')·T². Gradients flow to the
    /// student and, when it requires them, the teacher. Throws ArgumentException for T ≤ 0 or mismatched/non-2-D logits.
    /// </summary>
    public static Tensor KlDivergence(Tensor studentLogits, Tensor teacherLogits, float temperature)
    {
        var (bsz, k) = LossBatchShape(studentLogits, "kl_divergence");
        LossSameShape(studentLogits, teacherLogits, "kl_divergence");
        if (!(temperature > 0f) || float.IsInfinity(temperature)) throw new ArgumentException($"kl_divergence: temperature must be a positive number, got {temperature}");
        float invT = 1f / temperature;
        var lps = ScaledLogSoftmax(studentLogits.Span, invT, bsz, k);
        var lpt = ScaledLogSoftmax(teacherLogits.Span, invT, bsz, k);
        var klRow = new double[bsz];
        double total = 0;
        for (int b = 0; b < bsz; b++)
        {
            double kl = 0;
            for (int j = 0; j < k; j++) { int i = b * k + j; kl += Math.Exp(lpt[i]) * ((double)lpt[i] - lps[i]); }
            klRow[b] = kl;
            total += kl;
        }
        double t2 = (double)temperature * temperature;
        var y = Tensor.Scalar((float)(t2 * total / bsz));
        if (!Autograd.Needs(studentLogits, teacherLogits)) return y;
        return Autograd.Record("kl_divergence", y, new[] { studentLogits, teacherLogits }, g =>
        {
            float s = g.Data[0] * temperature / bsz;
            if (studentLogits.RequiresGrad)
            {
                var gs = studentLogits.GradSpan();
                for (int i = 0; i < lps.Length; i++) gs[i] += s * (MathF.Exp(lps[i]) - MathF.Exp(lpt[i]));
            }
            if (teacherLogits.RequiresGrad)
            {
                var gt = teacherLogits.GradSpan();
                for (int b = 0; b < bsz; b++)
                    for (int j = 0; j < k; j++)
                    {
                        int i = b * k + j;
                        gt[i] += (float)(s * Math.Exp(lpt[i]) * ((double)lpt[i] - lps[i] - klRow[b]));
                    }
            }
        });
    }

    /// <summary>
    /// Cosine similarity of a and b along <paramref name="axis"/>, PyTorch 1.13 semantics:
    /// a·b / (max(‖a‖, eps)·max(‖b‖, eps)). The result drops that axis. Throws ArgumentException when the
    /// shapes differ (no broadcasting) and ArgumentOutOfRangeException for a bad axis.
    /// </summary>
    public static Tensor CosineSimilarity(Tensor a, Tensor b, int axis = -1, float eps = 1e-8f)
    {
        LossSameShape(a, b, "cosine_similarity");
        int ax = Tensor.NormAxis(axis, a.Rank);
        var (outer, n, inner) = RowLayout.SplitAtAxis(a.Shape, ax);
        var outShape = a.Shape.Where((_, i) => i != ax).ToArray();
        var y = Tensor.Output(outShape);
        int m = outer * inner;
        var na2 = new double[m]; // clamped squared norms, saved for the backward
        var nb2 = new double[m];
        float[] ad = a.Data, bd = b.Data;
        double e2 = (double)eps * eps;
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                int r = o * inner + i, base0 = o * n * inner + i;
                double dot = 0, wa = 0, wb = 0;
                for (int j = 0; j < n; j++)
                {
                    double av = ad[base0 + j * inner], bv = bd[base0 + j * inner];
                    dot += av * bv; wa += av * av; wb += bv * bv;
                }
                na2[r] = Math.Max(wa, e2);
                nb2[r] = Math.Max(wb, e2);
                y.Data[r] = (float)(dot / Math.Sqrt(na2[r] * nb2[r]));
            }
        if (!Autograd.Needs(a, b)) return y;
        return Autograd.Record("cosine_similarity", y, new[] { a, b }, g =>
        {
            var ga = a.RequiresGrad ? a.GradSpan() : default;
            var gb = b.RequiresGrad ? b.GradSpan() : default;
            for (int o = 0; o < outer; o++)
                for (int i = 0; i < inner; i++)
                {
                    int r = o * inner + i, base0 = o * n * inner + i;
                    double inv = 1 / Math.Sqrt(na2[r] * nb2[r]), yr = y.Data[r], gr = g.Data[r];
                    for (int j = 0; j < n; j++)
                    {
                        int idx = base0 + j * inner;
                        if (!ga.IsEmpty) ga[idx] += (float)(gr * (bd[idx] * inv - yr * ad[idx] / na2[r]));
                        if (!gb.IsEmpty) gb[idx] += (float)(gr * (ad[idx] * inv - yr * bd[idx] / nb2[r]));
                    }
                }
        });
    }

    /// <summary>log_softmax(x·scale) over rows, into a new buffer.</summary>
    private static float[] ScaledLogSoftmax(ReadOnlySpan<float> x, float scale, int rows, int cols)
    {
        var t = new float[rows * cols];
        System.Numerics.Tensors.TensorPrimitives.Multiply(x[..t.Length], scale, t);
        SoftmaxKernel.LogSoftmaxRows(t, t, rows, cols);
        return t;
    }

    private static (int rows, int cols) LossBatchShape(Tensor logits, string op)
    {
        if (logits.Rank != 2 || logits.Shape[0] == 0 || logits.Shape[1] == 0)
            throw new ArgumentException($"{op}: logits must be a non-empty [B, K] tensor, got {Tensor.ShapeString(logits.Shape)}");
        return (logits.Shape[0], logits.Shape[1]);
    }

    private static void LossSameShape(Tensor a, Tensor b, string op)
    {
        if (!a.Shape.AsSpan().SequenceEqual(b.Shape))
            throw new ArgumentException($"{op}: shapes {Tensor.ShapeString(a.Shape)} and {Tensor.ShapeString(b.Shape)} differ");
    }
}
