// The toolkit's façade: the whole job — load a model, get calibration data, quantize, evaluate, infer,
// save, export, synthesize — in a few calls, the way a C# program (and the vitq command line) uses it.
// Every long operation takes an IProgress<OperationProgress> and a CancellationToken; arguments are
// validated before any work starts, and outputs are written atomically (temporary file + rename), so a
// failed or cancelled call leaves neither a partial output nor a temporary behind.
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Runtime;
using ViTQuant.Tensors;

using ViTQuant.Kernels;

namespace ViTQuant.Api;

/// <summary>Entry points for quantizing Vision Transformers: models, data, quantization, evaluation, output.</summary>
public static partial class Vitq
{
    /// <summary>
    /// A float model: null → the default Fashion-MNIST ViT embedded in this library; a folder → timm
    /// layout (model.safetensors + config.json); a file → our .safetensors (or timm's with a sibling
    /// config.json). Throws ViTQuantException naming the file when it is missing or not a model.
    /// </summary>
    public static VisionModel LoadModel(string? path = null) => ModelIO.Load(path);

    /// <summary>A quantized checkpoint (vitq quantize, <see cref="QuantizationResult.Save"/>) ready to run. Throws ViTQuantException naming the file.</summary>
    public static QuantizedModel LoadQuantized(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new ArgumentException($"'{path}' not found (expected a quantized .safetensors checkpoint)", nameof(path));
        return QuantizedCheckpoint.Load(path);
    }

    /// <summary>Writes a float model (our .safetensors, config in the metadata) atomically. Throws ArgumentException for a bad <paramref name="path"/>.</summary>
    public static void SaveModel(VisionModel model, string path, bool overwrite = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        CheckOutput(path, overwrite, nameof(path));
        ModelIO.Save(model, path);
    }

    /// <summary>
    /// Exports a float ViT/DeiT or Swin model as an ONNX graph (input pixel_values [batch, C, H, W], output logits),
    /// atomically. Throws ArgumentException for a bad <paramref name="path"/> (before anything is written). A
    /// quantized model exports through <see cref="QuantizationResult.ExportOnnx"/>.
    /// </summary>
    public static Export.OnnxExportResult ExportOnnx(VisionModel model, string path, Export.OnnxExportOptions? options = null, bool overwrite = false,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        CheckOutput(path, overwrite, nameof(path));
        return Export.OnnxExporter.Export(model, null, null, path, options ?? new Export.OnnxExportOptions(), cancellationToken);
    }

    /// <summary>
    /// An evaluation set for <paramref name="model"/>: <paramref name="spec"/> "fashion-mnist" (split train,
    /// val, test or train-full; from /usr/share/datasets/fashion-mnist or $VITQ_FASHION_MNIST_DIR) or
    /// "folder:PATH" (one sub-folder per class, labelled by the model's class names), the first
    /// <paramref name="limit"/> images when given. Throws ArgumentException for limit &lt; 1, ViTQuantException
    /// for an unknown or missing source or images that do not fit the model.
    /// </summary>
    public static IImageDataset OpenDataset(IModelConfig model, string spec = "fashion-mnist", string split = "test", int? limit = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (limit is < 1) throw new ArgumentException($"is {limit}, expected at least 1 (or null for all images)", nameof(limit));
        return Datasets.Limit(Datasets.Open(spec, split, model, nameof(spec)), limit);
    }

    /// <summary>
    /// Quantizes <paramref name="model"/> (not modified) with <paramref name="options"/> on
    /// <paramref name="data"/> (calibration images; distillation images for MimiQ). Validates first:
    /// ArgumentException naming <paramref name="options"/>' property or <paramref name="data"/> when the images
    /// do not fit the model. Every method runs on ViT/DeiT and Swin alike.
    /// Reports each stage (calibration, ADFQ-ViT reconstruction, fine-tuning) to <paramref name="progress"/>;
    /// cancelling throws OperationCanceledException at the next report, with nothing written.
    /// </summary>
    public static QuantizationResult Quantize(VisionModel model, CalibrationData data, QuantizeOptions options,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        return QuantizationMethods.Run(model, data, options, resumePath: null, progress, cancellationToken);
    }

