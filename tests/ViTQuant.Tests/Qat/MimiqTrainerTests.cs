// MimiQ fine-tuning on tiny random models (28×28×1, patch 4, dim 32, depth 2, 4 heads): the
// distillation loss falls on the training images, the student moves towards the teacher on held-out
// inputs, an interrupted-and-resumed run ends bit-identical to an uninterrupted one, the fine-tuned
// student freezes to integer weights and reloads with bit-identical logits, and bad settings are
// rejected with ViTQuantException.
using ViTQuant.Algorithms.Qat;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Models;

namespace ViTQuant.Tests.Qat;

public class MimiqTrainerTests
{
    private static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };

    /// <summary>A random teacher with unit-scale weights (HashInit): timm's 0.02 init gives near-constant outputs with nothing to distil.</summary>
    private static VisionTransformer Teacher(ulong seed) => HashInit.Apply(new VisionTransformer(Tiny), seed);

    private static Tensor Images(int n, ulong seed) => Tensor.Randn(new Rng(seed), 1f, n, 1, 28, 28);

    /// <summary>Mean T²·KL(teacher ‖ student) of the logits on x, no gradient.</summary>
    private static double LogitKl(VisionTransformer teacher, QuantizedModel student, Tensor x)
    {
        using var _ = Autograd.NoGrad();
        return Ops.KlDivergence(student.Forward(x), teacher.Forward(x), 1f).Item();
    }

    [Fact]
    public void FineTuningLowersTheDistillationLossAndBringsTheStudentCloser()
    {
        var teacher = Teacher(11);
        var train = Images(64, 1);
        var heldOut = Images(64, 2);
        // W3A3 so that quantization hurts visibly; a high rate so that 12 steps move the student.
        var opts = new MimiqOptions { WeightBits = 3, ActivationBits = 3, Epochs = 3, BatchSize = 16, Lr = 3e-2f, Augment = false, Seed = 5 };
        var trainer = new MimiqTrainer(teacher, new[] { train }, null, opts);
        var teacherBefore = teacher.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        trainer.Initialize();
        var (kd0, had0) = trainer.Measure(train);
        double kl0 = LogitKl(teacher, trainer.Student, heldOut);
        var steps = new List<MimiqStep>();
        trainer.OnStep = steps.Add;
        var result = trainer.Run();
        var (kd1, had1) = trainer.Measure(train);
        double kl1 = LogitKl(teacher, result.Student, heldOut);

        Assert.Equal(12, steps.Count);
        Assert.Equal(12, result.Steps);
        Assert.All(steps, s => Assert.True(double.IsFinite(s.Loss) && Math.Abs(s.Loss - (s.Kd + s.Had)) < 1e-4 * Math.Max(1, s.Loss)));
        Assert.True(steps[0].Lr > steps[^1].Lr && steps[^1].Lr > 0, "cosine decay");
        Assert.True(kd1 + had1 < 0.85 * (kd0 + had0), $"distillation loss {kd0 + had0:G4} → {kd1 + had1:G4}");
        Assert.True(had1 < had0, $"L_HAD {had0:G4} → {had1:G4}");
        Assert.True(kl1 < 0.9 * kl0, $"held-out logit KL {kl0:G4} → {kl1:G4}");
        Assert.Equal(3, result.History.Count);
        // The teacher is never touched.
        foreach (var (name, t) in teacher.StateDict()) Assert.Equal(teacherBefore[name], t.ToArray());
    }

    [Fact]
    public void PercentileStartIsCloserToTheTeacherThanTheSpecsMeanAbsStart()
    {
        var teacher = Teacher(13);
        var train = Images(16, 4);
        var heldOut = Images(32, 5);
        double Start(LsqInit init)
        {
            var opts = new MimiqOptions { WeightBits = 4, ActivationBits = 4, BatchSize = 16, Augment = false, LsqInit = init, Seed = 2 };
            var trainer = new MimiqTrainer(teacher, new[] { train }, null, opts);
            var acts = trainer.Student.Plan.Activations.Where(r => r.Spec != null).Select(r => r.Spec!).ToList();
            Assert.All(acts, a => Assert.Equal(init != LsqInit.Spec, a.RangeInit));
            trainer.Initialize();
            return LogitKl(teacher, trainer.Student, heldOut);
        }
        double spec = Start(LsqInit.Spec), pct = Start(LsqInit.Percentile);
        Assert.True(pct < 0.8 * spec, $"held-out logit KL at the start: spec {spec:G4}, percentile {pct:G4}");
    }

    [Theory]
    [InlineData(HadDistance.Mse)]
    [InlineData(HadDistance.L1)]
    [InlineData(HadDistance.Kl)]
    [InlineData(HadDistance.Off)]
    public void AblationDistancesTrain(HadDistance d)
    {
        var teacher = Teacher(12);
        var train = Images(16, 3);
        var opts = new MimiqOptions { WeightBits = 3, ActivationBits = 3, Epochs = 3, BatchSize = 16, Lr = 3e-3f, Distance = d, Seed = 1, Augment = false };
        var trainer = new MimiqTrainer(teacher, new[] { train }, null, opts);
        trainer.Initialize();
        var (kd0, had0) = trainer.Measure(train);
        trainer.Run();
        var (kd1, had1) = trainer.Measure(train);
        Assert.True(kd1 + had1 < kd0 + had0, $"{d}: {kd0 + had0:G4} → {kd1 + had1:G4}");
        if (d == HadDistance.Off) Assert.Equal(0, had1);
    }

    [Fact]
    public void ResumedRunEndsBitIdenticalToAnUninterruptedOne()
    {
        var teacher = Teacher(13);
        // Two tensors, 20 images with labels: exercises the image list, partial last batches and CE.
        var images = new[] { Images(12, 4), Images(8, 5) };
        var labels = Enumerable.Range(0, 20).Select(i => i % 10).ToArray();
        var opts = new MimiqOptions { Epochs = 2, BatchSize = 8, Lr = 1e-3f, CeWeight = 0.5f, Seed = 9 };
        using var dir = new TempDir();

        var full = new MimiqTrainer(teacher, images, labels, opts).Run();

        var ckpt = Path.Combine(dir.Path, "cut.safetensors");
        var first = new MimiqTrainer(teacher, images, labels, opts) { OnEpoch = e => { if (e.Epoch == 1) throw new OperationCanceledException("simulated kill"); } };
        Assert.Throws<OperationCanceledException>(() => first.Run(ckpt));
        Assert.True(File.Exists(ckpt));
        var second = new MimiqTrainer(teacher, images, labels, opts);
        var resumedEpochs = new List<int>();
        second.OnEpoch = e => resumedEpochs.Add(e.Epoch);
        var resumed = second.Run(ckpt);

        Assert.Equal(new[] { 2 }, resumedEpochs);
        Assert.Equal(full.History.Select(h => h.Loss), resumed.History.Select(h => h.Loss));
        var a = full.Student.Model.StateDict();
        foreach (var (name, t) in resumed.Student.Model.StateDict()) Assert.Equal(a[name].ToArray(), t.ToArray());
        foreach (var (point, q) in resumed.Student.ActivationQuantizers)
        {
            var want = full.Student.ActivationQuantizers[point].State().ToDictionary(s => s.Name, s => s.Value.ToArray());
            foreach (var (n, v) in q.State()) Assert.Equal(want[n], v.ToArray());
        }
        var x = Images(4, 6);
        using (Autograd.NoGrad()) Assert.Equal(full.Student.Forward(x).ToArray(), resumed.Student.Forward(x).ToArray());

        // A checkpoint from other settings is refused.
        var other = new MimiqTrainer(teacher, images, labels, opts with { Lr = 2e-3f });
        var e = Assert.Throws<ViTQuantException>(() => other.Run(ckpt));
        Assert.Contains("different fine-tuning settings", e.Message);
        var otherData = new MimiqTrainer(teacher, new[] { Images(20, 7) }, labels, opts);
        Assert.Contains("different teacher or image set", Assert.Throws<ViTQuantException>(() => otherData.Run(ckpt)).Message);
    }

    [Fact]
    public void FineTunedStudentFreezesAndReloadsBitIdentically()
    {
        var teacher = Teacher(14);
        var opts = new MimiqOptions { WeightBits = 4, ActivationBits = 4, Epochs = 1, BatchSize = 8, Seed = 2 };
        var student = new MimiqTrainer(teacher, new[] { Images(16, 8) }, null, opts).Run().Student;
        var x = Images(6, 9);
        Tensor fake;
        using (Autograd.NoGrad()) fake = student.Forward(x);
        var codes = QuantizedCheckpoint.Freeze(student);
        Tensor frozen;
        using (Autograd.NoGrad()) frozen = student.Forward(x);
        // Freezing replaces the weights by the very grid values the dynamic quantizer produced.
        Assert.Equal(fake.ToArray(), frozen.ToArray());
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, "mimiq.safetensors");
        QuantizedCheckpoint.Save(student, codes, path);
        var loaded = QuantizedCheckpoint.Load(path);
        Tensor after;
        using (Autograd.NoGrad()) after = loaded.Forward(x);
        Assert.Equal(frozen.ToArray(), after.ToArray());
        Assert.Equal("mimiq", loaded.Plan.Name);
        // Per output channel, symmetric 4-bit: at most 16 distinct values per row, codes in [−8, 7].
        var w = ((VisionTransformer)loaded.Model).Blocks[0].Fc1.Weight;
        for (int r = 0; r < w.Shape[0]; r++)
            Assert.True(w.Data.Skip(r * w.Shape[1]).Take(w.Shape[1]).Distinct().Count() <= 16);
        Assert.All(codes.Values, c => Assert.True(c.Signed != null && c.Signed.All(v => v >= -8 && v <= 7)));
    }

    [Fact]
    public void BadSettingsAndDataThrow()
    {
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { WeightBits = 9 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { ActivationBits = 1 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { Epochs = 0 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { BatchSize = 0 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { Lr = 0 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { Lr = float.NaN });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { Temperature = -1 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { HadWeight = -1 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { Momentum = 1 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions { CropScaleMin = 0 });
        Assert.Throws<ViTQuantException>(() => new MimiqOptions() with { KdWeight = float.PositiveInfinity });
        var off = new MimiqOptions { KdWeight = 0, Distance = HadDistance.Off };
        Assert.Contains("nothing to train", Assert.Throws<ViTQuantException>(() => off.Validated()).Message);

        var teacher = Teacher(15);
        var ok = new MimiqOptions();
        Assert.Throws<ViTQuantException>(() => new MimiqTrainer(teacher, Array.Empty<Tensor>(), null, ok));
        Assert.Throws<ViTQuantException>(() => new MimiqTrainer(teacher, new[] { Tensor.Zeros(2, 3, 28, 28) }, null, ok));
        Assert.Throws<ViTQuantException>(() => new MimiqTrainer(teacher, new[] { Images(4, 1) }, new[] { 1, 2 }, ok));
        Assert.Throws<ViTQuantException>(() => new MimiqTrainer(teacher, new[] { Images(2, 1) }, new[] { 1, 10 }, ok));
        Assert.Throws<ViTQuantException>(() => new MimiqTrainer(teacher, new[] { Images(2, 1) }, null, ok with { CeWeight = 1 }));
        Assert.Throws<ViTQuantException>(() => new MimiqTrainer(teacher, new[] { Images(2, 1) }, null, off));
        var nan = Images(2, 1);
        nan.Data[5] = float.NaN;
        Assert.Throws<ViTQuantException>(() => new MimiqTrainer(teacher, new[] { nan }, null, ok));
    }

    [Fact]
    public void OptionsRoundTripThroughJson()
    {
        var o = new MimiqOptions { WeightBits = 5, Distance = HadDistance.Kl, CropScaleMin = 0.3, Seed = 77, CeWeight = 0.25f };
        Assert.Equal(o, MimiqOptions.FromJson(o.ToJson(), "test"));
        Assert.Throws<ViTQuantException>(() => MimiqOptions.FromJson("{\"WeightBits\": 12}", "test"));
        Assert.Throws<ViTQuantException>(() => MimiqOptions.FromJson("{", "test"));
    }
}
