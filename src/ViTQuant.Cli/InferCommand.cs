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
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class InferCommand
{
    /// <summary>Images whose top-5 is printed on stderr.</summary>
    private const int Shown = 8;

    /// <summary>The input tensor names, the contract's first; synthetic sets use the second.</summary>
    public static readonly string[] InputNames = { "pixel_values", "images" };

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

            IModelConfig c;
            Tensor logits;
            TapRecorder? rec = null;
            PointRecorder? pointRec = null;
            if (eng == "onnx")
                (logits, c) = OnnxCli.Infer(r.GetValue(model), r.GetValue(threads), cfg => ReadInput(inPath, cfg));
            else
            {
                OnnxCli.RefuseOnnxFile(r.GetValue(model));
                var (m, quant) = DataSources.LoadAny(r.GetValue(model));
                if (r.GetValue(stream))
                {
                    if (quant == null) throw new ViTQuantException("--calibration-stream needs a quantized checkpoint as --model");
                    quant.Mode = QuantMode.WeightsOnly;
                }
                c = m.Config;
                var x = ReadInput(inPath, c);
                if (eng == "sim")
                {
                    var points = PointsOf(r.GetValue(taps), c);
                    pointRec = new PointRecorder(points.Contains, quant);
                    rec = new TapRecorder(n => tapsGiven && (points.Count == 0 || r.GetValue(taps) == "all") && n.EndsWith(".attn.probs"), pointRec);
                    using (Autograd.NoGrad()) logits = m.Forward(x, rec);
                }
                else logits = Int8Cli.LogitsOf(eng, m, quant, r.GetValue(model))(x);
            }

            int B = logits.Shape[0], K = logits.Shape[1], k = Math.Min(5, K);
            var idx = new int[B * k];
            var prob = new Tensor(B, k);
            for (int b = 0; b < B; b++)
            {
                var (ii, pp) = TopK.Of(logits.Data.AsSpan(b * K, K), k);
                ii.CopyTo(idx, b * k);
                pp.CopyTo(prob.Data.AsSpan(b * k, k));
            }
            string Name(int cls) => c.ClassNames?[cls] ?? cls.ToString(CultureInfo.InvariantCulture);
            for (int b = 0; b < Math.Min(B, Shown); b++)
                Console.Error.WriteLine($"image {b}: " + string.Join(", ", Enumerable.Range(0, k).Select(j => $"{Name(idx[b * k + j])} {100 * prob.Data[b * k + j]:F1}%")));
            if (B > Shown) Console.Error.WriteLine($"… {B - Shown} more image{(B - Shown > 1 ? "s" : "")}" + (outPath != null ? $" in {outPath}" : " (use --output or --json for all)"));

            if (outPath != null)
            {
                var outs = new List<SafeTensorsEntry>
                {
                    SafeTensorsEntry.FromTensor("logits", logits),
                    SafeTensorsEntry.FromInt32("top5_indices", idx, B, k),
                    SafeTensorsEntry.FromTensor("top5_probs", prob),
                };
                int maps = 0;
                // forward order: blocks.{i}.attn.probs (ViT), layers.{s}.blocks.{b}.attn.probs (Swin, [B·windows, heads, M², M²])
                foreach (var block in rec != null ? c.BlockPrefixes() : Array.Empty<string>())
                    if (rec!.Taps.TryGetValue($"{block}.attn.probs", out var p)) { outs.Add(SafeTensorsEntry.FromTensor($"{block}.attn.probs", p)); maps++; }
                var recorded = pointRec?.Recorded ?? new List<(string Name, Tensor Value)>();
                outs.AddRange(recorded.Select(t => SafeTensorsEntry.FromTensor(t.Name, t.Value)));
                var meta = new Dictionary<string, string> { ["vitq.model"] = c.Architecture, ["vitq.engine"] = eng };
                if (c.ClassNames != null) meta["vitq.class_names"] = JsonSerializer.Serialize(c.ClassNames);
                SafeTensorsWriter.Write(outPath, outs, meta);
                Console.Error.WriteLine($"wrote {outPath}: logits {Tensor.ShapeString(logits.Shape)}, top-5" + (eng != "sim" ? $" ({eng})" : "")
                    + (maps > 0 ? $", {maps} attention maps" : "")
                    + (recorded.Count > 0 ? $", {recorded.Count} quantization-point tensors (input.POINT" + (recorded.Any(t => t.Name.StartsWith("quantized.")) ? ", quantized.POINT)" : ")") : ""));
            }
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    model = c.Architecture, engine = eng, input = inPath, output = outPath, images = B, classes = K,
                    top5 = Enumerable.Range(0, B).Select(b => Enumerable.Range(0, k).Select(j => new
                    {
                        index = idx[b * k + j], name = c.ClassNames?[idx[b * k + j]], probability = prob.Data[b * k + j],
                    })),
                }));
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// The input batch in the model's normalised space: pixel_values, else a synthetic set's images (re-normalised
    /// when the set was made for a model with another mean/std), else a bare images tensor. Throws ViTQuantException
    /// naming the file for a missing tensor, integer pixels or a shape the model cannot take.
    /// </summary>
    internal static Tensor ReadInput(string inPath, IModelConfig c)
    {
        var f = SafeTensorsFile.Read(inPath);
        string? name = InputNames.FirstOrDefault(f.Contains)
            ?? throw new ViTQuantException($"{inPath}: no tensor named 'pixel_values' (or a synthetic set's 'images')");
        // Integer pixels are almost surely raw 0..255 values: converting them silently gives garbage logits.
        string dtype = f.Info(name).DType;
        if (!(dtype.StartsWith('F') || dtype == "BF16"))
            throw new ViTQuantException($"{inPath}: {name} has dtype {dtype}; infer expects normalised floating-point pixels (F32, F16, BF16 or F64)");
        var x = name == "images" && f.Metadata.TryGetValue(SyntheticSet.FormatKey, out var fmt) && fmt == SyntheticSet.Format ? SyntheticSet.Load(inPath).ImagesFor(c) : f.GetTensor(name);
        if (x.Rank != 4 || x.Shape[1] != c.InChans || x.Shape[2] != c.ImageSize || x.Shape[3] != c.ImageSize)
            throw new ViTQuantException($"{inPath}: {name} has shape {Tensor.ShapeString(x.Shape)}, the model expects [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
        return x;
    }

    /// <summary>
    /// The activation points a --taps value names: none for a bare --taps (attention maps only), every
    /// point for "all", else the comma list (globs allowed). Throws ViTQuantException for a name that
    /// matches no point, listing the model's points.
    /// </summary>
    internal static HashSet<string> PointsOf(string? value, IModelConfig c)
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
