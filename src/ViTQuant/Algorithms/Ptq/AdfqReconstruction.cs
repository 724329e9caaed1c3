// ADFQ-ViT's attention-score enhanced module-wise reconstruction (ADFQ-ViT paper).
//
// Units (AdfqUnit) are reconstructed in forward order. Two residual streams over the calibration set
// are kept: the float network's (teacher) and the quantized network's with every earlier unit already
// reconstructed. For the current unit only, caches hold
//     x_fp = unit input from the float stream       x_q = unit input from the quantized stream
//     O_fp = float unit(x_fp)                        P_fp = its post-softmax probabilities (attention),
//                                                    stored already tempered for the KL term
// Then, for Iterations steps on random mini-batches (seeded), with QDrop's input
// x = mix(x_q, x_fp) (each element float with probability QDropProbability):
//     O_q = quantized unit(x)      (qm's hooks in Quantize mode: AdaRound soft rounding, fake-quantized inputs)
//     L   = Rec(O_q, O_fp) + w(t)·Round(β(t)) + [attention] (1/λ_r)·KL(P_fp ‖ P_q)        (AdfqLoss)
// P_q is the quantized unit's softmax output before its (fixed) post-softmax quantizer. Learned: the
// AdaRound variables V of the unit's weights (Adam, WeightLr, constant) and the learnable steps of the
// quantizers at the unit's layer inputs (per-token Δ, Shift-Log Δ, per-tensor Δ; Adam, StepLr cosine
// to 0). Everything else — model weights, zero points, q/k/v and post-softmax quantizers, other units'
// variables — has RequiresGrad cleared for the duration (restored after). Then the unit's AdaRound
// quantizers are frozen to hard rounding, the weight cache is invalidated, and both streams advance
// through the unit (the quantized one without QDrop, with the final hard-rounded unit).
// Swin runs the same loop over its units (AdfqUnit: patch merging is a unit of its own, the stream is the
// stage's map [Ncal, H, W, C]; window probabilities are cached per image, AdfqUnit.PerImage).
// Memory: two streams [Ncal, N, D] plus the current unit's caches (three [Ncal, N, D], and
// [Ncal, H, N, N] for attention); the network is never re-run from the start.
using System.Diagnostics;
using ViTQuant.Models;
using ViTQuant.Nn;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Ptq;

/// <summary>Progress of one iteration: Loss = Rec + w·Round + KL/λ_r; Round is 0 while the regulariser is off, Kl 0 without the KL term.</summary>
internal sealed record AdfqProgress(AdfqUnit Unit, int UnitIndex, int UnitCount, int Iteration, int Iterations,
                                  float Loss, float Rec, float Round, float Kl, float Beta);

/// <summary>
/// One finished unit: optimisation steps run, wall seconds, the loss of the last step (NaN with none) and
/// Rec of the final hard-rounded unit on the whole calibration set (quantized inputs, no QDrop).
/// </summary>
public sealed record AdfqUnitResult(AdfqUnit Unit, int Iterations, double Seconds, float LastLoss, double CalibrationRec);

/// <summary>Reconstructs a calibrated ADFQ-quantized model unit by unit against its float original.</summary>
internal sealed class AdfqReconstruction
{
    /// <summary>Images per chunk when caches and streams are computed.</summary>
    private const int Chunk = 64;

    private readonly VisionModel _teacher;
    private readonly QuantizedModel _qm;
    private readonly VisionModel _student; // qm.Model
    private readonly int _count;
    private SampleCache? _hFp, _hQ;

