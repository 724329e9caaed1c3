// The synthesizers on a tiny random ViT: MimiQ lowers L_IHC and yields more head-coherent attention
// than Gaussian noise and PSAQ-ViT; every method respects the pixel range, its seed and the frozen model.
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.Models;

namespace ViTQuant.Tests.DataFree;

[Collection(ViTQuant.Tests.Tensors.ParallelismThreadsCollection.Name)] // sets Parallelism.Threads (Chunking.With)
public class SynthesisTests
{
    private static double Ihc(VisionTransformer model, Tensor x)
    {
        using var _ = Autograd.NoGrad();
        var rec = new TapRecorder(n => n.EndsWith(".attn.logits"));
        model.Forward(x, rec);
        return InterHeadCoherence.Loss(Synthesis.BlockTaps(rec, model.Config.Depth, "attn.logits"), model.Config.NumPrefixTokens).Item();
    }

    [Fact]
    public void MimiqStepsLowerTheInterHeadLoss()
    {
        var model = TinyModels.Model();
        var x = Tensor.Randn(new Rng(2), 1f, 4, 1, 8, 8);
        Synthesis.ClampToRange(x, Synthesis.ValidRange(model.Config));
        double before = Ihc(model, x);
        // Without augmentation every step descends the very function measured here.
        var synth = new MimiqSynthesizer(iterations: 3, lambdaIhc: 1f, lambdaCe: 0f, lambdaTv: 0f) { Augment = false };
        double prev = before;
        for (int step = 0; step < 3; step++)
        {
            new MimiqSynthesizer(iterations: 1, lambdaIhc: 1f, lambdaCe: 0f, lambdaTv: 0f) { Augment = false }.Optimize(model, x, new[] { 0, 1, 2, 3 }, new Rng(3));
            double now = Ihc(model, x);
            Assert.True(now < prev, $"step {step}: L_IHC {prev} -> {now}");
            prev = now;
        }
        var losses = synth.Optimize(model, x, new[] { 0, 1, 2, 3 }, new Rng(3));
        Assert.NotNull(losses.Ihc);
        Assert.Null(losses.Ce);
        Assert.Null(losses.Tv);
        Assert.False(x.RequiresGrad);
        Assert.True(Ihc(model, x) < before - 0.02, $"L_IHC {before} -> {Ihc(model, x)}");
    }

    // MimiQ on a ViT runs each iteration in chunks of images, one worker's forward and backward each (ChunkedLosses):
    // the pixels are the whole batch's bit for bit, with and without augmentation and L_TV, and the losses the same
    // up to float rounding. Chunks of 1, 3 (a short last one) and the default rule on one and two workers.
    [Theory]
    [InlineData(true, 2.5e-5f)]
    [InlineData(true, 0.5f)]
    [InlineData(false, 0.5f)]
    [InlineData(false, 0f)]
    public void ChunkedMimiqGivesTheWholeBatchsPixels(bool augment, float lambdaTv)
    {
        var model = TinyModels.Model();
        var labels = new[] { 0, 1, 2, 3, 4, 0, 1 };
        (float[] Pixels, SynthesisLosses Losses) Run(int chunk, int threads) => Chunking.With(chunk, () =>
        {
            var x = Tensor.Randn(new Rng(2), 1f, labels.Length, 1, 8, 8);
            var losses = new MimiqSynthesizer(iterations: 4, lambdaIhc: 1f, lambdaCe: 1f, lambdaTv: lambdaTv) { Augment = augment }
                .Optimize(model, x, labels, new Rng(3));
            return (x.ToArray(), losses);
        }, threads);
        var (whole, wholeLosses) = Run(-1, 1);
        foreach (var (chunk, threads) in new[] { (1, 1), (3, 1), (3, 2), (0, 2) })
        {
            var (pixels, losses) = Run(chunk, threads);
            Assert.Equal(whole, pixels);
            foreach (var (a, b) in new[] { (wholeLosses.Total, losses.Total), (wholeLosses.Ihc, losses.Ihc), (wholeLosses.Ce, losses.Ce) })
                Assert.True(Math.Abs(a!.Value - b!.Value) <= 1e-6 * Math.Abs(a.Value), $"loss {a} against {b}");
            Assert.Equal(wholeLosses.Tv.HasValue, losses.Tv.HasValue);
        }
    }

