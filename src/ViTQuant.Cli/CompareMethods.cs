// The quantization methods `vitq compare` (and `vitq demo`) run, each turning a float model and
// calibration images into a model plus the hooks that evaluate it, with integer-grid weights.
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class CompareMethods
{
    public static readonly string[] Names = { "minmax", "percentile", "adfq" };

    public static (VisionTransformer Model, IModelHooks Hooks) Run(string method, VisionTransformer fp, int w, int a, List<Tensor> calib, ulong seed, int iters)
    {
        var adfq = method == "adfq" ? new AdfqOptions { Iterations = iters, Seed = seed } : null;
        var plan = adfq?.CreatePlan(w, a) ?? QuantPresets.Create(method, w, a);
        var qm = new QuantizedModel(fp.Clone(), plan);
        Progress.Run($"calibrate {method}", calib.Sum(b => b.Shape[0]), rep => { qm.Calibrate(calib, n => rep.Update(n)); return 0; });
        if (adfq != null)
        {
            var recon = new AdfqReconstruction(fp, qm, calib, adfq);
            Progress.Run($"adfq w{w}a{a}", (long)recon.Units.Count * iters, rep =>
                recon.Run(pr => rep.Update((long)pr.UnitIndex * iters + pr.Iteration, $"{pr.Unit.Name} loss {pr.Loss:F4}")));
        }
        QuantizedCheckpoint.Freeze(qm);
        return (qm.Model, qm);
    }
}
