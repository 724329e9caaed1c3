// The figures of `vitq analyze`, drawn with ScottPlot 5 (SkiaSharp underneath) and written as PNG
// through AtomicFile: a histogram of the per-image inter-head similarity with the mean marked, and a
// grid of per-head attention maps with a colour bar. Every figure has a title, labelled axes with
// units, and a legend or colour bar with its scale.
using ScottPlot;
using ViTQuant.Algorithms.Metrics;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

internal static class Figures
{
    /// <summary>A new plot in the font tools/ensure-deps.sh installs (fonts-dejavu-core), so figures look the same everywhere.</summary>
    private static Plot NewPlot()
    {
        var plt = new Plot();
        plt.Font.Set("DejaVu Sans");
        return plt;
    }

    /// <summary>Histogram of the per-image statistic (20 bins over its range), the mean and ±1 std marked, as PNG bytes.</summary>
    public static byte[] Histogram(AttentionSimilarityReport rep, string subtitle)
    {
        const int bins = 20;
        double lo = rep.PerImage.Min(), hi = rep.PerImage.Max();
        if (hi - lo < 1e-6) { lo -= 0.05; hi += 0.05; }
        double w = (hi - lo) / bins;
        var counts = new double[bins];
        foreach (double v in rep.PerImage) counts[Math.Clamp((int)((v - lo) / w), 0, bins - 1)]++;

        var plt = NewPlot();
        if (rep.Std > 0) // first, so the bars are drawn over it
        {
            // ScottPlot's HorizontalSpan covers an x range over the full height.
            var span = plt.Add.HorizontalSpan(rep.Mean - rep.Std, rep.Mean + rep.Std, Colors.Crimson.WithAlpha(0.12));
            span.LegendText = $"± 1 std ({rep.Std:F3})";
        }
        var bars = plt.Add.Bars(Enumerable.Range(0, bins).Select(i => lo + (i + 0.5) * w).ToArray(), counts);
        foreach (var b in bars.Bars) { b.Size = w * 0.95; b.FillColor = Colors.SteelBlue; b.LineWidth = 0; }
        bars.LegendText = $"images ({rep.Count})";
        var mean = plt.Add.VerticalLine(rep.Mean, 2, Colors.Crimson);
        mean.LegendText = $"mean {rep.Mean:F3}";
        plt.Title($"Inter-head attention similarity\n{subtitle}");
        plt.XLabel("per-image mean SSIM between heads i ≠ j (unitless, −1 … 1)");
        plt.YLabel("images (count)");
        plt.Axes.Margins(bottom: 0, top: 0.18); // head room so the legend does not cover the tallest bar
        plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plt.ShowLegend(Alignment.UpperRight);
        return plt.GetImageBytes(900, 560, ImageFormat.Png);
    }

    /// <summary>
    /// Rows: images; columns: the image (grey), then each head's min–max normalised q·kᵀ map over the keys — the
    /// patch grid, or a Swin block's window — (<paramref name="heads"/> maps of side <paramref name="g"/> per image),
    /// on one shared colour scale [0, 1] shown by the colour bar. PNG bytes.
    /// </summary>
    public static byte[] HeadGrid(Tensor images, float[] maps, int heads, int g, IModelConfig cfg, string subtitle)
    {
        int rows = images.Shape[0], S = cfg.ImageSize, C = cfg.InChans, plane = S * S;
        const double gap = 0.12; // between tiles, in tile units
        var plt = NewPlot();
        ScottPlot.Plottables.Heatmap? scale = null;
        for (int b = 0; b < rows; b++)
        {
            double top = -b * (1 + gap);
            // The input image, un-normalised to [0, 1] pixels (RGB shown as its mean: the heat map is one channel).
            var img = new double[S, S];
            for (int i = 0; i < S; i++)
                for (int j = 0; j < S; j++)
                {
                    double v = 0;
                    for (int ch = 0; ch < C; ch++) v += images.Data[(b * C + ch) * plane + i * S + j] * cfg.Std[ch] + cfg.Mean[ch];
                    img[i, j] = Math.Clamp(v / C, 0, 1);
                }
            var hi = plt.Add.Heatmap(img);
            hi.Colormap = new ScottPlot.Colormaps.Grayscale();
            hi.ManualRange = new ScottPlot.Range(0, 1);
            hi.Extent = Tile(0, top, S);
            for (int h = 0; h < heads; h++)
            {
                var m = new double[g, g];
                int off = (b * heads + h) * g * g;
                for (int i = 0; i < g; i++)
                    for (int j = 0; j < g; j++) m[i, j] = maps[off + i * g + j];
                var hm = plt.Add.Heatmap(m);
                hm.Colormap = new ScottPlot.Colormaps.Viridis();
                hm.ManualRange = new ScottPlot.Range(0, 1);
                double left = (h + 1) * (1 + gap);
                hm.Extent = Tile(left, top, g);
                scale ??= hm;
            }
        }
        var bar = plt.Add.ColorBar(scale!);
        bar.Label = "q·k, min–max scaled per head";

        var xs = Enumerable.Range(0, heads + 1).Select(c => c * (1 + gap) + 0.5).ToArray();
        var xl = new[] { "input" }.Concat(Enumerable.Range(0, heads).Select(h => $"head {h}")).ToArray();
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(xs, xl);
        var ys = Enumerable.Range(0, rows).Select(b => -b * (1 + gap) - 0.5).ToArray();
        var yl = Enumerable.Range(0, rows).Select(b => $"image {b}").ToArray();
        plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ys, yl);
        plt.HideGrid();
        plt.Title($"Per-head attention maps of the query token over the {g}×{g} {(cfg is SwinConfig ? "window around it" : "patch grid")}\n{subtitle}");
        plt.XLabel("input image, then one map per attention head");
        plt.YLabel("images");
        plt.Axes.SetLimits(-gap, (heads + 1) * (1 + gap), -rows * (1 + gap) + gap, gap);
        plt.Axes.SquareUnits();
        int width = 300 + 150 * (heads + 1), height = 140 + 150 * rows;
        return plt.GetImageBytes(width, height, ImageFormat.Png);
    }

    /// <summary>
    /// The extent that makes an n×n heat map fill the unit tile at (left, top): ScottPlot places the extent's
    /// edges at the centres of the outer cells, so the extent is the tile shrunk by half a cell each side.
    /// </summary>
    private static CoordinateRect Tile(double left, double top, int n)
    {
        double h = 0.5 / n;
        return new CoordinateRect(left + h, left + 1 - h, top - 1 + h, top - h);
    }

    /// <summary>Writes a figure atomically.</summary>
    public static void Save(string path, byte[] png) => AtomicFile.WriteAllBytes(path, png);
}
