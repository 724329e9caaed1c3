// Total-variation image prior of the data-free synthesizers, as one fused autograd op.
//
//   x [B, C, H, W];  four difference images over the whole batch:
//     d1 = x[..., :, :-1] − x[..., :, 1:]        d2 = x[..., :-1, :] − x[..., 1:, :]
//     d3 = x[..., 1:, :-1] − x[..., :-1, 1:]     d4 = x[..., :-1, :-1] − x[..., 1:, 1:]
//   L = ‖d1‖ + ‖d2‖ + w_diag·(‖d3‖ + ‖d4‖)      (Frobenius norms)
// MimiQ uses w_diag = 1/√2 (MimiQ paper); PSAQ-ViT's get_image_prior_losses uses w_diag = 1.
// Backward: ∂‖d‖/∂d = d/‖d‖ (0 when ‖d‖ = 0, as torch.norm), added to the first operand of each
// difference and subtracted from the second. Sums of squares are accumulated per (b, c) plane in double
// and combined in a fixed order, so the value does not depend on the thread count.
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>The total-variation prior L_TV of MimiQ and PSAQ-ViT.</summary>
internal static class TotalVariation
{
    /// <summary>MimiQ's weight of the two diagonal terms, 1/√2.</summary>
    public static readonly float MimiqDiagonalWeight = (float)(1 / Math.Sqrt(2));

    /// <summary>
    /// ‖d1‖ + ‖d2‖ + diagonalWeight·(‖d3‖ + ‖d4‖) over images [B, C, H, W] (file header), shape [].
    /// Differentiable in x. Throws ArgumentException unless x is 4-D with H, W ≥ 2, or when the weight is
    /// negative or not finite.
    /// </summary>
    public static Tensor Loss(Tensor x, float diagonalWeight)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.Rank != 4 || x.Shape[2] < 2 || x.Shape[3] < 2)
            throw new ArgumentException($"total variation: images must be [B, C, H, W] with H, W >= 2, got {Tensor.ShapeString(x.Shape)}");
        if (!(diagonalWeight >= 0) || float.IsInfinity(diagonalWeight))
            throw new ArgumentException($"total variation: diagonal weight must be finite and >= 0, got {diagonalWeight}");
        int planes = x.Shape[0] * x.Shape[1], H = x.Shape[2], W = x.Shape[3];
        var partial = new double[planes * 4];
        float[] xd = x.Data;
        Parallelism.ForChunks(planes, 4, (s, e) =>
        {
            for (int p = s; p < e; p++) PlaneSquares(xd.AsSpan(p * H * W, H * W), H, W, partial.AsSpan(p * 4, 4));
        });
        var norms = new double[4];
        for (int p = 0; p < planes; p++)
            for (int k = 0; k < 4; k++) norms[k] += partial[p * 4 + k];
        for (int k = 0; k < 4; k++) norms[k] = Math.Sqrt(norms[k]);
        var y = new Tensor(new[] { (float)(norms[0] + norms[1] + diagonalWeight * (norms[2] + norms[3])) });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("total_variation", y, new[] { x }, g =>
        {
            float gOut = g.Data[0];
            // Per-difference coefficient: upstream · weight / norm (0 for a zero norm).
            var coef = new float[4];
            for (int k = 0; k < 4; k++)
            {
                double wk = k < 2 ? 1 : diagonalWeight;
                coef[k] = norms[k] > 0 ? (float)(gOut * wk / norms[k]) : 0f;
            }
            x.GradSpan();
            float[] gx = x.Grad!.Data;
            Parallelism.ForChunks(planes, 4, (s, e) =>
            {
                for (int p = s; p < e; p++) PlaneBackward(xd.AsSpan(p * H * W, H * W), gx.AsSpan(p * H * W, H * W), H, W, coef);
            });
        });
    }

    /// <summary>Reference twin: the four norms computed literally in double over the whole batch.</summary>
    public static double Reference(float[] x, int[] shape, double diagonalWeight)
    {
        int B = shape[0], C = shape[1], H = shape[2], W = shape[3];
        double At(int b, int c, int i, int j) => x[((b * C + c) * H + i) * W + j];
        double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < W; j++)
                    {
                        if (j + 1 < W) s1 += Sq(At(b, c, i, j) - At(b, c, i, j + 1));
                        if (i + 1 < H) s2 += Sq(At(b, c, i, j) - At(b, c, i + 1, j));
                        if (i + 1 < H && j + 1 < W)
                        {
                            s3 += Sq(At(b, c, i + 1, j) - At(b, c, i, j + 1));
                            s4 += Sq(At(b, c, i, j) - At(b, c, i + 1, j + 1));
                        }
                    }
        return Math.Sqrt(s1) + Math.Sqrt(s2) + diagonalWeight * (Math.Sqrt(s3) + Math.Sqrt(s4));
        static double Sq(double v) => v * v;
    }

    private static void PlaneSquares(ReadOnlySpan<float> x, int H, int W, Span<double> acc)
    {
        double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
        for (int i = 0; i < H; i++)
        {
            var row = x.Slice(i * W, W);
            for (int j = 0; j + 1 < W; j++) { double d = row[j] - row[j + 1]; s1 += d * d; }
            if (i + 1 == H) break;
            var next = x.Slice((i + 1) * W, W);
            for (int j = 0; j < W; j++) { double d = row[j] - next[j]; s2 += d * d; }
            for (int j = 0; j + 1 < W; j++)
            {
                double d3 = next[j] - row[j + 1], d4 = row[j] - next[j + 1];
                s3 += d3 * d3; s4 += d4 * d4;
            }
        }
        acc[0] = s1; acc[1] = s2; acc[2] = s3; acc[3] = s4;
    }

    private static void PlaneBackward(ReadOnlySpan<float> x, Span<float> gx, int H, int W, float[] c)
    {
        for (int i = 0; i < H; i++)
        {
            int r = i * W, nx = (i + 1) * W;
            for (int j = 0; j + 1 < W; j++)
            {
                float d = c[0] * (x[r + j] - x[r + j + 1]);
                gx[r + j] += d; gx[r + j + 1] -= d;
            }
            if (i + 1 == H) break;
            for (int j = 0; j < W; j++)
            {
                float d = c[1] * (x[r + j] - x[nx + j]);
                gx[r + j] += d; gx[nx + j] -= d;
            }
            for (int j = 0; j + 1 < W; j++)
            {
                float d3 = c[2] * (x[nx + j] - x[r + j + 1]);
                gx[nx + j] += d3; gx[r + j + 1] -= d3;
                float d4 = c[3] * (x[r + j] - x[nx + j + 1]);
                gx[r + j] += d4; gx[nx + j + 1] -= d4;
            }
        }
    }
}
