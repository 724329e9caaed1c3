using ViTQuant.Api;
using ViTQuant.Models;

namespace ViTQuant.Tests.Models;

/// <summary>The shipped Swin (models/swin_fmnist.safetensors): what models/README.md says of it holds.</summary>
public class ShippedSwinTests
{
    /// <summary>models/swin_fmnist.safetensors, found by walking up from the test binary to the repository root.</summary>
    private static string ShippedPath()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            string p = Path.Combine(d.FullName, "models", "swin_fmnist.safetensors");
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException("models/swin_fmnist.safetensors not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void LoadsAsTheDocumentedArchitectureWithItsClassNames()
    {
        var m = Assert.IsType<SwinTransformer>(Vitq.LoadModel(ShippedPath()));
        var c = (SwinConfig)m.Config;
        var doc = SwinConfig.FashionMnist();
        Assert.Equal((doc.Architecture, doc.ImageSize, doc.PatchSize, doc.EmbedDim, doc.WindowSize),
            (c.Architecture, c.ImageSize, c.PatchSize, c.EmbedDim, c.WindowSize));
        Assert.Equal(doc.Depths, c.Depths);
        Assert.Equal(doc.NumHeads, c.NumHeads);
        Assert.Equal(doc.ClassNames, c.ClassNames);
        Assert.Equal(1_556_006L, m.ParameterCount());
    }

    [Fact]
    public void ClassifiesTheFirstTestImagesAsWellAsItsReportedAccuracySays()
    {
        // 90.59 % on the whole test set; the first 500 images are no easier or harder by more than a few points
        // (one binomial standard error on 500 images is 1.3 points), so 86 % catches a wrong file or a broken load.
        var m = Vitq.LoadModel(ShippedPath());
        var r = Vitq.Evaluate(m, Vitq.OpenDataset(m.Config, "fashion-mnist", "test", limit: 500));
        Assert.Equal(500, r.Count);
        Assert.True(r.Top1 >= 86, $"top-1 {r.Top1:F2} % on the first 500 test images");
    }
}
