// Vitq.Train: a tiny model trained on generated images — every step reported, the model written with its
// history, resume state that continues exactly where a cancelled run stopped, and options or paths that
// do not fit rejected, naming the property or parameter, before anything is reported or written.
using ViTQuant.Api;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.Data;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Api;

public class TrainFacadeTests
{
    private static FunctionDataset Images(int n = 32) => new(n, 1, 8, 8, (i, k) => ((i * 13 + k * 5) % 11) / 11f + (i % 5) * 0.1f, classes: 5);

    private static readonly TrainOptions Small = new() { Epochs = 2, BatchSize = 8, Lr = 1e-2f, MinLr = 0f, Seed = 3 };

    private static float[] Logits(VisionModel m) => Vitq.Infer(m, Tensor.Randn(new Rng(9), 1f, 2, 1, 8, 8)).ToArray();

    [Fact]
    public void Train_ReportsEveryStep_WritesTheTrainedModel_AndNoResumeState()
    {
        using var dir = new TinyModels.TempDir();
        var model = Vitq.CreateModel(TinyModels.Config(), seed: 1);
        var before = Logits(model);
        var progress = new OperationRecorder();
        TrainPlan? plan = null;
        int epochs = 0;
        string outPath = dir.File("m.safetensors"), resume = dir.File("m.resume.safetensors");
        var res = Vitq.Train(model, Images(), Images(10), Small, outPath, resume, progress: progress, onStart: p => plan = p, onEpoch: _ => epochs++);

        Assert.Equal(new TrainPlan(32, 4, 8), plan);
        Assert.Equal(2, epochs);
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i), progress.Reports.Select(p => p.Step));
        Assert.All(progress.Reports, p => { Assert.Equal("train", p.Stage); Assert.Equal(8, p.Total); Assert.StartsWith("epoch ", p.Message); });
        Assert.Equal(2, res.History.Count);
        Assert.NotNull(res.FinalValTop1);
        Assert.NotEqual(before, Logits(model));
        // The file holds the trained weights; the resume state is gone once the model is written.
        Assert.Equal(Logits(model), Logits(Vitq.LoadModel(outPath)));
        Assert.Equal(new[] { "m.safetensors" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void Cancel_KeepsOnlyTheResumeState_AndTheResumedRunMatchesAnUninterruptedOne()
    {
        using var dir = new TinyModels.TempDir();
        string outPath = dir.File("m.safetensors"), resume = dir.File("m.resume.safetensors");
        var uninterrupted = Vitq.CreateModel(TinyModels.Config(), seed: 1);
        Vitq.Train(uninterrupted, Images(), null, Small, dir.File("ref.safetensors"));
        File.Delete(dir.File("ref.safetensors"));

        // Without resume state a cancelled run leaves nothing.
        using (var cts = new CancellationTokenSource())
            Assert.ThrowsAny<OperationCanceledException>(() => Vitq.Train(Vitq.CreateModel(TinyModels.Config(), seed: 1), Images(), null, Small, outPath,
                progress: new OperationRecorder(p => { if (p.Step >= 2) cts.Cancel(); }), cancellationToken: cts.Token));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));

        // Cancelled in the second epoch: only the first epoch's resume state is left.
        var progress = new OperationRecorder();
        using (var cts = new CancellationTokenSource())
        {
            var rec = new OperationRecorder(p => { progress.Report(p); if (p.Step >= 6) cts.Cancel(); });
            Assert.ThrowsAny<OperationCanceledException>(() => Vitq.Train(Vitq.CreateModel(TinyModels.Config(), seed: 1), Images(), null, Small, outPath, resume,
                progress: rec, cancellationToken: cts.Token));
        }
        Assert.Equal(6, progress.Reports[^1].Step);
        Assert.Equal(new[] { "m.resume.safetensors" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));

        var resumed = Vitq.CreateModel(TinyModels.Config(), seed: 1);
        var rest = new OperationRecorder();
        var res = Vitq.Train(resumed, Images(), null, Small, outPath, resume, progress: rest);
        Assert.Equal(2, res.History.Count);
        Assert.Equal(5, rest.Reports[0].Step); // the second epoch only
        Assert.Equal(Logits(uninterrupted), Logits(resumed));
        Assert.Equal(new[] { "m.safetensors" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("Epochs")]
    [InlineData("BatchSize")]
    [InlineData("Lr")]
    [InlineData("MinLr")]
    [InlineData("WarmupEpochs")]
    [InlineData("LabelSmoothing")]
    [InlineData("EmaDecay")]
    public void BadOptions_AreRejected_NamingTheProperty_BeforeAnyWork(string property)
    {
        using var dir = new TinyModels.TempDir();
        var o = property switch
        {
            "Epochs" => Small with { Epochs = 0 },
            "BatchSize" => Small with { BatchSize = 0 },
            "Lr" => Small with { Lr = float.NaN },
            "MinLr" => Small with { MinLr = 1f },
            "WarmupEpochs" => Small with { WarmupEpochs = 2 },
            "LabelSmoothing" => Small with { LabelSmoothing = 1f },
            _ => Small with { EmaDecay = 1f },
        };
        var model = TinyModels.Model();
        var before = Logits(model);
        var progress = new OperationRecorder();
        var e = Assert.Throws<ArgumentException>(() => Vitq.Train(model, Images(), null, o, dir.File("m.safetensors"), dir.File("r.safetensors"), progress: progress));
        Assert.Equal(property, e.ParamName);
        Assert.Empty(progress.Reports);
        Assert.Equal(before, Logits(model));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }

    [Fact]
    public void BadPaths_AndData_AreRejected_BeforeAnyStep()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model();
        File.WriteAllText(dir.File("taken.safetensors"), "x");
        var progress = new OperationRecorder();
        Assert.Equal("outPath", Assert.Throws<ArgumentException>(() => Vitq.Train(model, Images(), null, Small, dir.File("taken.safetensors"), progress: progress)).ParamName);
        Assert.Equal("outPath", Assert.Throws<ArgumentException>(() => Vitq.Train(model, Images(), null, Small, dir.Path, progress: progress)).ParamName);
        Assert.Equal("resumePath", Assert.Throws<ArgumentException>(() => Vitq.Train(model, Images(), null, Small, dir.File("m.safetensors"), dir.File("m.safetensors"), progress: progress)).ParamName);
        // Images of another shape, and fewer images than one batch: the library's one-line error, still before any step.
        Assert.Contains("8×8", Assert.Throws<ViTQuantException>(() => Vitq.Train(model, new FunctionDataset(16, 1, 9, 9, (_, _) => 0f), null, Small, dir.File("m.safetensors"), progress: progress)).Message);
        Assert.Contains("fewer than one batch", Assert.Throws<ViTQuantException>(() => Vitq.Train(model, Images(4), null, Small, dir.File("m.safetensors"), progress: progress)).Message);
        Assert.Empty(progress.Reports);
        Assert.Equal(new[] { "taken.safetensors" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }
}
