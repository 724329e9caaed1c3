// Antialiased bicubic resize, the algorithm of Pillow's ImagingResample (Resample.c), which is also
// what torch.nn.functional.interpolate(mode='bicubic', antialias=True) and torchvision compute.
//
// Separable: a horizontal pass then a vertical pass, each a 1-D convolution with per-output-pixel
// weights. For an axis of inSize pixels resized to outSize:
//   scale       = inSize / outSize
//   filterscale = max(scale, 1)                 (downscaling widens the kernel: the antialiasing)
//   support     = 2 · filterscale               (bicubic support is 2)
//   center(o)   = (o + 0.5) · scale             (pixel centres at (i + 0.5)·scale − 0.5 in index space)
//   xmin        = max(0, (int)(center − support + 0.5)),  xmax = min(inSize, (int)(center + support + 0.5))
//   w(o, x)     = K((x − center + 0.5) / filterscale)  for x in [xmin, xmax), then normalised to sum 1
//   K(t)        = (a+2)|t|³ − (a+3)|t|² + 1 for |t| < 1;  a(|t|³ − 5|t|² + 8|t| − 4) for 1 ≤ |t| < 2;  0 otherwise,  a = −0.5
// Source pixels outside the image get no weight (renormalisation instead of padding).
//
// Two implementations share the weights:
//   Bicubic      float CHW, float accumulation, no clamping (torch's float behaviour).
//   BicubicPil   8-bit HWC, bit-exact with Pillow: weights rounded to 22-bit fixed point, a rounding
//                bias of 2^21, and a clip to 0..255 after EACH pass — this is what timm's evaluation
//                transform does to a decoded JPEG, so accuracy numbers can be reproduced exactly.
using System.Buffers;
using System.Numerics.Tensors;

namespace ViTQuant.Data;

/// <summary>Antialiased bicubic image resizing (Pillow / torchvision antialias=True semantics).</summary>
internal static class Resize
{
    /// <summary>Pillow's fixed-point precision for 8-bit resampling: 32 − 8 − 2 bits.</summary>
    private const int PrecisionBits = 22;

    /// <summary>Rounding bias Pillow starts every fixed-point sum with: one half in the last kept bit.</summary>
    private const int Bias = 1 << (PrecisionBits - 1);

    /// <summary>The bicubic convolution kernel with a = −0.5 (Pillow's and torch-antialias's choice).</summary>
    public static double BicubicKernel(double x)
    {
        const double a = -0.5;
        x = Math.Abs(x);
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
        if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
        return 0.0;
    }

    /// <summary>Resampling weights of one axis: output o reads source pixels [Start[o], Start[o] + Length[o]) with weights Weights[o·KSize + k].</summary>
    internal sealed class AxisWeights
    {
        public required int KSize { get; init; }
        public required int[] Start { get; init; }
        public required int[] Length { get; init; }
        public required double[] Weights { get; init; }
    }

    /// <summary>Pillow's precompute_coeffs for the bicubic filter (see the file header).</summary>
    internal static AxisWeights Weights(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double filterscale = Math.Max(scale, 1.0);
        double support = 2.0 * filterscale;
        int ksize = (int)Math.Ceiling(support) * 2 + 1;
        var start = new int[outSize];
        var len = new int[outSize];
        var w = new double[outSize * ksize];
        double ss = 1.0 / filterscale;
        for (int o = 0; o < outSize; o++)
        {
            double center = (o + 0.5) * scale;
            int xmin = Math.Max(0, (int)(center - support + 0.5)); // C's (int) truncates toward zero, as here
            int xmax = Math.Min(inSize, (int)(center + support + 0.5)) - xmin;
            double ww = 0;
            for (int x = 0; x < xmax; x++)
            {
                double v = BicubicKernel((x + xmin - center + 0.5) * ss);
                w[o * ksize + x] = v;
                ww += v;
            }
            if (ww != 0.0)
                for (int x = 0; x < xmax; x++) w[o * ksize + x] /= ww;
            start[o] = xmin;
            len[o] = xmax;
        }
        return new AxisWeights { KSize = ksize, Start = start, Length = len, Weights = w };
    }

