using System.Buffers.Binary;
using ViTQuant.Data;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Data;

public class ResizeTests
{
    /// <summary>
    /// Independent reference, straight from Pillow's ImagingResample formula, in double and as one
    /// non-separable 2-D sum: out(c, oy, ox) = Σ_y Σ_x wy(oy, y)·wx(ox, x)·in(c, y, x).
    /// </summary>
    private static double[] Reference(float[] src, int c, int inH, int inW, int outH, int outW)
    {
        static double K(double t)
        {
            t = Math.Abs(t);
            return t < 1 ? 1.5 * t * t * t - 2.5 * t * t + 1 : t < 2 ? -0.5 * t * t * t + 2.5 * t * t - 4 * t + 2 : 0;
        }
        static (int Lo, double[] W)[] Axis(int n, int m)
        {
            double scale = (double)n / m, fs = Math.Max(1, scale), support = 2 * fs;
            var r = new (int, double[])[m];
            for (int o = 0; o < m; o++)
            {
                double center = (o + 0.5) * scale;
                int lo = Math.Max(0, (int)Math.Floor(center - support + 0.5));
                int hi = Math.Min(n, (int)Math.Floor(center + support + 0.5));
                var w = new double[hi - lo];
                for (int i = lo; i < hi; i++) w[i - lo] = K((i + 0.5 - center) / fs);
                double s = w.Sum();
                for (int i = 0; i < w.Length; i++) w[i] /= s;
                r[o] = (lo, w);
            }
            return r;
        }
        var ay = Axis(inH, outH);
        var ax = Axis(inW, outW);
        var dst = new double[c * outH * outW];
        for (int ch = 0; ch < c; ch++)
            for (int oy = 0; oy < outH; oy++)
                for (int ox = 0; ox < outW; ox++)
                {
                    double acc = 0;
                    for (int j = 0; j < ay[oy].W.Length; j++)
                        for (int i = 0; i < ax[ox].W.Length; i++)
                            acc += ay[oy].W[j] * ax[ox].W[i] * src[(ch * inH + ay[oy].Lo + j) * inW + ax[ox].Lo + i];
                    dst[(ch * outH + oy) * outW + ox] = acc;
                }
        return dst;
    }

    [Theory]
    [InlineData(1, 28, 28, 32, 32)]    // Fashion-MNIST upscale
    [InlineData(3, 37, 29, 11, 13)]    // non-integer downscale
    [InlineData(2, 64, 48, 8, 6)]      // integer factor 8: wide antialias kernel
    [InlineData(3, 20, 30, 9, 45)]     // down one axis, up the other
    [InlineData(1, 5, 7, 5, 7)]        // identity
    [InlineData(1, 1, 9, 3, 2)]        // single source row
    public void FloatResizeMatchesDoubleReference(int c, int inH, int inW, int outH, int outW)
    {
        var rng = new Rng(11);
        var src = new float[c * inH * inW];
        rng.FillUniform(src, 0f, 1f);
        var dst = new float[c * outH * outW];
        Resize.Bicubic(src, c, inH, inW, dst, outH, outW);
        var want = Reference(src, c, inH, inW, outH, outW);
        for (int i = 0; i < dst.Length; i++) Assert.True(Math.Abs(dst[i] - want[i]) < 2e-6, $"element {i}: {dst[i]} vs {want[i]}");
        if (inH == outH && inW == outW) Assert.Equal(src, dst);
    }

    [Fact]
    public void KernelValuesAndConstantImages()
    {
        Assert.Equal(1.0, Resize.BicubicKernel(0));
        Assert.Equal(0.0, Resize.BicubicKernel(1));
        Assert.Equal(0.0, Resize.BicubicKernel(-2));
        Assert.Equal(0.5625, Resize.BicubicKernel(0.5), 12);
        Assert.Equal(-0.0625, Resize.BicubicKernel(-1.5), 12);
        // Weights are normalised per output pixel, so a constant stays constant even at the borders.
        var src = Enumerable.Repeat(0.3f, 2 * 17 * 23).ToArray();
        var dst = new float[2 * 5 * 40];
        Resize.Bicubic(src, 2, 17, 23, dst, 5, 40);
        Assert.All(dst, v => Assert.Equal(0.3f, v, 5));
        var bytes = Enumerable.Repeat((byte)200, 3 * 19 * 11).ToArray();
        Assert.All(Resize.BicubicPil(bytes, 19, 11, 3, 7, 30), v => Assert.Equal(200, v));
    }

