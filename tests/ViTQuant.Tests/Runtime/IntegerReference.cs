// An independent, slow evaluation of a quantized model the way the integer runtime defines it, for the
// bit-for-bit test: every integer step (activation codes, integer weights from the frozen weights and their
// grids, int32 dot products, the dequantisation y = FMA(acc, Δx·Δw, b), attention indexing, pooling) is
// written here again as plain scalar loops straight from the quantizers' definitions — no packing, no
// ActGrid, no Int8Gemm. The float non-linear ops call the same Kernels functions as the runtime (their own
// tests compare them with their reference twins), so the two evaluations must agree to the last bit.
// Uniform per-tensor plans only (minmax / percentile / mimiq presets), token pooling.
using ViTQuant.Kernels;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Runtime;

internal static class IntegerReference
{
    /// <summary>(scale, zero, qmin, qmax, lsq) of a per-tensor uniform or LSQ quantizer, read from its public state.</summary>
    private static (float S, float Z, int Lo, int Hi, bool Lsq) Grid(Quantizer q) => q switch
    {
        UniformQuantizer u => (u.Params(0).Scale, u.Params(0).ZeroPoint, u.QMin, u.QMax, false),
        LsqQuantizer l => (Math.Max(l.Alpha!.Data[0], RangeSearch.MinScale), MathF.Round(l.ZeroPoint!.Data[0]), l.QMin, l.QMax, true),
        _ => throw new InvalidOperationException($"reference handles uniform/LSQ inputs only, got {q.Spec}"),
    };

