// The fine-tuning augmentation: torchvision's crop-box rule, bilinear resize, hue rotation, constants
// preserved by the linear operations, reproducibility from the generator, and colour operations only
// for 3-channel models.
using ViTQuant.Algorithms.Qat;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Qat;

public class MimiqAugmentationTests
{
    private static ViTConfig Grey => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 1, NumHeads = 4 };

    private static ViTConfig Rgb => new() { ImageSize = 32, PatchSize = 8, InChans = 3, NumClasses = 10, EmbedDim = 32, Depth = 1, NumHeads = 4 };

    [Fact]
    public void CropBoxesStayInsideAndCoverTheScaleRange()
    {
        var rng = new Rng(1);
        double minFrac = 1, maxFrac = 0;
        for (int i = 0; i < 2000; i++)
        {
            var (top, left, h, w) = MimiqAugmentation.CropBox(28, 28, 0.5, rng);
            Assert.True(top >= 0 && left >= 0 && top + h <= 28 && left + w <= 28 && h > 0 && w > 0);
            double frac = h * w / 784.0, ratio = (double)w / h;
            // Rounding of w and h moves area and ratio a little outside the drawn (0.5, 1) and (3/4, 4/3).
            Assert.True(frac > 0.42 && frac <= 1 && ratio > 0.65 && ratio < 1.5, $"{h}x{w}");
            minFrac = Math.Min(minFrac, frac);
            maxFrac = Math.Max(maxFrac, frac);
        }
        Assert.True(minFrac < 0.55 && maxFrac > 0.9, $"area fractions {minFrac:F2}..{maxFrac:F2}");
    }

    [Fact]
    public void BilinearResizeMatchesHandValues()
    {
        // 2×2 window [[0, 1], [2, 3]] to 4×4 with align_corners = False: source coordinate (x + 0.5)/2 − 0.5.
        var src = new float[] { 0, 1, 9, 2, 3, 9, 9, 9, 9 };
        var dst = new float[16];
        MimiqAugmentation.ResizeBilinear(src, 3, 0, 0, 2, 2, dst, 4);
        Assert.Equal(new float[] { 0, 0.25f, 0.75f, 1, 0.5f, 0.75f, 1.25f, 1.5f, 1.5f, 1.75f, 2.25f, 2.5f, 2, 2.25f, 2.75f, 3 }, dst);
        // The whole image at its own size is the identity.
        var img = Enumerable.Range(0, 9).Select(i => (float)i * i).ToArray();
        var same = new float[9];
        MimiqAugmentation.ResizeBilinear(img, 3, 0, 0, 3, 3, same, 3);
        Assert.Equal(img, same);
    }

    [Fact]
    public void HueShiftRotatesPrimaries()
    {
        // One pixel per primary, planes R, G, B; a shift of 1/3 turns red into green, green into blue.
        var img = new float[] { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
        var orig = (float[])img.Clone();
        MimiqAugmentation.ShiftHue(img, 3, 0f);
        Assert.Equal(orig, img.Select(v => MathF.Round(v, 5)).ToArray()); // HSV round trip: float round-off only
        MimiqAugmentation.ShiftHue(img, 3, 1f / 3);
        Assert.Equal(new float[] { 0, 0, 1, 1, 0, 0, 0, 1, 0 }, img.Select(v => MathF.Round(v, 5)).ToArray());
    }

    [Fact]
    public void GreyImagesKeepConstantsAndAreReproducible()
    {
        var aug = new MimiqAugmentation(Grey, 0.5);
        Assert.Equal(3, aug.BlurKernel);
        var flat = Enumerable.Repeat(0.7f, 784).ToArray();
        aug.Apply(flat, new Rng(3));
        Assert.All(flat, v => Assert.Equal(0.7f, v, 5)); // crop, flip and blur average with weights summing to 1

        var rng = new Rng(4);
        var img = new float[784];
        rng.FillNormal(img, 0, 1);
        var a = (float[])img.Clone();
        var b = (float[])img.Clone();
        aug.Apply(a, new Rng(10));
        aug.Apply(b, new Rng(10));
        Assert.Equal(a, b);
        var c = (float[])img.Clone();
        aug.Apply(c, new Rng(11));
        Assert.NotEqual(a, c);
        Assert.NotEqual(img, a);
        Assert.Throws<ArgumentException>(() => aug.Apply(new float[100], new Rng(1)));
        Assert.Throws<ViTQuantException>(() => new MimiqAugmentation(Grey, 0));
    }

    [Fact]
    public void ColourImagesStayInTheNormalisedImageRange()
    {
        var cfg = Rgb;
        var aug = new MimiqAugmentation(cfg, 0.08);
        Assert.Equal(3, aug.BlurKernel);
        var rng = new Rng(5);
        int plane = 32 * 32;
        bool changedColour = false;
        for (int trial = 0; trial < 20; trial++)
        {
            // A valid image: [0, 1] pixels, normalised.
            var img = new float[3 * plane];
            rng.FillUniform(img, 0, 1);
            ViTQuant.Data.Transforms.Normalize(img, 3, cfg.Mean, cfg.Std);
            var before = (float[])img.Clone();
            aug.Apply(img, new Rng((ulong)trial));
            for (int ch = 0; ch < 3; ch++)
                for (int i = 0; i < plane; i++)
                {
                    float px = img[ch * plane + i] * cfg.Std[ch] + cfg.Mean[ch];
                    Assert.InRange(px, -1e-4f, 1 + 1e-4f); // colour ops clamp; crop and blur are convex combinations
                }
            // Colour jitter or greyscale change the per-channel means relative to each other.
            double d0 = img.Take(plane).Average() - before.Take(plane).Average();
            double d1 = img.Skip(plane).Take(plane).Average() - before.Skip(plane).Take(plane).Average();
            if (Math.Abs(d0 - d1) > 0.05) changedColour = true;
        }
        Assert.True(changedColour);
    }
}
