// Vitq.Benchmark as vitq bench uses it: a complete, finite result on a tiny model whose parameters are left
// trainable, and arguments that do not fit rejected, naming the parameter, before anything is timed.
// (What the figures are worth is for benchmarks, never for tests.)
using System.Text.Json;
using ViTQuant.Api;
using ViTQuant.Models;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Api;

public class BenchmarkFacadeTests
{
    [Fact]
    public void Benchmark_MeasuresEveryFigure_AndLeavesTheParametersTrainable()
    {
        var model = TinyModels.Model(seed: 2);
        var r = Vitq.Benchmark(model, batch: 2, iterations: 3, seed: 1); // 3 calls a step: a fastest and a median that can differ
        Assert.Equal(("vit_tiny_test", 2, model.ParameterCount()), (r.Architecture, r.Batch, r.Parameters));
        foreach (var v in new[] { r.ForwardImagesPerSecond, r.TrainImagesPerSecond, r.InputGradImagesPerSecond, r.GemmPeakGflopPerSecond, r.PeakMemoryMb })
            Assert.True(double.IsFinite(v) && v > 0);
        // The fastest call is at least as fast as the median call.
        Assert.True(r.ForwardFastestImagesPerSecond >= r.ForwardImagesPerSecond);
        Assert.True(r.TrainFastestImagesPerSecond >= r.TrainImagesPerSecond);
        Assert.True(r.InputGradFastestImagesPerSecond >= r.InputGradImagesPerSecond);
        Assert.NotEmpty(r.GemmGflopPerSecond);
        // The FMA roofline is measured wherever the GEMM has an FMA kernel (0 marks the portable kernel's CPUs).
        if (System.Runtime.Intrinsics.X86.Fma.IsSupported) Assert.True(double.IsFinite(r.FmaRooflineGflopPerSecond) && r.FmaRooflineGflopPerSecond > 0);
        else Assert.Equal(0, r.FmaRooflineGflopPerSecond);
        Assert.Equal(r.GemmGflopPerSecond.Keys, r.GemmFractionOfPeak.Keys);
        // the peak is the best of the peak shape and every product measured: no fraction above 1
        Assert.All(r.GemmFractionOfPeak.Values, f => Assert.InRange(f, 1e-9, 1.0));

        Assert.All(model.Parameters(), p => Assert.True(p.RequiresGrad));
        // The JSON vitq bench --json prints (and tools/reference/bench_compare.sh reads).
        var json = JsonDocument.Parse(JsonSerializer.Serialize(r)).RootElement;
        Assert.Equal("architecture", json.EnumerateObject().First().Name);
        Assert.True(json.GetProperty("forward_img_per_s").GetDouble() > 0);
        Assert.Equal(r.TrainFastestImagesPerSecond, json.GetProperty("train_fastest_img_per_s").GetDouble());
        Assert.True(json.GetProperty("gemm_fraction_of_peak").EnumerateObject().Any());
        Assert.Equal(r.FmaRooflineGflopPerSecond, json.GetProperty("fma_roofline_gflop_per_s").GetDouble());
        // How the steps ran: the chunks of images of Infer and ForwardBackward (0: the whole batch).
        Assert.Equal(model.ChunkCount(2), json.GetProperty("forward_chunks").GetInt32());
        Assert.Equal(model.BackwardChunkCount(2, model.ParameterCount()), json.GetProperty("train_chunks").GetInt32());
        Assert.Equal(model.BackwardChunkCount(2, 0), json.GetProperty("input_grad_chunks").GetInt32());
    }

    [Fact]
    public void Benchmark_RunsOnSwin_WithItsFirstStageShapes()
    {
        var swin = new SwinTransformer(SwinConfig.FashionMnist() with { EmbedDim = 8, NumHeads = new[] { 1, 2, 2 } }, seed: 5);
        var r = Vitq.Benchmark(swin, batch: 1, iterations: 1);
        Assert.Equal("swin_fmnist", r.Architecture);
        Assert.True(double.IsFinite(r.TrainImagesPerSecond) && r.TrainImagesPerSecond > 0);
        // 14×14 map of the first stage, width 8: the qkv GEMM is 196 × 24 × 8
        Assert.Contains(r.GemmGflopPerSecond.Keys, k => k.EndsWith("qkv 196x24x8"));
    }

    [Fact]
    public void BadArguments_AreRejected_BeforeAnyTiming()
    {
        var model = TinyModels.Model();
        Assert.Equal("batch", Assert.Throws<ArgumentException>(() => Vitq.Benchmark(model, batch: 0)).ParamName);
        Assert.Equal("iterations", Assert.Throws<ArgumentException>(() => Vitq.Benchmark(model, iterations: 0)).ParamName);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => Vitq.Benchmark(model, batch: 1, iterations: 1, cancellationToken: cts.Token));
        Assert.All(model.Parameters(), p => Assert.True(p.RequiresGrad));
    }
}
