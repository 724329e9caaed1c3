using System.Buffers.Binary;
using System.Text;
using ViTQuant.IO;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.IO;

public class SafeTensorsTests
{
    // ---- helpers ----

    /// <summary>A safetensors image: 8-byte little-endian header length, the header bytes, then the data buffer.</summary>
    private static byte[] Build(string json, int dataBytes = 0) => Build(Encoding.UTF8.GetBytes(json), dataBytes);

    private static byte[] Build(byte[] header, int dataBytes)
    {
        var b = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)header.Length);
        header.CopyTo(b, 8);
        for (int i = 0; i < dataBytes; i++) b[8 + header.Length + i] = (byte)(i * 7 + 1);
        return b;
    }

    private static byte[] LengthOnly(ulong n, int totalBytes)
    {
        var b = new byte[totalBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(b, n);
        return b;
    }

    /// <summary>Writes the bytes, reads them and returns the ViTQuantException, checking it names the file and is one line.</summary>
    private static ViTQuantException ReadBad(byte[] bytes, params string[] fragments)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, bytes);
        var ex = Assert.Throws<ViTQuantException>(() => SafeTensorsFile.Read(path));
        Assert.StartsWith(path + ": ", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        foreach (var f in fragments) Assert.Contains(f, ex.Message);
        return ex;
    }

    private static SafeTensorsFile RoundTrip(TempDir dir, IEnumerable<SafeTensorsEntry> entries, IReadOnlyDictionary<string, string>? meta = null)
    {
        string path = dir.File("t.safetensors");
        SafeTensorsWriter.Write(path, entries, meta);
        return SafeTensorsFile.Read(path);
    }

    private static float Decode(string dtype, params byte[] bytes)
    {
        using var dir = new TempDir();
        var f = RoundTrip(dir, new[] { new SafeTensorsEntry("x", dtype, new[] { 1 }, bytes) });
        return f.GetTensor("x").Item();
    }

    private static float F16(ushort bits) => Decode("F16", (byte)bits, (byte)(bits >> 8));
    private static float BF16(ushort bits) => Decode("BF16", (byte)bits, (byte)(bits >> 8));

    private static void AssertBits(float expected, float actual) =>
        Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual), $"expected {expected:R} (0x{BitConverter.SingleToInt32Bits(expected):X8}), got {actual:R} (0x{BitConverter.SingleToInt32Bits(actual):X8})");

    // ---- round trips ----

    [Fact]
    public void F32TensorsAndMetadataRoundTripExactly()
    {
        using var dir = new TempDir();
        var rng = new Rng(7);
        var tensors = new (string, Tensor)[]
        {
            ("blocks.0.attn.qkv.weight", Tensor.Randn(rng, 1f, 12, 4)),
            ("head.bias", Tensor.FromArray(new[] { float.NegativeInfinity, -0f, float.Epsilon, float.MaxValue, float.NaN }, 5)),
            ("scalar", new Tensor(new[] { 3.5f })), // rank 0
            ("empty", Tensor.Zeros(0, 3)),
            ("cls_token", Tensor.Randn(rng, 0.02f, 1, 1, 4)),
        };
        var meta = new Dictionary<string, string> { ["config"] = "{\"depth\": 2}", ["format"] = "pt", ["ünïcode"] = "ẞ ✓" };
        string path = dir.File("m.safetensors");
        SafeTensorsWriter.Write(path, tensors, meta);
        var f = SafeTensorsFile.Read(path);

        Assert.Equal(tensors.Select(t => t.Item1), f.Names);
        Assert.Equal(meta, f.Metadata);
        long expectOffset = 0;
        foreach (var (name, t) in tensors)
        {
            var info = f.Info(name);
            Assert.Equal("F32", info.DType);
            Assert.Equal(t.Shape, info.Shape);
            Assert.Equal(expectOffset, info.Begin); // contiguous, in the given order
            Assert.Equal(4L * t.Size, info.ByteLength);
            expectOffset = info.End;
            var back = f.GetTensor(name);
            Assert.Equal(t.Shape, back.Shape);
            Assert.Equal(name, back.Name);
            for (int i = 0; i < t.Size; i++) AssertBits(t.Data[i], back.Data[i]);
        }
        Assert.True(f.Contains("head.bias"));
        Assert.False(f.Contains("head.weight"));

        var bytes = File.ReadAllBytes(path);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0UL, n % 8); // data buffer 8-byte aligned
        Assert.Equal(8 + (long)n + expectOffset, bytes.Length);
    }

    [Fact]
    public void IntegerEntriesRoundTrip()
    {
        using var dir = new TempDir();
        var i8 = new sbyte[] { -128, -1, 0, 1, 127, 5 };
        var i32 = new[] { int.MinValue, -7, 0, 123456789, int.MaxValue, 42 };
        var u8 = new byte[] { 0, 128, 255 };
        var f = RoundTrip(dir, new[]
        {
            SafeTensorsEntry.FromInt8("q.weight", i8, 2, 3),
            SafeTensorsEntry.FromInt32("q.bias", i32, 6),
            SafeTensorsEntry.FromUInt8("zero_point", u8, 3),
            SafeTensorsEntry.FromTensor("scale", Tensor.FromArray(new[] { 0.5f, 0.25f }, 2)),
        }, new Dictionary<string, string>());
        Assert.Empty(f.Metadata);
        Assert.Equal(i8, f.GetInt8("q.weight"));
        Assert.Equal(new[] { 2, 3 }, f.Info("q.weight").Shape);
        Assert.Equal(i32, f.GetInt32("q.bias"));
        Assert.Equal(u8, f.GetRaw("zero_point"));
        Assert.Equal(u8.Select(v => (float)v), f.GetTensor("zero_point").ToArray());
        Assert.Equal(i8.Select(v => (float)v), f.GetTensor("q.weight").ToArray());
        Assert.Equal(new[] { 0.5f, 0.25f }, f.GetTensor("scale").ToArray());
        Assert.Equal("I8", f.Info("q.weight").DType);

        var wrong = Assert.Throws<ViTQuantException>(() => f.GetInt8("q.bias"));
        Assert.Contains("'q.bias'", wrong.Message);
        Assert.Contains("I32", wrong.Message);
        Assert.Throws<ViTQuantException>(() => f.GetInt32("q.weight"));
        var missing = Assert.Throws<ViTQuantException>(() => f.GetTensor("nope"));
        Assert.Contains("'nope'", missing.Message);
    }

    [Fact]
    public void WriterProducesTheReferenceByteLayout()
    {
        using var dir = new TempDir();
        string path = dir.File("w.safetensors");
        SafeTensorsWriter.Write(path, new[] { ("a", Tensor.FromArray(new[] { 1f, -2f }, 2)) }, new Dictionary<string, string> { ["k"] = "v" });
        string json = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        int padded = (json.Length + 7) / 8 * 8;
        var expected = new List<byte>();
        expected.AddRange(BitConverter.GetBytes((ulong)padded));
        expected.AddRange(Encoding.ASCII.GetBytes(json.PadRight(padded)));
        expected.AddRange(new byte[] { 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0 }); // 1.0f, -2.0f little-endian
        Assert.Equal(expected.ToArray(), File.ReadAllBytes(path));
    }

    [Fact]
    public void WriterRejectsBadEntries()
    {
        using var dir = new TempDir();
        var t = Tensor.Zeros(2);
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(dir.File("x"), new[] { ("a", t), ("a", t) }));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(dir.File("x"), new[] { ("__metadata__", t) }));
        Assert.Throws<ArgumentException>(() => new SafeTensorsEntry("a", "F32", new[] { 3 }, new byte[8]));
        Assert.Throws<ArgumentException>(() => new SafeTensorsEntry("a", "Q4", new[] { 1 }, new byte[1]));
        Assert.Throws<ArgumentException>(() => SafeTensorsEntry.FromInt8("a", new sbyte[5], 2, 3));
        Assert.False(File.Exists(dir.File("x")));
    }

    [Fact]
    public void GapsTrailingBytesAndEmptyTensorsAreAllowed()
    {
        // a [0,4), unused [4,8), b [8,12), empty e at 4, then 4 trailing bytes.
        var bytes = Build("{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}," +
                          "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[2,2]}," +
                          "\"b\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[8,12]}}  ", 16);
        var f = SafeTensorsFile.Parse("mem", bytes);
        Assert.Equal(new[] { "a", "e", "b" }, f.Names);
        int hdr = bytes.Length - 16;
        Assert.Equal(bytes.AsSpan(hdr + 8, 4).ToArray(), f.GetRaw("b"));
        Assert.Equal(BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(hdr)), f.GetInt32("a")[0]);
        Assert.Equal(0, f.GetTensor("e").Size);
        Assert.Equal(new[] { 0, 5 }, f.GetTensor("e").Shape);
    }

    // ---- corrupt files: each check fires with a message naming the file, the tensor and the fault ----

    public static IEnumerable<object[]> CorruptCases()
    {
        object[] C(byte[] b, params string[] f) => new object[] { b, f };
        const string A = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
        yield return C(new byte[] { 1, 0, 0, 0, 0 }, "5 bytes", "shorter than the 8-byte header");
        yield return C(Array.Empty<byte>(), "0 bytes");
        yield return C(LengthOnly(0, 64), "header length is 0");
        yield return C(LengthOnly(100_000_001, 64), "header length 100000001 exceeds");
        yield return C(LengthOnly(57, 64), "header length 57 runs past the end of the file (64 bytes)");
        yield return C(Build(new byte[] { (byte)'{', (byte)'"', 0xC3, 0x28, (byte)'"', (byte)':', (byte)'1', (byte)'}' }, 0), "not valid UTF-8");
        yield return C(Build("{\"a\": {\"dtype\": \"F32\","), "not valid JSON");
        yield return C(Build("{\"a\":1,}"), "not valid JSON");
        yield return C(Build("[1, 2]"), "header is a JSON array, expected an object");
        yield return C(Build("{\"w\": 5}"), "tensor 'w'", "entry is a JSON number, expected an object");
        yield return C(Build("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "no \"dtype\"");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "no \"shape\"");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), "tensor 'w'", "no \"data_offsets\"");
        yield return C(Build("{\"w\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "\"dtype\" is a JSON number, expected a string");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "\"shape\" is a JSON string");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "shape[0] = 2.5 is not an integer");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,null],\"data_offsets\":[0,4]}}", 4), "tensor 'w'", "shape[1] is a JSON null");
        yield return C(Build("{\"w\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "unknown dtype 'F12'");
        yield return C(Build("{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "unknown dtype 'f32'");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2,1],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "negative dimension -2");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[3000000000],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "exceeds");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8), "tensor 'w'", "must be an array [begin, end]");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"b\":0}}}", 8), "tensor 'w'", "must be an array [begin, end]");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-1,7]}}", 8), "tensor 'w'", "data_offsets[0] = -1 is not a non-negative integer");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}", 8), "tensor 'w'", "data_offsets[1]");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8), "tensor 'w'", "[8, 0] has begin > end");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8), "tensor 'w'", "span 4 bytes but F32 [2] needs 8");
        yield return C(Build("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24), "tensor 'w'", "span 24 bytes but BF16 [2, 3] needs 12");
        yield return C(Build("{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "exceeds");
        yield return C(Build("{\"w\":{\"dtype\":\"F64\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "64 bits");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8), "tensor 'w'", "past the end of the data buffer (8 bytes)");
        yield return C(Build("{" + A + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "'a' [0, 8]", "'b' [4, 12]", "overlap");
        // A tensor nested inside another one.
        yield return C(Build("{\"big\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},\"s\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}," +
                             "\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}", 16), "overlap", "'big'");
        yield return C(Build("{" + A + ",\"__metadata__\":{\"k\":1}}", 8), "metadata value for key 'k' is a JSON number, expected a string");
        yield return C(Build("{" + A + ",\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 8), "metadata value for key 'k' is a JSON object");
        yield return C(Build("{" + A + ",\"__metadata__\":[\"k\"]}", 8), "\"__metadata__\" is a JSON array");
        yield return C(Build("{" + A + ",\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 8), "duplicate metadata key 'k'");
        yield return C(Build("{\"__metadata__\":{},\"__metadata__\":{}}"), "duplicate key \"__metadata__\"");
        yield return C(Build("{" + A + "," + A + "}", 8), "duplicate tensor name 'a'");
        yield return C(Build("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "duplicate key 'dtype'");
        yield return C(Build("{\"bad\\nname\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}"), "'bad\\u000aname'", "unknown dtype 'X'");
    }

    [Theory]
    [MemberData(nameof(CorruptCases))]
    public void CorruptFilesAreRejectedWithAPreciseMessage(byte[] bytes, string[] fragments) => ReadBad(bytes, fragments);

    [Fact]
    public void MissingFileIsAUserError()
    {
        using var dir = new TempDir();
        var ex = Assert.Throws<ViTQuantException>(() => SafeTensorsFile.Read(dir.File("none.safetensors")));
        Assert.Contains("none.safetensors", ex.Message);
        Assert.Contains("not found", ex.Message);
    }

    [Fact]
    public void TruncatedWriterOutputIsRejected()
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        SafeTensorsWriter.Write(path, new[] { ("w", Tensor.Ones(4, 4)) });
        var bytes = File.ReadAllBytes(path);
        ReadBad(bytes[..^1], "tensor 'w'", "past the end of the data buffer (63 bytes)");
        ReadBad(bytes[..40], "header length", "runs past the end of the file (40 bytes)");
    }

    // ---- dtype decoding on hand-picked bit patterns ----

    [Fact]
    public void F16DecodesExactly()
    {
        AssertBits(0f, F16(0x0000));
        AssertBits(-0f, F16(0x8000));
        AssertBits(1f, F16(0x3C00));
        AssertBits(-2f, F16(0xC000));
        AssertBits(65504f, F16(0x7BFF));                        // largest finite
        AssertBits(MathF.ScaleB(1f, -14), F16(0x0400));        // smallest normal
        AssertBits(MathF.ScaleB(1f, -24), F16(0x0001));        // smallest subnormal
        AssertBits(-MathF.ScaleB(1023f, -24), F16(0x83FF));    // largest subnormal, negative
        AssertBits(0.333251953125f, F16(0x3555));              // 2^-2 · (1 + 341/1024)
        AssertBits(float.PositiveInfinity, F16(0x7C00));
        AssertBits(float.NegativeInfinity, F16(0xFC00));
        Assert.True(float.IsNaN(F16(0x7E00)));
        Assert.True(float.IsNaN(F16(0xFC01)));
    }

    [Fact]
    public void BF16DecodesExactly()
    {
        AssertBits(1f, BF16(0x3F80));
        AssertBits(-1f, BF16(0xBF80));
        AssertBits(-0f, BF16(0x8000));
        AssertBits(3.140625f, BF16(0x4049));                               // 2 · (1 + 73/128)
        AssertBits(MathF.ScaleB(1f + 127f / 128f, 127), BF16(0x7F7F));      // largest finite
        AssertBits(MathF.ScaleB(1f, -126), BF16(0x0080));                  // smallest normal
        AssertBits(MathF.ScaleB(1f, -133), BF16(0x0001));                  // smallest subnormal
        AssertBits(float.PositiveInfinity, BF16(0x7F80));
        AssertBits(float.NegativeInfinity, BF16(0xFF80));
        Assert.True(float.IsNaN(BF16(0x7FC0)));
        Assert.True(float.IsNaN(BF16(0xFF81)));
    }

    [Fact]
    public void Fp8DecodesExactly()
    {
        AssertBits(1f, Decode("F8_E4M3", 0x38));
        AssertBits(448f, Decode("F8_E4M3", 0x7E));
        AssertBits(-448f, Decode("F8_E4M3", 0xFE));
        AssertBits(MathF.ScaleB(1f, -6), Decode("F8_E4M3", 0x08));
        AssertBits(MathF.ScaleB(1f, -9), Decode("F8_E4M3", 0x01));
        AssertBits(-0f, Decode("F8_E4M3", 0x80));
        Assert.True(float.IsNaN(Decode("F8_E4M3", 0x7F)));
        AssertBits(256f, Decode("F8_E4M3", 0x78)); // exponent 15 with mantissa < 7 is finite in the FN variant
        AssertBits(1f, Decode("F8_E5M2", 0x3C));
        AssertBits(57344f, Decode("F8_E5M2", 0x7B));
        AssertBits(MathF.ScaleB(1f, -16), Decode("F8_E5M2", 0x01));
        AssertBits(float.NegativeInfinity, Decode("F8_E5M2", 0xFC));
        Assert.True(float.IsNaN(Decode("F8_E5M2", 0x7F)));
    }

    [Fact]
    public void IntegerBoolAndF64Decode()
    {
        Assert.Equal(-32768f, Decode("I16", 0x00, 0x80));
        Assert.Equal(65535f, Decode("U16", 0xFF, 0xFF));
        Assert.Equal(4000000000f, Decode("U32", BitConverter.GetBytes(4000000000u)));
        Assert.Equal(-5f, Decode("I64", BitConverter.GetBytes(-5L)));
        Assert.Equal(1099511627776f, Decode("U64", BitConverter.GetBytes(1UL << 40)));
        Assert.Equal(-3f, Decode("I8", 0xFD));
        Assert.Equal(253f, Decode("U8", 0xFD));
        Assert.Equal(0f, Decode("BOOL", 0));
        Assert.Equal(1f, Decode("BOOL", 1));
        Assert.Equal(1f, Decode("BOOL", 2));
        AssertBits(0.1f, Decode("F64", BitConverter.GetBytes(0.1)));                 // rounds to nearest
        AssertBits(float.PositiveInfinity, Decode("F64", BitConverter.GetBytes(1e300)));
        AssertBits(-0f, Decode("F64", BitConverter.GetBytes(-0.0)));
        Assert.Equal(16777216f, Decode("I32", BitConverter.GetBytes(16777217))); // 2^24 + 1 rounds to even
    }

    [Fact]
    public void FastDecodeMatchesReferenceForEveryDType()
    {
        var rng = new Random(3);
        foreach (var dtype in SafeTensorsDType.All)
        {
            int n = 257, size = SafeTensorsDType.SizeOf(dtype);
            var src = new byte[n * size];
            rng.NextBytes(src);
            float[] fast = new float[n], reference = new float[n];
            DTypeConvert.ToSingle(dtype, src, fast);
            DTypeConvert.ToSingleReference(dtype, src, reference);
            for (int i = 0; i < n; i++)
                Assert.True(float.IsNaN(fast[i]) ? float.IsNaN(reference[i]) : BitConverter.SingleToInt32Bits(fast[i]) == BitConverter.SingleToInt32Bits(reference[i]),
                    $"{dtype}[{i}]: fast {fast[i]:R} vs reference {reference[i]:R}");
        }
        Assert.Equal(15, SafeTensorsDType.All.Count);
    }
}
