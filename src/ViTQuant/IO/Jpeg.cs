// JPEG decoding and encoding through the TurboJPEG C API (libturbojpeg.so.0, Debian libturbojpeg0),
// bound at run time so the library stays optional until an image is actually read. Also home of the
// format-sniffing entry point ImageDecoder and the DecodedImage result shared with PngReader.
//
// Fidelity with the PyTorch/timm pipeline: Pillow decodes JPEG with libjpeg(-turbo) using the
// accurate integer IDCT (JDCT_ISLOW) and fancy upsampling; TurboJPEG's defaults (no TJFLAG_FASTDCT,
// no TJFLAG_FASTUPSAMPLE) are the same, so the decoded RGB bytes match Pillow's for the same
// libjpeg-turbo version. CMYK/YCCK JPEGs (a handful in ImageNet) are decoded to CMYK and converted
// with Pillow's formula, assuming the Adobe inverted convention that Photoshop writes (and that
// Pillow assumes whenever an Adobe marker is present).
//
// TurboJPEG handles are not thread-safe, so each call makes and destroys its own; the cost is small
// next to the decode itself.
using System.Runtime.InteropServices;

namespace ViTQuant.IO;

/// <summary>An 8-bit image: rows top to bottom, pixels interleaved (HWC), 1 (gray) or 3 (RGB) channels.</summary>
internal readonly record struct DecodedImage(int Width, int Height, int Channels, byte[] Pixels);

/// <summary>Chroma subsampling of an encoded JPEG (values are TurboJPEG's TJSAMP_* constants).</summary>
internal enum JpegSubsampling
{
    /// <summary>No chroma subsampling (4:4:4).</summary>
    S444 = 0,
    /// <summary>Chroma halved horizontally (4:2:2).</summary>
    S422 = 1,
    /// <summary>Chroma halved horizontally and vertically (4:2:0).</summary>
    S420 = 2,
    /// <summary>Grayscale: luma only.</summary>
    Gray = 3,
}

/// <summary>JPEG decoding/encoding via libjpeg-turbo's TurboJPEG API.</summary>
internal static unsafe class Jpeg
{
    private const int TJPF_RGB = 0, TJPF_GRAY = 6, TJPF_CMYK = 11;
    private const int TJCS_GRAY = 2, TJCS_CMYK = 3, TJCS_YCCK = 4;
    private const int TJERR_WARNING = 0;
    private const string Package = "libturbojpeg0";

    internal sealed class Api
    {
        public delegate* unmanaged<nint> InitDecompress;
        public delegate* unmanaged<nint> InitCompress;
        public delegate* unmanaged<nint, byte*, nuint, int*, int*, int*, int*, int> DecompressHeader3;
        public delegate* unmanaged<nint, byte*, nuint, byte*, int, int, int, int, int, int> Decompress2;
        public delegate* unmanaged<nint, byte*, int, int, int, int, byte**, nuint*, int, int, int, int> Compress2;
        public delegate* unmanaged<nint, int> Destroy;
        public delegate* unmanaged<byte*, void> Free;
        public delegate* unmanaged<nint, byte*> GetErrorStr2;
        public delegate* unmanaged<nint, int> GetErrorCode;
    }

    private static readonly Lazy<(Api? Api, string Error)> _api = new(() => LoadApi(new[] { "libturbojpeg.so.0", "libturbojpeg.so", "turbojpeg" }));

    /// <summary>True when libturbojpeg could be loaded.</summary>
    public static bool IsAvailable => _api.Value.Api != null;

