// The quantization methods of the toolkit (vitq compare, vitq demo and Vitq.Quantize), each turning a
// float model and a set of images (calibration data, or distillation data for MimiQ) into a frozen
// quantized model with integer-grid weights. The "-no-…", "-had-…" and "-init-…" names are ablations:
// ADFQ-ViT with one component removed, MimiQ fine-tuning with another L_HAD distance (or none), or with
// its LSQ steps started by the spec's 2·mean|x|/√q_max rule instead of our percentile search (MimiqOptions).
using System.Globalization;
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Algorithms.Qat;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Api;

/// <summary>A frozen quantized model and the integer codes of its weights (what a checkpoint stores).</summary>
internal sealed record FrozenModel(QuantizedModel Model, Dictionary<string, (sbyte[]? Signed, byte[]? Unsigned, AffineGrid Grid)> Codes,
    IReadOnlyList<PointCalibration> Calibration, IReadOnlyList<AdfqUnitResult>? AdfqUnits)
{
    /// <summary>Freezes a calibrated or fine-tuned model, its calibration summary taken first.</summary>
    public static FrozenModel Of(QuantizedModel qm)
    {
        var calibration = PointCalibration.Of(qm);
        return new FrozenModel(qm, QuantizedCheckpoint.Freeze(qm), calibration, null);
    }
}

/// <summary>The method registry: names, and running one method on a model.</summary>
public static class QuantizationMethods
{
    /// <summary>Every method name, main methods first, then the ablations.</summary>
    public static IReadOnlyList<string> Names { get; } = new[]
    {
        "minmax", "percentile",
        "adfq", "adfq-no-per-patch", "adfq-no-shift-log", "adfq-no-attn-kl", "adfq-no-recon",
        "mimiq", "mimiq-had-off", "mimiq-had-mse", "mimiq-had-l1", "mimiq-had-kl", "mimiq-init-spec",
    };

    /// <summary>True for the methods whose result depends on the seed beyond the choice of images (the fine-tuning ones).</summary>
    public static bool FineTunes(string method) => method.StartsWith("mimiq", StringComparison.Ordinal);

