// The quantization methods `vitq compare` can run, each turning a float model and calibration
// images into a model plus the hooks that evaluate it.
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class CompareMethods
{
    public static readonly string[] Names = { "minmax", "percentile" };

    public static (VisionTransformer Model, IModelHooks Hooks) Run(string method, VisionTransformer fp, int w, int a, List<Tensor> calib, ulong seed, int iters)
    {
        var qm = new QuantizedModel(fp.Clone(), QuantPresets.Create(method, w, a));
        qm.Calibrate(calib);
        QuantizedCheckpoint.Freeze(qm);
        return (qm.Model, qm);
    }
}
