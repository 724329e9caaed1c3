// MimiQ synthesis (MimiQ paper): pixels optimised directly so that the heads' attention maps for
// the same query patch agree, the model predicts the batch's random labels, and the image stays smooth.
//
//   L_G(x) = λ_IHC·L_IHC(x~) + λ_CE·CE(f(x~), y) + λ_TV·L_TV(x),   x~ = augment(x)
//   AdamW lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 1e-6; cosine annealing 0.1 → 1e-3 over
//   the iterations (torch's CosineAnnealingLR closed form); clamp to the valid range after every step.
//
// Augmentation per iteration, drawn in this order from the batch's generator:
//   roll offsets dy, dx ~ U{−J..J} (J = max(1, H/28) in the first half, max(1, H/14) in the second:
//   the spec's 8 and 16 px at 224 px, scaled with the image), then per (image, channel) an offset
//   o ~ N(0,1)·0.5·(remaining/total) and colour jitter (x − m)/s, m ~ U(−1, 1), s = exp(U(−1, 1)),
//   applied as x~ = (roll(x) + o − m)/s. Horizontal flip is optional in the spec and off here.
// The colour operations are kept for single-channel models: on grey images they are a brightness and
// contrast change, which is exactly the invariance they are meant to teach (only hue/saturation would
// be meaningless there, and MimiQ's jitter has none).
// Swin: L_IHC runs per window-attention layer on its logits [B·nW, heads, M², M²] — per window and query
// patch over the window's M² keys, averaged per layer, then over layers (mimiq.md). *choice*: the
// logits are q·kᵀ as on a ViT, before the relative position bias and the shifted-window mask; keys that the
// mask hides from a query (other regions of a rolled window) and zero-padded positions stay in its map.
// Each iteration runs inside a TensorArena scope; only the loss values are copied out of it. On a ViT it runs in
// chunks of images, each chunk's forward and backward on one worker (ChunkedLosses), with the whole batch's pixels
// bit for bit: `vitq synthesize --method mimiq` on the shipped model, two threads, batch 64: 9.6–11.4 → 8.8–10.1 s
// for 60 iterations; at the default batch of 16 a few per cent.
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>MimiQ's inter-head-coherent image synthesis.</summary>
internal sealed class MimiqSynthesizer : IImageSynthesizer
{
    /// <summary>AdamW start learning rate, cosine floor and weight decay of the pixel optimisation (the spec's values).</summary>
    public const float Lr = 0.1f, MinLr = 1e-3f, WeightDecay = 1e-6f;
    /// <summary>AdamW betas and epsilon.</summary>
    public const double Beta1 = 0.9, Beta2 = 0.999, Eps = 1e-8;

    /// <inheritdoc/>
    public int Iterations { get; }
    /// <summary>Weight of the inter-head coherence loss L_IHC.</summary>
    public float LambdaIhc { get; }
    /// <summary>Weight of the cross-entropy towards the batch's random labels.</summary>
    public float LambdaCe { get; }
    /// <summary>Weight of the total-variation smoothness loss (on the un-augmented pixels).</summary>
    public float LambdaTv { get; }

    /// <summary>Ablation: L_IHC as mean(1 − SSIM) instead of the spec's mean(1 − SSIM²).</summary>
    public bool IhcSigned { get; init; }

    /// <summary>Apply the per-iteration augmentation (on in the spec; off only for ablations and tests).</summary>
    public bool Augment { get; init; } = true;

    /// <summary>
    /// Ablation (--augment roll): with <see cref="Augment"/> on, false keeps the roll and drops the offset
    /// and colour jitter. The per-plane draws are still made, so the roll offsets stay those of the spec's run.
    /// </summary>
    public bool ColorAugment { get; init; } = true;

    /// <summary>
    /// Ablation (--init black): start from the model's black level (per channel (0 − mean_c)/std_c) plus
    /// N(0, 0.1²) noise instead of the spec's N(0, 1); the same draws are made.
    /// </summary>
    public bool BlackInit { get; init; }

    /// <summary>Standard deviation of the noise around the black level with <see cref="BlackInit"/>.</summary>
    public const float BlackInitStd = 0.1f;

    /// <summary>Throws ViTQuantException for iterations &lt; 1 or a negative or non-finite weight.</summary>
    public MimiqSynthesizer(int iterations, float lambdaIhc = 1f, float lambdaCe = 1f, float lambdaTv = 2.5e-5f)
    {
        new SynthesisSettings { Method = "mimiq", Iterations = iterations, LambdaIhc = lambdaIhc, LambdaCe = lambdaCe, LambdaTv = lambdaTv }.Validated();
        (Iterations, LambdaIhc, LambdaCe, LambdaTv) = (iterations, lambdaIhc, lambdaCe, lambdaTv);
    }

