// Packing of integer weight codes below one byte: the one layout shared by quantized checkpoints
// ("vitq-quant/2", QuantizedCheckpoint) and the integer runtime's stored codes (Int8Linear.StoredCodes).
//
// A packed tensor is a little-endian bit stream. Value i, an unsigned cell u_i ∈ [0, 2^bits) (for weight
// codes u = code − q_min, so signed and asymmetric grids pack alike), occupies stream bits
// [i·bits, (i+1)·bits); stream bit 8j + t is bit t (t = 0 least significant) of byte j. Consequences:
//   8 bits   one byte a value (u itself);
//   4 bits   two a byte, the first value in the low nibble (ONNX int4's order);
//   2 bits   four a byte from the low end; 1 bit eight a byte from bit 0;
//   3, 5–7   dense: a value may straddle two bytes (3 bits: 8 values in 3 bytes).
// ⌈n·bits/8⌉ bytes in all; the unused high bits of the last byte are zero.
// Dense 3-bit rather than 4-bit cells: the file is what the issue measures, 3-bit cells cost 0.375 bytes a
// weight against 0.5 (the shipped model's 3-bit checkpoint: README "Outputs and files"), and unpacking runs
// once at load: the runtime expands the codes to int16 panels at compile time whatever the file holds.
// Pack/Unpack move whole bytes through a 64-bit accumulator; PackReference/UnpackReference walk bit by bit
// and are the slow twins the tests hold them to.
namespace ViTQuant.Quantization;

/// <summary>Packs unsigned values of 1–8 bits densely, least significant bit first (see the file header).</summary>
internal static class CodePacking
{
    /// <summary>Narrowest cell.</summary>
    public const int MinBits = 1;

    /// <summary>Widest cell (one value a byte).</summary>
    public const int MaxBits = 8;

    /// <summary>Bytes holding <paramref name="count"/> values of <paramref name="bits"/> bits: ⌈count·bits/8⌉. Throws ArgumentOutOfRangeException for bits outside 1–8 or a negative count.</summary>
    public static long PackedLength(long count, int bits)
    {
        CheckBits(bits);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        return (count * bits + 7) / 8;
    }

    /// <summary>
    /// Packs values in [0, 2^bits). Throws ArgumentOutOfRangeException for bits outside 1–8 or a value
    /// outside the range (naming its index).
    /// </summary>
    public static byte[] Pack(ReadOnlySpan<int> values, int bits)
    {
        var packed = new byte[PackedLength(values.Length, bits)];
        int max = (1 << bits) - 1;
        ulong acc = 0;
        int held = 0, j = 0;
        for (int i = 0; i < values.Length; i++)
        {
            int v = values[i];
            if ((uint)v > (uint)max) throw new ArgumentOutOfRangeException(nameof(values), $"value [{i}] = {v} is outside [0, {max}] ({bits} bits)");
            acc |= (ulong)v << held;
            held += bits;
            while (held >= 8) { packed[j++] = (byte)acc; acc >>= 8; held -= 8; }
        }
        if (held > 0) packed[j] = (byte)acc;
        return packed;
    }

    /// <summary>
    /// Unpacks <c>values.Length</c> values of <paramref name="bits"/> bits. Throws ArgumentException when
    /// <paramref name="packed"/> is not exactly <see cref="PackedLength"/> bytes, ArgumentOutOfRangeException for bits outside 1–8.
    /// </summary>
    public static void Unpack(ReadOnlySpan<byte> packed, int bits, Span<int> values)
    {
        CheckLength(packed, bits, values.Length);
        if (bits == 8)
        {
            for (int i = 0; i < values.Length; i++) values[i] = packed[i];
            return;
        }
        int mask = (1 << bits) - 1;
        ulong acc = 0;
        int held = 0, j = 0;
        for (int i = 0; i < values.Length; i++)
        {
            if (held < bits) { acc |= (ulong)packed[j++] << held; held += 8; }
            values[i] = (int)acc & mask;
            acc >>= bits;
            held -= bits;
        }
    }

    /// <summary>As <see cref="Unpack(ReadOnlySpan{byte}, int, Span{int})"/>, into a new array of <paramref name="count"/> values.</summary>
    public static int[] Unpack(ReadOnlySpan<byte> packed, int bits, int count)
    {
        var values = new int[count];
        Unpack(packed, bits, values);
        return values;
    }

    /// <summary>The slow twin of <see cref="Pack"/>: sets stream bit i·bits + t from bit t of value i, one bit at a time.</summary>
    public static byte[] PackReference(ReadOnlySpan<int> values, int bits)
    {
        var packed = new byte[PackedLength(values.Length, bits)];
        for (int i = 0; i < values.Length; i++)
        {
            if (values[i] < 0 || values[i] >= 1 << bits) throw new ArgumentOutOfRangeException(nameof(values), $"value [{i}] = {values[i]} is outside [0, {(1 << bits) - 1}] ({bits} bits)");
            for (int t = 0; t < bits; t++)
            {
                long bit = (long)i * bits + t;
                if ((values[i] >> t & 1) != 0) packed[bit / 8] |= (byte)(1 << (int)(bit % 8));
            }
        }
        return packed;
    }

    /// <summary>The slow twin of <see cref="Unpack(ReadOnlySpan{byte}, int, Span{int})"/>: reads value i from stream bits i·bits…, one bit at a time.</summary>
    public static void UnpackReference(ReadOnlySpan<byte> packed, int bits, Span<int> values)
    {
        CheckLength(packed, bits, values.Length);
        for (int i = 0; i < values.Length; i++)
        {
            int v = 0;
            for (int t = 0; t < bits; t++)
            {
                long bit = (long)i * bits + t;
                v |= (packed[(int)(bit / 8)] >> (int)(bit % 8) & 1) << t;
            }
            values[i] = v;
        }
    }

    private static void CheckLength(ReadOnlySpan<byte> packed, int bits, int count)
    {
        long want = PackedLength(count, bits);
        if (packed.Length != want) throw new ArgumentException($"{count} values of {bits} bits take {want} bytes, got {packed.Length}", nameof(packed));
    }

    private static void CheckBits(int bits)
    {
        if (bits < MinBits || bits > MaxBits) throw new ArgumentOutOfRangeException(nameof(bits), $"{bits} bits: cells are {MinBits}–{MaxBits} bits");
    }
}
