// Quantized checkpoints: weights as integer codes plus scales, everything else of the model in float32,
// the activation quantizers' calibrated state, and the plan in the metadata.
//
// Format "vitq-quant/2" (written since the weights became low-bit on disk):
//   {layer}.weight.codes        U8 [⌈n·bits/8⌉]: the codes k − q_min ∈ [0, 2^bits) of the n weights in
//                               row-major order, packed densely least significant bit first (CodePacking:
//                               8 bits one a byte, 4 bits two a byte low nibble first, 3 bits eight in 3 bytes)
//   {layer}.weight.scale        F32 [out channels] (or [1])
//   {layer}.weight.zero_point   F32, same shape as scale
//   quant.act.{point}.{name}    activation quantizer state (Quantizer.State())
//   other model tensors         F32 under their usual names
// Metadata: vitq.format, vitq.config (model), vitq.plan, vitq.codes (JSON: layer → {"bits", "qmin", "qmax",
// "shape"}, since a packed U8 vector carries neither the weight's shape nor its grid), plus whatever the
// writer adds (method, calibration, report).
// Format "vitq-quant/1" (read only): {layer}.weight.codes is I8 (signed grids) or U8 (unsigned) in the
// weight's shape, one byte a code whatever the bit width; q_min/q_max follow from the plan's bits and the dtype.
// Weights are rebuilt as (k − z)·Δ in both, so a model round-tripped through the file computes exactly what
// the writer evaluated after Freeze().
using System.Text.Json;
using System.Text.Json.Serialization;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>Freezes, writes and reads quantized checkpoints (format in the file header).</summary>
public static class QuantizedCheckpoint
{
    /// <summary>The format written: packed low-bit codes.</summary>
    public const string Format = "vitq-quant/2";

    /// <summary>The first format (one byte a code), still read.</summary>
    public const string FormatV1 = "vitq-quant/1";

    /// <summary>Metadata key of the quantization plan (JSON).</summary>
    public const string PlanKey = "vitq.plan";

    /// <summary>Metadata key of the packed codes' layout in format 2 (JSON: layer → bits, qmin, qmax, shape).</summary>
    public const string CodesKey = "vitq.codes";

    /// <summary>True when the file's metadata says it is a quantized checkpoint of a format this version reads.</summary>
    public static bool IsQuantized(SafeTensorsFile f) => f.Metadata.TryGetValue(ModelIO.FormatKey, out var v) && v is Format or FormatV1;

    /// <summary>
    /// Replaces every quantized weight in the model by its integer-grid value and turns the weight
    /// quantizers off, so evaluation, export and reload all see the same numbers. Returns the codes.
    /// Throws InvalidOperationException when a weight quantizer has no affine integer grid.
    /// </summary>
    internal static Dictionary<string, (sbyte[]? Signed, byte[]? Unsigned, AffineGrid Grid)> Freeze(QuantizedModel qm)
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

    /// <summary>
    /// What <see cref="Save"/> writes for these codes, file size aside: the quantized weights, their packed
    /// codes, scales and zero points, and the float tensors. Throws InvalidOperationException when a layer's
    /// grid does not fit its plan's bit width.
    /// </summary>
    internal static CheckpointStorage Storage(QuantizedModel qm, Dictionary<string, (sbyte[]? Signed, byte[]? Unsigned, AffineGrid Grid)> codes)
    {
        long weights = 0, codeBytes = 0, scaleBytes = 0, floatBytes = 0;
        foreach (var (name, t) in qm.Model.StateDict())
        {
            string layer = name.EndsWith(".weight") ? name[..^".weight".Length] : "";
            if (codes.TryGetValue(layer, out var c))
            {
                weights += t.Size;
                codeBytes += CodePacking.PackedLength(t.Size, BitsOf(qm, layer, c.Grid));
                scaleBytes += 2L * 4 * c.Grid.Scale.Length;
            }
            else floatBytes += 4L * t.Size;
        }
        foreach (var (_, q) in qm.ActivationQuantizers)
            foreach (var (_, v) in q.State()) floatBytes += 4L * v.Size;
        return new CheckpointStorage(weights, codeBytes, scaleBytes, floatBytes, 0);
    }