    /// <summary>Binds the TurboJPEG functions from the first library in <paramref name="names"/> that loads and exports them all.</summary>
    internal static (Api? Api, string Error) LoadApi(string[] names)
    {
        foreach (var name in names)
        {
            if (!NativeLibrary.TryLoad(name, out var lib)) continue;
            nint Get(string sym) => NativeLibrary.TryGetExport(lib, sym, out var p) ? p : 0;
            var f = new nint[] { Get("tjInitDecompress"), Get("tjInitCompress"), Get("tjDecompressHeader3"), Get("tjDecompress2"),
                Get("tjCompress2"), Get("tjDestroy"), Get("tjFree"), Get("tjGetErrorStr2"), Get("tjGetErrorCode") };
            if (Array.IndexOf(f, (nint)0) >= 0)
                return (null, $"{name} is too old (TurboJPEG 2.0 or later is needed); install the Debian package {Package}");
            return (new Api
            {
                InitDecompress = (delegate* unmanaged<nint>)f[0],
                InitCompress = (delegate* unmanaged<nint>)f[1],
                DecompressHeader3 = (delegate* unmanaged<nint, byte*, nuint, int*, int*, int*, int*, int>)f[2],
                Decompress2 = (delegate* unmanaged<nint, byte*, nuint, byte*, int, int, int, int, int, int>)f[3],
                Compress2 = (delegate* unmanaged<nint, byte*, int, int, int, int, byte**, nuint*, int, int, int, int>)f[4],
                Destroy = (delegate* unmanaged<nint, int>)f[5],
                Free = (delegate* unmanaged<byte*, void>)f[6],
                GetErrorStr2 = (delegate* unmanaged<nint, byte*>)f[7],
                GetErrorCode = (delegate* unmanaged<nint, int>)f[8],
            }, "");
        }
        return (null, $"cannot load the TurboJPEG library ({string.Join(", ", names)}); install the Debian package {Package}");
    }

    private static Api GetApi(string what)
    {
        var (api, error) = _api.Value;
        return api ?? throw new ViTQuantException($"{what}: {error}");
    }

    /// <summary>
    /// Decodes a JPEG held in memory. Grayscale JPEGs give 1 channel, all others 3 (RGB; CMYK/YCCK
    /// are converted to RGB). Throws ViTQuantException naming <paramref name="name"/> when the data is
    /// not a decodable JPEG, is truncated, or libturbojpeg is missing. Recoverable libjpeg warnings
    /// (for example extraneous bytes before a marker) are tolerated, as Pillow tolerates them.
    /// </summary>
    public static DecodedImage Decode(ReadOnlySpan<byte> data, string name)
    {
        var api = GetApi(name);
        nint h = api.InitDecompress();
        if (h == 0) throw new ViTQuantException($"{name}: tjInitDecompress failed");
        try
        {
            fixed (byte* src = data)
            {
                int w, ht, subsamp, cs;
                if (api.DecompressHeader3(h, src, (nuint)data.Length, &w, &ht, &subsamp, &cs) != 0)
                    throw new ViTQuantException($"{name}: not a readable JPEG ({ErrorString(api, h)})");
                if (w <= 0 || ht <= 0 || (long)w * ht > 1L << 28)
                    throw new ViTQuantException($"{name}: JPEG has unsupported dimensions {w}x{ht}");
                bool gray = cs == TJCS_GRAY, cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
                int pf = gray ? TJPF_GRAY : cmyk ? TJPF_CMYK : TJPF_RGB;
                int bpp = gray ? 1 : cmyk ? 4 : 3;
                var buf = new byte[(long)w * ht * bpp];
                fixed (byte* dst = buf)
                {
                    if (api.Decompress2(h, src, (nuint)data.Length, dst, w, w * bpp, ht, pf, 0) != 0)
                    {
                        string msg = ErrorString(api, h);
                        // A premature end of data is only a warning to libjpeg (it fills the rest with
                        // gray); Pillow refuses such files, and a half-gray image would silently skew
                        // accuracy, so it is an error here. Other warnings leave a usable image.
                        if (api.GetErrorCode(h) != TJERR_WARNING || msg.Contains("Premature end", StringComparison.OrdinalIgnoreCase))
                            throw new ViTQuantException($"{name}: corrupt JPEG ({msg})");
                    }
                }
                return cmyk ? new DecodedImage(w, ht, 3, InvertedCmykToRgb(buf)) : new DecodedImage(w, ht, gray ? 1 : 3, buf);
            }
        }
        finally { api.Destroy(h); }
    }

    /// <summary>
    /// Pillow's CMYK→RGB (Convert.c cmyk2rgb) applied to Adobe-inverted CMYK samples c' = 255 − C:
    /// R = (255 − K) − round((255 − K)·C / 255), with Pillow's MULDIV255 rounding.
    /// </summary>
    internal static byte[] InvertedCmykToRgb(ReadOnlySpan<byte> cmyk)
    {
        int n = cmyk.Length / 4;
        var rgb = new byte[n * 3];
        for (int i = 0; i < n; i++)
        {
            int nk = cmyk[4 * i + 3]; // 255 − K
            for (int c = 0; c < 3; c++)
            {
                int ink = 255 - cmyk[4 * i + c];
                int t = ink * nk + 128;
                int v = nk - (((t >> 8) + t) >> 8);
                rgb[3 * i + c] = (byte)Math.Clamp(v, 0, 255);
            }
        }
        return rgb;
    }

