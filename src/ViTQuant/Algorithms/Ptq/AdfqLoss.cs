// The loss terms of ADFQ-ViT's module-wise reconstruction (ADFQ-ViT paper) and QDrop's input mix.
//
//   L = Rec + w·Round + [attention units] (1/λ_r)·KL_attn
//   Rec   = (1/(B·C))·Σ_b Σ_tokens Σ_c (O_q − O_fp)²      mean over batch and channels, sum over tokens
//                                                        (every axis between the first and the last)
//   Round = Σ over the unit's AdaRound quantizers of Σ (1 − |2h(V) − 1|^β)
//   KL    = (1/R)·Σ_rows KL(softmax(ln P_fp / T) ‖ softmax(ln P_q / T))   rows = batch·heads·queries,
//           the distributions over the key axis (the last one). *choice*: the spec's "KL at temperature
//           T" on post-softmax probabilities is read as tempering the probabilities themselves,
//           softmax(ln P / T) = P^(1/T) / Σ P^(1/T); the authors' code re-applies a softmax over the head
//           axis with its arguments swapped, which this project does not reproduce. No T² factor.
// KL derivation (per row, a = ln P_q / T, p = softmax(a), t = softmax(ln P_fp / T), Σ t = 1):
//   KL = Σ t·ln t − Σ t·a + logsumexp(a)  ⇒  ∂KL/∂a = p − t,  ∂a/∂P_q = 1/(T·P_q)
// Probabilities are floored at ProbFloor before the logarithm (a softmax can underflow to exactly 0);
// below the floor the derivative is 0. P_fp is a detached target: no gradient is recorded for it.
// The target side (t and Σ t·ln t per row) depends only on the calibration image, so reconstruction
// computes it once (TemperTarget) and a step only tempers P_q. Rows run as float TensorPrimitives passes;
// the tests hold them against a direct double-precision computation and against Ops.KlDivergence.
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using ViTQuant.Kernels;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Ptq;

/// <summary>Loss terms and input mixing of ADFQ-ViT reconstruction.</summary>
internal static class AdfqLoss
{
    /// <summary>Probabilities are clamped to at least this before their logarithm is taken.</summary>
    public const float ProbFloor = 1e-12f;

    /// <summary>
    /// Rec = Σ (oq − ofp)² / (B·C) for outputs [B, …, C] (B the first axis, C the last; a 2-D output has
    /// one token). Gradient to oq (and ofp if it requires one). Throws ArgumentException when the shapes
    /// differ or the outputs have fewer than 2 axes.
    /// </summary>
    public static Tensor Reconstruction(Tensor oq, Tensor ofp)
    {
        if (!oq.Shape.AsSpan().SequenceEqual(ofp.Shape)) throw new ArgumentException($"reconstruction loss: output {Tensor.ShapeString(oq.Shape)} vs target {Tensor.ShapeString(ofp.Shape)}");
        if (oq.Rank < 2) throw new ArgumentException($"reconstruction loss: expected [B, …, C], got {Tensor.ShapeString(oq.Shape)}");
        var d = Ops.Sub(oq, ofp);
        return Ops.Scale(Ops.Sum(Ops.Square(d)), 1f / ((float)oq.Shape[0] * oq.Shape[^1]));
    }

    /// <summary>
    /// Mean over rows of KL(softmax(ln pfp / T) ‖ softmax(ln pq / T)) along the last axis (file header),
    /// as a one-element tensor with its gradient to pq. Throws ArgumentException for different shapes or a
    /// rank-0 input, ArgumentOutOfRangeException for T ≤ 0.
    /// </summary>
    public static Tensor AttentionKl(Tensor pq, Tensor pfp, float temperature)
    {
        if (!pq.Shape.AsSpan().SequenceEqual(pfp.Shape)) throw new ArgumentException($"attention KL: probabilities {Tensor.ShapeString(pq.Shape)} vs target {Tensor.ShapeString(pfp.Shape)}");
        var (t, negEntropy) = TemperTarget(pfp, temperature);
        return AttentionKl(pq, t, negEntropy, temperature);
    }

    /// <summary>
    /// The target side of the KL, computed once per calibration image: t = softmax(ln pfp / T) along the
    /// last axis (pfp's shape) and Σ t·ln t per row (pfp's shape without the last axis).
    /// </summary>
    internal static (Tensor Target, Tensor NegEntropy) TemperTarget(Tensor pfp, float temperature)
    {
        CheckKlArgs(pfp, temperature);
        int n = pfp.Shape[^1], rows = pfp.Size / n;
        float invT = 1f / temperature;
        var t = Tensor.Output(pfp.Shape);
        var negEnt = Tensor.Output(pfp.Shape[..^1]);
        float[] f = pfp.Data, td = t.Data, nd = negEnt.Data;
        Parallelism.ForChunks(rows, 64, (r0, r1) =>
        {
            Span<float> lt = n <= 1024 ? stackalloc float[n] : new float[n];
            for (int r = r0; r < r1; r++)
            {
                var tr = td.AsSpan(r * n, n);
                TemperedLog(f.AsSpan(r * n, n), invT, lt, tr);
                nd[r] = TensorPrimitives.Dot(tr, lt);
            }
        });
        return (t, negEnt);
    }