    /// <summary>
    /// Writes a frozen quantized model atomically in format <see cref="Format"/> and returns what it wrote,
    /// the file size included. Call <see cref="Freeze"/> first (its result is the codes argument). Throws
    /// InvalidOperationException when a layer's grid does not fit its plan's bit width.
    /// </summary>
    internal static CheckpointStorage Save(QuantizedModel qm, Dictionary<string, (sbyte[]? Signed, byte[]? Unsigned, AffineGrid Grid)> codes,
        string path, IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        var entries = new List<SafeTensorsEntry>();
        var layout = new SortedDictionary<string, StoredLayout>(StringComparer.Ordinal);
        foreach (var (name, t) in qm.Model.StateDict())
        {
            string layer = name.EndsWith(".weight") ? name[..^".weight".Length] : "";
            if (codes.TryGetValue(layer, out var c))
            {
                int bits = BitsOf(qm, layer, c.Grid);
                var cells = new int[t.Size];
                for (int i = 0; i < cells.Length; i++) cells[i] = (c.Signed != null ? c.Signed[i] : c.Unsigned![i]) - c.Grid.QMin;
                var packed = CodePacking.Pack(cells, bits);
                entries.Add(SafeTensorsEntry.FromUInt8(name + ".codes", packed, packed.Length));
                entries.Add(SafeTensorsEntry.FromTensor(name + ".scale", Tensor.FromArray(c.Grid.Scale, c.Grid.Scale.Length)));
                entries.Add(SafeTensorsEntry.FromTensor(name + ".zero_point", Tensor.FromArray(c.Grid.ZeroPoint, c.Grid.ZeroPoint.Length)));
                layout[layer] = new StoredLayout { Bits = bits, QMin = c.Grid.QMin, QMax = c.Grid.QMax, Shape = t.Shape.ToArray() };
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
            [CodesKey] = JsonSerializer.Serialize(layout),
        };
        if (extraMetadata != null) foreach (var (k, v) in extraMetadata) meta[k] = v;
        SafeTensorsWriter.Write(path, entries, meta);
        return Storage(qm, codes) with { FileBytes = new FileInfo(path).Length };
    }

    /// <summary>The plan's bit width for a layer; InvalidOperationException when its grid needs more cells than 2^bits.</summary>
    private static int BitsOf(QuantizedModel qm, string layer, AffineGrid grid)
    {
        int bits = qm.Plan.WeightSpec(layer)?.Bits ?? throw new InvalidOperationException($"{layer}: the plan does not quantize this weight");
        if (grid.QMin > grid.QMax || (long)grid.QMax - grid.QMin >= 1L << bits)
            throw new InvalidOperationException($"{layer}: grid [{grid.QMin}, {grid.QMax}] does not fit {bits} bits");
        return bits;
    }

    /// <summary>One weight's entry in the vitq.codes metadata.</summary>
    private sealed class StoredLayout
    {
        [JsonPropertyName("bits")] public int Bits { get; set; }
        [JsonPropertyName("qmin")] public int QMin { get; set; }
        [JsonPropertyName("qmax")] public int QMax { get; set; }
        [JsonPropertyName("shape")] public int[] Shape { get; set; } = Array.Empty<int>();
    }

    /// <summary>
    /// Reads every weight the plan quantizes from a quantized checkpoint of either format, as integer codes
    /// with their grid (the one reader behind <see cref="Load(SafeTensorsFile)"/> and the ONNX exporter).
    /// Throws ViTQuantException naming the file and every missing or inconsistent tensor.
    /// </summary>
    internal static Dictionary<string, StoredWeight> ReadWeights(SafeTensorsFile f, IModelConfig config, QuantPlan plan) =>
        ReadWeights(f, VisionModel.Create(config), plan);

    /// <summary>As <see cref="ReadWeights(SafeTensorsFile, IModelConfig, QuantPlan)"/>, the weight shapes taken from a model of the checkpoint's config.</summary>
    internal static Dictionary<string, StoredWeight> ReadWeights(SafeTensorsFile f, VisionModel model, QuantPlan plan)
    {
        string src = f.Path;
        var config = model.Config;
        if (!IsQuantized(f)) throw new ViTQuantException($"{src}: not a quantized checkpoint");
        bool v1 = f.Metadata[ModelIO.FormatKey] == FormatV1;
        Dictionary<string, StoredLayout>? layout = null;
        if (!v1)
        {
            if (!f.Metadata.TryGetValue(CodesKey, out var json)) throw new ViTQuantException($"{src}: {Format} checkpoint lacks its {CodesKey} metadata");
            try { layout = JsonSerializer.Deserialize<Dictionary<string, StoredLayout>>(json); }
            catch (JsonException e) { throw new ViTQuantException($"{src}: {CodesKey} metadata is not valid JSON: {e.Message}"); }
            layout ??= new();
        }
        var shapes = model.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.Shape.ToArray());
        var result = new Dictionary<string, StoredWeight>();
        var problems = new List<string>();
        foreach (var layer in QuantPlan.WeightLayers(config))
        {
            if (plan.WeightSpec(layer) is not QuantSpec spec || !shapes.TryGetValue(layer + ".weight", out var shape)) continue;
            string name = layer + ".weight";
            int before = problems.Count;
            foreach (var part in new[] { ".codes", ".scale", ".zero_point" })
                if (!f.Contains(name + part)) problems.Add($"missing {name + part}");
            if (problems.Count > before) continue;
            var scale = f.GetTensor(name + ".scale").ToArray();
            var zp = f.GetTensor(name + ".zero_point").ToArray();
            long n = SafeTensorsDType.Numel(shape);
            if (scale.Length != zp.Length || scale.Length == 0 || n % scale.Length != 0)
            {
                problems.Add($"{name}: scale/zero_point sizes {scale.Length}/{zp.Length} do not fit {n} weights");
                continue;
            }
            var info = f.Info(name + ".codes");
            int[] codes;
            int qmin, qmax, bits = spec.Bits;
            if (v1)
            {
                if (info.DType is not ("I8" or "U8")) { problems.Add($"{name}.codes has dtype {info.DType}, expected I8 or U8"); continue; }
                if (!info.Shape.AsSpan().SequenceEqual(shape)) { problems.Add($"{name}.codes has shape {Tensor.ShapeString(info.Shape)}, expected {Tensor.ShapeString(shape)}"); continue; }
                var raw = f.GetRaw(name + ".codes");
                codes = new int[raw.Length];
                for (int i = 0; i < raw.Length; i++) codes[i] = info.DType == "I8" ? (sbyte)raw[i] : raw[i];
                (qmin, qmax) = RangeSearch.IntRange(spec.Bits, info.DType == "I8");
            }
            else
            {
                if (!layout!.TryGetValue(layer, out var l)) { problems.Add($"{CodesKey} has no entry for {layer}"); continue; }
                if (l.Bits != spec.Bits) { problems.Add($"{name}.codes are {l.Bits}-bit, the plan says {spec.Bits}"); continue; }
                if (!l.Shape.AsSpan().SequenceEqual(shape)) { problems.Add($"{name}.codes hold shape {Tensor.ShapeString(l.Shape)}, expected {Tensor.ShapeString(shape)}"); continue; }
                if (l.QMin > l.QMax || (long)l.QMax - l.QMin >= 1L << l.Bits) { problems.Add($"{name}: grid [{l.QMin}, {l.QMax}] does not fit {l.Bits} bits"); continue; }
                long want = CodePacking.PackedLength(n, l.Bits);
                if (info.DType != "U8" || info.Shape.Length != 1 || info.Numel != want)
                {
                    problems.Add($"{name}.codes is {info.DType} {Tensor.ShapeString(info.Shape)}, expected U8 [{want}] ({n} codes of {l.Bits} bits)");
                    continue;
                }
                codes = CodePacking.Unpack(f.GetRaw(name + ".codes"), l.Bits, (int)n);
                (qmin, qmax) = (l.QMin, l.QMax);
                for (int i = 0; i < codes.Length; i++) codes[i] += qmin;
            }
            int bad = Array.FindIndex(codes, k => k < qmin || k > qmax);
            if (bad >= 0) { problems.Add($"{name}.codes[{bad}] = {codes[bad]} is outside the grid [{qmin}, {qmax}]"); continue; }
            result[layer] = new StoredWeight(codes, shape, new AffineGrid(scale, zp, qmin, qmax), bits);
        }
        if (problems.Count > 0) throw new ViTQuantException($"{src}: checkpoint does not match its plan: {string.Join("; ", problems)}");
        return result;
    }

