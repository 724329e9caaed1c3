// ONNX export of a ViT/DeiT or a Swin: the forward of VisionTransformer.cs / SwinTransformer.cs written once more
// as an ONNX graph, float or QDQ (docs/ARCHITECTURE.md: Export depends on Models and Quantization only; no ONNX
// Runtime here).
//
//   pixel_values [batch, C, H, W] → Conv(P×P, stride P) → Reshape [B, D, Np] → Transpose [B, Np, D]
//   → Concat(prefix tokens expanded to B) → Add pos_embed → depth × block → head → logits [batch, K]
//   block: x + proj(attn(LN1(x))), x + fc2(GELU(fc1(LN2(x))))
//   linear on tokens: Reshape [B·N, in] → Gemm(transB = 1, weight [out, in], bias) → Reshape [B, N, out]
//   attention: qkv → Reshape [B, N, 3, H, dh] → Transpose [3, B, H, N, dh] → Gather 0/1/2 → q, k, v;
//              MatMul(q, kᵀ) · dh^-½ → Softmax → MatMul(·, v) → Transpose/Reshape [B, N, D]
// Swin (feature maps NHWC [B, H, W, C], the batch always the −1 of a Reshape):
//   Conv → Transpose [B, G, G, D] → LayerNorm → stages: (s > 0) Pad to even → Reshape [B, H/2, 2, W/2, 2, C]
//   → Transpose (0, 1, 3, 4, 2, 5) → Reshape [B, H/2, W/2, 4C] → LayerNorm → reduction (Gemm, no bias); blocks:
//   LayerNorm → roll by −shift (Slice + Concat on each axis) → Pad to the window → windows (Reshape / Transpose
//   (0, 1, 3, 2, 4, 5) / Reshape [B·nW, M², C]) → attention as the ViT's plus the relative position bias
//   [heads, M², M²] (gathered from the table at export) and, when shifted, the mask [nW, 1, M², M²] added per
//   image → windows merged back → Slice off the padding → roll by +shift → residual; MLP as the ViT's;
//   → LayerNorm → ReduceMean over H, W → head.fc.
// Quantized checkpoints add, at the plan's points:
//   weights      the checkpoint's integer codes as int8/uint8 initializers [out, in] (int4 with opset 21
//                on request) → DequantizeLinear(axis 0, per-channel Δ, z): (code − z)·Δ in float, exactly
//                the weights the simulation loads; in the default U8U8 layout (Int8Layout) signed codes are
//                stored as uint8 shifted by 128, zero point with them, so ORT's integer kernels are exact on
//                CPUs without VNNI too;
//   activations  OnnxQuantOps (QDQ where the grid has that form, exact float subgraphs otherwise);
//   bias         when the layer's input is a per-tensor QDQ value (scale s_x) and its weight is quantized
//                (Δ_c): int32 codes b_q = round(b_c / (s_x·Δ_c)) → DequantizeLinear(scale s_x·Δ_c), the layout
//                ORT's QDQ fusion turns into QGemm (ONNX Runtime's QDQ fusion: a float bias is
//                fused into a float Gemm first), plus (ExactBias, the default) a float Add of the residue
//                b_c − b_q·s_x·Δ_c after the layer, so the bias is the simulation's up to float rounding.
//                Without the residue the bias moves by up to ½·s_x·Δ_c, which shifts values across later
//                quantizers' rounding boundaries (on the shipped model at minmax W4A4: 92.9 % prediction
//                agreement with the simulation instead of 99.95 %).
// The last block for the head alone (as VisionTransformer.Forward): with token pooling, after the last attention
// the graph keeps only the prefix tokens (Slice [B, P, ·] of the residual stream and of q after its quantizer, so the
// last attention runs for P queries; of the attention's output instead when the probabilities' quantizer works per
// token), so proj, the residuals, norm2 and the MLP run on B·P rows. Not where a quantizer at those layers' inputs
// works per token (its parameters are per token position): the plan's per-token uniform or LSQ grids, ADFQ's
// per-patch one (QuantizedModel.WorksRowByRow).
// The model config, plan, method and int8 layout travel in metadata_props (vitq.config, vitq.plan,
// vitq.method, vitq.int8_layout).
using Google.Protobuf;
using ViTQuant.Export.OnnxProto;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Export;

/// <summary>Writes ViT/DeiT and Swin models and quantized checkpoints as ONNX files that ONNX Runtime runs.</summary>
public static class OnnxExporter
{
    /// <summary>
    /// True: exports from this thread keep every token through the last block (same-process A/B benchmarks and tests;
    /// the file header says what is dropped otherwise).
    /// </summary>
    internal static bool FullLastBlock { get => _fullLastBlock; set => _fullLastBlock = value; }

    [ThreadStatic] private static bool _fullLastBlock;

