// Quantized checkpoints (format "vitq-quant/1"): weights as integers plus scales, everything else of
// the model in float32, the activation quantizers' calibrated state, and the plan in the metadata.
//
//   {layer}.weight.codes        I8 (signed grids) or U8 (unsigned), the weight's shape
//   {layer}.weight.scale        F32 [out channels] (or [1])
//   {layer}.weight.zero_point   F32, same shape as scale
//   quant.act.{point}.{name}    activation quantizer state (Quantizer.State())
//   other model tensors         F32 under their usual names
// Metadata: vitq.format, vitq.config (model), vitq.plan, plus whatever the writer adds (method,
// calibration, accuracy). Weights are rebuilt as (code − z)·Δ, so a model round-tripped through the
// file computes exactly what the writer evaluated after Freeze().
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

public static class QuantizedCheckpoint
{
    public const string Format = "vitq-quant/1";
    public const string PlanKey = "vitq.plan";

    /// <summary>True when the file's metadata says it is a quantized checkpoint.</summary>
    public static bool IsQuantized(SafeTensorsFile f) => f.Metadata.TryGetValue(ModelIO.FormatKey, out var v) && v == Format;

    /// <summary>
    /// Replaces every quantized weight in the model by its integer-grid value and turns the weight
    /// quantizers off, so evaluation, export and reload all see the same numbers. Returns the codes.
    /// Throws InvalidOperationException when a weight quantizer has no affine integer grid.
    /// </summary>
    public static Dictionary<string, (sbyte[]? Signed, byte[]? Unsigned, AffineGrid Grid)> Freeze(QuantizedModel qm)
    {
        var codes = new Dictionary<string, (sbyte[]?, byte[]?, AffineGrid)>();
        var weights = qm.Model.NamedParameters().ToDictionary(p => p.Name, p => p.Param);
        foreach (var (layer, q) in qm.WeightQuantizers)
        {
            var w = weights[layer + ".weight"];
            Tensor wq;
            using (Autograd.NoGrad()) wq = q.Forward(w.Detach()).Clone();
            var grid = AffineGrid.Of(q) ?? throw new InvalidOperationException($"{layer}: weight quantizer {q.Spec} has no integer grid");
            int channels = grid.Scale.Length, per = w.Size / channels;
            bool signed = grid.QMin < 0;
            var s8 = signed ? new sbyte[w.Size] : null;
            var u8 = signed ? null : new byte[w.Size];
            for (int i = 0; i < w.Size; i++)
            {
                int c = i / per;
                float scale = grid.Scale[c], zp = grid.ZeroPoint[c];
                int code = Math.Clamp((int)MathF.Round(wq.Data[i] / scale + zp), grid.QMin, grid.QMax);
                if (signed) s8![i] = (sbyte)code; else u8![i] = (byte)code;
                w.Data[i] = (code - zp) * scale;
            }
            codes[layer] = (s8, u8, grid);
            qm.RecordWeightGrid(layer, grid);
        }
        qm.DisableWeightQuantizers();
        return codes;
    }

    /// <summary>Writes a frozen quantized model atomically. Call <see cref="Freeze"/> first (its result is the codes argument).</summary>
    public static void Save(QuantizedModel qm, Dictionary<string, (sbyte[]? Signed, byte[]? Unsigned, AffineGrid Grid)> codes,
        string path, IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        var entries = new List<SafeTensorsEntry>();
        foreach (var (name, t) in qm.Model.StateDict())
        {
            string layer = name.EndsWith(".weight") ? name[..^".weight".Length] : "";
            if (codes.TryGetValue(layer, out var c))
            {
                entries.Add(c.Signed != null ? SafeTensorsEntry.FromInt8(name + ".codes", c.Signed, t.Shape) : SafeTensorsEntry.FromUInt8(name + ".codes", c.Unsigned!, t.Shape));
                entries.Add(SafeTensorsEntry.FromTensor(name + ".scale", Tensor.FromArray(c.Grid.Scale, c.Grid.Scale.Length)));
                entries.Add(SafeTensorsEntry.FromTensor(name + ".zero_point", Tensor.FromArray(c.Grid.ZeroPoint, c.Grid.ZeroPoint.Length)));
            }
            else entries.Add(SafeTensorsEntry.FromTensor(name, t));
        }
        foreach (var (point, q) in qm.ActivationQuantizers)
            foreach (var (n, v) in q.State()) entries.Add(SafeTensorsEntry.FromTensor($"quant.act.{point}.{n}", v));
        var meta = new Dictionary<string, string>
        {
            [ModelIO.FormatKey] = Format,
            [ModelIO.ConfigKey] = qm.Model.Config.ToJson(),
            [PlanKey] = qm.Plan.ToJson(),
        };
        if (extraMetadata != null) foreach (var (k, v) in extraMetadata) meta[k] = v;
        SafeTensorsWriter.Write(path, entries, meta);
    }

