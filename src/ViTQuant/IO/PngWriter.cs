// PNG encoder for 8-bit gray, RGB and RGBA images (ISO/IEC 15948; https://www.w3.org/TR/png/).
//
//   file  = 89 50 4E 47 0D 0A 1A 0A, IHDR, IDAT+, IEND
//   chunk = length (u32 big-endian, data only) | type (4 ASCII) | data | CRC-32 of type+data
//   IHDR  = width, height (u32 BE), bit depth 8, colour type (0 gray, 2 RGB, 6 RGBA), compression 0,
//           filter method 0, interlace 0
//   IDAT  = zlib stream of the scanlines, each prefixed by its filter type byte
//
// Filtering: each row gets the filter (None, Sub, Up, Average, Paeth) whose output has the smallest sum
// of |signed byte| — the "minimum sum of absolute differences" heuristic libpng uses, which makes
// smooth images (heat maps, plots) compress several times better than filter 0 alone.
// CRC-32 is the ISO-HDLC one (reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF), computed
// with the classic 256-entry table.
using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace ViTQuant.IO;

/// <summary>Pixel layouts the PNG writer accepts: 8 bits per channel, rows top to bottom, no padding.</summary>
public enum PngColor
{
    /// <summary>One byte per pixel (luminance).</summary>
    Gray8,
    /// <summary>Three bytes per pixel: R, G, B.</summary>
    Rgb8,
    /// <summary>Four bytes per pixel: R, G, B, A (straight, not premultiplied alpha).</summary>
    Rgba8,
}

/// <summary>Encodes 8-bit images as PNG.</summary>
public static class PngWriter
{
    private static readonly byte[] Signature = { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A };

    // Larger images are split over several IDAT chunks; decoders concatenate them.
    private const int MaxIdatBytes = 1 << 20;

