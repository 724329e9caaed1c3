// MimiQ's quantization-aware distillation (MimiQ paper): a fake-quantized student learns to
// imitate its own full-precision original on a set of images (synthetic or real — the trainer only sees
// normalised tensors).
//
//   teacher  the float model, evaluation mode, never updated (run under NoGrad)
//   student  QuantizedModel(preset "mimiq") on a clone of the teacher: per-channel symmetric min–max
//            weights re-quantized from their current values at every step, LSQ activations initialised
//            on ONE batch (the first batch of epoch 0, augmented as training sees it; a percentile range
//            search by default, the spec's mean-|x| rule with LsqInit.Spec: MimiqOptions), then every
//            parameter trained: weights, biases, LayerNorm affine, tokens and position embedding, LSQ α, z
//   loss     L = α_KD·T²·KL(softmax(z_T/T) ‖ softmax(z_Q/T)) + γ·L_HAD (+ λ_CE·CE(z_Q, labels))
//   update   SGD, Nesterov momentum 0.9, weight decay 0, lr cosine-decayed to 0 over all steps
//            (MimiqOptions: the default lr and the sweep that chose it)
// Each epoch visits every image once in an order drawn from (seed, epoch); each image is augmented
// with a generator seeded by (seed, epoch, image index). So every random draw is a function of the seed
// and the epoch, and the "RNG position" a checkpoint needs is the number of finished epochs: a run
// resumed from the checkpoint written after epoch e performs exactly the steps an uninterrupted run
// performs (same seed and thread count), and ends with the same model bit for bit.
// Either family: L_HAD pairs the attn.out taps of every block by the config's block prefixes (on Swin,
// per window: HeadAttentionDistillation).
// The trainer returns the FINAL student; it never looks at an evaluation set.
using System.Diagnostics;
using System.Security.Cryptography;
using System.Runtime.InteropServices;
using System.Text.Json;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Qat;

/// <summary>Loss terms of one step (weighted as they enter the loss) and the learning rate it used.</summary>
internal sealed record MimiqStep(int Epoch, int Step, int StepsPerEpoch, float Lr, double Loss, double Kd, double Had, double Ce);

/// <summary>Mean loss terms of one finished epoch (1-based) and its wall time.</summary>
public sealed record MimiqEpoch(int Epoch, double Loss, double Kd, double Had, double Ce, double Seconds);

/// <summary>The fine-tuned student (Quantize mode, weights still float and re-quantized on the fly) and the per-epoch history.</summary>
internal sealed record MimiqResult(QuantizedModel Student, IReadOnlyList<MimiqEpoch> History, int Steps);

/// <summary>MimiQ fine-tuning of a fake-quantized ViT/DeiT or Swin by distillation from its float original (file header).</summary>
internal sealed class MimiqTrainer
{
    /// <summary>Format tag of the resume checkpoint written after every epoch.</summary>
    public const string CheckpointFormat = "vitq-mimiq-resume/1";

    private readonly VisionModel _teacher;
    private readonly IReadOnlyList<Tensor> _images;
    private readonly int[]? _labels;
    private readonly (int Chunk, int Offset)[] _where;
    private readonly MimiqAugmentation? _augment;
    private readonly List<MimiqEpoch> _history = new();
    private readonly ILrSchedule _schedule;
    private Sgd? _opt;
    private int _startEpoch;
    private string? _fingerprint;

    /// <summary>Called after every step.</summary>
    public Action<MimiqStep>? OnStep { get; set; }

    /// <summary>Called after every epoch, after its checkpoint is written.</summary>
    public Action<MimiqEpoch>? OnEpoch { get; set; }

    /// <summary>The validated fine-tuning settings.</summary>
    public MimiqOptions Options { get; }

    /// <summary>The student being trained (its LSQ quantizers are initialised when <see cref="Run"/> starts).</summary>
    public QuantizedModel Student { get; }

    /// <summary>Number of training images.</summary>
    public int ImageCount => _where.Length;
    /// <summary>Optimiser steps per epoch.</summary>
    public int StepsPerEpoch { get; }
    /// <summary>Optimiser steps of the whole run (StepsPerEpoch × Epochs).</summary>
    public int TotalSteps => StepsPerEpoch * Options.Epochs;

