using System.Buffers.Binary;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Data;

public class TransformsTests
{
    [Theory]
    [InlineData(61, 75, 36, 36, 44)]     // landscape: int(36·75/61) = int(44.26)
    [InlineData(100, 50, 10, 20, 10)]    // portrait
    [InlineData(53, 67, 30, 30, 37)]     // int(37.92) truncates
    [InlineData(8, 8, 5, 5, 5)]
    [InlineData(375, 500, 256, 256, 341)] // a typical ImageNet photo: int(341.33)
    public void ShorterSideSizeFollowsTorchvision(int h, int w, int size, int eh, int ew)
    {
        Assert.Equal((eh, ew), Transforms.ShorterSideSize(h, w, size));
    }

    [Theory]
    [InlineData(10, 10, 0)]
    [InlineData(11, 10, 0)]  // round(0.5) = 0 (half to even)
    [InlineData(13, 10, 2)]  // round(1.5) = 2
    [InlineData(15, 10, 2)]  // round(2.5) = 2
    [InlineData(17, 10, 4)]  // round(3.5) = 4
    [InlineData(256, 224, 16)]
    [InlineData(7, 10, -1)]  // crop larger: pad (3 // 2) = 1 before
    [InlineData(6, 10, -2)]
    public void CenterCropRoundingMatchesTorchvision(int dim, int crop, int offset)
    {
        Assert.Equal((offset, offset), Transforms.CenterCropOffsets(dim, dim, crop));
    }

    [Fact]
    public void CenterCropCopiesTheWindowAndZeroPads()
    {
        // 1×3×5 image, values = 10·row + col.
        var src = new float[15];
        for (int y = 0; y < 3; y++) for (int x = 0; x < 5; x++) src[y * 5 + x] = 10 * y + x;
        var dst = new float[9];
        Transforms.CenterCrop(src, 1, 3, 5, dst, 3); // left = round(1.0) = 1, top = 0
        Assert.Equal(new float[] { 1, 2, 3, 11, 12, 13, 21, 22, 23 }, dst);
        var big = new float[16];
        Transforms.CenterCrop(src, 1, 3, 5, big, 4); // rows: pad 0 top (1 // 2), 1 bottom; cols: left = round(0.5) = 0
        Assert.Equal(new float[] { 0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23, 0, 0, 0, 0 }, big);
    }

    [Fact]
    public void NormalizeSubtractsThenDividesPerChannel()
    {
        var img = new float[] { 1, 2, 3, 4, 5, 6 };
        Transforms.Normalize(img, 3, new[] { 1f, 2f, 3f }, new[] { 2f, 4f, 0.5f });
        Assert.Equal(new float[] { 0, 0.5f, 0.25f, 0.5f, 4, 6 }, img);
        var one = new float[] { 0.5f, 1f };
        Transforms.Normalize(one, 2, new[] { 0.5f }, new[] { 0.25f });
        Assert.Equal(new float[] { 0, 2 }, one);
        Assert.Throws<ArgumentException>(() => Transforms.Normalize(new float[6], 3, new[] { 0f, 0f }, new[] { 1f }));
        Assert.Throws<ArgumentException>(() => Transforms.Normalize(new float[6], 3, new[] { 0f }, new[] { 0f }));
    }

    [Fact]
    public void RandomCropIsAZeroPaddedShiftCoveringAllOffsets()
    {
        const int c = 2, h = 6, w = 7, p = 2;
        var src = new float[c * h * w];
        for (int i = 0; i < src.Length; i++) src[i] = i + 1; // no zeros, so padding is recognisable
        var seen = new HashSet<(int, int)>();
        for (ulong seed = 0; seed < 400; seed++)
        {
            var img = (float[])src.Clone();
            Transforms.RandomCrop(img, c, h, w, p, new Rng(seed));
            var again = (float[])src.Clone();
            Transforms.RandomCrop(again, c, h, w, p, new Rng(seed));
            Assert.Equal(img, again);
            // Find the shift (dy, dx) that explains the output exactly.
            (int, int)? found = null;
            for (int dy = -p; dy <= p && found == null; dy++)
                for (int dx = -p; dx <= p && found == null; dx++)
                {
                    bool ok = true;
                    for (int ch = 0; ch < c && ok; ch++)
                        for (int y = 0; y < h && ok; y++)
                            for (int x = 0; x < w && ok; x++)
                            {
                                int sy = y + dy, sx = x + dx;
                                float want = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[(ch * h + sy) * w + sx] : 0f;
                                ok = img[(ch * h + y) * w + x] == want;
                            }
                    if (ok) found = (dy, dx);
                }
            Assert.NotNull(found);
            seen.Add(found!.Value);
        }
        Assert.Equal(25, seen.Count); // every offset in [−2, 2]² is reachable
    }

