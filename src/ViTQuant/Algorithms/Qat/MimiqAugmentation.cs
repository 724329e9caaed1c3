// Per-image augmentation of the distillation images (MimiQ paper), torchvision's tensor semantics:
//   1. RandomResizedCrop(size, scale = (s_min, 1), ratio = (3/4, 4/3)), bilinear, align_corners = False
//      (the crop is never larger than the image, so the resize only upsamples and antialiasing is moot)
//   2. RandomHorizontalFlip(p = 0.5)
//   3. RandomApply(ColorJitter(brightness 0.8, contrast 0.8, saturation 0.8, hue 0.2), p = 0.8):
//      the four adjustments in a random order, factors b, c, s ~ U(0.2, 1.8), h ~ U(−0.2, 0.2)
//   4. RandomGrayscale(p = 0.2)  (ITU-R 601 weights 0.2989, 0.587, 0.114, replicated to 3 channels)
//   5. GaussianBlur(σ ~ U(0.1, 2.0)), reflect padding, separable
// The images live in the model's normalised space. Crop, flip and blur are linear with weights that sum
// to 1, so they commute with the per-channel normalisation and run on the normalised values; the colour
// operations (3-channel models only — skipped for single-channel ones, as the spec says) run on the
// un-normalised [0, 1] image, clamped as torchvision clamps float images, and are normalised back.
// *choice*: the spec names no blur kernel size or probability: the kernel is 10% of the image side made
// odd (at least 3; SimCLR's convention, 23 at 224 px, 3 at 28 px) and the blur is always applied.
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Qat;

/// <summary>MimiQ's fine-tuning augmentation for one model geometry; reproducible from the Rng it is given.</summary>
internal sealed class MimiqAugmentation
{
    private readonly int _c, _size;
    private readonly float[] _mean, _std;

    /// <summary>Smallest crop area fraction.</summary>
    public double CropScaleMin { get; }

    /// <summary>Side of the blur kernel (odd).</summary>
    public int BlurKernel { get; }