    /// <summary>
    /// As <see cref="Vitq.Quantize"/>, resumably: MimiQ fine-tuning checkpoints to <paramref name="resumePath"/>
    /// after each epoch when it is given and continues from it when it exists (the caller deletes it once the
    /// result is recorded; vitq compare and vitq demo keep one per cell). Throws as <see cref="Vitq.Quantize"/>.
    /// </summary>
    public static QuantizationResult Run(VisionModel model, CalibrationData data, QuantizeOptions options, string? resumePath = null,
        IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        options = options.Validated();
        Vitq.CheckFits(model.Config, data, nameof(data));
        cancellationToken.ThrowIfCancellationRequested();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var frozen = Run(model, data.BatchList, options, resumePath, new ProgressSink(progress, cancellationToken));
        return new QuantizationResult(frozen, options, sw.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// Quantizes <paramref name="fp"/> (not modified) with <paramref name="o"/>.Method on <paramref name="images"/>
    /// and freezes the weights onto their integer grids. MimiQ fine-tuning checkpoints to
    /// <paramref name="resumePath"/> after each epoch when given (the caller deletes it once the result is
    /// recorded). Reports stages "calibrate METHOD", one "METHOD UNIT" per ADFQ-ViT reconstruction unit and
    /// "METHOD fine-tune wXaY"; cancellation is checked at every report.
    /// </summary>
    internal static FrozenModel Run(VisionModel fp, List<Tensor> images, QuantizeOptions o, string? resumePath, ProgressSink progress)
    {
        string method = o.Method;
        if (!Names.Contains(method)) throw new ViTQuantException($"unknown method '{method}' ({string.Join(", ", Names)})");
        int w = o.WeightBits, a = o.ActivationBits;
        if (FineTunes(method)) return FineTune(fp, images, o, resumePath, progress);
        var adfq = o.Adfq ?? (method.StartsWith("adfq", StringComparison.Ordinal) ? new AdfqOptions
        {
            Iterations = o.AdfqIterations, Seed = o.Seed,
            PerPatch = method != "adfq-no-per-patch", ShiftLog = method != "adfq-no-shift-log",
            AttentionKl = method != "adfq-no-attn-kl", Reconstruct = method != "adfq-no-recon",
        } : null);
        var plan = adfq?.CreatePlan(w, a, o.FirstLast8Bit) ?? QuantPresets.Create(method, w, a, o.FirstLast8Bit);
        if (o.CalibrationSampleSize > 0)
            plan = (plan with { Activations = plan.Activations.Select(r => r.Spec == null ? r : r with { Spec = r.Spec with { SampleSize = o.CalibrationSampleSize } }).ToArray() }).Validated();
        var qm = new QuantizedModel(fp.Clone(), plan) { CalibrationBlocksPerPass = o.CalibrationBlocksPerPass };
        int passes = qm.PlanCalibration(images); // names the passes when one would not fit the memory budget
        string calibrate = passes == 1 ? $"calibrate {method}"
            : $"calibrate {method} ({passes} passes of ≤ {qm.CalibrationBytesPerPass / 1048576.0:F0} MB statistics)";
        long total = passes * images.Sum(b => (long)b.Shape[0]);
        progress.Report(calibrate, 0, total);
        qm.CalibrateReporting(images, n => progress.Report(calibrate, n, total), (done, points) => progress.Report($"{calibrate} ranges", done, points));
        var calibration = PointCalibration.Of(qm); // as calibrated, before any reconstruction learns the steps
        List<AdfqUnitResult>? units = null;
        if (adfq != null)
        {
            var recon = new AdfqReconstruction(fp, qm, images, adfq);
            int per = adfq.Reconstruct ? adfq.Iterations : 1;
            units = new List<AdfqUnitResult>();
            while (recon.CompletedUnits < recon.Units.Count)
            {
                string stage = $"{method} {recon.Units[recon.CompletedUnits].Name}";
                progress.Report(stage, 0, per);
                var res = recon.ReconstructNext(p => progress.Report(stage, p.Iteration + 1, per,
                    string.Create(CultureInfo.InvariantCulture, $"loss {p.Loss:G4} (rec {p.Rec:G4}, round {p.Round:G4} β {p.Beta:F1}, kl {p.Kl:G4})")));
                progress.Report(stage, per, per, string.Create(CultureInfo.InvariantCulture, $"calibration rec {res.CalibrationRec:G4}"));
                units.Add(res);
            }
        }
        progress.ThrowIfCancellationRequested();
        return new FrozenModel(qm, QuantizedCheckpoint.Freeze(qm), calibration, units);
    }

    private static FrozenModel FineTune(VisionModel fp, List<Tensor> images, QuantizeOptions o, string? resumePath, ProgressSink progress)
    {
        string method = o.Method;
        var distance = method switch
        {
            "mimiq-had-off" => HadDistance.Off, "mimiq-had-mse" => HadDistance.Mse,
            "mimiq-had-l1" => HadDistance.L1, "mimiq-had-kl" => HadDistance.Kl, _ => HadDistance.Ssim,
        };
        var opts = new MimiqOptions
        {
            WeightBits = o.WeightBits, ActivationBits = o.ActivationBits, FirstLast8Bit = o.FirstLast8Bit, Epochs = o.FineTuneEpochs, Lr = o.FineTuneLr, Distance = distance, Seed = o.Seed,
            LsqInit = method == "mimiq-init-spec" ? LsqInit.Spec : MimiqOptions.DefaultLsqInit,
        }.Validated();
        var trainer = new MimiqTrainer(fp, images, null, opts);
        string stage = $"{method} fine-tune w{o.WeightBits}a{o.ActivationBits}";
        progress.Report(stage, 0, trainer.TotalSteps);
        trainer.OnStep = st => progress.Report(stage, (long)st.Epoch * st.StepsPerEpoch + st.Step + 1, trainer.TotalSteps,
            $"loss {st.Loss:F4} (kd {st.Kd:F4}, had {st.Had:F4})");
        var result = trainer.Run(resumePath);
        progress.ThrowIfCancellationRequested();
        return FrozenModel.Of(result.Student);
    }
}
