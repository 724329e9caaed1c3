// A small RGB raster for report figures (histograms, heat-map grids, labelled axes), saved as PNG.
// Everything clips to the canvas, so callers can draw without bounds arithmetic. Coordinates are pixels,
// x to the right and y downwards, origin at the top-left corner.
//
// Text uses a built-in 5×7 bitmap font (digits, both letter cases and common punctuation, in the style
// of the HD44780 character ROM); each glyph is 7 rows of 5 bits packed into a ulong, top row in the most
// significant byte, leftmost pixel in bit 4. A character without a glyph draws as a hollow 5×7 box so
// that it is visibly missing rather than silently dropped.
//
// The viridis colour map is interpolated linearly between 9 evenly spaced stops of matplotlib's viridis
// (the values R's viridisLite prints for viridis(9)); the interpolation differs from the 256-entry table
// by a few units per channel, which is invisible in a figure.
namespace ViTQuant.IO;

/// <summary>An 8-bit RGB colour.</summary>
public readonly record struct Rgb(byte R, byte G, byte B)
{
    public static Rgb Black => new(0, 0, 0);
    public static Rgb White => new(255, 255, 255);
    public static Rgb Gray => new(128, 128, 128);
    public static Rgb LightGray => new(211, 211, 211);
    public static Rgb Red => new(214, 39, 40);
    public static Rgb Green => new(44, 160, 44);
    public static Rgb Blue => new(31, 119, 180);
    public static Rgb Orange => new(255, 127, 14);
}

/// <summary>An RGB image buffer with clipped drawing primitives, a 5×7 font, a viridis heat map and PNG output.</summary>
public sealed class Canvas
{
    /// <summary>Glyph cell: 5×7 pixels plus one column and one row of spacing.</summary>
    public const int GlyphWidth = 5, GlyphHeight = 7, Advance = 6, LineHeight = 9;

    public int Width { get; }
    public int Height { get; }

    /// <summary>Pixels as R, G, B bytes, rows top to bottom (length Width·Height·3).</summary>
    public byte[] Pixels { get; }

    /// <summary>A canvas filled with <paramref name="background"/> (white by default).</summary>
    /// <exception cref="ArgumentException">Non-positive size or more than 2^31 − 1 bytes.</exception>
    public Canvas(int width, int height, Rgb? background = null)
    {
        if (width <= 0 || height <= 0) throw new ArgumentException($"canvas size must be positive, got {width}x{height}");
        if ((long)width * height * 3 > Array.MaxLength) throw new ArgumentException($"canvas {width}x{height} is too large");
        Width = width;
        Height = height;
        Pixels = new byte[width * height * 3];
        Clear(background ?? Rgb.White);
    }

    /// <summary>Fills the whole canvas.</summary>
    public void Clear(Rgb color) => FillRect(0, 0, Width, Height, color);

    /// <summary>The colour at (x, y).</summary>
    /// <exception cref="ArgumentOutOfRangeException">(x, y) is outside the canvas.</exception>
    public Rgb GetPixel(int x, int y)
    {
        if ((uint)x >= (uint)Width || (uint)y >= (uint)Height) throw new ArgumentOutOfRangeException(nameof(x), $"pixel ({x}, {y}) outside {Width}x{Height} canvas");
        int i = (y * Width + x) * 3;
        return new Rgb(Pixels[i], Pixels[i + 1], Pixels[i + 2]);
    }

    /// <summary>Sets (x, y); does nothing outside the canvas.</summary>
    public void SetPixel(int x, int y, Rgb color)
    {
        if ((uint)x >= (uint)Width || (uint)y >= (uint)Height) return;
        int i = (y * Width + x) * 3;
        Pixels[i] = color.R;
        Pixels[i + 1] = color.G;
        Pixels[i + 2] = color.B;
    }

    /// <summary>Fills the rectangle [x, x+w) × [y, y+h), clipped to the canvas.</summary>
    public void FillRect(int x, int y, int w, int h, Rgb color)
    {
        int x0 = Math.Max(x, 0), y0 = Math.Max(y, 0);
        int x1 = (int)Math.Min((long)x + w, Width), y1 = (int)Math.Min((long)y + h, Height);
        if (x0 >= x1 || y0 >= y1) return;
        var row = Pixels.AsSpan((y0 * Width + x0) * 3, (x1 - x0) * 3);
        for (int i = 0; i < row.Length; i += 3) { row[i] = color.R; row[i + 1] = color.G; row[i + 2] = color.B; }
        for (int yy = y0 + 1; yy < y1; yy++) row.CopyTo(Pixels.AsSpan((yy * Width + x0) * 3));
    }

    /// <summary>The one-pixel outline of the rectangle [x, x+w) × [y, y+h).</summary>
    public void DrawRect(int x, int y, int w, int h, Rgb color)
    {
        if (w <= 0 || h <= 0) return;
        FillRect(x, y, w, 1, color);
        FillRect(x, y + h - 1, w, 1, color);
        FillRect(x, y, 1, h, color);
        FillRect(x + w - 1, y, 1, h, color);
    }

