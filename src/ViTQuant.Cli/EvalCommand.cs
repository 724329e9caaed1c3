// vitq eval: top-1 (top-5 above 10 classes), loss and throughput of a model on a dataset.
using System.CommandLine;
using System.Text.Json;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Api;
using ViTQuant.Data;

namespace ViTQuant.Cli;

internal static class EvalCommand
{
    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var dataset = DataSources.DatasetOption();
        var split = DataSources.SplitOption("test");
        var limit = new Option<int?>("--limit") { Description = "evaluate only the first N images" };
        var batch = new Option<int>("--batch") { Description = "images per batch", DefaultValueFactory = _ => 256 };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var engine = CommonOptions.Engine();
        var agreeWith = new Option<string?>("--agree-with") { Description = "--engine onnx: also run this model (the export's source) in the simulation and report prediction agreement" };
        var labels = DataSources.LabelsOption();
        var cmd = new Command("eval", "measure a model's accuracy on a dataset") { model, dataset, split, limit, batch, threads, json, engine, agreeWith, labels };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            int B = r.GetValue(batch);
            if (B < 1) throw new ViTQuantException($"--batch must be at least 1, got {B}");
            if (r.GetValue(engine) == "onnx")
                return OnnxCli.Eval(r.GetValue(model), r.GetValue(dataset)!, r.GetValue(split)!, r.GetValue(limit), B, r.GetValue(threads), r.GetValue(json), r.GetValue(agreeWith));
            if (r.GetValue(agreeWith) != null) throw new ViTQuantException("--agree-with compares an exported model with its source: use it with --engine onnx");
            OnnxCli.RefuseOnnxFile(r.GetValue(model));
            var (m, quant) = DataSources.LoadAny(r.GetValue(model));
            var logitsOf = Int8Cli.LogitsOf(r.GetValue(engine)!, m, quant, r.GetValue(model));
            var ds = DataSources.Limit(DataSources.Open(r.GetValue(dataset)!, r.GetValue(split)!, m.Config, labelsFile: r.GetValue(labels)), r.GetValue(limit));
            var res = Progress.Staged(p => Vitq.Evaluate(logitsOf, m.Config, ds, B, p));
            string? modelPath = r.GetValue(model);
            string engineName = r.GetValue(engine) == "int8" ? "integer runtime" : "fake-quant simulation";
            string what = quant == null ? m.Config.Architecture
                : $"{m.Config.Architecture} quantized w{quant.Plan.WeightBits}a{quant.Plan.ActivationBits} ({quant.Plan.Name}, {engineName})";
            Console.Error.WriteLine($"{what} on {r.GetValue(dataset)} ({r.GetValue(split)}, {res.Count} images): top-1 {res.Top1:F2}%"
                + (res.Top5 is double t5 ? $", top-5 {t5:F2}%" : "") + $", loss {res.Loss:F4}, {res.ImagesPerSecond:F0} img/s ({res.Seconds:F1} s)");
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    top1 = res.Top1, top5 = res.Top5, loss = res.Loss, count = res.Count, images_per_s = res.ImagesPerSecond,
                    seconds = res.Seconds, model = m.Config.Architecture, dataset = r.GetValue(dataset), split = r.GetValue(split),
                    // Which engine measured this and, for a quantized checkpoint, what was quantized how:
                    // a quantized result must never read as a float one.
                    engine = r.GetValue(engine), quantized = quant != null, quantization = DataSources.QuantizationReport(modelPath, quant),
                }));
            return 0;
        });
        return cmd;
    }
}
