// vitq infer: the interop contract. pixel_values [B, C, H, W] (normalised float32) in a safetensors
// file (or a synthetic set's `images`, written by vitq synthesize in the same normalised space) →
// logits [B, K], the top-5 classes (top5_indices I32 [B, k], top5_probs F32 [B, k], class names in the
// metadata) and, with --taps, blocks.{i}.attn.probs [B, heads, N, N] in another file. Without
// --output nothing is written: the top-5 of the first images is printed (all of them with --json).
// --taps all (or a comma list of activation point names, '*' globs allowed) also writes the input of
// those quantization points, "input.{point}", and for a quantized model the quantizer's output,
// "quantized.{point}", so a calibration can be checked against any other tool.
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using ViTQuant.Api;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class InferCommand
{
    /// <summary>Images whose top-5 is printed on stderr.</summary>
    private const int Shown = 8;

    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var input = new Option<string>("--input") { Description = "safetensors file with pixel_values (or a synthetic set's images) [B, C, H, W] float32, already normalised", Required = true };
        var output = new Option<string?>("--output") { Description = "safetensors file to write (logits, top-5, optional taps); without it the top-5 is only printed" };
        var taps = new Option<string?>("--taps")
        {
            Description = "alone: also write blocks.{i}.attn.probs for every block; 'all' or a comma list of quantization points (globs allowed): also write each point's input (input.POINT) and, for a quantized model, its quantized value (quantized.POINT); needs --output",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var stream = new Option<bool>("--calibration-stream") { Description = "quantized model: keep the activations in float (weights on their grid), the stream its activation quantizers were calibrated on" };
        var threads = CommonOptions.Threads();
        var engine = CommonOptions.Engine();
        var overwrite = OutputGuard.OverwriteOption();
        var json = CommonOptions.Json();
        var cmd = new Command("infer", "run a model on a tensor file: top-5 classes, and logits (and attention maps) written to a file")
            { model, input, output, taps, stream, threads, engine, overwrite, json };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            string inPath = r.GetValue(input)!;
            string? outPath = r.GetValue(output);
            string eng = r.GetValue(engine)!;
            bool tapsGiven = r.GetResult(taps) != null;
            if (outPath == null && tapsGiven) throw new ViTQuantException("--taps needs --output (the tapped tensors are written to that file)");
            if (eng != "sim" && (tapsGiven || r.GetValue(stream)))
                throw new ViTQuantException($"--taps and --calibration-stream record tensors of the simulation: they need --engine sim, not {eng}");
            if (outPath != null) OutputGuard.CheckFile(outPath, r.GetValue(overwrite), "--output", inPath, r.GetValue(model));

            InferenceResult res;
            if (eng == "onnx")
            {
                var (logits, c) = OnnxCli.Infer(r.GetValue(model), r.GetValue(threads), cfg => Vitq.ReadImages(inPath, cfg));
                res = new InferenceResult(c, logits);
            }
            else
            {
                OnnxCli.RefuseOnnxFile(r.GetValue(model));
                var (m, quant) = DataSources.LoadAny(r.GetValue(model));
                if (r.GetValue(stream))
                {
                    if (quant == null) throw new ViTQuantException("--calibration-stream needs a quantized checkpoint as --model");
                    quant.Mode = QuantMode.WeightsOnly;
                }
                var x = Vitq.ReadImages(inPath, m.Config);
                if (eng == "sim")
                {
                    // A bare --taps: the attention maps; 'all': those and every point; a list: those points.
                    string? value = r.GetValue(taps);
                    bool bare = string.IsNullOrWhiteSpace(value);
                    var want = new InferenceTaps
                    {
                        AttentionMaps = tapsGiven && (bare || value!.Trim() == "all"),
                        Points = bare ? Array.Empty<string>() : value!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                    };
                    try { res = Vitq.InferWithTaps(m, x, quant, want); }
                    catch (ArgumentException e) when (e.ParamName == "taps")
                    {
                        throw new ViTQuantException($"--taps: {e.Message.Replace(" (Parameter 'taps')", "")}");
                    }
                }
                else res = new InferenceResult(m.Config, Int8Cli.LogitsOf(eng, m, quant, r.GetValue(model))(x));
            }

            var cfgOut = res.Config;
            var top = res.Top(5);
            int B = res.Logits.Shape[0], K = res.Logits.Shape[1], k = top.K;
            string Name(int cls) => cfgOut.ClassNames?[cls] ?? cls.ToString(CultureInfo.InvariantCulture);
            for (int b = 0; b < Math.Min(B, Shown); b++)
                Console.Error.WriteLine($"image {b}: " + string.Join(", ", Enumerable.Range(0, k).Select(j => $"{Name(top[b, j].Index)} {100 * top[b, j].Probability:F1}%")));
            if (B > Shown) Console.Error.WriteLine($"… {B - Shown} more image{(B - Shown > 1 ? "s" : "")}" + (outPath != null ? $" in {outPath}" : " (use --output or --json for all)"));

            if (outPath != null)
            {
                // The output was checked (and --overwrite honoured) before any work.
                res.Save(outPath, eng, overwrite: true);
                int maps = res.AttentionMaps.Count, recorded = res.PointTensors.Count;
                Console.Error.WriteLine($"wrote {outPath}: logits {Tensor.ShapeString(res.Logits.Shape)}, top-5" + (eng != "sim" ? $" ({eng})" : "")
                    + (maps > 0 ? $", {maps} attention maps" : "")
                    + (recorded > 0 ? $", {recorded} quantization-point tensors (input.POINT" + (res.PointTensors.Any(t => t.Key.StartsWith("quantized.")) ? ", quantized.POINT)" : ")") : ""));
            }
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    model = cfgOut.Architecture, engine = eng, input = inPath, output = outPath, images = B, classes = K,
                    top5 = Enumerable.Range(0, B).Select(b => Enumerable.Range(0, k).Select(j => new
                    {
                        index = top[b, j].Index, name = cfgOut.ClassNames?[top[b, j].Index], probability = top[b, j].Probability,
                    })),
                }));
            return 0;
        });
        return cmd;
    }
}
