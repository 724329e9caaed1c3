using ViTQuant.IO;

namespace ViTQuant.Tests.IO;

public class JpegTests
{
    /// <summary>A smooth synthetic image (JPEG-friendly: little energy at high frequencies), HWC.</summary>
    internal static byte[] Smooth(int w, int h, int channels, int seed = 0)
    {
        var px = new byte[w * h * channels];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < channels; c++)
                    px[(y * w + x) * channels + c] = (byte)Math.Clamp(128 + 100 * Math.Sin(x / (4.0 + c + seed) + y / (6.0 + 2 * c) + c), 0, 255);
        return px;
    }

    private static (int Max, double Mean) Diff(byte[] a, byte[] b)
    {
        Assert.Equal(a.Length, b.Length);
        int max = 0; long sum = 0;
        for (int i = 0; i < a.Length; i++) { int d = Math.Abs(a[i] - b[i]); max = Math.Max(max, d); sum += d; }
        return (max, (double)sum / a.Length);
    }

    [Fact]
    public void RgbQuality100At444RoundTripsClosely()
    {
        Assert.True(Jpeg.IsAvailable, "libturbojpeg should be installed (Debian libturbojpeg0)");
        var px = Smooth(48, 40, 3);
        var jpg = Jpeg.Encode(px, 48, 40, 3, quality: 100, subsampling: JpegSubsampling.S444);
        Assert.Equal(new byte[] { 0xFF, 0xD8, 0xFF }, jpg[..3]);
        var img = Jpeg.Decode(jpg, "mem.jpg");
        Assert.Equal((48, 40, 3), (img.Width, img.Height, img.Channels));
        var (max, mean) = Diff(px, img.Pixels);
        // Quality 100 with full chroma loses only rounding in DCT/colour conversion.
        Assert.True(max <= 4 && mean < 1.0, $"max {max}, mean {mean:F3}");
    }

    [Fact]
    public void LowerQualityIsLossierButStillClose()
    {
        var px = Smooth(64, 64, 3, seed: 2);
        var img = Jpeg.Decode(Jpeg.Encode(px, 64, 64, 3, quality: 75), "q75.jpg");
        var (max, mean) = Diff(px, img.Pixels);
        Assert.True(mean < 6 && max > 0, $"max {max}, mean {mean:F3}");
    }

    [Fact]
    public void GrayscaleJpegDecodesToOneChannel()
    {
        var px = Smooth(33, 21, 1);
        var jpg = Jpeg.Encode(px, 33, 21, 1, quality: 100);
        var img = ImageDecoder.Decode(jpg, "gray.jpg");
        Assert.Equal((33, 21, 1), (img.Width, img.Height, img.Channels));
        var (max, mean) = Diff(px, img.Pixels);
        Assert.True(max <= 2 && mean < 0.5, $"max {max}, mean {mean:F3}");
    }

    [Fact]
    public void CmykJpegConvertsLikePillow()
    {
        // TurboJPEG stores CMYK samples as given; the decoder treats them as Adobe-inverted (c' = 255 − C).
        var cmyk = Smooth(16, 12, 4, seed: 1);
        var img = Jpeg.Decode(Jpeg.EncodeCmyk(cmyk, 16, 12, 100), "cmyk.jpg");
        Assert.Equal(3, img.Channels);
        var expected = new byte[16 * 12 * 3];
        for (int i = 0; i < 16 * 12; i++)
            for (int c = 0; c < 3; c++) // R = c'·k'/255 where c' and k' are the stored (inverted) samples
                expected[3 * i + c] = (byte)Math.Round(cmyk[4 * i + c] * cmyk[4 * i + 3] / 255.0);
        var (max, _) = Diff(expected, img.Pixels);
        Assert.True(max <= 4, $"max {max}");
        // The exact integer formula on exact inputs: Pillow's MULDIV255 rounding.
        Assert.Equal(new byte[] { 0, 0, 0, 255, 255, 255, 64, 64, 64 },
            Jpeg.InvertedCmykToRgb(new byte[] { 0, 0, 0, 255, 255, 255, 255, 255, 128, 128, 128, 128 }));
    }

    [Fact]
    public void CorruptOrTruncatedJpegThrowsNamingThePath()
    {
        string dir = Directory.CreateTempSubdirectory("vitq-jpg-").FullName;
        try
        {
            var jpg = Jpeg.Encode(Smooth(64, 48, 3), 64, 48, 3, quality: 90);
            string truncated = Path.Combine(dir, "truncated.jpg");
            File.WriteAllBytes(truncated, jpg[..(jpg.Length / 2)]);
            var e = Assert.Throws<ViTQuantException>(() => ImageDecoder.Decode(truncated));
            Assert.Contains(truncated, e.Message);
            // libjpeg only warns here (and would fill the rest with gray); the decoder must escalate it.
            Assert.Contains("Premature end", e.Message);

            string garbage = Path.Combine(dir, "garbage.jpg");
            var g = new byte[200];
            new Random(1).NextBytes(g);
            g[0] = 0xFF; g[1] = 0xD8; g[2] = 0xFF;
            File.WriteAllBytes(garbage, g);
            Assert.Contains(garbage, Assert.Throws<ViTQuantException>(() => ImageDecoder.Decode(garbage)).Message);

            string ok = Path.Combine(dir, "ok.jpeg");
            File.WriteAllBytes(ok, jpg);
            Assert.Equal(64 * 48 * 3, ImageDecoder.Decode(ok).Pixels.Length);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void MissingLibraryMessageNamesTheDebianPackage()
    {
        var (api, error) = Jpeg.LoadApi(new[] { "libdefinitely-not-turbojpeg.so.9" });
        Assert.Null(api);
        Assert.Contains("libturbojpeg0", error);
    }

    [Fact]
    public void EncodeRejectsBadArguments()
    {
        Assert.Throws<ArgumentException>(() => Jpeg.Encode(new byte[12], 2, 2, 2));
        Assert.Throws<ArgumentException>(() => Jpeg.Encode(new byte[11], 2, 2, 3));
        Assert.Throws<ArgumentException>(() => Jpeg.Encode(new byte[12], 2, 2, 3, quality: 0));
    }
}
