// vitq quantize: post-training quantization (minmax, percentile, adfq) of a model, evaluated against
// its float original in the same run, written as an integer-weight checkpoint with a report.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class QuantizeCommand
{
    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var method = new Option<string>("--method") { Description = "minmax, percentile or adfq", DefaultValueFactory = _ => "minmax" };
        var wbits = new Option<int>("--wbits") { Description = "weight bits (2–8)", DefaultValueFactory = _ => 8 };
        var abits = new Option<int>("--abits") { Description = "activation bits (2–8)", DefaultValueFactory = _ => 8 };
        var calib = new Option<string>("--calib") { Description = "calibration data: fashion-mnist (training split), folder:PATH, or a synthetic set .safetensors", DefaultValueFactory = _ => "fashion-mnist" };
        var calibSize = new Option<int>("--calib-size") { Description = "calibration images", DefaultValueFactory = _ => 1024 };
        var evalSet = DataSources.DatasetOption();
        var split = DataSources.SplitOption("test");
        var limit = new Option<int?>("--limit") { Description = "evaluate on the first N images only" };
        var firstLast = new Option<bool>("--first-last-8bit") { Description = "keep patch embedding and head at 8 bits" };
        var seed = CommonOptions.Seed();
        var threads = CommonOptions.Threads();
        var outOpt = new Option<string>("--out") { Description = "quantized checkpoint to write (.safetensors)", Required = true };
        var json = CommonOptions.Json();
        var cmd = new Command("quantize", "quantize a model after training and report the accuracy it keeps")
            { model, method, wbits, abits, calib, calibSize, evalSet, split, limit, firstLast, seed, threads, outOpt, json };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var sw = Stopwatch.StartNew();
            string outPath = r.GetValue(outOpt)!, m = r.GetValue(method)!;
            if (r.GetValue(model) is string mp) AtomicFile.EnsureNotSameFile(mp, outPath);
            if (File.Exists(outPath)) throw new ViTQuantException($"--out {outPath} already exists; choose another path or delete it");
            if (m is not ("minmax" or "percentile" or "adfq")) throw new ViTQuantException($"--method: unknown method '{m}' (minmax, percentile, adfq)");
            var plan = QuantPresets.Create(m, r.GetValue(wbits), r.GetValue(abits), r.GetValue(firstLast));
            var fp = DataSources.LoadModel(r.GetValue(model));
            var c = fp.Config;
            var evalDs = DataSources.Limit(DataSources.Open(r.GetValue(evalSet)!, r.GetValue(split)!, c), r.GetValue(limit));
            var calibBatches = Calibration.Load(r.GetValue(calib)!, r.GetValue(calibSize), c, r.GetValue(seed));

            var fpRes = Evaluate("float", fp, null, evalDs);
            var qm = new QuantizedModel(fp.Clone(), plan);
            Progress.Run("calibrate", calibBatches.Sum(b => b.Shape[0]), rep => { qm.Calibrate(calibBatches, n => rep.Update(n)); return 0; });
            var codes = QuantizedCheckpoint.Freeze(qm);
            var qRes = Evaluate($"{m} w{plan.WeightBits}a{plan.ActivationBits}", qm.Model, qm, evalDs);
            // Diagnostic only (no decision uses it): the damage report on the first evaluation images.
            var reportBatch = new DataLoader(evalDs, 128, mean: c.Mean, std: c.Std, prefetch: 0).Epoch(0).First().Images;
            var layers = QuantReport.Build(fp, qm, reportBatch);
            double seconds = sw.Elapsed.TotalSeconds, peak = Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0;
            var summary = new
            {
                method = m, bits = $"w{plan.WeightBits}a{plan.ActivationBits}", fp_top1 = fpRes.Top1, quant_top1 = qRes.Top1,
                fp_top5 = fpRes.Top5, quant_top5 = qRes.Top5, eval_count = qRes.Count, calib = r.GetValue(calib), calib_size = calibBatches.Sum(b => b.Shape[0]),
                seed = r.GetValue(seed), seconds, peak_memory_mb = peak, out_path = outPath,
                layers = layers.Select(l => new { point = l.Point, kind = l.Kind, quantizer = l.Quantizer, sqnr_db = Finite(l.Sqnr), local_sqnr_db = Finite(l.LocalSqnr), cosine = l.Cosine, outlier_fraction = l.OutlierFraction }),
            };
            QuantizedCheckpoint.Save(qm, codes, outPath, new Dictionary<string, string>
            {
                ["vitq.method"] = m,
                ["vitq.report"] = JsonSerializer.Serialize(summary),
            });
            PrintReport(fpRes, qRes, layers, m, plan, seconds, peak, outPath);
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(summary));
            return 0;
        });
        return cmd;
    }

    private static double? Finite(double v) => double.IsFinite(v) ? v : null;

    internal static EvalResult Evaluate(string title, VisionTransformer model, IModelHooks? hooks, IImageDataset ds)
    {
        var loader = new DataLoader(ds, 256, mean: model.Config.Mean, std: model.Config.Std);
        return Progress.Run($"eval {title}", ds.Count, rep =>
            Evaluator.Evaluate(model, loader.Epoch(0).Select(b => (b.Images, b.Labels)), hooks, n => rep.Update(n, $"{rep.Rate:F0} img/s")));
    }

    private static void PrintReport(EvalResult fp, EvalResult q, List<LayerReport> layers, string method, QuantPlan plan, double seconds, double peak, string outPath)
    {
        var e = Console.Error;
        e.WriteLine($"method {method} w{plan.WeightBits}a{plan.ActivationBits} (fake-quant simulation), {q.Count} evaluation images");
        e.WriteLine($"  float      top-1 {fp.Top1,6:F2}%" + (fp.Top5 is double f5 ? $"  top-5 {f5:F2}%" : ""));
        e.WriteLine($"  quantized  top-1 {q.Top1,6:F2}%" + (q.Top5 is double q5 ? $"  top-5 {q5:F2}%" : "") + $"  (Δ {q.Top1 - fp.Top1:+0.00;-0.00} points)");
        e.WriteLine("  most damaged quantization points (SQNR vs the float network, dB):");
        e.WriteLine($"    {"point",-26} {"kind",-10} {"SQNR",7} {"local",7} {"cosine",8}  quantizer");
        foreach (var l in layers.Take(10))
            e.WriteLine($"    {l.Point,-26} {l.Kind,-10} {l.Sqnr,7:F1} {l.LocalSqnr,7:F1} {l.Cosine,8:F5}  {l.Quantizer}" + (l.OutlierFraction is double o ? $" (outliers {100 * o:F3}%)" : ""));
        e.WriteLine($"  wall time {seconds:F1} s, peak memory {peak:F0} MB; wrote {outPath}");
    }
}

/// <summary>Calibration images as normalised batches of the model's input shape.</summary>
internal static class Calibration
{
    public static List<Tensor> Load(string spec, int count, ViTConfig c, ulong seed, int batch = 64)
    {
        if (count < 1) throw new ViTQuantException($"--calib-size must be at least 1, got {count}");
        IImageDataset ds;
        if (spec == "fashion-mnist" || spec.StartsWith("folder:")) ds = DataSources.Open(spec, "train", c);
        else if (spec.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) ds = Algorithms.DataFree.SyntheticSet.Load(spec, c);
        else throw new ViTQuantException($"--calib: unknown calibration source '{spec}' (fashion-mnist, folder:PATH, or a synthetic set .safetensors)");
        if (count < ds.Count) ds = ds.RandomSubset(count, seed);
        var loader = new DataLoader(ds, batch, mean: c.Mean, std: c.Std);
        return loader.Epoch(0).Select(b => b.Images).ToList();
    }
}