    /// <summary>
    /// Prepares fine-tuning of <paramref name="teacher"/> (not modified) on <paramref name="images"/>, a
    /// list of normalised tensors [n_i, C, H, W] taken together, with optional labels (one per image, in
    /// list order). Throws ViTQuantException when there are no images, a tensor does not match the model's
    /// input shape or holds a non-finite value, labels are missing for cross-entropy, of the wrong count or
    /// outside [0, classes), or every loss weight is 0.
    /// </summary>
    public MimiqTrainer(VisionModel teacher, IReadOnlyList<Tensor> images, int[]? labels, MimiqOptions options)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(options);
        Options = options.Validated();
        var c = teacher.Config;
        var where = new List<(int, int)>();
        for (int i = 0; i < images.Count; i++)
        {
            var t = images[i];
            if (t.Rank != 4 || t.Shape[1] != c.InChans || t.Shape[2] != c.ImageSize || t.Shape[3] != c.ImageSize)
                throw new ViTQuantException($"distillation images (tensor {i}) have shape {Tensor.ShapeString(t.Shape)}, the model ({c.Architecture}) expects [N, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
            foreach (float v in t.Span)
                if (!float.IsFinite(v)) throw new ViTQuantException($"distillation images (tensor {i}) contain a non-finite value");
            for (int j = 0; j < t.Shape[0]; j++) where.Add((i, j));
        }
        if (where.Count == 0) throw new ViTQuantException("no distillation images");
        if (labels != null)
        {
            if (labels.Length != where.Count) throw new ViTQuantException($"{labels.Length} labels for {where.Count} distillation images");
            foreach (int y in labels)
                if ((uint)y >= (uint)c.NumClasses) throw new ViTQuantException($"label {y} is outside the model's {c.NumClasses} classes");
        }
        else if (Options.CeWeight > 0) throw new ViTQuantException("--ce-weight needs labelled images; this set has no labels");
        _teacher = teacher;
        _teacher.Eval();
        _images = images;
        _labels = labels;
        _where = where.ToArray();
        if (Options.Augment) _augment = new MimiqAugmentation(c, Options.CropScaleFor(c.ImageSize));
        StepsPerEpoch = (_where.Length + Options.BatchSize - 1) / Options.BatchSize;
        _schedule = new CosineWithWarmup(Options.Lr, 0, TotalSteps, 0);
        Student = new QuantizedModel(teacher.Clone(), Plan(Options));
    }

    /// <summary>The student's quantization plan: the "mimiq" preset with the activation init of <paramref name="o"/>.</summary>
    public static QuantPlan Plan(MimiqOptions o)
    {
        var plan = QuantPresets.Create("mimiq", o.WeightBits, o.ActivationBits, o.FirstLast8Bit);
        if (o.LsqInit == LsqInit.Spec) return plan;
        var range = o.LsqInit switch { LsqInit.MinMax => RangeMethod.MinMax, LsqInit.Percentile => RangeMethod.Percentile, _ => RangeMethod.LpSearch };
        return plan with
        {
            Activations = plan.Activations.Select(r => r.Spec is { Kind: QuantKind.Lsq } s
                ? r with { Spec = s with { RangeInit = true, Range = range, LpNorm = 2f } } : r).ToList(),
        };
    }

    /// <summary>
    /// Fine-tunes for the configured epochs and returns the final student. With
    /// <paramref name="checkpointPath"/>, a resume checkpoint is written atomically after every epoch, and
    /// an existing one is continued after its last finished epoch (it must come from the same teacher,
    /// images and options, else ViTQuantException). Throws ViTQuantException when the loss stops being
    /// finite (the step is not applied).
    /// </summary>
    public MimiqResult Run(string? checkpointPath = null)
    {
        if (checkpointPath != null && File.Exists(checkpointPath)) LoadCheckpoint(checkpointPath);
        else Initialize();
        Student.CacheWeights = false; // the weights change every step
        for (int epoch = _startEpoch; epoch < Options.Epochs; epoch++)
        {
            var sw = Stopwatch.StartNew();
            double loss = 0, kd = 0, had = 0, ce = 0;
            int seen = 0;
            for (int s = 0; s < StepsPerEpoch; s++)
            {
                var (x, y) = Batch(epoch, s);
                var st = Step(epoch, s, x, y);
                int b = x.Shape[0];
                loss += st.Loss * b; kd += st.Kd * b; had += st.Had * b; ce += st.Ce * b; seen += b;
                OnStep?.Invoke(st);
            }
            var stats = new MimiqEpoch(epoch + 1, loss / seen, kd / seen, had / seen, ce / seen, sw.Elapsed.TotalSeconds);
            _history.Add(stats);
            _startEpoch = epoch + 1;
            if (checkpointPath != null) SaveCheckpoint(checkpointPath);
            OnEpoch?.Invoke(stats);
        }
        Student.CacheWeights = true;
        Student.InvalidateWeights();
        Student.Mode = QuantMode.Quantize;
        return new MimiqResult(Student, _history.ToList(), TotalSteps);
    }