    /// <summary>Loads a quantized checkpoint (either format) into a ready-to-run QuantizedModel (Quantize mode).</summary>
    public static QuantizedModel Load(string path) => Load(SafeTensorsFile.Read(path));

    /// <summary>
    /// Loads a quantized checkpoint (either format) into a ready-to-run QuantizedModel (Quantize mode).
    /// Throws ViTQuantException naming the file when it is not a quantized checkpoint or does not match its plan.
    /// </summary>
    public static QuantizedModel Load(SafeTensorsFile f)
    {
        string src = f.Path;
        if (!IsQuantized(f)) throw new ViTQuantException($"{src}: not a quantized checkpoint");
        if (!f.Metadata.TryGetValue(ModelIO.ConfigKey, out var cfgJson) || !f.Metadata.TryGetValue(PlanKey, out var planJson))
            throw new ViTQuantException($"{src}: quantized checkpoint lacks its model config or plan");
        var model = VisionModel.Create(ModelConfigs.FromJson(cfgJson, src));
        var plan = QuantPlan.FromJson(planJson, src);
        var weights = ReadWeights(f, model, plan);
        var state = new Dictionary<string, Tensor>();
        foreach (var (name, _) in model.StateDict())
        {
            string layer = name.EndsWith(".weight") ? name[..^".weight".Length] : "";
            if (name.EndsWith(".weight") && weights.TryGetValue(layer, out var w)) state[name] = w.Dequantize();
            else if (f.Contains(name)) state[name] = f.GetTensor(name);
        }
        try { model.LoadStateDict(state, strict: true); }
        catch (ViTQuantException e) { throw new ViTQuantException($"{src}: {e.Message}"); }

        var qm = new QuantizedModel(model, plan);
        qm.DisableWeightQuantizers();
        foreach (var (layer, w) in weights) qm.RecordWeightGrid(layer, w.Grid);
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

/// <summary>One quantized weight as a checkpoint stores it: integer codes k on the grid, row-major in the weight's shape.</summary>
/// <param name="Codes">k ∈ [Grid.QMin, Grid.QMax], one per weight.</param>
/// <param name="Shape">the weight's shape.</param>
/// <param name="Grid">per-channel step Δ and zero point z (channel = first dimension), the integer range.</param>
/// <param name="Bits">the plan's bit width for the layer (the packed cell width in format 2).</param>
internal sealed record StoredWeight(int[] Codes, int[] Shape, AffineGrid Grid, int Bits)
{
    /// <summary>The float weight (k − z_c)·Δ_c, the same float expression Freeze writes into the model.</summary>
    public Tensor Dequantize()
    {
        var w = new Tensor(Shape);
        int per = w.Size / Grid.Scale.Length;
        for (int i = 0; i < w.Size; i++) w.Data[i] = (Codes[i] - Grid.ZeroPoint[i / per]) * Grid.Scale[i / per];
        return w;
    }
}

/// <summary>What a quantized checkpoint holds, in bytes of tensor data (the JSON header aside).</summary>
/// <param name="QuantizedWeights">weights stored as integer codes.</param>
/// <param name="CodeBytes">their packed codes.</param>
/// <param name="ScaleBytes">their per-channel scales and zero points (float32).</param>
/// <param name="FloatBytes">everything else: float parameters and activation quantizer state.</param>
/// <param name="FileBytes">the file's size (0 until written).</param>
public sealed record CheckpointStorage(long QuantizedWeights, long CodeBytes, long ScaleBytes, long FloatBytes, long FileBytes)
{
    /// <summary>Codes plus scales and zero points: what the quantized weights cost.</summary>
    public long WeightBytes => CodeBytes + ScaleBytes;

    /// <summary><see cref="WeightBytes"/> per quantized weight (bits/8 plus the scales' share); 0 without quantized weights.</summary>
    public double BytesPerWeight => QuantizedWeights == 0 ? 0 : (double)WeightBytes / QuantizedWeights;
}
