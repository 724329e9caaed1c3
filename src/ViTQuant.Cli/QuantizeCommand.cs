// vitq quantize: post-training quantization (minmax, percentile, adfq) of a model, evaluated against
// its float original in the same run, written as an integer-weight checkpoint with a report.
// adfq: calibrate the ADFQ plan, then reconstruct unit by unit (AdfqReconstruction; a progress bar per
// unit) before the common freeze → evaluate → report → save. Its flags (--iters and the ablation
// switches) are refused with the other methods so that an experiment never silently ignores one.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Api;
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
        var method = new Option<string>("--method") { Description = "minmax, percentile, adfq (post-training) or mimiq (fine-tuning on --data)", DefaultValueFactory = _ => "minmax" };
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
        var blocksPerPass = new Option<int>("--calib-blocks-per-pass") { Description = "calibrate this many blocks per pass over the calibration set (0: as many as fit in a quarter of the memory, one pass when all do); bounds the memory of exact statistics", DefaultValueFactory = _ => 0 };
        var sample = new Option<int>("--calib-sample") { Description = "keep a random sample of at most N values per quantization group for the quantiles and range searches instead of every value (0: exact statistics)", DefaultValueFactory = _ => 0 };
        var overwrite = OutputGuard.OverwriteOption();
        var labels = DataSources.LabelsOption();
        var adfq = new AdfqFlags();
        var cmd = new Command("quantize", "quantize a model after training and report the accuracy it keeps")
            { model, method, wbits, abits, calib, calibSize, evalSet, split, limit, firstLast, seed, threads, outOpt, json, blocksPerPass, sample };
        cmd.Options.Add(overwrite);
        cmd.Options.Add(labels);
        foreach (var o in adfq.All) cmd.Options.Add(o);
        var mimiq = new MimiqFlags();
        mimiq.AddTo(cmd);
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var sw = Stopwatch.StartNew();
            string outPath = r.GetValue(outOpt)!, m = r.GetValue(method)!;
            OutputGuard.CheckFile(outPath, r.GetValue(overwrite), "--out", r.GetValue(model));
            OutputGuard.RemoveStale(outPath + ".resume.safetensors");
            if (m == "mimiq") Interrupt.Arm(addResume: true);
            if (m is not ("minmax" or "percentile" or "adfq" or "mimiq")) throw new ViTQuantException($"--method: unknown method '{m}' (minmax, percentile, adfq, mimiq)");
            AdfqOptions? adfqOpts = m == "adfq" ? adfq.Read(r, r.GetValue(seed)) : adfq.RefuseGiven(r, m);
            if (r.GetValue(sample) < 0) throw new ViTQuantException($"--calib-sample must be 0 (every value) or positive, got {r.GetValue(sample)}");
            if (m == "mimiq" && (r.GetValue(sample) != 0 || r.GetValue(blocksPerPass) != 0))
                throw new ViTQuantException("--calib-sample and --calib-blocks-per-pass apply to the post-training methods; mimiq initialises on its own images");
            var fp = DataSources.LoadModel(r.GetValue(model));
            var c = fp.Config;
            var evalDs = DataSources.Limit(DataSources.Open(r.GetValue(evalSet)!, r.GetValue(split)!, c, labelsFile: r.GetValue(labels)), r.GetValue(limit));
            // MimiQ needs no calibration data (data-free): it initialises LSQ on its own distillation images.
            var calibData = m == "mimiq" ? null : CalibrationData.Load(r.GetValue(calib)!, r.GetValue(calibSize), c, r.GetValue(seed));
            var options = Flags(() => new QuantizeOptions
            {
                Method = m, WeightBits = r.GetValue(wbits), ActivationBits = r.GetValue(abits), FirstLast8Bit = r.GetValue(firstLast), Seed = r.GetValue(seed),
                CalibrationSampleSize = r.GetValue(sample), CalibrationBlocksPerPass = r.GetValue(blocksPerPass), Adfq = adfqOpts,
            }.Validated()); // a bad flag fails here, before the float evaluation

            var fpRes = Evaluate("float", fp, null, evalDs);
            MimiqFineTuneCliResult? ft = null;
            var result = m == "mimiq"
                ? QuantizationResult.Freeze((ft = MimiqFineTune.Run(fp, mimiq.Read(r, r.GetValue(wbits), r.GetValue(abits), r.GetValue(firstLast), r.GetValue(seed), outPath))).Student, options)
                : Progress.Staged(p => Vitq.Quantize(fp, calibData!, options, p));
            var (qm, calibration, units) = (result.Model, result.Calibration, result.AdfqUnits);
            var plan = qm.Plan;
            var qRes = Evaluate($"{m} w{plan.WeightBits}a{plan.ActivationBits}", qm.Model, qm, evalDs);
            // Diagnostic only (no decision uses it): the damage report on the first evaluation images.
            var layers = Vitq.LayerDamage(fp, qm, evalDs, images: 128);
            double seconds = sw.Elapsed.TotalSeconds, peak = Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0;
            // The report travels inside the checkpoint, so it carries what the file stores but not the
            // file's own size; that is added to the printed JSON once the file exists.
            var storage = result.Storage;
            var summary = new
            {
                method = m, bits = $"w{plan.WeightBits}a{plan.ActivationBits}", fp_top1 = fpRes.Top1, quant_top1 = qRes.Top1,
                fp_top5 = fpRes.Top5, quant_top5 = qRes.Top5, eval_count = qRes.Count, calib = m == "mimiq" ? null : r.GetValue(calib), calib_size = calibData?.Count ?? 0,
                fine_tune = ft?.Summary,
                calibration_passes = m == "mimiq" ? 0 : qm.CalibrationPasses,
                calibration_memory_mb = m == "mimiq" ? 0 : qm.CalibrationBytesPerPass / 1048576.0,
                calibration = calibration.Select(p => new
                {
                    point = p.Point, role = p.Role, quantizer = p.Quantizer, values_seen = p.ValuesSeen, values_used = p.ValuesUsed,
                    sample_size = p.SampleSize > 0 ? p.SampleSize : (int?)null,
                    parameters = p.Parameters.Select(s => new { name = s.Name, count = s.Count, value = s.Value, min = s.Min, median = s.Median, max = s.Max }),
                }),
                seed = r.GetValue(seed), seconds, peak_memory_mb = peak, out_path = outPath,
                quantized_weights = storage.QuantizedWeights, code_bytes = storage.CodeBytes, weight_bytes = storage.WeightBytes,
                bytes_per_weight = storage.BytesPerWeight,
                layers = layers.Select(l => new { point = l.Point, kind = l.Kind, quantizer = l.Quantizer, sqnr_db = Finite(l.Sqnr), local_sqnr_db = Finite(l.LocalSqnr), cosine = l.Cosine, outlier_fraction = l.OutlierFraction }),
                adfq = adfqOpts == null ? null : new
                {
                    options = adfqOpts.Describe(),
                    units = units!.Select(u => new { unit = u.Unit.Name, iterations = u.Iterations, seconds = u.Seconds, last_loss = Finite(u.LastLoss), calibration_rec = Finite(u.CalibrationRec) }),
                },
            };
            // The output was checked (and --overwrite honoured) before any work.
            storage = result.Save(outPath, overwrite: true, new Dictionary<string, string> { ["vitq.report"] = JsonSerializer.Serialize(summary) });
            if (ft != null) File.Delete(ft.ResumePath);
            if (adfqOpts != null) PrintUnits(adfqOpts, units!);
            PrintCalibration(calibration);
            PrintReport(fpRes, qRes, layers, m, plan, seconds, peak, outPath, storage);
            if (r.GetValue(json))
            {
                var node = JsonSerializer.SerializeToNode(summary)!.AsObject();
                node["file_bytes"] = storage.FileBytes;
                Console.WriteLine(node.ToJsonString());
            }
            return 0;
        });
        return cmd;
    }

    private static double? Finite(double v) => double.IsFinite(v) ? v : null;

    /// <summary>One line on how the calibration statistics were taken (exact or sampled, and how many values).</summary>
    private static void PrintCalibration(IReadOnlyList<PointCalibration> points)
    {
        if (points.Count == 0) return;
        long seen = points.Sum(p => p.ValuesSeen), used = points.Sum(p => p.ValuesUsed);
        var sampled = points.Where(p => p.SampleSize > 0).ToList();
        Console.Error.WriteLine(sampled.Count == 0
            ? $"calibration: exact statistics at {points.Count} points over {seen:N0} observed values (no sampling)"
            : $"calibration: {sampled.Count} of {points.Count} points sampled (sizes {string.Join(", ", sampled.Select(p => p.SampleSize).Distinct())} per group): statistics used {used:N0} of {seen:N0} observed values");
    }

    private static void PrintUnits(AdfqOptions opts, IReadOnlyList<AdfqUnitResult> units)
    {
        var e = Console.Error;
        e.WriteLine($"adfq reconstruction: {opts.Describe()}");
        e.WriteLine($"    {"unit",-16} {"iters",6} {"seconds",8} {"last loss",10} {"calib rec",10}");
        foreach (var u in units)
            e.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    {u.Unit.Name,-16} {u.Iterations,6} {u.Seconds,8:F1} {u.LastLoss,10:G4} {u.CalibrationRec,10:G4}"));
    }

    /// <summary>Evaluates through the library under one bar titled "eval TITLE" (quantize, compare and demo evaluate many models in a run).</summary>
    internal static EvalResult Evaluate(string title, VisionModel model, IModelHooks? hooks, IImageDataset ds) =>
        Progress.Staged(p => Vitq.Evaluate(model, ds, hooks, batchSize: 256, progress: p), title: $"eval {title}");

    /// <summary>The options' validation, its errors named by the flag that set the property (--wbits, not WeightBits).</summary>
    private static QuantizeOptions Flags(Func<QuantizeOptions> validated)
    {
        try { return validated(); }
        catch (ArgumentException e) when (e.ParamName is string p && FlagOf.TryGetValue(p, out var flag))
        {
            throw new ViTQuantException($"{flag} {e.Message.Replace($" (Parameter '{p}')", "")}");
        }
    }

    private static readonly Dictionary<string, string> FlagOf = new()
    {
        [nameof(QuantizeOptions.WeightBits)] = "--wbits", [nameof(QuantizeOptions.ActivationBits)] = "--abits",
        [nameof(QuantizeOptions.CalibrationSampleSize)] = "--calib-sample", [nameof(QuantizeOptions.CalibrationBlocksPerPass)] = "--calib-blocks-per-pass",
        [nameof(QuantizeOptions.Method)] = "--method",
    };

    private static void PrintReport(EvalResult fp, EvalResult q, IReadOnlyList<LayerReport> layers, string method, QuantPlan plan, double seconds, double peak, string outPath,
        CheckpointStorage storage)
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
        e.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  checkpoint {storage.FileBytes:N0} bytes: {storage.QuantizedWeights:N0} quantized weights in {storage.WeightBytes:N0} bytes ({storage.CodeBytes:N0} of packed codes + scales), {storage.BytesPerWeight:F3} bytes a weight; {storage.FloatBytes:N0} bytes of float tensors"));
    }
}

