// vitq infer: the interop contract. pixel_values [B, C, H, W] (normalised float32) in a safetensors
// file → logits [B, K] (and, with --taps, blocks.{i}.attn.probs [B, heads, N, N]) in another.
using System.CommandLine;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class InferCommand
{
    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var input = new Option<string>("--input") { Description = "safetensors file with pixel_values [B, C, H, W] float32, already normalised", Required = true };
        var output = new Option<string>("--output") { Description = "safetensors file to write (logits, optional taps)", Required = true };
        var taps = new Option<bool>("--taps") { Description = "also write blocks.{i}.attn.probs for every block" };
        var threads = CommonOptions.Threads();
        var overwrite = OutputGuard.OverwriteOption();
        var cmd = new Command("infer", "run a model on a tensor file and write logits (and attention maps)") { model, input, output, taps, threads, overwrite };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            string inPath = r.GetValue(input)!, outPath = r.GetValue(output)!;
            OutputGuard.CheckFile(outPath, r.GetValue(overwrite), "--output", inPath, r.GetValue(model));
            var (m, quant) = DataSources.LoadAny(r.GetValue(model));
            var f = SafeTensorsFile.Read(inPath);
            if (!f.Contains("pixel_values")) throw new ViTQuantException($"{inPath}: no tensor named 'pixel_values'");
            // Integer pixels are almost surely raw 0..255 values: converting them silently gives garbage logits.
            string dtype = f.Info("pixel_values").DType;
            if (!(dtype.StartsWith('F') || dtype == "BF16"))
                throw new ViTQuantException($"{inPath}: pixel_values has dtype {dtype}; infer expects normalised floating-point pixels (F32, F16, BF16 or F64)");
            var x = f.GetTensor("pixel_values");
            var c = m.Config;
            if (x.Rank != 4 || x.Shape[1] != c.InChans || x.Shape[2] != c.ImageSize || x.Shape[3] != c.ImageSize)
                throw new ViTQuantException($"{inPath}: pixel_values has shape {Tensor.ShapeString(x.Shape)}, the model expects [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
            var rec = new TapRecorder(n => r.GetValue(taps) && n.EndsWith(".attn.probs"), quant);
            Tensor logits;
            using (Autograd.NoGrad()) logits = m.Forward(x, rec);
            var outs = new List<(string, Tensor)> { ("logits", logits) };
            for (int i = 0; i < c.Depth; i++)
                if (rec.Taps.TryGetValue($"blocks.{i}.attn.probs", out var p)) outs.Add(($"blocks.{i}.attn.probs", p));
            SafeTensorsWriter.Write(outPath, outs, new Dictionary<string, string> { ["vitq.model"] = c.Architecture });
            Console.Error.WriteLine($"wrote {outPath}: logits {Tensor.ShapeString(logits.Shape)}" + (outs.Count > 1 ? $" and {outs.Count - 1} attention maps" : ""));
            return 0;
        });
        return cmd;
    }
}
