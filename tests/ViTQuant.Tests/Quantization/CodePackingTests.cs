// CodePacking against its bit-by-bit twin and against hand-written bytes: every width 1–8, odd counts,
// and the codes of signed (symmetric) and unsigned (asymmetric, AdaRound) grids.
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Quantization;

public class CodePackingTests
{
    private static int[] Random(int count, int bits, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, count).Select(_ => rng.NextInt(1 << bits)).ToArray();
    }

    [Theory]
    [InlineData(1)] [InlineData(2)] [InlineData(3)] [InlineData(4)] [InlineData(5)] [InlineData(6)] [InlineData(7)] [InlineData(8)]
    public void RoundTripsAndMatchesTheReferenceAtEveryWidth(int bits)
    {
        foreach (int count in new[] { 0, 1, 2, 3, 7, 8, 9, 13, 64, 1001 })
        {
            var v = Random(count, bits, (ulong)(bits * 100 + count));
            if (count > 1) { v[0] = 0; v[^1] = (1 << bits) - 1; } // both ends of the range
            var packed = CodePacking.Pack(v, bits);
            Assert.Equal((count * bits + 7) / 8, packed.Length);
            Assert.Equal(CodePacking.PackReference(v, bits), packed);
            Assert.Equal(v, CodePacking.Unpack(packed, bits, count));
            var viaReference = new int[count];
            CodePacking.UnpackReference(packed, bits, viaReference);
            Assert.Equal(v, viaReference);
            // The last byte's unused high bits are zero, so equal codes give equal files.
            int used = count * bits % 8;
            if (used != 0) Assert.Equal(0, packed[^1] >> used);
        }
    }

    [Fact]
    public void LayoutIsLeastSignificantBitFirst()
    {
        Assert.Equal(new byte[] { 0x21, 0x03 }, CodePacking.Pack(new[] { 1, 2, 3 }, 4));            // low nibble first
        Assert.Equal(new byte[] { 0xE4 }, CodePacking.Pack(new[] { 0, 1, 2, 3 }, 2));               // 11 10 01 00
        Assert.Equal(new byte[] { 0x05 }, CodePacking.Pack(new[] { 1, 0, 1 }, 1));
        // 3 bits: values 0..7 → stream 000 001 010 011 100 101 110 111 (value 0 in bits 0–2).
        Assert.Equal(new byte[] { 0x88, 0xC6, 0xFA }, CodePacking.Pack(new[] { 0, 1, 2, 3, 4, 5, 6, 7 }, 3));
        Assert.Equal(new byte[] { 0x7F, 0x01 }, CodePacking.Pack(new[] { 127, 2 }, 7));          // value 1 straddles
        Assert.Equal(new byte[] { 0xFD, 0x00 }, CodePacking.Pack(new[] { 253, 0 }, 8));
    }

    [Theory]
    [InlineData(2, true)] [InlineData(3, true)] [InlineData(4, true)] [InlineData(5, true)] [InlineData(6, true)] [InlineData(7, true)] [InlineData(8, true)]
    [InlineData(2, false)] [InlineData(3, false)] [InlineData(4, false)] [InlineData(5, false)] [InlineData(6, false)] [InlineData(7, false)] [InlineData(8, false)]
    public void SignedAndAsymmetricGridCodesRoundTripThroughTheirOffset(int bits, bool symmetric)
    {
        var (qmin, qmax) = RangeSearch.IntRange(bits, symmetric);
        var codes = Random(257, bits, 7).Select(u => u + qmin).ToArray(); // odd count, the whole grid
        Assert.All(codes, k => Assert.InRange(k, qmin, qmax));
        var packed = CodePacking.Pack(codes.Select(k => k - qmin).ToArray(), bits);
        Assert.Equal(codes, CodePacking.Unpack(packed, bits, codes.Length).Select(u => u + qmin).ToArray());
    }

    [Fact]
    public void RefusesValuesOutOfRangeWrongLengthsAndWidths()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => CodePacking.Pack(new[] { 0, 16 }, 4));
        Assert.Contains("[1] = 16", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => CodePacking.Pack(new[] { -1 }, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => CodePacking.Pack(new[] { 0 }, 9));
        Assert.Throws<ArgumentOutOfRangeException>(() => CodePacking.Pack(new[] { 0 }, 0));
        Assert.Equal(new[] { 0, 0, 0 }, CodePacking.Unpack(new byte[2], 3, 3));          // 3 × 3 bits take 2 bytes…
        Assert.Throws<ArgumentException>(() => CodePacking.Unpack(new byte[1], 3, 3));   // …not 1
        Assert.Throws<ArgumentException>(() => CodePacking.Unpack(new byte[3], 3, 3));   // …nor 3
    }
}
