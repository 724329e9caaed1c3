// Image transforms: timm's evaluation transform (resize shorter side → center crop), per-channel
// normalisation, and the small-image training augmentation (zero-padded random crop + horizontal flip).
//
// Evaluation, as timm's transforms_factory builds it for crop_mode 'center':
//   scale_size = floor(size / crop_pct)
//   Resize(scale_size, BICUBIC): shorter side → scale_size, longer → int(scale_size·long/short)
//   CenterCrop(size): top = int(round((h − size)/2.0)) with Python's round-half-to-even, zero padding
//                      when the crop is larger than the image (torchvision pads (d/2, (d+1)/2))
//   ToTensor (/255), Normalize(mean, std) — normalisation is the DataLoader's job here.
// On decoded 8-bit images the resize is Pillow-exact (Resize.BicubicPil); on float images it is the
// float algorithm followed by a clamp to [0, 1] (what Pillow's 8-bit clip does, minus the rounding).
// Grayscale sources are replicated to RGB when the model wants 3 channels (Pillow's convert('RGB')),
// RGB sources are reduced with Pillow's ITU-R 601 luma when the model wants 1.
using System.Buffers;
using System.Numerics.Tensors;
using ViTQuant.IO;
using ViTQuant.Tensors;

namespace ViTQuant.Data;

/// <summary>
/// A training augmentation applied in place to one image (float CHW, before normalisation), drawing
/// its randomness only from <paramref name="rng"/> so results are reproducible.
/// </summary>
internal delegate void Augmentation(Span<float> image, int channels, int height, int width, Rng rng);

/// <summary>timm's evaluation transform: bicubic resize of the shorter side to floor(Size/CropPct), center crop to Size×Size.</summary>
internal sealed record EvalTransform
{
    /// <summary>Output side length (the model's input size).</summary>
    public int Size { get; }

    /// <summary>Fraction of the resized image kept by the center crop (timm's crop_pct).</summary>
    public double CropPct { get; }

    /// <summary>Output channels: 3 (RGB) or 1 (gray).</summary>
    public int Channels { get; }

    /// <summary>Throws ArgumentException unless size ≥ 1, 0 &lt; cropPct ≤ 2 and channels is 1 or 3.</summary>
    public EvalTransform(int size, double cropPct = 0.875, int channels = 3)
    {
        if (size < 1) throw new ArgumentException($"eval transform size must be positive, got {size}");
        if (!(cropPct > 0 && cropPct <= 2)) throw new ArgumentException($"crop_pct must be in (0, 2], got {cropPct}");
        if (channels != 1 && channels != 3) throw new ArgumentException($"eval transform channels must be 1 or 3, got {channels}");
        Size = size; CropPct = cropPct; Channels = channels;
    }

    /// <summary>The shorter side after resizing: floor(Size / CropPct).</summary>
    public int ResizeSize => (int)Math.Floor(Size / CropPct);

    /// <summary>Elements of one output image, Channels·Size·Size.</summary>
    public int OutputSize => Channels * Size * Size;

    /// <summary>
    /// Transforms a decoded 8-bit image into <paramref name="dst"/> (Channels×Size×Size, values in [0, 1]),
    /// bit-exact with torchvision's PIL pipeline before ToTensor. Throws ArgumentException for a wrong
    /// destination length or a source that is neither 1 nor 3 channels.
    /// </summary>
    public void Apply(DecodedImage image, Span<float> dst)
    {
        CheckDst(dst.Length);
        byte[] px = image.Pixels;
        int ch = image.Channels;
        if (ch != 1 && ch != 3) throw new ArgumentException($"eval transform needs a 1- or 3-channel image, got {ch}");
        if (Channels == 1 && ch == 3) { px = Transforms.RgbToLuma(px); ch = 1; }
        var (rh, rw) = Transforms.ShorterSideSize(image.Height, image.Width, ResizeSize);
        var resized = Resize.BicubicPil(px, image.Width, image.Height, ch, rw, rh);
        var (top, left) = Transforms.CenterCropOffsets(rh, rw, Size);
        for (int c = 0; c < Channels; c++)
        {
            int sc = ch == 1 ? 0 : c;
            var plane = dst.Slice(c * Size * Size, Size * Size);
            for (int y = 0; y < Size; y++)
                for (int x = 0; x < Size; x++)
                {
                    int sy = y + top, sx = x + left;
                    plane[y * Size + x] = (uint)sy < (uint)rh && (uint)sx < (uint)rw ? resized[(sy * rw + sx) * ch + sc] / 255f : 0f; // ToTensor divides
                }
        }
    }

