// vitq analyze: the inter-head attention similarity of an image set on a model (MimiQ, Figures 1–2):
// the statistic (Vitq.AnalyzeAttention) overall and per block, a histogram of the per-image values, and
// a grid of per-head attention maps (rows: images, columns: the image then each head) for one block and
// one query token. Writes DIR/attention_similarity.json, DIR/similarity_histogram.png and
// DIR/attention_heads.png.
using System.CommandLine;
using System.Text.Json;
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Api;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;

namespace ViTQuant.Cli;

internal static class AnalyzeCommand
{
    public const string JsonName = "attention_similarity.json", HistogramName = "similarity_histogram.png", GridName = "attention_heads.png";

    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var data = new Option<string>("--data")
        {
            Description = "images: a synthetic set (.safetensors from vitq synthesize), fashion-mnist, or folder:PATH",
            Required = true,
        };
        var split = DataSources.SplitOption("train");
        var count = new Option<int?>("--count") { Description = "analyse the first N images (default: 256 real images, or the whole set)" };
        var block = new Option<int?>("--block") { Description = "block shown in the attention-map grid (default: the last)" };
        var query = new Option<string?>("--query") { Description = "query token of the grid: cls or center (default: cls when the model has a class token)" };
        var rows = new Option<int>("--grid-images") { Description = "images (rows) in the attention-map grid", DefaultValueFactory = _ => 6 };
        var batch = new Option<int>("--batch") { Description = "images per forward pass", DefaultValueFactory = _ => 64 };
        var threads = CommonOptions.Threads();
        var outOpt = new Option<string>("--out") { Description = "output folder (created if missing)", Required = true };
        var json = CommonOptions.Json();
        var overwrite = OutputGuard.OverwriteOption();
        var cmd = new Command("analyze", "inter-head attention similarity of an image set: statistic, histogram and per-head attention maps")
            { model, data, split, count, block, query, rows, batch, threads, outOpt, overwrite, json };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var options = Validated(() => new AttentionAnalysisOptions
            {
                BatchSize = r.GetValue(batch), GridImages = r.GetValue(rows), Block = r.GetValue(block), Query = r.GetValue(query),
            }.Validated());
            string spec = r.GetValue(data)!, dir = r.GetValue(outOpt)!;
            if (File.Exists(dir)) throw new ViTQuantException($"--out {dir} is a file; give a folder");
            string jsonPath = Path.Combine(dir, JsonName), histPath = Path.Combine(dir, HistogramName), gridPath = Path.Combine(dir, GridName);
            foreach (var o in new[] { jsonPath, histPath, gridPath })
                OutputGuard.CheckFile(o, r.GetValue(overwrite), "--out", File.Exists(spec) ? spec : null, r.GetValue(model));
            var net = DataSources.LoadModel(r.GetValue(model));
            var cfg = net.Config;

            var (ds, what) = OpenData(spec, r.GetValue(split)!, cfg);
            int? n = r.GetValue(count);
            if (n is < 1) throw new ViTQuantException($"--count must be at least 1, got {n}");
            ds = ds.First(n ?? (ds is SyntheticSet ? ds.Count : 256));

            var analysis = Validated(() => Progress.Staged(p => Vitq.AnalyzeAttention(net, ds, options, p)));
            var (report, gridImages, maps, blk, q) = (analysis.Report, analysis.GridImages, analysis.HeadMaps, analysis.Block, analysis.Query);

            Directory.CreateDirectory(dir);
            string title = $"{what}: {report.Count} images";
            Figures.Save(histPath, Figures.Histogram(report, $"{title} on {cfg.Architecture}"));
            Figures.Save(gridPath, Figures.HeadGrid(gridImages, maps, analysis.Heads, analysis.MapSide, cfg, $"{what} on {cfg.Architecture}, block {blk}, query token {q}"));
            var summary = new
            {
                data = spec, model = cfg.Architecture, count = report.Count, blocks = report.Blocks, heads = report.Heads,
                mean = report.Mean, std = report.Std, coherence_mean = report.CoherenceMean, coherence_std = report.CoherenceStd,
                per_block = report.PerBlockMean.Select((m, l) => new { block = l, mean = m, std = report.PerBlockStd[l] }),
                grid = new { block = blk, query = q, images = gridImages.Shape[0] },
                files = new { json = jsonPath, histogram = histPath, attention_maps = gridPath },
            };
            AtomicFile.WriteAllText(jsonPath, JsonSerializer.Serialize(new
            {
                summary.data, summary.model, summary.count, summary.blocks, summary.heads, summary.mean, summary.std,
                summary.coherence_mean, summary.coherence_std, summary.per_block, summary.grid, per_image = report.PerImage,
            }, new JsonSerializerOptions { WriteIndented = true }));

            Console.Error.WriteLine($"inter-head attention similarity of {what} on {cfg.Architecture}: {report.Mean:F4} ± {report.Std:F4} over {report.Count} images");
            for (int l = 0; l < report.Blocks; l++)
                Console.Error.WriteLine($"  block {l}: {report.PerBlockMean[l]:F4} ± {report.PerBlockStd[l]:F4}");
            Console.Error.WriteLine($"coherence (mean SSIM², what L_IHC raises): {report.CoherenceMean:F4} ± {report.CoherenceStd:F4}");
            Console.Error.WriteLine($"wrote {jsonPath}, {histPath}, {gridPath}");
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(summary));
            return 0;
        });
        return cmd;
    }

    /// <summary>The analysis options' flags (and the model's), so that a value that does not fit is reported as the flag the user typed.</summary>
    private static readonly Dictionary<string, string> Flags = new()
    {
        [nameof(AttentionAnalysisOptions.BatchSize)] = "--batch", [nameof(AttentionAnalysisOptions.GridImages)] = "--grid-images",
        [nameof(AttentionAnalysisOptions.Block)] = "--block", [nameof(AttentionAnalysisOptions.Query)] = "--query", ["model"] = "--model:",
    };

    private static T Validated<T>(Func<T> work)
    {
        try { return work(); }
        catch (ArgumentException e) when (e.ParamName is string p && Flags.TryGetValue(p, out var flag))
        {
            throw new ViTQuantException($"{flag} {e.Message.Replace($" (Parameter '{p}')", "")}");
        }
    }

    /// <summary>A synthetic set (checked against the model) or a real dataset, and a short description.</summary>
    private static (IImageDataset Data, string What) OpenData(string spec, string split, IModelConfig cfg)
    {
        if (spec.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || File.Exists(spec))
        {
            var set = SyntheticSet.Load(spec, cfg);
            return (set, $"{set.Settings.Method} set {Path.GetFileName(spec)}");
        }
        // The statistic uses images only: a folder's labels need not match the model's classes.
        return (DataSources.Open(spec, split, cfg, "--data", labels: FolderLabels.Unused), spec == "fashion-mnist" ? $"fashion-mnist {split}" : spec);
    }
}