    [Fact]
    public void MimiqWithTheSpecAugmentationLowersTheInterHeadLoss()
    {
        var model = TinyModels.AlignedHeads();
        var x = Tensor.Randn(new Rng(2), 1f, 8, 1, 8, 8);
        Synthesis.ClampToRange(x, Synthesis.ValidRange(model.Config));
        double before = Ihc(model, x);
        new MimiqSynthesizer(iterations: 50).Optimize(model, x, new[] { 0, 1, 2, 3, 4, 0, 1, 2 }, new Rng(3));
        double after = Ihc(model, x);
        Assert.True(after < 0.9 * before, $"L_IHC {before} -> {after}");
    }

    [Fact]
    public void MimiqImagesHaveMoreCoherentHeadsThanGaussianAndPsaq()
    {
        var model = TinyModels.AlignedHeads();
        const int n = 8;
        var gauss = new GaussianSynthesizer().Generate(model, n, new Rng(10));
        // The spec's augmentation makes progress slow on this tiny model (≈ +0.03 over noise at 200 steps
        // across seeds, in the paper's 2000 steps far more); PSAQ does not aim at head agreement at all.
        var psaq = new PsaqSynthesizer(50).Generate(model, n, new Rng(11));
        var mimiq = new MimiqSynthesizer(200).Generate(model, n, new Rng(12));
        double Sim(SyntheticBatch b) => AttentionSimilarity.Measure(model, new[] { b.Images }).Mean;
        double g = Sim(gauss), p = Sim(psaq), m = Sim(mimiq);
        Assert.True(m > g + 0.01 && m > p + 0.02, $"attention similarity: mimiq {m:F3}, gaussian {g:F3}, psaq {p:F3}");
    }

    [Theory]
    [InlineData("gaussian")]
    [InlineData("psaq")]
    [InlineData("mimiq")]
    public void SynthesisIsSeededClampedAndLeavesTheModelAlone(string method)
    {
        var model = TinyModels.Model(seed: 7);
        var before = model.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        var synth = Synthesis.Create(SynthesisSettings.For(method) with { Iterations = 6 });
        var a = synth.Generate(model, 3, new Rng(42));
        var b = synth.Generate(model, 3, new Rng(42));
        var c = synth.Generate(model, 3, new Rng(43));
        Assert.Equal(a.Images.ToArray(), b.Images.ToArray());
        Assert.Equal(a.Labels, b.Labels);
        Assert.NotEqual(a.Images.ToArray(), c.Images.ToArray());
        Assert.Equal(new[] { 3, 1, 8, 8 }, a.Images.Shape);
        var (lo, hi) = Synthesis.ValidRange(model.Config)[0];
        Assert.All(a.Images.ToArray(), v => Assert.InRange(v, lo, hi));
        Assert.All(a.Labels, y => Assert.InRange(y, 0, model.Config.NumClasses - 1));
        foreach (var (name, p) in model.StateDict())
        {
            Assert.Equal(before[name], p.ToArray());
        }
        Assert.All(model.Parameters(), p => Assert.True(p.RequiresGrad));
        Assert.True(model.Training);
        if (method != "gaussian") Assert.True(a.Losses.Total is double t && double.IsFinite(t));
    }

    [Fact]
    public void SynthesisReportsEveryIteration()
    {
        var model = TinyModels.Model();
        var seen = new List<int>();
        new PsaqSynthesizer(5).Generate(model, 2, new Rng(1), (it, l) => { seen.Add(it); Assert.NotNull(l.Entropy); });
        Assert.Equal(new[] { 1, 2, 3, 4, 5 }, seen);
    }

    [Fact]
    public void PsaqRoundScheduleWarmsUpThenDecays()
    {
        Assert.Equal(0.002f, PsaqSynthesizer.RoundLr(0, 500, 100), 6);
        Assert.Equal(0.2f, PsaqSynthesizer.RoundLr(99, 500, 100), 6);
        Assert.Equal(0.2f, PsaqSynthesizer.RoundLr(100, 500, 100), 6);
        Assert.Equal(0.1f, PsaqSynthesizer.RoundLr(300, 500, 100), 6);
        Assert.Equal(0f, PsaqSynthesizer.RoundLr(500, 500, 100), 6);
    }