    /// <summary>
    /// Transforms a float CHW image with values in [0, 1] into <paramref name="dst"/> (Channels×Size×Size):
    /// float bicubic resize clamped to [0, 1], then center crop. Throws ArgumentException for wrong
    /// lengths or an unsupported channel count.
    /// </summary>
    public void Apply(ReadOnlySpan<float> image, int channels, int height, int width, Span<float> dst)
    {
        CheckDst(dst.Length);
        if (channels != 1 && channels != 3) throw new ArgumentException($"eval transform needs a 1- or 3-channel image, got {channels}");
        if (image.Length != channels * height * width) throw new ArgumentException($"image has {image.Length} elements, expected {channels}x{height}x{width}");
        float[]? luma = null;
        if (Channels == 1 && channels == 3)
        {
            luma = new float[height * width];
            int n = height * width;
            for (int i = 0; i < n; i++) luma[i] = 0.299f * image[i] + 0.587f * image[n + i] + 0.114f * image[2 * n + i];
            image = luma; channels = 1;
        }
        var (rh, rw) = Transforms.ShorterSideSize(height, width, ResizeSize);
        float[] buf = ArrayPool<float>.Shared.Rent(channels * rh * rw);
        try
        {
            var resized = buf.AsSpan(0, channels * rh * rw);
            if (rh == height && rw == width) image.CopyTo(resized);
            else
            {
                Resize.Bicubic(image, channels, height, width, resized, rh, rw);
                TensorPrimitives.Clamp(resized, 0f, 1f, resized);
            }
            var (top, left) = Transforms.CenterCropOffsets(rh, rw, Size);
            for (int c = 0; c < Channels; c++)
                Transforms.Crop(resized.Slice((channels == 1 ? 0 : c) * rh * rw, rh * rw), rh, rw, top, left, dst.Slice(c * Size * Size, Size * Size), Size, Size);
        }
        finally { ArrayPool<float>.Shared.Return(buf); }
    }

    private void CheckDst(int length)
    {
        if (length != OutputSize) throw new ArgumentException($"destination has {length} elements, the transform writes {Channels}x{Size}x{Size}");
    }
}

/// <summary>Geometry helpers, normalisation and augmentations on float CHW images.</summary>
internal static class Transforms
{
    /// <summary>ImageNet channel means (RGB), used by DeiT and most timm models.</summary>
    public static float[] ImageNetMean => new[] { 0.485f, 0.456f, 0.406f };

    /// <summary>ImageNet channel standard deviations (RGB).</summary>
    public static float[] ImageNetStd => new[] { 0.229f, 0.224f, 0.225f };

    /// <summary>Mean 0.5 per channel, used by the original (augreg) ViT checkpoints.</summary>
    public static float[] InceptionMean => new[] { 0.5f, 0.5f, 0.5f };

    /// <summary>Std 0.5 per channel, used by the original (augreg) ViT checkpoints.</summary>
    public static float[] InceptionStd => new[] { 0.5f, 0.5f, 0.5f };

    /// <summary>
    /// torchvision Resize(int) output size: the shorter side becomes <paramref name="size"/>, the
    /// longer int(size·long/short) (truncated, as Python's int() of a float). Returns (height, width).
    /// </summary>
    public static (int Height, int Width) ShorterSideSize(int height, int width, int size)
    {
        if (height <= 0 || width <= 0 || size <= 0) throw new ArgumentException($"bad resize request {height}x{width} -> shorter side {size}");
        int shortSide = Math.Min(height, width), longSide = Math.Max(height, width);
        int newLong = (int)((double)((long)size * longSide) / shortSide);
        return width <= height ? (newLong, size) : (size, newLong);
    }

