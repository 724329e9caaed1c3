// MimiQ fine-tuning on a tiny Swin (swin_fmnist's geometry, width 8, hashed unit-scale weights): L_HAD
// reads the window attention outputs of every Swin block and vanishes between identical models, the
// distillation loss (L_HAD included) falls, and the fine-tuned student freezes to a checkpoint that
// reloads to the same outputs (library and CLI).
using ViTQuant.Algorithms.Qat;
using ViTQuant.Api;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Cli;
using ViTQuant.Tests.Models;

namespace ViTQuant.Tests.Qat;

public class SwinMimiqTests
{
    private static SwinConfig Tiny => SwinConfig.FashionMnist() with { EmbedDim = 8, NumHeads = new[] { 1, 2, 2 } };

    /// <summary>A Swin with unit-scale hashed weights: timm's 0.02 init leaves almost nothing to distil.</summary>
    private static SwinTransformer Teacher(ulong seed)
    {
        var m = new SwinTransformer(Tiny);
        m.LoadStateDict(HashInit.State(m, seed), strict: true);
        return m;
    }

    private static Tensor Images(int n, ulong seed) => Tensor.Randn(new Rng(seed), 1f, n, 1, 28, 28);

    private static List<Tensor> AttnOut(VisionModel m, Tensor x)
    {
        var rec = new TapRecorder(HeadAttentionDistillation.IsTap);
        using var _ = Autograd.NoGrad();
        m.Forward(x, rec);
        return m.Config.BlockPrefixes().Select(p => rec.Taps[$"{p}.attn.out"]).ToList();
    }

    [Fact]
    public void Had_ReadsEverySwinBlocksWindows_AndVanishesOnlyBetweenIdenticalModels()
    {
        Assert.True(HeadAttentionDistillation.IsTap("layers.1.blocks.0.attn.out"));
        Assert.False(HeadAttentionDistillation.IsTap("layers.1.blocks.0.attn.probs"));
        var x = Images(2, 1);
        var a = AttnOut(Teacher(2), x);
        Assert.Equal(6, a.Count);
        Assert.Equal(new[] { 2 * 16, 1, 16, 8 }, a[0].Shape); // per window: 16 windows of 4×4 per image, one head of width 8
        Assert.InRange(HeadAttentionDistillation.Loss(a, AttnOut(Teacher(2), x), 0, HadDistance.Ssim).Item(), -1e-5f, 1e-5f);
        Assert.True(HeadAttentionDistillation.Loss(a, AttnOut(Teacher(3), x), 0, HadDistance.Ssim).Item() > 0.1f);
    }

    [Fact]
    public void FineTuning_OnSwin_LowersTheDistillationLoss_AndLeavesTheTeacherAlone()
    {
        var teacher = Teacher(11);
        var train = Images(48, 1);
        var opts = new MimiqOptions { WeightBits = 3, ActivationBits = 3, Epochs = 3, BatchSize = 16, Lr = 3e-2f, Augment = false, Seed = 5 };
        var trainer = new MimiqTrainer(teacher, new[] { train }, null, opts);
        var before = teacher.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        trainer.Initialize();
        var (kd0, had0) = trainer.Measure(train);
        var result = trainer.Run();
        var (kd1, had1) = trainer.Measure(train);
        Assert.Equal(9, result.Steps);
        Assert.True(had0 > 0, $"L_HAD {had0}");
        Assert.True(kd1 + had1 < 0.85 * (kd0 + had0), $"distillation loss {kd0 + had0:G4} → {kd1 + had1:G4}");
        Assert.True(had1 < had0, $"L_HAD {had0:G4} → {had1:G4}");
        foreach (var (name, t) in teacher.StateDict()) Assert.Equal(before[name], t.ToArray());
    }

    [Fact]
    public void Facade_MimiqOnSwin_SavesACheckpointThatReloadsToTheSameOutputs()
    {
        var teacher = Teacher(13);
        var result = Vitq.Quantize(teacher, CalibrationData.Gaussian(teacher.Config, 16), new QuantizeOptions { Method = "mimiq", FineTuneEpochs = 1, Seed = 2 });
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, "q.safetensors");
        result.Save(path);
        var loaded = QuantizedCheckpoint.Load(path);
        Assert.IsType<SwinTransformer>(loaded.Model);
        var x = Images(2, 14);
        using var _ = Autograd.NoGrad();
        Assert.Equal(result.Model.Model.Infer(x, result.Model).ToArray(), loaded.Model.Infer(x, loaded).ToArray());
    }

    [Fact]
    public void Cli_QuantizeMimiq_OnSwin_ThenEvalReportsTheSameAccuracy()
    {
        using var dir = new TempDir();
        string model = Path.Combine(dir.Path, "swin.safetensors"), q = Path.Combine(dir.Path, "m.safetensors");
        ModelIO.Save(Teacher(15), model);
        var r = VitqProcess.Run(new[] { "quantize", "--model", model, "--method", "mimiq", "--data", "gaussian", "--data-size", "16", "--batch", "8",
            "--epochs", "1", "--limit", "64", "--threads", "1", "--out", q, "--json" }, timeoutSeconds: 240);
        VitqProcess.AssertSuccess(r);
        var j = System.Text.Json.JsonDocument.Parse(r.Stdout).RootElement;
        var e = VitqProcess.Run(new[] { "eval", "--model", q, "--limit", "64", "--threads", "1", "--json" }, timeoutSeconds: 240);
        VitqProcess.AssertSuccess(e);
        Assert.Equal(j.GetProperty("quant_top1").GetDouble(), System.Text.Json.JsonDocument.Parse(e.Stdout).RootElement.GetProperty("top1").GetDouble(), 9);
        Assert.False(File.Exists(q + ".resume.safetensors"));
    }
}
