using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using ViTQuant.IO;

namespace ViTQuant.Tests.IO;

/// <summary>
/// A deliberately small PNG encoder for tests (the library only decodes PNG): one IDAT of
/// zlib data, filter type 0 (None) or 2 (Up) per row, CRC-32 from its own table.
/// </summary>
internal static class MiniPng
{
    public const int Gray = 0, Rgb = 2, Palette = 3, GrayAlpha = 4, Rgba = 6;

    /// <summary>Encodes raw samples (rows top to bottom, big-endian for 16-bit) with the given PNG color type.</summary>
    public static byte[] Encode(byte[] raw, int width, int height, int colorType, int bitDepth = 8, byte[]? palette = null, bool upFilter = false)
    {
        int channels = colorType switch { Gray => 1, Rgb => 3, Palette => 1, GrayAlpha => 2, Rgba => 4, _ => throw new ArgumentException("color type") };
        int rowBytes = width * channels * bitDepth / 8;
        if (raw.Length != rowBytes * height) throw new ArgumentException("raw length");
        var filtered = new byte[(rowBytes + 1) * height];
        for (int y = 0; y < height; y++)
        {
            int o = y * (rowBytes + 1);
            bool up = upFilter && y > 0;
            filtered[o] = (byte)(up ? 2 : 0);
            for (int i = 0; i < rowBytes; i++)
                filtered[o + 1 + i] = (byte)(raw[y * rowBytes + i] - (up ? raw[(y - 1) * rowBytes + i] : 0));
        }
        var z = new MemoryStream();
        using (var zs = new ZLibStream(z, CompressionLevel.Optimal, leaveOpen: true)) zs.Write(filtered);

        var png = new MemoryStream();
        png.Write(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A });
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = (byte)bitDepth; ihdr[9] = (byte)colorType; // compression, filter, interlace = 0
        Chunk(png, "IHDR", ihdr);
        if (palette != null) Chunk(png, "PLTE", palette);
        Chunk(png, "IDAT", z.ToArray());
        Chunk(png, "IEND", Array.Empty<byte>());
        return png.ToArray();
    }

    private static void Chunk(Stream s, string type, byte[] data)
    {
        Span<byte> w = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(w, data.Length);
        s.Write(w);
        var typed = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        s.Write(typed);
        BinaryPrimitives.WriteUInt32BigEndian(w, Crc32(typed));
        s.Write(w);
    }

    private static readonly uint[] _table = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    public static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (byte b in data) c = _table[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }
}

