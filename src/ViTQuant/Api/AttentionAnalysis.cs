// The inter-head attention similarity of an image set on a model (MimiQ, Figures 1–2), as vitq analyze
// measures it: the statistic overall and per block over every image, and the per-head attention maps of one
// block and one query token for the first few images. The façade measures; drawing and writing the figures
// and the report stay with the caller.
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Data;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Api;

/// <summary>
/// Options of <see cref="Vitq.AnalyzeAttention"/>. <see cref="Validated"/> throws ArgumentException naming the property;
/// <see cref="Block"/> and <see cref="Query"/> are checked against the model by the call, before any forward pass.
/// </summary>
public sealed record AttentionAnalysisOptions
{
    /// <summary>Images per forward pass, at least 1.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>The block whose per-head maps are returned, in [0, depth); null: the last.</summary>
    public int? Block { get; init; }

    /// <summary>The query token of the maps: "cls" (needs a class token) or "center" (the middle patch; on Swin the middle patch of the block's map, over its window); null: cls when the model has a class token.</summary>
    public string? Query { get; init; }

    /// <summary>Images (the first of the set) whose per-head maps are returned, at least 1.</summary>
    public int GridImages { get; init; } = 6;

    /// <summary>This record when every value is in range; otherwise ArgumentException naming the property.</summary>
    public AttentionAnalysisOptions Validated()
    {
        if (BatchSize < 1) throw new ArgumentException($"must be at least 1, got {BatchSize}", nameof(BatchSize));
        if (GridImages < 1) throw new ArgumentException($"must be at least 1, got {GridImages}", nameof(GridImages));
        if (Query is not (null or "cls" or "center")) throw new ArgumentException($"'{Query}' is unknown (cls or center)", nameof(Query));
        return this;
    }
}

/// <summary>The outcome of <see cref="Vitq.AnalyzeAttention"/>.</summary>
/// <param name="Report">The statistic: per image, per block, overall, and the coherence (mean SSIM²) that MimiQ's L_IHC raises.</param>
/// <param name="GridImages">The first images, normalised [n, C, H, W], whose maps are in <paramref name="HeadMaps"/>.</param>
/// <param name="HeadMaps">Attention of <paramref name="QueryToken"/> over the keys, per image and head, [n, <paramref name="Heads"/>, <paramref name="MapSide"/>, <paramref name="MapSide"/>] row-major: a ViT's patch grid, a Swin's window.</param>
/// <param name="Block">The block of the maps.</param>
/// <param name="Query">"cls" or "center".</param>
/// <param name="QueryToken">The token index of <paramref name="Query"/> (ViT; on Swin −1: the center patch of the block's map).</param>
/// <param name="Heads">Heads of the block.</param>
/// <param name="MapSide">Side of each map: the patch grid (ViT) or the window (Swin).</param>
public sealed record AttentionAnalysis(AttentionSimilarityReport Report, Tensor GridImages, float[] HeadMaps, int Block, string Query, int QueryToken, int Heads, int MapSide);

public static partial class Vitq
{
    /// <summary>
    /// Measures the inter-head attention similarity of <paramref name="data"/> on <paramref name="model"/> (ViT/DeiT or Swin,
    /// at least two heads in every block; on Swin per window, AttentionSimilarity's header) over every image, and the per-head maps of <paramref name="options"/>' block and query for the first
    /// images. Reports stage "analyze" per batch (images so far); cancelling throws OperationCanceledException at the next
    /// batch. Writes nothing. Throws ArgumentException naming the property of <paramref name="options"/>, <paramref name="model"/>
    /// (one head) or <paramref name="data"/> (empty, or images of another shape) before any forward pass.
    /// </summary>
    public static AttentionAnalysis AnalyzeAttention(VisionModel model, IImageDataset data, AttentionAnalysisOptions? options = null,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        options = (options ?? new AttentionAnalysisOptions()).Validated();
        var cfg = model.Config;
        if (AttentionSimilarity.MinHeads(cfg) < 2) throw new ArgumentException($"{cfg.Architecture} has a block with one head; inter-head similarity needs at least 2", nameof(model));
        int depth = cfg.BlockPrefixes().Count;
        int blk = options.Block ?? depth - 1;
        if (blk < 0 || blk >= depth) throw new ArgumentException($"{blk} is outside [0, {depth})", nameof(options.Block));
        bool classToken = cfg is ViTConfig { ClassToken: true };
        string q = options.Query ?? (classToken ? "cls" : "center");
        if (q == "cls" && !classToken) throw new ArgumentException($"cls: {cfg.Architecture} has no class token; use center", nameof(options.Query));
        int queryToken = cfg is not ViTConfig v ? -1 : q == "cls" ? 0 : v.NumPrefixTokens + v.GridSize / 2 * v.GridSize + v.GridSize / 2;
        if (data.Channels != cfg.InChans || data.Height != cfg.ImageSize || data.Width != cfg.ImageSize)
            throw new ArgumentException($"images are {data.Channels}×{data.Height}×{data.Width}, the model ({cfg.Architecture}) expects {cfg.InChans}×{cfg.ImageSize}×{cfg.ImageSize}", nameof(data));
        if (data.Count == 0) throw new ArgumentException("the data set is empty", nameof(data));

        var sink = new ProgressSink(progress, cancellationToken);
        // No report before the first batch, as the CLI's display counts its rate from the first report.
        sink.ThrowIfCancellationRequested();
        var loader = new DataLoader(data, options.BatchSize, mean: cfg.Mean, std: cfg.Std);
        Tensor? first = null;
        var report = AttentionSimilarity.Measure(model, loader.Epoch(0).Select(b => { first ??= b.Images; return b.Images; }),
            done => sink.Report("analyze", done, data.Count));
        var gridImages = Ops.Narrow(first!, 0, 0, Math.Min(options.GridImages, first!.Shape[0]));
        var (maps, heads, side) = AttentionSimilarity.HeadMaps(model, gridImages, blk, queryToken);
        sink.ThrowIfCancellationRequested();
        return new AttentionAnalysis(report, gridImages, maps, blk, q, queryToken, heads, side);
    }
}