    /// <summary>Bytes per pixel of <paramref name="color"/>.</summary>
    public static int Channels(PngColor color) => color switch
    {
        PngColor.Gray8 => 1,
        PngColor.Rgb8 => 3,
        PngColor.Rgba8 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(color), color, "unknown PNG colour layout"),
    };

    /// <summary>Encodes the image and writes it atomically (temp file + rename) to <paramref name="path"/>.</summary>
    /// <exception cref="ArgumentException">Non-positive size, or <paramref name="pixels"/> length ≠ width·height·channels.</exception>
    /// <exception cref="ViTQuantException">The file cannot be written.</exception>
    public static void Write(string path, int width, int height, ReadOnlySpan<byte> pixels, PngColor color)
    {
        var png = Encode(width, height, pixels, color);
        AtomicFile.Write(path, s => s.Write(png));
    }

    /// <summary>The PNG file bytes for the image, with per-row adaptive filtering.</summary>
    /// <exception cref="ArgumentException">Non-positive size, or <paramref name="pixels"/> length ≠ width·height·channels.</exception>
    public static byte[] Encode(int width, int height, ReadOnlySpan<byte> pixels, PngColor color) =>
        Encode(width, height, pixels, color, forcedFilter: -1);

    /// <summary>As <see cref="Encode(int,int,ReadOnlySpan{byte},PngColor)"/>; forcedFilter 0..4 uses that filter on every row (tests).</summary>
    internal static byte[] Encode(int width, int height, ReadOnlySpan<byte> pixels, PngColor color, int forcedFilter)
    {
        int bpp = Channels(color);
        if (width <= 0 || height <= 0) throw new ArgumentException($"PNG size must be positive, got {width}x{height}");
        long rowBytes = (long)width * bpp;
        if (rowBytes + 1 > int.MaxValue / height) throw new ArgumentException($"PNG {width}x{height} is too large to encode in memory");
        if (pixels.Length != rowBytes * height)
            throw new ArgumentException($"{color} image {width}x{height} needs {rowBytes * height} bytes, got {pixels.Length}");
        if (forcedFilter is < -1 or > 4) throw new ArgumentOutOfRangeException(nameof(forcedFilter));

        var output = new MemoryStream();
        output.Write(Signature);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(0), (uint)width);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), (uint)height);
        ihdr[8] = 8; // bit depth
        ihdr[9] = color switch { PngColor.Gray8 => 0, PngColor.Rgb8 => 2, _ => 6 };
        // bytes 10..12: compression 0 (deflate), filter method 0 (adaptive, five types), interlace 0 (none)
        WriteChunk(output, "IHDR", ihdr);

        var zdata = new MemoryStream();
        using (var z = new ZLibStream(zdata, CompressionLevel.Optimal, leaveOpen: true))
        {
            int n = (int)rowBytes;
            var prev = new byte[n]; // the row above the first row is all zero
            var candidates = new byte[5][];
            for (int f = 0; f < 5; f++) candidates[f] = new byte[n + 1];
            for (int y = 0; y < height; y++)
            {
                var row = pixels.Slice(y * n, n);
                byte[] best = forcedFilter >= 0 ? FilterRow(forcedFilter, row, prev, bpp, candidates[forcedFilter]) : ChooseFilter(row, prev, bpp, candidates);
                z.Write(best);
                row.CopyTo(prev);
            }
        }
        var idat = zdata.GetBuffer().AsSpan(0, (int)zdata.Length);
        for (int off = 0; off < idat.Length; off += MaxIdatBytes)
            WriteChunk(output, "IDAT", idat.Slice(off, Math.Min(MaxIdatBytes, idat.Length - off)));
        WriteChunk(output, "IEND", ReadOnlySpan<byte>.Empty);
        return output.ToArray();
    }

    private static byte[] ChooseFilter(ReadOnlySpan<byte> row, ReadOnlySpan<byte> prev, int bpp, byte[][] candidates)
    {
        byte[] best = candidates[0];
        long bestCost = long.MaxValue;
        for (int f = 0; f < 5; f++)
        {
            var c = FilterRow(f, row, prev, bpp, candidates[f]);
            long cost = 0;
            for (int i = 1; i < c.Length; i++) cost += Math.Abs((int)(sbyte)c[i]);
            if (cost < bestCost) { bestCost = cost; best = c; }
        }
        return best;
    }

    /// <summary>
    /// Writes filter byte <paramref name="type"/> then the filtered row into <paramref name="dst"/> (length n+1).
    /// a = left pixel's byte, b = byte above, c = above-left (0 outside the image); all arithmetic mod 256.
    /// </summary>
    internal static byte[] FilterRow(int type, ReadOnlySpan<byte> row, ReadOnlySpan<byte> prev, int bpp, byte[] dst)
    {
        dst[0] = (byte)type;
        var o = dst.AsSpan(1, row.Length);
        int n = row.Length, k = Math.Min(bpp, n);
        // One loop per filter (not a switch per byte): the first pixel has no left neighbour (a = c = 0).
        switch (type)
        {
            case 0:
                row.CopyTo(o);
                break;
            case 1:
                row[..k].CopyTo(o);
                for (int i = k; i < n; i++) o[i] = (byte)(row[i] - row[i - bpp]);
                break;
            case 2:
                for (int i = 0; i < n; i++) o[i] = (byte)(row[i] - prev[i]);
                break;
            case 3:
                for (int i = 0; i < k; i++) o[i] = (byte)(row[i] - (prev[i] >> 1));
                for (int i = k; i < n; i++) o[i] = (byte)(row[i] - ((row[i - bpp] + prev[i]) >> 1));
                break;
            default:
                for (int i = 0; i < k; i++) o[i] = (byte)(row[i] - prev[i]); // Paeth(0, b, 0) = b
                for (int i = k; i < n; i++) o[i] = (byte)(row[i] - Paeth(row[i - bpp], prev[i], prev[i - bpp]));
                break;
        }
        return dst;
    }

    /// <summary>The reference twin of <see cref="FilterRow"/>: the spec's formula, one byte at a time.</summary>
    internal static byte[] FilterRowReference(int type, ReadOnlySpan<byte> row, ReadOnlySpan<byte> prev, int bpp, byte[] dst)
    {
        dst[0] = (byte)type;
        for (int i = 0; i < row.Length; i++)
        {
            int a = i >= bpp ? row[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
            int predictor = type switch { 0 => 0, 1 => a, 2 => b, 3 => (a + b) >> 1, _ => Paeth(a, b, c) };
            dst[i + 1] = (byte)(row[i] - predictor);
        }
        return dst;
    }

    /// <summary>The Paeth predictor: whichever of a, b, c is closest to a + b − c (ties prefer a, then b).</summary>
    internal static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    private static void WriteChunk(Stream s, string type, ReadOnlySpan<byte> data)
    {
        Span<byte> head = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(head, (uint)data.Length);
        Encoding.ASCII.GetBytes(type, head[4..]);
        uint crc = Crc32.Update(Crc32.Update(Crc32.Init, head[4..]), data);
        Span<byte> tail = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(tail, Crc32.Final(crc));
        s.Write(head);
        s.Write(data);
        s.Write(tail);
    }
}

/// <summary>CRC-32 (ISO-HDLC / zlib / PNG): reflected polynomial 0xEDB88320, table-driven, one byte at a time.</summary>
internal static class Crc32
{
    public const uint Init = 0xFFFFFFFF;

    private static readonly uint[] Table = BuildTable();

    private static uint[] BuildTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }

    /// <summary>Feeds <paramref name="data"/> into a running (pre-final-xor) register.</summary>
    public static uint Update(uint crc, ReadOnlySpan<byte> data)
    {
        foreach (byte b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc;
    }

    public static uint Final(uint crc) => crc ^ 0xFFFFFFFF;

    /// <summary>The CRC-32 of <paramref name="data"/>.</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => Final(Update(Init, data));
}
