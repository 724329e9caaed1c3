// VisionTransformer.Infer (stage-by-stage arena recycling for evaluation and calibration) computes
// exactly what Forward computes, float and fake-quantized, and reuses its buffers across batches.
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Models;

public class InferTests
{
    private static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };

    [Theory]
    [InlineData("float")]
    [InlineData("minmax")]
    [InlineData("adfq")]
    public void InferEqualsForwardBitForBit(string method)
    {
        var fp = new VisionTransformer(Tiny, seed: 5);
        var rng = new Rng(2);
        QuantizedModel? qm = null;
        if (method != "float")
        {
            qm = new QuantizedModel(fp.Clone(), QuantPresets.Create(method, 4, 4));
            qm.Calibrate(new[] { Tensor.Randn(rng, 1f, 16, 1, 28, 28) });
        }
        var model = qm?.Model ?? fp;
        var x = Tensor.Randn(rng, 1f, 12, 1, 28, 28); // [12, 50, 32] tokens: pooled buffers, not small ones
        float[] expected;
        using (Autograd.NoGrad()) expected = model.Forward(x, qm).ToArray();
        for (int round = 0; round < 3; round++) // later rounds run on recycled (dirty, then zeroed) buffers
            using (TensorArena.Scope())
                Assert.Equal(expected, model.Infer(x, qm).ToArray());
        Assert.Equal(expected, model.Infer(x, qm).ToArray()); // outside any scope
    }

    [Fact]
    public void InferRefusesAWrongInputShape()
    {
        var m = new VisionTransformer(Tiny, seed: 1);
        Assert.Throws<ArgumentException>(() => m.Infer(Tensor.Zeros(2, 3, 28, 28)));
        Assert.Throws<ArgumentException>(() => m.Infer(Tensor.Zeros(5)));
    }
}
