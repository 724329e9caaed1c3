// vitq bench: whole-model throughput of the engine (forward = inference, training step, input gradient), GEMM
// GFLOP/s per variant on the model's own linear shapes and peak memory, measured by the library
// (Vitq.Benchmark); --engine int8 and onnx measure the integer runtime and ONNX Runtime (Int8Cli, OnnxCli).
using System.CommandLine;
using System.Text.Json;
using ViTQuant.Api;
using ViTQuant.Models;

namespace ViTQuant.Cli;

internal static class BenchCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "checkpoint to benchmark (default: the shipped model unless --arch is given)" };
        var arch = new Option<string?>("--arch") { Description = $"architecture with random weights: {string.Join(", ", ModelConfigs.KnownArchitectures)}" };
        var batch = new Option<int>("--batch") { Description = "images per batch", DefaultValueFactory = _ => 32 };
        var iters = new Option<int>("--iters") { Description = "timed iterations per measurement (median reported)", DefaultValueFactory = _ => 5 };
        var threads = CommonOptions.Threads();
        var seed = CommonOptions.Seed();
        var json = CommonOptions.Json();
        var engine = CommonOptions.Engine();
        var cmd = new Command("bench", "measure forward / training / input-gradient throughput and GEMM speed") { model, arch, batch, iters, threads, seed, json, engine };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            int B = r.GetValue(batch), n = r.GetValue(iters);
            if (B < 1) throw new ViTQuantException($"--batch must be at least 1, got {B}");
            if (n < 1) throw new ViTQuantException($"--iters must be at least 1, got {n}");
            var a = r.GetValue(arch);
            if (r.GetValue(engine) == "onnx")
            {
                if (a != null && r.GetValue(model) != null) throw new ViTQuantException("give --model or --arch, not both");
                if (r.GetValue(model) is string om && om.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
                    throw new ViTQuantException($"--model {om}: bench --engine onnx exports the model itself; give the .safetensors model or quantized checkpoint");
                var fm = (a != null ? Vitq.CreateModel(ModelConfigs.FromArchitecture(a), r.GetValue(seed)) : DataSources.LoadAny(r.GetValue(model)).Model);
                var ort = OnnxCli.Bench(fm, a == null ? r.GetValue(model) : null, B, n, r.GetValue(threads), r.GetValue(seed));
                if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(ort));
                OnnxCli.PrintBench(ort);
                return 0;
            }
            if (r.GetValue(engine) == "int8")
            {
                var (qmodel, quant) = a != null ? (Vitq.CreateModel(ModelConfigs.FromArchitecture(a), r.GetValue(seed)), null) : DataSources.LoadAny(r.GetValue(model));
                var ir = Int8Cli.Bench(qmodel, quant, a == null ? r.GetValue(model) : null, B, n, r.GetValue(threads), r.GetValue(seed));
                if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(ir));
                Int8Cli.Print(ir);
                return 0;
            }
            var m = a != null ? Vitq.CreateModel(ModelConfigs.FromArchitecture(a), r.GetValue(seed)) : DataSources.LoadAny(r.GetValue(model)).Model;
            var result = Vitq.Benchmark(m, B, n, r.GetValue(seed));
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(result));
            Print(result, m.Config);
            return 0;
        });
        return cmd;
    }

    private static void Print(BenchmarkResult r, IModelConfig c)
    {
        var e = Console.Error;
        e.WriteLine($"model {c.Architecture}: {c.DescribeShape()}; {r.Parameters:N0} params, {r.GflopPerImage:F3} GFLOP/image");
        e.WriteLine($"batch {r.Batch}, threads {r.Threads}, GEMM {r.GemmBackend}");
        static string Chunks(int n) => n > 0 ? $"{n} chunks of images" : "the whole batch at once";
        e.WriteLine("             median img/s  fastest call");
        e.WriteLine($"forward      {r.ForwardImagesPerSecond,10:F1}  {r.ForwardFastestImagesPerSecond,12:F1}  ({r.ForwardGflopPerSecond:F1} GFLOP/s of model FLOPs; {Chunks(r.ForwardChunks)})");
        e.WriteLine($"train step   {r.TrainImagesPerSecond,10:F1}  {r.TrainFastestImagesPerSecond,12:F1}  ({r.TrainAllocMbPerStep:F1} MB allocated/step, {r.TrainGcGen2PerStep:F2} gen2 GCs/step; {Chunks(r.TrainChunks)})");
        e.WriteLine($"input grad   {r.InputGradImagesPerSecond,10:F1}  {r.InputGradFastestImagesPerSecond,12:F1}  ({Chunks(r.InputGradChunks)})");
        e.WriteLine($"GEMM peak    {r.GemmPeakGflopPerSecond,10:F1} GFLOP/s ({r.GemmPeakVariant})"
            + (r.FmaRooflineGflopPerSecond > 0 ? $", {r.GemmPeakGflopPerSecond / r.FmaRooflineGflopPerSecond:P0} of the FMA roofline" : ""));
        if (r.FmaRooflineGflopPerSecond > 0)
            e.WriteLine($"FMA roofline {r.FmaRooflineGflopPerSecond,10:F1} GFLOP/s (register-only FMA loops on {r.Threads} worker{(r.Threads == 1 ? "" : "s")}: the ceiling no GEMM passes)");
        foreach (var (k, v) in r.GemmGflopPerSecond) e.WriteLine($"GEMM {k,-44} {v,8:F1} GFLOP/s {r.GemmFractionOfPeak[k],6:P0} of peak");
        e.WriteLine("(GEMM lines: the fastest of 15 calls per variant, variants interleaved; the steps above: medians)");
        e.WriteLine($"peak memory  {r.PeakMemoryMb,10:F0} MB");
    }
}