    private static void CheckSizes(int channels, int inH, int inW, int outH, int outW)
    {
        if (channels <= 0 || inH <= 0 || inW <= 0 || outH <= 0 || outW <= 0)
            throw new ArgumentException($"resize needs positive sizes, got {channels}x{inH}x{inW} -> {outH}x{outW}");
    }

    /// <summary>
    /// Resizes a float image, CHW (<paramref name="channels"/>×<paramref name="inH"/>×<paramref name="inW"/>) to
    /// channels×<paramref name="outH"/>×<paramref name="outW"/> with antialiased bicubic interpolation, in float,
    /// without clamping (bicubic over/undershoots at edges). Throws ArgumentException for non-positive
    /// sizes or spans of the wrong length.
    /// </summary>
    public static void Bicubic(ReadOnlySpan<float> src, int channels, int inH, int inW, Span<float> dst, int outH, int outW)
    {
        CheckSizes(channels, inH, inW, outH, outW);
        if (src.Length != channels * inH * inW) throw new ArgumentException($"resize source has {src.Length} elements, expected {channels}x{inH}x{inW}");
        if (dst.Length != channels * outH * outW) throw new ArgumentException($"resize destination has {dst.Length} elements, expected {channels}x{outH}x{outW}");
        var hw = Weights(inW, outW);
        var vw = Weights(inH, outH);
        float[] hk = ToFloat(hw.Weights), vk = ToFloat(vw.Weights);
        // Only rows some output row reads need the horizontal pass (as Pillow's ybox_first/last).
        int y0 = vw.Start[0], y1 = vw.Start[outH - 1] + vw.Length[outH - 1];
        int rows = y1 - y0;
        var tmp = ArrayPool<float>.Shared.Rent(rows * outW); // [rows, outW] for one channel
        try
        {
            for (int c = 0; c < channels; c++)
            {
                var srcC = src.Slice(c * inH * inW, inH * inW);
                var dstC = dst.Slice(c * outH * outW, outH * outW);
                var t = tmp.AsSpan(0, rows * outW);
                for (int y = 0; y < rows; y++)
                {
                    var row = srcC.Slice((y0 + y) * inW, inW);
                    var trow = t.Slice(y * outW, outW);
                    for (int o = 0; o < outW; o++)
                    {
                        int s = hw.Start[o], n = hw.Length[o], k0 = o * hw.KSize;
                        float acc = 0f;
                        for (int k = 0; k < n; k++) acc += row[s + k] * hk[k0 + k];
                        trow[o] = acc;
                    }
                }
                for (int o = 0; o < outH; o++)
                {
                    int s = vw.Start[o] - y0, n = vw.Length[o], k0 = o * vw.KSize;
                    var drow = dstC.Slice(o * outW, outW);
                    drow.Clear();
                    for (int k = 0; k < n; k++) TensorPrimitives.MultiplyAdd(t.Slice((s + k) * outW, outW), vk[k0 + k], drow, drow);
                }
            }
        }
        finally { ArrayPool<float>.Shared.Return(tmp); }
    }

    private static float[] ToFloat(double[] w)
    {
        var f = new float[w.Length];
        for (int i = 0; i < w.Length; i++) f[i] = (float)w[i];
        return f;
    }

