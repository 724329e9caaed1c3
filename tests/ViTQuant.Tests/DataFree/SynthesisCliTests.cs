// `vitq synthesize` and `vitq analyze` end to end, in process, on a tiny model saved to a temp folder:
// outputs, --json, resume wiring, and one-line errors (exit code 2) for bad inputs.
using System.CommandLine;
using System.Text.Json;
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Cli;
using ViTQuant.IO;
using ViTQuant.Models;

namespace ViTQuant.Tests.DataFree;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ConsoleCollection
{
    /// <summary>Tests that redirect Console.Out/Error (process-global) run alone.</summary>
    public const string Name = "DataFree console";
}

[Collection(ConsoleCollection.Name)]
public sealed class SynthesisCliTests : IDisposable
{
    private readonly TinyModels.TempDir _dir = new();
    private readonly string _model;

    public SynthesisCliTests()
    {
        _model = _dir.File("tiny.safetensors");
        ModelIO.Save(TinyModels.AlignedHeads(), _model);
    }

    public void Dispose() => _dir.Dispose();

    private static (int Code, string Out, string Err) Vitq(params string[] args)
    {
        var root = new RootCommand("test") { SynthesizeCommand.Create(), AnalyzeCommand.Create() };
        root.Options.Add(CommonOptions.Verbose);
        TextWriter oldOut = Console.Out, oldErr = Console.Error;
        var so = new StringWriter();
        var se = new StringWriter();
        Console.SetOut(so);
        Console.SetError(se);
        int threads = ViTQuant.Kernels.Parallelism.Threads;
        try { return (global::ViTQuant.Cli.Cli.Run(root, args), so.ToString(), se.ToString()); }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
            ViTQuant.Kernels.Parallelism.Threads = threads;
        }
    }

    [Fact]
    public void SynthesizeThenAnalyzeWritesTheSetAndTheFigures()
    {
        string set = _dir.File("mimiq.safetensors");
        var (code, stdout, stderr) = Vitq("synthesize", "--model", _model, "--method", "mimiq", "--count", "3", "--batch", "2",
            "--iterations", "2", "--seed", "4", "--lambda-tv", "0.001", "--ihc-signed", "--threads", "1", "--out", set, "--json");
        Assert.True(code == 0, stderr);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal(3, doc.RootElement.GetProperty("count").GetInt32());
            Assert.Equal(2, doc.RootElement.GetProperty("batches").GetInt32());
            Assert.Equal("mimiq", doc.RootElement.GetProperty("method").GetString());
        }
        Assert.Contains("ihc", stderr);
        var loaded = SyntheticSet.Load(set, ModelIO.Load(_model).Config);
        Assert.Equal(0.001f, loaded.Settings.LambdaTv);
        Assert.Equal(4UL, loaded.Settings.Seed);
        Assert.True(loaded.Settings.IhcSigned);

        string outDir = _dir.File("analysis");
        (code, stdout, stderr) = Vitq("analyze", "--model", _model, "--data", set, "--out", outDir, "--grid-images", "2", "--json");
        Assert.True(code == 0, stderr);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal(3, doc.RootElement.GetProperty("count").GetInt32());
            double mean = doc.RootElement.GetProperty("mean").GetDouble();
            Assert.InRange(mean, -1.0, 1.0);
            Assert.Equal(2, doc.RootElement.GetProperty("per_block").GetArrayLength());
        }
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, AnalyzeCommand.JsonName))))
            Assert.Equal(3, doc.RootElement.GetProperty("per_image").GetArrayLength());
        var hist = PngReader.Decode(File.ReadAllBytes(Path.Combine(outDir, AnalyzeCommand.HistogramName)), "histogram");
        var grid = PngReader.Decode(File.ReadAllBytes(Path.Combine(outDir, AnalyzeCommand.GridName)), "grid");
        Assert.True(hist.Width > 100 && grid.Width > 100);
        Assert.True(grid.Height > 2 * 64, $"grid {grid.Width}x{grid.Height} should hold 2 rows of 64-px maps");
    }

    [Fact]
    public void ResumeFlagContinuesAnInterruptedRun()
    {
        var model = (VisionTransformer)ModelIO.Load(_model);
        var settings = SynthesisSettings.For("psaq") with { Count = 4, BatchSize = 2, Iterations = 2, Seed = 0 };
        string set = _dir.File("psaq.safetensors");
        SynthesisRunner.Run(model, settings, set, resume: false, maxNewBatches: 1);
        var args = new[] { "synthesize", "--model", _model, "--method", "psaq", "--count", "4", "--batch", "2", "--iterations", "2", "--out", set };
        var (code, _, stderr) = Vitq(args);
        Assert.Equal(2, code);
        Assert.Contains("--resume", stderr);
        (code, _, stderr) = Vitq([.. args, "--resume"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("1 batches resumed", stderr);
        Assert.Equal(4, SyntheticSet.Load(set).Count);
    }

    [Fact]
    public void BadInputsFailWithOneLineErrors()
    {
        string set = _dir.File("g.safetensors");
        Assert.Equal(0, Vitq("synthesize", "--model", _model, "--method", "gaussian", "--count", "2", "--out", set).Code);

        void Fails(string expect, params string[] args)
        {
            var (code, _, err) = Vitq(args);
            Assert.Equal(2, code);
            Assert.Contains(expect, err);
            Assert.Single(err.Trim().Split('\n'), l => l.StartsWith("vitq: error:"));
        }
        Fails("already exists", "synthesize", "--model", _model, "--method", "gaussian", "--count", "2", "--out", set);
        Fails("unknown method", "synthesize", "--model", _model, "--method", "dream", "--count", "2", "--out", _dir.File("x.safetensors"));
        Fails("--method mimiq only", "synthesize", "--model", _model, "--method", "psaq", "--count", "2", "--lambda-ihc", "2", "--out", _dir.File("x.safetensors"));
        Fails("--method mimiq only", "synthesize", "--model", _model, "--method", "gaussian", "--count", "2", "--ihc-signed", "--out", _dir.File("x.safetensors"));
        Fails("--count must be at least 1", "synthesize", "--model", _model, "--method", "mimiq", "--count", "0", "--out", _dir.File("x.safetensors"));
        Fails("same file", "synthesize", "--model", _model, "--method", "gaussian", "--count", "1", "--out", _model);

        // A set made for 8-px images analysed with a 16-px model names both shapes.
        string big = _dir.File("big.safetensors");
        ModelIO.Save(TinyModels.Model(imageSize: 16), big);
        Fails("[1, 16, 16]", "analyze", "--model", big, "--data", set, "--out", _dir.File("an"));
        Fails("not a synthetic set", "analyze", "--model", _model, "--data", _model, "--out", _dir.File("an"));
        Fails("--block 7", "analyze", "--model", _model, "--data", set, "--block", "7", "--out", _dir.File("an"));
    }
}
