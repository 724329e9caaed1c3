// PyTorch parity of the ViT/DeiT forward (and, on the small model, its backward): the fixtures of
// tools/reference/make_vit_fixtures.py, computed in float64 by torch_vit.py (timm's names and math),
// against our float32 engine. Weights and images are regenerated here from the shared hash
// (HashInit.cs); the per-parameter bit checksums and the torch-written vit_odd/model.safetensors
// prove the generator bit-exact before any logits are compared. Metric: max|ours − torch| /
// max(max|torch|, 1e-6) ≤ 1e-4 (DESIGN.md).
using System.Text.Json;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.Nn;

namespace ViTQuant.Tests.Models;

public class VitParityTests
{
    private const double Tol = 1e-4;

    internal static string FixturePath(params string[] parts) =>
        Path.Combine(new[] { AppContext.BaseDirectory, "fixtures" }.Concat(parts).ToArray());

    /// <summary>Query rows 0, stride, 2·stride, … of image 0's attention map [H, N, N] → [H, rows, N].</summary>
    private static float[] Image0Rows(Tensor probs, int stride)
    {
        int H = probs.Shape[1], N = probs.Shape[2];
        int rows = (N + stride - 1) / stride;
        var o = new float[H * rows * N];
        for (int h = 0; h < H; h++)
            for (int r = 0; r < rows; r++)
                Array.Copy(probs.Data, (h * N + r * stride) * N, o, (h * rows + r) * N, N);
        return o;
    }

    /// <summary>The fixture's state-dict order (names and shapes) equals ours, so the hash counters line up.</summary>
    private static void AssertParamOrder(FixtureFile f, VisionTransformer model)
    {
        var torchOrder = JsonSerializer.Deserialize<JsonElement[][]>(f.Metadata["param_order"])!
            .Select(e => (e[0].GetString()!, Tensor.ShapeString(e[1].EnumerateArray().Select(x => x.GetInt32()).ToArray()))).ToList();
        var ours = model.StateDict().Select(kv => (kv.Key, Tensor.ShapeString(kv.Value.Shape))).ToList();
        Assert.Equal(torchOrder, ours);
    }

    private static (Tensor Logits, Dictionary<string, Tensor> Probs) Run(VisionTransformer model, Tensor x, Func<string, bool> want)
    {
        var rec = new TapRecorder(n => n.EndsWith(".attn.probs") && want(n));
        using (Autograd.NoGrad())
        {
            var logits = model.Forward(x, rec);
            return (logits, rec.Taps);
        }
    }

    [Fact]
    public void HashGenerator_MatchesSplitMix64ReferenceValue()
    {
        // splitmix64's published first output for state 0 (the Python script asserts the same value)
        Assert.Equal(0xE220A8397B1DCDAFUL, HashInit.SplitMix64(0));
        // u is a 24-bit fraction: 2u − 1 lies in [−1, 1) on the 2^-23 grid
        for (long j = 0; j < 1000; j++)
        {
            double r = HashInit.R(7, j);
            Assert.InRange(r, -1.0, 1.0 - Math.Pow(2, -23));
            Assert.Equal(r, Math.Round(r * (1 << 23)) / (1 << 23));
        }
    }

    [Fact]
    public void DeitTiny224_LogitsAndAttention_MatchPyTorch()
    {
        var f = new FixtureFile("vit_deit_tiny.safetensors");
        var cfg = ViTConfig.FromArchitecture("deit_tiny_patch16_224");
        var model = new VisionTransformer(cfg);
        AssertParamOrder(f, model);
        var state = HashInit.State(model, ulong.Parse(f.Metadata["weight_seed"]));
        var bits = JsonSerializer.Deserialize<Dictionary<string, string>>(f.Metadata["param_bits"])!;
        Assert.Equal(bits.Count, state.Count);
        foreach (var (name, t) in state) Assert.True(ulong.Parse(bits[name]) == HashInit.BitsSum(t.Span), $"hash of {name} differs from Python");
        model.LoadStateDict(state);

        var x = HashInit.Images(ulong.Parse(f.Metadata["image_seed"]), 2, 3, 224, 224);
        int[] blocks = { 0, 5, 11 };
        var (logits, probs) = Run(model, x, n => blocks.Any(i => n == $"blocks.{i}.attn.probs"));
        Assert.Equal(new[] { 2, 1000 }, logits.Shape);
        double e = HashInit.RelErr(logits.Span, f.F32("logits").Span);
        Assert.True(e <= Tol, $"logits rel err {e:E2}");
        int stride = int.Parse(f.Metadata["row_stride"]);
        foreach (int i in blocks)
        {
            var p = probs[$"blocks.{i}.attn.probs"];
            Assert.Equal(new[] { 2, 3, 197, 197 }, p.Shape);
            double ep = HashInit.RelErr(Image0Rows(p, stride), f.F32($"blocks.{i}.attn.probs").Span);
            Assert.True(ep <= Tol, $"block {i} probs rel err {ep:E2}");
        }
        Assert.Equal(new[] { 0, 5, 11 }.Select(i => $"blocks.{i}.attn.probs").Order(), probs.Keys.Order());
    }

