// PSAQ-ViT synthesis (Li et al., ECCV 2022, as its released generate_data.py):
//
//   loss = −Σ_blocks E_l(x~) + 1.0·CE(f(x~), y) + 0.05·|TV(x~) − v|,   x~ = jitter(x)
//   E_l: PatchSimilarityEntropy of block l's attn·V;  TV with unit diagonal weights, on the jittered
//   image, as the original's get_image_prior_losses;  v ~ U(2500, 3000) for 32×3×224×224, scaled here by
//   √(numel / (32·3·224·224)) because a Frobenius norm of pixel differences grows with the square root
//   of the element count (*choice*: the original only knows that one shape).
//   Adam lr 0.2, betas (0.5, 0.9), eps 1e-8, no weight decay; two rounds (⌈I/2⌉ then ⌊I/2⌋ steps) each
//   with its own schedule — linear warm-up lr·(t+1)/w over w = round/5 steps (the original's 100 of
//   500), then half a cosine to 0 — while the Adam state carries over; the roll offset (the same for
//   rows and columns, as the original's shifts=(off, off)) is drawn from U{−J..J} with J = round(H/15)
//   in round one and round(H/7.5) in round two (15 and 30 px at 224), at least 1; then a horizontal
//   flip with p = 0.5; pixels clamped to the valid range after every step.
// Swin: E_l over the patch features of the whole image — the windows' attn·V [B·nW, heads, M², dh] regrouped
// per image (Synthesis.PerImage), so every patch pair of the stage's map counts, as on a ViT. *choice*: with
// a map that is not a multiple of the window, the zero-padded positions count as patches too (none in
// Swin-T/S/B at 224 px).
// Draw order from the batch's generator: labels, pixels, v, then per iteration (offset, flip).
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>PSAQ-ViT's patch-similarity-entropy image synthesis.</summary>
internal sealed class PsaqSynthesizer : IImageSynthesizer
{
    /// <summary>Adam peak learning rate and the weights of the cross-entropy and TV terms (the original's values).</summary>
    public const float Lr = 0.2f, CeWeight = 1f, TvWeight = 0.05f;
    /// <summary>Adam betas and epsilon.</summary>
    public const double Beta1 = 0.5, Beta2 = 0.9, Eps = 1e-8;

    /// <inheritdoc/>
    public int Iterations { get; }

    /// <summary>Throws ViTQuantException for iterations &lt; 1.</summary>
    public PsaqSynthesizer(int iterations)
    {
        new SynthesisSettings { Method = "psaq", Iterations = iterations }.Validated();
        Iterations = iterations;
    }

    /// <summary>The rate of step t within a round of n steps with w warm-up steps (the original's lr_cosine_policy).</summary>
    public static float RoundLr(int t, int n, int w)
    {
        if (t < w) return (float)(Lr * (t + 1.0) / w);
        return (float)(0.5 * (1 + Math.Cos(Math.PI * (t - w) / (n - w))) * Lr);
    }

    /// <inheritdoc/>
    public SyntheticBatch Generate(VisionModel model, int count, Rng rng, Action<int, SynthesisLosses>? onIteration = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var c = model.Config;
        int H = c.ImageSize;
        var labels = Synthesis.RandomLabels(rng, count, c.NumClasses);
        var x = Tensor.Randn(rng, 1f, count, c.InChans, H, H).RequireGrad();
        double numel = (double)count * c.InChans * H * H;
        float v = (float)((2500 + 500 * rng.NextDouble()) * Math.Sqrt(numel / (32.0 * 3 * 224 * 224)));
        var range = Synthesis.ValidRange(c);
        var opt = new Adam(new[] { x }, Lr, Beta1, Beta2, Eps);
        var rec = new TapRecorder(n => n.EndsWith(".attn.out", StringComparison.Ordinal));
        int[] rounds = { (Iterations + 1) / 2, Iterations / 2 };
        int[] lims = { Math.Max(1, (int)Math.Round(H / 15.0)), Math.Max(1, (int)Math.Round(H / 7.5)) };
        SynthesisLosses last = SynthesisLosses.None;
        int done = 0;
        using (Synthesis.Freeze(model))
        {
            for (int r = 0; r < 2; r++)
            {
                int n = rounds[r], w = n / 5;
                for (int t = 0; t < n; t++)
                {
                    opt.Groups[0].Lr = RoundLr(t, n, w);
                    opt.ZeroGrad();
                    int off = rng.NextInt(-lims[r], lims[r]);
                    bool flip = rng.NextFloat() >= 0.5f;
                    using (TensorArena.Scope())
                    {
                        rec.Taps.Clear();
                        var xj = JitterOp.Apply(x, off, off, flip);
                        var logits = model.Forward(xj, rec);
                        Tensor entropy = null!;
                        foreach (var o in Synthesis.BlockTaps(rec, c, "attn.out"))
                        {
                            var e = PatchSimilarityEntropy.Entropy(Synthesis.PerImage(o, count), c.NumPrefixTokens);
                            entropy = entropy == null ? e : Ops.Add(entropy, e);
                        }
                        var ce = Ops.CrossEntropy(logits, labels);
                        var tv = TotalVariation.Loss(xj, 1f);
                        var tvGap = Ops.Abs(Ops.AddScalar(tv, -v));
                        var total = Ops.Add(Ops.Add(Ops.Neg(entropy), Ops.Scale(ce, CeWeight)), Ops.Scale(tvGap, TvWeight));
                        double tot = total.Item();
                        Synthesis.CheckFinite(tot, "psaq loss", done);
                        total.Backward();
                        rec.Taps.Clear();
                        last = new SynthesisLosses(tot, Ce: ce.Item(), Tv: tv.Item(), Entropy: entropy.Item());
                    }
                    opt.Step();
                    Synthesis.ClampToRange(x, range);
                    onIteration?.Invoke(++done, last);
                }
            }
        }
        Synthesis.CheckFinite(x, Iterations);
        var images = x.Detach();
        return new SyntheticBatch(images, labels, last);
    }
}
