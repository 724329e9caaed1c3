// Supervised training of a ViT or Swin classifier: AdamW, linear warm-up then cosine decay (per step),
// label-smoothed cross-entropy, global gradient-norm clipping, validation after every epoch, and a
// resumable checkpoint written atomically at the end of every epoch. Optionally an exponential moving
// average of the weights (WeightEma) is kept, validated beside the live weights and checkpointed with them.
//
// Determinism: batch order and augmentation depend only on (seed, epoch, sample index) (DataLoader),
// and the model init on the seed, so a run resumed from an epoch checkpoint continues exactly as an
// uninterrupted run with the same seed and thread count would.
using System.Diagnostics;
using System.Text.Json;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Training;

/// <summary>Training hyper-parameters; <see cref="Validated"/> throws ViTQuantException on impossible values.</summary>
internal sealed record TrainConfig
{
    /// <summary>Number of training epochs.</summary>
    public int Epochs { get; init; } = 20;
    /// <summary>Images per step (the last partial batch of an epoch is dropped).</summary>
    public int BatchSize { get; init; } = 128;
    /// <summary>Peak learning rate of AdamW, reached after the warm-up.</summary>
    public float Lr { get; init; } = 1e-3f;
    /// <summary>Learning rate at the start of the warm-up and at the end of the cosine decay.</summary>
    public float MinLr { get; init; } = 1e-5f;
    /// <summary>AdamW decoupled weight decay (not applied to biases, norms, position embeddings, tokens and bias tables).</summary>
    public float WeightDecay { get; init; } = 0.05f;
    /// <summary>Epochs of linear warm-up, in [0, Epochs).</summary>
    public int WarmupEpochs { get; init; } = 1;
    /// <summary>Label smoothing of the cross-entropy, in [0, 1).</summary>
    public float LabelSmoothing { get; init; } = 0.1f;
    /// <summary>Global gradient-norm clip; 0 disables clipping.</summary>
    public float ClipNorm { get; init; } = 1f;
    /// <summary>Seed of batch order and augmentation.</summary>
    public ulong Seed { get; init; }
    /// <summary>Random crop (zero padding, pixels) and horizontal flip; 0 padding disables the crop.</summary>
    public int CropPadding { get; init; } = 2;
    /// <summary>Horizontal flip with probability ½.</summary>
    public bool Flip { get; init; } = true;
    /// <summary>Decay of the weight EMA, updated after every step; 0 keeps no average.</summary>
    public float EmaDecay { get; init; }

    /// <summary>Checks the values; returns this or throws ViTQuantException naming the setting.</summary>
    public TrainConfig Validated()
    {
        void Fail(string m) => throw new ViTQuantException($"training config: {m}");
        if (Epochs < 1) Fail($"--epochs must be at least 1, got {Epochs}");
        if (BatchSize < 1) Fail($"--batch must be at least 1, got {BatchSize}");
        if (!(Lr > 0) || !(MinLr >= 0) || MinLr > Lr) Fail($"learning rates must satisfy 0 <= min-lr <= lr, got lr {Lr}, min-lr {MinLr}");
        if (!(WeightDecay >= 0)) Fail($"weight decay must be >= 0, got {WeightDecay}");
        if (WarmupEpochs < 0 || WarmupEpochs >= Epochs) Fail($"warm-up epochs must be in [0, epochs), got {WarmupEpochs}");
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 1)) Fail($"label smoothing must be in [0, 1), got {LabelSmoothing}");
        if (!(ClipNorm >= 0)) Fail($"clip norm must be >= 0 (0 = off), got {ClipNorm}");
        if (CropPadding < 0) Fail($"crop padding must be >= 0, got {CropPadding}");
        if (!(EmaDecay >= 0 && EmaDecay < 1)) Fail($"--ema decay must be in [0, 1) (0 = off), got {EmaDecay}");
        return this;
    }
}

/// <summary>Per-epoch record of a training run; the EMA fields are set when a weight average is kept.</summary>
public sealed record EpochStats(int Epoch, double TrainLoss, double TrainTop1, double? ValTop1, double? ValLoss, double Seconds,
    double? EmaValTop1 = null, double? EmaValLoss = null);