    /// <summary>
    /// Prepares reconstruction of <paramref name="qm"/> (built on a clone of <paramref name="teacher"/> and
    /// already calibrated) on the calibration images (normalised batches [B, C, H, W]; copied).
    /// Throws ArgumentException when teacher is qm's own model or their configs differ,
    /// InvalidOperationException when qm is not calibrated or its weights are frozen, ViTQuantException for an
    /// empty calibration set or a batch of the wrong shape.
    /// </summary>
    public AdfqReconstruction(VisionModel teacher, QuantizedModel qm, IReadOnlyList<Tensor> calibration, AdfqOptions options)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(qm);
        ArgumentNullException.ThrowIfNull(calibration);
        ArgumentNullException.ThrowIfNull(options);
        if (ReferenceEquals(teacher, qm.Model)) throw new ArgumentException("the float teacher must be a separate model: quantize a Clone() of it", nameof(teacher));
        if (teacher.Config.ToJson() != qm.Model.Config.ToJson()) throw new ArgumentException("the float teacher and the quantized model have different configurations", nameof(teacher));
        if (qm.WeightsFrozen) throw new InvalidOperationException("the quantized model's weights are already frozen; reconstruct before QuantizedCheckpoint.Freeze");
        if (qm.ActivationQuantizers.Values.Any(q => !q.IsCalibrated) || qm.WeightQuantizers.Values.Any(q => !q.IsCalibrated))
            throw new InvalidOperationException("calibrate the quantized model (QuantizedModel.Calibrate) before reconstruction");
        _teacher = teacher;
        _qm = qm;
        _student = qm.Model;
        Options = options;
        Units = AdfqUnit.For(teacher.Config);
        var c = teacher.Config;
        _count = 0;
        foreach (var b in calibration)
        {
            if (b.Rank != 4 || b.Shape[1] != c.InChans || b.Shape[2] != c.ImageSize || b.Shape[3] != c.ImageSize)
                throw new ViTQuantException($"calibration batch {Tensor.ShapeString(b.Shape)} does not match the model input [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}]");
            _count += b.Shape[0];
        }
        if (_count == 0) throw new ViTQuantException("calibration set is empty");
        var images = new SampleCache(_count, new[] { c.InChans, c.ImageSize, c.ImageSize });
        int at = 0;
        foreach (var b in calibration)
        {
            images.Write(at, b);
            at += b.Shape[0];
        }
        _hFp = _hQ = images; // the patch embedding's input is the float image on both sides
        qm.InvalidateWeights(); // calibration cached soft-rounded weights
    }

    /// <summary>The validated reconstruction settings.</summary>
    public AdfqOptions Options { get; }

    /// <summary>The units in reconstruction order.</summary>
    public IReadOnlyList<AdfqUnit> Units { get; }

    /// <summary>How many units are done.</summary>
    public int CompletedUnits { get; private set; }

    /// <summary>Calibration images.</summary>
    public int CalibrationCount => _count;

    /// <summary>Reconstructs every remaining unit (progress after each iteration).</summary>
    public IReadOnlyList<AdfqUnitResult> Run(Action<AdfqProgress>? progress = null)
    {
        var results = new List<AdfqUnitResult>();
        while (CompletedUnits < Units.Count) results.Add(ReconstructNext(progress));
        return results;
    }

    /// <summary>
    /// Reconstructs the next unit (file header) — or, with Options.Reconstruct off, only rounds its
    /// weights to nearest — then advances both streams past it. Throws InvalidOperationException when all
    /// units are done.
    /// </summary>
    public AdfqUnitResult ReconstructNext(Action<AdfqProgress>? progress = null)
    {
        if (CompletedUnits >= Units.Count) throw new InvalidOperationException("every unit is already reconstructed");
        var sw = Stopwatch.StartNew();
        int index = CompletedUnits;
        var unit = Units[index];
        _qm.Mode = QuantMode.Quantize;
        bool kl = Options.Reconstruct && Options.AttentionKl && unit.ProbsPoint != null;
        var caches = BuildCaches(unit, kl);
        int iters = Options.Reconstruct ? Options.Iterations : 0;
        float last = float.NaN;
        if (iters > 0) last = Optimise(unit, index, caches, kl, progress);
        foreach (var l in unit.WeightLayers)
            if (_qm.WeightQuantizers.TryGetValue(l, out var q) && q is AdaRoundQuantizer a && !a.HardRounding) a.FreezeHardRounding();
        _qm.InvalidateWeights();
        double rec = Advance(unit, caches);
        CompletedUnits++;
        // The unit's caches (1.4 GB on DeiT-Base at 256 images, with the attention targets) are garbage now;
        // the GC would otherwise let them pile up across units (measured: 15.0 GiB resident). Small models: no cost.
        if (caches.XFp.Bytes > BigCache) GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: false);
        return new AdfqUnitResult(unit, iters, sw.Elapsed.TotalSeconds, last, rec);
    }

    private const long BigCache = 64L << 20;

    // KlTarget/KlNegEntropy: the float probabilities already tempered (AdfqLoss.TemperTarget), computed once per image.
    private sealed record Caches(SampleCache XFp, SampleCache XQ, SampleCache OFp, SampleCache? KlTarget, SampleCache? KlNegEntropy);

    /// <summary>x_fp, x_q, O_fp (and P_fp) for every calibration image, chunk by chunk without gradients.</summary>
    private Caches BuildCaches(AdfqUnit unit, bool kl)
    {
        SampleCache? xFp = null, xQ = null, oFp = null, klT = null, klH = null;
        bool shared = unit.Kind == AdfqUnitKind.PatchEmbed;
        using var _ = Autograd.NoGrad();
        for (int start = 0; start < _count; start += Chunk)
        {
            int n = Math.Min(Chunk, _count - start);
            using var scope = TensorArena.Scope();
            var xf = unit.Input(_teacher, _hFp!.Slice(start, n));
            var xq = shared ? xf : unit.Input(_student, _hQ!.Slice(start, n));
            var cap = new ProbsCapture(null, kl ? unit.ProbsPoint : null);
            var of = unit.Forward(_teacher, cap, xf);
            (xFp ??= SampleCache.Like(_count, xf)).Write(start, xf);
            if (!shared) (xQ ??= SampleCache.Like(_count, xq)).Write(start, xq);
            (oFp ??= SampleCache.Like(_count, of)).Write(start, of);
            if (kl)
            {
                var (t, h) = AdfqLoss.TemperTarget(AdfqUnit.PerImage(cap.Captured!, n), Options.KlTemperature);
                (klT ??= SampleCache.Like(_count, t)).Write(start, t);
                (klH ??= SampleCache.Like(_count, h)).Write(start, h);
            }
        }
        return new Caches(xFp!, shared ? xFp! : xQ!, oFp!, klT, klH);
    }

    /// <summary>The optimisation loop of one unit; returns the last step's loss.</summary>
    private float Optimise(AdfqUnit unit, int index, Caches c, bool kl, Action<AdfqProgress>? progress)
    {
        var o = Options;
        var weightQ = unit.WeightLayers.Where(_qm.WeightQuantizers.ContainsKey).Select(l => _qm.WeightQuantizers[l]).ToList();
        var ada = weightQ.OfType<AdaRoundQuantizer>().Where(a => !a.HardRounding).ToList();
        var vParams = ada.Select(a => a.V!).ToList();
        // Steps: the learnable tensors of the unit's layer-input quantizers (and of any non-AdaRound
        // weight quantizer a custom plan may put here). q/k/v and post-softmax points are not inputs.
        var stepParams = unit.InputPoints.Where(_qm.ActivationQuantizers.ContainsKey)
            .SelectMany(p => _qm.ActivationQuantizers[p].LearnableParameters())
            .Concat(weightQ.Where(q => q is not AdaRoundQuantizer).SelectMany(q => q.LearnableParameters()))
            .Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>().ToList();
        if (vParams.Count + stepParams.Count == 0) return float.NaN;

        var everything = _qm.Model.Parameters().Concat(_qm.LearnableParameters().Select(p => p.Param))
            .Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>().ToList();
        var saved = everything.Select(t => t.RequiresGrad).ToArray();
        try
        {
            foreach (var t in everything) t.RequiresGrad = false;
            foreach (var t in vParams.Concat(stepParams)) t.RequiresGrad = true;
            var groups = new List<ParamGroup>();
            if (vParams.Count > 0) groups.Add(new ParamGroup(vParams, lr: o.WeightLr));
            int stepGroup = -1;
            if (stepParams.Count > 0)
            {
                stepGroup = groups.Count;
                groups.Add(new ParamGroup(stepParams, lr: o.StepLr));
            }
            var adam = new Adam(groups);
            var cosine = new CosineAnnealing(o.StepLr, 0, o.Iterations);
            var rng = new Rng(o.Seed).Fork((ulong)index); // each unit's draws depend only on the seed and its position
            int batch = Math.Min(o.BatchSize, _count);
            var perm = Enumerable.Range(0, _count).ToArray();
            var idx = new int[batch];
            bool qdrop = o.QDropProbability > 0f && !ReferenceEquals(c.XQ, c.XFp);
            float last = float.NaN;
            for (int t = 0; t < o.Iterations; t++)
            {
                using var scope = TensorArena.Scope();
                for (int i = 0; i < batch; i++) // partial Fisher–Yates: a uniform subset without repeats
                {
                    int j = i + rng.NextInt(_count - i);
                    (perm[i], perm[j]) = (perm[j], perm[i]);
                    idx[i] = perm[i];
                }
                var xq = c.XQ.Gather(idx);
                var input = qdrop ? AdfqLoss.QDrop(xq, c.XFp.Gather(idx), o.QDropProbability, rng) : xq;
                var cap = new ProbsCapture(_qm, kl ? unit.ProbsPoint : null);
                var oq = unit.Forward(_student, cap, input);
                var rec = AdfqLoss.Reconstruction(oq, c.OFp.Gather(idx));
                var loss = rec;
                float w = o.RoundWeightAt(t), beta = o.BetaAt(t), roundV = 0f, klV = 0f;
                if (w > 0f && ada.Count > 0)
                {
                    var round = AdfqLoss.Rounding(ada, beta);
                    roundV = round.Item();
                    loss = Ops.Add(loss, Ops.Scale(round, w));
                }
                if (kl)
                {
                    var k = AdfqLoss.AttentionKl(AdfqUnit.PerImage(cap.Captured!, batch), c.KlTarget!.Gather(idx), c.KlNegEntropy!.Gather(idx), o.KlTemperature);
                    klV = k.Item();
                    loss = Ops.Add(loss, Ops.Scale(k, 1f / o.KlLambda));
                }
                adam.ZeroGrad();
                if (loss.RequiresGrad) loss.Backward();
                if (stepGroup >= 0) adam.Groups[stepGroup].Lr = cosine.LrAt(t);
                adam.Step();
                last = loss.Item();
                progress?.Invoke(new AdfqProgress(unit, index, Units.Count, t, o.Iterations, last, rec.Item(), roundV, klV, beta));
            }
            adam.ZeroGrad();
            return last;
        }
        finally
        {
            for (int i = 0; i < everything.Count; i++) everything[i].RequiresGrad = saved[i];
        }
    }

    /// <summary>Runs the final quantized unit on x_q, returns its calibration Rec and moves both streams past the unit.</summary>
    private double Advance(AdfqUnit unit, Caches c)
    {
        SampleCache? nextFp = null, nextQ = null;
        bool inPlace = unit.Kind is AdfqUnitKind.Attention or AdfqUnitKind.Mlp;
        double sq = 0;
        int channels = 0;
        using (Autograd.NoGrad())
            for (int start = 0; start < _count; start += Chunk)
            {
                int n = Math.Min(Chunk, _count - start);
                using var scope = TensorArena.Scope();
                var oq = unit.Forward(_student, _qm, c.XQ.Slice(start, n));
                var of = c.OFp.Slice(start, n);
                channels = of.Shape[^1];
                for (int i = 0; i < of.Size; i++)
                {
                    double d = (double)oq.Data[i] - of.Data[i];
                    sq += d * d;
                }
                if (unit.Kind == AdfqUnitKind.Head) continue;
                var hf = unit.Advance(_teacher, unit.Kind == AdfqUnitKind.PatchEmbed ? of : _hFp!.Slice(start, n), of)!;
                var hq = unit.Advance(_student, unit.Kind == AdfqUnitKind.PatchEmbed ? oq : _hQ!.Slice(start, n), oq)!;
                // Blocks rewrite their own rows (each chunk reads its rows before writing them back).
                (inPlace ? _hFp! : (nextFp ??= SampleCache.Like(_count, hf))).Write(start, hf);
                (inPlace ? _hQ! : (nextQ ??= SampleCache.Like(_count, hq))).Write(start, hq);
            }
        if (unit.Kind is AdfqUnitKind.PatchEmbed or AdfqUnitKind.PatchMerging) (_hFp, _hQ) = (nextFp, nextQ); // the stream changes shape
        else if (unit.Kind == AdfqUnitKind.Head) (_hFp, _hQ) = (null, null);
        return sq / ((double)_count * channels);
    }
}

