// Safetensors reader with strict validation.
//
// File layout (https://github.com/huggingface/safetensors):
//   [0, 8)        N, the header length, unsigned 64-bit little-endian
//   [8, 8+N)      UTF-8 JSON object: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...,
//                 optional "__metadata__": {"key": "value", ...} (string values only)}
//   [8+N, end)    the data buffer; tensor bytes are [b, e) relative to its start, little-endian, row-major
//
// Every structural property is checked before a single tensor is handed out, so a truncated download
// or a hand-edited header fails at Read() with one line naming the file, the tensor and the fault,
// rather than later as a wrong number. Unused bytes between or after tensors are allowed (the spec's
// writers never produce them, but they are harmless); overlapping ranges are not (two tensors sharing
// bytes is either corruption or an attack on readers that write through views).
using System.Buffers.Binary;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using ViTQuant.Tensors;

namespace ViTQuant.IO;

/// <summary>Where one tensor lives in a safetensors file.</summary>
/// <param name="Name">Tensor name as stored in the header.</param>
/// <param name="DType">Safetensors dtype string ("F32", "BF16", "I8", ...).</param>
/// <param name="Shape">Dimensions, outermost first (empty for a scalar).</param>
/// <param name="Begin">First byte, relative to the start of the data buffer.</param>
/// <param name="End">One past the last byte, relative to the start of the data buffer.</param>
public sealed record TensorInfo(string Name, string DType, int[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (product of Shape; 1 for a scalar).</summary>
    public long Numel => SafeTensorsDType.Numel(Shape);

    /// <summary>End − Begin.</summary>
    public long ByteLength => End - Begin;
}

/// <summary>The dtype strings of the safetensors format and their element sizes.</summary>
internal static class SafeTensorsDType
{
    private static readonly Dictionary<string, int> Sizes = new(StringComparer.Ordinal)
    {
        ["BOOL"] = 1, ["U8"] = 1, ["I8"] = 1, ["F8_E5M2"] = 1, ["F8_E4M3"] = 1,
        ["I16"] = 2, ["U16"] = 2, ["F16"] = 2, ["BF16"] = 2,
        ["I32"] = 4, ["U32"] = 4, ["F32"] = 4,
        ["I64"] = 8, ["U64"] = 8, ["F64"] = 8,
    };

    /// <summary>All dtype strings this reader understands (all of them convert to float32).</summary>
    public static IReadOnlyCollection<string> All => Sizes.Keys;

    /// <summary>True when <paramref name="dtype"/> is one of <see cref="All"/> (case-sensitive, as in the format).</summary>
    public static bool IsKnown(string dtype) => Sizes.ContainsKey(dtype);

    /// <summary>Bytes per element of <paramref name="dtype"/>.</summary>
    /// <exception cref="ArgumentException">Unknown dtype.</exception>
    public static int SizeOf(string dtype) => Sizes.TryGetValue(dtype, out int s) ? s : throw new ArgumentException($"unknown safetensors dtype '{dtype}'");

    /// <summary>Product of the dimensions (1 for rank 0).</summary>
    /// <exception cref="OverflowException">The product does not fit in 64 bits.</exception>
    public static long Numel(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (int d in shape) n = checked(n * d);
        return n;
    }
}

/// <summary>A safetensors file read fully into memory and validated.</summary>
public sealed class SafeTensorsFile
{
    /// <summary>Largest header accepted, as in the reference implementation (guards against memory bombs).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly byte[] _bytes;
    private readonly long _dataStart;
    private readonly Dictionary<string, TensorInfo> _infos;
    private readonly List<string> _names;

    /// <summary>The path the file was read from (used in error messages).</summary>
    public string Path { get; }

    /// <summary>The "__metadata__" string map (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensor names in the order they appear in the header.</summary>
    public IReadOnlyList<string> Names { get; }

    private SafeTensorsFile(string path, byte[] bytes, long dataStart, List<string> names, Dictionary<string, TensorInfo> infos, Dictionary<string, string> metadata)
    {
        Path = path;
        _bytes = bytes;
        _dataStart = dataStart;
        _names = names;
        _infos = infos;
        Names = names.AsReadOnly();
        Metadata = metadata.AsReadOnly();
    }

    /// <summary>
    /// Reads the whole file and validates header and layout: header length (nonzero, at most 100 MB, inside
    /// the file), UTF-8 JSON object, each entry's dtype/shape/data_offsets (types, known dtype, non-negative
    /// dims, begin ≤ end, byte count = numel × dtype size, inside the data buffer), no overlapping ranges,
    /// string-only metadata, and no duplicate keys anywhere.
    /// </summary>
    /// <exception cref="ViTQuantException">The file is missing, unreadable or fails any check; the one-line
    /// message names the file, the tensor at fault when there is one, and the problem.</exception>
    public static SafeTensorsFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        { throw new ViTQuantException($"{path}: file not found", e); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new ViTQuantException($"{path}: cannot read file: {e.Message}", e); }
        return Parse(path, bytes);
    }

    /// <summary>Validates and wraps an in-memory safetensors image; <paramref name="path"/> only labels errors.</summary>
    /// <exception cref="ViTQuantException">As <see cref="Read"/>.</exception>
    internal static SafeTensorsFile Parse(string path, byte[] bytes)
    {
        if (bytes.Length < 8)
            throw new ViTQuantException($"{path}: not a safetensors file: {bytes.Length} bytes is shorter than the 8-byte header length field");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (n == 0) throw new ViTQuantException($"{path}: header length is 0");
        if (n > MaxHeaderBytes) throw new ViTQuantException($"{path}: header length {n} exceeds the {MaxHeaderBytes}-byte limit");
        if (n > (ulong)(bytes.Length - 8))
            throw new ViTQuantException($"{path}: header length {n} runs past the end of the file ({bytes.Length} bytes)");
        var header = bytes.AsSpan(8, (int)n);
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw new ViTQuantException($"{path}: header is not valid UTF-8");

        JsonDocument doc;
        try { doc = JsonDocument.Parse(bytes.AsMemory(8, (int)n)); }
        catch (JsonException e) { throw new ViTQuantException($"{path}: header is not valid JSON: {OneLine(e.Message)}", e); }
        using (doc)
        {
            long dataStart = 8 + (long)n, bufferLength = bytes.Length - dataStart;
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ViTQuantException($"{path}: header is a JSON {Kind(root)}, expected an object");
            var names = new List<string>();
            var infos = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            Dictionary<string, string>? metadata = null;
            foreach (var prop in root.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (metadata != null) throw new ViTQuantException($"{path}: duplicate key \"__metadata__\" in header");
                    metadata = ParseMetadata(path, prop.Value);
                    continue;
                }
                if (infos.ContainsKey(prop.Name)) throw new ViTQuantException($"{path}: duplicate tensor name {Q(prop.Name)} in header");
                var info = ParseEntry(path, prop.Name, prop.Value, bufferLength);
                infos.Add(prop.Name, info);
                names.Add(prop.Name);
            }
            CheckOverlaps(path, infos.Values);
            return new SafeTensorsFile(path, bytes, dataStart, names, infos, metadata ?? new Dictionary<string, string>());
        }
    }

    private static Dictionary<string, string> ParseMetadata(string path, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object) throw new ViTQuantException($"{path}: \"__metadata__\" is a JSON {Kind(value)}, expected an object of strings");
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var kv in value.EnumerateObject())
        {
            if (kv.Value.ValueKind != JsonValueKind.String)
                throw new ViTQuantException($"{path}: metadata value for key {Q(kv.Name)} is a JSON {Kind(kv.Value)}, expected a string");
            if (!meta.TryAdd(kv.Name, kv.Value.GetString()!)) throw new ViTQuantException($"{path}: duplicate metadata key {Q(kv.Name)}");
        }
        return meta;
    }

    private static TensorInfo ParseEntry(string path, string name, JsonElement e, long bufferLength)
    {
        string at = $"{path}: tensor {Q(name)}";
        if (e.ValueKind != JsonValueKind.Object) throw new ViTQuantException($"{at}: entry is a JSON {Kind(e)}, expected an object");
        JsonElement? dtypeEl = null, shapeEl = null, offsetsEl = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
        {
            if (!seen.Add(p.Name)) throw new ViTQuantException($"{at}: duplicate key {Q(p.Name)} in entry");
            switch (p.Name)
            {
                case "dtype": dtypeEl = p.Value; break;
                case "shape": shapeEl = p.Value; break;
                case "data_offsets": offsetsEl = p.Value; break;
            }
        }
        if (dtypeEl is not { } dt) throw new ViTQuantException($"{at}: entry has no \"dtype\"");
        if (shapeEl is not { } sh) throw new ViTQuantException($"{at}: entry has no \"shape\"");
        if (offsetsEl is not { } off) throw new ViTQuantException($"{at}: entry has no \"data_offsets\"");

        if (dt.ValueKind != JsonValueKind.String) throw new ViTQuantException($"{at}: \"dtype\" is a JSON {Kind(dt)}, expected a string");
        string dtype = dt.GetString()!;
        if (!SafeTensorsDType.IsKnown(dtype)) throw new ViTQuantException($"{at}: unknown dtype {Q(dtype)}");

        if (sh.ValueKind != JsonValueKind.Array) throw new ViTQuantException($"{at}: \"shape\" is a JSON {Kind(sh)}, expected an array of integers");
        var shape = new int[sh.GetArrayLength()];
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number) throw new ViTQuantException($"{at}: shape[{i}] is a JSON {Kind(d)}, expected an integer");
            if (!d.TryGetInt64(out long v)) throw new ViTQuantException($"{at}: shape[{i}] = {d.GetRawText()} is not an integer");
            if (v < 0) throw new ViTQuantException($"{at}: negative dimension {v} in shape");
            if (v > int.MaxValue) throw new ViTQuantException($"{at}: dimension {v} in shape exceeds {int.MaxValue}");
            shape[i++] = (int)v;
        }

        if (off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new ViTQuantException($"{at}: \"data_offsets\" must be an array [begin, end], got {Truncate(off.GetRawText())}");
        var be = new long[2];
        for (int k = 0; k < 2; k++)
        {
            var o = off[k];
            if (o.ValueKind != JsonValueKind.Number || !o.TryGetInt64(out be[k]) || be[k] < 0)
                throw new ViTQuantException($"{at}: data_offsets[{k}] = {Truncate(o.GetRawText())} is not a non-negative integer");
        }
        long begin = be[0], end = be[1];
        if (begin > end) throw new ViTQuantException($"{at}: data_offsets [{begin}, {end}] has begin > end");

        int size = SafeTensorsDType.SizeOf(dtype);
        long numel;
        try { numel = SafeTensorsDType.Numel(shape); }
        catch (OverflowException) { throw new ViTQuantException($"{at}: shape {Tensor.ShapeString(shape)} has more elements than fit in 64 bits"); }
        // Divide first: numel·size can overflow 64 bits for a hostile shape, and such a shape is wrong anyway.
        if (numel > (end - begin) / size || numel * size != end - begin)
            throw new ViTQuantException($"{at}: data_offsets [{begin}, {end}] span {end - begin} bytes but {dtype} {Tensor.ShapeString(shape)} needs {(numel > long.MaxValue / size ? "more than 2^63" : (numel * size).ToString())}");
        if (end > bufferLength)
            throw new ViTQuantException($"{at}: data_offsets [{begin}, {end}] run past the end of the data buffer ({bufferLength} bytes)");
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    private static void CheckOverlaps(string path, IEnumerable<TensorInfo> infos)
    {
        // Empty tensors occupy no bytes and cannot overlap anything. Sorted by begin, any overlap shows up
        // between neighbours: if i overlaps a later j, then i+1 (begin ≤ begin_j < end_i) overlaps i.
        var sorted = infos.Where(t => t.End > t.Begin).OrderBy(t => t.Begin).ThenBy(t => t.End).ToList();
        for (int i = 1; i < sorted.Count; i++)
        {
            TensorInfo a = sorted[i - 1], b = sorted[i];
            if (b.Begin < a.End)
                throw new ViTQuantException($"{path}: tensor {Q(a.Name)} [{a.Begin}, {a.End}] and tensor {Q(b.Name)} [{b.Begin}, {b.End}] overlap in the data buffer");
        }
    }

    /// <summary>True when the file holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _infos.ContainsKey(name);

    /// <summary>Dtype, shape and byte range of tensor <paramref name="name"/> (the shape array is a copy).</summary>
    /// <exception cref="ViTQuantException">No such tensor.</exception>
    public TensorInfo Info(string name)
    {
        var info = Lookup(name);
        return info with { Shape = (int[])info.Shape.Clone() };
    }

    /// <summary>
    /// Tensor <paramref name="name"/> converted to float32 (exact for F16/BF16/F8/integers up to 2^24 and BOOL
    /// as 0/1; F64 and large integers round to nearest). The result is named <paramref name="name"/>.
    /// </summary>
    /// <exception cref="ViTQuantException">No such tensor, or it has more than 2^31 − 1 elements.</exception>
    public Tensor GetTensor(string name)
    {
        var info = Lookup(name);
        if (info.Numel > int.MaxValue) throw new ViTQuantException($"{Path}: tensor {Q(name)}: {info.Numel} elements is too many for one tensor");
        var t = new Tensor(info.Shape) { Name = name };
        DTypeConvert.ToSingle(info.DType, Bytes(info), t.Span);
        return t;
    }

    /// <summary>The values of I8 tensor <paramref name="name"/>, row-major.</summary>
    /// <exception cref="ViTQuantException">No such tensor, or its dtype is not I8.</exception>
    public sbyte[] GetInt8(string name)
    {
        var info = Expect(name, "I8");
        return MemoryMarshal.Cast<byte, sbyte>(Bytes(info)).ToArray();
    }

    /// <summary>The values of I32 tensor <paramref name="name"/>, row-major.</summary>
    /// <exception cref="ViTQuantException">No such tensor, or its dtype is not I32.</exception>
    public int[] GetInt32(string name)
    {
        var info = Expect(name, "I32");
        var src = Bytes(info);
        var dst = new int[info.Numel];
        if (BitConverter.IsLittleEndian) MemoryMarshal.Cast<byte, int>(src).CopyTo(dst);
        else for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadInt32LittleEndian(src[(4 * i)..]);
        return dst;
    }

    /// <summary>A copy of the stored bytes of tensor <paramref name="name"/> (little-endian, any dtype).</summary>
    /// <exception cref="ViTQuantException">No such tensor.</exception>
    public byte[] GetRaw(string name) => Bytes(Lookup(name)).ToArray();

    private ReadOnlySpan<byte> Bytes(TensorInfo info) => _bytes.AsSpan((int)(_dataStart + info.Begin), (int)info.ByteLength);

    private TensorInfo Lookup(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _infos.TryGetValue(name, out var info) ? info : throw new ViTQuantException($"{Path}: no tensor named {Q(name)} (the file has {_names.Count} tensors)");
    }

    private TensorInfo Expect(string name, string dtype)
    {
        var info = Lookup(name);
        if (info.DType != dtype) throw new ViTQuantException($"{Path}: tensor {Q(name)} has dtype {info.DType}, expected {dtype}");
        return info;
    }

    // Names come from the file: quote them and escape control characters so a message stays on one line.
    private static string Q(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('\'');
        foreach (char c in Truncate(s)) sb.Append(char.IsControl(c) ? $"\\u{(int)c:x4}" : c);
        return sb.Append('\'').ToString();
    }

    private static string Truncate(string s) => s.Length <= 80 ? s : s[..80] + "...";
    private static string OneLine(string s) => s.ReplaceLineEndings(" ");

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValueKind.Null => "null",
        _ => e.ValueKind.ToString(),
    };
}

