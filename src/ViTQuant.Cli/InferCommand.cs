// vitq infer: the interop contract. pixel_values [B, C, H, W] (normalised float32) in a safetensors
// file → logits [B, K] (and, with --taps, blocks.{i}.attn.probs [B, heads, N, N]) in another.
// --taps all (or a comma list of activation point names, '*' globs allowed) also writes the input of
// those quantization points, "input.{point}", and for a quantized model the quantizer's output,
// "quantized.{point}", so a calibration can be checked against any other tool.
using System.CommandLine;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class InferCommand
{
    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var input = new Option<string>("--input") { Description = "safetensors file with pixel_values [B, C, H, W] float32, already normalised", Required = true };
        var output = new Option<string>("--output") { Description = "safetensors file to write (logits, optional taps)", Required = true };
        var taps = new Option<string?>("--taps")
        {
            Description = "alone: also write blocks.{i}.attn.probs for every block; 'all' or a comma list of quantization points (globs allowed): also write each point's input (input.POINT) and, for a quantized model, its quantized value (quantized.POINT)",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var stream = new Option<bool>("--calibration-stream") { Description = "quantized model: keep the activations in float (weights on their grid), the stream its activation quantizers were calibrated on" };
        var threads = CommonOptions.Threads();
        var engine = CommonOptions.Engine();
        var cmd = new Command("infer", "run a model on a tensor file and write logits (and attention maps)") { model, input, output, taps, stream, threads, engine };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            string inPath = r.GetValue(input)!, outPath = r.GetValue(output)!;
            AtomicFile.EnsureNotSameFile(inPath, outPath);
            if (r.GetValue(model) is string mp) AtomicFile.EnsureNotSameFile(mp, outPath);
            if (r.GetValue(engine) == "onnx")
            {
                if (r.GetResult(taps) != null || r.GetValue(stream)) throw new ViTQuantException("--taps and --calibration-stream need --engine sim (an ONNX model outputs logits only)");
                var (ol, oc) = OnnxCli.Infer(r.GetValue(model), r.GetValue(threads), cfg => ReadPixels(inPath, cfg));
                SafeTensorsWriter.Write(outPath, new[] { ("logits", ol) }, new Dictionary<string, string> { ["vitq.model"] = oc.Architecture, ["vitq.engine"] = "onnx" });
                Console.Error.WriteLine($"wrote {outPath}: logits {Tensor.ShapeString(ol.Shape)} (onnx)");
                return 0;
            }
            OnnxCli.RefuseOnnxFile(r.GetValue(model));
            var (m, quant) = DataSources.LoadAny(r.GetValue(model));
            if (r.GetValue(stream))
            {
                if (quant == null) throw new ViTQuantException("--calibration-stream needs a quantized checkpoint as --model");
                quant.Mode = QuantMode.WeightsOnly;
            }
            var x = ReadPixels(inPath, m.Config);
            var c = m.Config;
            bool tapsGiven = r.GetResult(taps) != null;
            var points = PointsOf(r.GetValue(taps), c);
            var pointRec = new PointRecorder(points.Contains, quant);
            var rec = new TapRecorder(n => tapsGiven && (points.Count == 0 || r.GetValue(taps) == "all") && n.EndsWith(".attn.probs"), pointRec);
            Tensor logits;
            if (r.GetValue(engine) != "sim")
            {
                if (tapsGiven || r.GetValue(stream)) throw new ViTQuantException($"--taps and --calibration-stream record tensors of the simulation; they cannot be combined with --engine {r.GetValue(engine)}");
                logits = Int8Cli.LogitsOf(r.GetValue(engine)!, m, quant, r.GetValue(model))(x);
            }
            else using (Autograd.NoGrad()) logits = m.Forward(x, rec);
            var outs = new List<(string, Tensor)> { ("logits", logits) };
            for (int i = 0; i < c.Depth; i++)
                if (rec.Taps.TryGetValue($"blocks.{i}.attn.probs", out var p)) outs.Add(($"blocks.{i}.attn.probs", p));
            outs.AddRange(pointRec.Recorded);
            SafeTensorsWriter.Write(outPath, outs, new Dictionary<string, string> { ["vitq.model"] = c.Architecture });
            int maps = outs.Count - 1 - pointRec.Recorded.Count;
            Console.Error.WriteLine($"wrote {outPath}: logits {Tensor.ShapeString(logits.Shape)}" + (maps > 0 ? $", {maps} attention maps" : "")
                + (pointRec.Recorded.Count > 0 ? $", {pointRec.Recorded.Count} quantization-point tensors (input.POINT" + (pointRec.Recorded.Any(t => t.Name.StartsWith("quantized.")) ? ", quantized.POINT)" : ")") : ""));
            return 0;
        });
        return cmd;
    }

    /// <summary>pixel_values [B, C, H, W] (floating point, normalised) from a safetensors file, checked against the model.</summary>
    private static Tensor ReadPixels(string inPath, ViTConfig c)
    {
        var f = SafeTensorsFile.Read(inPath);
        if (!f.Contains("pixel_values")) throw new ViTQuantException($"{inPath}: no tensor named 'pixel_values'");
        // Integer pixels are almost surely raw 0..255 values: converting them silently gives garbage logits.
        string dtype = f.Info("pixel_values").DType;
        if (!(dtype.StartsWith('F') || dtype == "BF16"))
            throw new ViTQuantException($"{inPath}: pixel_values has dtype {dtype}; infer expects normalised floating-point pixels (F32, F16, BF16 or F64)");
        var x = f.GetTensor("pixel_values");
        if (x.Rank != 4 || x.Shape[1] != c.InChans || x.Shape[2] != c.ImageSize || x.Shape[3] != c.ImageSize)
            throw new ViTQuantException($"{inPath}: pixel_values has shape {Tensor.ShapeString(x.Shape)}, the model expects [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
        return x;
    }

    /// <summary>
    /// The activation points a --taps value names: none for a bare --taps (attention maps only), every
    /// point for "all", else the comma list (globs allowed). Throws ViTQuantException for a name that
    /// matches no point, listing the model's points.
    /// </summary>
    internal static HashSet<string> PointsOf(string? value, ViTConfig c)
    {
        var all = QuantPlan.ActivationPoints(c).ToList();
        if (string.IsNullOrWhiteSpace(value)) return new HashSet<string>();
        if (value.Trim() == "all") return all.ToHashSet();
        var chosen = new HashSet<string>();
        foreach (var raw in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var re = new System.Text.RegularExpressions.Regex("^" + System.Text.RegularExpressions.Regex.Escape(raw).Replace(@"\*", ".*") + "$");
            var hits = all.Where(p => re.IsMatch(p)).ToList();
            if (hits.Count == 0)
                throw new ViTQuantException($"--taps: '{raw}' is not a quantization point of this model (points: {all[0]}, …, {all[^1]}; e.g. blocks.0.attn.qkv, blocks.*.mlp.fc2; or 'all')");
            chosen.UnionWith(hits);
        }
        return chosen;
    }
}