    /// <summary>
    /// Resizes an 8-bit HWC image (<paramref name="channels"/> interleaved) exactly as Pillow's
    /// Image.resize(..., BICUBIC) does for modes L and RGB: fixed-point weights, rounding and clipping
    /// to 0..255 after each pass; an axis whose size does not change is not resampled. Returns a new
    /// outH×outW×channels buffer. Throws ArgumentException for non-positive sizes or a wrong source length.
    /// </summary>
    public static byte[] BicubicPil(ReadOnlySpan<byte> src, int inW, int inH, int channels, int outW, int outH)
    {
        CheckSizes(channels, inH, inW, outH, outW);
        if (src.Length != inH * inW * channels) throw new ArgumentException($"resize source has {src.Length} bytes, expected {inH}x{inW}x{channels}");
        bool horizontal = outW != inW, vertical = outH != inH;
        var vw = Weights(inH, outH);
        int y0 = vertical ? vw.Start[0] : 0, y1 = vertical ? vw.Start[outH - 1] + vw.Length[outH - 1] : inH;
        byte[] tmp;
        int tmpW;
        if (horizontal)
        {
            var hw = Weights(inW, outW);
            var hk = ToFixed(hw.Weights);
            tmpW = outW;
            tmp = new byte[(y1 - y0) * outW * channels];
            for (int y = y0; y < y1; y++)
            {
                var row = src.Slice(y * inW * channels, inW * channels);
                var trow = tmp.AsSpan((y - y0) * outW * channels, outW * channels);
                for (int o = 0; o < outW; o++)
                {
                    var wk = hk.AsSpan(o * hw.KSize, hw.Length[o]);
                    var px = row.Slice(hw.Start[o] * channels, wk.Length * channels);
                    if (channels == 3)
                    {
                        // RGB, the common case: one sweep over the taps for all three channels.
                        int a0 = Bias, a1 = Bias, a2 = Bias;
                        for (int k = 0; k < wk.Length; k++)
                        {
                            int w = wk[k];
                            a0 += px[3 * k] * w; a1 += px[3 * k + 1] * w; a2 += px[3 * k + 2] * w;
                        }
                        trow[3 * o] = Clip8(a0); trow[3 * o + 1] = Clip8(a1); trow[3 * o + 2] = Clip8(a2);
                    }
                    else
                    {
                        for (int c = 0; c < channels; c++)
                        {
                            int acc = Bias;
                            for (int k = 0; k < wk.Length; k++) acc += px[k * channels + c] * wk[k];
                            trow[o * channels + c] = Clip8(acc);
                        }
                    }
                }
            }
        }
        else
        {
            tmpW = inW;
            tmp = src.Slice(y0 * inW * channels, (y1 - y0) * inW * channels).ToArray();
        }
        if (!vertical) return tmp;
        var vk = ToFixed(vw.Weights);
        int stride = tmpW * channels;
        var dst = new byte[outH * stride];
        var sums = new int[stride];
        for (int o = 0; o < outH; o++)
        {
            // Row-wise accumulation: contiguous memory, the same sums in the same order as Pillow's per-pixel loop.
            sums.AsSpan().Fill(Bias);
            int s = vw.Start[o] - y0, n = vw.Length[o], k0 = o * vw.KSize;
            for (int k = 0; k < n; k++)
            {
                int w = vk[k0 + k];
                var trow = tmp.AsSpan((s + k) * stride, stride);
                for (int j = 0; j < trow.Length; j++) sums[j] += trow[j] * w;
            }
            var drow = dst.AsSpan(o * stride, stride);
            for (int j = 0; j < drow.Length; j++) drow[j] = Clip8(sums[j]);
        }
        return dst;
    }

    /// <summary>Pillow's normalize_coeffs_8bpc: round half away from zero to 22-bit fixed point.</summary>
    private static int[] ToFixed(double[] w)
    {
        var k = new int[w.Length];
        for (int i = 0; i < w.Length; i++)
            k[i] = w[i] < 0 ? (int)(-0.5 + w[i] * (1 << PrecisionBits)) : (int)(0.5 + w[i] * (1 << PrecisionBits));
        return k;
    }

    /// <summary>Pillow's clip8: arithmetic shift out the fraction, clamp to a byte.</summary>
    private static byte Clip8(int acc) => (byte)Math.Clamp(acc >> PrecisionBits, 0, 255);
}