/// <summary>
/// Conversion of little-endian safetensors element bytes to float32: a fast path (bulk casts and
/// TensorPrimitives) and the scalar reference it is tested against.
/// </summary>
internal static class DTypeConvert
{
    /// <summary>Decodes src (dtype elements, little-endian) into dst (one float per element).</summary>
    public static void ToSingle(string dtype, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (!BitConverter.IsLittleEndian) { ToSingleReference(dtype, src, dst); return; }
        switch (dtype)
        {
            case "F32": MemoryMarshal.Cast<byte, float>(src).CopyTo(dst); break;
            case "F16": TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), dst); break;
            case "BF16":
                var bf = MemoryMarshal.Cast<byte, ushort>(src);
                for (int i = 0; i < bf.Length; i++) dst[i] = BitConverter.UInt32BitsToSingle((uint)bf[i] << 16);
                break;
            case "F64":
                var f64 = MemoryMarshal.Cast<byte, double>(src);
                for (int i = 0; i < f64.Length; i++) dst[i] = (float)f64[i];
                break;
            case "I32":
                var i32 = MemoryMarshal.Cast<byte, int>(src);
                for (int i = 0; i < i32.Length; i++) dst[i] = i32[i];
                break;
            default: ToSingleReference(dtype, src, dst); break;
        }
    }

    /// <summary>Element-by-element decoding with explicit little-endian reads; the reference twin.</summary>
    public static void ToSingleReference(string dtype, ReadOnlySpan<byte> src, Span<float> dst)
    {
        int size = SafeTensorsDType.SizeOf(dtype);
        if (src.Length != dst.Length * size) throw new ArgumentException($"{src.Length} bytes of {dtype} do not make {dst.Length} elements");
        for (int i = 0; i < dst.Length; i++)
        {
            var s = src.Slice(i * size, size);
            dst[i] = dtype switch
            {
                "F32" => BinaryPrimitives.ReadSingleLittleEndian(s),
                "F16" => (float)BinaryPrimitives.ReadHalfLittleEndian(s),
                "BF16" => BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(s) << 16),
                "F64" => (float)BinaryPrimitives.ReadDoubleLittleEndian(s),
                "F8_E5M2" => (float)BitConverter.UInt16BitsToHalf((ushort)(s[0] << 8)), // E5M2 is the top byte of an F16
                "F8_E4M3" => E4M3(s[0]),
                "BOOL" => s[0] != 0 ? 1f : 0f,
                "U8" => s[0],
                "I8" => (sbyte)s[0],
                "I16" => BinaryPrimitives.ReadInt16LittleEndian(s),
                "U16" => BinaryPrimitives.ReadUInt16LittleEndian(s),
                "I32" => BinaryPrimitives.ReadInt32LittleEndian(s),
                "U32" => BinaryPrimitives.ReadUInt32LittleEndian(s),
                "I64" => BinaryPrimitives.ReadInt64LittleEndian(s),
                "U64" => BinaryPrimitives.ReadUInt64LittleEndian(s),
                _ => throw new ArgumentException($"unknown safetensors dtype '{dtype}'"),
            };
        }
    }

    /// <summary>
    /// FP8 E4M3 "FN" (the variant PyTorch's float8_e4m3fn and safetensors use): bias 7, no infinities,
    /// S.1111.111 is NaN, so the largest finite value is 1.75·2^8 = 448; exponent 0 is subnormal m/8·2^−6.
    /// </summary>
    public static float E4M3(byte b)
    {
        int sign = b >> 7, exp = (b >> 3) & 0xF, man = b & 7;
        float mag = exp == 15 && man == 7 ? float.NaN
            : exp == 0 ? MathF.ScaleB(man / 8f, -6)
            : MathF.ScaleB(1 + man / 8f, exp - 7);
        return sign != 0 ? -mag : mag;
    }
}