    /// <summary>Value of the vitq.format metadata entry of exported models.</summary>
    internal const string FormatValue = "vitq-onnx/1";
    /// <summary>Metadata key holding the quantization method (the plan's name) of a quantized export.</summary>
    internal const string MethodKey = "vitq.method";
    /// <summary>Metadata key holding the Int8Layout of a quantized export (u8u8 or u8s8).</summary>
    internal const string Int8LayoutKey = "vitq.int8_layout";
    /// <summary>Name of the graph input: normalised images [B, C, H, W].</summary>
    public const string InputName = "pixel_values";
    /// <summary>Name of the graph output: logits [B, classes].</summary>
    public const string OutputName = "logits";

    /// <summary>
    /// Exports the model file at <paramref name="modelPath"/> (null: the shipped default; a quantized
    /// checkpoint gives a QDQ graph) to <paramref name="outPath"/>, atomically. Throws ViTQuantException when
    /// the output is the input or a folder, exists without <paramref name="overwrite"/>, the options are
    /// invalid, or the plan has a point with no export.
    /// </summary>
    public static OnnxExportResult ExportFile(string? modelPath, string outPath, OnnxExportOptions options, bool overwrite = false)
    {
        options = options.Validated();
        if (modelPath != null) AtomicFile.EnsureNotSameFile(modelPath, outPath);
        if (Directory.Exists(outPath)) throw new ViTQuantException($"--out {outPath} is a folder; give a file name");
        if (File.Exists(outPath) && !overwrite)
            throw new ViTQuantException($"--out {outPath} already exists; pass --overwrite to replace it, or choose another path");
        VisionModel model;
        QuantizedModel? quant = null;
        Dictionary<string, WeightCodes>? codes = null;
        if (modelPath != null && File.Exists(modelPath) && modelPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
            && SafeTensorsFile.Read(modelPath) is var f && QuantizedCheckpoint.IsQuantized(f))
        {
            quant = QuantizedCheckpoint.Load(f);
            model = quant.Model;
            codes = WeightCodes.FromCheckpoint(f, model.Config, quant.Plan);
        }
        else model = ModelIO.Load(modelPath);
        var (proto, points) = Build(model, quant, codes, options, modelPath);
        AtomicFile.Write(outPath, s => proto.WriteTo(s));
        return Report(outPath, model, quant, options, points);
    }

    /// <summary>
    /// Writes the ONNX graph of an in-memory model — float (<paramref name="quant"/> null) or quantized, with
    /// the integer <paramref name="codes"/> of every weight its plan quantizes — to <paramref name="outPath"/>,
    /// atomically (a cancelled or failed write leaves no file and no temporary). Throws ViTQuantException for
    /// invalid options or a quantizer with no exact export.
    /// </summary>
    internal static OnnxExportResult Export(VisionModel model, QuantizedModel? quant, IReadOnlyDictionary<string, WeightCodes>? codes,
        string outPath, OnnxExportOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(outPath);
        options = options.Validated();
        var (proto, points) = Build(model, quant, codes, options);
        cancellationToken.ThrowIfCancellationRequested();
        AtomicFile.Write(outPath, s =>
        {
            proto.WriteTo(s);
            cancellationToken.ThrowIfCancellationRequested(); // AtomicFile deletes the temporary
        });
        return Report(outPath, model, quant, options, points);
    }

