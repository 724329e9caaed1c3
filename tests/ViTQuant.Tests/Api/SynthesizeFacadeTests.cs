// Vitq.Synthesize as vitq synthesize uses it: progress per optimiser step (one step a batch for Gaussian noise),
// no report before the first step, and bad paths or left-over shards rejected, naming the parameter, before
// anything is written. (Cancellation and resume: FacadeTests.Cancel_DuringSynthesis_….)
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Api;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Api;

public class SynthesizeFacadeTests
{
    [Fact]
    public void Psaq_ReportsEveryStepOfEveryBatch()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 3);
        var settings = SynthesisSettings.For("psaq") with { Count = 4, BatchSize = 2, Iterations = 3, Seed = 1 };
        var progress = new OperationRecorder();
        var res = Vitq.Synthesize(model, settings, dir.File("set.safetensors"), progress: progress);
        Assert.Equal(2, res.BatchesMade);
        Assert.Equal(Enumerable.Range(1, 6).Select(i => (long)i), progress.Reports.Select(p => p.Step));
        Assert.All(progress.Reports, p => { Assert.Equal("synthesize psaq", p.Stage); Assert.Equal(6, p.Total); });
        Assert.StartsWith("batch 2/2 ", progress.Reports[^1].Message);
        Assert.Equal(4, CalibrationData.SyntheticSet(dir.File("set.safetensors"), model.Config).Count);
    }

    [Fact]
    public void Gaussian_CountsOneStepABatch_EvenWhenTheSettingsSayMoreIterations()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 3);
        var progress = new OperationRecorder();
        Vitq.Synthesize(model, SynthesisSettings.For("gaussian") with { Count = 6, BatchSize = 4, Iterations = 50 }, dir.File("g.safetensors"), progress: progress);
        Assert.Equal(new long[] { 1, 2 }, progress.Reports.Select(p => p.Step));
        Assert.All(progress.Reports, p => Assert.Equal(2, p.Total));
    }

    [Fact]
    public void BadPaths_AndLeftOverShards_AreRejected_NamingOutPath_BeforeAnyReport()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 3);
        var settings = SynthesisSettings.For("gaussian") with { Count = 4 };
        File.WriteAllText(dir.File("taken.safetensors"), "x");
        string shards = SynthesisRunner.ShardDirectory(dir.File("s.safetensors"));
        Directory.CreateDirectory(shards);
        var progress = new OperationRecorder();
        Assert.Equal("outPath", Assert.Throws<ArgumentException>(() => Vitq.Synthesize(model, settings, dir.File("taken.safetensors"), progress: progress)).ParamName);
        Assert.Equal("outPath", Assert.Throws<ArgumentException>(() => Vitq.Synthesize(model, settings, dir.Path, progress: progress)).ParamName);
        Assert.Equal("outPath", Assert.Throws<ArgumentException>(() => Vitq.Synthesize(model, settings, dir.File("s.safetensors"), progress: progress)).ParamName);
        Assert.Contains("--count", Assert.Throws<ViTQuantException>(() => Vitq.Synthesize(model, settings with { Count = 0 }, dir.File("n.safetensors"), progress: progress)).Message);
        Assert.Empty(progress.Reports);
        Assert.Equal("x", File.ReadAllText(dir.File("taken.safetensors")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(shards));
        Assert.Equal(new[] { "s.safetensors.shards", "taken.safetensors" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Cancelled_BeforeTheFirstStep_WritesNothing()
    {
        using var dir = new TinyModels.TempDir();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => Vitq.Synthesize(TinyModels.Model(), SynthesisSettings.For("gaussian") with { Count = 4 },
            dir.File("g.safetensors"), resumable: true, cancellationToken: cts.Token));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }
}
