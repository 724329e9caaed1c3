// Vitq.AnalyzeAttention as vitq analyze uses it: the statistic over every image with progress per batch, the
// head maps of the chosen block and query token, cancellation at the next batch, and options or data that do
// not fit rejected, naming the property or parameter, before any forward pass.
using ViTQuant.Api;
using ViTQuant.Tensors;
using ViTQuant.Tests.Data;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Api;

public class AnalyzeFacadeTests
{
    private static FunctionDataset Images(int n = 20) => new(n, 1, 8, 8, (i, k) => ((i * 7 + k * 3) % 13) / 13f, classes: 5);

    [Fact]
    public void Measures_EveryImage_ReportsPerBatch_AndMapsTheLastBlocksClassToken()
    {
        var model = TinyModels.Model(seed: 4);
        var progress = new OperationRecorder();
        var a = Vitq.AnalyzeAttention(model, Images(), new AttentionAnalysisOptions { BatchSize = 8, GridImages = 3 }, progress);
        Assert.Equal(20, a.Report.Count);
        Assert.Equal(2, a.Report.Blocks);
        Assert.Equal(new long[] { 8, 16, 20 }, progress.Reports.Select(p => p.Step));
        Assert.All(progress.Reports, p => { Assert.Equal("analyze", p.Stage); Assert.Equal(20, p.Total); });
        Assert.Equal((1, "cls", 0), (a.Block, a.Query, a.QueryToken));
        Assert.Equal(new[] { 3, 1, 8, 8 }, a.GridImages.Shape);
        Assert.Equal(3 * 4 * 4 * 4, a.HeadMaps.Length); // images × heads × 4×4 patches

        var center = Vitq.AnalyzeAttention(model, Images(), new AttentionAnalysisOptions { Block = 0, Query = "center", GridImages = 50 });
        Assert.Equal(1 + 2 * 4 + 2, center.QueryToken);
        Assert.Equal(20, center.GridImages.Shape[0]); // at most the first batch
        // Batches of 8 against the default batch size: the same up to float rounding (OpenBLAS, the float GEMM
        // on AVX2-only machines, rounds a row by its place in the block).
        Assert.Equal(a.Report.Mean, center.Report.Mean, 1e-8);
        Assert.NotEqual(a.HeadMaps, center.HeadMaps.Take(a.HeadMaps.Length));
    }

    [Fact]
    public void Swin_IsMeasuredPerWindow_AndMapsTheCenterPatchOverItsWindow()
    {
        // swin_fmnist's geometry, narrow: maps 14 → 7 → 4, windows 4, 4, 3 (padded 16, 8, 6), heads 2, 2, 2
        var cfg = ViTQuant.Models.SwinConfig.FashionMnist() with { EmbedDim = 8, NumHeads = new[] { 2, 2, 2 } };
        var swin = new ViTQuant.Models.SwinTransformer(cfg, seed: 5);
        var data = new FunctionDataset(6, 1, 28, 28, (i, k) => ((i * 7 + k * 3) % 13) / 13f, classes: 10);
        var a = Vitq.AnalyzeAttention(swin, data, new AttentionAnalysisOptions { BatchSize = 4, GridImages = 2 });
        Assert.Equal((6, 6, 2), (a.Report.Count, a.Report.Blocks, a.Report.Heads));
        Assert.Equal((5, "center", 2, 3), (a.Block, a.Query, a.Heads, a.MapSide)); // the last block's window shrank to 3
        Assert.Equal(2 * 2 * 3 * 3, a.HeadMaps.Length);
        Assert.All(a.HeadMaps, v => Assert.InRange(v, 0f, 1f));
        // An image's value for a block is the mean over its windows of the per-window statistic.
        var x = Ops.Narrow(a.GridImages, 0, 0, 1);
        var rec = new ViTQuant.Models.TapRecorder(n => n == "layers.0.blocks.0.attn.logits");
        using (Autograd.NoGrad()) swin.Forward(x, rec);
        var perWindow = ViTQuant.Algorithms.Metrics.AttentionSimilarity.LayerPerImage(rec.Taps["layers.0.blocks.0.attn.logits"], 0);
        Assert.Equal(16, perWindow.Length);
        var one = Vitq.AnalyzeAttention(swin, new FunctionDataset(1, 1, 28, 28, (i, k) => ((i * 7 + k * 3) % 13) / 13f, classes: 10));
        Assert.Equal(perWindow.Average(), one.Report.PerBlockMean[0], 6);
        Assert.Equal("Query", Assert.Throws<ArgumentException>(() => Vitq.AnalyzeAttention(swin, data, new AttentionAnalysisOptions { Query = "cls" })).ParamName); // no class token
    }

    [Fact]
    public void Cancel_StopsAtTheNextBatch()
    {
        using var cts = new CancellationTokenSource();
        var progress = new OperationRecorder(_ => cts.Cancel());
        Assert.ThrowsAny<OperationCanceledException>(() => Vitq.AnalyzeAttention(TinyModels.Model(), Images(40), new AttentionAnalysisOptions { BatchSize = 4 }, progress, cts.Token));
        Assert.Single(progress.Reports);
    }

    [Theory]
    [InlineData("BatchSize")]
    [InlineData("GridImages")]
    [InlineData("Query")]
    [InlineData("Block")]
    [InlineData("model")]
    [InlineData("data")]
    public void BadOptions_Models_AndData_AreRejected_BeforeAnyForwardPass(string parameter)
    {
        var o = new AttentionAnalysisOptions();
        var (model, data) = (TinyModels.Model(), (ViTQuant.Data.IImageDataset)Images());
        switch (parameter)
        {
            case "BatchSize": o = o with { BatchSize = 0 }; break;
            case "GridImages": o = o with { GridImages = 0 }; break;
            case "Query": o = o with { Query = "corner" }; break;
            case "Block": o = o with { Block = 2 }; break;
            case "model": model = TinyModels.Model(heads: 1); break;
            default: data = new FunctionDataset(4, 1, 9, 9, (_, _) => 0f); break;
        }
        var progress = new OperationRecorder();
        Assert.Equal(parameter, Assert.Throws<ArgumentException>(() => Vitq.AnalyzeAttention(model, data, o, progress)).ParamName);
        Assert.Empty(progress.Reports);
    }
}
