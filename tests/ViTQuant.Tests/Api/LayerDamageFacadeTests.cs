// Vitq.LayerDamage as vitq quantize reports it: one row per activation point and weight, most damaged first,
// coarser quantization more damaging; arguments that do not fit rejected, naming the parameter.
using ViTQuant.Api;
using ViTQuant.Tests.Data;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Api;

public class LayerDamageFacadeTests
{
    private static FunctionDataset Images(int n = 24) => new(n, 1, 8, 8, (i, k) => ((i * 31 + k * 7) % 17) / 17f, classes: 5);

    [Fact]
    public void Rows_CoverActivationsAndWeights_WorstFirst_AndFourBitsDamagesMoreThanEight()
    {
        var model = TinyModels.Model(seed: 3);
        var data = CalibrationData.Gaussian(model.Config, 16, seed: 1);
        var w8 = Vitq.Quantize(model, data, new QuantizeOptions { Method = "minmax", WeightBits = 8, ActivationBits = 8 });
        var w4 = Vitq.Quantize(model, data, new QuantizeOptions { Method = "minmax", WeightBits = 4, ActivationBits = 4 });
        var r8 = Vitq.LayerDamage(model, w8.Model, Images(), images: 16);
        var r4 = Vitq.LayerDamage(model, w4.Model, Images(), images: 16);
        Assert.Contains(r8, l => l.Kind == "activation");
        Assert.Contains(r8, l => l.Kind == "weight");
        Assert.Equal(r8.Select(l => l.Sqnr).Order(), r8.Select(l => l.Sqnr));
        Assert.True(r4[0].Sqnr < r8[0].Sqnr, $"4-bit worst {r4[0].Sqnr:F1} dB is not below 8-bit worst {r8[0].Sqnr:F1} dB");
    }

    [Fact]
    public void BadArguments_AreRejected_NamingTheParameter()
    {
        var model = TinyModels.Model(seed: 3);
        var q = Vitq.Quantize(model, CalibrationData.Gaussian(model.Config, 8), new QuantizeOptions { Method = "minmax", WeightBits = 8, ActivationBits = 8 });
        Assert.Equal("images", Assert.Throws<ArgumentException>(() => Vitq.LayerDamage(model, q.Model, Images(), images: 0)).ParamName);
        Assert.Equal("data", Assert.Throws<ArgumentException>(() => Vitq.LayerDamage(model, q.Model, new FunctionDataset(4, 1, 9, 9, (_, _) => 0f))).ParamName);
        Assert.Equal("data", Assert.Throws<ArgumentException>(() => Vitq.LayerDamage(model, q.Model, Images(0))).ParamName);
    }
}
