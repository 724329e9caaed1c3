// VisionTransformer runs its last block past the attention on the head's tokens only (the file header there): the
// logits are the full block's bits, the gradients the same up to float rounding, and the narrowing happens only
// where nothing can see the rows it drops.
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Models;

public class LastBlockRowsTests
{
    private static ViTConfig Grey => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };

    // Two prefix tokens (class and distillation), three channels, one block.
    private static ViTConfig Distilled => new()
    {
        Architecture = "deit_test", ImageSize = 32, PatchSize = 8, InChans = 3, NumClasses = 7, EmbedDim = 48, Depth = 1,
        NumHeads = 3, MlpRatio = 4f, Distilled = true,
    };

    private static ViTConfig Pick(string name) => name == "grey" ? Grey : Distilled;

    private static T Full<T>(Func<T> f)
    {
        VisionTransformer.FullLastBlock = true;
        try { return f(); }
        finally { VisionTransformer.FullLastBlock = false; }
    }

    [Theory]
    [InlineData("grey")]
    [InlineData("distilled")]
    public void LogitsAreTheFullLastBlocksBits(string config)
    {
        var c = Pick(config);
        var m = new VisionTransformer(c, seed: 3);
        Assert.Equal(c.NumPrefixTokens, m.HeadTokens(null));
        var x = Tensor.Randn(new Rng(4), 1f, 9, c.InChans, c.ImageSize, c.ImageSize);
        float[] want;
        using (Autograd.NoGrad()) want = Full(() => m.Forward(x).ToArray());
        using (Autograd.NoGrad()) Assert.Equal(want, m.Forward(x).ToArray());
        Assert.Equal(want, m.Forward(x).ToArray()); // recorded for a backward
        using (TensorArena.Scope()) Assert.Equal(want, m.Infer(x).ToArray());
        Assert.Equal(want, Full(() => m.Infer(x).ToArray()));
    }

    [Theory]
    [InlineData("grey")]
    [InlineData("distilled")]
    public void GradientsMatchTheFullLastBlocks(string config)
    {
        var c = Pick(config);
        var labels = Enumerable.Range(0, 6).Select(i => i % c.NumClasses).ToArray();
        var x = Tensor.Randn(new Rng(5), 1f, 6, c.InChans, c.ImageSize, c.ImageSize);
        (float[] Input, Dictionary<string, float[]> Params) Grads(bool full)
        {
            var m = new VisionTransformer(c, seed: 8);
            var xi = x.Clone().RequireGrad();
            VisionTransformer.FullLastBlock = full;
            try { Ops.CrossEntropy(m.Forward(xi), labels).Backward(); }
            finally { VisionTransformer.FullLastBlock = false; }
            return (xi.Grad!.ToArray(), m.NamedParameters().ToDictionary(p => p.Name, p => p.Param.Grad!.ToArray()));
        }
        var (fullX, fullP) = Grads(full: true);
        var (rowsX, rowsP) = Grads(full: false);
        AssertClose(fullX, rowsX, "input");
        Assert.Equal(fullP.Keys, rowsP.Keys);
        foreach (var (name, g) in fullP) AssertClose(g, rowsP[name], name);
    }

    [Fact]
    public void OnlyHooksThatCannotSeeTheDroppedRowsNarrow()
    {
        var m = new VisionTransformer(Grey, seed: 2);
        var x = Tensor.Randn(new Rng(6), 1f, 4, 1, 28, 28);
        // Taps up to the last attention: narrowed, and the taps are the whole tensors.
        var attn = new TapRecorder(n => n == "blocks.1.attn.logits" || n == "blocks.0.mlp.act");
        Assert.Equal(1, m.HeadTokens(attn));
        var logits = m.Forward(x, attn).ToArray();
        Assert.Equal(new[] { 4, 4, 50, 50 }, attn.Taps["blocks.1.attn.logits"].Shape);
        Assert.Equal(new[] { 4, 50, 64 }, attn.Taps["blocks.0.mlp.act"].Shape);
        Assert.Equal(Full(() => m.Forward(x).ToArray()), logits);
        // A probabilities tap takes the op graph (and, without gradients, the two-kernel path): narrowed there too.
        var probs = new TapRecorder(n => n == "blocks.1.attn.probs");
        Assert.Equal(1, m.HeadTokens(probs));
        Assert.Equal(logits, m.Forward(x, probs).ToArray());
        Assert.Equal(new[] { 4, 4, 50, 50 }, probs.Taps["blocks.1.attn.probs"].Shape);
        using (Autograd.NoGrad()) Assert.Equal(logits, m.Forward(x, new TapRecorder(n => n == "blocks.1.attn.probs")).ToArray());
        // A tap after the last attention sees every token.
        var act = new TapRecorder(n => n == "blocks.1.mlp.act");
        Assert.Equal(0, m.HeadTokens(act));
        m.Forward(x, act);
        Assert.Equal(new[] { 4, 50, 64 }, act.Taps["blocks.1.mlp.act"].Shape);
        // Quantizers see every token; average pooling reads every token.
        var qm = new QuantizedModel(m.Clone(), QuantPresets.Create("minmax", 8, 8));
        Assert.Equal(0, ((VisionTransformer)qm.Model).HeadTokens(qm));
        Assert.Equal(0, new VisionTransformer(Grey with { GlobalPool = "avg", ClassToken = false }, seed: 1).HeadTokens(null));
    }

    [Theory]
    [InlineData("minmax", 1)]   // per-tensor static grids: row by row
    [InlineData("mimiq", 1)]    // LSQ per tensor
    [InlineData("adfq", 0)]     // ADFQ's per-patch grid at fc1 is per token position
    public void QuantizedEvaluationNarrowsWhereItsQuantizersWorkRowByRow(string method, int rows)
    {
        var qm = new QuantizedModel(new VisionTransformer(Grey, seed: 4), QuantPresets.Create(method, 4, 4));
        var vt = (VisionTransformer)qm.Model;
        var rng = new Rng(9);
        using (Autograd.NoGrad()) Assert.Equal(0, vt.HeadTokens(qm)); // calibrating: observers see every row
        qm.Calibrate(new[] { Tensor.Randn(rng, 1f, 16, 1, 28, 28) });
        Assert.Equal(0, vt.HeadTokens(qm)); // with gradients: every row, so training's numbers do not move
        using (Autograd.NoGrad()) Assert.Equal(rows, vt.HeadTokens(qm));
        var x = Tensor.Randn(rng, 1f, 7, 1, 28, 28);
        float[] want;
        using (Autograd.NoGrad()) want = Full(() => qm.Model.Forward(x, qm).ToArray());
        using (Autograd.NoGrad()) Assert.Equal(want, qm.Model.Forward(x, qm).ToArray());
        using (Autograd.NoGrad()) using (TensorArena.Scope()) Assert.Equal(want, qm.Model.Infer(x, qm).ToArray());
        qm.Mode = QuantMode.Float;
        using (Autograd.NoGrad()) Assert.Equal(1, vt.HeadTokens(qm));
    }

    private static void AssertClose(float[] want, float[] got, string what)
    {
        Assert.Equal(want.Length, got.Length);
        double scale = want.Max(v => Math.Abs((double)v));
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - got[i]) <= 1e-5 * scale + 1e-7, $"{what}[{i}]: {got[i]} vs {want[i]} (max |g| {scale})");
    }
}