    [Fact]
    public void MatchesTorchInterpolateAntialiasFixture()
    {
        var f = Fixture("resize_torch.bin", "RSZT", out int count);
        Assert.Equal(5, count);
        int pos = 8;
        for (int k = 0; k < count; k++)
        {
            int c = I32(f, ref pos), ih = I32(f, ref pos), iw = I32(f, ref pos), oh = I32(f, ref pos), ow = I32(f, ref pos);
            var x = F32(f, ref pos, c * ih * iw);
            var want = F32(f, ref pos, c * oh * ow);
            var got = new float[want.Length];
            Resize.Bicubic(x, c, ih, iw, got, oh, ow);
            // torch computes the weights in float32; 1e-5 absolute on [0, 1] data covers that.
            for (int i = 0; i < got.Length; i++) Assert.True(Math.Abs(got[i] - want[i]) < 1e-5, $"case {k} element {i}: {got[i]} vs torch {want[i]}");
        }
        Assert.Equal(f.Length, pos);
    }

    [Fact]
    public void PilResizeIsBitExactWithPillowFixture()
    {
        var f = Fixture("resize_pil.bin", "RSZP", out int count);
        int pos = 8;
        for (int k = 0; k < count; k++)
        {
            int c = I32(f, ref pos), iw = I32(f, ref pos), ih = I32(f, ref pos), ow = I32(f, ref pos), oh = I32(f, ref pos);
            var src = f.AsSpan(pos, ih * iw * c).ToArray(); pos += src.Length;
            var want = f.AsSpan(pos, oh * ow * c).ToArray(); pos += want.Length;
            var got = Resize.BicubicPil(src, iw, ih, c, ow, oh);
            int mismatches = want.Where((v, i) => v != got[i]).Count();
            Assert.True(mismatches == 0, $"case {k} ({c}ch {iw}x{ih} -> {ow}x{oh}): {mismatches} of {want.Length} bytes differ from Pillow");
        }
        Assert.Equal(f.Length, pos);
    }

    [Fact]
    public void PilResizeStaysNearFloatResize()
    {
        // The 8-bit path rounds and clips after each pass; otherwise it is the same filter.
        var rng = new Rng(5);
        int c = 3, ih = 40, iw = 52, oh = 17, ow = 23;
        var bytes = new byte[ih * iw * c];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = (byte)rng.NextInt(256);
        var chw = new float[bytes.Length];
        for (int y = 0; y < ih; y++)
            for (int x = 0; x < iw; x++)
                for (int ch = 0; ch < c; ch++) chw[(ch * ih + y) * iw + x] = bytes[(y * iw + x) * c + ch];
        var fl = new float[c * oh * ow];
        Resize.Bicubic(chw, c, ih, iw, fl, oh, ow);
        var u8 = Resize.BicubicPil(bytes, iw, ih, c, ow, oh);
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
                for (int ch = 0; ch < c; ch++)
                {
                    float want = Math.Clamp(fl[(ch * oh + y) * ow + x], 0f, 255f);
                    Assert.InRange(u8[(y * ow + x) * c + ch] - want, -2.5f, 2.5f);
                }
    }

    [Fact]
    public void RejectsBadSizes()
    {
        Assert.Throws<ArgumentException>(() => Resize.Bicubic(new float[4], 1, 2, 2, new float[4], 0, 4));
        Assert.Throws<ArgumentException>(() => Resize.Bicubic(new float[5], 1, 2, 2, new float[4], 2, 2));
        Assert.Throws<ArgumentException>(() => Resize.BicubicPil(new byte[5], 2, 2, 1, 3, 3));
    }

    internal static byte[] Fixture(string name, string magic, out int count)
    {
        string path = Path.Combine(AppContext.BaseDirectory, "fixtures", name);
        Assert.True(File.Exists(path), $"{path} missing: run tools/reference/make_resize_fixture.py");
        var f = File.ReadAllBytes(path);
        Assert.Equal(magic, System.Text.Encoding.ASCII.GetString(f, 0, 4));
        count = BinaryPrimitives.ReadInt32LittleEndian(f.AsSpan(4));
        return f;
    }

    internal static int I32(byte[] f, ref int pos)
    {
        int v = BinaryPrimitives.ReadInt32LittleEndian(f.AsSpan(pos));
        pos += 4;
        return v;
    }

    private static float[] F32(byte[] f, ref int pos, int n)
    {
        var r = new float[n];
        for (int i = 0; i < n; i++) r[i] = BinaryPrimitives.ReadSingleLittleEndian(f.AsSpan(pos + 4 * i));
        pos += 4 * n;
        return r;
    }
}
