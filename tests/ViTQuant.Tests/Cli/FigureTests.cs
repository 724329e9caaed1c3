// The analyze figures (ScottPlot): they render headless, at the size asked, and show what they claim —
// the Viridis extremes of the attention maps and their colour bar, the grey input tile, the histogram's
// crimson mean line. Pixels are read back with the library's PNG decoder.
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Cli;
using ViTQuant.IO;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;

namespace ViTQuant.Tests.Cli;

public class FigureTests
{
    private static bool Has(DecodedImage img, Func<byte, byte, byte, bool> pred)
    {
        Assert.Equal(3, img.Channels);
        for (int i = 0; i < img.Pixels.Length; i += 3)
            if (pred(img.Pixels[i], img.Pixels[i + 1], img.Pixels[i + 2])) return true;
        return false;
    }

    private static bool Near(byte r, byte g, byte b, int R, int G, int B, int tol = 12) =>
        Math.Abs(r - R) <= tol && Math.Abs(g - G) <= tol && Math.Abs(b - B) <= tol;

    [Fact]
    public void HeadGrid_ShowsInputAndViridisMapsWithAColourBar()
    {
        var cfg = TinyModels.Config(); // 8×8 grey, 4×4 patch grid, 4 heads
        var images = new Tensor(2, 1, 8, 8);
        // normalised pixels that un-normalise to mid grey (0.5)
        for (int i = 0; i < images.Size; i++) images.Data[i] = (0.5f - cfg.Mean[0]) / cfg.Std[0];
        var maps = new float[2 * 4 * 16];
        for (int k = 0; k < maps.Length; k++) maps[k] = k % 16 == 5 ? 1f : 0f; // one hot cell per head map
        var png = Figures.HeadGrid(images, maps, heads: 4, g: 4, cfg, "test");
        var img = PngReader.Decode(png, "grid");
        Assert.Equal(300 + 150 * 5, img.Width);
        Assert.Equal(140 + 150 * 2, img.Height);
        Assert.True(Has(img, (r, g, b) => Near(r, g, b, 253, 231, 37)), "no Viridis yellow (value 1)");
        Assert.True(Has(img, (r, g, b) => Near(r, g, b, 68, 1, 84)), "no Viridis purple (value 0)");
        Assert.True(Has(img, (r, g, b) => Near(r, g, b, 128, 128, 128, 3)), "no mid-grey input tile");
    }

    [Fact]
    public void Histogram_MarksTheMean()
    {
        var per = Enumerable.Range(0, 40).Select(i => 0.1 + 0.01 * (i % 7)).ToList();
        double mean = per.Average(), std = Math.Sqrt(per.Average(v => (v - mean) * (v - mean)));
        var rep = new AttentionSimilarityReport(per.Count, 2, 4, mean, std, per, new[] { mean, mean }, new[] { std, std }, 0.2, 0.01);
        var img = PngReader.Decode(Figures.Histogram(rep, "test"), "hist");
        Assert.Equal((900, 560), (img.Width, img.Height));
        Assert.True(Has(img, (r, g, b) => Near(r, g, b, 220, 20, 60)), "no crimson mean line");
        Assert.True(Has(img, (r, g, b) => Near(r, g, b, 70, 130, 180)), "no steel-blue bars");
    }
}