    /// <summary>Loads a quantized checkpoint into a ready-to-run QuantizedModel (Quantize mode).</summary>
    public static QuantizedModel Load(string path) => Load(SafeTensorsFile.Read(path));

    public static QuantizedModel Load(SafeTensorsFile f)
    {
        string src = f.Path;
        if (!IsQuantized(f)) throw new ViTQuantException($"{src}: not a quantized checkpoint");
        if (!f.Metadata.TryGetValue(ModelIO.ConfigKey, out var cfgJson) || !f.Metadata.TryGetValue(PlanKey, out var planJson))
            throw new ViTQuantException($"{src}: quantized checkpoint lacks its model config or plan");
        var model = new VisionTransformer(ViTConfig.FromJson(cfgJson, src));
        var plan = QuantPlan.FromJson(planJson, src);
        var state = new Dictionary<string, Tensor>();
        var grids = new Dictionary<string, AffineGrid>();
        var problems = new List<string>();
        foreach (var (name, t) in model.StateDict())
        {
            string layer = name.EndsWith(".weight") ? name[..^".weight".Length] : "";
            bool quantized = name.EndsWith(".weight") && plan.WeightSpec(layer) != null && QuantPlan.WeightLayers(model.Config).Contains(layer);
            if (!quantized)
            {
                if (f.Contains(name)) state[name] = f.GetTensor(name);
                continue;
            }
            foreach (var part in new[] { ".codes", ".scale", ".zero_point" })
                if (!f.Contains(name + part)) problems.Add($"missing {name + part}");
            if (problems.Count > 0) continue;
            var codes = f.GetTensor(name + ".codes");
            var scale = f.GetTensor(name + ".scale");
            var zp = f.GetTensor(name + ".zero_point");
            if (!codes.Shape.AsSpan().SequenceEqual(t.Shape)) { problems.Add($"{name}.codes has shape {Tensor.ShapeString(codes.Shape)}, expected {Tensor.ShapeString(t.Shape)}"); continue; }
            if (scale.Size != zp.Size || scale.Size == 0 || t.Size % scale.Size != 0) { problems.Add($"{name}: scale/zero_point sizes {scale.Size}/{zp.Size} do not fit {t.Size} weights"); continue; }
            int per = t.Size / scale.Size;
            var w = new Tensor(t.Shape);
            for (int i = 0; i < w.Size; i++) w.Data[i] = (codes.Data[i] - zp.Data[i / per]) * scale.Data[i / per];
            state[name] = w;
            var (qmin, qmax) = RangeSearch.IntRange(plan.WeightSpec(layer)!.Bits, f.Info(name + ".codes").DType == "I8");
            grids[layer] = new AffineGrid(scale.ToArray(), zp.ToArray(), qmin, qmax);
        }
        if (problems.Count > 0) throw new ViTQuantException($"{src}: checkpoint does not match its plan: {string.Join("; ", problems)}");
        try { model.LoadStateDict(state, strict: true); }
        catch (ViTQuantException e) { throw new ViTQuantException($"{src}: {e.Message}"); }

        var qm = new QuantizedModel(model, plan);
        qm.DisableWeightQuantizers();
        foreach (var (layer, grid) in grids) qm.RecordWeightGrid(layer, grid);
        foreach (var (point, q) in qm.ActivationQuantizers)
        {
            var prefix = $"quant.act.{point}.";
            var qs = f.Names.Where(n => n.StartsWith(prefix)).ToDictionary(n => n[prefix.Length..], n => f.GetTensor(n));
            if (qs.Count == 0) throw new ViTQuantException($"{src}: no state for the activation quantizer at {point}");
            q.LoadState(qs);
        }
        qm.Mode = QuantMode.Quantize;
        return qm;
    }
}
