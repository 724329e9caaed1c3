// Index ops: copies of entries or rows picked by index, each backward scattering the gradient back to where its entries
// came from (duplicate indices accumulate):
//   index_select   entries at given positions along one axis
//   gather_rows    one entry per row of a [B, K] matrix
//   take_rows      whole rows moved by a pattern repeated per group, −1 for a zero row, an optional addend (Swin's
//                  roll, pad and window partition, and back, in one copy each way)
using System.Numerics.Tensors;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>
    /// Copy of the entries at the given positions along axis, in the given order (repeats allowed; their
    /// gradients add up). Throws ArgumentOutOfRangeException for an index outside [0, size of axis).
    /// </summary>
    public static Tensor IndexSelect(Tensor x, int axis, int[] indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        int a = CheckAxis(axis, x.Shape, "index_select");
        var (outer, n, inner) = Geometry(x.Shape, a, a);
        var idx = (int[])indices.Clone();
        foreach (int i in idx)
            if ((uint)i >= (uint)n) throw new ArgumentOutOfRangeException(nameof(indices), i, $"index_select: index {i} is out of range for axis {axis} of shape {Tensor.ShapeString(x.Shape)}");
        int k = idx.Length;
        var outShape = (int[])x.Shape.Clone();
        outShape[a] = k;
        var y = Tensor.Output(outShape);
        float[] xd = x.Data, yd = y.Data;
        ForRows(outer, k * inner, (s, e) =>
        {
            for (int o = s; o < e; o++)
                for (int j = 0; j < k; j++)
                {
                    if (inner == 1) yd[o * k + j] = xd[o * n + idx[j]];
                    else xd.AsSpan((o * n + idx[j]) * inner, inner).CopyTo(yd.AsSpan((o * k + j) * inner, inner));
                }
        });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("index_select", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            var gd = g.Data;
            for (int o = 0; o < outer; o++)
                for (int j = 0; j < k; j++)
                {
                    if (inner == 1) { gx[o * n + idx[j]] += gd[o * k + j]; continue; }
                    var dst = gx.Slice((o * n + idx[j]) * inner, inner);
                    TensorPrimitives.Add(dst, gd.AsSpan((o * k + j) * inner, inner), dst);
                }
        });
    }

    /// <summary>
    /// Rows of x moved into a new tensor of <paramref name="shape"/> by a pattern that repeats per group: with x's last
    /// axis C and x read as n rows of C floats, the result's R rows (shape's last axis must be C) fall into
    /// G = R / rows.Length groups, x's rows into G groups of n / G, and row i of group g is x's row g·(n/G) + rows[i], or
    /// zeros where rows[i] is −1. One copy for a composition of row moves within each image, such as Swin's roll, pad
    /// and window partition (and back). The backward adds each row's gradient into its source row; when the pattern takes
    /// no row twice, a fresh gradient is written row by row (rows never taken cleared) instead of zero-filled and added
    /// into. <paramref name="addend"/> (not null: of <paramref name="shape"/>) is added to the result as it is written,
    /// the bits of Add(addend, TakeRows(...)) in one pass (a Swin block's residual onto its attention branch), and its
    /// gradient is the output's, handed over without a copy. Throws ArgumentException on shapes or an index out of range.
    /// </summary>
    internal static Tensor TakeRows(Tensor x, int[] rows, int[] shape, Tensor? addend = null)
    {
        ArgumentNullException.ThrowIfNull(rows);
        int c = x.Rank == 0 ? 1 : x.Shape[^1], n = c == 0 ? 0 : x.Size / c;
        long outRows = shape.Length == 0 || c == 0 ? -1 : Tensor.Numel(shape) / c;
        int k = rows.Length;
        if (shape.Length == 0 || shape[^1] != c || k == 0 || outRows % k != 0 || (outRows / k is var g && (g == 0 ? n != 0 : n % g != 0)))
            throw new ArgumentException($"take_rows: a pattern of {k} rows of {c} does not make {Tensor.ShapeString(shape)} from {n} rows");
        if (addend != null && !Broadcast.SameShape(addend.Shape, shape))
            throw new ArgumentException($"take_rows: addend {Tensor.ShapeString(addend.Shape)} is not {Tensor.ShapeString(shape)}");
        int groups = (int)(outRows / k), per = groups == 0 ? 0 : n / groups;
        var taken = new bool[per];
        bool injective = true;
        foreach (int r in rows)
        {
            if (r < -1 || r >= per) throw new ArgumentException($"take_rows: row {r} of a group of {per}");
            if (r >= 0) { injective &= !taken[r]; taken[r] = true; }
        }
        var y = Tensor.OutputUninitialized(shape); // every row written: copied, cleared or summed
        float[] xd = x.Data, yd = y.Data, ad = addend?.Data ?? Array.Empty<float>();
        ForRows((int)outRows, c, (s, e) =>
        {
            for (int i = s; i < e; i++)
            {
                int r = rows[i % k];
                var dst = yd.AsSpan(i * c, c);
                if (addend != null)
                {
                    // addend + row (addend + 0 for a −1 row), as the separate add's ElementwiseChunks computes it
                    if (r < 0) dst.Clear();
                    else xd.AsSpan((i / k * per + r) * c, c).CopyTo(dst);
                    TensorPrimitives.Add(ad.AsSpan(i * c, c), dst, dst);
                }
                else if (r < 0) dst.Clear();
                else xd.AsSpan((i / k * per + r) * c, c).CopyTo(dst);
            }
        });
        if (!Autograd.Needs(x) && addend is not { RequiresGrad: true }) return y;
        return Autograd.Record("take_rows", y, addend != null ? new[] { x, addend } : new[] { x }, grad =>
        {
            if (x.RequiresGrad) ScatterRows(x, grad.Data, rows, k, per, n, c, outRows, taken, injective);
            if (addend is { RequiresGrad: true }) addend.TakeOrAccumulateGrad(grad); // last: it may take grad's buffer
        });
    }

    // TakeRows' backward into x: each row of gd added into its source row (written row by row into a fresh gradient when
    // no source row is taken twice, the rows never taken cleared).
    private static void ScatterRows(Tensor x, float[] gd, int[] rows, int k, int per, int n, int c, long outRows, bool[] taken, bool injective)
    {
        if (injective)
        {
            var gx = x.GradSpanForOverwrite(out bool fresh);
            if (fresh)
            {
                for (int j = 0; j < n; j++) if (!taken[j % per]) gx.Slice(j * c, c).Clear();
                for (int i = 0; i < outRows; i++)
                    if (rows[i % k] is var r && r >= 0) gd.AsSpan(i * c, c).CopyTo(gx.Slice((i / k * per + r) * c, c));
                return;
            }
        }
        var acc = x.GradSpan();
        for (int i = 0; i < outRows; i++)
        {
            int r = rows[i % k];
            if (r < 0) continue;
            var dst = acc.Slice((i / k * per + r) * c, c);
            TensorPrimitives.Add(dst, gd.AsSpan(i * c, c), dst);
        }
    }

    /// <summary>
    /// For x of shape [B, K], the vector y[b] = x[b, idx[b]] of shape [B] (e.g. the logit of each target
    /// class). Throws ArgumentException when x is not rank 2 or idx has the wrong length, and
    /// ArgumentOutOfRangeException for an index outside [0, K).
    /// </summary>
    public static Tensor GatherRows(Tensor x, int[] idx)
    {
        ArgumentNullException.ThrowIfNull(idx);
        if (x.Rank != 2) throw new ArgumentException($"gather_rows: expected [B, K], got {Tensor.ShapeString(x.Shape)}");
        int rows = x.Shape[0], k = x.Shape[1];
        if (idx.Length != rows) throw new ArgumentException($"gather_rows: {idx.Length} indices for {rows} rows of {Tensor.ShapeString(x.Shape)}");
        var at = new int[rows];
        for (int b = 0; b < rows; b++)
        {
            if ((uint)idx[b] >= (uint)k) throw new ArgumentOutOfRangeException(nameof(idx), idx[b], $"gather_rows: index {idx[b]} in row {b} is out of range for {Tensor.ShapeString(x.Shape)}");
            at[b] = b * k + idx[b];
        }
        var y = Tensor.Output(rows);
        for (int b = 0; b < rows; b++) y.Data[b] = x.Data[at[b]];
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("gather_rows", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            for (int b = 0; b < rows; b++) gx[at[b]] += g.Data[b];
        });
    }
}