    /// <summary>x quantized as the simulation does it, returned as integers relative to the zero point.</summary>
    private static int[] Codes(Quantizer q, float[] x, int offset, int n, int stride, int rows)
    {
        var (s, z, lo, hi, lsq) = Grid(q);
        var r = new int[rows * n];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < n; j++)
            {
                float v = x[offset + i * stride + j];
                float code = lsq ? MathF.Round(Math.Clamp(v / s + z, lo, hi)) : Math.Clamp(MathF.Round(v / s) + z, lo, hi);
                r[i * n + j] = (int)code - (int)z;
            }
        return r;
    }

    /// <summary>y[rows, out] = integer linear layer on x[rows, in].</summary>
    private static float[] Linear(QuantizedModel qm, string name, ViTQuant.Nn.Linear lin, float[] x, int rows)
    {
        int inF = lin.InFeatures, outF = lin.OutFeatures;
        var a = Codes(qm.ActivationQuantizers[name], x, 0, inF, inF, rows);
        float sx = Grid(qm.ActivationQuantizers[name]).S;
        var grid = qm.WeightGrids[name];
        var y = new float[rows * outF];
        for (int o = 0; o < outF; o++)
        {
            float sw = grid.Scale[grid.Scale.Length == 1 ? 0 : o];
            var k = new int[inF];
            for (int i = 0; i < inF; i++) k[i] = (int)MathF.Round(lin.Weight.Data[o * inF + i] / sw);
            float b = lin.Bias?.Data[o] ?? 0f;
            for (int r = 0; r < rows; r++)
            {
                int acc = 0;
                for (int i = 0; i < inF; i++) acc += a[r * inF + i] * k[i];
                y[r * outF + o] = MathF.FusedMultiplyAdd(acc, sx * sw, b);
            }
        }
        return y;
    }

    public static float[] Logits(QuantizedModel qm, Tensor images)
    {
        var m = (ViTQuant.Models.VisionTransformer)qm.Model;
        var c = m.Config;
        int B = images.Shape[0], C = c.InChans, S = c.ImageSize, P = c.PatchSize, G = c.GridSize, Np = c.NumPatches;
        int N = c.NumTokens, D = c.EmbedDim, H = c.NumHeads, dh = c.HeadDim, Hd = c.MlpHidden, pre = c.NumPrefixTokens, cpp = C * P * P;
        // Patch embedding (float: the presets keep the image float) through the same SGEMM call.
        var patches = new float[B * Np * cpp];
        for (int b = 0; b < B; b++)
            for (int gy = 0; gy < G; gy++)
                for (int gx = 0; gx < G; gx++)
                    for (int ch = 0; ch < C; ch++)
                        for (int py = 0; py < P; py++)
                            for (int px = 0; px < P; px++)
                                patches[((b * Np) + gy * G + gx) * cpp + (ch * P + py) * P + px] = images.Data[((b * C + ch) * S + gy * P + py) * S + gx * P + px];
        var tok = new float[B * Np * D];
        Gemm.Sgemm(false, true, B * Np, D, cpp, 1f, patches, cpp, m.PatchWeight.Data, cpp, 0f, tok, D);
        var x = new float[B * N * D];
        for (int b = 0; b < B; b++)
            for (int t = 0; t < N; t++)
                for (int d = 0; d < D; d++)
                {
                    float v = t == 0 && m.ClsToken != null ? m.ClsToken.Data[d] : t == 1 && m.DistToken != null ? m.DistToken.Data[d] : tok[(b * Np + t - pre) * D + d] + m.PatchBias.Data[d];
                    x[(b * N + t) * D + d] = v + m.PosEmbed.Data[t * D + d];
                }
        int rows = B * N;
        var mean = new float[rows];
        var rstd = new float[rows];
        float attnScale = 1f / MathF.Sqrt(dh);
        for (int i = 0; i < c.Depth; i++)
        {
            var blk = m.Blocks[i];
            string p = $"blocks.{i}";
            var h = new float[rows * D];
            LayerNormKernel.LayerNormRows(x, blk.Norm1.Weight.Data, blk.Norm1.Bias.Data, h, mean, rstd, rows, D, c.LayerNormEps);
            var qkv = Linear(qm, $"{p}.attn.qkv", blk.Qkv, h, rows);
            var ctx = new float[rows * D];
            Quantizer qq = qm.ActivationQuantizers[$"{p}.attn.q"], kq = qm.ActivationQuantizers[$"{p}.attn.k"];
            Quantizer vq = qm.ActivationQuantizers[$"{p}.attn.v"], pq = qm.ActivationQuantizers[$"{p}.attn.probs"];
            for (int b = 0; b < B; b++)
                for (int hh = 0; hh < H; hh++)
                {
                    int off = b * N * 3 * D + hh * dh;
                    var qi = Codes(qq, qkv, off, dh, 3 * D, N);
                    var ki = Codes(kq, qkv, off + D, dh, 3 * D, N);
                    var vi = Codes(vq, qkv, off + 2 * D, dh, 3 * D, N);
                    var logits = new float[N * N];
                    float sqk = Grid(qq).S * Grid(kq).S * attnScale;
                    for (int r = 0; r < N; r++)
                        for (int j = 0; j < N; j++)
                        {
                            int acc = 0;
                            for (int d = 0; d < dh; d++) acc += qi[r * dh + d] * ki[j * dh + d];
                            logits[r * N + j] = MathF.FusedMultiplyAdd(acc, sqk, 0f);
                        }
                    SoftmaxKernel.SoftmaxRows(logits, logits, N, N);
                    var pi = Codes(pq, logits, 0, N, N, N);
                    float spv = Grid(pq).S * Grid(vq).S;
                    for (int r = 0; r < N; r++)
                        for (int d = 0; d < dh; d++)
                        {
                            int acc = 0;
                            for (int j = 0; j < N; j++) acc += pi[r * N + j] * vi[j * dh + d];
                            ctx[(b * N + r) * D + hh * dh + d] = MathF.FusedMultiplyAdd(acc, spv, 0f);
                        }
                }
            var proj = Linear(qm, $"{p}.attn.proj", blk.Proj, ctx, rows);
            for (int j = 0; j < x.Length; j++) x[j] += proj[j];
            LayerNormKernel.LayerNormRows(x, blk.Norm2.Weight.Data, blk.Norm2.Bias.Data, h, mean, rstd, rows, D, c.LayerNormEps);
            var f1 = Linear(qm, $"{p}.mlp.fc1", blk.Fc1, h, rows);
            GeluKernel.Gelu(f1, f1);
            var f2 = Linear(qm, $"{p}.mlp.fc2", blk.Fc2, f1, rows);
            for (int j = 0; j < x.Length; j++) x[j] += f2[j];
        }
        var cls = new float[B * D];
        for (int b = 0; b < B; b++) Array.Copy(x, b * N * D, cls, b * D, D);
        var pooled = new float[B * D];
        LayerNormKernel.LayerNormRows(cls, m.Norm.Weight.Data, m.Norm.Bias.Data, pooled, mean, rstd, B, D, c.LayerNormEps);
        return Linear(qm, "head", m.Head, pooled, B);
    }
}