/// <summary>Supervised training of a classifier: AdamW with warm-up and cosine decay, label smoothing, clipping, per-epoch validation and resumable checkpoints.</summary>
internal sealed class Trainer
{
    private readonly VisionModel _model;
    private readonly TrainConfig _cfg;
    private readonly AdamW _opt;
    private readonly ILrSchedule _schedule;
    private readonly DataLoader _train;
    private readonly DataLoader? _val;
    private readonly List<EpochStats> _history = new();
    private int _startEpoch;

    /// <summary>The weight average, when <see cref="TrainConfig.EmaDecay"/> &gt; 0.</summary>
    public WeightEma? Ema { get; }

    /// <summary>Step callback: (epoch, stepInEpoch, stepsPerEpoch, running loss, running top-1 %).</summary>
    public Action<int, int, int, double, double>? OnStep { get; set; }

    /// <summary>Called after every epoch with its statistics.</summary>
    public Action<EpochStats>? OnEpoch { get; set; }

    /// <summary>Statistics of the finished epochs (including those restored from a resume checkpoint).</summary>
    public IReadOnlyList<EpochStats> History => _history;
    /// <summary>Optimiser steps per epoch (full batches of the training set).</summary>
    public int StepsPerEpoch => _train.BatchCount;

    /// <summary>Prepares loaders, optimiser and schedule for <paramref name="model"/>; <paramref name="val"/> may be null (no validation). Throws ViTQuantException when the data does not fit the model or is smaller than one batch.</summary>
    public Trainer(VisionModel model, IImageDataset train, IImageDataset? val, TrainConfig cfg)
    {
        _model = model;
        _cfg = cfg.Validated();
        var c = model.Config;
        if (train.Channels != c.InChans || train.Height != c.ImageSize || train.Width != c.ImageSize)
            throw new ViTQuantException($"training images are {train.Channels}×{train.Height}×{train.Width}, the model expects {c.InChans}×{c.ImageSize}×{c.ImageSize}");
        if (train.NumClasses > c.NumClasses)
            throw new ViTQuantException($"dataset has {train.NumClasses} classes, the model only {c.NumClasses}");
        Augmentation? aug = cfg.CropPadding > 0 || cfg.Flip ? Transforms.PadCropFlip(cfg.CropPadding, cfg.Flip ? 0.5 : 0.0) : null;
        _train = new DataLoader(train, cfg.BatchSize, shuffle: true, seed: cfg.Seed, augment: aug, dropLast: true, mean: c.Mean, std: c.Std);
        if (_train.BatchCount == 0) throw new ViTQuantException($"training set has {train.Count} images, fewer than one batch of {cfg.BatchSize}");
        if (val != null) _val = new DataLoader(val, 256, mean: c.Mean, std: c.Std);

        // timm's no-weight-decay set: biases, norm scales, position embedding and prefix tokens (ViT), the
        // relative position bias tables (Swin's no_weight_decay_keywords).
        var decay = new List<Tensor>();
        var noDecay = new List<Tensor>();
        foreach (var (name, p) in model.NamedParameters())
            (p.Rank <= 1 || name is "pos_embed" or "cls_token" or "dist_token" || name.EndsWith(".relative_position_bias_table", StringComparison.Ordinal) ? noDecay : decay).Add(p);
        _opt = new AdamW(new[] { new ParamGroup(decay, weightDecay: cfg.WeightDecay), new ParamGroup(noDecay, weightDecay: 0f) }, lr: cfg.Lr, weightDecay: cfg.WeightDecay);
        int steps = cfg.Epochs * _train.BatchCount;
        _schedule = new CosineWithWarmup(cfg.Lr, cfg.WarmupEpochs * _train.BatchCount, steps, cfg.MinLr, cfg.MinLr);
        if (cfg.EmaDecay > 0) Ema = new WeightEma(model, cfg.EmaDecay);
    }

