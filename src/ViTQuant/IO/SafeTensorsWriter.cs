// Safetensors writer. Output layout matches the reference Python/Rust writers: "__metadata__" first,
// then the tensors in the caller's order with contiguous data_offsets, the JSON header padded with
// spaces so that 8 + N is a multiple of 8 (the data buffer then starts 8-byte aligned and readers can
// view F64/I64 tensors in place). The file goes through AtomicFile, so it is either complete or absent.
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;
using ViTQuant.Tensors;

namespace ViTQuant.IO;

/// <summary>One tensor to write: raw little-endian element bytes with a safetensors dtype and shape.</summary>
internal sealed class SafeTensorsEntry
{
    /// <summary>Tensor name (non-empty, not "__metadata__").</summary>
    public string Name { get; }

    /// <summary>Safetensors dtype string, one of <see cref="SafeTensorsDType.All"/>.</summary>
    public string DType { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public int[] Shape { get; }

    /// <summary>Element bytes, little-endian, row-major; length = numel × dtype size.</summary>
    public byte[] Data { get; }

    /// <summary>Wraps <paramref name="data"/> (not copied) after checking it against dtype and shape.</summary>
    /// <exception cref="ArgumentException">Empty or reserved name, unknown dtype, negative dimension, or a
    /// byte count that differs from numel × dtype size.</exception>
    public SafeTensorsEntry(string name, string dtype, int[] shape, byte[] data)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(dtype);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        SafeTensorsWriter.CheckName(name);
        if (!SafeTensorsDType.IsKnown(dtype)) throw new ArgumentException($"tensor '{name}': unknown safetensors dtype '{dtype}'");
        if (shape.Any(d => d < 0)) throw new ArgumentException($"tensor '{name}': negative dimension in shape {Tensor.ShapeString(shape)}");
        long need = SafeTensorsDType.Numel(shape) * SafeTensorsDType.SizeOf(dtype);
        if (data.LongLength != need) throw new ArgumentException($"tensor '{name}': {data.Length} bytes, but {dtype} {Tensor.ShapeString(shape)} needs {need}");
        Name = name;
        DType = dtype;
        Shape = (int[])shape.Clone();
        Data = data;
    }

    /// <summary>An F32 entry holding a copy of the tensor's values.</summary>
    public static SafeTensorsEntry FromTensor(string name, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var bytes = new byte[tensor.Size * 4];
        SafeTensorsWriter.CopyLittleEndian(tensor.Span, bytes);
        return new SafeTensorsEntry(name, "F32", tensor.Shape, bytes);
    }

    /// <summary>An I8 entry (copied). Throws as the constructor when values do not fill the shape.</summary>
    public static SafeTensorsEntry FromInt8(string name, ReadOnlySpan<sbyte> values, params int[] shape) =>
        new(name, "I8", shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>A U8 entry (copied). Throws as the constructor when values do not fill the shape.</summary>
    public static SafeTensorsEntry FromUInt8(string name, ReadOnlySpan<byte> values, params int[] shape) =>
        new(name, "U8", shape, values.ToArray());

    /// <summary>An I32 entry (copied). Throws as the constructor when values do not fill the shape.</summary>
    public static SafeTensorsEntry FromInt32(string name, ReadOnlySpan<int> values, params int[] shape)
    {
        var bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4 * i), values[i]);
        return new SafeTensorsEntry(name, "I32", shape, bytes);
    }
}

/// <summary>Writes safetensors files atomically.</summary>
internal static class SafeTensorsWriter
{
    /// <summary>
    /// Writes float32 tensors (dtype F32) in the given order, with optional string metadata, through
    /// <see cref="AtomicFile"/>. Tensor values are streamed from their storage, not copied.
    /// </summary>
    /// <exception cref="ArgumentException">Duplicate, empty or reserved ("__metadata__") name, or a null metadata value.</exception>
    /// <exception cref="ViTQuantException">The file cannot be written (see <see cref="AtomicFile.Write"/>).</exception>
    public static void Write(string path, IEnumerable<(string name, Tensor tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        var heads = list.Select(t => new Head(t.name, "F32", t.tensor.Shape, 4L * t.tensor.Size)).ToList();
        WriteCore(path, heads, metadata, (i, s) =>
        {
            var span = list[i].tensor.Span;
            if (BitConverter.IsLittleEndian) { s.Write(MemoryMarshal.AsBytes(span)); return; }
            var buf = new byte[span.Length * 4];
            CopyLittleEndian(span, buf);
            s.Write(buf);
        });
    }

    /// <summary>Writes entries of any dtype in the given order, with optional string metadata, atomically.</summary>
    /// <exception cref="ArgumentException">Duplicate names or a null metadata value.</exception>
    /// <exception cref="ViTQuantException">The file cannot be written (see <see cref="AtomicFile.Write"/>).</exception>
    public static void Write(string path, IEnumerable<SafeTensorsEntry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var list = entries.ToList();
        var heads = list.Select(e => new Head(e.Name, e.DType, e.Shape, e.Data.LongLength)).ToList();
        WriteCore(path, heads, metadata, (i, s) => s.Write(list[i].Data));
    }

    private readonly record struct Head(string Name, string DType, int[] Shape, long Bytes);

    private static void WriteCore(string path, List<Head> heads, IReadOnlyDictionary<string, string>? metadata, Action<int, Stream> writeData)
    {
        var header = BuildHeader(heads, metadata);
        AtomicFile.Write(path, s =>
        {
            s.Write(header);
            for (int i = 0; i < heads.Count; i++) writeData(i, s);
        });
    }

    private static byte[] BuildHeader(List<Head> heads, IReadOnlyDictionary<string, string>? metadata)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var h in heads)
        {
            CheckName(h.Name);
            if (!names.Add(h.Name)) throw new ArgumentException($"duplicate tensor name '{h.Name}'");
        }
        var json = new MemoryStream();
        // Relaxed escaping keeps non-ASCII names readable; the header is never embedded in HTML.
        using (var w = new Utf8JsonWriter(json, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (metadata != null)
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata)
                {
                    if (v == null) throw new ArgumentException($"metadata key '{k}' has a null value");
                    w.WriteString(k, v);
                }
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var h in heads)
            {
                w.WriteStartObject(h.Name);
                w.WriteString("dtype", h.DType);
                w.WriteStartArray("shape");
                foreach (int d in h.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + h.Bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += h.Bytes;
            }
            w.WriteEndObject();
        }
        int n = (int)json.Length, padded = (n + 7) / 8 * 8;
        var header = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)padded);
        json.GetBuffer().AsSpan(0, n).CopyTo(header.AsSpan(8));
        header.AsSpan(8 + n).Fill((byte)' ');
        return header;
    }

    internal static void CheckName(string name)
    {
        if (name.Length == 0) throw new ArgumentException("tensor name is empty");
        if (name == "__metadata__") throw new ArgumentException("tensor name '__metadata__' is reserved for the metadata map");
    }

    internal static void CopyLittleEndian(ReadOnlySpan<float> src, Span<byte> dst)
    {
        if (BitConverter.IsLittleEndian) { MemoryMarshal.AsBytes(src).CopyTo(dst); return; }
        for (int i = 0; i < src.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(dst[(4 * i)..], src[i]);
    }
}