/// <summary>The adfq-only flags of quantize: reconstruction length and the ablation switches.</summary>
internal sealed class AdfqFlags
{
    public readonly Option<int> Iters = new("--iters") { Description = "adfq: optimisation iterations per unit", DefaultValueFactory = _ => 3000 };
    public readonly Option<bool> NoRecon = new("--no-recon") { Description = "adfq: skip reconstruction (AdaRound weights round to nearest)" };
    public readonly Option<bool> NoAttnKl = new("--no-attn-kl") { Description = "adfq: drop the attention-score KL term" };
    public readonly Option<bool> NoPerPatch = new("--no-per-patch") { Description = "adfq: per-tensor uniform quantizers on the qkv and fc1 inputs" };
    public readonly Option<bool> NoShiftLog = new("--no-shift-log") { Description = "adfq: per-tensor uniform quantizer on the fc2 input" };
    public readonly Option<string> ShiftLogBase = new("--shift-log-base") { Description = "adfq: log base of the fc2-input Shift-Log quantizer, 2 or sqrt2", DefaultValueFactory = _ => "sqrt2" };
    public readonly Option<string> SoftmaxQuant = new("--softmax-quant") { Description = "adfq: post-softmax quantizer: auto (log-sqrt2 from 4 bits, uniform below), log-sqrt2 (the spec's), log2 or uniform (percentile, learned step)", DefaultValueFactory = _ => "auto" };
    public readonly Option<float> Fc1Alpha = new("--fc1-alpha") { Description = "adfq: outlier threshold of the fc1-input per-patch quantizer", DefaultValueFactory = _ => 5f };
    public readonly Option<float> QDropProb = new("--qdrop-prob") { Description = "adfq: probability that a unit input element is taken from the float network (0 disables QDrop)", DefaultValueFactory = _ => 0.5f };

