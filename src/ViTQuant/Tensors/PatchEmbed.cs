// Patch embedding: Conv2d with kernel = stride = patch and no padding, as im2col + one GEMM.
//
// Shapes: B batch, C channels, H×W image, P patch, Gh = H/P, Gw = W/P, L = Gh·Gw tokens, D width.
//   x    [B, C, H, W]
//   cols [B·L, C·P·P]   row t = b·L + gy·Gw + gx holds the patch at grid (gy, gx), column c·P·P + ky·P + kx
//   w    [D, C, P, P]   read as [D, C·P·P], the same column order, so y = cols·wᵀ + b  (DenseCore)
//   y    [B, L, D]      timm's order: conv output [B, D, Gh, Gw] flattened over the grid, then transposed
// Because stride = kernel the patches do not overlap: im2col is a permutation of x, and its backward
// (col2im) scatters each column gradient back to exactly one pixel.
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>
    /// Non-overlapping patch embedding (PyTorch Conv2d(C, D, kernel_size=patch, stride=patch) followed by
    /// flatten(2).transpose(1, 2)). x is [B, C, H, W], w is [D, C, patch, patch], b is [D] or null;
    /// the result is [B, (H/patch)·(W/patch), D], tokens in row-major grid order. Throws
    /// ArgumentException when H or W is not divisible by patch, patch &lt; 1, or the shapes disagree.
    /// </summary>
    public static Tensor PatchEmbed(Tensor x, Tensor w, Tensor? b, int patch)
    {
        if (patch < 1) throw new ArgumentException($"patch_embed: patch size must be >= 1, got {patch}");
        if (x.Rank != 4) throw new ArgumentException($"patch_embed: x must be [B, C, H, W], got {Tensor.ShapeString(x.Shape)}");
        int bs = x.Shape[0], c = x.Shape[1], h = x.Shape[2], wd = x.Shape[3];
        if (h % patch != 0 || wd % patch != 0)
            throw new ArgumentException($"patch_embed: image {h}×{wd} (x {Tensor.ShapeString(x.Shape)}) is not divisible by patch {patch}");
        if (w.Rank != 4 || w.Shape[1] != c || w.Shape[2] != patch || w.Shape[3] != patch)
            throw new ArgumentException($"patch_embed: weight {Tensor.ShapeString(w.Shape)} does not match [D, {c}, {patch}, {patch}]");
        int d = w.Shape[0];
        if (b != null && (b.Rank != 1 || b.Shape[0] != d))
            throw new ArgumentException($"patch_embed: bias has shape {Tensor.ShapeString(b.Shape)}, expected [{d}]");

        int gh = h / patch, gw = wd / patch, tokens = gh * gw, rows = bs * tokens, kf = c * patch * patch;
        var cols = TensorArena.RentUninitialized(rows * kf); // im2col writes every element
        PatchIm2Col(x.Span, cols, bs, c, h, wd, patch, toCols: true);
        var y = Tensor.OutputUninitialized(bs, tokens, d); // DenseCore writes every row
        DenseCore.Forward(cols, rows, kf, w.Span, d, b != null ? b.Span : default, y.Span);

        bool needs = b != null ? Autograd.Needs(x, w, b) : Autograd.Needs(x, w);
        if (!needs) return y;
        var parents = b != null ? new[] { x, w, b } : new[] { x, w };
        return Autograd.Record("patch_embed", y, parents, g =>
        {
            var dcols = x.RequiresGrad ? TensorArena.RentUninitialized(cols.Length) : null; // overwritten (dxFresh)
            DenseCore.Backward(g.Span, cols, w.Span, rows, kf, d, dcols, w.RequiresGrad ? w.GradSpan() : default,
                b is { RequiresGrad: true } ? b.GradSpan() : default, dxFresh: dcols != null);
            if (dcols != null) PatchIm2Col(x.GradSpan(), dcols, bs, c, h, wd, patch, toCols: false);
        });
    }

    /// <summary>
    /// toCols: copies image patches into cols. Otherwise the adjoint: adds cols back into the image
    /// (col2im; each pixel belongs to exactly one patch, so "adds" is a plain scatter-accumulate).
    /// Rows of patches (one image, one grid row) are split across workers: they touch disjoint pixels and columns.
    /// </summary>
    private static unsafe void PatchIm2Col(Span<float> img, Span<float> cols, int bs, int c, int h, int wd, int p, bool toCols)
    {
        int gh = h / p, gw = wd / p, kf = c * p * p;
        fixed (float* pi = img, pc = cols)
        {
            nint im = (nint)pi, co = (nint)pc;
            Parallelism.ForChunks(bs * gh, 1 + RowSimd.ParallelGrain / (gw * kf), (r0, r1) =>
            {
                for (int rowOfGrid = r0; rowOfGrid < r1; rowOfGrid++)
                {
                    int bi = rowOfGrid / gh, gy = rowOfGrid % gh;
                    for (int gx = 0; gx < gw; gx++)
                    {
                        int row = rowOfGrid * gw + gx;
                        for (int ch = 0; ch < c; ch++)
                            for (int ky = 0; ky < p; ky++)
                            {
                                var pix = new Span<float>((float*)im + ((long)(bi * c + ch) * h + gy * p + ky) * wd + gx * p, p);
                                var col = new Span<float>((float*)co + (long)row * kf + (ch * p + ky) * p, p);
                                if (toCols) pix.CopyTo(col);
                                else System.Numerics.Tensors.TensorPrimitives.Add(pix, col, pix);
                            }
                    }
                }
            });
        }
    }
}
