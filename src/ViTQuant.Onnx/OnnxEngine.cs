// The ONNX Runtime engine: runs an exported .onnx file (OnnxExporter) on pixel batches. The model config
// (image size, channels, normalisation, classes) comes from the file's metadata_props, so a caller can
// build the right dataset transform from the .onnx file alone. ORT's optimised graph can be saved and its
// op types listed, to see whether the QDQ groups became integer kernels (QGemm, QLinearMatMul,
// MatMulIntegerToFloat, …) or stayed float (ONNX Runtime's QDQ fusion rules).
using Microsoft.ML.OnnxRuntime;
using ViTQuant.Export;
using ViTQuant.Export.OnnxProto;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Onnx;

/// <summary>Session settings of <see cref="OnnxEngine"/>.</summary>
public sealed record OnnxEngineOptions
{
    /// <summary>Intra-op threads (0: ORT's default, all cores).</summary>
    public int Threads { get; init; }

    /// <summary>Where ORT writes the graph it optimised (null: not written).</summary>
    public string? OptimizedModelPath { get; init; }

    /// <summary>ORT's graph optimisation level; ORT_ENABLE_ALL (the default) includes the QDQ fusions.</summary>
    public GraphOptimizationLevel OptimizationLevel { get; init; } = GraphOptimizationLevel.ORT_ENABLE_ALL;
}

/// <summary>An ONNX Runtime session over one exported ViT: pixel_values [B, C, H, W] → logits [B, K].</summary>
public sealed class OnnxEngine : IDisposable
{
    private readonly InferenceSession _session;
    private readonly string _path;

    /// <summary>
    /// Loads <paramref name="path"/>. Throws ViTQuantException when the file is missing, ORT cannot load it,
    /// or it lacks the pixel_values input / logits output.
    /// </summary>
    public OnnxEngine(string path, OnnxEngineOptions? options = null)
    {
        options ??= new OnnxEngineOptions();
        if (!File.Exists(path)) throw new ViTQuantException($"{path}: ONNX model not found");
        _path = path;
        // Warnings off: saving an optimised graph warns that NCHWc layouts are machine-specific, on every run.
        using var so = new SessionOptions
        {
            GraphOptimizationLevel = options.OptimizationLevel, InterOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        if (options.Threads > 0) so.IntraOpNumThreads = options.Threads;
        if (options.OptimizedModelPath != null) so.OptimizedModelFilePath = options.OptimizedModelPath;
        try { _session = new InferenceSession(path, so); }
        catch (OnnxRuntimeException e) { throw new ViTQuantException($"{path}: ONNX Runtime cannot load it: {e.Message}"); }
        if (!_session.InputMetadata.ContainsKey(OnnxExporter.InputName) || !_session.OutputMetadata.ContainsKey(OnnxExporter.OutputName))
        {
            _session.Dispose();
            throw new ViTQuantException($"{path}: expected input '{OnnxExporter.InputName}' and output '{OnnxExporter.OutputName}' (a file written by vitq export)");
        }
        Metadata = _session.ModelMetadata.CustomMetadataMap;
        Warning = SaturationWarning(path, Metadata, HasVnni);
    }

    /// <summary>The file's metadata_props.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// One line for the user when ORT's integer kernels are not exact for this file on this CPU (a quantized export
    /// with int8 weights, the u8s8 layout, on a CPU without VNNI: OnnxExportOptions.Int8Layout); null otherwise.
    /// </summary>
    public string? Warning { get; }

    /// <summary>AVX-512 VNNI or AVX-VNNI: where ORT's U8S8 kernels use vpdpbusd instead of the saturating vpmaddubsw.</summary>
    public static bool HasVnni => ViTQuant.Kernels.Int8GemmVnni.CpuHasVnni() || System.Runtime.Intrinsics.X86.AvxVnni.IsSupported;

    // Quantized exports written before vitq.int8_layout existed stored int8 weights: u8s8.
    internal static string? SaturationWarning(string path, IReadOnlyDictionary<string, string> meta, bool vnni) =>
        !vnni && meta.ContainsKey(OnnxExporter.MethodKey) && meta.GetValueOrDefault(OnnxExporter.Int8LayoutKey, "u8s8") == "u8s8"
            ? $"warning: {Path.GetFileName(path)} has int8 weights (u8s8 layout) and this CPU has no VNNI: ONNX Runtime's U8S8 kernels saturate here and the logits can be wrong; export again with --int8-layout u8u8 (the default)"
            : null;

    /// <summary>The model config stored by vitq export. Throws ViTQuantException when the file has none.</summary>
    public IModelConfig Config => Metadata.TryGetValue(ModelIO.ConfigKey, out var json)
        ? ModelConfigs.FromJson(json, _path)
        : throw new ViTQuantException($"{_path}: no '{ModelIO.ConfigKey}' metadata; export the model with vitq export");

    /// <summary>Logits [B, K] for normalised images [B, C, H, W]. Throws ViTQuantException when ORT rejects the input.</summary>
    public Tensor Run(Tensor pixels)
    {
        var data = pixels.Data.Length == pixels.Size ? pixels.Data : pixels.Span.ToArray();
        using var input = OrtValue.CreateTensorValueFromMemory(data, pixels.Shape.Select(d => (long)d).ToArray());
        try
        {
            // The run options live in a variable disposed after the call: InferenceSession.Run hands only their native
            // handle to ORT, so a temporary `new RunOptions()` could be finalized (its native object freed) by a GC
            // while ORT still reads it. The test host's rare crashes are most likely that (2026-12-07: SIGSEGV inside ORT
            // in a hash lookup, as in the run options' config map, while other tests allocated).
            using var runOptions = new RunOptions();
            using var results = _session.Run(runOptions, new[] { OnnxExporter.InputName }, new[] { input }, new[] { OnnxExporter.OutputName });
            var outVal = results[0];
            var shape = outVal.GetTensorTypeAndShape().Shape.Select(d => (int)d).ToArray();
            return new Tensor(outVal.GetTensorDataAsSpan<float>().ToArray(), shape);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ViTQuantException($"{_path}: ONNX Runtime failed on input {Tensor.ShapeString(pixels.Shape)}: {e.Message}");
        }
    }

    public void Dispose() => _session.Dispose();

    /// <summary>How often each op type occurs in an ONNX file (e.g. the optimised graph ORT saved), domain-qualified for non-default domains.</summary>
    public static SortedDictionary<string, int> OpTypeCounts(string onnxPath)
    {
        ModelProto m;
        using (var s = File.OpenRead(onnxPath)) m = ModelProto.Parser.ParseFrom(s);
        var counts = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (var n in m.Graph.Node)
        {
            string key = string.IsNullOrEmpty(n.Domain) || n.Domain == "ai.onnx" ? n.OpType : $"{n.Domain}.{n.OpType}";
            counts[key] = counts.GetValueOrDefault(key) + 1;
        }
        return counts;
    }

    /// <summary>Nodes of an ONNX file as (op type, name, inputs), for inspecting what ORT fused.</summary>
    public static IReadOnlyList<(string OpType, string Name, string[] Inputs)> Nodes(string onnxPath)
    {
        using var s = File.OpenRead(onnxPath);
        return ModelProto.Parser.ParseFrom(s).Graph.Node.Select(n => (n.OpType, n.Name, n.Input.ToArray())).ToList();
    }

    /// <summary>Op types that mean ORT runs a product in integers.</summary>
    public static readonly string[] IntegerKernels =
    {
        "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearConv", "ConvInteger",
        "DynamicQuantizeLinear", "QAttention", "MatMulNBits",
    };
}