    /// <summary>
    /// The KL against a tempered target from <see cref="TemperTarget"/>: per row Σ t·ln t − Σ t·ln p with
    /// p = softmax(ln pq / T) (exactly 0 when pq is the target's source), averaged; gradient to pq.
    /// </summary>
    internal static Tensor AttentionKl(Tensor pq, Tensor target, Tensor negEntropy, float temperature)
    {
        CheckKlArgs(pq, temperature);
        if (!pq.Shape.AsSpan().SequenceEqual(target.Shape) || negEntropy.Size * pq.Shape[^1] != pq.Size)
            throw new ArgumentException($"attention KL: probabilities {Tensor.ShapeString(pq.Shape)} vs tempered target {Tensor.ShapeString(target.Shape)} and {Tensor.ShapeString(negEntropy.Shape)} row terms");
        int n = pq.Shape[^1], rows = pq.Size / n;
        float invT = 1f / temperature;
        float[] q = pq.Data, td = target.Data, nd = negEntropy.Data;
        var p = TensorArena.Rent(pq.Size); // tempered student [rows, n], kept for the backward (recycled with the step's scope)
        var kl = new double[rows];
        Parallelism.ForChunks(rows, 64, (r0, r1) =>
        {
            Span<float> lp = n <= 1024 ? stackalloc float[n] : new float[n];
            for (int r = r0; r < r1; r++)
            {
                TemperedLog(q.AsSpan(r * n, n), invT, lp, p.AsSpan(r * n, n));
                kl[r] = (double)nd[r] - TensorPrimitives.Dot(td.AsSpan(r * n, n), lp);
            }
        });
        double total = 0;
        foreach (double v in kl) total += v; // fixed order: independent of the thread count
        var y = Tensor.Scalar((float)(total / rows));
        if (!Autograd.Needs(pq)) return y;
        return Autograd.Record("attention_kl", y, new[] { pq }, g =>
        {
            float s = g.Data[0] * invT / rows;
            var gq = pq.GradSpan();
            for (int i = 0; i < gq.Length; i++)
                if (q[i] > ProbFloor) gq[i] += s * (p[i] - td[i]) / q[i];
        });
    }

    private static void CheckKlArgs(Tensor x, float temperature)
    {
        if (x.Rank < 1 || x.Size == 0) throw new ArgumentException($"attention KL: expected [..., keys], got {Tensor.ShapeString(x.Shape)}");
        if (!(temperature > 0f) || !float.IsFinite(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), $"temperature must be a finite value > 0, got {temperature}");
    }

    /// <summary>logp = log softmax(ln max(x, floor)·invT) and prob = its exponential, for one row.</summary>
    private static void TemperedLog(ReadOnlySpan<float> x, float invT, Span<float> logp, Span<float> prob)
    {
        TensorPrimitives.Max(x, ProbFloor, logp);
        TensorPrimitives.Log(logp, logp);
        TensorPrimitives.Multiply(logp, invT, logp);
        TensorPrimitives.Subtract(logp, TensorPrimitives.Max(logp), logp);
        TensorPrimitives.Exp(logp, prob);
        float z = TensorPrimitives.Sum(prob);
        TensorPrimitives.Subtract(logp, MathF.Log(z), logp);
        TensorPrimitives.Divide(prob, z, prob);
    }

    /// <summary>
    /// Σ over the quantizers of their AdaRound regulariser Σ (1 − |2h(V) − 1|^β), with gradients to each V
    /// that requires one. Returns a zero scalar for an empty list. Throws as AdaRoundQuantizer.RoundingLoss does.
    /// </summary>
    public static Tensor Rounding(IEnumerable<AdaRoundQuantizer> quantizers, float beta)
    {
        Tensor? sum = null;
        foreach (var q in quantizers)
        {
            var r = q.RoundingLoss(beta);
            sum = sum == null ? r : Ops.Add(sum, r);
        }
        return sum ?? Tensor.Scalar(0f);
    }

    /// <summary>
    /// QDrop's input: each element is xfp's with probability <paramref name="p"/>, else xq's (one draw per
    /// element from rng, in order). A new tensor without autograd history. Throws ArgumentException for
    /// different shapes, ArgumentOutOfRangeException for p outside [0, 1].
    /// </summary>
    public static Tensor QDrop(Tensor xq, Tensor xfp, float p, Rng rng)
    {
        if (!xq.Shape.AsSpan().SequenceEqual(xfp.Shape)) throw new ArgumentException($"QDrop: quantized input {Tensor.ShapeString(xq.Shape)} vs float input {Tensor.ShapeString(xfp.Shape)}");
        if (!(p >= 0f && p <= 1f)) throw new ArgumentOutOfRangeException(nameof(p), $"QDrop probability must be in [0, 1], got {p}");
        var y = Tensor.Output(xq.Shape);
        float[] a = xq.Data, b = xfp.Data, yd = y.Data;
        for (int i = 0; i < xq.Size; i++) yd[i] = rng.NextFloat() < p ? b[i] : a[i];
        return y;
    }
}
