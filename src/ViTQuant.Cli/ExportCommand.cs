// vitq export: a float model as plain ONNX, a quantized checkpoint as QDQ ONNX (Export/OnnxExporter.cs),
// for ONNX Runtime (`vitq eval --engine onnx`) or any other ONNX consumer.
using System.CommandLine;
using System.Text.Json;
using ViTQuant.Export;
using ViTQuant.Onnx;

namespace ViTQuant.Cli;

internal static class ExportCommand
{
    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var outOpt = new Option<string>("--out") { Description = "ONNX file to write (.onnx); must not exist", Required = true };
        var opset = new Option<int>("--opset") { Description = $"ONNX opset ({OnnxExportOptions.MinOpset}–{OnnxExportOptions.MaxOpset})", DefaultValueFactory = _ => OnnxExportOptions.MinOpset };
        var storage = new Option<string>("--weight-storage")
        {
            Description = "quantized weights as int8 (exact for any bit width; what ORT fuses into integer kernels) or int4 (weights of ≤ 4 bits two per byte; needs --opset 21)",
            DefaultValueFactory = _ => "int8",
        }.AcceptOnlyFromAmong("int8", "int4");
        var lsqQdq = new Option<bool>("--lsq-qdq")
        {
            Description = "export LSQ (MimiQ) grids with a learned offset as QDQ too: integer kernels in ORT, equal to the simulation except where x/α + ⌊z⌉ rounds across a half-integer in float (default: exact float subgraph)",
        };
        var roundedBias = new Option<bool>("--rounded-bias")
        {
            Description = "keep the bias on the int32 grid only (s_x·Δ_w), as ORT's own quantizer writes it: one Add less per layer, but not the simulation's bias (default: add the float residue)",
        };
        var layout = new Option<string>("--int8-layout")
        {
            Description = "u8u8 (default): every 8-bit code unsigned, ORT's integer kernels exact on every CPU; u8s8: int8 weights, 1.2–1.5× faster in ORT on CPUs with VNNI, but without VNNI (AVX2) ORT's U8S8 kernels saturate and the logits come out wrong",
            DefaultValueFactory = _ => "u8u8",
        }.AcceptOnlyFromAmong("u8u8", "u8s8");
        var json = CommonOptions.Json();
        var overwrite = OutputGuard.OverwriteOption();
        var threads = CommonOptions.Threads();
        var cmd = new Command("export", "write a model (float → ONNX, quantized checkpoint → QDQ ONNX) for ONNX Runtime") { model, outOpt, opset, storage, layout, lsqQdq, roundedBias, overwrite, threads, json };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            string outPath = r.GetValue(outOpt)!;
            OutputGuard.CheckFile(outPath, r.GetValue(overwrite), "--out", r.GetValue(model));
            var options = new OnnxExportOptions
            {
                Opset = r.GetValue(opset),
                WeightStorage = r.GetValue(storage) == "int4" ? WeightStorage.Int4 : WeightStorage.Int8,
                LsqAsQdq = r.GetValue(lsqQdq),
                ExactBias = !r.GetValue(roundedBias),
                Int8Layout = r.GetValue(layout) == "u8s8" ? Int8Layout.U8S8 : Int8Layout.U8U8,
            };
            var res = OnnxExporter.ExportFile(r.GetValue(model), outPath, options, r.GetValue(overwrite));
            static string Mb(long b) => $"{b / 1048576.0:F2} MB";
            Console.Error.WriteLine($"wrote {res.Path}: {(res.Quantized ? "QDQ" : "float32")} ONNX, opset {res.Opset}, {res.FileBytes:N0} bytes");
            Console.Error.WriteLine($"weights: float32 {Mb(res.FloatWeightBytes)}" + (res.Quantized ? $", int8 {Mb(res.Int8WeightBytes)}, int4 {Mb(res.Int4WeightBytes)} (equivalent sizes)" : ""));
            foreach (var group in res.Points.GroupBy(kv => kv.Value).OrderBy(g => g.Key))
                Console.Error.WriteLine($"  {group.Count(),3} × {group.Key}  (e.g. {group.First().Key})");
            if (LayoutHint(res.Quantized, options.Int8Layout, OnnxEngine.HasVnni) is { } hint) Console.Error.WriteLine(hint);
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    path = res.Path, file_bytes = res.FileBytes, opset = res.Opset, quantized = res.Quantized,
                    float_weight_bytes = res.FloatWeightBytes, int8_weight_bytes = res.Int8WeightBytes, int4_weight_bytes = res.Int4WeightBytes,
                    weight_storage = r.GetValue(storage), int8_layout = r.GetValue(layout), points = res.Points,
                }));
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// For a quantized export in the default u8u8 layout written on a CPU with VNNI: the faster layout there, and
    /// why it is not the default (measured on a Zen 4, 2026-12-07: docs/results, fifth engine-speed session).
    /// </summary>
    internal static string? LayoutHint(bool quantized, Int8Layout layout, bool vnni) =>
        quantized && layout == Int8Layout.U8U8 && vnni
            ? "note: this CPU has VNNI; where the model will run on VNNI CPUs only, --int8-layout u8s8 runs 1.2–1.5× faster in ONNX Runtime (measured on a Zen 4); u8u8, the default, is exact on every CPU"
            : null;
}