    [Fact]
    public void SettingsAreValidated()
    {
        var ok = SynthesisSettings.For("mimiq");
        Assert.Throws<ViTQuantException>(() => (ok with { Count = 0 }).Validated());
        Assert.Throws<ViTQuantException>(() => (ok with { BatchSize = 0 }).Validated());
        Assert.Throws<ViTQuantException>(() => (ok with { Iterations = 0 }).Validated());
        Assert.Throws<ViTQuantException>(() => (ok with { LambdaTv = -1f }).Validated());
        Assert.Throws<ViTQuantException>(() => (ok with { LambdaCe = float.NaN }).Validated());
        Assert.Throws<ViTQuantException>(() => (ok with { LambdaIhc = 0, LambdaCe = 0, LambdaTv = 0 }).Validated());
        Assert.Throws<ViTQuantException>(() => (ok with { Method = "dreaming" }).Validated());
        Assert.Throws<ViTQuantException>(() => SynthesisSettings.For("dreaming"));
        Assert.Equal(ok, SynthesisSettings.FromJson(ok.ToJson(), "test"));
        // The signed-L_IHC ablation round-trips, is MimiQ-only, and leaves the spec form's JSON as older
        // builds wrote it (so their shards still resume).
        var signed = ok with { IhcSigned = true };
        Assert.Equal(signed, SynthesisSettings.FromJson(signed.ToJson(), "test"));
        Assert.DoesNotContain("IhcSigned", ok.ToJson());
        Assert.Throws<ViTQuantException>(() => (SynthesisSettings.For("psaq") with { IhcSigned = true }).Validated());
        Assert.Equal(3, (ok with { Count = 33, BatchSize = 16 }).BatchCount);
        // The init and augmentation ablations likewise: round-trip, MimiQ-only, absent from the spec's JSON.
        var ablated = ok with { Init = "black", Augment = "roll" };
        Assert.Equal(ablated, SynthesisSettings.FromJson(ablated.ToJson(), "test"));
        Assert.DoesNotContain("Init", ok.ToJson());
        Assert.DoesNotContain("Augment", ok.ToJson());
        Assert.Throws<ViTQuantException>(() => (ok with { Init = "white" }).Validated());
        Assert.Throws<ViTQuantException>(() => (ok with { Augment = "some" }).Validated());
        Assert.Throws<ViTQuantException>(() => (SynthesisSettings.For("psaq") with { Augment = "none" }).Validated());
    }

    [Fact]
    public void MimiqBlackInitStartsAtTheBlackLevelAndRollOnlyKeepsTheRollDraws()
    {
        var model = TinyModels.Model();
        var (lo, hi) = Synthesis.ValidRange(model.Config)[0];
        // One iteration at a tiny budget: most pixels stay near the black level the ablation starts from.
        var black = new MimiqSynthesizer(iterations: 1, lambdaIhc: 1f, lambdaCe: 1f, lambdaTv: 0f) { BlackInit = true }
            .Generate(model, 4, new Rng(5));
        var spec = new MimiqSynthesizer(iterations: 1, lambdaIhc: 1f, lambdaCe: 1f, lambdaTv: 0f).Generate(model, 4, new Rng(5));
        Assert.Equal(spec.Labels, black.Labels);
        Assert.All(black.Images.Data, v => Assert.InRange(v, lo, hi));
        double meanBlack = black.Images.Data.Average(), meanSpec = spec.Images.Data.Average();
        Assert.True(meanBlack < lo + 0.5, $"black-init mean {meanBlack}, black level {lo}");
        Assert.True(meanBlack < meanSpec - 0.3, $"black-init mean {meanBlack} vs spec {meanSpec}");
        // --augment roll and none run, stay in range and differ from the spec's colour-jittered run.
        foreach (var (aug, col) in new[] { (true, false), (false, false) })
        {
            var b = new MimiqSynthesizer(iterations: 3) { Augment = aug, ColorAugment = col }.Generate(model, 4, new Rng(5));
            Assert.All(b.Images.Data, v => Assert.InRange(v, lo, hi));
            Assert.Equal(spec.Labels, b.Labels);
        }
        var settings = SynthesisSettings.For("mimiq") with { Iterations = 2, Init = "black", Augment = "roll" };
        var made = (MimiqSynthesizer)Synthesis.Create(settings);
        Assert.True(made.BlackInit && made.Augment && !made.ColorAugment);
        var none = (MimiqSynthesizer)Synthesis.Create(settings with { Init = null, Augment = "none" });
        Assert.True(!none.BlackInit && !none.Augment);
    }
}