public class PngReaderTests
{
    private static byte[] Pattern(int n, int seed)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte)((i * 37 + seed * 101 + (i >> 3) * 11) & 0xFF);
        return b;
    }

    [Fact]
    public void RgbDecodesExactly()
    {
        Assert.True(PngReader.IsAvailable, "libpng16 should be installed (Debian libpng16-16)");
        var px = Pattern(13 * 7 * 3, 1);
        var img = PngReader.Decode(MiniPng.Encode(px, 13, 7, MiniPng.Rgb, upFilter: true), "rgb.png");
        Assert.Equal((13, 7, 3), (img.Width, img.Height, img.Channels));
        Assert.Equal(px, img.Pixels);
    }

    [Fact]
    public void GrayDecodesExactlyToOneChannel()
    {
        var px = Pattern(9 * 11, 2);
        var img = PngReader.Decode(MiniPng.Encode(px, 9, 11, MiniPng.Gray), "gray.png");
        Assert.Equal((9, 11, 1), (img.Width, img.Height, img.Channels));
        Assert.Equal(px, img.Pixels);
    }

    [Fact]
    public void AlphaIsDroppedNotComposited()
    {
        var rgba = Pattern(5 * 4 * 4, 3);
        for (int i = 0; i < 20; i++) rgba[4 * i + 3] = (byte)(i * 13); // includes alpha 0: compositing would change RGB
        var img = PngReader.Decode(MiniPng.Encode(rgba, 5, 4, MiniPng.Rgba), "rgba.png");
        Assert.Equal(3, img.Channels);
        for (int i = 0; i < 20; i++)
            for (int c = 0; c < 3; c++) Assert.Equal(rgba[4 * i + c], img.Pixels[3 * i + c]);

        var ga = Pattern(6 * 3 * 2, 4);
        var g = PngReader.Decode(MiniPng.Encode(ga, 6, 3, MiniPng.GrayAlpha), "ga.png");
        Assert.Equal(1, g.Channels);
        for (int i = 0; i < 18; i++) Assert.Equal(ga[2 * i], g.Pixels[i]);
    }

    [Fact]
    public void PaletteExpandsToRgb()
    {
        var palette = new byte[] { 255, 0, 0, 0, 128, 0, 10, 20, 30 };
        var idx = new byte[] { 0, 1, 2, 2, 1, 0 };
        var img = PngReader.Decode(MiniPng.Encode(idx, 3, 2, MiniPng.Palette, palette: palette), "pal.png");
        Assert.Equal(3, img.Channels);
        for (int i = 0; i < 6; i++)
            for (int c = 0; c < 3; c++) Assert.Equal(palette[idx[i] * 3 + c], img.Pixels[3 * i + c]);
    }

    [Fact]
    public void SixteenBitMapsToHighByte()
    {
        var raw = new byte[4 * 2 * 2];
        var values = new ushort[] { 0, 65535, 0x1234, 0x8000, 0x00FF, 0xFF00, 0x7FFF, 0x4080 };
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteUInt16BigEndian(raw.AsSpan(2 * i), values[i]);
        var img = PngReader.Decode(MiniPng.Encode(raw, 4, 2, MiniPng.Gray, bitDepth: 16), "g16.png");
        Assert.Equal(1, img.Channels);
        // Read as sRGB-encoded 16-bit: v·255/65535 rounded, which is within 1 of the high byte Pillow keeps.
        for (int i = 0; i < values.Length; i++) Assert.InRange(img.Pixels[i] - (values[i] >> 8), -1, 1);
        Assert.Equal(0, img.Pixels[0]);
        Assert.Equal(255, img.Pixels[1]);
    }

    [Fact]
    public void CorruptPngThrowsNamingTheFile()
    {
        var good = MiniPng.Encode(Pattern(8 * 8 * 3, 5), 8, 8, MiniPng.Rgb);
        var badCrc = (byte[])good.Clone();
        badCrc[40] ^= 0xFF; // inside IDAT: CRC mismatch
        var e1 = Assert.Throws<ViTQuantException>(() => PngReader.Decode(badCrc, "broken.png"));
        Assert.Contains("broken.png", e1.Message);
        var e2 = Assert.Throws<ViTQuantException>(() => PngReader.Decode(good.AsSpan(0, good.Length / 2), "half.png"));
        Assert.Contains("half.png", e2.Message);
        var e3 = Assert.Throws<ViTQuantException>(() => PngReader.Decode(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2 }, "stub.png"));
        Assert.Contains("stub.png", e3.Message);
    }

    [Fact]
    public void ImageDecoderSniffsPngAndRejectsUnknownFormats()
    {
        string dir = Directory.CreateTempSubdirectory("vitq-png-").FullName;
        try
        {
            var px = Pattern(4 * 3 * 3, 6);
            string png = Path.Combine(dir, "looks-like.jpg"); // extension lies; magic bytes decide
            File.WriteAllBytes(png, MiniPng.Encode(px, 4, 3, MiniPng.Rgb));
            Assert.Equal(px, ImageDecoder.Decode(png).Pixels);

            string gif = Path.Combine(dir, "x.gif");
            File.WriteAllBytes(gif, Encoding.ASCII.GetBytes("GIF89a...."));
            Assert.Contains(gif, Assert.Throws<ViTQuantException>(() => ImageDecoder.Decode(gif)).Message);
            string missing = Path.Combine(dir, "nope.png");
            Assert.Contains(missing, Assert.Throws<ViTQuantException>(() => ImageDecoder.Decode(missing)).Message);
            string empty = Path.Combine(dir, "empty.png");
            File.WriteAllBytes(empty, Array.Empty<byte>());
            Assert.Contains("empty", Assert.Throws<ViTQuantException>(() => ImageDecoder.Decode(empty)).Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
