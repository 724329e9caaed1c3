using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Models;

// VisionTransformer.Infer (per-stage scopes, residual sums written into ping-pong buffers, GELU in place)
// computes exactly what Forward computes: the same ops in the same order, bit for bit.
public class ViTInferTests
{
    [Theory]
    [InlineData("vit_fmnist", 3)]
    [InlineData("deit_tiny_patch16_224", 1)]
    public void InferEqualsForwardBitForBit(string arch, int batch)
    {
        var m = new VisionTransformer(ViTConfig.FromArchitecture(arch), 5);
        var c = m.Config;
        var x = Tensor.Randn(new Rng(6), 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        float[] forward, forwardNoGrad, infer;
        using (TensorArena.Scope()) forward = m.Forward(x).ToArray();
        using (TensorArena.Scope())
        using (Autograd.NoGrad()) forwardNoGrad = m.Forward(x).ToArray();
        using (TensorArena.Scope()) infer = m.Infer(x).ToArray();
        Assert.Equal(forward, forwardNoGrad);
        Assert.Equal(forward, infer);
    }
}