    public IEnumerable<Option> All => new Option[] { Iters, NoRecon, NoAttnKl, NoPerPatch, NoShiftLog, ShiftLogBase, SoftmaxQuant, Fc1Alpha, QDropProb };

    /// <summary>The options the flags describe; ViTQuantException names a bad flag.</summary>
    public AdfqOptions Read(ParseResult r, ulong seed)
    {
        bool sqrt2 = r.GetValue(ShiftLogBase) switch
        {
            "sqrt2" or "√2" => true,
            "2" => false,
            var b => throw new ViTQuantException($"--shift-log-base: '{b}' is not 2 or sqrt2"),
        };
        QuantKind? probs = r.GetValue(SoftmaxQuant) switch
        {
            "auto" => null,
            "log-sqrt2" => QuantKind.LogSqrt2,
            "log2" => QuantKind.Log2,
            "uniform" => QuantKind.Uniform,
            var q => throw new ViTQuantException($"--softmax-quant: '{q}' is not auto, log-sqrt2, log2 or uniform"),
        };
        return new AdfqOptions
        {
            Probs = probs,
            Iterations = r.GetValue(Iters), Seed = seed, QDropProbability = r.GetValue(QDropProb),
            Reconstruct = !r.GetValue(NoRecon), AttentionKl = !r.GetValue(NoAttnKl),
            PerPatch = !r.GetValue(NoPerPatch), ShiftLog = !r.GetValue(NoShiftLog), ShiftLogSqrtTwoBase = sqrt2, Fc1Alpha = r.GetValue(Fc1Alpha),
        };
    }

    /// <summary>Throws ViTQuantException when an adfq flag was given with another method; returns null.</summary>
    public AdfqOptions? RefuseGiven(ParseResult r, string method)
    {
        foreach (var o in All)
            if (r.GetResult(o) is { Implicit: false }) throw new ViTQuantException($"{o.Name} only applies to --method adfq (got --method {method})");
        return null;
    }
}