    /// <summary>A one-pixel line from (x0, y0) to (x1, y1), both ends included (Bresenham), clipped.</summary>
    public void DrawLine(int x0, int y0, int x1, int y1, Rgb color)
    {
        long dx = Math.Abs((long)x1 - x0), dy = -Math.Abs((long)y1 - y0);
        int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
        long err = dx + dy;
        while (true)
        {
            SetPixel(x0, y0, color);
            if (x0 == x1 && y0 == y1) return;
            long e2 = 2 * err;
            if (e2 >= dy) { err += dy; x0 += sx; }
            if (e2 <= dx) { err += dx; y0 += sy; }
        }
    }

    /// <summary>
    /// Vertical bars for a histogram: values[i] becomes a bar in the i-th of values.Length equal slots across
    /// [x, x+w), rising from the bottom edge y+h−1, with height proportional to value / <paramref name="max"/>
    /// (default: the largest value). Negative and NaN values draw nothing.
    /// </summary>
    public void DrawBars(int x, int y, int w, int h, ReadOnlySpan<float> values, Rgb color, float? max = null)
    {
        if (values.IsEmpty || w <= 0 || h <= 0) return;
        float top = max ?? 0f;
        if (max == null) foreach (float v in values) if (v > top) top = v;
        if (!(top > 0)) return;
        for (int i = 0; i < values.Length; i++)
        {
            if (!(values[i] > 0)) continue;
            int left = x + (int)((long)i * w / values.Length), right = x + (int)((long)(i + 1) * w / values.Length);
            int bh = (int)MathF.Round(Math.Min(values[i] / top, 1f) * h);
            FillRect(left, y + h - bh, Math.Max(right - left, 1), bh, color);
        }
    }

    /// <summary>Heat map of a 2-D array: cell [r, c] is a cellSize×cellSize square at (x + c·cellSize, y + r·cellSize).</summary>
    public void DrawHeatmap(int x, int y, float[,] values, int cellSize, float? min = null, float? max = null)
    {
        ArgumentNullException.ThrowIfNull(values);
        int rows = values.GetLength(0), cols = values.GetLength(1);
        var flat = new float[rows * cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) flat[r * cols + c] = values[r, c];
        DrawHeatmap(x, y, flat, rows, cols, cellSize, min, max);
    }

