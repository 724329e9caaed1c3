// Supervised training through the façade (vitq train): a validated options record mirroring the trainer's
// hyper-parameters, the run with progress, cancellation and resume state, and the trained model written
// atomically with its history. The trainer (Algorithms/Training) stays an implementation detail.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ViTQuant.Algorithms.Training;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;

namespace ViTQuant.Api;

/// <summary>
/// Options of <see cref="Vitq.Train"/>: AdamW with linear warm-up then cosine decay, label smoothing, gradient
/// clipping, augmentation and an optional weight average. <see cref="Validated"/> throws ArgumentException naming
/// the property; the façade calls it before it reads or writes anything.
/// </summary>
public sealed record TrainOptions
{
    /// <summary>Passes over the training set, at least 1.</summary>
    public int Epochs { get; init; } = 20;

    /// <summary>Images per optimiser step, at least 1 (the last incomplete batch of an epoch is dropped).</summary>
    public int BatchSize { get; init; } = 128;

    /// <summary>Peak learning rate, positive and finite.</summary>
    public float Lr { get; init; } = 1e-3f;

    /// <summary>Learning rate at the end of the cosine decay (and at the start of the warm-up), in [0, <see cref="Lr"/>].</summary>
    public float MinLr { get; init; } = 1e-5f;

    /// <summary>AdamW decoupled weight decay, at least 0 (biases, norms, position embedding and tokens are not decayed).</summary>
    public float WeightDecay { get; init; } = 0.05f;

    /// <summary>Linear warm-up epochs in [0, <see cref="Epochs"/>); null: 1, or 0 for a one-epoch run.</summary>
    public int? WarmupEpochs { get; init; }

    /// <summary>Label smoothing of the cross-entropy, in [0, 1).</summary>
    public float LabelSmoothing { get; init; } = 0.1f;

    /// <summary>Global gradient-norm clip, at least 0 (0: off).</summary>
    public float ClipNorm { get; init; } = 1f;

    /// <summary>Seed of the batch order and augmentation (and of <see cref="Vitq.CreateModel"/>'s initialisation when the caller uses the same).</summary>
    public ulong Seed { get; init; }

    /// <summary>Random-crop padding in pixels, at least 0 (0: no crop).</summary>
    public int CropPadding { get; init; } = 2;

    /// <summary>Random horizontal flips.</summary>
    public bool Flip { get; init; } = true;

    /// <summary>Decay of an exponential moving average of the weights in [0, 1) (0: off); when on, the average is validated each epoch and written as the model.</summary>
    public float EmaDecay { get; init; }

    /// <summary>This record when every value is in range; otherwise ArgumentException naming the property.</summary>
    public TrainOptions Validated()
    {
        if (Epochs < 1) throw new ArgumentException($"must be at least 1, got {Epochs}", nameof(Epochs));
        if (BatchSize < 1) throw new ArgumentException($"must be at least 1, got {BatchSize}", nameof(BatchSize));
        if (!(Lr > 0) || !float.IsFinite(Lr)) throw new ArgumentException($"must be positive and finite, got {Lr}", nameof(Lr));
        if (!(MinLr >= 0) || MinLr > Lr) throw new ArgumentException($"must be in [0, Lr = {Lr}], got {MinLr}", nameof(MinLr));
        if (!(WeightDecay >= 0)) throw new ArgumentException($"must be >= 0, got {WeightDecay}", nameof(WeightDecay));
        if (WarmupEpochs is int w && (w < 0 || w >= Epochs)) throw new ArgumentException($"must be in [0, Epochs = {Epochs}), got {w}", nameof(WarmupEpochs));
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 1)) throw new ArgumentException($"must be in [0, 1), got {LabelSmoothing}", nameof(LabelSmoothing));
        if (!(ClipNorm >= 0)) throw new ArgumentException($"must be >= 0 (0 = off), got {ClipNorm}", nameof(ClipNorm));
        if (CropPadding < 0) throw new ArgumentException($"must be >= 0, got {CropPadding}", nameof(CropPadding));
        if (!(EmaDecay >= 0 && EmaDecay < 1)) throw new ArgumentException($"must be in [0, 1) (0 = off), got {EmaDecay}", nameof(EmaDecay));
        return this;
    }

    /// <summary>The trainer's settings; the JSON of this record is what the written model's metadata and the resume state carry.</summary>
    internal TrainConfig ToConfig() => new TrainConfig
    {
        Epochs = Epochs, BatchSize = BatchSize, Lr = Lr, MinLr = MinLr, WeightDecay = WeightDecay,
        WarmupEpochs = WarmupEpochs ?? Math.Min(1, Math.Max(0, Epochs - 1)),
        LabelSmoothing = LabelSmoothing, ClipNorm = ClipNorm, Seed = Seed, CropPadding = CropPadding, Flip = Flip, EmaDecay = EmaDecay,
    }.Validated();
}