    /// <summary>
    /// Top-1 (top-5 above 5 classes), loss and throughput of <paramref name="model"/> — fake-quantized through
    /// <paramref name="hooks"/> when given — on <paramref name="data"/>, in batches of <paramref name="batchSize"/>.
    /// Reports stage "evaluate" per batch; cancelling throws OperationCanceledException at the next batch.
    /// Throws ArgumentException when the images do not fit the model or batchSize &lt; 1.
    /// </summary>
    public static EvalResult Evaluate(VisionModel model, IImageDataset data, IModelHooks? hooks = null, int batchSize = 256,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var frozen = WeightPacking.Freeze(); // no weight changes while evaluating
        return Evaluate(x => model.Infer(x, hooks), model.Config, data, batchSize, progress, cancellationToken); // Infer: one stage's temporaries at a time
    }

    /// <summary>
    /// The same measurement for any engine that maps a batch of normalised images to logits [B, classes]: a
    /// model's forward, <see cref="CompileInt8"/>'s engine, ONNX Runtime. <paramref name="config"/> gives the
    /// input shape, preprocessing and class count. Throws as the model overload.
    /// </summary>
    public static EvalResult Evaluate(Func<Tensor, Tensor> engine, IModelConfig config, IImageDataset data, int batchSize = 256,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(data);
        if (batchSize < 1) throw new ArgumentException($"is {batchSize}, expected at least 1", nameof(batchSize));
        var c = config;
        if (data.Channels != c.InChans || data.Height != c.ImageSize || data.Width != c.ImageSize)
            throw new ArgumentException($"images are {data.Channels}×{data.Height}×{data.Width}, the model ({c.Architecture}) expects {c.InChans}×{c.ImageSize}×{c.ImageSize}", nameof(data));
        if (data.Count == 0) throw new ArgumentException("the data set is empty", nameof(data));
        var sink = new ProgressSink(progress, cancellationToken);
        sink.Report("evaluate", 0, data.Count);
        var loader = new DataLoader(data, batchSize, mean: c.Mean, std: c.Std);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        return Evaluator.Evaluate(engine, c.NumClasses, loader.Epoch(0).Select(b => (b.Images, b.Labels)),
            n => sink.Report("evaluate", n, data.Count, $"{n / Math.Max(sw.Elapsed.TotalSeconds, 1e-9):F0} img/s"));
    }

    /// <summary>As <see cref="Evaluate(VisionModel, IImageDataset, IModelHooks?, int, IProgress{OperationProgress}?, CancellationToken)"/> for a quantized model.</summary>
    public static EvalResult Evaluate(QuantizedModel model, IImageDataset data, int batchSize = 256,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Evaluate(model.Model, data, model, batchSize, progress, cancellationToken);
    }

    /// <summary>
    /// The integer runtime for a quantized ViT/DeiT or Swin model: int8 GEMMs for every linear layer and both
    /// attention products whose quantizers have an integer form (the others in float on the exactly fake-quantized
    /// values), compiled once from the model's plan and frozen weights. Its <c>Forward</c> maps normalised images
    /// to logits (use it with the engine overload of Evaluate). Throws ViTQuantException for a float or unfrozen model.
    /// </summary>
    public static Int8Engine CompileInt8(QuantizedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new Int8Engine(Int8Plan.Compile(model));
    }

    /// <summary>
    /// Until the returned scope is disposed, forwards on this thread pack each linear layer's weight for the
    /// GEMM once and reuse it (as ONNX Runtime does at session load) instead of packing it on every call. The
    /// caller promises that no weight changes meanwhile (an evaluation or benchmark loop); weights a hook
    /// replaces per call are never cached. The same numbers either way. Scopes nest.
    /// </summary>
    public static IDisposable FreezeWeights() => WeightPacking.Freeze();

