// PSAQ-ViT and MimiQ synthesis on a tiny Swin (16×16 grey images, patch 2, window 4: an 8×8 map with a
// shifted block, then a 4×4 stage): L_IHC over the window logits vanishes for identical heads and its
// gradient to the pixels matches finite differences; the windows' attention outputs regroup per image;
// both synthesizers are seeded, clamped, leave the model alone, and MimiQ's steps lower L_IHC.
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.Tensors;

namespace ViTQuant.Tests.DataFree;

public class SwinSynthesisTests
{
    private static SwinConfig Config => SwinConfig.FashionMnist() with
    {
        Architecture = "swin_tiny_test", ImageSize = 16, NumClasses = 5, EmbedDim = 8, Depths = new[] { 2, 2 }, NumHeads = new[] { 2, 4 },
        ClassNames = null,
    };

    private static SwinTransformer Model(ulong seed = 1) => new(Config, seed);

    /// <summary>Every head's q and k projections (weights and biases) made head 0's plus <paramref name="own"/> times their own.</summary>
    private static SwinTransformer AlignedHeads(ulong seed, float own)
    {
        var m = Model(seed);
        foreach (var b in m.Stages.SelectMany(s => s.Blocks))
        {
            int D = b.Qkv.Weight.Shape[1], heads = b.RelativePositionBiasTable.Shape[1], dh = D / heads;
            var w = b.Qkv.Weight.Data; // [3D, D]: q rows, then k rows, then v rows
            var bias = b.Qkv.Bias!.Data;
            for (int part = 0; part < 2; part++)
                for (int h = 1; h < heads; h++)
                    for (int r = 0; r < dh; r++)
                    {
                        int dst = part * D + h * dh + r, src = part * D + r;
                        bias[dst] = bias[src] + own * bias[dst];
                        for (int c = 0; c < D; c++) w[dst * D + c] = w[src * D + c] + own * w[dst * D + c];
                    }
        }
        return m;
    }

    private static Tensor Ihc(SwinTransformer model, Tensor x)
    {
        var rec = new TapRecorder(n => n.EndsWith(".attn.logits"));
        model.Forward(x, rec);
        var taps = Synthesis.BlockTaps(rec, model.Config, "attn.logits");
        Assert.Equal(new[] { x.Shape[0] * 4, 2, 16, 16 }, taps[1].Shape); // four 4×4 windows per image, shifted block
        return InterHeadCoherence.Loss(taps, ((IModelConfig)model.Config).NumPrefixTokens);
    }

    [Fact]
    public void Ihc_OverWindowLogits_IsZeroForIdenticalHeads_AndNotOtherwise()
    {
        var x = Tensor.Randn(new Rng(2), 1f, 2, 1, 16, 16);
        using var _ = Autograd.NoGrad();
        Assert.Equal(0, ((IModelConfig)Model().Config).NumPrefixTokens);
        Assert.InRange(Ihc(AlignedHeads(3, 0f), x).Item(), 0f, 1e-5f);
        Assert.True(Ihc(Model(3), x).Item() > 0.05f);
    }

    [Fact]
    public void Ihc_OnSwin_GradientToThePixelsMatchesFiniteDifferences()
    {
        var model = Model(4);
        using var frozen = Synthesis.Freeze(model);
        var x = GradCheck.Rand(new Rng(5), 1, 1, 16, 16);
        GradCheck.Check(t => Ihc(model, t[0]), new[] { x }, h: 1e-2, atol: 2e-4, rtol: 5e-2, maxProbesPerInput: 40);
        Assert.True(x.Grad!.ToArray().Max(MathF.Abs) > 2e-3, "the gradient is too small for the tolerance to mean anything");
    }

    [Fact]
    public void PerImage_GroupsTheWindowsOfEachImage()
    {
        // [B·nW, heads, T, d] with B = 2, nW = 3, heads = 2, T = 4, d = 5
        var tap = Tensor.Randn(new Rng(6), 1f, 6, 2, 4, 5);
        var y = Synthesis.PerImage(tap, 2);
        Assert.Equal(new[] { 2, 2, 12, 5 }, y.Shape);
        for (int b = 0; b < 2; b++)
            for (int w = 0; w < 3; w++)
                for (int h = 0; h < 2; h++)
                    for (int t = 0; t < 4; t++)
                        for (int d = 0; d < 5; d++)
                            Assert.Equal(tap.Data[(((b * 3 + w) * 2 + h) * 4 + t) * 5 + d], y.Data[((b * 2 + h) * 12 + w * 4 + t) * 5 + d]);
        Assert.Same(y, Synthesis.PerImage(y, 2)); // a ViT's [B, heads, N, d] passes unchanged
    }

    [Fact]
    public void MimiqSteps_LowerTheInterHeadLossOfSwin()
    {
        var model = AlignedHeads(7, 0.5f);
        var x = Tensor.Randn(new Rng(8), 1f, 4, 1, 16, 16);
        Synthesis.ClampToRange(x, Synthesis.ValidRange(model.Config));
        double before;
        using (Autograd.NoGrad()) before = Ihc(model, x).Item();
        // Without augmentation every step descends the very function measured here.
        var losses = new MimiqSynthesizer(iterations: 5, lambdaIhc: 1f, lambdaCe: 0f, lambdaTv: 0f) { Augment = false }
            .Optimize(model, x, new[] { 0, 1, 2, 3 }, new Rng(9));
        Assert.NotNull(losses.Ihc);
        double after;
        using (Autograd.NoGrad()) after = Ihc(model, x).Item();
        Assert.True(after < before - 0.01, $"L_IHC {before} -> {after}");
    }

    [Theory]
    [InlineData("psaq")]
    [InlineData("mimiq")]
    public void Synthesis_OnSwin_IsSeededClampedAndLeavesTheModelAlone(string method)
    {
        var model = Model(seed: 10);
        var before = model.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        var synth = Synthesis.Create(SynthesisSettings.For(method) with { Iterations = 4 });
        var a = synth.Generate(model, 3, new Rng(42));
        var b = synth.Generate(model, 3, new Rng(42));
        Assert.Equal(a.Images.ToArray(), b.Images.ToArray());
        Assert.Equal(a.Labels, b.Labels);
        Assert.Equal(new[] { 3, 1, 16, 16 }, a.Images.Shape);
        var (lo, hi) = Synthesis.ValidRange(model.Config)[0];
        Assert.All(a.Images.ToArray(), v => Assert.InRange(v, lo, hi));
        foreach (var (name, p) in model.StateDict()) Assert.Equal(before[name], p.ToArray());
        Assert.True(a.Losses.Total is double t && double.IsFinite(t));
        Assert.True(method == "psaq" ? a.Losses.Entropy is double e && double.IsFinite(e) : a.Losses.Ihc is double i && double.IsFinite(i));
    }
}