    /// <summary>
    /// torchvision CenterCrop offsets of a crop×crop window in an h×w image: int(round((h − crop)/2.0))
    /// with round-half-to-even, or −((crop − h)/2) (integer division) when the crop is larger and the
    /// image gets zero padding. Returns (top, left); negative means padding.
    /// </summary>
    public static (int Top, int Left) CenterCropOffsets(int height, int width, int crop) => (Offset(height, crop), Offset(width, crop));

    private static int Offset(int dim, int crop) => crop > dim ? -((crop - dim) / 2) : (int)Math.Round((dim - crop) / 2.0, MidpointRounding.ToEven);

    /// <summary>
    /// Copies the window starting at (top, left) of an h×w plane into an outH×outW plane; positions
    /// outside the source are 0 (zero padding).
    /// </summary>
    public static void Crop(ReadOnlySpan<float> src, int height, int width, int top, int left, Span<float> dst, int outH, int outW)
    {
        if (src.Length != height * width || dst.Length != outH * outW) throw new ArgumentException("crop: plane lengths do not match their sizes");
        for (int y = 0; y < outH; y++)
        {
            var drow = dst.Slice(y * outW, outW);
            int sy = y + top;
            if ((uint)sy >= (uint)height) { drow.Clear(); continue; }
            // Columns [x0, x1) of the output read the source; the rest are padding.
            int x0 = Math.Clamp(-left, 0, outW), x1 = Math.Clamp(width - left, 0, outW);
            drow[..x0].Clear();
            if (x1 > x0) src.Slice(sy * width + x0 + left, x1 - x0).CopyTo(drow[x0..x1]);
            drow[Math.Max(x0, x1)..].Clear();
        }
    }

    /// <summary>
    /// Center-crops a C×H×W float image to C×crop×crop with torchvision's rounding and zero padding.
    /// Throws ArgumentException for wrong lengths.
    /// </summary>
    public static void CenterCrop(ReadOnlySpan<float> src, int channels, int height, int width, Span<float> dst, int crop)
    {
        if (src.Length != channels * height * width || dst.Length != channels * crop * crop) throw new ArgumentException("center crop: span lengths do not match the sizes");
        var (top, left) = CenterCropOffsets(height, width, crop);
        for (int c = 0; c < channels; c++)
            Crop(src.Slice(c * height * width, height * width), height, width, top, left, dst.Slice(c * crop * crop, crop * crop), crop, crop);
    }

    /// <summary>
    /// In place (x − mean[c]) / std[c] for each channel c of one C×H×W image (torchvision's
    /// Normalize: subtract, then divide). mean/std have 1 entry (used for all channels) or C. Throws
    /// ArgumentException for a bad length or a non-positive std.
    /// </summary>
    public static void Normalize(Span<float> image, int channels, ReadOnlySpan<float> mean, ReadOnlySpan<float> std)
    {
        if (channels <= 0 || image.Length % channels != 0) throw new ArgumentException($"{image.Length} values are not a {channels}-channel image");
        if ((mean.Length != 1 && mean.Length != channels) || (std.Length != 1 && std.Length != channels))
            throw new ArgumentException($"mean/std need 1 or {channels} entries, got {mean.Length} and {std.Length}");
        foreach (float s in std) if (!(s > 0)) throw new ArgumentException($"std must be positive, got {s}");
        int plane = image.Length / channels;
        for (int c = 0; c < channels; c++)
        {
            var p = image.Slice(c * plane, plane);
            TensorPrimitives.Subtract(p, mean[mean.Length == 1 ? 0 : c], p);
            TensorPrimitives.Divide(p, std[std.Length == 1 ? 0 : c], p);
        }
    }

    /// <summary>
    /// torchvision RandomCrop(size, padding): pad by <paramref name="padding"/> zeros on every side,
    /// then take the h×w window at a uniformly random offset in [0, 2·padding] per axis. In place.
    /// </summary>
    public static void RandomCrop(Span<float> image, int channels, int height, int width, int padding, Rng rng)
    {
        if (padding < 0) throw new ArgumentException($"padding must be non-negative, got {padding}");
        if (image.Length != channels * height * width) throw new ArgumentException($"image has {image.Length} elements, expected {channels}x{height}x{width}");
        int top = rng.NextInt(2 * padding + 1) - padding, left = rng.NextInt(2 * padding + 1) - padding;
        if (top == 0 && left == 0) return;
        int n = height * width;
        var tmp = ArrayPool<float>.Shared.Rent(n);
        try
        {
            for (int c = 0; c < channels; c++)
            {
                var plane = image.Slice(c * n, n);
                plane.CopyTo(tmp);
                Crop(tmp.AsSpan(0, n), height, width, top, left, plane, height, width);
            }
        }
        finally { ArrayPool<float>.Shared.Return(tmp); }
    }