    [Fact]
    public void DeitTinyDistilled_TimmFolder_MatchesPyTorch()
    {
        var f = new FixtureFile(Path.Combine("vit_deit_tiny_distilled", "expected.safetensors"));
        using var dir = new TempDir();
        // timm folder: the fixture's config.json (depth 2 via model_args) beside hashed weights we write
        File.Copy(FixturePath("vit_deit_tiny_distilled", "config.json"), Path.Combine(dir.Path, "config.json"));
        var cfg = ModelIO.ParseTimmConfig(Path.Combine(dir.Path, "config.json"));
        Assert.True(cfg.Distilled);
        Assert.Equal((192, 2, 3, 1000, 198), (cfg.EmbedDim, cfg.Depth, cfg.NumHeads, cfg.NumClasses, cfg.NumTokens));
        var template = new VisionTransformer(cfg);
        AssertParamOrder(f, template);
        var state = HashInit.State(template, ulong.Parse(f.Metadata["weight_seed"]));
        SafeTensorsWriter.Write(Path.Combine(dir.Path, "model.safetensors"), state.Select(kv => (kv.Key, kv.Value)), new Dictionary<string, string> { ["format"] = "pt" });

        var model = (VisionTransformer)ModelIO.Load(dir.Path);
        Assert.Equal(cfg.ToJson(), model.Config.ToJson());
        Assert.Equal(new[] { 0.485f, 0.456f, 0.406f }, model.Config.Mean);
        var x = HashInit.Images(ulong.Parse(f.Metadata["image_seed"]), 2, 3, 224, 224);
        var (logits, probs) = Run(model, x, _ => true);
        double e = HashInit.RelErr(logits.Span, f.F32("logits").Span);
        Assert.True(e <= Tol, $"logits rel err {e:E2}");
        int stride = int.Parse(f.Metadata["row_stride"]);
        for (int i = 0; i < 2; i++)
        {
            double ep = HashInit.RelErr(Image0Rows(probs[$"blocks.{i}.attn.probs"], stride), f.F32($"blocks.{i}.attn.probs").Span);
            Assert.True(ep <= Tol, $"block {i} probs rel err {ep:E2}");
        }
    }

    [Fact]
    public void OddModel_TorchWrittenFolder_LoadsBitExactAndMatchesPyTorch()
    {
        var f = new FixtureFile(Path.Combine("vit_odd", "expected.safetensors"));
        var model = (VisionTransformer)ModelIO.Load(FixturePath("vit_odd"));
        var c = model.Config;
        Assert.Equal((20, 4, 3, 66, 2, 6, 11, 198, 7, 26), (c.ImageSize, c.PatchSize, c.InChans, c.EmbedDim, c.Depth, c.NumHeads, c.HeadDim, c.MlpHidden, c.NumClasses, c.NumTokens));
        Assert.Equal(new[] { 0.5f, 0.4f, 0.3f }, c.Mean);
        Assert.Equal(new[] { 0.25f, 0.2f, 0.3f }, c.Std);
        Assert.Equal(0.9f, c.CropPct);
        Assert.Equal(new[] { "ant", "bee", "cat", "dog", "eel", "fox", "gnu" }, c.ClassNames);
        AssertParamOrder(f, model);
        // the weights Python wrote are exactly the hash we compute (so the generator is bit-exact)
        var hashed = HashInit.State(model, ulong.Parse(f.Metadata["weight_seed"]));
        foreach (var (name, t) in model.StateDict())
            Assert.True(hashed[name].Span.SequenceEqual(t.Span), $"{name}: loaded weights differ from the hash");

        var x = HashInit.Images(ulong.Parse(f.Metadata["image_seed"]), 2, 3, 20, 20);
        var (logits, probs) = Run(model, x, _ => true);
        double e = HashInit.RelErr(logits.Span, f.F32("logits").Span);
        Assert.True(e <= Tol, $"logits rel err {e:E2}");
        for (int i = 0; i < 2; i++)
        {
            var p = probs[$"blocks.{i}.attn.probs"];
            Assert.Equal(new[] { 2, 6, 26, 26 }, p.Shape);
            double ep = HashInit.RelErr(p.Span, f.F32($"blocks.{i}.attn.probs").Span);
            Assert.True(ep <= Tol, $"block {i} probs rel err {ep:E2}");
        }
    }

    [Fact]
    public void OddModel_Gradients_MatchPyTorch()
    {
        var f = new FixtureFile(Path.Combine("vit_odd", "expected.safetensors"));
        var model = (VisionTransformer)ModelIO.Load(FixturePath("vit_odd"));
        var labels = JsonSerializer.Deserialize<int[]>(f.Metadata["grad_labels"])!;
        var x = HashInit.Images(ulong.Parse(f.Metadata["image_seed"]), 2, 3, 20, 20).RequireGrad();
        model.ZeroGrad();
        var loss = Ops.CrossEntropy(model.Forward(x), labels);
        Assert.Equal(double.Parse(f.Metadata["grad_loss"]), loss.Item(), 1e-5);
        loss.Backward();

        double e = HashInit.RelErr(x.Grad!.Span, f.F32("grad.pixel_values").Span);
        Assert.True(e <= Tol, $"grad pixel_values rel err {e:E2}");
        var pars = model.NamedParameters().ToDictionary(p => p.Name, p => p.Param);
        int compared = 0;
        foreach (var name in pars.Keys.Where(n => f.Has("grad." + n)))
        {
            var g = pars[name].Grad;
            Assert.True(g != null, $"{name} got no gradient");
            double eg = HashInit.RelErr(g!.Span, f.F32("grad." + name).Span);
            Assert.True(eg <= Tol, $"grad {name} rel err {eg:E2}");
            compared++;
        }
        Assert.Equal(14, compared);
    }
}

/// <summary>A fresh directory under the system temp folder, deleted on Dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("vitq-test-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
