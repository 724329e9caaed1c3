using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using ViTQuant.IO;

namespace ViTQuant.Tests.IO;

/// <summary>
/// An independent decoder: libpng's simplified read API (png.h, PNG_IMAGE_VERSION 1). libpng checks the
/// signature, every chunk CRC, the zlib stream and its Adler-32, so a successful exact decode validates
/// the whole encoder, not just our own view of it.
/// </summary>
internal static unsafe class LibPng
{
    private const string Lib = "libpng16.so.16";

    // png_image: png_controlp opaque; png_uint_32 version, width, height, format, flags, colormap_entries,
    // warning_or_error; char message[64]
    [StructLayout(LayoutKind.Sequential)]
    private struct PngImage
    {
        public IntPtr Opaque;
        public uint Version, Width, Height, Format, Flags, ColormapEntries, WarningOrError;
        public fixed byte Message[64];
    }

    [DllImport(Lib)] private static extern int png_image_begin_read_from_memory(ref PngImage image, byte* memory, nuint size);
    [DllImport(Lib)] private static extern int png_image_finish_read(ref PngImage image, IntPtr background, byte* buffer, int rowStride, IntPtr colormap);
    [DllImport(Lib)] private static extern void png_image_free(ref PngImage image);

    // PNG_FORMAT_FLAG_ALPHA = 1, PNG_FORMAT_FLAG_COLOR = 2: GRAY 0, GA 1, RGB 2, RGBA 3.
    private static PngColor ColorOf(uint format) => format switch
    {
        0 => PngColor.Gray8,
        2 => PngColor.Rgb8,
        3 => PngColor.Rgba8,
        _ => throw new InvalidOperationException($"libpng reports unexpected format {format}"),
    };

    /// <summary>Decodes PNG bytes in the file's own pixel layout.</summary>
    public static (int Width, int Height, PngColor Color, byte[] Pixels) Decode(byte[] png)
    {
        var img = new PngImage { Version = 1 };
        fixed (byte* p = png)
        {
            if (png_image_begin_read_from_memory(ref img, p, (nuint)png.Length) == 0) throw new InvalidOperationException("libpng begin_read: " + Message(ref img));
            var color = ColorOf(img.Format);
            var pixels = new byte[img.Width * img.Height * (uint)PngWriter.Channels(color)];
            fixed (byte* dst = pixels)
            {
                int ok = png_image_finish_read(ref img, IntPtr.Zero, dst, 0, IntPtr.Zero);
                string msg = Message(ref img);
                png_image_free(ref img);
                if (ok == 0) throw new InvalidOperationException("libpng finish_read: " + msg);
                // warning_or_error bit 1 = warning (for example a CRC or Adler mismatch libpng chose to tolerate)
                if (img.WarningOrError != 0) throw new InvalidOperationException($"libpng warning {img.WarningOrError}: {msg}");
            }
            return ((int)img.Width, (int)img.Height, color, pixels);
        }
    }

    private static string Message(ref PngImage img)
    {
        fixed (byte* m = img.Message) return Marshal.PtrToStringAnsi((IntPtr)m) ?? "";
    }
}

/// <summary>zlib's crc32(), a second CRC-32 implementation to check ours against.</summary>
internal static unsafe class ZLib
{
    [DllImport("libz.so.1")] private static extern CULong crc32(CULong crc, byte* buf, uint len);

    public static uint Crc32(byte[] data)
    {
        fixed (byte* p = data) return (uint)crc32(new CULong(0), p, (uint)data.Length).Value;
    }
}

public class PngWriterTests
{
    private static byte[] RandomPixels(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    // Smooth content: the case where Sub/Up/Average/Paeth win over None and must be undone exactly.
    private static byte[] GradientPixels(int w, int h, int channels)
    {
        var b = new byte[w * h * channels];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < channels; c++)
                    b[(y * w + x) * channels + c] = (byte)(x * (3 + c) + y * (5 - c) + (x * y >> 3));
        return b;
    }

