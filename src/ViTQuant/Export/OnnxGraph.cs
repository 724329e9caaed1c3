// A small builder over the generated ONNX protobuf classes (onnx.proto, our own schema subset compiled
// by Grpc.Tools): initializers of the element types the exporter needs, nodes with attributes, unique
// value names. Why Google.Protobuf + our own .proto rather than the OnnxSharp package: the generated
// classes are exactly the IR's messages (nothing to learn beyond the ONNX spec), Google.Protobuf is the
// maintained runtime every protobuf user shares, and the same classes parse ORT's optimised graphs back
// (ViTQuant.Onnx lists their op types); OnnxSharp 0.3.2 wraps an older generated schema for model
// editing and would add a dependency without adding anything we use.
using Google.Protobuf;
using ViTQuant.Export.OnnxProto;

namespace ViTQuant.Export;

/// <summary>Builds one ONNX graph: initializers, nodes, unique names.</summary>
internal sealed class OnnxGraph
{
    private readonly Dictionary<string, int> _counters = new();
    private readonly HashSet<string> _names = new();

    public GraphProto Graph { get; } = new() { Name = "vitq" };

    /// <summary>Bytes of every initializer by role (weights as stored), for the export report.</summary>
    public long InitializerBytes { get; private set; }

    /// <summary>A fresh value name starting with <paramref name="stem"/>.</summary>
    public string Name(string stem)
    {
        if (_names.Add(stem)) return stem;
        _counters.TryGetValue(stem, out int n);
        string name;
        do name = $"{stem}_{++n}"; while (!_names.Add(name));
        _counters[stem] = n;
        return name;
    }

    /// <summary>Adds a node computing one output named after <paramref name="stem"/>; returns the output's name.</summary>
    public string Node(string op, string stem, IEnumerable<string> inputs, params AttributeProto[] attrs) =>
        NodeMulti(op, stem, inputs, 1, attrs)[0];

    /// <summary>Adds a node with <paramref name="outputs"/> outputs; returns their names.</summary>
    public string[] NodeMulti(string op, string stem, IEnumerable<string> inputs, int outputs, params AttributeProto[] attrs)
    {
        var outs = Enumerable.Range(0, outputs).Select(i => Name(outputs == 1 ? $"{stem}/{op}" : $"{stem}/{op}_{i}")).ToArray();
        var n = new NodeProto { OpType = op, Name = Name($"{stem}/{op}#node") };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outs);
        n.Attribute.AddRange(attrs);
        Graph.Node.Add(n);
        return outs;
    }

    public static AttributeProto Int(string name, long v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v };

    public static AttributeProto Float(string name, float v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = v };

    public static AttributeProto Ints(string name, params long[] v)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(v);
        return a;
    }

    private string Add(string stem, TensorProto.Types.DataType type, long[] dims, ByteString raw)
    {
        var t = new TensorProto { Name = Name(stem), DataType = (int)type, RawData = raw };
        t.Dims.AddRange(dims);
        Graph.Initializer.Add(t);
        InitializerBytes += raw.Length;
        return t.Name;
    }

    /// <summary>A float32 initializer (little-endian raw data, as ONNX requires).</summary>
    public string Floats(string stem, ReadOnlySpan<float> v, params long[] dims) =>
        Add(stem, TensorProto.Types.DataType.Float, dims, ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v)));

    /// <summary>A float32 scalar (rank 0).</summary>
    public string Scalar(string stem, float v) => Floats(stem, new[] { v });

    public string Int64s(string stem, ReadOnlySpan<long> v, params long[] dims) =>
        Add(stem, TensorProto.Types.DataType.Int64, dims, ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v)));

    /// <summary>A 1-D int64 initializer (shapes, axes, indices).</summary>
    public string Int64Vector(string stem, params long[] v) => Int64s(stem, v, v.Length);

    public string Int32s(string stem, ReadOnlySpan<int> v, params long[] dims) =>
        Add(stem, TensorProto.Types.DataType.Int32, dims, ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v)));

    /// <summary>An int8 or uint8 initializer holding the given codes (each must fit the type).</summary>
    public string Bytes(string stem, ReadOnlySpan<int> codes, bool signed, params long[] dims)
    {
        var b = new byte[codes.Length];
        for (int i = 0; i < b.Length; i++) b[i] = signed ? (byte)(sbyte)codes[i] : (byte)codes[i];
        return Add(stem, signed ? TensorProto.Types.DataType.Int8 : TensorProto.Types.DataType.Uint8, dims, ByteString.CopyFrom(b));
    }

    /// <summary>
    /// An int4 or uint4 initializer: two codes per byte, the first of each pair in the low nibble (ONNX's
    /// packing for 4-bit types, IR version 10 / opset 21).
    /// </summary>
    public string Nibbles(string stem, ReadOnlySpan<int> codes, bool signed, params long[] dims)
    {
        var b = new byte[(codes.Length + 1) / 2];
        for (int i = 0; i < codes.Length; i++) b[i / 2] |= (byte)((codes[i] & 0xF) << (i % 2 == 0 ? 0 : 4));
        return Add(stem, signed ? TensorProto.Types.DataType.Int4 : TensorProto.Types.DataType.Uint4, dims, ByteString.CopyFrom(b));
    }

    /// <summary>A graph input or output of element type float with the given dims (a string is a symbolic dim).</summary>
    public static ValueInfoProto FloatValue(string name, params object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d is string s ? new TensorShapeProto.Types.Dimension { DimParam = s } : new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(d) });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
    }
}
