// The quantization methods `vitq compare` (and `vitq demo`) run, each turning a float model and a set of
// images (calibration data, or distillation data for MimiQ) into a model plus the hooks that evaluate
// it, with integer-grid weights. The "-no-…", "-had-…" and "-init-…" names are ablations: ADFQ-ViT with
// one component removed, MimiQ fine-tuning with another L_HAD distance (or none), or with its LSQ steps
// started by the spec's 2·mean|x|/√q_max rule instead of our percentile search (MimiqOptions).
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Algorithms.Qat;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

/// <summary>How long the iterative methods run: ADFQ iterations per unit, MimiQ fine-tuning epochs and peak learning rate.</summary>
internal sealed record MethodBudget(int AdfqIterations, int FineTuneEpochs, float FineTuneLr = MimiqOptions.DefaultLr);

internal static class CompareMethods
{
    public static readonly string[] Names =
    {
        "minmax", "percentile",
        "adfq", "adfq-no-per-patch", "adfq-no-shift-log", "adfq-no-attn-kl", "adfq-no-recon",
        "mimiq", "mimiq-had-off", "mimiq-had-mse", "mimiq-had-l1", "mimiq-had-kl", "mimiq-init-spec",
    };

    /// <summary>True for the methods whose result depends on the seed beyond the choice of images.</summary>
    public static bool FineTunes(string method) => method.StartsWith("mimiq", StringComparison.Ordinal);

    /// <summary>
    /// Quantizes <paramref name="fp"/> (not modified) with <paramref name="method"/> on <paramref name="images"/>.
    /// MimiQ fine-tuning checkpoints to <paramref name="resumePath"/> after each epoch when given (the caller
    /// deletes it once the result is recorded).
    /// </summary>
    public static (VisionTransformer Model, IModelHooks Hooks) Run(string method, VisionTransformer fp, int w, int a,
        List<Tensor> images, ulong seed, MethodBudget budget, string? resumePath = null)
    {
        if (!Names.Contains(method)) throw new ViTQuantException($"unknown method '{method}' ({string.Join(", ", Names)})");
        if (FineTunes(method)) return FineTune(method, fp, w, a, images, seed, budget, resumePath);
        var adfq = method.StartsWith("adfq", StringComparison.Ordinal) ? new AdfqOptions
        {
            Iterations = budget.AdfqIterations, Seed = seed,
            PerPatch = method != "adfq-no-per-patch", ShiftLog = method != "adfq-no-shift-log",
            AttentionKl = method != "adfq-no-attn-kl", Reconstruct = method != "adfq-no-recon",
        } : null;
        var plan = adfq?.CreatePlan(w, a) ?? QuantPresets.Create(method, w, a);
        var student = fp.Clone();
        var qm = new QuantizedModel(student, plan);
        Progress.Run($"{QuantizeCommand.CalibrateLabel(qm.PlanCalibration(images), qm)} {method}", qm.CalibrationPasses * images.Sum(b => b.Shape[0]), rep => { qm.Calibrate(images, n => rep.Update(n)); return 0; });
        if (adfq != null)
        {
            var recon = new AdfqReconstruction(fp, qm, images, adfq);
            int per = adfq.Reconstruct ? adfq.Iterations : 1;
            Progress.Run($"{method} w{w}a{a}", (long)recon.Units.Count * per, rep =>
                recon.Run(pr => rep.Update((long)pr.UnitIndex * per + pr.Iteration, $"{pr.Unit.Name} loss {pr.Loss:F4}")));
        }
        QuantizedCheckpoint.Freeze(qm);
        return (student, qm);
    }

    private static (VisionTransformer, IModelHooks) FineTune(string method, VisionTransformer fp, int w, int a,
        List<Tensor> images, ulong seed, MethodBudget budget, string? resumePath)
    {
        var distance = method switch
        {
            "mimiq-had-off" => HadDistance.Off, "mimiq-had-mse" => HadDistance.Mse,
            "mimiq-had-l1" => HadDistance.L1, "mimiq-had-kl" => HadDistance.Kl, _ => HadDistance.Ssim,
        };
        var opts = new MimiqOptions
        {
            WeightBits = w, ActivationBits = a, Epochs = budget.FineTuneEpochs, Lr = budget.FineTuneLr, Distance = distance, Seed = seed,
            LsqInit = method == "mimiq-init-spec" ? LsqInit.Spec : MimiqOptions.DefaultLsqInit,
        }.Validated();
        var trainer = new MimiqTrainer(fp, images, null, opts);
        var result = Progress.Run($"{method} fine-tune w{w}a{a}", trainer.TotalSteps, rep =>
        {
            trainer.OnStep = st => rep.Update((long)st.Epoch * st.StepsPerEpoch + st.Step + 1, $"loss {st.Loss:F4} (kd {st.Kd:F4}, had {st.Had:F4})");
            return trainer.Run(resumePath);
        });
        QuantizedCheckpoint.Freeze(result.Student);
        return (result.Student.Model.RequireViT("MimiQ fine-tuning"), result.Student);
    }
}