    private static void AssertDecodesTo(byte[] png, int w, int h, PngColor color, byte[] pixels)
    {
        var (dw, dh, dc, dp) = LibPng.Decode(png);
        Assert.Equal((w, h, color), (dw, dh, dc));
        Assert.True(pixels.AsSpan().SequenceEqual(dp), $"{color} {w}x{h}: decoded pixels differ");
    }

    /// <summary>The chunks of a PNG file as (type, data), checking signature and each CRC with zlib's crc32.</summary>
    private static List<(string Type, byte[] Data)> Chunks(byte[] png)
    {
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
        var chunks = new List<(string, byte[])>();
        int p = 8;
        while (p < png.Length)
        {
            int len = (int)BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(p));
            var typeAndData = png.AsSpan(p + 4, 4 + len).ToArray();
            Assert.Equal(BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(p + 8 + len)), ZLib.Crc32(typeAndData));
            chunks.Add((Encoding.ASCII.GetString(typeAndData, 0, 4), typeAndData[4..]));
            p += 12 + len;
        }
        Assert.Equal(png.Length, p);
        return chunks;
    }

    [Theory]
    [InlineData(PngColor.Gray8, 1, 1)]
    [InlineData(PngColor.Gray8, 7, 3)]
    [InlineData(PngColor.Gray8, 33, 17)]
    [InlineData(PngColor.Rgb8, 1, 1)]
    [InlineData(PngColor.Rgb8, 5, 9)]
    [InlineData(PngColor.Rgb8, 31, 2)]
    [InlineData(PngColor.Rgba8, 1, 5)]
    [InlineData(PngColor.Rgba8, 13, 11)]
    [InlineData(PngColor.Rgba8, 64, 1)]
    public void LibpngDecodesExactlyWhatWasEncoded(PngColor color, int w, int h)
    {
        int ch = PngWriter.Channels(color);
        foreach (var pixels in new[] { RandomPixels(w * h * ch, w * 131 + h), GradientPixels(w, h, ch), new byte[w * h * ch] })
        {
            AssertDecodesTo(PngWriter.Encode(w, h, pixels, color), w, h, color, pixels);
            for (int f = 0; f < 5; f++) AssertDecodesTo(PngWriter.Encode(w, h, pixels, color, forcedFilter: f), w, h, color, pixels);
        }
    }

    [Fact]
    public void AdaptiveFilteringShrinksSmoothImages()
    {
        var pixels = GradientPixels(96, 64, 3);
        int adaptive = PngWriter.Encode(96, 64, pixels, PngColor.Rgb8).Length;
        int none = PngWriter.Encode(96, 64, pixels, PngColor.Rgb8, forcedFilter: 0).Length;
        Assert.True(adaptive < none, $"adaptive {adaptive} bytes vs filter-0 {none} bytes");
    }

    [Fact]
    public void HeaderChunksAndLargeImagesSplitOverSeveralIdat()
    {
        int w = 700, h = 520; // incompressible noise: > 1 MiB of zlib output
        var pixels = RandomPixels(w * h * 3, 5);
        var png = PngWriter.Encode(w, h, pixels, PngColor.Rgb8);
        var chunks = Chunks(png);
        Assert.Equal("IHDR", chunks[0].Type);
        Assert.Equal(new byte[] { 0, 0, 0x02, 0xBC, 0, 0, 0x02, 0x08, 8, 2, 0, 0, 0 }, chunks[0].Data);
        Assert.Equal("IEND", chunks[^1].Type);
        Assert.Empty(chunks[^1].Data);
        Assert.True(chunks.Count(c => c.Type == "IDAT") >= 2);
        Assert.All(chunks.Skip(1).SkipLast(1), c => Assert.Equal("IDAT", c.Type));
        AssertDecodesTo(png, w, h, PngColor.Rgb8, pixels);
    }

    [Fact]
    public void Crc32MatchesKnownValuesAndZlib()
    {
        Assert.Equal(0xCBF43926u, Crc32.Compute("123456789"u8));   // the standard CRC-32 check value
        Assert.Equal(0xAE426082u, Crc32.Compute("IEND"u8));        // every PNG ends 49 45 4E 44 AE 42 60 82
        // IHDR of a 1×1 8-bit RGB image: the "90 77 53 DE" seen in every minimal RGB PNG.
        Assert.Equal(0x907753DEu, Crc32.Compute(Convert.FromHexString("49484452000000010000000108020000" + "00")));
        Assert.Equal(0u, Crc32.Compute(ReadOnlySpan<byte>.Empty));
        var rng = new Random(11);
        foreach (int n in new[] { 1, 3, 64, 1000, 4099 })
        {
            var data = RandomPixels(n, rng.Next());
            Assert.Equal(ZLib.Crc32(data), Crc32.Compute(data));
            // Incremental updates equal one pass.
            Assert.Equal(Crc32.Compute(data), Crc32.Final(Crc32.Update(Crc32.Update(Crc32.Init, data.AsSpan(0, n / 2)), data.AsSpan(n / 2))));
        }
        var png = PngWriter.Encode(1, 1, new byte[] { 1, 2, 3 }, PngColor.Rgb8);
        Assert.Equal(Convert.FromHexString("0000000D49484452000000010000000108020000" + "00" + "907753DE"), png[8..33]);
        Assert.Equal(Convert.FromHexString("0000000049454E44AE426082"), png[^12..]);
    }

    [Fact]
    public void FastRowFiltersMatchReference()
    {
        var rng = new Random(2);
        foreach (int bpp in new[] { 1, 3, 4 })
            foreach (int n in new[] { bpp, 2 * bpp, 37 * bpp })
            {
                var row = RandomPixels(n, rng.Next());
                var prev = RandomPixels(n, rng.Next());
                for (int f = 0; f < 5; f++)
                    Assert.Equal(PngWriter.FilterRowReference(f, row, prev, bpp, new byte[n + 1]), PngWriter.FilterRow(f, row, prev, bpp, new byte[n + 1]));
            }
    }

    [Fact]
    public void PaethPredictorPicksNearestWithSpecTieBreaks()
    {
        // p = a + b − c; pa = |p − a|, pb = |p − b|, pc = |p − c|
        Assert.Equal(10, PngWriter.Paeth(10, 20, 30)); // p 0:  pa 10, pb 20, pc 30 → a
        Assert.Equal(20, PngWriter.Paeth(10, 20, 5));  // p 25: pa 15, pb 5,  pc 20 → b
        Assert.Equal(15, PngWriter.Paeth(10, 20, 15)); // p 15: pa 5,  pb 5,  pc 0  → c
        Assert.Equal(8, PngWriter.Paeth(8, 11, 10));   // p 9:  pa 1,  pb 2,  pc 1  → tie a/c goes to a
        Assert.Equal(8, PngWriter.Paeth(11, 8, 10));   // p 9:  pa 2,  pb 1,  pc 1  → tie b/c goes to b
    }

    [Fact]
    public void WriteGoesToDiskAtomically()
    {
        using var dir = new TempDir();
        var pixels = GradientPixels(9, 4, 4);
        string path = dir.File("figs", "x.png");
        PngWriter.Write(path, 9, 4, pixels, PngColor.Rgba8);
        AssertDecodesTo(File.ReadAllBytes(path), 9, 4, PngColor.Rgba8, pixels);
        Assert.Empty(dir.TempFiles());
    }

    [Fact]
    public void BadArgumentsThrow()
    {
        Assert.Throws<ArgumentException>(() => PngWriter.Encode(2, 2, new byte[11], PngColor.Rgb8));
        Assert.Throws<ArgumentException>(() => PngWriter.Encode(0, 2, Array.Empty<byte>(), PngColor.Gray8));
        Assert.Throws<ArgumentException>(() => PngWriter.Encode(2, -1, Array.Empty<byte>(), PngColor.Gray8));
        Assert.Throws<ArgumentException>(() => PngWriter.Encode(70000, 70000, new byte[1], PngColor.Rgba8));
    }

    // ---- Canvas ----

    [Fact]
    public void FillRectClipsAndDrawLineHitsBothEnds()
    {
        var c = new Canvas(10, 8);
        c.FillRect(-3, 6, 5, 10, Rgb.Red); // covers x 0..1, y 6..7
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 10; x++)
                Assert.Equal(x <= 1 && y >= 6 ? Rgb.Red : Rgb.White, c.GetPixel(x, y));
        c.FillRect(5, 5, 0, 3, Rgb.Black); // empty: no effect
        Assert.Equal(Rgb.White, c.GetPixel(5, 5));

        var d = new Canvas(10, 10);
        d.DrawLine(1, 1, 8, 4, Rgb.Blue);
        Assert.Equal(Rgb.Blue, d.GetPixel(1, 1));
        Assert.Equal(Rgb.Blue, d.GetPixel(8, 4));
        for (int x = 1; x <= 8; x++) // an x-major line has exactly one pixel per column
            Assert.Equal(1, Enumerable.Range(0, 10).Count(y => d.GetPixel(x, y) == Rgb.Blue));
        Assert.Equal(8, CountColor(d, Rgb.Blue));
        d.DrawLine(-5, -5, 20, 20, Rgb.Green); // clipped diagonal
        for (int i = 0; i < 10; i++) Assert.Equal(Rgb.Green, d.GetPixel(i, i));
        d.DrawRect(0, 0, 10, 10, Rgb.Black);
        Assert.Equal(Rgb.Black, d.GetPixel(9, 5));
        Assert.Equal(Rgb.Black, d.GetPixel(3, 0));
    }

    private static int CountColor(Canvas c, Rgb color)
    {
        int n = 0;
        for (int y = 0; y < c.Height; y++)
            for (int x = 0; x < c.Width; x++)
                if (c.GetPixel(x, y) == color) n++;
        return n;
    }

    [Fact]
    public void TextDrawsGlyphBitmaps()
    {
        var c = new Canvas(20, 20);
        int end = c.DrawText(1, 2, "1", Rgb.Black, scale: 2);
        Assert.Equal(1 + 12, end);
        // '1' = ..#.. / .##.. / ..#.. ×4 / .###. ; each font pixel a 2×2 block at (1 + 2·col, 2 + 2·row)
        string[] rows = { "..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###." };
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++)
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++)
                        Assert.Equal(rows[r][col] == '#' ? Rgb.Black : Rgb.White, c.GetPixel(1 + 2 * col + dx, 2 + 2 * r + dy));
        Assert.Equal(4 * (1 + 2 + 1 + 1 + 1 + 1 + 3), CountColor(c, Rgb.Black));

        // Every character of a label set is in the font, distinct, and missing ones draw a box.
        const string label = "W4A8 top-1: 71.25% (MimiQ) [ViT-S/16] q=k*v, x<y>z!?'\"#|^_;";
        Assert.All(label, ch => Assert.True(Canvas.HasGlyph(ch), $"no glyph for '{ch}'"));
        var glyphs = label.Distinct().Select(Canvas.Glyph).ToList();
        Assert.Equal(glyphs.Count, glyphs.Distinct().Count());
        Assert.False(Canvas.HasGlyph('µ'));
        var box = new Canvas(6, 8);
        box.DrawText(0, 0, "µ", Rgb.Black);
        Assert.Equal(2 * 5 + 2 * 5, CountColor(box, Rgb.Black)); // hollow 5×7 outline

        Assert.Equal(6 * 3 - 1, Canvas.TextWidth("abc"));
        Assert.Equal((6 * 4 - 1) * 2, Canvas.TextWidth("ab\nlong", 2));
        var two = new Canvas(20, 30);
        two.DrawText(0, 0, ".\n.", Rgb.Black);
        Assert.Equal(Rgb.Black, two.GetPixel(2, 5));              // '.' occupies rows 5-6, cols 1-2
        Assert.Equal(Rgb.Black, two.GetPixel(2, 5 + Canvas.LineHeight));
    }

    [Fact]
    public void HeatmapUsesViridisEndsAndGrayForNaN()
    {
        Assert.Equal(new Rgb(0x44, 0x01, 0x54), Canvas.Viridis(0f));
        Assert.Equal(new Rgb(0x21, 0x90, 0x8C), Canvas.Viridis(0.5f));
        Assert.Equal(new Rgb(0xFD, 0xE7, 0x25), Canvas.Viridis(1f));
        Assert.Equal(Canvas.Viridis(1f), Canvas.Viridis(7f));
        Assert.Equal(Canvas.Viridis(0f), Canvas.Viridis(-1f));
        // Luminance rises monotonically along the map (what makes viridis readable in gray).
        double Lum(Rgb c) => 0.2126 * c.R + 0.7152 * c.G + 0.0722 * c.B;
        for (int i = 1; i <= 64; i++) Assert.True(Lum(Canvas.Viridis(i / 64f)) > Lum(Canvas.Viridis((i - 1) / 64f)));

        var c = new Canvas(12, 12);
        var v = new float[,] { { -1f, 0f }, { float.NaN, 3f } };
        c.DrawHeatmap(2, 2, v, cellSize: 4);
        Assert.Equal(Canvas.Viridis(0f), c.GetPixel(2, 2));
        Assert.Equal(Canvas.Viridis(0f), c.GetPixel(5, 5));
        Assert.Equal(Canvas.Viridis(0.25f), c.GetPixel(6, 2));
        Assert.Equal(Rgb.Gray, c.GetPixel(2, 6));
        Assert.Equal(Canvas.Viridis(1f), c.GetPixel(9, 9));
        Assert.Equal(Rgb.White, c.GetPixel(10, 10));
        Assert.Equal(Rgb.White, c.GetPixel(1, 1));
        c.DrawHeatmap(0, 0, new float[] { 5f }, 1, 1, cellSize: 1, min: 0f, max: 10f);
        Assert.Equal(Canvas.Viridis(0.5f), c.GetPixel(0, 0));
        Assert.Throws<ArgumentException>(() => c.DrawHeatmap(0, 0, new float[5], 2, 3, 1));
    }

    [Fact]
    public void BarsScaleToTheTallestValue()
    {
        var c = new Canvas(8, 10);
        c.DrawBars(0, 0, 8, 10, new[] { 1f, 0f, 2f, float.NaN }, Rgb.Blue);
        int Column(int x) => Enumerable.Range(0, 10).Count(y => c.GetPixel(x, y) == Rgb.Blue);
        Assert.Equal(new[] { 5, 5, 0, 0, 10, 10, 0, 0 }, Enumerable.Range(0, 8).Select(Column));
        Assert.Equal(Rgb.Blue, c.GetPixel(0, 9));  // bars rise from the bottom
        Assert.Equal(Rgb.White, c.GetPixel(0, 4));
    }

    [Fact]
    public void CanvasSavesAsRgbPng()
    {
        using var dir = new TempDir();
        var c = new Canvas(37, 23, Rgb.LightGray);
        c.DrawHeatmap(1, 1, Enumerable.Range(0, 20).Select(i => (float)i).ToArray(), 4, 5, 3);
        c.DrawText(17, 2, "ok 1.5", Rgb.Black);
        c.DrawLine(0, 22, 36, 0, Rgb.Red);
        string path = dir.File("fig.png");
        c.SavePng(path);
        AssertDecodesTo(File.ReadAllBytes(path), 37, 23, PngColor.Rgb8, c.Pixels);
        Assert.Equal(c.EncodePng(), File.ReadAllBytes(path));
    }
}