    /// <summary>
    /// Logits [B, classes] of normalised images [B, C, H, W] (the model's mean/std applied), fake-quantized
    /// through <paramref name="hooks"/> when given. Throws ArgumentException naming <paramref name="images"/> for another shape.
    /// </summary>
    public static Tensor Infer(VisionModel model, Tensor images, IModelHooks? hooks = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(images);
        var c = model.Config;
        if (images.Rank != 4 || images.Shape[0] < 1 || images.Shape[1] != c.InChans || images.Shape[2] != c.ImageSize || images.Shape[3] != c.ImageSize)
            throw new ArgumentException($"is {Tensor.ShapeString(images.Shape)}, the model ({c.Architecture}) expects [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]", nameof(images));
        using var _ = Autograd.NoGrad();
        return model.Infer(images, hooks).Clone();
    }

    /// <summary>The most likely class of each image (see <see cref="Infer"/>).</summary>
    public static int[] Predict(VisionModel model, Tensor images, IModelHooks? hooks = null)
        => Ops.ArgMax(Infer(model, images, hooks), 1);

    /// <summary>
    /// Synthesizes a calibration set for <paramref name="model"/> (ViT/DeiT) as <paramref name="settings"/>
    /// say (method gaussian, psaq or mimiq) into <paramref name="outPath"/>, a set file that
    /// <see cref="CalibrationData.SyntheticSet"/> reads. Finished batches are kept as shards beside the output
    /// while it runs; with <paramref name="resumable"/> a failed or cancelled run keeps them and a later call
    /// with the same settings continues after them, otherwise they are deleted. Throws ArgumentException for a
    /// bad <paramref name="outPath"/>, ViTQuantException for invalid settings.
    /// </summary>
    public static SynthesisRunResult Synthesize(VisionModel model, SynthesisSettings settings, string outPath, bool resumable = false,
        bool overwrite = false, IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(settings);
        CheckOutput(outPath, overwrite, nameof(outPath));
        settings = settings.Validated();
        string shards = SynthesisRunner.ShardDirectory(outPath);
        bool hadShards = Directory.Exists(shards);
        if (hadShards && !resumable)
            throw new ArgumentException($"{shards} holds shards of an earlier run; pass resumable: true to continue it, or delete the folder", nameof(outPath));
        var sink = new ProgressSink(progress, cancellationToken);
        string stage = $"synthesize {settings.Method}";
        var synth = Synthesis.Create(settings);
        // No report before the first step: a resumed run's first report already counts the resumed batches,
        // and a display that saw 0 first would count them as this run's work (its rate and ETA).
        sink.ThrowIfCancellationRequested();
        try
        {
            return SynthesisRunner.Run(model, settings, outPath, resume: resumable, overwrite: overwrite, synthesizer: synth,
                progress: p => sink.Report(stage, p.StepsDone, p.StepsTotal,
                    $"batch {p.Batch + 1}/{p.BatchCount}{(p.Attempt > 0 ? $" (attempt {p.Attempt + 1})" : "")} {p.Losses.Describe()}"));
        }
        catch when (!resumable)
        {
            try { if (Directory.Exists(shards)) Directory.Delete(shards, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>ArgumentException naming <paramref name="parameter"/> when an output path is empty, a folder, or an existing file without overwrite.</summary>
    internal static void CheckOutput(string path, bool overwrite, string parameter)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("expected a file path", parameter);
        if (Directory.Exists(path)) throw new ArgumentException($"'{path}' is a folder, expected a file path", parameter);
        if (File.Exists(path) && !overwrite) throw new ArgumentException($"'{path}' already exists; pass overwrite: true to replace it", parameter);
    }

    internal static void CheckFits(IModelConfig c, CalibrationData data, string parameter)
    {
        foreach (var t in data.Batches)
            if (t.Rank != 4 || t.Shape[1] != c.InChans || t.Shape[2] != c.ImageSize || t.Shape[3] != c.ImageSize)
                throw new ArgumentException($"images are {Tensor.ShapeString(t.Shape)}, the model ({c.Architecture}) expects [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]", parameter);
    }
}