    /// <summary>
    /// The ONNX model of a float model (<paramref name="quant"/> null) or of a quantized one, whose weight
    /// codes are <paramref name="codes"/> (every layer its plan quantizes). Throws ViTQuantException for
    /// invalid options or a quantizer with no exact export.
    /// </summary>
    internal static (ModelProto Model, IReadOnlyDictionary<string, string> Points) Build(VisionModel model, QuantizedModel? quant,
        IReadOnlyDictionary<string, WeightCodes>? codes, OnnxExportOptions options, string? source = null)
    {
        options = options.Validated();
        if (quant != null && !ReferenceEquals(quant.Model, model)) throw new ArgumentException("quant must wrap model", nameof(quant));
        if (quant != null)
            foreach (var layer in QuantPlan.WeightLayers(model.Config))
                if (quant.Plan.WeightSpec(layer) != null && (codes == null || !codes.ContainsKey(layer)))
                    throw new ViTQuantException($"weight {layer}: the plan quantizes it but no integer codes were given (export a saved quantized checkpoint)");
        var em = new Emitter(model, quant, codes, options);
        var logits = em.Forward(InputName);
        var g = em.G.Graph;
        var c = model.Config;
        g.Input.Add(OnnxGraph.FloatValue(InputName, "batch", c.InChans, c.ImageSize, c.ImageSize));
        g.Node.Add(new NodeProto { OpType = "Identity", Name = "logits#node", Input = { logits }, Output = { OutputName } });
        g.Output.Add(OnnxGraph.FloatValue(OutputName, "batch", c.NumClasses));
        var m = new ModelProto
        {
            IrVersion = options.IrVersion,
            ProducerName = "vitq",
            ProducerVersion = typeof(OnnxExporter).Assembly.GetName().Version?.ToString() ?? "0",
            Graph = g,
            DocString = quant == null ? $"{c.Architecture} (float32)" : $"{c.Architecture} quantized ({quant.Plan.Name} W{quant.Plan.WeightBits}A{quant.Plan.ActivationBits}), QDQ",
        };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = options.Opset });
        void Meta(string k, string v) => m.MetadataProps.Add(new StringStringEntryProto { Key = k, Value = v });
        Meta(ModelIO.FormatKey, FormatValue);
        Meta(ModelIO.ConfigKey, c.ToJson());
        if (quant != null)
        {
            Meta(QuantizedCheckpoint.PlanKey, quant.Plan.ToJson());
            Meta(MethodKey, quant.Plan.Name);
            Meta(Int8LayoutKey, options.Int8Layout.ToString().ToLowerInvariant());
        }
        if (source != null) Meta("vitq.source", Path.GetFileName(source));
        return (m, em.Points);
    }

    internal static OnnxExportResult Report(string path, VisionModel model, QuantizedModel? quant, OnnxExportOptions o, IReadOnlyDictionary<string, string> points)
    {
        long total = model.ParameterCount(), qWeights = 0, q4Weights = 0, scales = 0;
        if (quant != null)
        {
            var named = model.NamedParameters().ToDictionary(p => p.Name, p => p.Param);
            foreach (var layer in QuantPlan.WeightLayers(model.Config))
                if (quant.Plan.WeightSpec(layer) is QuantSpec s)
                {
                    var w = named[layer + ".weight"];
                    qWeights += w.Size;
                    if (s.Bits <= 4) q4Weights += w.Size;
                    scales += w.Shape[0];
                }
        }
        long rest = (total - qWeights) * 4 + scales * 4;
        return new OnnxExportResult
        {
            Path = path,
            FileBytes = new FileInfo(path).Length,
            Opset = o.Opset,
            Quantized = quant != null,
            FloatWeightBytes = total * 4,
            Int8WeightBytes = rest + qWeights,
            Int4WeightBytes = rest + (qWeights - q4Weights) + (q4Weights + 1) / 2,
            Points = points,
        };
    }

    /// <summary>Emits the forward; one instance per export.</summary>
    private sealed class Emitter
    {
        private readonly VisionModel _model;
        private readonly QuantizedModel? _q;
        private readonly IReadOnlyDictionary<string, WeightCodes>? _codes;
        private readonly OnnxExportOptions _o;
        private readonly OnnxQuantOps _ops;
        private readonly Dictionary<string, float[]> _weightScales = new();

        public OnnxGraph G { get; } = new();

        public Dictionary<string, string> Points { get; } = new();

        public Emitter(VisionModel m, QuantizedModel? q, IReadOnlyDictionary<string, WeightCodes>? codes, OnnxExportOptions o)
        {
            (_model, _q, _codes, _o) = (m, q, codes, o);
            _ops = new OnnxQuantOps(G, o.LsqAsQdq, o.Int8Layout);
        }

        // The ViT path's model and config (Forward dispatches Swin before these are read).
        private VisionTransformer _m => (VisionTransformer)_model;
        private ViTConfig _c => _m.Config;

        public string Forward(string x)
        {
            if (_model is SwinTransformer swin) return SwinForward(swin, x);
            var h = Embed(x);
            for (int i = 0; i < _c.Depth; i++) h = Block(i, h);
            return Head(h);
        }

        private string F(string stem, Tensor t) => G.Floats(stem, t.Span, t.Shape.Select(d => (long)d).ToArray());

        private string Node(string op, string stem, params string[] inputs) => G.Node(op, stem, inputs);

        private QuantOut Act(string point, string x)
        {
            if (_q == null || !_q.ActivationQuantizers.TryGetValue(point, out var qz)) return new(x, null, "float");
            var r = _ops.Apply(point, qz, x);
            Points[point] = r.Form;
            return r;
        }

        /// <summary>The weight as the graph sees it: a DequantizeLinear of the codes, or the float initializer.</summary>
        private string Weight(string layer, Tensor w)
        {
            if (_codes == null || !_codes.TryGetValue(layer, out var wc)) return F($"{layer}.weight", w);
            if (!wc.Shape.AsSpan().SequenceEqual(w.Shape)) throw new ViTQuantException($"weight {layer}: codes {Tensor.ShapeString(wc.Shape)} do not match the model's {Tensor.ShapeString(w.Shape)}");
            long[] dims = wc.Shape.Select(d => (long)d).ToArray();
            bool int4 = _o.WeightStorage == WeightStorage.Int4 && wc.Bits <= 4;
            // U8U8 layout: signed 8-bit codes and their zero points shifted into uint8 (the same values). Not for
            // int4 storage, which ORT runs as float Gemm on the dequantized weight anyway.
            if (wc.Signed && !int4 && _o.Int8Layout == Int8Layout.U8U8)
                wc = wc with { Codes = wc.Codes.Select(c => c + 128).ToArray(), ZeroPoint = wc.ZeroPoint.Select(z => z + 128).ToArray(), Signed = false };
            string codes = int4 ? G.Nibbles($"{layer}.weight_codes", wc.Codes, wc.Signed, dims) : G.Bytes($"{layer}.weight_codes", wc.Codes, wc.Signed, dims);
            int ch = wc.Scale.Length;
            int[] zp = wc.ZeroPoint.Select(z => (int)z).ToArray();
            if (wc.ZeroPoint.Any(z => z != MathF.Round(z))) throw new ViTQuantException($"weight {layer}: zero points are not integers");
            string s = ch == 1 ? G.Scalar($"{layer}.weight_scale", wc.Scale[0]) : G.Floats($"{layer}.weight_scale", wc.Scale, ch);
            long[] zdims = ch == 1 ? Array.Empty<long>() : new long[] { ch };
            string z = int4 ? G.Nibbles($"{layer}.weight_zero_point", zp, wc.Signed, zdims) : G.Bytes($"{layer}.weight_zero_point", zp, wc.Signed, zdims);
            _weightScales[layer] = wc.Scale;
            return ch == 1 ? Node("DequantizeLinear", layer, codes, s, z) : G.Node("DequantizeLinear", layer, new[] { codes, s, z }, OnnxGraph.Int("axis", 0));
        }

        /// <summary>
        /// The bias: int32 codes through DequantizeLinear (scale s_x·Δ_c) when the fused integer form applies,
        /// else float. In the int32 case <paramref name="remainder"/> is the float residue b − b_q·s_x·Δ_c,
        /// added after the layer, so the sum is the simulation's bias up to float rounding; null otherwise.
        /// </summary>
        private string Bias(string layer, Tensor b, float? inputScale, out string? remainder)
        {
            remainder = null;
            if (inputScale is float sx && _weightScales.TryGetValue(layer, out var sw))
            {
                int n = b.Size;
                var scale = new float[n];
                var q = new int[n];
                var rest = new float[n];
                bool fits = true;
                for (int i = 0; i < n; i++)
                {
                    scale[i] = sx * sw[sw.Length == 1 ? 0 : i];
                    double v = Math.Round(b.Data[i] / (double)scale[i], MidpointRounding.ToEven);
                    if (!(scale[i] > 0) || Math.Abs(v) > int.MaxValue) { fits = false; break; }
                    q[i] = (int)v;
                    rest[i] = b.Data[i] - (float)q[i] * scale[i];
                }
                if (fits)
                {
                    string codes = G.Int32s($"{layer}.bias_codes", q, n);
                    string s = G.Floats($"{layer}.bias_scale", scale, n);
                    string z = G.Int32s($"{layer}.bias_zero_point", new int[n], n);
                    if (_o.ExactBias && rest.Any(r => r != 0f)) remainder = G.Floats($"{layer}.bias_remainder", rest, n);
                    return G.Node("DequantizeLinear", layer, new[] { codes, s, z }, OnnxGraph.Int("axis", 0));
                }
            }
            return F($"{layer}.bias", b);
        }

        /// <summary>Linear on [B, N, in] (tokens) or [B, in] through a Gemm with transB = 1.</summary>
        private string Linear(string layer, Linear lin, string x, bool tokens) =>
            Linear(layer, lin, x, tokens ? new long[] { -1, _c.NumTokens, lin.OutFeatures } : null);

        /// <summary>
        /// Linear through a Gemm with transB = 1: on [B, in] when <paramref name="outShape"/> is null, else on the
        /// input flattened to [rows, in] and reshaped to outShape (a Gemm, not a MatMul, so ORT's QDQ fusion makes
        /// it a QGemm). A layer without bias (Swin's patch-merging reduction) has no C input.
        /// </summary>
        private string Linear(string layer, Linear lin, string x, long[]? outShape)
        {
            var a = Act(layer, x);
            string w = Weight(layer, lin.Weight);
            string? rest = null;
            var inputs = new List<string> { a.Value, w };
            if (lin.Bias != null) inputs.Add(Bias(layer, lin.Bias, a.Scale, out rest));
            string y;
            if (outShape == null) y = G.Node("Gemm", layer, inputs, OnnxGraph.Int("transB", 1));
            else
            {
                inputs[0] = Node("Reshape", layer, a.Value, G.Int64Vector($"{layer}.flat_shape", -1, lin.InFeatures));
                y = Node("Reshape", layer, G.Node("Gemm", layer, inputs, OnnxGraph.Int("transB", 1)), G.Int64Vector($"{layer}.out_shape", outShape));
            }
            return rest == null ? y : Node("Add", $"{layer}.bias_remainder", y, rest);
        }

        private string LayerNorm(string stem, Nn.LayerNorm ln, string x) =>
            G.Node("LayerNormalization", stem, new[] { x, F($"{stem}.weight", ln.Weight), F($"{stem}.bias", ln.Bias) },
                OnnxGraph.Int("axis", -1), OnnxGraph.Float("epsilon", ln.Eps));

        private string Embed(string x)
        {
            int D = _c.EmbedDim;
            string conv = PatchConv(x, _m.PatchWeight, _m.PatchBias, _c.PatchSize);
            string seq = Node("Reshape", "patch_embed", conv, G.Int64Vector("patch_embed.seq_shape", 0, D, -1));
            string t = G.Node("Transpose", "patch_embed", new[] { seq }, OnnxGraph.Ints("perm", 0, 2, 1));
            if (_c.NumPrefixTokens > 0)
            {
                var prefixData = _m.DistToken != null ? _m.ClsToken!.ToArray().Concat(_m.DistToken.ToArray()).ToArray() : _m.ClsToken!.ToArray();
                string prefix = G.Floats("prefix_tokens", prefixData, 1, _c.NumPrefixTokens, D);
                string batch = G.Node("Slice", "prefix", new[] { Node("Shape", "prefix", x), G.Int64Vector("prefix.s0", 0), G.Int64Vector("prefix.s1", 1) });
                string shape = G.Node("Concat", "prefix", new[] { batch, G.Int64Vector("prefix.rest", _c.NumPrefixTokens, D) }, OnnxGraph.Int("axis", 0));
                string expanded = Node("Expand", "prefix", prefix, shape);
                t = G.Node("Concat", "prefix", new[] { expanded, t }, OnnxGraph.Int("axis", 1));
            }
            return Node("Add", "pos_embed", t, F("pos_embed", _m.PosEmbed));
        }

        /// <summary>patch_embed.proj: a P×P stride-P Conv of the (quantized) image, [B, D, G, G], with the bias residue when the bias is int32.</summary>
        private string PatchConv(string x, Tensor weight, Tensor bias, int P)
        {
            var a = Act("patch_embed.proj", x);
            string w = Weight("patch_embed.proj", weight);
            string b = Bias("patch_embed.proj", bias, a.Scale, out var rest);
            string conv = G.Node("Conv", "patch_embed.proj", new[] { a.Value, w, b }, OnnxGraph.Ints("kernel_shape", P, P), OnnxGraph.Ints("strides", P, P));
            if (rest == null) return conv;
            return Node("Add", "patch_embed.proj.bias_remainder", conv, Node("Reshape", "patch_embed", rest, G.Int64Vector("patch_embed.bias_shape", bias.Size, 1, 1)));
        }

        private string Block(int i, string x)
        {
            var blk = _m.Blocks[i];
            string p = $"blocks.{i}";
            // attention half
            string h = LayerNorm($"{p}.norm1", blk.Norm1, x);
            string qkv = Linear($"{p}.attn.qkv", blk.Qkv, h, tokens: true);
            bool headRows = i == _c.Depth - 1 && HeadRowsOnly(p);
            long T = headRows ? _c.NumPrefixTokens : _c.NumTokens;
            // With a row-by-row probabilities quantizer the attention itself runs for the kept queries only.
            bool fewQueries = headRows && (_q == null || !_q.ActivationQuantizers.TryGetValue($"{p}.attn.probs", out var pq) || QuantizedModel.WorksRowByRow(pq));
            string merged = Attention(p, qkv, _c.NumTokens, _c.NumHeads, _c.HeadDim, queries: fewQueries ? (int)T : 0);
            if (headRows)
            {
                string Rows(string v) => G.Node("Slice", $"{p}.head_rows", new[] { v, G.Int64Vector($"{p}.head_rows.start", 0),
                    G.Int64Vector($"{p}.head_rows.end", T), G.Int64Vector($"{p}.head_rows.axes", 1) });
                if (!fewQueries) merged = Rows(merged);
                x = Rows(x);
            }
            long[] Shape(long width) => new long[] { -1, T, width };
            x = Node("Add", $"{p}.attn.residual", x, Linear($"{p}.attn.proj", blk.Proj, merged, Shape(_c.EmbedDim)));
            // MLP half
            h = LayerNorm($"{p}.norm2", blk.Norm2, x);
            string f1 = Linear($"{p}.mlp.fc1", blk.Fc1, h, Shape(_c.MlpHidden));
            string act = Gelu($"{p}.mlp", f1);
            return Node("Add", $"{p}.mlp.residual", x, Linear($"{p}.mlp.fc2", blk.Fc2, act, Shape(_c.EmbedDim)));
        }

        /// <summary>
        /// True when the last block (prefix <paramref name="p"/>) may run past its attention on the prefix tokens only
        /// (file header): token pooling, and every quantizer at proj, fc1 and fc2 works row by row.
        /// </summary>
        private bool HeadRowsOnly(string p)
        {
            if (FullLastBlock || _c.GlobalPool == "avg" || _c.NumPrefixTokens == 0) return false;
            return _q == null || _q.QuantizersRowByRowAfterAttention(p);
        }

        /// <summary>
        /// Multi-head attention on qkv [B', N, 3·H·dh] (B' images, or windows): softmax(q·kᵀ·dh^-½ + extra)·v with the
        /// plan's q, k, v and probs points; <paramref name="scores"/> adds Swin's bias and mask. Returns [B', N, H·dh], or
        /// with <paramref name="queries"/> above 0 the first that many query rows alone, [B', queries, H·dh] (q sliced
        /// after its quantizer, so a per-token one still sees every row).
        /// </summary>
        private string Attention(string p, string qkv, int N, int H, int dh, Func<string, string>? scores = null, int queries = 0)
        {
            string r = Node("Reshape", $"{p}.attn", qkv, G.Int64Vector($"{p}.attn.qkv_shape", 0, N, 3, H, dh));
            string t = G.Node("Transpose", $"{p}.attn", new[] { r }, OnnxGraph.Ints("perm", 2, 0, 3, 1, 4)); // [3, B', H, N, dh]
            string Pick(int s) => G.Node("Gather", $"{p}.attn", new[] { t, G.Int64s($"{p}.attn.index{s}", new long[] { s }) }, OnnxGraph.Int("axis", 0));
            string q = Act($"{p}.attn.q", Pick(0)).Value;
            if (queries > 0)
                q = G.Node("Slice", $"{p}.head_rows", new[] { q, G.Int64Vector($"{p}.head_rows.q_start", 0),
                    G.Int64Vector($"{p}.head_rows.q_end", queries), G.Int64Vector($"{p}.head_rows.q_axes", 2) });
            // k is quantized after the transpose when its quantizer is elementwise per tensor, so that its
            // DequantizeLinear feeds the MatMul directly (the QDQ pattern ORT fuses); per-token grids index
            // tokens along dim −2 and must see k as [B', H, N, dh].
            string k = Pick(1), kT;
            bool perToken = _q != null && _q.ActivationQuantizers.TryGetValue($"{p}.attn.k", out var kq) && kq.Spec.Granularity == Granularity.PerToken;
            if (perToken) kT = G.Node("Transpose", $"{p}.attn", new[] { Act($"{p}.attn.k", k).Value }, OnnxGraph.Ints("perm", 0, 1, 3, 2));
            else kT = Act($"{p}.attn.k", G.Node("Transpose", $"{p}.attn", new[] { k }, OnnxGraph.Ints("perm", 0, 1, 3, 2))).Value;
            string v = Pick(2);
            string logits = Node("MatMul", $"{p}.attn.logits", q, kT);
            string scaled = Node("Mul", $"{p}.attn", logits, G.Scalar($"{p}.attn.scale", 1f / MathF.Sqrt(dh)));
            if (scores != null) scaled = scores(scaled);
            string probs = G.Node("Softmax", $"{p}.attn", new[] { scaled }, OnnxGraph.Int("axis", -1));
            probs = Act($"{p}.attn.probs", probs).Value;
            v = Act($"{p}.attn.v", v).Value;
            string o = Node("MatMul", $"{p}.attn.out", probs, v); // [B', H, N, dh]
            return Node("Reshape", $"{p}.attn", G.Node("Transpose", $"{p}.attn", new[] { o }, OnnxGraph.Ints("perm", 0, 2, 1, 3)),
                G.Int64Vector($"{p}.attn.merge_shape", 0, queries > 0 ? queries : N, H * dh));
        }

        // ---- Swin (file header) ----

        private string SwinForward(SwinTransformer m, string x)
        {
            var c = m.Config;
            string conv = PatchConv(x, m.PatchWeight, m.PatchBias, c.PatchSize);
            string h = G.Node("Transpose", "patch_embed", new[] { conv }, OnnxGraph.Ints("perm", 0, 2, 3, 1)); // [B, G, G, D]
            h = LayerNorm("patch_embed.norm", m.PatchNorm, h);
            for (int s = 0; s < c.NumStages; s++)
            {
                var stage = m.Stages[s];
                if (stage.Reduction != null) h = SwinMerge(s, stage, h, c.ActualResolution(s - 1), c.StageDim(s - 1));
                for (int bi = 0; bi < stage.Blocks.Count; bi++) h = SwinBlock(c, s, bi, stage.Blocks[bi], h);
            }
            string n = LayerNorm("norm", m.Norm, h);
            string mean = _o.Opset >= 18
                ? G.Node("ReduceMean", "pool", new[] { n, G.Int64Vector("pool.mean_axes", 1, 2) }, OnnxGraph.Int("keepdims", 0))
                : G.Node("ReduceMean", "pool", new[] { n }, OnnxGraph.Ints("axes", 1, 2), OnnxGraph.Int("keepdims", 0));
            return Linear("head.fc", m.Head, mean, outShape: null);
        }

        /// <summary>timm's PatchMerging on [B, r, r, C]: zero-pad odd maps, gather 2×2 neighbours, norm, reduce to 2C.</summary>
        private string SwinMerge(int s, SwinStage stage, string x, int r, int C)
        {
            string p = $"layers.{s}.downsample";
            x = PadMap(p, x, r, 2);
            int R = (r + 1) / 2;
            string g = Node("Reshape", p, x, G.Int64Vector($"{p}.split_shape", -1, R, 2, R, 2, C));
            g = G.Node("Transpose", p, new[] { g }, OnnxGraph.Ints("perm", 0, 1, 3, 4, 2, 5));
            g = Node("Reshape", p, g, G.Int64Vector($"{p}.merged_shape", -1, R, R, 4 * C));
            g = LayerNorm($"{p}.norm", stage.MergeNorm!, g);
            return Linear($"{p}.reduction", stage.Reduction!, g, new long[] { -1, R, R, stage.Reduction!.OutFeatures });
        }

        private string SwinBlock(SwinConfig c, int s, int bi, SwinBlock blk, string x)
        {
            string p = $"layers.{s}.blocks.{bi}";
            int r = c.ActualResolution(s), C = c.StageDim(s), H = c.NumHeads[s], dh = C / H, M = blk.Window, shift = blk.Shift;
            int Rp = (r + M - 1) / M * M, nw = Rp / M, N = M * M;
            // attention half: roll, pad, windows, attention with bias (and mask), back
            string h = LayerNorm($"{p}.norm1", blk.Norm1, x);
            if (shift > 0) h = Roll($"{p}.roll", Roll($"{p}.roll", h, -shift, 1, r), -shift, 2, r);
            h = PadMap(p, h, r, M);
            string win = Node("Reshape", $"{p}.windows", h, G.Int64Vector($"{p}.windows.split_shape", -1, nw, M, nw, M, C));
            win = G.Node("Transpose", $"{p}.windows", new[] { win }, OnnxGraph.Ints("perm", 0, 1, 3, 2, 4, 5));
            win = Node("Reshape", $"{p}.windows", win, G.Int64Vector($"{p}.windows.shape", -1, N, C));
            // Post-LayerNorm points see the image's tokens [B, nW·M², C] (SwinBlock.Tokens): a per-patch quantizer keeps
            // one grid per window position of the image, as in the simulation.
            string tokens = Node("Reshape", $"{p}.attn.qkv.tokens", win, G.Int64Vector($"{p}.attn.qkv.tokens_shape", -1, nw * nw * N, C));
            string qkv = Linear($"{p}.attn.qkv", blk.Qkv, tokens, new long[] { -1, N, 3 * C });
            // bias [H, N, N] = table[relative_position_index] permuted (2, 0, 1), as the model computes it
            var table = blk.RelativePositionBiasTable;
            var index = SwinWindows.RelativePositionIndex(M);
            var bias = new float[H * N * N];
            for (int i = 0; i < N * N; i++)
                for (int hh = 0; hh < H; hh++) bias[hh * N * N + i] = table.Data[index[i] * H + hh];
            Tensor? mask = shift > 0 ? SwinWindows.ShiftMask(c.DeclaredResolution(s), M, shift) : null;
            if (mask != null && mask.Shape[0] != nw * nw)
                throw new ViTQuantException($"{p}: a {r}×{r} map has {nw * nw} windows of {M}×{M}, the shifted-window mask was built for {mask.Shape[0]}");
            string Scores(string scaled)
            {
                string sc = Node("Add", $"{p}.attn.bias", scaled, G.Floats($"{p}.attn.relative_position_bias", bias, H, N, N));
                if (mask == null) return sc;
                string perImage = Node("Reshape", $"{p}.attn.mask", sc, G.Int64Vector($"{p}.attn.mask.split_shape", -1, nw * nw, H, N, N));
                perImage = Node("Add", $"{p}.attn.mask", perImage, G.Floats($"{p}.attn.mask", mask.Span, nw * nw, 1, N, N));
                return Node("Reshape", $"{p}.attn.mask", perImage, G.Int64Vector($"{p}.attn.mask.shape", -1, H, N, N));
            }
            string merged = Attention(p, qkv, N, H, dh, Scores);
            string o = Linear($"{p}.attn.proj", blk.Proj, merged, new long[] { -1, N, C });
            o = Node("Reshape", $"{p}.unwindow", o, G.Int64Vector($"{p}.unwindow.split_shape", -1, nw, nw, M, M, C));
            o = G.Node("Transpose", $"{p}.unwindow", new[] { o }, OnnxGraph.Ints("perm", 0, 1, 3, 2, 4, 5));
            o = Node("Reshape", $"{p}.unwindow", o, G.Int64Vector($"{p}.unwindow.shape", -1, Rp, Rp, C));
            if (Rp != r)
                o = G.Node("Slice", $"{p}.crop", new[] { o, G.Int64Vector($"{p}.crop.start", 0, 0), G.Int64Vector($"{p}.crop.end", r, r), G.Int64Vector($"{p}.crop.axes", 1, 2) });
            if (shift > 0) o = Roll($"{p}.unroll", Roll($"{p}.unroll", o, shift, 1, r), shift, 2, r);
            x = Node("Add", $"{p}.attn.residual", x, o);
            // MLP half
            h = LayerNorm($"{p}.norm2", blk.Norm2, x);
            h = Node("Reshape", $"{p}.mlp.fc1.tokens", h, G.Int64Vector($"{p}.mlp.fc1.tokens_shape", -1, r * r, C));
            string f1 = Linear($"{p}.mlp.fc1", blk.Fc1, h, new long[] { -1, r, r, blk.Fc1.OutFeatures });
            string act = Gelu($"{p}.mlp", f1);
            return Node("Add", $"{p}.mlp.residual", x, Linear($"{p}.mlp.fc2", blk.Fc2, act, new long[] { -1, r, r, C }));
        }

        /// <summary>torch.roll(x, shift, axis) for an axis of length n: the last (shift mod n) entries moved to the front.</summary>
        private string Roll(string stem, string x, int shift, int axis, int n)
        {
            int k = ((shift % n) + n) % n;
            if (k == 0) return x;
            string Part(long from, long to) => G.Node("Slice", stem, new[] { x, G.Int64Vector($"{stem}.start", from), G.Int64Vector($"{stem}.end", to), G.Int64Vector($"{stem}.axes", axis) });
            return G.Node("Concat", stem, new[] { Part(n - k, n), Part(0, n - k) }, OnnxGraph.Int("axis", axis));
        }

        /// <summary>Zero-pads a map [B, r, r, C] at the bottom and right to a multiple of m (timm's F.pad).</summary>
        private string PadMap(string stem, string x, int r, int m)
        {
            int pad = (m - r % m) % m;
            if (pad == 0) return x;
            return Node("Pad", $"{stem}.pad", x, G.Int64Vector($"{stem}.pads", 0, 0, 0, 0, 0, pad, pad, 0));
        }

        /// <summary>Exact (erf) GELU: the Gelu op from opset 20, else ½·x·(1 + erf(x/√2)).</summary>
        private string Gelu(string stem, string x)
        {
            if (_o.Opset >= 20) return Node("Gelu", stem, x);
            string e = Node("Erf", stem, Node("Div", stem, x, G.Scalar($"{stem}.sqrt2", MathF.Sqrt(2f))));
            string half = Node("Mul", stem, x, G.Scalar($"{stem}.half", 0.5f));
            return Node("Mul", stem, half, Node("Add", stem, e, G.Scalar($"{stem}.one", 1f)));
        }

        private string Head(string h)
        {
            string pooled, distPooled = "";
            if (_c.GlobalPool == "avg")
            {
                string patches = G.Node("Slice", "pool", new[] { h, G.Int64Vector("pool.start", _c.NumPrefixTokens), G.Int64Vector("pool.end", _c.NumTokens), G.Int64Vector("pool.axes", 1) });
                string mean = _o.Opset >= 18
                    ? G.Node("ReduceMean", "pool", new[] { patches, G.Int64Vector("pool.mean_axes", 1) }, OnnxGraph.Int("keepdims", 0))
                    : G.Node("ReduceMean", "pool", new[] { patches }, OnnxGraph.Ints("axes", 1), OnnxGraph.Int("keepdims", 0));
                pooled = LayerNorm("fc_norm", _m.FcNorm!, mean);
            }
            else
            {
                string n = LayerNorm("norm", _m.Norm, h);
                pooled = G.Node("Gather", "pool", new[] { n, G.Int64s("pool.cls", new long[] { 0 }) }, OnnxGraph.Int("axis", 1));
                if (_c.Distilled) distPooled = G.Node("Gather", "pool", new[] { n, G.Int64s("pool.dist", new long[] { 1 }) }, OnnxGraph.Int("axis", 1));
            }
            string logits = Linear("head", _m.Head, pooled, tokens: false);
            if (_c.Distilled)
            {
                string d = Linear("head_dist", _m.HeadDist!, distPooled, tokens: false);
                logits = Node("Mul", "head", Node("Add", "head", logits, d), G.Scalar("head.half", 0.5f));
            }
            return logits;
        }
    }
}