    /// <summary>
    /// Heat map of a row-major rows×cols array with the viridis colour map: min (default: smallest finite value)
    /// maps to dark purple, max (default: largest finite value) to yellow, values outside clamp, NaN draws gray.
    /// </summary>
    /// <exception cref="ArgumentException">values.Length ≠ rows·cols, or cellSize &lt; 1.</exception>
    public void DrawHeatmap(int x, int y, ReadOnlySpan<float> values, int rows, int cols, int cellSize, float? min = null, float? max = null)
    {
        if (rows < 0 || cols < 0 || values.Length != (long)rows * cols) throw new ArgumentException($"heat map of {rows}x{cols} needs {(long)rows * cols} values, got {values.Length}");
        if (cellSize < 1) throw new ArgumentException($"heat map cell size must be at least 1, got {cellSize}");
        float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
        foreach (float v in values) if (float.IsFinite(v)) { lo = Math.Min(lo, v); hi = Math.Max(hi, v); }
        lo = min ?? lo;
        hi = max ?? hi;
        float range = hi - lo;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                float v = values[r * cols + c];
                // A constant map (range 0) is drawn mid-scale rather than divided by zero.
                Rgb color = float.IsNaN(v) ? Rgb.Gray : Viridis(range > 0 ? (v - lo) / range : 0.5f);
                FillRect(x + c * cellSize, y + r * cellSize, cellSize, cellSize, color);
            }
    }

    private static readonly Rgb[] ViridisStops =
    {
        new(0x44, 0x01, 0x54), new(0x47, 0x2D, 0x7B), new(0x3B, 0x52, 0x8B), new(0x2C, 0x72, 0x8E), new(0x21, 0x90, 0x8C),
        new(0x27, 0xAD, 0x81), new(0x5D, 0xC8, 0x63), new(0xAA, 0xDC, 0x32), new(0xFD, 0xE7, 0x25),
    };

    /// <summary>The viridis colour at t ∈ [0, 1] (clamped; NaN gives the t = 0 colour).</summary>
    public static Rgb Viridis(float t)
    {
        t = float.IsNaN(t) ? 0 : Math.Clamp(t, 0f, 1f);
        float pos = t * (ViridisStops.Length - 1);
        int i = Math.Min((int)pos, ViridisStops.Length - 2);
        float f = pos - i;
        Rgb a = ViridisStops[i], b = ViridisStops[i + 1];
        static byte Lerp(byte p, byte q, float f) => (byte)MathF.Round(p + (q - p) * f);
        return new Rgb(Lerp(a.R, b.R, f), Lerp(a.G, b.G, f), Lerp(a.B, b.B, f));
    }

    /// <summary>
    /// Draws <paramref name="text"/> with its top-left at (x, y), each font pixel a scale×scale square;
    /// '\n' starts a new line. Returns the x just past the end of the last line.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">scale &lt; 1.</exception>
    public int DrawText(int x, int y, string text, Rgb color, int scale = 1)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(scale, 1);
        int cx = x, cy = y;
        foreach (char ch in text)
        {
            if (ch == '\n') { cx = x; cy += LineHeight * scale; continue; }
            ulong bits = Glyph(ch);
            for (int row = 0; row < GlyphHeight; row++)
            {
                int line = (int)(bits >> (8 * (GlyphHeight - 1 - row))) & 0x1F;
                for (int col = 0; col < GlyphWidth; col++)
                    if ((line >> (GlyphWidth - 1 - col) & 1) != 0)
                        FillRect(cx + col * scale, cy + row * scale, scale, scale, color);
            }
            cx += Advance * scale;
        }
        return cx;
    }

    /// <summary>Width in pixels of the longest line of <paramref name="text"/> at <paramref name="scale"/> (without trailing spacing).</summary>
    public static int TextWidth(string text, int scale = 1)
    {
        int longest = text.Split('\n').Max(l => l.Length);
        return longest == 0 ? 0 : (longest * Advance - 1) * scale;
    }

    /// <summary>True when the font has a glyph for <paramref name="ch"/> (others draw as a hollow box).</summary>
    public static bool HasGlyph(char ch) => GlyphChars.Contains(ch);

    internal static ulong Glyph(char ch)
    {
        int i = GlyphChars.IndexOf(ch);
        return i >= 0 ? Glyphs[i] : MissingGlyph;
    }

    /// <summary>The canvas as PNG bytes (RGB, 8-bit).</summary>
    public byte[] EncodePng() => PngWriter.Encode(Width, Height, Pixels, PngColor.Rgb8);

    /// <summary>Writes the canvas as an RGB PNG, atomically.</summary>
    /// <exception cref="ViTQuantException">The file cannot be written.</exception>
    public void SavePng(string path) => PngWriter.Write(path, Width, Height, Pixels, PngColor.Rgb8);

    private const ulong MissingGlyph = 0x1F11111111111F;

    private const string GlyphChars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz .,:;-+=_/()[]%!?'\"<>*#|^";

    private static readonly ulong[] Glyphs =
    {
        0x0E11131519110E, 0x040C040404040E, 0x0E11010204081F, 0x1F02040201110E, 0x02060A121F0202, 0x1F101E0101110E, 0x0608101E11110E, 0x1F010204080808,
        0x0E11110E11110E, 0x0E11110F01020C, 0x0E1111111F1111, 0x1E11111E11111E, 0x0E11101010110E, 0x1C12111111121C, 0x1F10101E10101F, 0x1F10101E101010,
        0x0E11101711110F, 0x1111111F111111, 0x0E04040404040E, 0x0702020202120C, 0x11121418141211, 0x1010101010101F, 0x111B1515111111, 0x11111915131111,
        0x0E11111111110E, 0x1E11111E101010, 0x0E11111115120D, 0x1E11111E141211, 0x0F10100E01011E, 0x1F040404040404, 0x1111111111110E, 0x11111111110A04,
        0x1111111515150A, 0x11110A040A1111, 0x1111110A040404, 0x1F01020408101F, 0x00000E010F110F, 0x1010161911111E, 0x00000E1010110E, 0x01010D1311110F,
        0x00000E111F100E, 0x0609081C080808, 0x000F11110F010E, 0x10101619111111, 0x04000C0404040E, 0x0200060202120C, 0x10101214181412, 0x0C04040404040E,
        0x00001A15151111, 0x00001619111111, 0x00000E1111110E, 0x00001E111E1010, 0x00000D130F0101, 0x00001619101010, 0x00000E100E011E, 0x08081C08080906,
        0x0000111111130D, 0x00001111110A04, 0x0000111115150A, 0x0000110A040A11, 0x000011110F010E, 0x00001F0204081F, 0x00000000000000, 0x00000000000C0C,
        0x000000000C0408, 0x000C0C000C0C00, 0x000C0C000C0408, 0x0000001F000000, 0x0004041F040400, 0x00001F001F0000, 0x0000000000001F, 0x00010204081000,
        0x02040808080402, 0x08040202020408, 0x0E08080808080E, 0x0E02020202020E, 0x18190204081303, 0x04040404000004, 0x0E110102040004, 0x0C040800000000,
        0x0A0A0A00000000, 0x02040810080402, 0x08040201020408, 0x0004150E150400, 0x0A0A1F0A1F0A0A, 0x04040404040404, 0x040A1100000000,
    };
}
