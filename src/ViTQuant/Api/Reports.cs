// What a quantization damaged, as vitq quantize reports it beside the accuracies: per quantization point, the
// SQNR and cosine of the quantized network against its float original on the first images of a data set.
using ViTQuant.Algorithms.Metrics;
using ViTQuant.Data;
using ViTQuant.Models;
using ViTQuant.Quantization;

namespace ViTQuant.Api;

public static partial class Vitq
{
    /// <summary>
    /// The damage report of <paramref name="quantized"/> against <paramref name="floatModel"/> on the first
    /// <paramref name="images"/> images of <paramref name="data"/> (normalised as the model expects), one row per activation
    /// point and weight, most damaged (lowest SQNR) first. A diagnostic: nothing is decided by it. Throws ArgumentException
    /// naming <paramref name="images"/> (&lt; 1) or <paramref name="data"/> (empty, or images of another shape).
    /// </summary>
    public static IReadOnlyList<LayerReport> LayerDamage(VisionModel floatModel, QuantizedModel quantized, IImageDataset data, int images = 128)
    {
        ArgumentNullException.ThrowIfNull(floatModel);
        ArgumentNullException.ThrowIfNull(quantized);
        ArgumentNullException.ThrowIfNull(data);
        if (images < 1) throw new ArgumentException($"is {images}, expected at least 1", nameof(images));
        var c = floatModel.Config;
        if (data.Channels != c.InChans || data.Height != c.ImageSize || data.Width != c.ImageSize)
            throw new ArgumentException($"images are {data.Channels}×{data.Height}×{data.Width}, the model ({c.Architecture}) expects {c.InChans}×{c.ImageSize}×{c.ImageSize}", nameof(data));
        if (data.Count == 0) throw new ArgumentException("the data set is empty", nameof(data));
        var batch = new DataLoader(data, images, mean: c.Mean, std: c.Std, prefetch: 0).Epoch(0).First().Images;
        return QuantReport.Build(floatModel, quantized, batch);
    }
}