    /// <summary>
    /// Trains until the configured number of epochs, writing the resume checkpoint after each epoch.
    /// When <paramref name="resumePath"/> exists, training continues after its last finished epoch.
    /// </summary>
    public void Run(string? resumePath)
    {
        if (resumePath != null && File.Exists(resumePath)) LoadResume(resumePath);
        for (int epoch = _startEpoch; epoch < _cfg.Epochs; epoch++)
        {
            var sw = Stopwatch.StartNew();
            _model.Train();
            double lossSum = 0; int correct = 0, seen = 0, step = 0;
            foreach (var batch in _train.Epoch(epoch))
            {
                using var arena = TensorArena.Scope(); // recycles this step's activations and gradients
                _schedule.Apply(_opt, epoch * _train.BatchCount + step);
                _opt.ZeroGrad();
                int[] labels = batch.Labels;
                var (logits, l) = _model.ForwardBackward(batch.Images, (chunk, first) =>
                    Ops.CrossEntropy(chunk, labels[first..(first + chunk.Shape[0])], _cfg.LabelSmoothing, meanOver: labels.Length));
                if (_cfg.ClipNorm > 0) GradClip.ClipGradNorm(_model.Parameters(), _cfg.ClipNorm);
                _opt.Step();
                Ema?.Update();
                if (!float.IsFinite(l)) throw new ViTQuantException($"training diverged: loss {l} at epoch {epoch + 1} step {step + 1} (lower --lr)");
                var pred = Ops.ArgMax(logits, 1);
                for (int i = 0; i < pred.Length; i++) if (pred[i] == batch.Labels[i]) correct++;
                lossSum += l * batch.Size; seen += batch.Size; step++;
                OnStep?.Invoke(epoch, step, _train.BatchCount, lossSum / seen, 100.0 * correct / seen);
            }
            _model.Eval();
            EvalResult? v = Validate(), ev = Ema != null ? Ema.WithAveraged(Validate) : null;
            var stats = new EpochStats(epoch + 1, lossSum / seen, 100.0 * correct / seen, v?.Top1, v?.Loss, sw.Elapsed.TotalSeconds, ev?.Top1, ev?.Loss);
            _history.Add(stats);
            if (resumePath != null) SaveResume(resumePath, epoch + 1);
            OnEpoch?.Invoke(stats);
        }
    }

    private EvalResult? Validate() => _val != null ? Evaluator.Evaluate(_model, _val.Epoch(0).Select(b => (b.Images, b.Labels))) : null;

    private void SaveResume(string path, int epochsDone)
    {
        var tensors = _model.StateDict().Select(kv => ("model." + kv.Key, kv.Value))
            .Concat(_opt.SaveState().Select(s => ("optim." + s.Name, s.Value)))
            .Concat(Ema?.State().Select(s => ("ema." + s.Name, s.Value)) ?? []);
        var meta = new Dictionary<string, string>
        {
            ["vitq.format"] = "vitq-train-resume/1",
            [ModelIO.ConfigKey] = _model.Config.ToJson(),
            ["vitq.train_config"] = JsonSerializer.Serialize(_cfg),
            ["vitq.epochs_done"] = epochsDone.ToString(),
            ["vitq.history"] = JsonSerializer.Serialize(_history),
        };
        SafeTensorsWriter.Write(path, tensors, meta);
    }

    private void LoadResume(string path)
    {
        var f = SafeTensorsFile.Read(path);
        if (!f.Metadata.TryGetValue("vitq.format", out var fmt) || fmt != "vitq-train-resume/1")
            throw new ViTQuantException($"{path}: not a vitq training checkpoint");
        if (f.Metadata[ModelIO.ConfigKey] != _model.Config.ToJson())
            throw new ViTQuantException($"{path}: checkpoint was written for a different model configuration");
        var saved = JsonSerializer.Deserialize<TrainConfig>(f.Metadata["vitq.train_config"])!;
        if (saved != _cfg)
            throw new ViTQuantException($"{path}: checkpoint was written with different training settings; use the same flags to resume");
        var model = new Dictionary<string, Tensor>();
        var optim = new Dictionary<string, Tensor>();
        var ema = new Dictionary<string, Tensor>();
        foreach (var n in f.Names)
        {
            if (n.StartsWith("model.")) model[n[6..]] = f.GetTensor(n);
            else if (n.StartsWith("optim.")) optim[n[6..]] = f.GetTensor(n);
            else if (n.StartsWith("ema.")) ema[n[4..]] = f.GetTensor(n);
        }
        _model.LoadStateDict(model, strict: true);
        _opt.LoadState(optim);
        Ema?.LoadState(ema);
        _startEpoch = int.Parse(f.Metadata["vitq.epochs_done"]);
        _history.AddRange(JsonSerializer.Deserialize<List<EpochStats>>(f.Metadata["vitq.history"]) ?? new());
    }
}
