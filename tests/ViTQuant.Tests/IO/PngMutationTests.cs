// Mutation fuzzing of the PNG decoder wrapper (issue 17, item 5 keeps our libpng binding instead of
// SkiaSharp's decoder): thousands of corrupted and truncated files, every one of which must either
// decode into a buffer of exactly width × height × channels bytes or throw ViTQuantException — never
// another exception, never a crash. Deterministic (fixed seed), a second or two.
using ViTQuant.IO;

namespace ViTQuant.Tests.IO;

public class PngMutationTests
{
    private static IEnumerable<byte[]> Seeds()
    {
        var r = new Random(7);
        byte[] Px(int n) { var b = new byte[n]; r.NextBytes(b); return b; }
        yield return MiniPng.Encode(Px(9 * 7), 9, 7, MiniPng.Gray);
        yield return MiniPng.Encode(Px(6 * 5 * 3), 6, 5, MiniPng.Rgb, upFilter: true);
        yield return MiniPng.Encode(Px(5 * 4 * 4), 5, 4, MiniPng.Rgba);
        yield return MiniPng.Encode(Px(4 * 4 * 2), 4, 4, MiniPng.GrayAlpha);
        yield return MiniPng.Encode(Px(3 * 3 * 6), 3, 3, MiniPng.Rgb, bitDepth: 16);
        yield return MiniPng.Encode(Px(8 * 2), 8, 2, MiniPng.Palette, palette: Px(3 * 256));
    }

    [Fact]
    public void CorruptedPngs_DecodeConsistentlyOrFailWithOneUserError()
    {
        if (!PngReader.IsAvailable) return; // libpng16 missing: the decoder's own tests report it
        var r = new Random(12345);
        int decoded = 0, refused = 0;
        foreach (var seed in Seeds())
        {
            Assert.True(Check(seed), "a seed file does not decode"); // every seed file itself is valid
            for (int trial = 0; trial < 700; trial++)
            {
                var data = (byte[])seed.Clone();
                switch (trial % 3)
                {
                    case 0: // flip a few bytes anywhere (header, chunk lengths, CRCs, compressed data)
                        for (int k = r.Next(1, 6); k > 0; k--) data[r.Next(data.Length)] ^= (byte)r.Next(1, 256);
                        break;
                    case 1: // truncate
                        data = data[..r.Next(data.Length)];
                        break;
                    default: // overwrite a 4-byte field with an extreme value (lengths, dimensions)
                        int at = r.Next(Math.Max(1, data.Length - 4));
                        BitConverter.GetBytes(r.Next(2) == 0 ? int.MaxValue : r.Next()).CopyTo(data, at);
                        break;
                }
                if (Check(data)) decoded++; else refused++;
            }
        }
        Assert.True(refused > 1000, $"only {refused} of the mutations were refused: the corruption is not reaching the decoder");
        Assert.True(decoded + refused == 6 * 700);

        static bool Check(byte[] data)
        {
            try
            {
                var img = PngReader.Decode(data, "fuzz.png");
                Assert.True(img.Channels is 1 or 3);
                Assert.Equal((long)img.Width * img.Height * img.Channels, img.Pixels.Length);
                return true;
            }
            catch (ViTQuantException) { return false; }
        }
    }
}