    /// <summary>
    /// Initialises the student's LSQ quantizers on one batch (the first batch of epoch 0, as training sees
    /// it) and creates the optimizer; a no-op once done. <see cref="Run"/> calls it; call it earlier to
    /// measure the student before fine-tuning.
    /// </summary>
    public void Initialize()
    {
        if (_opt != null) return;
        Student.Calibrate(new[] { Batch(0, 0).Images }); // LSQ init on one batch (spec §2)
        _opt = CreateOptimizer();
    }

    /// <summary>
    /// The weighted distillation terms α_KD·T²·KL and γ·L_HAD of the current student on
    /// <paramref name="images"/> [N, C, H, W] (no augmentation, no gradient), averaged over the images.
    /// Throws InvalidOperationException before <see cref="Initialize"/> and ViTQuantException for a wrong shape.
    /// </summary>
    public (double Kd, double Had) Measure(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (_opt == null) throw new InvalidOperationException("Measure before Initialize: the student's quantizers are not initialised");
        var c = _teacher.Config;
        if (images.Rank != 4 || images.Shape[1] != c.InChans || images.Shape[2] != c.ImageSize || images.Shape[3] != c.ImageSize || images.Shape[0] == 0)
            throw new ViTQuantException($"images of shape {Tensor.ShapeString(images.Shape)} do not fit the model's [N, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
        int n = images.Shape[0], size = images.Size / n;
        double kd = 0, had = 0;
        using var _ = Autograd.NoGrad();
        for (int b0 = 0; b0 < n; b0 += Options.BatchSize)
        {
            int b = Math.Min(Options.BatchSize, n - b0);
            var x = Tensor.FromArray(images.Data.AsSpan(b0 * size, b * size), b, c.InChans, c.ImageSize, c.ImageSize);
            using var arena = TensorArena.Scope();
            var (k, h) = Losses(x);
            kd += k.Item() * b;
            had += h?.Item() * b ?? 0;
        }
        return (kd / n, had / n);
    }

    /// <summary>Teacher and student forward on x; the weighted KD term and the weighted L_HAD term (null when off).</summary>
    private (Tensor Kd, Tensor? Had, Tensor StudentLogits) LossesCore(Tensor x)
    {
        var o = Options;
        var blocks = _teacher.Config.BlockPrefixes();
        bool useHad = o.HadWeight > 0 && o.Distance != HadDistance.Off;
        Func<string, bool> want = useHad ? HeadAttentionDistillation.IsTap : static _ => false;
        var teacherTaps = new TapRecorder(want);
        Tensor teacherLogits;
        using (Autograd.NoGrad()) teacherLogits = _teacher.Forward(x, teacherTaps);
        var studentTaps = new TapRecorder(want, Student);
        var logits = Student.Model.Forward(x, studentTaps);
        var kd = Ops.Scale(Ops.KlDivergence(logits, teacherLogits, o.Temperature), o.KdWeight);
        Tensor? had = null;
        if (useHad)
        {
            var sl = blocks.Select(p => studentTaps.Taps[$"{p}.attn.out"]).ToList();
            var tl = blocks.Select(p => teacherTaps.Taps[$"{p}.attn.out"]).ToList();
            had = Ops.Scale(HeadAttentionDistillation.Loss(sl, tl, _teacher.Config.NumPrefixTokens, o.Distance), o.HadWeight);
        }
        return (kd, had, logits);
    }

    private (Tensor Kd, Tensor? Had) Losses(Tensor x)
    {
        var (kd, had, _) = LossesCore(x);
        return (kd, had);
    }

    private Sgd CreateOptimizer() =>
        new(Student.Model.Parameters().Concat(Student.LearnableParameters().Select(p => p.Param)), Options.Lr,
            momentum: Options.Momentum, weightDecay: 0f, nesterov: true);

    private MimiqStep Step(int epoch, int s, Tensor x, int[]? labels)
    {
        var o = Options;
        using var arena = TensorArena.Scope(); // this step's activations and gradients are recycled
        _schedule.Apply(_opt!, epoch * StepsPerEpoch + s);
        _opt!.ZeroGrad();
        var (kdTerm, hadTerm, logits) = LossesCore(x);
        // A zero weight drops its term from the graph (its forward is still cheap next to the model's).
        Tensor? total = o.KdWeight > 0 ? kdTerm : null;
        if (hadTerm != null) total = total == null ? hadTerm : Ops.Add(total, hadTerm);
        Tensor? ceTerm = o.CeWeight > 0 ? Ops.Scale(Ops.CrossEntropy(logits, labels!), o.CeWeight) : null;
        if (ceTerm != null) total = total == null ? ceTerm : Ops.Add(total, ceTerm);
        float value = total!.Item();
        if (!float.IsFinite(value))
            throw new ViTQuantException($"MimiQ fine-tuning diverged: loss {value} at epoch {epoch + 1} step {s + 1} (lower --lr)");
        total.Backward();
        if (o.ClipNorm > 0) GradClip.ClipGradNorm(_opt.Groups[0].Params, o.ClipNorm);
        _opt.Step();
        return new MimiqStep(epoch, s, StepsPerEpoch, _opt.Groups[0].Lr, value, kdTerm.Item(), hadTerm?.Item() ?? 0, ceTerm?.Item() ?? 0);
    }

    /// <summary>Batch s of an epoch: images (augmented when enabled) [b, C, H, W] and their labels.</summary>
    internal (Tensor Images, int[]? Labels) Batch(int epoch, int s)
    {
        var c = _teacher.Config;
        int n = _where.Length, b0 = s * Options.BatchSize, b = Math.Min(Options.BatchSize, n - b0);
        var order = EpochOrder(epoch);
        int size = c.InChans * c.ImageSize * c.ImageSize;
        var x = new Tensor(b, c.InChans, c.ImageSize, c.ImageSize);
        var labels = _labels != null ? new int[b] : null;
        float[] xd = x.Data;
        Parallelism.For(0, b, i =>
        {
            int idx = order[b0 + i];
            var (chunk, off) = _where[idx];
            var dst = xd.AsSpan(i * size, size);
            _images[chunk].Data.AsSpan(off * size, size).CopyTo(dst);
            _augment?.Apply(dst, new Rng(DataLoader.Mix(Options.Seed, (ulong)epoch, (ulong)idx)));
        });
        if (labels != null) for (int i = 0; i < b; i++) labels[i] = _labels![order[b0 + i]];
        return (x, labels);
    }

    private int[]? _orderCache;
    private int _orderEpoch = -1;

    private int[] EpochOrder(int epoch)
    {
        if (_orderEpoch == epoch) return _orderCache!;
        var order = Enumerable.Range(0, _where.Length).ToArray();
        new Rng(DataLoader.Mix(Options.Seed ^ 0x5EED0FDE57111A7EUL, (ulong)epoch, 0)).Shuffle(order.AsSpan());
        (_orderCache, _orderEpoch) = (order, epoch);
        return order;
    }

    // ---- resume checkpoints ----

    private void SaveCheckpoint(string path)
    {
        var tensors = new List<(string, Tensor)>();
        foreach (var (name, t) in Student.Model.StateDict()) tensors.Add(("model." + name, t));
        foreach (var (point, q) in Student.ActivationQuantizers)
            foreach (var (name, v) in q.State()) tensors.Add(($"quant.act.{point}.{name}", v));
        foreach (var (name, v) in _opt!.SaveState()) tensors.Add(("optim." + name, v));
        var meta = new Dictionary<string, string>
        {
            [ModelIO.FormatKey] = CheckpointFormat,
            [ModelIO.ConfigKey] = _teacher.Config.ToJson(),
            ["vitq.mimiq_options"] = Options.ToJson(),
            ["vitq.epochs_done"] = _startEpoch.ToString(System.Globalization.CultureInfo.InvariantCulture),
            // Every random draw is a function of (seed, epoch): the generator position is the epoch count.
            ["vitq.rng"] = $"seed {Options.Seed}, epochs done {_startEpoch}",
            ["vitq.fingerprint"] = Fingerprint(),
            ["vitq.history"] = JsonSerializer.Serialize(_history),
        };
        SafeTensorsWriter.Write(path, tensors, meta);
    }

    private void LoadCheckpoint(string path)
    {
        var f = SafeTensorsFile.Read(path);
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v : throw new ViTQuantException($"{path}: not a MimiQ resume checkpoint (no '{key}')");
        if (Meta(ModelIO.FormatKey) != CheckpointFormat) throw new ViTQuantException($"{path}: not a MimiQ resume checkpoint (format '{Meta(ModelIO.FormatKey)}')");
        if (Meta(ModelIO.ConfigKey) != _teacher.Config.ToJson()) throw new ViTQuantException($"{path}: written for a different model configuration");
        if (MimiqOptions.FromJson(Meta("vitq.mimiq_options"), path) != Options)
            throw new ViTQuantException($"{path}: written with different fine-tuning settings; use the same flags to resume");
        if (Meta("vitq.fingerprint") != Fingerprint()) throw new ViTQuantException($"{path}: written for a different teacher or image set");
        if (!int.TryParse(Meta("vitq.epochs_done"), out int done) || done < 1 || done > Options.Epochs)
            throw new ViTQuantException($"{path}: bad epoch count '{Meta("vitq.epochs_done")}'");
        var model = new Dictionary<string, Tensor>();
        var optim = new Dictionary<string, Tensor>();
        var quant = new Dictionary<string, Dictionary<string, Tensor>>();
        foreach (var n in f.Names)
        {
            if (n.StartsWith("model.", StringComparison.Ordinal)) model[n[6..]] = f.GetTensor(n);
            else if (n.StartsWith("optim.", StringComparison.Ordinal)) optim[n[6..]] = f.GetTensor(n);
            else if (n.StartsWith("quant.act.", StringComparison.Ordinal))
            {
                int dot = n.LastIndexOf('.');
                string point = n["quant.act.".Length..dot];
                if (!quant.TryGetValue(point, out var d)) quant[point] = d = new Dictionary<string, Tensor>();
                d[n[(dot + 1)..]] = f.GetTensor(n);
            }
            else throw new ViTQuantException($"{path}: unexpected tensor '{n}'");
        }
        try
        {
            Student.Model.LoadStateDict(model, strict: true);
            foreach (var (point, q) in Student.ActivationQuantizers)
                q.LoadState(quant.TryGetValue(point, out var st) ? st : throw new ViTQuantException($"no state for the activation quantizer at {point}"));
            Student.Mode = QuantMode.Quantize;
            _opt = CreateOptimizer(); // after the quantizers exist: it must hold their α and z tensors
            _opt.LoadState(optim);
        }
        catch (ViTQuantException e) { throw new ViTQuantException($"{path}: {e.Message}"); }
        _history.Clear();
        _history.AddRange(JsonSerializer.Deserialize<List<MimiqEpoch>>(Meta("vitq.history")) ?? new());
        _startEpoch = done;
    }

    /// <summary>SHA-256 over the teacher's weights, the images and the labels (hex).</summary>
    private string Fingerprint()
    {
        if (_fingerprint != null) return _fingerprint;
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, t) in _teacher.StateDict())
        {
            h.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            h.AppendData(MemoryMarshal.AsBytes(t.Span));
        }
        foreach (var t in _images) h.AppendData(MemoryMarshal.AsBytes(t.Span));
        if (_labels != null) h.AppendData(MemoryMarshal.AsBytes(_labels.AsSpan()));
        return _fingerprint = Convert.ToHexStringLower(h.GetHashAndReset());
    }
}
