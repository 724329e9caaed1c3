// What Vitq.Quantize returns: a frozen quantized model (weights on their integer grids) that can be
// evaluated, run, saved as a quantized checkpoint and exported to ONNX without going through a file.
using ViTQuant.Export;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;

namespace ViTQuant.Api;

/// <summary>A quantized model made by <see cref="Vitq.Quantize"/>, with the options that made it.</summary>
public sealed class QuantizationResult
{
    private readonly FrozenModel _frozen;

    internal QuantizationResult(FrozenModel frozen, QuantizeOptions options, double seconds)
    {
        _frozen = frozen;
        Options = options;
        Seconds = seconds;
    }

    /// <summary>The fake-quantized model: <c>Model.Model</c> is the network, <c>Model</c> its hooks (pass both to evaluate or infer).</summary>
    public QuantizedModel Model => _frozen.Model;

    /// <summary>The options it was made with (validated).</summary>
    public QuantizeOptions Options { get; }

    /// <summary>Wall time of the quantization, seconds.</summary>
    public double Seconds { get; }

    /// <summary>Every activation and weight quantizer's calibration statistics, as calibrated (before any reconstruction or freezing).</summary>
    public IReadOnlyList<PointCalibration> Calibration => _frozen.Calibration;

    /// <summary>ADFQ-ViT's per-unit reconstruction results, in order; null for the other methods.</summary>
    public IReadOnlyList<Algorithms.Ptq.AdfqUnitResult>? AdfqUnits => _frozen.AdfqUnits;

    /// <summary>What <see cref="Save"/> writes for the weights (quantized weights, packed code bytes, scales, float tensors), file size aside.</summary>
    public CheckpointStorage Storage => QuantizedCheckpoint.Storage(_frozen.Model, _frozen.Codes);

    /// <summary>
    /// Freezes a quantized model made outside <see cref="Vitq.Quantize"/> — a MimiQ student from
    /// <see cref="MimiqFineTuning.Run"/>, or a calibrated QuantizedModel — onto its integer grids, so it can be
    /// saved and exported like any result. <paramref name="options"/> records how it was made (validated).
    /// </summary>
    public static QuantizationResult Freeze(QuantizedModel model, QuantizeOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        return new QuantizationResult(FrozenModel.Of(model), options.Validated(), 0);
    }

    /// <summary>
    /// Writes the quantized checkpoint (format vitq-quant/2; loads with <see cref="Vitq.LoadQuantized"/>,
    /// <c>vitq eval --model</c>, <c>vitq export</c>) atomically: a temporary file beside
    /// <paramref name="path"/> renamed over it, deleted if the write fails or is cancelled. Throws
    /// ArgumentException naming <paramref name="path"/> when it is a folder or exists without
    /// <paramref name="overwrite"/>, before anything is written.
    /// </summary>
    /// <remarks><paramref name="metadata"/> entries are added to the file's header (vitq quantize stores its report there).</remarks>
    public CheckpointStorage Save(string path, bool overwrite = false, IReadOnlyDictionary<string, string>? metadata = null, CancellationToken cancellationToken = default)
    {
        Vitq.CheckOutput(path, overwrite, nameof(path));
        cancellationToken.ThrowIfCancellationRequested();
        var meta = new Dictionary<string, string> { ["vitq.method"] = Options.Method };
        if (metadata != null) foreach (var (k, v) in metadata) meta[k] = v;
        return QuantizedCheckpoint.Save(_frozen.Model, _frozen.Codes, path, meta);
    }

    /// <summary>
    /// Exports the model as an ONNX QDQ graph (ViT/DeiT or Swin; the same graph <c>vitq export</c> writes from
    /// the saved checkpoint), atomically. Throws ArgumentException for a bad <paramref name="path"/> as
    /// <see cref="Save"/>, ViTQuantException for a quantizer with no exact export.
    /// </summary>
    public OnnxExportResult ExportOnnx(string path, OnnxExportOptions? options = null, bool overwrite = false, CancellationToken cancellationToken = default)
    {
        Vitq.CheckOutput(path, overwrite, nameof(path));
        options = (options ?? new OnnxExportOptions()).Validated();
        var model = _frozen.Model.Model;
        var codes = new Dictionary<string, WeightCodes>();
        var shapes = model.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.Shape.ToArray());
        foreach (var (layer, c) in _frozen.Codes)
        {
            int bits = _frozen.Model.Plan.WeightSpec(layer)!.Bits;
            int[] k = c.Signed != null ? c.Signed.Select(v => (int)v).ToArray() : c.Unsigned!.Select(v => (int)v).ToArray();
            codes[layer] = new WeightCodes(k, shapes[layer + ".weight"], c.Grid.Scale, c.Grid.ZeroPoint, c.Grid.QMin < 0, bits);
        }
        return OnnxExporter.Export(model, _frozen.Model, codes, path, options, cancellationToken);
    }
}