    /// <summary>Mirrors every row of a C×H×W image in place.</summary>
    public static void HorizontalFlip(Span<float> image, int channels, int height, int width)
    {
        if (image.Length != channels * height * width) throw new ArgumentException($"image has {image.Length} elements, expected {channels}x{height}x{width}");
        for (int r = 0; r < channels * height; r++) image.Slice(r * width, width).Reverse();
    }

    /// <summary>
    /// The standard small-image training augmentation: RandomCrop(padding) then a horizontal flip with
    /// probability <paramref name="flipProbability"/>. Randomness per call: crop rows, crop columns, flip.
    /// </summary>
    public static Augmentation PadCropFlip(int padding = 4, double flipProbability = 0.5)
    {
        if (padding < 0) throw new ArgumentException($"padding must be non-negative, got {padding}");
        if (!(flipProbability >= 0 && flipProbability <= 1)) throw new ArgumentException($"flip probability must be in [0, 1], got {flipProbability}");
        return (image, c, h, w, rng) =>
        {
            RandomCrop(image, c, h, w, padding, rng);
            if (rng.NextDouble() < flipProbability) HorizontalFlip(image, c, h, w);
        };
    }

    /// <summary>Pillow's RGB→L: (R·19595 + G·38470 + B·7471 + 2^15) >> 16 per pixel of an HWC buffer.</summary>
    internal static byte[] RgbToLuma(byte[] rgb)
    {
        var l = new byte[rgb.Length / 3];
        for (int i = 0; i < l.Length; i++)
            l[i] = (byte)((rgb[3 * i] * 19595 + rgb[3 * i + 1] * 38470 + rgb[3 * i + 2] * 7471 + 0x8000) >> 16);
        return l;
    }
}

/// <summary>A dataset seen through an EvalTransform (e.g. 28×28 Fashion-MNIST as 3×224×224 model input).</summary>
internal sealed class TransformedDataset : IImageDataset
{
    private readonly IImageDataset _source;

    /// <summary>The transform applied to every source image.</summary>
    public EvalTransform Transform { get; }

    /// <summary>Shows <paramref name="source"/> (1 or 3 channels) through <paramref name="transform"/>; throws ArgumentException for other channel counts.</summary>
    public TransformedDataset(IImageDataset source, EvalTransform transform)
    {
        _source = source ?? throw new ArgumentNullException(nameof(source));
        Transform = transform ?? throw new ArgumentNullException(nameof(transform));
        if (source.Channels != 1 && source.Channels != 3) throw new ArgumentException($"source images have {source.Channels} channels; 1 or 3 are supported");
    }

    /// <inheritdoc/>
    public int Count => _source.Count;
    /// <inheritdoc/>
    public int Channels => Transform.Channels;
    /// <inheritdoc/>
    public int Height => Transform.Size;
    /// <inheritdoc/>
    public int Width => Transform.Size;
    /// <inheritdoc/>
    public int NumClasses => _source.NumClasses;
    /// <inheritdoc/>
    public IReadOnlyList<string> ClassNames => _source.ClassNames;
    /// <inheritdoc/>
    public int Label(int index) => _source.Label(index);

    /// <inheritdoc/>
    public void GetImage(int index, Span<float> dst)
    {
        this.CheckGetImage(index, dst.Length);
        int n = _source.ImageSize();
        var buf = ArrayPool<float>.Shared.Rent(n);
        try
        {
            _source.GetImage(index, buf.AsSpan(0, n));
            Transform.Apply(buf.AsSpan(0, n), _source.Channels, _source.Height, _source.Width, dst);
        }
        finally { ArrayPool<float>.Shared.Return(buf); }
    }
}
