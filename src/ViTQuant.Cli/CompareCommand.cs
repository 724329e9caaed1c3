// vitq compare: a grid of data sources × methods × bit settings × seeds on one model, evaluated on the
// same images with the float accuracy re-measured in the same run; one table (mean ± std over seeds)
// written as Markdown and JSON.
//
// Data sources: real images (the --dataset's training split) or synthetic sets (gaussian, psaq, mimiq,
// mimiq-no-ihc: MimiQ synthesis without the inter-head coherency loss, the paper's ablation; and
// mimiq-signed: L_IHC as mean(1 − SSIM), this project's ablation of the spec's 1 − SSIM²). A
// synthetic set is made once per seed under OUT/sets/ and shared by every method and bit setting of that
// seed. Each cell draws --calib-size images of its source with its seed: the calibration set of the
// post-training methods, the distillation set of MimiQ fine-tuning.
//
// Every finished cell is saved under OUT/cells/, synthetic sets and fine-tuning checkpoints resume, so an
// interrupted comparison continues where it stopped. OUT/grid.json records what every cell depends on
// besides its name (model, evaluation set, budgets); a resume with other settings is refused rather than
// mixing two experiments in one table. More data sources, methods, bits or seeds may be added to a grid.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Api;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class CompareCommand
{
    public sealed record Cell(string Data, string Method, string Bits, ulong Seed, double Top1, double? Top5, double Seconds);

    /// <summary>A synthetic set made in this comparison: how long it took, for the cost per 1,000 images.</summary>
    public sealed record SetInfo(string Data, ulong Seed, int Images, int Iterations, double Seconds);

    public static readonly string[] DataSourceNames = { "real", "gaussian", "psaq", "mimiq", "mimiq-no-ihc", "mimiq-signed" };

    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var methods = new Option<string>("--methods") { Description = "comma-separated: " + string.Join(", ", QuantizationMethods.Names), DefaultValueFactory = _ => "minmax,percentile,adfq" };
        var bits = new Option<string>("--bits") { Description = "comma-separated wXaY settings", DefaultValueFactory = _ => "w8a8,w6a6,w4a8,w4a4,w3a3" };
        var data = new Option<string>("--data") { Description = "comma-separated data sources: " + string.Join(", ", DataSourceNames) + " (synthetic sets are made once per seed under OUT/sets)", DefaultValueFactory = _ => "real" };
        var seeds = new Option<int>("--seeds") { Description = "seeds per cell (0, 1, …)", DefaultValueFactory = _ => 3 };
        var calibSize = new Option<int>("--calib-size") { Description = "images per cell: calibration set, or MimiQ distillation set", DefaultValueFactory = _ => 1024 };
        var iters = new Option<int>("--iters") { Description = "ADFQ reconstruction iterations per unit", DefaultValueFactory = _ => 3000 };
        var ftEpochs = new Option<int>("--ft-epochs") { Description = "MimiQ fine-tuning epochs over the cell's images", DefaultValueFactory = _ => 8 };
        var ftLr = new Option<float>("--ft-lr") { Description = "MimiQ fine-tuning peak learning rate (raise it for short runs)", DefaultValueFactory = _ => Algorithms.Qat.MimiqOptions.DefaultLr };
        var synthCount = new Option<int>("--synth-count") { Description = "images per synthetic set", DefaultValueFactory = _ => 1024 };
        var synthIters = new Option<int?>("--synth-iters") { Description = "synthesis iterations per batch (default: the spec's, 2000 mimiq, 1000 psaq)" };
        var evalSet = DataSources.DatasetOption();
        var split = DataSources.SplitOption("test");
        var limit = new Option<int?>("--limit") { Description = "evaluate on the first N images only" };
        var threads = CommonOptions.Threads();
        var outDir = new Option<string>("--out") { Description = "folder for compare.md, compare.json, the per-cell results and the synthetic sets", Required = true };
        var json = CommonOptions.Json();
        var labels = DataSources.LabelsOption();
        var cmd = new Command("compare", "run a grid of data sources, quantization methods and bit widths and print one table")
            { model, methods, bits, data, seeds, calibSize, iters, ftEpochs, ftLr, synthCount, synthIters, evalSet, split, limit, threads, outDir, json, labels };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var sw = Stopwatch.StartNew();
            var ms = SplitList(r.GetValue(methods)!, "--methods", QuantizationMethods.Names.ToArray());
            var ds = SplitList(r.GetValue(data)!, "--data", DataSourceNames);
            var bs = r.GetValue(bits)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ParseBits).ToList();
            if (bs.Count == 0) throw new ViTQuantException("--bits: no bit settings given");
            int nSeeds = r.GetValue(seeds), calibN = r.GetValue(calibSize), nSynth = r.GetValue(synthCount);
            if (nSeeds < 1) throw new ViTQuantException($"--seeds must be at least 1, got {nSeeds}");
            if (calibN < 1) throw new ViTQuantException($"--calib-size must be at least 1, got {calibN}");
            if (nSynth < 1) throw new ViTQuantException($"--synth-count must be at least 1, got {nSynth}");
            if (r.GetValue(synthIters) is < 1) throw new ViTQuantException($"--synth-iters must be at least 1, got {r.GetValue(synthIters)}");
            // The budget of every cell; each cell sets its method, bits and seed.
            var budget = new QuantizeOptions { AdfqIterations = r.GetValue(iters), FineTuneEpochs = r.GetValue(ftEpochs), FineTuneLr = r.GetValue(ftLr) };
            if (budget.AdfqIterations < 1) throw new ViTQuantException($"--iters must be at least 1, got {budget.AdfqIterations}");
            if (budget.FineTuneEpochs < 1) throw new ViTQuantException($"--ft-epochs must be at least 1, got {budget.FineTuneEpochs}");
            string dir = r.GetValue(outDir)!, spec = r.GetValue(evalSet)!;
            // The folder is this grid's resume state; a folder that holds something else is the user's, not ours.
            if (File.Exists(dir)) throw new ViTQuantException($"--out {dir} is a file; give a folder");
            if (Directory.Exists(dir) && !File.Exists(Path.Combine(dir, "grid.json")) && !Directory.Exists(Path.Combine(dir, "cells"))
                && Directory.EnumerateFileSystemEntries(dir).Any())
                throw new ViTQuantException($"--out {dir} already exists and is not a vitq compare folder (no grid.json); choose another folder");
            foreach (var d in new[] { dir, Path.Combine(dir, "cells"), Path.Combine(dir, "sets") }) OutputGuard.RemoveStaleIn(d);
            Directory.CreateDirectory(Path.Combine(dir, "cells"));
            Interrupt.Arm(addResume: false);

            var fp = ModelIO.Load(r.GetValue(model));
            var evalDs = DataSources.Limit(DataSources.Open(spec, r.GetValue(split)!, fp.Config, labelsFile: r.GetValue(labels)), r.GetValue(limit));
            CheckGrid(dir, new GridKey(GridFormat, SyntheticSet.ModelFingerprint(fp), spec, r.GetValue(split)!, r.GetValue(limit), calibN,
                budget.AdfqIterations, budget.FineTuneEpochs, budget.FineTuneLr, nSynth, r.GetValue(synthIters)));
            var fpRes = QuantizeCommand.Evaluate("float", fp, null, evalDs);
            var sets = new List<SetInfo>();
            for (ulong seed = 0; seed < (ulong)nSeeds; seed++)
                foreach (var d in ds)
                {
                    CalibrationData? images = null; // loaded when the first unfinished cell of (seed, source) needs them
                    foreach (var (w, a) in bs)
                        foreach (var m in ms)
                        {
                            string bitsName = $"w{w}a{a}", cellName = $"{d}+{m}-{bitsName}-s{seed}", file = Path.Combine(dir, "cells", cellName + ".json");
                            if (File.Exists(file))
                            {
                                Console.Error.WriteLine($"{d}+{m} {bitsName} seed {seed}: {ReadCell(file).Top1:F2}% (from {file})");
                                continue;
                            }
                            var t = Stopwatch.StartNew();
                            images ??= Images(d, fp, spec, calibN, nSynth, r.GetValue(synthIters), seed, dir, sets);
                            string resume = Path.Combine(dir, "cells", cellName + ".resume.safetensors");
                            var q = Progress.Staged(p => QuantizationMethods.Run(fp, images, budget with { Method = m, WeightBits = w, ActivationBits = a, Seed = seed }, resume, p));
                            var (qModel, hooks) = (q.Model.Model, q.Model);
                            var res = QuantizeCommand.Evaluate($"{d}+{m} {bitsName} seed {seed}", qModel, hooks, evalDs);
                            var cell = new Cell(d, m, bitsName, seed, res.Top1, res.Top5, t.Elapsed.TotalSeconds);
                            AtomicFile.WriteAllText(file, JsonSerializer.Serialize(cell));
                            File.Delete(resume);
                            Console.Error.WriteLine($"{d}+{m} {bitsName} seed {seed}: {res.Top1:F2}% ({cell.Seconds:F0} s)");
                        }
                }
            // The table covers every cell in the folder (grid.json guarantees one model and one budget), so a
            // grid grown over several invocations still gets one table: requested rows first, then the rest.
            var cells = Directory.EnumerateFiles(Path.Combine(dir, "cells"), "*.json").Order(StringComparer.Ordinal).Select(ReadCell).ToList();
            var bitNames = bs.Select(b => $"w{b.W}a{b.A}").Concat(cells.Select(x => x.Bits).Order(StringComparer.Ordinal)).Distinct().ToList();
            ds = ds.Concat(DataSourceNames.Where(n => cells.Any(x => x.Data == n))).Distinct().ToArray();
            ms = ms.Concat(QuantizationMethods.Names.Where(n => cells.Any(x => x.Method == n))).Distinct().ToArray();
            int maxSeeds = cells.GroupBy(x => (x.Data, x.Method, x.Bits)).Max(g => g.Count());
            var md = Markdown(fp.Config, fpRes, cells, bitNames, ds, ms, maxSeeds, evalDs.Count, calibN);
            AtomicFile.WriteAllText(Path.Combine(dir, "compare.md"), md);
            var summary = new
            {
                model = fp.Config.Architecture, eval_count = evalDs.Count, fp_top1 = fpRes.Top1, seeds = nSeeds, data = ds, methods = ms, bits = bitNames,
                calib_size = calibN, adfq_iters = budget.AdfqIterations, ft_epochs = budget.FineTuneEpochs, ft_lr = budget.FineTuneLr, synth_count = nSynth,
                synth_iters = r.GetValue(synthIters), synthetic_sets = sets, cells, seconds = sw.Elapsed.TotalSeconds,
                peak_memory_mb = Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0,
            };
            AtomicFile.WriteAllText(Path.Combine(dir, "compare.json"), JsonSerializer.Serialize(summary, new JsonSerializerOptions { WriteIndented = true }));
            Console.Error.Write(md);
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(summary));
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// What a cell's result depends on besides its own name (data, method, bits, seed). A cell is only
    /// reused under the same key; GridFormat changes when a method's meaning changes (format 2: MimiQ's
    /// LSQ steps start from a percentile search, mimiq-init-spec is the old start; ADFQ-ViT quantizes
    /// post-softmax values on a uniform grid below 4 bits).
    /// </summary>
    private sealed record GridKey(string Format, string Model, string Eval, string Split, int? Limit, int CalibSize,
        int AdfqIters, int FtEpochs, float FtLr, int SynthCount, int? SynthIters);

    private const string GridFormat = "vitq-compare/2";

    /// <summary>
    /// Records the grid's key in OUT/grid.json, or checks it against the one there: resuming with another
    /// model or budget would mix cells of two experiments in one table. Throws ViTQuantException then, and
    /// for a folder with cells but no key (written by an older vitq, whose cells may mean something else).
    /// </summary>
    private static void CheckGrid(string dir, GridKey key)
    {
        string path = Path.Combine(dir, "grid.json");
        string json = JsonSerializer.Serialize(key, new JsonSerializerOptions { WriteIndented = true });
        if (File.Exists(path))
        {
            GridKey? old;
            try { old = JsonSerializer.Deserialize<GridKey>(File.ReadAllText(path)); }
            catch (JsonException e) { throw new ViTQuantException($"{path}: unreadable ({e.Message})"); }
            if (old != key)
                throw new ViTQuantException($"{dir} holds a grid of other settings ({Differences(old, key)}); use another --out or the same settings to resume it");
            return;
        }
        if (Directory.EnumerateFiles(Path.Combine(dir, "cells"), "*.json").Any())
            throw new ViTQuantException($"{dir} holds cells of an older vitq without grid.json; their methods may differ, use another --out");
        AtomicFile.WriteAllText(path, json);
    }

    private static string Differences(GridKey? old, GridKey now)
    {
        if (old == null) return "empty grid.json";
        var diffs = typeof(GridKey).GetProperties()
            .Where(p => !Equals(p.GetValue(old), p.GetValue(now)))
            .Select(p => $"{p.Name} {p.GetValue(old) ?? "none"} there, {p.GetValue(now) ?? "none"} now");
        return string.Join("; ", diffs);
    }

    private static Cell ReadCell(string file)
    {
        try { return JsonSerializer.Deserialize<Cell>(File.ReadAllText(file)) ?? throw new ViTQuantException($"{file}: unreadable cell result"); }
        catch (JsonException e) { throw new ViTQuantException($"{file}: unreadable cell result ({e.Message})"); }
    }

    private static string[] SplitList(string value, string flag, string[] known)
    {
        var items = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToArray();
        if (items.Length == 0) throw new ViTQuantException($"{flag}: nothing given ({string.Join(", ", known)})");
        foreach (var i in items)
            if (!known.Contains(i)) throw new ViTQuantException($"{flag}: unknown value '{i}' ({string.Join(", ", known)})");
        return items;
    }

    /// <summary>
    /// The cell images of one source and seed: real training images, or a subset of the seed's synthetic
    /// set, made (resumably) under OUT/sets/ when missing.
    /// </summary>
    private static CalibrationData Images(string source, VisionModel fp, string spec, int count, int synthCount, int? synthIters,
        ulong seed, string dir, List<SetInfo> made)
    {
        if (source == "real") return CalibrationData.Load(spec, count, fp.Config, seed, flag: "--dataset");
        string setsDir = Path.Combine(dir, "sets"), path = Path.Combine(setsDir, $"{source}-s{seed}.safetensors");
        if (!File.Exists(path))
        {
            Directory.CreateDirectory(setsDir);
            string method = source.StartsWith("mimiq", StringComparison.Ordinal) ? "mimiq" : source;
            var settings = SynthesisSettings.For(method) with { Count = synthCount, Seed = seed };
            if (source == "mimiq-no-ihc") settings = settings with { LambdaIhc = 0 };
            if (source == "mimiq-signed") settings = settings with { IhcSigned = true };
            if (method != "gaussian" && synthIters is int it) settings = settings with { Iterations = it };
            settings = settings.Validated();
            var t = Stopwatch.StartNew();
            Progress.Staged(pr => Vitq.Synthesize(fp, settings, path, resumable: true, progress: pr), title: $"synthesize {source} seed {seed}");
            made.Add(new SetInfo(source, seed, synthCount, settings.Iterations, t.Elapsed.TotalSeconds));
            Console.Error.WriteLine($"synthesized {source} seed {seed}: {synthCount} images in {t.Elapsed.TotalSeconds:F0} s "
                + $"({1000 * t.Elapsed.TotalSeconds / synthCount:F0} s per 1,000 images)");
        }
        return CalibrationData.Load(path, count, fp.Config, seed);
    }

    public static (int W, int A) ParseBits(string s)
    {
        var m = System.Text.RegularExpressions.Regex.Match(s, @"^w(\d+)a(\d+)$");
        if (!m.Success) throw new ViTQuantException($"--bits: '{s}' is not of the form wXaY (e.g. w4a4)");
        int w = int.Parse(m.Groups[1].Value), a = int.Parse(m.Groups[2].Value);
        if (w < 2 || w > 8 || a < 2 || a > 8) throw new ViTQuantException($"--bits: '{s}' has bits outside 2–8");
        return (w, a);
    }

    /// <summary>One row per (data source, method); a lone "real" source labels rows by method only.</summary>
    private static string Markdown(IModelConfig c, EvalResult fp, List<Cell> cells, List<string> bits, string[] data, string[] methods, int seeds, int count, int calibN)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine($"Top-1 (%) of {c.Architecture} on {count} evaluation images, fake-quant simulation; mean ± std over the seeds run (at most {seeds}); "
            + $"{calibN} images per cell. Float: {fp.Top1.ToString("F2", inv)}.");
        sb.AppendLine();
        sb.AppendLine("| data + method | " + string.Join(" | ", bits) + " |");
        sb.AppendLine("|---|" + string.Concat(bits.Select(_ => "---|")));
        foreach (var d in data)
            foreach (var m in methods)
            {
                if (!cells.Any(x => x.Data == d && x.Method == m)) continue; // a pair no invocation asked for
                sb.Append(data is ["real"] ? $"| {m} |" : $"| {d}+{m} |");
                foreach (var b in bits)
                {
                    var v = cells.Where(x => x.Data == d && x.Method == m && x.Bits == b).Select(x => x.Top1).ToArray();
                    if (v.Length == 0) { sb.Append(" – |"); continue; }
                    double mean = v.Average(), sd = v.Length > 1 ? Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Length - 1)) : 0;
                    sb.Append(v.Length > 1 ? $" {mean.ToString("F2", inv)} ± {sd.ToString("F2", inv)} |" : $" {mean.ToString("F2", inv)} |");
                }
                sb.AppendLine();
            }
        return sb.ToString();
    }
}