/// <summary>What a training run will do, known once the data is checked: given to <see cref="Vitq.Train"/>'s onStart before the first step.</summary>
/// <param name="Images">Training images.</param>
/// <param name="StepsPerEpoch">Optimiser steps per epoch (full batches).</param>
/// <param name="TotalSteps">Steps of the whole run, resumed epochs included.</param>
public sealed record TrainPlan(int Images, int StepsPerEpoch, long TotalSteps);

/// <summary>The outcome of <see cref="Vitq.Train"/>.</summary>
/// <param name="Path">The model file written.</param>
/// <param name="History">Statistics of every epoch, those restored from resume state included.</param>
/// <param name="EmaWeights">Whether the written weights (and the model's, after the call) are the exponential moving average.</param>
/// <param name="Seconds">Wall time of this call.</param>
public sealed record TrainResult(string Path, IReadOnlyList<EpochStats> History, bool EmaWeights, double Seconds)
{
    /// <summary>Validation top-1 (%) of the written weights after the last epoch; null without a validation set.</summary>
    public double? FinalValTop1 => EmaWeights ? History[^1].EmaValTop1 : History[^1].ValTop1;
}

public static partial class Vitq
{
    /// <summary>
    /// A freshly initialised model of <paramref name="config"/> (ViT/DeiT or Swin; see ModelConfigs.FromArchitecture for
    /// the known architectures), its weights drawn from <paramref name="seed"/>.
    /// </summary>
    public static VisionModel CreateModel(IModelConfig config, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(config);
        return VisionModel.Create(config, seed);
    }

    /// <summary>
    /// Trains <paramref name="model"/> in place on <paramref name="train"/> (labelled images of the model's input shape),
    /// validating on <paramref name="validation"/> after every epoch when given, and writes it to <paramref name="outPath"/>
    /// (atomically; metadata vitq.train_config, vitq.history, the caller's <paramref name="metadata"/>). With
    /// <paramref name="resumePath"/> the state after each epoch is written there and, when it exists, training continues
    /// after its last finished epoch; it is deleted once the model is written. Calls <paramref name="onStart"/> once the
    /// data is checked, <paramref name="onEpoch"/> after each epoch, and reports stage "train" per step (loss, accuracy,
    /// throughput); cancelling throws OperationCanceledException at the next step with nothing written but the resume state.
    /// Throws ArgumentException naming <paramref name="options"/>' property or a bad <paramref name="outPath"/> before any work,
    /// ViTQuantException when the data does not fit the model, is smaller than one batch, or the loss diverges.
    /// </summary>
    public static TrainResult Train(VisionModel model, IImageDataset train, IImageDataset? validation, TrainOptions options, string outPath,
        string? resumePath = null, bool overwrite = false, IReadOnlyDictionary<string, string>? metadata = null,
        IProgress<OperationProgress>? progress = null, Action<TrainPlan>? onStart = null, Action<EpochStats>? onEpoch = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(options);
        var cfg = options.Validated().ToConfig();
        CheckOutput(outPath, overwrite, nameof(outPath));
        if (resumePath != null && Path.GetFullPath(resumePath) == Path.GetFullPath(outPath))
            throw new ArgumentException("must differ from outPath (the resume state is deleted once the model is written)", nameof(resumePath));
        var sink = new ProgressSink(progress, cancellationToken);
        sink.ThrowIfCancellationRequested();
        var trainer = new Trainer(model, train, validation, cfg);
        long total = (long)cfg.Epochs * trainer.StepsPerEpoch;
        onStart?.Invoke(new TrainPlan(train.Count, trainer.StepsPerEpoch, total));
        var sw = Stopwatch.StartNew();
        long stepsThisRun = 0; // a resumed run starts mid-way: its rate counts only its own steps
        trainer.OnStep = (e, s, n, loss, acc) => sink.Report("train", (long)e * n + s, total, string.Create(CultureInfo.InvariantCulture,
            $"epoch {e + 1}/{cfg.Epochs} loss {loss:F4} acc {acc:F1}% {++stepsThisRun * cfg.BatchSize / Math.Max(sw.Elapsed.TotalSeconds, 1e-9):F0} img/s"));
        if (onEpoch != null) trainer.OnEpoch = onEpoch;
        trainer.Run(resumePath);
        sink.ThrowIfCancellationRequested();
        var meta = new Dictionary<string, string>
        {
            ["vitq.train_config"] = JsonSerializer.Serialize(cfg),
            ["vitq.history"] = JsonSerializer.Serialize(trainer.History),
        };
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) meta[k] = v;
        // With a weight average the written model is the average; the last live weights stay in no file.
        if (trainer.Ema != null) { trainer.Ema.Swap(); meta["vitq.weights"] = $"ema {cfg.EmaDecay}"; }
        ModelIO.Save(model, outPath, meta);
        if (resumePath != null) File.Delete(resumePath);
        return new TrainResult(outPath, trainer.History, trainer.Ema != null, sw.Elapsed.TotalSeconds);
    }
}