    /// <summary>Draws labels, then x ~ N(0, 1), then optimises x (see <see cref="Optimize"/>).</summary>
    /// <inheritdoc/>
    public SyntheticBatch Generate(VisionModel model, int count, Rng rng, Action<int, SynthesisLosses>? onIteration = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var c = model.Config;
        var labels = Synthesis.RandomLabels(rng, count, c.NumClasses);
        var x = Tensor.Randn(rng, BlackInit ? BlackInitStd : 1f, count, c.InChans, c.ImageSize, c.ImageSize);
        if (BlackInit)
        {
            var range = Synthesis.ValidRange(c);
            int plane = c.ImageSize * c.ImageSize;
            for (int p = 0; p < count * c.InChans; p++)
            {
                var s = x.Data.AsSpan(p * plane, plane);
                System.Numerics.Tensors.TensorPrimitives.Add(s, range[p % c.InChans].Lo, s);
            }
            Synthesis.ClampToRange(x, range);
        }
        var losses = Optimize(model, x, labels, rng, onIteration);
        return new SyntheticBatch(x, labels, losses);
    }

    /// <summary>
    /// Runs the iterations on x [B, C, H, W] in place (augmentation drawn from rng) and returns the last
    /// iteration's losses. Throws SynthesisDivergedException on a non-finite loss or pixel, and
    /// ArgumentException when x does not fit the model or labels.Length ≠ B.
    /// </summary>
    public SynthesisLosses Optimize(VisionModel model, Tensor x, int[] labels, Rng rng, Action<int, SynthesisLosses>? onIteration = null)
    {
        var c = model.Config;
        if (x.Rank != 4 || x.Shape[1] != c.InChans || x.Shape[2] != c.ImageSize || x.Shape[3] != c.ImageSize)
            throw new ArgumentException($"mimiq: images {Tensor.ShapeString(x.Shape)} do not fit the model's [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
        int B = x.Shape[0], planes = B * c.InChans, H = c.ImageSize;
        if (labels.Length != B) throw new ArgumentException($"mimiq: {labels.Length} labels for {B} images");
        var range = Synthesis.ValidRange(c);
        x.RequiresGrad = true;
        x.Grad = null;
        var opt = new AdamW(new[] { x }, Lr, Beta1, Beta2, Eps, WeightDecay);
        var schedule = new CosineAnnealing(Lr, MinLr, Iterations);
        int j1 = Math.Max(1, H / 28), j2 = Math.Max(1, H / 14);
        var scale = new float[planes];
        var shift = new float[planes];
        // Chunks of images, each one worker's whole forward and backward (ViT, with a loss term through the model):
        // the same pixels bit for bit as the whole batch (ChunkedLosses).
        int chunks = model is VisionTransformer vt && (LambdaIhc > 0 || LambdaCe > 0) ? vt.ChunkCount(B) : 0;
        SynthesisLosses last = SynthesisLosses.None;
        using var frozen = Synthesis.Freeze(model);
        try
        {
            for (int it = 0; it < Iterations; it++)
            {
                opt.Groups[0].Lr = schedule.LrAt(it);
                opt.ZeroGrad();
                int dy = 0, dx = 0;
                if (Augment)
                {
                    int J = it < Iterations / 2 ? j1 : j2;
                    dy = rng.NextInt(-J, J);
                    dx = rng.NextInt(-J, J);
                    float decay = 0.5f * (Iterations - it) / Iterations;
                    for (int p = 0; p < planes; p++)
                    {
                        float o = rng.NextNormal() * decay;
                        float m = -1f + 2f * rng.NextFloat();
                        float s = MathF.Exp(-1f + 2f * rng.NextFloat());
                        (scale[p], shift[p]) = ColorAugment ? (1f / s, (o - m) / s) : (1f, 0f);
                    }
                }
                using (TensorArena.Scope())
                {
                    if (chunks > 0) last = ChunkedLosses(model, x, labels, dy, dx, scale, shift, chunks, it);
                    else
                    {
                        var (total, ihc, ce, tv) = Losses(model, x, labels, dy, dx, scale, shift, withTv: true, batchImages: 0);
                        double totalValue = total.Item();
                        Synthesis.CheckFinite(totalValue, "mimiq loss", it);
                        total.Backward();
                        last = new SynthesisLosses(totalValue, ihc, ce, tv);
                    }
                }
                opt.Step();
                Synthesis.ClampToRange(x, range);
                onIteration?.Invoke(it + 1, last);
            }
            Synthesis.CheckFinite(x, Iterations);
        }
        finally
        {
            x.Grad = null;
            x.RequiresGrad = false;
        }
        return last;
    }

    /// <summary>
    /// L_G's terms for images <paramref name="xin"/> (x, or a chunk of it whose batch has
    /// <paramref name="batchImages"/> images: the means are then that batch's), their weighted sum, and each
    /// term's value; L_TV only when <paramref name="withTv"/>. scale and shift hold xin's planes.
    /// </summary>
    private (Tensor Total, double? Ihc, double? Ce, double? Tv) Losses(VisionModel model, Tensor xin, int[] labels, int dy, int dx,
        float[] scale, float[] shift, bool withTv, int batchImages)
    {
        var c = model.Config;
        var want = new TapRecorder(n => LambdaIhc > 0 && n.EndsWith(".attn.logits", StringComparison.Ordinal));
        var xa = Augment ? JitterOp.Apply(xin, dy, dx, flip: false, scale, shift) : xin;
        var logits = model.Forward(xa, want);
        Tensor? total = null;
        double? ihc = null, ce = null, tv = null;
        void AddTerm(Tensor term, float lambda, out double? value)
        {
            value = term.Item();
            var weighted = Ops.Scale(term, lambda);
            total = total == null ? weighted : Ops.Add(total, weighted);
        }
        if (LambdaIhc > 0) AddTerm(InterHeadCoherence.Loss(Synthesis.BlockTaps(want, c, "attn.logits"), c.NumPrefixTokens, IhcSigned, batchImages), LambdaIhc, out ihc);
        if (LambdaCe > 0) AddTerm(Ops.CrossEntropy(logits, labels, meanOver: batchImages), LambdaCe, out ce);
        if (withTv && LambdaTv > 0) AddTerm(TotalVariation.Loss(xin, TotalVariation.MimiqDiagonalWeight), LambdaTv, out tv);
        return (total!, ihc, ce, tv);
    }

    /// <summary>
    /// One iteration's losses and x.Grad with the batch in <paramref name="chunks"/> chunks of images, each chunk's
    /// forward and backward through the model on one worker (VisionTransformer.ChunkCount: the chunk's activations
    /// stay in its core's L2, and the workers meet once per iteration). Every op on the way is per image or per row,
    /// the chunk's L_IHC and CE take the whole batch's means, and L_TV (a norm over the whole batch, and not through
    /// the model) runs on the whole batch first, as the whole batch's backward runs it (its node is the last term's,
    /// next to the root), before the model's gradient is added: so x.Grad is the whole batch's bit for bit (tests).
    /// The loss values are sums of the chunks' terms, the same up to float rounding.
    /// </summary>
    private SynthesisLosses ChunkedLosses(VisionModel model, Tensor x, int[] labels, int dy, int dx, float[] scale, float[] shift, int chunks, int it)
    {
        int B = x.Shape[0], per = x.Size / B, C = x.Shape[1];
        var grads = TensorArena.RentUninitialized(x.Size);
        var values = new (double Total, double? Ihc, double? Ce)[chunks];
        Parallelism.For(0, chunks, i =>
        {
            using var scope = TensorArena.Scope();
            var xc = VisionModel.ChunkOfImages(x, i, chunks, out int first);
            int count = xc.Shape[0];
            xc.RequiresGrad = true;
            var (total, ihc, ce, _) = Losses(model, xc, labels[first..(first + count)], dy, dx,
                scale[(first * C)..((first + count) * C)], shift[(first * C)..((first + count) * C)], withTv: false, batchImages: B);
            values[i] = (total.Item(), ihc, ce);
            total.Backward();
            xc.Grad!.Span.CopyTo(grads.AsSpan(first * per, count * per));
        });
        double totalValue = 0;
        double? ihcValue = null, ceValue = null, tvValue = null;
        foreach (var v in values)
        {
            totalValue += v.Total;
            if (v.Ihc is { } h) ihcValue = (ihcValue ?? 0) + h;
            if (v.Ce is { } e) ceValue = (ceValue ?? 0) + e;
        }
        Tensor? tvTerm = null;
        if (LambdaTv > 0)
        {
            var tv = TotalVariation.Loss(x, TotalVariation.MimiqDiagonalWeight);
            tvValue = tv.Item();
            tvTerm = Ops.Scale(tv, LambdaTv);
            totalValue += tvTerm.Item();
        }
        Synthesis.CheckFinite(totalValue, "mimiq loss", it);
        tvTerm?.Backward();
        var gx = x.GradSpan();
        System.Numerics.Tensors.TensorPrimitives.Add(gx, grads.AsSpan(0, x.Size), gx);
        return new SynthesisLosses(totalValue, ihcValue, ceValue, tvValue);
    }
}