    [Fact]
    public void FlipMirrorsRowsAndAugmentationIsDeterministic()
    {
        var img = new float[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }; // 2×2×3
        Transforms.HorizontalFlip(img, 2, 2, 3);
        Assert.Equal(new float[] { 3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10 }, img);

        var aug = Transforms.PadCropFlip(4, 0.5);
        var src = new float[3 * 32 * 32];
        new Rng(3).FillUniform(src, 0f, 1f);
        int flips = 0;
        for (ulong s = 0; s < 200; s++)
        {
            var a = (float[])src.Clone();
            var b = (float[])src.Clone();
            aug(a, 3, 32, 32, new Rng(s));
            aug(b, 3, 32, 32, new Rng(s));
            Assert.Equal(a, b);
            // Undo a would-be flip and compare with the crop alone (same first two draws).
            var cropOnly = (float[])src.Clone();
            Transforms.RandomCrop(cropOnly, 3, 32, 32, 4, new Rng(s));
            if (!a.SequenceEqual(cropOnly))
            {
                Transforms.HorizontalFlip(a, 3, 32, 32);
                Assert.Equal(cropOnly, a);
                flips++;
            }
        }
        Assert.InRange(flips, 70, 130); // p = 0.5 over 200 draws
        Assert.Throws<ArgumentException>(() => Transforms.PadCropFlip(-1));
    }

    [Fact]
    public void EvalTransformMatchesTorchvisionPilPipelineFixture()
    {
        var f = ResizeTests.Fixture("resize_eval.bin", "RSZE", out int count);
        int pos = 8;
        for (int k = 0; k < count; k++)
        {
            int n = ResizeTests.I32(f, ref pos);
            var file = f.AsSpan(pos, n).ToArray(); pos += n;
            int size = ResizeTests.I32(f, ref pos);
            double crop = BinaryPrimitives.ReadDoubleLittleEndian(f.AsSpan(pos)); pos += 8;
            int c = ResizeTests.I32(f, ref pos);
            var want = f.AsSpan(pos, c * size * size).ToArray(); pos += want.Length;

            var t = new EvalTransform(size, crop, c);
            var got = new float[t.OutputSize];
            t.Apply(ImageDecoder.Decode(file, $"fixture case {k}"), got);
            int mismatches = 0;
            for (int i = 0; i < got.Length; i++) if (got[i] != want[i] / 255f) mismatches++;
            Assert.True(mismatches == 0, $"case {k}: {mismatches} of {got.Length} values differ from PIL + torchvision");
        }
        Assert.Equal(f.Length, pos);
    }

    [Fact]
    public void FloatEvalTransformResizesClampsCropsAndReplicates()
    {
        var rng = new Rng(9);
        var src = new float[28 * 28];
        rng.FillUniform(src, 0f, 1f);
        var t = new EvalTransform(32, 0.875, 3); // shorter side → floor(36.57) = 36, crop 32 at offset 2
        Assert.Equal(36, t.ResizeSize);
        var got = new float[t.OutputSize];
        t.Apply(src, 1, 28, 28, got);
        var resized = new float[36 * 36];
        Resize.Bicubic(src, 1, 28, 28, resized, 36, 36);
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
            {
                float want = Math.Clamp(resized[(y + 2) * 36 + x + 2], 0f, 1f);
                for (int ch = 0; ch < 3; ch++) Assert.Equal(want, got[(ch * 32 + y) * 32 + x]);
            }
        Assert.Contains(got, v => v == 0f || v == 1f); // random pixels overshoot somewhere: the clamp is exercised
        Assert.Throws<ArgumentException>(() => t.Apply(src, 1, 28, 28, new float[10]));
        Assert.Throws<ArgumentException>(() => new EvalTransform(0));
        Assert.Throws<ArgumentException>(() => new EvalTransform(224, 0));
        Assert.Throws<ArgumentException>(() => new EvalTransform(224, 0.9, 2));
    }

    [Fact]
    public void RgbToGrayUsesPillowLuma()
    {
        var t = new EvalTransform(2, 1.0, 1);
        var img = new DecodedImage(2, 2, 3, new byte[] { 255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30 });
        var got = new float[4];
        t.Apply(img, got);
        // L = (19595 R + 38470 G + 7471 B + 32768) >> 16
        Assert.Equal(new[] { 76 / 255f, 150 / 255f, 29 / 255f, 18 / 255f }, got);
    }

    [Fact]
    public void TransformedDatasetServesModelSizedImages()
    {
        var ds = new FunctionDataset(5, 1, 8, 8, (i, k) => (i + k % 8) / 20f);
        var t = new TransformedDataset(ds, new EvalTransform(12, 1.0, 3));
        Assert.Equal((5, 3, 12, 12), (t.Count, t.Channels, t.Height, t.Width));
        var img = t.GetImageTensor(2);
        var direct = new float[3 * 12 * 12];
        var src = new float[64];
        ds.GetImage(2, src);
        new EvalTransform(12, 1.0, 3).Apply(src, 1, 8, 8, direct);
        Assert.Equal(direct, img.ToArray());
        Assert.Equal(ds.Label(3), t.Label(3));
    }
}
