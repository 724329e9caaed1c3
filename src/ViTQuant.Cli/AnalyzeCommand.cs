// vitq analyze: the inter-head attention similarity of an image set on a model (MimiQ, Figures 1–2):
// the statistic (AttentionSimilarity) overall and per block, a histogram of the per-image values, and
// a grid of per-head attention maps (rows: images, columns: the image then each head) for one block and
// one query token. Writes DIR/attention_similarity.json, DIR/similarity_histogram.png and
// DIR/attention_heads.png.
using System.CommandLine;
using System.Text.Json;
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Api;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

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
            int B = r.GetValue(batch), gridRows = r.GetValue(rows);
            if (B < 1) throw new ViTQuantException($"--batch must be at least 1, got {B}");
            if (gridRows < 1) throw new ViTQuantException($"--grid-images must be at least 1, got {gridRows}");
            string spec = r.GetValue(data)!, dir = r.GetValue(outOpt)!;
            if (File.Exists(dir)) throw new ViTQuantException($"--out {dir} is a file; give a folder");
            string jsonPath = Path.Combine(dir, JsonName), histPath = Path.Combine(dir, HistogramName), gridPath = Path.Combine(dir, GridName);
            foreach (var o in new[] { jsonPath, histPath, gridPath })
                OutputGuard.CheckFile(o, r.GetValue(overwrite), "--out", File.Exists(spec) ? spec : null, r.GetValue(model));
            var net = DataSources.LoadViT(r.GetValue(model), "vitq analyze");
            var cfg = net.Config;
            if (cfg.NumHeads < 2) throw new ViTQuantException($"--model: {cfg.Architecture} has one head; inter-head similarity needs at least 2");
            int blk = r.GetValue(block) ?? cfg.Depth - 1;
            if (blk < 0 || blk >= cfg.Depth) throw new ViTQuantException($"--block {blk} is outside [0, {cfg.Depth})");
            string q = r.GetValue(query) ?? (cfg.ClassToken ? "cls" : "center");
            int queryToken = q switch
            {
                "cls" when cfg.ClassToken => 0,
                "cls" => throw new ViTQuantException($"--query cls: {cfg.Architecture} has no class token; use center"),
                "center" => cfg.NumPrefixTokens + cfg.GridSize / 2 * cfg.GridSize + cfg.GridSize / 2,
                _ => throw new ViTQuantException($"--query: unknown query '{q}' (cls or center)"),
            };

            var (ds, what) = OpenData(spec, r.GetValue(split)!, cfg);
            int? n = r.GetValue(count);
            if (n is < 1) throw new ViTQuantException($"--count must be at least 1, got {n}");
            ds = ds.First(n ?? (ds is SyntheticSet ? ds.Count : 256));

            var loader = new DataLoader(ds, B, mean: cfg.Mean, std: cfg.Std);
            Tensor? first = null;
            var report = Progress.Run("analyze", ds.Count, rep => AttentionSimilarity.Measure(net,
                loader.Epoch(0).Select(b => { first ??= b.Images; return b.Images; }), done => rep.Update(done)));

            Directory.CreateDirectory(dir);
            var gridImages = Ops.Narrow(first!, 0, 0, Math.Min(gridRows, first!.Shape[0]));
            var maps = AttentionSimilarity.HeadMaps(net, gridImages, blk, queryToken);
            string title = $"{what}: {report.Count} images";
            Figures.Save(histPath, Figures.Histogram(report, $"{title} on {cfg.Architecture}"));
            Figures.Save(gridPath, Figures.HeadGrid(gridImages, maps, cfg, $"{what} on {cfg.Architecture}, block {blk}, query token {q}"));
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

    /// <summary>A synthetic set (checked against the model) or a real dataset, and a short description.</summary>
    private static (IImageDataset Data, string What) OpenData(string spec, string split, ViTConfig cfg)
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
