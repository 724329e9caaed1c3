// The façade (ViTQuant.Api): a quantize → evaluate → save → load → export round trip on a tiny seeded
// ViT, progress reports, cancellation that leaves the output folder as it was, and validation that
// rejects bad options, data and paths before anything is written.
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Api;
using ViTQuant.Export;
using ViTQuant.Export.OnnxProto;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.Data;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Api;

public class FacadeTests
{
    /// <summary>Records every report synchronously (Progress&lt;T&gt; would post them to the thread pool).</summary>
    private sealed class Recorder(Action<OperationProgress>? onReport = null) : IProgress<OperationProgress>
    {
        public List<OperationProgress> Reports { get; } = new();

        public void Report(OperationProgress value)
        {
            Reports.Add(value);
            onReport?.Invoke(value);
        }
    }

    private static FunctionDataset Images(int n = 40) => new(n, 1, 8, 8, (i, k) => ((i * 31 + k * 7) % 17) / 17f, classes: 5);

    [Fact]
    public void Quantize_Evaluate_Save_Load_Export_RoundTrip()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 3);
        var data = CalibrationData.Gaussian(model.Config, count: 16, seed: 1);
        var progress = new Recorder();
        var q = Vitq.Quantize(model, data, new QuantizeOptions { Method = "adfq", WeightBits = 4, ActivationBits = 8, AdfqIterations = 2, Seed = 7 }, progress);

        Assert.Contains(progress.Reports, p => p.Stage == "calibrate adfq");
        // One stage per reconstruction unit, each run to its end.
        var units = progress.Reports.Where(p => p.Stage.StartsWith("adfq ", StringComparison.Ordinal)).GroupBy(p => p.Stage).ToList();
        Assert.Equal(q.AdfqUnits!.Select(u => "adfq " + u.Unit.Name), units.Select(g => g.Key));
        Assert.All(units, g => Assert.Equal(g.Last().Total, g.Last().Step));
        Assert.NotEmpty(q.Calibration);
        Assert.All(progress.Reports, p => Assert.InRange(p.Step, 0, p.Total));
        Assert.True(q.Model.WeightsFrozen);

        var eval = new Recorder();
        var res = Vitq.Evaluate(q.Model, Images(), batchSize: 16, progress: eval);
        Assert.Equal(40, res.Count);
        Assert.Equal(new long[] { 0, 16, 32, 40 }, eval.Reports.Select(p => p.Step));
        Assert.Equal(res.Top1, Vitq.Evaluate(q.Model.Model, Images(), q.Model).Top1);

        string ckpt = dir.File("q.safetensors"), onnx = dir.File("q.onnx");
        var storage = q.Save(ckpt);
        Assert.Equal(new FileInfo(ckpt).Length, storage.FileBytes);
        var loaded = Vitq.LoadQuantized(ckpt);
        var x = Tensor.Randn(new Rng(2), 1f, 3, 1, 8, 8);
        Assert.Equal(Vitq.Infer(q.Model.Model, x, q.Model).ToArray(), Vitq.Infer(loaded.Model, x, loaded).ToArray());
        Assert.Equal(Vitq.Predict(q.Model.Model, x, q.Model), Vitq.Predict(loaded.Model, x, loaded));

        // The in-memory export writes the same graph as exporting the saved checkpoint (which also names its source file).
        var exported = q.ExportOnnx(onnx);
        Assert.True(exported.Quantized);
        var fromFile = OnnxExporter.ExportFile(ckpt, dir.File("file.onnx"), new OnnxExportOptions());
        var (viaFile, direct) = (ModelProto.Parser.ParseFrom(File.ReadAllBytes(fromFile.Path)), ModelProto.Parser.ParseFrom(File.ReadAllBytes(onnx)));
        Assert.Equal(viaFile.Graph, direct.Graph);
        Assert.Equal(viaFile.MetadataProps.Where(p => p.Key != "vitq.source"), direct.MetadataProps);
        Assert.Equal(new[] { "file.onnx", "q.onnx", "q.safetensors" }, Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void MinMax_OnCallerTensors_MatchesTheRegistryDirectly()
    {
        var model = TinyModels.Model(seed: 4);
        var batches = new[] { Tensor.Randn(new Rng(5), 1f, 8, 1, 8, 8), Tensor.Randn(new Rng(6), 1f, 4, 1, 8, 8) };
        var data = CalibrationData.FromTensors(model.Config, batches);
        Assert.Equal(12, data.Count);
        var a = Vitq.Quantize(model, data, new QuantizeOptions { Method = "minmax", WeightBits = 8, ActivationBits = 8 });
        var b = Vitq.Quantize(model, data, new QuantizeOptions { Method = "minmax", WeightBits = 8, ActivationBits = 8 });
        var x = batches[0];
        Assert.Equal(Vitq.Infer(a.Model.Model, x, a.Model).ToArray(), Vitq.Infer(b.Model.Model, x, b.Model).ToArray());
        // The float model is untouched.
        Assert.Equal(Vitq.Infer(model, x).ToArray(), Vitq.Infer(TinyModels.Model(seed: 4), x).ToArray());
    }

    [Fact]
    public void Int8Engine_EvaluatesThroughTheEngineOverload_AgreeingWithTheSimulation()
    {
        var model = TinyModels.Model(seed: 4);
        var q = Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, 16, seed: 2), new QuantizeOptions { Method = "minmax", WeightBits = 8, ActivationBits = 8 });
        var engine = Vitq.CompileInt8(q.Model);
        var progress = new Recorder();
        var int8 = Vitq.Evaluate(engine.Forward, model.Config, Images(), batchSize: 20, progress: progress);
        var sim = Vitq.Evaluate(q.Model, Images(), batchSize: 20);
        Assert.Equal(40, int8.Count);
        Assert.Equal(40, progress.Reports.Last().Step);
        Assert.InRange(Math.Abs(int8.Loss - sim.Loss), 0, 0.05 * Math.Max(1, sim.Loss));
    }

    [Fact]
    public void Cancel_DuringReconstruction_Throws_AndWritesNothing()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 3);
        using var cts = new CancellationTokenSource();
        var progress = new Recorder(p => { if (p.Stage.StartsWith("adfq", StringComparison.Ordinal) && p.Step >= 1) cts.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() => Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, 16),
            new QuantizeOptions { Method = "adfq", AdfqIterations = 50 }, progress, cts.Token));
        Assert.True(progress.Reports.Count(p => p.Stage.StartsWith("adfq", StringComparison.Ordinal)) < 5, "cancellation was not prompt");
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }

    [Fact]
    public void Cancel_DuringEvaluation_AndSave_LeaveNothingBehind()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 3);
        var q = Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, 8), new QuantizeOptions { Method = "percentile", WeightBits = 8, ActivationBits = 8 });
        using var cts = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            Vitq.Evaluate(q.Model, Images(64), batchSize: 8, progress: new Recorder(p => { if (p.Step > 0) cts.Cancel(); }), cancellationToken: cts.Token));
        Assert.ThrowsAny<OperationCanceledException>(() => q.Save(dir.File("q.safetensors"), cancellationToken: cts.Token));
        Assert.ThrowsAny<OperationCanceledException>(() => q.ExportOnnx(dir.File("q.onnx"), cancellationToken: cts.Token));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }

    [Fact]
    public void Cancel_DuringSynthesis_RemovesShards_UnlessResumable_ThenResumes()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model(seed: 3);
        var settings = SynthesisSettings.For("psaq") with { Count = 4, BatchSize = 2, Iterations = 3, Seed = 1 };
        string set = dir.File("set.safetensors");
        // Cancel in the second batch, after the first batch's shard is written.
        CancellationTokenSource Cancelling(out Recorder rec)
        {
            var cts = new CancellationTokenSource();
            rec = new Recorder(p => { if (p.Step > 3) cts.Cancel(); });
            return cts;
        }
        using (var cts = Cancelling(out var rec))
            Assert.ThrowsAny<OperationCanceledException>(() => Vitq.Synthesize(model, settings, set, progress: rec, cancellationToken: cts.Token));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));

        using (var cts = Cancelling(out var rec))
            Assert.ThrowsAny<OperationCanceledException>(() => Vitq.Synthesize(model, settings, set, resumable: true, progress: rec, cancellationToken: cts.Token));
        Assert.True(Directory.Exists(SynthesisRunner.ShardDirectory(set)));
        Assert.False(File.Exists(set));
        var done = Vitq.Synthesize(model, settings, set, resumable: true);
        Assert.Equal(1, done.BatchesResumed);
        Assert.Equal(new[] { "set.safetensors" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
        Assert.Equal(4, CalibrationData.SyntheticSet(set, model.Config, count: 10).Count);
    }

    [Theory]
    [InlineData("WeightBits")]
    [InlineData("ActivationBits")]
    [InlineData("Method")]
    [InlineData("AdfqIterations")]
    [InlineData("FineTuneEpochs")]
    [InlineData("FineTuneLr")]
    public void BadOptions_AreRejected_NamingTheProperty_BeforeAnyWork(string property)
    {
        var o = new QuantizeOptions();
        o = property switch
        {
            "WeightBits" => o with { WeightBits = 9 },
            "ActivationBits" => o with { ActivationBits = 1 },
            "Method" => o with { Method = "gptq" },
            "AdfqIterations" => o with { AdfqIterations = 0 },
            "FineTuneEpochs" => o with { FineTuneEpochs = 0 },
            _ => o with { FineTuneLr = float.NaN },
        };
        var model = TinyModels.Model();
        var progress = new Recorder();
        var e = Assert.Throws<ArgumentException>(() => Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, 4), o, progress));
        Assert.Equal(property, e.ParamName);
        Assert.Empty(progress.Reports);
    }

    [Fact]
    public void BadData_Paths_AndModels_AreRejected_BeforeOutput()
    {
        using var dir = new TinyModels.TempDir();
        var model = TinyModels.Model();
        var wrong = CalibrationData.Gaussian(TinyModels.Config(imageSize: 16), 4);
        Assert.Equal("data", Assert.Throws<ArgumentException>(() => Vitq.Quantize(model, wrong, new QuantizeOptions { Method = "minmax" })).ParamName);
        Assert.Equal("batches", Assert.Throws<ArgumentException>(() => CalibrationData.FromTensors(model.Config, new[] { new Tensor(2, 3, 8, 8) })).ParamName);
        Assert.Equal("labels", Assert.Throws<ArgumentException>(() => CalibrationData.FromTensors(model.Config, new[] { new Tensor(2, 1, 8, 8) }, new[] { 1 })).ParamName);
        Assert.Equal("images", Assert.Throws<ArgumentException>(() => Vitq.Infer(model, new Tensor(2, 1, 9, 9))).ParamName);
        Assert.Equal("data", Assert.Throws<ArgumentException>(() => Vitq.Evaluate(model, new FunctionDataset(4, 1, 9, 9, (_, _) => 0f))).ParamName);
        Assert.Equal("count", Assert.Throws<ArgumentOutOfRangeException>(() => CalibrationData.Gaussian(model.Config, 0)).ParamName);
        Assert.Equal("path", Assert.Throws<ArgumentException>(() => CalibrationData.SyntheticSet(dir.File("none.safetensors"), model.Config)).ParamName);

        var q = Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, 4), new QuantizeOptions { Method = "minmax", WeightBits = 8, ActivationBits = 8 });
        File.WriteAllText(dir.File("taken.safetensors"), "x");
        Assert.Equal("path", Assert.Throws<ArgumentException>(() => q.Save(dir.File("taken.safetensors"))).ParamName);
        Assert.Equal("path", Assert.Throws<ArgumentException>(() => q.Save(dir.Path)).ParamName);
        Assert.Equal("x", File.ReadAllText(dir.File("taken.safetensors")));

        // A file that is not a model is named.
        Assert.Contains("notamodel.safetensors", Assert.ThrowsAny<ViTQuantException>(() => Vitq.LoadModel(dir.File("taken.safetensors").Replace("taken", "notamodel"))).Message);
        Assert.Equal(new[] { "taken.safetensors" }, Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName));
    }
}