/// <summary>Per-image tensors of one shape, stored contiguously [count, ...row shape].</summary>
internal sealed class SampleCache
{
    private readonly float[] _data;
    private readonly int[] _rowShape;
    private readonly int _row;

    public SampleCache(int count, int[] rowShape)
    {
        _rowShape = rowShape;
        _row = Tensor.Numel(rowShape);
        _data = GC.AllocateUninitializedArray<float>(checked(count * _row));
        Count = count;
    }

    /// <summary>A cache for count images shaped like the rows of batch t [B, ...].</summary>
    /// <summary>Bytes the cache holds.</summary>
    public long Bytes => 4L * _data.Length;

    public static SampleCache Like(int count, Tensor t) => new(count, t.Shape[1..]);

    public int Count { get; }

    /// <summary>Copies batch t [B, ...row shape] into rows start .. start + B.</summary>
    public void Write(int start, Tensor t)
    {
        if (t.Size != t.Shape[0] * _row || !t.Shape.AsSpan(1).SequenceEqual(_rowShape))
            throw new ArgumentException($"cache rows are {Tensor.ShapeString(_rowShape)}, got a batch {Tensor.ShapeString(t.Shape)}");
        t.Span.CopyTo(_data.AsSpan(start * _row, t.Size));
    }

    /// <summary>Rows start .. start + n as a new tensor [n, ...].</summary>
    public Tensor Slice(int start, int n)
    {
        var t = Tensor.Output(Shape(n));
        _data.AsSpan(start * _row, n * _row).CopyTo(t.Span);
        return t;
    }

    /// <summary>The given rows, in order, as a new tensor [idx.Length, ...].</summary>
    public Tensor Gather(int[] idx)
    {
        var t = Tensor.Output(Shape(idx.Length));
        for (int i = 0; i < idx.Length; i++) _data.AsSpan(idx[i] * _row, _row).CopyTo(t.Data.AsSpan(i * _row, _row));
        return t;
    }

    private int[] Shape(int n) => new[] { n }.Concat(_rowShape).ToArray();
}
