// vitq demo: the main job. The shipped model through the data-free pipeline at one bit setting, with
// the rows that tell the story: full precision; Gaussian / PSAQ / MimiQ synthetic data + min–max
// PTQ; MimiQ (its data + fine-tuning); real-data ADFQ-ViT for reference. Every artefact (synthetic
// sets, fine-tuning checkpoint, finished rows) lives under --out, so an interrupted demo resumes.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Algorithms.Qat;
using ViTQuant.Api;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class DemoCommand
{
    /// <summary>The sizes of one demo run. "quick" fits the 10-minute budget on 2 cores; "paper" is the paper's setting.</summary>
    public sealed record Preset(string Name, int SynthImages, int SynthBatch, int MimiqIterations, int PsaqIterations, int FineTuneEpochs, float FineTuneLr, int AdfqIterations, int CalibImages);

    // The quick preset fine-tunes for only 32 steps (64 images × 8 epochs, batch 16), too few for the
    // default rate; its rate was picked on the validation split (never the test set): 3e-3 with the spec's
    // LSQ start, 1e-3 since LSQ starts from a percentile search (89.99 % model: 89.00 vs 88.38 % at 3e-3).
    // Re-checked on the shipped model, 1e-3 ties 3e-4 and leads 3e-3 on 128 images, while on the preset's
    // 64 images 3e-3 leads by 0.34, inside one run's noise; see docs/results/README.md.
    public static readonly Preset Quick = new("quick", SynthImages: 64, SynthBatch: 32, MimiqIterations: 200, PsaqIterations: 200, FineTuneEpochs: 8, FineTuneLr: QuickFineTuneLr, AdfqIterations: 100, CalibImages: 256);
    public static readonly Preset Paper = new("paper", SynthImages: 10_000, SynthBatch: 16, MimiqIterations: 2000, PsaqIterations: 1000, FineTuneEpochs: 100, FineTuneLr: MimiqOptions.DefaultLr, AdfqIterations: 3000, CalibImages: 1024);
    private const float QuickFineTuneLr = 1e-3f;

    public sealed record Row(string Name, double Top1, double Seconds);

    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var preset = new Option<string>("--preset") { Description = "quick (about 10 minutes on 2 cores) or paper (the paper's settings: many hours)", DefaultValueFactory = _ => "quick" };
        var bits = new Option<string>("--bits") { Description = "bit setting wXaY", DefaultValueFactory = _ => "w4a4" };
        var limit = new Option<int?>("--limit") { Description = "evaluate on the first N test images only" };
        var seed = CommonOptions.Seed();
        var threads = CommonOptions.Threads();
        var outDir = new Option<string>("--out") { Description = "work folder (synthetic sets, checkpoints, results); reused to resume", DefaultValueFactory = _ => "out/demo" };
        var json = CommonOptions.Json();
        var cmd = new Command("demo", "the data-free pipeline on the shipped model: synthesize, quantize, fine-tune, compare") { model, preset, bits, limit, seed, threads, outDir, json };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var p = r.GetValue(preset) switch
            {
                "quick" => Quick,
                "paper" => Paper,
                var other => throw new ViTQuantException($"--preset: unknown preset '{other}' (quick, paper)"),
            };
            var (w, a) = CompareCommand.ParseBits(r.GetValue(bits)!);
            ulong s = r.GetValue(seed);
            var sw = Stopwatch.StartNew();
            var fp = ModelIO.Load(r.GetValue(model));
            var c = fp.Config;
            // Finished rows are reused only by a run that would recompute them identically: same model
            // weights, preset sizes and evaluation limit (the key), bits and seed (the name).
            string key = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(
                $"{SyntheticSet.ModelFingerprint(fp)}|{p}|{r.GetValue(limit)}")))[..8].ToLowerInvariant();
            string dir = Path.Combine(r.GetValue(outDir)!, $"{p.Name}-w{w}a{a}-s{s}-{key}");
            Directory.CreateDirectory(dir);
            OutputGuard.RemoveStaleIn(dir);
            Interrupt.Arm(addResume: false);
            var test = DataSources.Limit(DataSources.Open("fashion-mnist", "test", c), r.GetValue(limit));
            Console.Error.WriteLine($"demo ({p.Name} preset) on {c.Architecture}, w{w}a{a}, seed {s}, {test.Count} test images; work folder {dir}");

            var rows = new List<Row>();
            string RowFile(string name) => Path.Combine(dir, $"row-{name.Replace('+', '_')}.json");
            string SetFile(string method) => Path.Combine(dir, $"{method}.safetensors");
            using var overall = new Overall(StepCosts(p, test.Count, c.BlockPrefixes().Count())
                .Where(st => !File.Exists(st.Step.StartsWith("synthesize ") ? SetFile(st.Step["synthesize ".Length..]) : RowFile(st.Step))));
            Row Cached(string name, Func<double> run)
            {
                var file = RowFile(name);
                if (File.Exists(file)) return JsonSerializer.Deserialize<Row>(File.ReadAllText(file))!;
                var t = Stopwatch.StartNew();
                var row = new Row(name, overall.Step(name, run), t.Elapsed.TotalSeconds);
                AtomicFile.WriteAllText(file, JsonSerializer.Serialize(row));
                return row;
            }
            double Eval(string title, VisionModel m, IModelHooks? hooks) => QuantizeCommand.Evaluate(title, m, hooks, test).Top1;
            var synthSeconds = new Dictionary<string, double>();
            var budget = new QuantizeOptions { WeightBits = w, ActivationBits = a, Seed = s, AdfqIterations = p.AdfqIterations, FineTuneEpochs = p.FineTuneEpochs, FineTuneLr = p.FineTuneLr };
            (VisionModel, IModelHooks) Quantize(string method, List<Tensor> images, string? resume = null)
            {
                var q = Progress.Staged(pr => QuantizationMethods.Run(fp, CalibrationData.FromTensors(c, images), budget with { Method = method }, resume, pr));
                return (q.Model.Model, q.Model);
            }
            List<Tensor> Synth(string method, int iterations)
            {
                var path = SetFile(method);
                if (!File.Exists(path))
                {
                    var t = Stopwatch.StartNew();
                    var settings = SynthesisSettings.For(method) with { Count = p.SynthImages, BatchSize = p.SynthBatch, Iterations = Math.Max(1, iterations), Seed = s };
                    overall.Step($"synthesize {method}", () => Progress.Staged(pr => Vitq.Synthesize(fp, settings.Validated(), path, resumable: true, progress: pr),
                        title: $"synthesize {method}"));
                    synthSeconds[method] = t.Elapsed.TotalSeconds;
                }
                var set = SyntheticSet.Load(path, c);
                return Batches(set.ImagesFor(c), 64);
            }
            double MinMax(List<Tensor> calib, string title)
            {
                var (m, hooks) = Quantize("minmax", calib);
                return Eval(title, m, hooks);
            }

            rows.Add(Cached("fp", () => Eval("float", fp, null)));
            var gaussianData = Synth("gaussian", 1);
            var psaqData = Synth("psaq", p.PsaqIterations);
            var mimiqData = Synth("mimiq", p.MimiqIterations);
            rows.Add(Cached("gaussian+minmax", () => MinMax(gaussianData, "gaussian+minmax")));
            rows.Add(Cached("psaq+minmax", () => MinMax(psaqData, "psaq+minmax")));
            rows.Add(Cached("mimiq+minmax", () => MinMax(mimiqData, "mimiq+minmax")));
            rows.Add(Cached("mimiq", () =>
            {
                var (m, hooks) = Quantize("mimiq", mimiqData, Path.Combine(dir, "mimiq-finetune.resume.safetensors"));
                return Eval("mimiq", m, hooks);
            }));
            rows.Add(Cached("real+adfq", () =>
            {
                var (m, hooks) = Quantize("adfq", CalibrationData.Load("fashion-mnist", p.CalibImages, c, s).Batches.ToList());
                return Eval("real+adfq", m, hooks);
            }));

            double seconds = sw.Elapsed.TotalSeconds;
            var e = Console.Error;
            e.WriteLine();
            e.WriteLine($"{c.Architecture}, w{w}a{a} (fake-quant simulation), Fashion-MNIST test ({test.Count} images), {p.Name} preset, seed {s}:");
            e.WriteLine($"  {"row",-18} {"top-1",8}  {"time",7}");
            foreach (var row in rows) e.WriteLine($"  {row.Name,-18} {row.Top1,7:F2}%  {row.Seconds,6:F0}s");
            if (synthSeconds.Count > 0)
                e.WriteLine("  synthesis this run: " + string.Join(", ", synthSeconds.Select(kv => $"{kv.Key} {kv.Value:F0}s")) + " (not included in the row times)");
            e.WriteLine($"  total {seconds:F0} s this run (rows read back from {dir} show their original time)");
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    bits = $"w{w}a{a}", preset = p.Name, seed = s, eval_count = test.Count,
                    rows = rows.Select(x => new { name = x.Name, top1 = x.Top1, seconds = x.Seconds }), seconds,
                    synthesis_seconds = synthSeconds,
                }));
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// Estimated cost of each demo step in forward-image units, for the overall ETA: an evaluation is one
    /// forward per test image (fake-quant about 1.5), calibration one per calibration image, synthesis and
    /// fine-tuning a forward and a backward (about 3) per image and step, the fine-tuning teacher one more,
    /// ADFQ reconstruction a block's forward and backward over a 32-image batch per iteration and block, with its
    /// fake quantizers and losses about 7 units per image (measured: the quick preset's reconstruction took 26–29k
    /// units of the same run's float evaluation on a Zen 3 and a Zen 4 machine; 3 units, the plain forward and
    /// backward, predicted 12.8k and left the overall ETA half the time short through that row).
    /// Steps of several progress stages also price each stage by its name (the names QuantizationMethods and the
    /// evaluation report): an ADFQ row runs a calibration, one reconstruction stage per unit (2·depth + 2: the
    /// patch embedding, each block's attention and MLP, and the head) and the evaluation. A calibration's closing
    /// "… ranges" stage (the ranges computed from the statistics) counts nothing.
    /// </summary>
    internal static IEnumerable<(string Step, double Cost, Func<string, double>? StageCost)> StepCosts(Preset p, int testImages, int depth)
    {
        double evalQ = 1.5 * testImages, synthCalib = p.SynthImages;
        // calibrate, then a middle stage (fine-tuning or each ADFQ unit) that the row's own name starts, then evaluate.
        Func<string, double> Stages(double calibrate, string middle, double middleCost) => stage =>
            stage.EndsWith(" ranges", StringComparison.Ordinal) ? 0
            : stage.StartsWith("calibrate ", StringComparison.Ordinal) ? calibrate
            : stage.StartsWith("eval ", StringComparison.Ordinal) ? evalQ
            : middle.Length > 0 && stage.StartsWith(middle, StringComparison.Ordinal) ? middleCost : 0;
        yield return ("fp", testImages, null);
        yield return ("synthesize gaussian", 1, null);
        yield return ("synthesize psaq", 3.0 * p.SynthImages * p.PsaqIterations, null);
        yield return ("synthesize mimiq", 3.0 * p.SynthImages * p.MimiqIterations, null);
        foreach (var row in new[] { "gaussian+minmax", "psaq+minmax", "mimiq+minmax" })
            yield return (row, synthCalib + evalQ, Stages(synthCalib, "", 0));
        double fineTune = 4.0 * p.SynthImages * p.FineTuneEpochs;
        yield return ("mimiq", fineTune + evalQ, Stages(0, "mimiq fine-tune", fineTune));
        double adfq = 7.0 * 32 * p.AdfqIterations * (depth + 2) / depth;
        yield return ("real+adfq", p.CalibImages + adfq + evalQ, Stages(p.CalibImages, "adfq ", adfq / (2 * depth + 2)));
    }

    /// <summary>Splits [N, C, H, W] into batches of at most `size` images (copies).</summary>
    internal static List<Tensor> Batches(Tensor images, int size)
    {
        int n = images.Shape[0], per = images.Size / Math.Max(1, n);
        var list = new List<Tensor>();
        for (int i = 0; i < n; i += size)
        {
            int b = Math.Min(size, n - i);
            var shape = images.Shape.ToArray();
            shape[0] = b;
            list.Add(Tensor.FromArray(images.Data.AsSpan(i * per, b * per), shape));
        }
        return list;
    }
}
