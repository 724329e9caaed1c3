// Options, weight codes and the report of an ONNX export.
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;

namespace ViTQuant.Export;

/// <summary>How quantized weights are stored in the QDQ file.</summary>
public enum WeightStorage
{
    /// <summary>int8 (uint8 for asymmetric grids) holding the codes, whatever their bit width: exact, and what ORT fuses into integer kernels.</summary>
    Int8,
    /// <summary>Weights of at most 4 bits as int4/uint4 (two per byte; needs opset 21); wider grids stay 8-bit.</summary>
    Int4,
}

/// <summary>
/// How 8-bit codes are typed, which decides the x86 integer kernels ONNX Runtime runs. Its U8S8 kernels
/// (uint8 activations × int8 weights) multiply with vpmaddubsw on CPUs without VNNI (AVX2, AVX-512 without
/// VNNI), which saturates the int16 sum of two products (255·127·2 > 32767): the logits come out wrong there
/// (measured: max |Δlogit| 0.9 against 2.4e-7 for min–max W8A8 on an AVX2 EPYC). Its U8U8 kernels widen to
/// int16 first and are exact on every CPU.
/// </summary>
public enum Int8Layout
{
    /// <summary>Every 8-bit code unsigned: a signed grid is stored shifted by 128, its zero point with it (the same
    /// values). ORT runs U8U8 kernels: exact on every CPU; on CPUs with VNNI slower than U8S8.</summary>
    U8U8,
    /// <summary>Symmetric weights (and signed activation grids) as int8: ORT's U8S8 kernels, which use VNNI where the
    /// CPU has it (AVX-512 VNNI, AVX-VNNI) and saturate where it does not.</summary>
    U8S8,
}

/// <summary>Export settings, validated on construction of the exporter.</summary>
public sealed record OnnxExportOptions
{
    /// <summary>Oldest opset we write: LayerNormalization is opset 17.</summary>
    public const int MinOpset = 17;

    /// <summary>Newest opset we write (int4 types are opset 21).</summary>
    public const int MaxOpset = 21;

    /// <summary>The ONNX opset to write, <see cref="MinOpset"/>–<see cref="MaxOpset"/>.</summary>
    public int Opset { get; init; } = MinOpset;

    /// <summary>How quantized weights are stored in the graph (int8 codes, or int4 from opset 21).</summary>
    public WeightStorage WeightStorage { get; init; } = WeightStorage.Int8;

    /// <summary>
    /// Add the float residue b − b_q·s_x·Δ_c of an int32-quantized bias after its layer (default), so the
    /// export computes the simulation's bias up to float rounding; off, the bias is rounded to the integer
    /// grid as ONNX Runtime's own quantizer writes it (one Add less per layer, and the rounding — up to
    /// ½·s_x·Δ_c per channel — moves values across later quantizers' rounding boundaries: 7 % of the shipped
    /// model's predictions change at minmax W4A4).
    /// </summary>
    public bool ExactBias { get; init; } = true;

    /// <summary>
    /// Per-tensor LSQ grids whose learned offset ⌊z⌉ is not 0 (MimiQ's range-searched initialisation gives
    /// most points one) become QDQ with zero point ⌊z⌉, which ORT runs as integer kernels, instead of the
    /// exact float subgraph. LSQ rounds fl(x/α + ⌊z⌉), QuantizeLinear round(x/α) + ⌊z⌉: they differ where the
    /// float sum crosses a half-integer (rare; one level). Off by default: the default export is exact.
    /// </summary>
    public bool LsqAsQdq { get; init; }

    /// <summary>The integer typing of 8-bit codes (<see cref="ViTQuant.Export.Int8Layout"/>): U8U8 by default, exact on every CPU.</summary>
    public Int8Layout Int8Layout { get; init; } = Int8Layout.U8U8;

    /// <summary>Throws ViTQuantException naming the unsupported setting and what to use instead.</summary>
    public OnnxExportOptions Validated()
    {
        if (Opset < MinOpset)
            throw new ViTQuantException($"--opset {Opset} is too old: the export needs LayerNormalization (opset 17); use --opset {MinOpset}–{MaxOpset}");
        if (Opset > MaxOpset)
            throw new ViTQuantException($"--opset {Opset} is not supported; use --opset {MinOpset}–{MaxOpset}");
        if (WeightStorage == WeightStorage.Int4 && Opset < 21)
            throw new ViTQuantException($"int4 weight storage needs opset 21 (int4 types), got --opset {Opset}; use --opset 21, or int8 storage (exact for 4-bit codes too)");
        return this;
    }

    /// <summary>The ONNX IR version that goes with the opset (opset 17–18: IR 8, 19–20: IR 9, 21: IR 10).</summary>
    public long IrVersion => Opset switch { <= 18 => 8, <= 20 => 9, _ => 10 };
}

/// <summary>One quantized weight as stored in a quantized checkpoint: codes with per-channel step and zero point.</summary>
internal sealed record WeightCodes(int[] Codes, int[] Shape, float[] Scale, float[] ZeroPoint, bool Signed, int Bits)
{
    /// <summary>
    /// Reads every quantized weight of a quantized checkpoint of either format (the layers its plan
    /// quantizes; QuantizedCheckpoint.ReadWeights unpacks them). Throws ViTQuantException naming the tensor
    /// when codes, scales or zero points are missing or inconsistent.
    /// </summary>
    internal static Dictionary<string, WeightCodes> FromCheckpoint(SafeTensorsFile f, IModelConfig config, QuantPlan plan)
    {
        var result = new Dictionary<string, WeightCodes>();
        foreach (var (layer, w) in QuantizedCheckpoint.ReadWeights(f, config, plan))
        {
            // The exporter writes one scale per output channel (axis 0) or one per tensor.
            if (w.Grid.Scale.Length != 1 && w.Grid.Scale.Length != w.Shape[0])
                throw new ViTQuantException($"{f.Path}: {layer}.weight: {w.Grid.Scale.Length} scales do not fit codes {Tensor(w.Shape)}");
            result[layer] = new WeightCodes(w.Codes, w.Shape, w.Grid.Scale, w.Grid.ZeroPoint, w.Grid.QMin < 0, w.Bits);
        }
        return result;
    }

    private static string Tensor(int[] shape) => ViTQuant.Tensors.Tensor.ShapeString(shape);
}

/// <summary>What an export wrote: sizes and how each quantization point was expressed.</summary>
public sealed record OnnxExportResult
{
    /// <summary>The file written.</summary>
    public required string Path { get; init; }

    /// <summary>Its size in bytes.</summary>
    public required long FileBytes { get; init; }

    /// <summary>The opset it declares.</summary>
    public required int Opset { get; init; }

    /// <summary>True for a QDQ graph of a quantized model, false for a float graph.</summary>
    public required bool Quantized { get; init; }
    /// <summary>Every parameter as float32.</summary>
    public required long FloatWeightBytes { get; init; }
    /// <summary>Quantized weights at one byte each plus their per-channel scales, everything else float32.</summary>
    public required long Int8WeightBytes { get; init; }
    /// <summary>As <see cref="Int8WeightBytes"/>, but weights of at most 4 bits packed two per byte.</summary>
    public required long Int4WeightBytes { get; init; }
    /// <summary>Activation point → how it was exported ("uniform 8-bit QDQ uint8", "log√2 4-bit (float subgraph)", …).</summary>
    public required IReadOnlyDictionary<string, string> Points { get; init; }
}
