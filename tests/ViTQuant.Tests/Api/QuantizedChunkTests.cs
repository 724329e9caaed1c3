// What Vitq.Quantize returns evaluates in chunks of images (IImageLocalHooks, VisionModel.Infer), for every method.
using ViTQuant.Api;
using ViTQuant.Models;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Api;

public class QuantizedChunkTests
{
    [Theory]
    [InlineData("minmax")]
    [InlineData("percentile")]
    [InlineData("adfq")]
    public void EveryMethodsResultIsImageLocal(string method)
    {
        var model = TinyModels.Model(seed: 3);
        var q = Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, 8, seed: 1),
            new QuantizeOptions { Method = method, WeightBits = 4, ActivationBits = 4 });
        Assert.True(((IImageLocalHooks)q.Model).ImageLocal, $"{method}: mode {q.Model.Mode}, weights frozen {q.Model.WeightsFrozen}");
    }
}
