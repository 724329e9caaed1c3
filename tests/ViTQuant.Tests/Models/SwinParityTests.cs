// PyTorch parity of the Swin forward and backward: fixtures of tools/reference/make_swin_fixtures.py,
// computed in float64 by torch_swin.py (checked equal to current timm's SwinTransformer, 0.0 difference in
// float64, when the fixtures were written), against our float32 engine. Weights and images are regenerated
// from the shared hash (HashInit.cs); the torch-written swin_odd/model.safetensors and the Swin-T bit sums
// prove the generator and the state-dict order first. Metric: max|ours − torch| / max|torch| ≤ 1e-4.
using System.Text.Json;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.Nn;

namespace ViTQuant.Tests.Models;

public class SwinParityTests
{
    private const double Tol = 1e-4;

    private static SwinConfig OddConfig()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(VitParityTests.FixturePath("swin_odd", "config.json")));
        var cfg = SwinConfig.FromTimmConfig(doc.RootElement, "config.json");
        Assert.Equal(new[] { "a", "b", "c", "d", "e" }, cfg.ClassNames);
        return cfg;
    }

    private static void AssertParamOrder(FixtureFile f, SwinTransformer model)
    {
        var torchOrder = JsonSerializer.Deserialize<JsonElement[][]>(f.Metadata["param_order"])!
            .Select(e => (e[0].GetString()!, Tensor.ShapeString(e[1].EnumerateArray().Select(x => x.GetInt32()).ToArray()))).ToList();
        Assert.Equal(torchOrder, model.StateDict().Select(kv => (kv.Key, Tensor.ShapeString(kv.Value.Shape))).ToList());
    }

    private static (Tensor Logits, Dictionary<string, Tensor> Probs) Run(SwinTransformer model, Tensor x)
    {
        var rec = new TapRecorder(n => n.EndsWith(".attn.probs"));
        using (Autograd.NoGrad()) return (model.Forward(x, rec), rec.Taps);
    }

    [Fact]
    public void OddConfig_HasTimmsWindowsShiftsAndPadding()
    {
        var c = OddConfig();
        Assert.Equal(new[] { 14, 7, 3 }, Enumerable.Range(0, 3).Select(c.DeclaredResolution));
        Assert.Equal(new[] { 14, 7, 4 }, Enumerable.Range(0, 3).Select(c.ActualResolution));
        Assert.Equal(new[] { 4, 4, 3 }, Enumerable.Range(0, 3).Select(c.StageWindow)); // shrunk to the 3×3 declared map
        Assert.Equal(new[] { 0, 2, 0, 2, 0, 0 }, new[] { c.BlockShift(0, 0), c.BlockShift(0, 1), c.BlockShift(1, 0), c.BlockShift(1, 1), c.BlockShift(2, 0), c.BlockShift(2, 1) });
    }

    [Fact]
    public void OddModel_TorchWrittenWeights_EqualTheHash()
    {
        var f = new FixtureFile("swin_odd/expected.safetensors");
        var model = new SwinTransformer(OddConfig());
        AssertParamOrder(f, model);
        var state = HashInit.State(model, ulong.Parse(f.Metadata["weight_seed"]));
        var file = SafeTensorsFile.Read(VitParityTests.FixturePath("swin_odd", "model.safetensors"));
        Assert.Equal(state.Keys.OrderBy(k => k), file.Names.OrderBy(k => k));
        foreach (var (name, t) in state) Assert.True(t.Span.SequenceEqual(file.GetTensor(name).Span), $"{name} differs from the torch-written weights");
    }

    [Fact]
    public void OddModel_LogitsAndEveryWindowAttention_MatchPyTorch()
    {
        var f = new FixtureFile("swin_odd/expected.safetensors");
        var model = new SwinTransformer(OddConfig());
        model.LoadStateDict(HashInit.State(model, ulong.Parse(f.Metadata["weight_seed"])));
        var (logits, probs) = Run(model, HashInit.Images(ulong.Parse(f.Metadata["image_seed"]), 2, 1, 28, 28));
        double e = HashInit.RelErr(logits.Span, f.F32("logits").Span);
        Assert.True(e <= Tol, $"logits rel err {e:E2}");
        Assert.Equal(6, probs.Count);
        foreach (var (name, p) in probs)
        {
            var expected = f.F32(name);
            Assert.Equal(Tensor.ShapeString(expected.Shape), Tensor.ShapeString(p.Shape)); // [B·nW, heads, M², M²]
            double ep = HashInit.RelErr(p.Span, expected.Span);
            Assert.True(ep <= Tol, $"{name} rel err {ep:E2}");
        }
    }

    [Fact]
    public void OddModel_Gradients_MatchPyTorch()
    {
        var f = new FixtureFile("swin_odd/expected.safetensors");
        var model = new SwinTransformer(OddConfig());
        model.LoadStateDict(HashInit.State(model, ulong.Parse(f.Metadata["weight_seed"])));
        var labels = JsonSerializer.Deserialize<int[]>(f.Metadata["grad_labels"])!;
        var x = HashInit.Images(ulong.Parse(f.Metadata["image_seed"]), 2, 1, 28, 28).RequireGrad();
        model.ZeroGrad();
        var loss = Ops.CrossEntropy(model.Forward(x), labels);
        Assert.Equal(double.Parse(f.Metadata["grad_loss"]), loss.Item(), 1e-5);
        loss.Backward();
        double e = HashInit.RelErr(x.Grad!.Span, f.F32("grad.pixel_values").Span);
        Assert.True(e <= Tol, $"grad pixel_values rel err {e:E2}");
        var pars = model.NamedParameters().ToDictionary(p => p.Name, p => p.Param);
        int checkedCount = 0;
        foreach (var name in pars.Keys.Where(n => f.Has("grad." + n)))
        {
            var g = pars[name].Grad;
            Assert.True(g != null, $"{name} got no gradient");
            double eg = HashInit.RelErr(g!.Span, f.F32("grad." + name).Span);
            Assert.True(eg <= Tol, $"grad {name} rel err {eg:E2}");
            checkedCount++;
        }
        Assert.Equal(10, checkedCount);
    }

    [Fact]
    public void SwinTiny224_LogitsAndAttention_MatchPyTorch()
    {
        var f = new FixtureFile("swin_tiny.safetensors");
        var model = new SwinTransformer(SwinConfig.FromArchitecture("swin_tiny_patch4_window7_224"));
        AssertParamOrder(f, model);
        var state = HashInit.State(model, ulong.Parse(f.Metadata["weight_seed"]));
        var bits = JsonSerializer.Deserialize<Dictionary<string, string>>(f.Metadata["param_bits"])!;
        foreach (var (name, t) in state) Assert.True(ulong.Parse(bits[name]) == HashInit.BitsSum(t.Span), $"hash of {name} differs from Python");
        model.LoadStateDict(state);
        var (logits, probs) = Run(model, HashInit.Images(ulong.Parse(f.Metadata["image_seed"]), 1, 3, 224, 224));
        double e = HashInit.RelErr(logits.Span, f.F32("logits").Span);
        Assert.True(e <= Tol, $"logits rel err {e:E2}");
        var shifted = probs["layers.0.blocks.1.attn.probs"]; // [64 windows, 3, 49, 49]
        int win = 3 * 49 * 49;
        var picked = new[] { 0, 7, 63 }.SelectMany(w => shifted.Data.Skip(w * win).Take(win)).ToArray();
        double es = HashInit.RelErr(picked, f.F32("layers.0.blocks.1.attn.probs").Span);
        Assert.True(es <= Tol, $"shifted-window probs rel err {es:E2}");
        double el = HashInit.RelErr(probs["layers.3.blocks.1.attn.probs"].Span, f.F32("layers.3.blocks.1.attn.probs").Span);
        Assert.True(el <= Tol, $"last-stage probs rel err {el:E2}");
    }

    [Fact]
    public void Config_WhatTimmCannotRun_IsOneClearError()
    {
        // 13×13 grid, window 3: stage 1 declares 6×6 (mask for 6×6, 4 windows) but merging pads to 7×7 → 9×9 (9
        // windows), and its odd blocks shift: timm fails on the mask's shape (checked with timm's own code).
        var bad = new SwinConfig { ImageSize = 52, PatchSize = 4, EmbedDim = 8, Depths = new[] { 2, 2 }, NumHeads = new[] { 2, 2 }, WindowSize = 3 };
        var ex = Assert.Throws<ViTQuantException>(() => bad.Validated());
        Assert.Contains("stage 1", ex.Message);
        Assert.Contains("divisible by 2^1", ex.Message);
        Assert.Throws<ViTQuantException>(() => (bad with { ImageSize = 54 }).Validated()); // 54 not divisible by patch 4
        // 7×7 grid, window 2: stage 1 declares 3×3, merging pads to 4×4, both pad to 4×4 for the window: timm runs it.
        var padded = (bad with { ImageSize = 28, WindowSize = 2 }).Validated();
        Assert.Equal(1, padded.BlockShift(1, 1));
        var m = new SwinTransformer(padded, seed: 3);
        using (Autograd.NoGrad()) Assert.Equal(new[] { 2, 1000 }, m.Forward(Tensor.Randn(new Rng(1), 1f, 2, 3, 28, 28)).Shape);
        // A window larger than the map is what timm accepts: shrunk, unshifted.
        var small = (bad with { ImageSize = 28, WindowSize = 9 }).Validated();
        Assert.Equal(7, small.StageWindow(0));
        Assert.Equal(0, small.BlockShift(0, 1));
    }

    [Fact]
    public void MissingRelativePositionTable_IsNamed()
    {
        var model = new SwinTransformer(OddConfig());
        var state = model.StateDict().Where(kv => kv.Key != "layers.1.blocks.1.attn.relative_position_bias_table").ToDictionary(kv => kv.Key, kv => kv.Value);
        var ex = Assert.Throws<ViTQuantException>(() => model.LoadStateDict(state, strict: true));
        Assert.Contains("layers.1.blocks.1.attn.relative_position_bias_table", ex.Message);
    }
}