    /// <summary>Throws ViTQuantException for a crop scale outside (0, 1].</summary>
    public MimiqAugmentation(IModelConfig config, double cropScaleMin)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!(cropScaleMin > 0 && cropScaleMin <= 1)) throw new ViTQuantException($"crop scale {cropScaleMin}: must be in (0, 1]");
        _c = config.InChans;
        _size = config.ImageSize;
        _mean = config.Mean;
        _std = config.Std;
        CropScaleMin = cropScaleMin;
        BlurKernel = Math.Min(Math.Max(3, 2 * (int)(0.05 * _size) + 1), _size % 2 == 1 ? _size : _size - 1);
    }

    /// <summary>Augments one normalised C×H×W image in place. Throws ArgumentException for a wrong length.</summary>
    public void Apply(Span<float> image, Rng rng)
    {
        int c = _c, n = _size, plane = n * n;
        if (image.Length != c * plane) throw new ArgumentException($"image has {image.Length} values, expected {c}x{n}x{n}");
        var tmp = new float[image.Length];
        RandomResizedCrop(image, tmp, rng);
        if (rng.NextDouble() < 0.5) Data.Transforms.HorizontalFlip(image, c, n, n);
        if (c == 3)
        {
            // As torchvision's RandomApply and RandomGrayscale: a coin each, jitter factors drawn only when it applies.
            Denormalize(image);
            if (rng.NextDouble() < 0.8) ColorJitter(image, rng);
            if (rng.NextDouble() < 0.2) Greyscale(image);
            Normalize(image);
        }
        float sigma = 0.1f + 1.9f * rng.NextFloat();
        GaussianBlur(image, tmp, sigma);
    }

    // ---- geometry ----

    private void RandomResizedCrop(Span<float> image, float[] tmp, Rng rng)
    {
        int n = _size;
        var (top, left, h, w) = CropBox(n, n, CropScaleMin, rng);
        if (h == n && w == n) return;
        image.CopyTo(tmp);
        for (int ch = 0; ch < _c; ch++)
            ResizeBilinear(tmp.AsSpan(ch * n * n, n * n), n, top, left, h, w, image.Slice(ch * n * n, n * n), n);
    }

    /// <summary>torchvision RandomResizedCrop.get_params: (top, left, height, width) of the crop.</summary>
    internal static (int Top, int Left, int H, int W) CropBox(int height, int width, double scaleMin, Rng rng)
    {
        double area = (double)height * width, logLo = Math.Log(3.0 / 4), logHi = Math.Log(4.0 / 3);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double target = area * (scaleMin + (1 - scaleMin) * rng.NextDouble());
            double aspect = Math.Exp(logLo + (logHi - logLo) * rng.NextDouble());
            int w = (int)Math.Round(Math.Sqrt(target * aspect)), h = (int)Math.Round(Math.Sqrt(target / aspect));
            if (w > 0 && w <= width && h > 0 && h <= height)
                return (rng.NextInt(height - h + 1), rng.NextInt(width - w + 1), h, w);
        }
        // Fallback (square images always land here with the whole image): central crop.
        double ratio = (double)width / height;
        int cw = width, chh = height;
        if (ratio < 3.0 / 4) chh = (int)Math.Round(cw / (3.0 / 4));
        else if (ratio > 4.0 / 3) cw = (int)Math.Round(chh * (4.0 / 3));
        return ((height - chh) / 2, (width - cw) / 2, chh, cw);
    }

    /// <summary>Bilinear resize (align_corners = False) of the h×w window at (top, left) of an n×n plane to out×out.</summary>
    internal static void ResizeBilinear(ReadOnlySpan<float> src, int n, int top, int left, int h, int w, Span<float> dst, int outSize)
    {
        double sy = (double)h / outSize, sx = (double)w / outSize;
        for (int y = 0; y < outSize; y++)
        {
            double fy = Math.Max((y + 0.5) * sy - 0.5, 0);
            int y0 = Math.Min((int)fy, h - 1), y1 = Math.Min(y0 + 1, h - 1);
            double wy = fy - y0;
            for (int x = 0; x < outSize; x++)
            {
                double fx = Math.Max((x + 0.5) * sx - 0.5, 0);
                int x0 = Math.Min((int)fx, w - 1), x1 = Math.Min(x0 + 1, w - 1);
                double wx = fx - x0;
                double a = src[(top + y0) * n + left + x0], b = src[(top + y0) * n + left + x1];
                double c = src[(top + y1) * n + left + x0], d = src[(top + y1) * n + left + x1];
                dst[y * outSize + x] = (float)((1 - wy) * ((1 - wx) * a + wx * b) + wy * ((1 - wx) * c + wx * d));
            }
        }
    }

    private void GaussianBlur(Span<float> image, float[] tmp, float sigma)
    {
        int n = _size, k = BlurKernel, r = k / 2, plane = n * n;
        var kernel = new float[k];
        double total = 0;
        for (int i = 0; i < k; i++) total += kernel[i] = (float)Math.Exp(-0.5 * Math.Pow((i - r) / (double)sigma, 2));
        for (int i = 0; i < k; i++) kernel[i] = (float)(kernel[i] / total);
        for (int ch = 0; ch < _c; ch++)
        {
            var p = image.Slice(ch * plane, plane);
            var t = tmp.AsSpan(ch * plane, plane);
            // rows, then columns, each with reflect padding (index −i ↦ i, n−1+i ↦ n−1−i)
            for (int y = 0; y < n; y++)
                for (int x = 0; x < n; x++)
                {
                    float acc = 0;
                    for (int i = 0; i < k; i++) acc += kernel[i] * p[y * n + Reflect(x + i - r, n)];
                    t[y * n + x] = acc;
                }
            for (int y = 0; y < n; y++)
                for (int x = 0; x < n; x++)
                {
                    float acc = 0;
                    for (int i = 0; i < k; i++) acc += kernel[i] * t[Reflect(y + i - r, n) * n + x];
                    p[y * n + x] = acc;
                }
        }
    }

    private static int Reflect(int i, int n) => i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i;

    // ---- colour (3 channels, un-normalised [0, 1] values) ----

    private void Denormalize(Span<float> image)
    {
        int plane = _size * _size;
        for (int ch = 0; ch < 3; ch++)
            foreach (ref float v in image.Slice(ch * plane, plane)) v = v * _std[ch] + _mean[ch];
    }

    private void Normalize(Span<float> image) => Data.Transforms.Normalize(image, 3, _mean, _std);

    private void ColorJitter(Span<float> image, Rng rng)
    {
        Span<int> order = stackalloc int[] { 0, 1, 2, 3 };
        rng.Shuffle(order);
        float b = 0.2f + 1.6f * rng.NextFloat(), c = 0.2f + 1.6f * rng.NextFloat(), s = 0.2f + 1.6f * rng.NextFloat();
        float h = -0.2f + 0.4f * rng.NextFloat();
        int plane = _size * _size;
        foreach (int op in order)
        {
            switch (op)
            {
                case 0: // brightness: blend with black
                    foreach (ref float v in image) v = Math.Clamp(v * b, 0f, 1f);
                    break;
                case 1: // contrast: blend with the mean of the grey image
                {
                    double m = 0;
                    for (int i = 0; i < plane; i++) m += Grey(image, i, plane);
                    float mean = (float)(m / plane);
                    foreach (ref float v in image) v = Math.Clamp(c * v + (1 - c) * mean, 0f, 1f);
                    break;
                }
                case 2: // saturation: blend with the grey image
                    for (int i = 0; i < plane; i++)
                    {
                        float g = Grey(image, i, plane);
                        for (int ch = 0; ch < 3; ch++) image[ch * plane + i] = Math.Clamp(s * image[ch * plane + i] + (1 - s) * g, 0f, 1f);
                    }
                    break;
                default:
                    ShiftHue(image, plane, h);
                    break;
            }
        }
    }

    private static float Grey(ReadOnlySpan<float> image, int i, int plane) =>
        0.2989f * image[i] + 0.587f * image[plane + i] + 0.114f * image[2 * plane + i];

    private void Greyscale(Span<float> image)
    {
        int plane = _size * _size;
        for (int i = 0; i < plane; i++)
        {
            float g = Grey(image, i, plane);
            image[i] = image[plane + i] = image[2 * plane + i] = g;
        }
    }

    /// <summary>torchvision adjust_hue on float images: RGB → HSV, h ← (h + shift) mod 1, HSV → RGB.</summary>
    internal static void ShiftHue(Span<float> image, int plane, float shift)
    {
        for (int i = 0; i < plane; i++)
        {
            float r = image[i], g = image[plane + i], b = image[2 * plane + i];
            float max = MathF.Max(r, MathF.Max(g, b)), min = MathF.Min(r, MathF.Min(g, b)), cr = max - min;
            float sat = cr / (max == 0 ? 1 : max);
            float div = cr == 0 ? 1 : cr;
            float rc = (max - r) / div, gc = (max - g) / div, bc = (max - b) / div;
            float hr = max == r ? bc - gc : 0, hg = max == g && max != r ? 2f + rc - bc : 0, hb = max != g && max != r ? 4f + gc - rc : 0;
            float hue = ((hr + hg + hb) / 6f + 1f) % 1f;
            hue = ((hue + shift) % 1f + 1f) % 1f;
            float v = max;
            float h6 = hue * 6f;
            int sector = (int)MathF.Floor(h6) % 6;
            float f = h6 - MathF.Floor(h6);
            float p = Math.Clamp(v * (1 - sat), 0f, 1f), q = Math.Clamp(v * (1 - sat * f), 0f, 1f), t = Math.Clamp(v * (1 - sat * (1 - f)), 0f, 1f);
            (r, g, b) = sector switch
            {
                0 => (v, t, p),
                1 => (q, v, p),
                2 => (p, v, t),
                3 => (p, q, v),
                4 => (t, p, v),
                _ => (v, p, q),
            };
            image[i] = r; image[plane + i] = g; image[2 * plane + i] = b;
        }
    }
}
