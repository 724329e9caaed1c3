// vitq compare: a grid of methods × bit settings × seeds on one model, evaluated on the same images
// with the float accuracy re-measured in the same run; one table (mean ± std over seeds) written as
// Markdown and JSON. Every finished cell is saved under OUT/cells/, so an interrupted comparison
// resumes where it stopped.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.IO;
using ViTQuant.Models;

namespace ViTQuant.Cli;

internal static class CompareCommand
{
    public sealed record Cell(string Method, string Bits, ulong Seed, double Top1, double? Top5, double Seconds);

    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var methods = new Option<string>("--methods") { Description = "comma-separated: " + string.Join(", ", CompareMethods.Names), DefaultValueFactory = _ => "minmax,percentile,adfq" };
        var bits = new Option<string>("--bits") { Description = "comma-separated wXaY settings", DefaultValueFactory = _ => "w8a8,w6a6,w4a8,w4a4,w3a3" };
        var seeds = new Option<int>("--seeds") { Description = "seeds per cell (0, 1, …)", DefaultValueFactory = _ => 3 };
        var calibSize = new Option<int>("--calib-size") { Description = "calibration images per cell", DefaultValueFactory = _ => 1024 };
        var iters = new Option<int>("--iters") { Description = "ADFQ reconstruction iterations per unit", DefaultValueFactory = _ => 3000 };
        var evalSet = DataSources.DatasetOption();
        var split = DataSources.SplitOption("test");
        var limit = new Option<int?>("--limit") { Description = "evaluate on the first N images only" };
        var threads = CommonOptions.Threads();
        var outDir = new Option<string>("--out") { Description = "folder for compare.md, compare.json and the per-cell results", Required = true };
        var json = CommonOptions.Json();
        var cmd = new Command("compare", "run a grid of quantization methods and bit widths and print one table")
            { model, methods, bits, seeds, calibSize, iters, evalSet, split, limit, threads, outDir, json };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var sw = Stopwatch.StartNew();
            var ms = r.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var m in ms) if (!CompareMethods.Names.Contains(m)) throw new ViTQuantException($"--methods: unknown method '{m}' ({string.Join(", ", CompareMethods.Names)})");
            var bs = r.GetValue(bits)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ParseBits).ToList();
            int nSeeds = r.GetValue(seeds);
            if (nSeeds < 1) throw new ViTQuantException($"--seeds must be at least 1, got {nSeeds}");
            string dir = r.GetValue(outDir)!;
            Directory.CreateDirectory(Path.Combine(dir, "cells"));

            var fp = DataSources.LoadModel(r.GetValue(model));
            var evalDs = DataSources.Limit(DataSources.Open(r.GetValue(evalSet)!, r.GetValue(split)!, fp.Config), r.GetValue(limit));
            var fpRes = QuantizeCommand.Evaluate("float", fp, null, evalDs);
            var cells = new List<Cell>();
            foreach (var (w, a) in bs)
                foreach (var m in ms)
                    for (ulong seed = 0; seed < (ulong)nSeeds; seed++)
                    {
                        string bitsName = $"w{w}a{a}", file = Path.Combine(dir, "cells", $"{m}-{bitsName}-s{seed}.json");
                        if (File.Exists(file))
                        {
                            cells.Add(JsonSerializer.Deserialize<Cell>(File.ReadAllText(file)) ?? throw new ViTQuantException($"{file}: unreadable cell result"));
                            Console.Error.WriteLine($"{m} {bitsName} seed {seed}: {cells[^1].Top1:F2}% (from {file})");
                            continue;
                        }
                        var t = Stopwatch.StartNew();
                        var calib = Calibration.Load("fashion-mnist", r.GetValue(calibSize), fp.Config, seed);
                        var (qModel, hooks) = CompareMethods.Run(m, fp, w, a, calib, seed, r.GetValue(iters));
                        var res = QuantizeCommand.Evaluate($"{m} {bitsName} seed {seed}", qModel, hooks, evalDs);
                        var cell = new Cell(m, bitsName, seed, res.Top1, res.Top5, t.Elapsed.TotalSeconds);
                        AtomicFile.WriteAllText(file, JsonSerializer.Serialize(cell));
                        cells.Add(cell);
                        Console.Error.WriteLine($"{m} {bitsName} seed {seed}: {res.Top1:F2}% ({cell.Seconds:F0} s)");
                    }
            var md = Markdown(fp.Config, fpRes, cells, bs.Select(b => $"w{b.W}a{b.A}").ToList(), ms, nSeeds, evalDs.Count);
            AtomicFile.WriteAllText(Path.Combine(dir, "compare.md"), md);
            var summary = new
            {
                model = fp.Config.Architecture, eval_count = evalDs.Count, fp_top1 = fpRes.Top1, seeds = nSeeds,
                calib_size = r.GetValue(calibSize), adfq_iters = r.GetValue(iters), cells, seconds = sw.Elapsed.TotalSeconds,
            };
            AtomicFile.WriteAllText(Path.Combine(dir, "compare.json"), JsonSerializer.Serialize(summary, new JsonSerializerOptions { WriteIndented = true }));
            Console.Error.Write(md);
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(summary));
            return 0;
        });
        return cmd;
    }

    public static (int W, int A) ParseBits(string s)
    {
        var m = System.Text.RegularExpressions.Regex.Match(s, @"^w(\d+)a(\d+)$");
        if (!m.Success) throw new ViTQuantException($"--bits: '{s}' is not of the form wXaY (e.g. w4a4)");
        int w = int.Parse(m.Groups[1].Value), a = int.Parse(m.Groups[2].Value);
        if (w < 2 || w > 8 || a < 2 || a > 8) throw new ViTQuantException($"--bits: '{s}' has bits outside 2–8");
        return (w, a);
    }

    private static string Markdown(ViTConfig c, EvalResult fp, List<Cell> cells, List<string> bits, string[] methods, int seeds, int count)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine($"Top-1 (%) of {c.Architecture} on {count} evaluation images, fake-quant simulation; mean ± std over {seeds} seed(s). Float: {fp.Top1.ToString("F2", inv)}.");
        sb.AppendLine();
        sb.AppendLine("| method | " + string.Join(" | ", bits) + " |");
        sb.AppendLine("|---|" + string.Concat(bits.Select(_ => "---|")));
        foreach (var m in methods)
        {
            sb.Append($"| {m} |");
            foreach (var b in bits)
            {
                var v = cells.Where(x => x.Method == m && x.Bits == b).Select(x => x.Top1).ToArray();
                if (v.Length == 0) { sb.Append(" – |"); continue; }
                double mean = v.Average(), sd = v.Length > 1 ? Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Length - 1)) : 0;
                sb.Append(v.Length > 1 ? $" {mean.ToString("F2", inv)} ± {sd.ToString("F2", inv)} |" : $" {mean.ToString("F2", inv)} |");
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }
}