    /// <summary>
    /// Encodes 8-bit pixels (HWC; 1 channel = gray, 3 = RGB) as a baseline JPEG. quality is 1..100.
    /// Throws ArgumentException for bad sizes/settings and ViTQuantException when libturbojpeg is
    /// missing or fails.
    /// </summary>
    public static byte[] Encode(ReadOnlySpan<byte> pixels, int width, int height, int channels, int quality = 95, JpegSubsampling subsampling = JpegSubsampling.S420)
    {
        if (channels != 1 && channels != 3) throw new ArgumentException($"JPEG encode needs 1 or 3 channels, got {channels}");
        if (channels == 1) subsampling = JpegSubsampling.Gray;
        return EncodeRaw(pixels, width, height, channels == 1 ? TJPF_GRAY : TJPF_RGB, channels, quality, subsampling);
    }

    /// <summary>Encodes CMYK pixels (4 bytes each, stored as TurboJPEG expects) into a YCCK JPEG; used by tests.</summary>
    internal static byte[] EncodeCmyk(ReadOnlySpan<byte> pixels, int width, int height, int quality)
        => EncodeRaw(pixels, width, height, TJPF_CMYK, 4, quality, JpegSubsampling.S444);

    private static byte[] EncodeRaw(ReadOnlySpan<byte> pixels, int width, int height, int pf, int bpp, int quality, JpegSubsampling subsampling)
    {
        if (width <= 0 || height <= 0) throw new ArgumentException($"JPEG encode: bad size {width}x{height}");
        if ((long)width * height * bpp != pixels.Length) throw new ArgumentException($"JPEG encode: {pixels.Length} bytes do not fill {width}x{height}x{bpp}");
        if (quality < 1 || quality > 100) throw new ArgumentException($"JPEG quality must be 1..100, got {quality}");
        var api = GetApi("JPEG encode");
        nint h = api.InitCompress();
        if (h == 0) throw new ViTQuantException("JPEG encode: tjInitCompress failed");
        byte* outBuf = null;
        try
        {
            nuint size = 0;
            fixed (byte* src = pixels)
            {
                if (api.Compress2(h, src, width, width * bpp, height, pf, &outBuf, &size, (int)subsampling, quality, 0) != 0)
                    throw new ViTQuantException($"JPEG encode failed ({ErrorString(api, h)})");
            }
            return new ReadOnlySpan<byte>(outBuf, checked((int)size)).ToArray();
        }
        finally
        {
            if (outBuf != null) api.Free(outBuf);
            api.Destroy(h);
        }
    }

    private static string ErrorString(Api api, nint h) => Marshal.PtrToStringUTF8((nint)api.GetErrorStr2(h)) ?? "unknown error";
}

/// <summary>Reads JPEG and PNG files, choosing the codec from the file's magic bytes (not its extension).</summary>
internal static class ImageDecoder
{
    private static ReadOnlySpan<byte> PngMagic => [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>
    /// Decodes the image file at <paramref name="path"/> into 8-bit HWC pixels (1 or 3 channels).
    /// Throws ViTQuantException naming the path when the file is missing, unreadable, not JPEG/PNG,
    /// or corrupt, or when the codec library is not installed.
    /// </summary>
    public static DecodedImage Decode(string path)
    {
        byte[] data;
        try { data = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ViTQuantException($"{path}: cannot read image file ({e.Message})", e);
        }
        return Decode(data, path);
    }

    /// <summary>Decodes an in-memory JPEG or PNG; <paramref name="name"/> is used in error messages.</summary>
    public static DecodedImage Decode(ReadOnlySpan<byte> data, string name)
    {
        if (data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return Jpeg.Decode(data, name);
        if (data.StartsWith(PngMagic)) return PngReader.Decode(data, name);
        throw new ViTQuantException($"{name}: not a JPEG or PNG image ({(data.Length == 0 ? "empty file" : "unrecognised header")})");
    }
}
