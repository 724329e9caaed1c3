// A minimal safetensors reader for the PyTorch fixtures of the Nn tests (F32 and F64 only).
// Deliberately independent of the library's IO reader, so the fixtures also check nothing shared.
// Layout: u64 little-endian header length, JSON header {name: {dtype, shape, data_offsets}, __metadata__},
// then the raw little-endian data, offsets relative to the end of the header.
using System.Buffers.Binary;
using System.Text.Json;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Nn;

internal sealed class FixtureFile
{
    private readonly byte[] _bytes;
    private readonly long _dataStart;
    private readonly Dictionary<string, (string Dtype, int[] Shape, long Begin, long End)> _entries = new();

    public IReadOnlyDictionary<string, string> Metadata { get; }

    public FixtureFile(string name)
    {
        string path = Path.Combine(AppContext.BaseDirectory, "fixtures", name);
        _bytes = File.ReadAllBytes(path);
        long headerLen = (long)BinaryPrimitives.ReadUInt64LittleEndian(_bytes);
        _dataStart = 8 + headerLen;
        using var doc = JsonDocument.Parse(_bytes.AsMemory(8, (int)headerLen));
        var meta = new Dictionary<string, string>();
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                foreach (var m in prop.Value.EnumerateObject()) meta[m.Name] = m.Value.GetString()!;
                continue;
            }
            var shape = prop.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var off = prop.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            _entries[prop.Name] = (prop.Value.GetProperty("dtype").GetString()!, shape, off[0], off[1]);
        }
        Metadata = meta;
    }

    public bool Has(string name) => _entries.ContainsKey(name);

    public Tensor F32(string name)
    {
        var (dtype, shape, begin, end) = _entries[name];
        Assert.Equal("F32", dtype);
        var data = new float[(end - begin) / 4];
        for (int i = 0; i < data.Length; i++)
            data[i] = BinaryPrimitives.ReadSingleLittleEndian(_bytes.AsSpan((int)(_dataStart + begin + 4 * i), 4));
        return new Tensor(data, shape);
    }

    public double[] F64(string name)
    {
        var (dtype, _, begin, end) = _entries[name];
        Assert.Equal("F64", dtype);
        var data = new double[(end - begin) / 8];
        for (int i = 0; i < data.Length; i++)
            data[i] = BinaryPrimitives.ReadDoubleLittleEndian(_bytes.AsSpan((int)(_dataStart + begin + 8 * i), 8));
        return data;
    }
}
