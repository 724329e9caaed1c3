// MimiQ fine-tuning set up from a teacher, distillation images and MimiqOptions (spec: the student's
// weights and activations quantized with learnable LSQ steps, distilled from the float teacher by logit
// KD plus head-wise attention distillation). vitq quantize --method mimiq and the "mimiq" methods of the
// registry run through here; the names the command line takes for the L_HAD distance and the LSQ
// initialisation are parsed here too, so a C# caller and the CLI accept the same words.
using System.Diagnostics;
using System.Globalization;
using ViTQuant.Algorithms.Qat;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Api;

/// <summary>
/// A fine-tuned MimiQ student with its training history. Its weights are still fake-quantized through the learned
/// steps: QuantizedCheckpoint.Freeze puts them on their integer grids (and returns the codes a checkpoint stores).
/// </summary>
/// <param name="Student">The fake-quantized student: <c>Student.Model</c> is the network.</param>
/// <param name="History">One entry per epoch run (a resumed run includes the epochs before it).</param>
/// <param name="Steps">Optimiser steps in all.</param>
/// <param name="Seconds">Wall time of this call's fine-tuning.</param>
public sealed record MimiqFineTuneResult(QuantizedModel Student, IReadOnlyList<MimiqEpoch> History, int Steps, double Seconds);

/// <summary>The size of a fine-tuning run, known once the trainer has checked the images and options.</summary>
public sealed record MimiqFineTunePlan(int Images, int StepsPerEpoch, int TotalSteps);

/// <summary>MimiQ distillation fine-tuning with progress, cancellation and an optional resume file.</summary>
public static class MimiqFineTuning
{
    /// <summary>The L_HAD distance names: ssim, mse, l1, kl, off. Throws ViTQuantException naming --had-distance otherwise.</summary>
    public static HadDistance ParseDistance(string name) => name switch
    {
        "ssim" => HadDistance.Ssim, "mse" => HadDistance.Mse, "l1" => HadDistance.L1, "kl" => HadDistance.Kl, "off" => HadDistance.Off,
        _ => throw new ViTQuantException($"--had-distance: unknown distance '{name}' (ssim, mse, l1, kl, off)"),
    };

    /// <summary>The LSQ step initialisations: spec, minmax, percentile, mse. Throws ViTQuantException naming --lsq-init otherwise.</summary>
    public static LsqInit ParseLsqInit(string name) => name switch
    {
        "spec" => LsqInit.Spec, "minmax" => LsqInit.MinMax, "percentile" => LsqInit.Percentile, "mse" => LsqInit.Mse,
        _ => throw new ViTQuantException($"--lsq-init: unknown initialisation '{name}' (spec, minmax, percentile, mse)"),
    };

    /// <summary>
    /// Fine-tunes a MimiQ student of <paramref name="teacher"/> (not modified) on <paramref name="data"/>
    /// (with its labels when <paramref name="options"/>.CeWeight &gt; 0). With
    /// <paramref name="resumePath"/> the trainer checkpoints there after each epoch and continues from it when it
    /// exists (the caller deletes it once the result is saved). Reports stage "mimiq fine-tune" per step and
    /// calls <paramref name="onStart"/> once the set-up is validated, <paramref name="onEpoch"/> after each epoch; cancellation is checked at every step (a resume file
    /// keeps the last finished epoch). Throws ViTQuantException for invalid options, images that do not fit the
    /// teacher, or a diverging loss.
    /// </summary>
    public static MimiqFineTuneResult Run(VisionModel teacher, CalibrationData data, MimiqOptions options, string? resumePath = null,
        IProgress<OperationProgress>? progress = null, Action<MimiqFineTunePlan>? onStart = null, Action<MimiqEpoch>? onEpoch = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        options = options.Validated();
        Vitq.CheckFits(teacher.Config, data, nameof(data));
        var sink = new ProgressSink(progress, cancellationToken);
        var trainer = new MimiqTrainer(teacher, data.BatchList, data.Labels, options);
        onStart?.Invoke(new MimiqFineTunePlan(trainer.ImageCount, trainer.StepsPerEpoch, trainer.TotalSteps));
        var sw = Stopwatch.StartNew();
        long stepsThisRun = 0;
        sink.Report("mimiq fine-tune", 0, trainer.TotalSteps);
        trainer.OnStep = s => sink.Report("mimiq fine-tune", (long)s.Epoch * s.StepsPerEpoch + s.Step + 1, trainer.TotalSteps, string.Create(CultureInfo.InvariantCulture,
            $"epoch {s.Epoch + 1}/{options.Epochs} loss {s.Loss:F4} (kd {s.Kd:F4}, had {s.Had:F4}{(options.CeWeight > 0 ? $", ce {s.Ce:F4}" : "")}) lr {s.Lr:G3} "
            + $"{++stepsThisRun / Math.Max(sw.Elapsed.TotalSeconds, 1e-9):F1} steps/s"));
        if (onEpoch != null) trainer.OnEpoch = onEpoch;
        var result = trainer.Run(resumePath);
        sink.ThrowIfCancellationRequested();
        return new MimiqFineTuneResult(result.Student, result.History, result.Steps, sw.Elapsed.TotalSeconds);
    }
}
