// Reductions: sum, mean, variance, max/min, argmax and the L2 norm (forward and backward together).
//   y = Σ x over axes        dx = g broadcast back over the reduced axes
//   y = Σ x / n              dx = g / n
//   y = Σ (x − m)² / d       dx = 2(x − m)·g / d   (d = n, or n − 1 when unbiased; the path through m
//                                                  contributes −(2/d)·Σ(x − m)·g/n = 0 and is dropped)
//   y = max x (or min)       dx = g at the first arg-extreme, 0 elsewhere
//   y = ‖x‖₂ = √Σx²          dx = g·x / ‖x‖        (0 when ‖x‖ = 0, as PyTorch)
//
// An axis reduction views x as [outer, n, inner] (n = the reduced extent; a run of adjacent reduced
// axes is one extent). inner = 1 (the last axis) sums contiguous rows; inner > 1 adds whole rows of
// length inner into an accumulator tile, so both layouts stream memory in order and vectorise.
// Work is split over outer rows (or tiles of inner columns) with Parallelism; every output element
// is computed by the same sequence of operations whatever the split, so thread count never changes a
// result. Full reductions return a tensor of shape [] (rank 0).
using System.Numerics.Tensors;
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>Columns per accumulator tile when reducing a non-last axis.</summary>
    private const int ColTile = 512;

    /// <summary>Rows summed in float before the partial sum is folded into the running total.</summary>
    private const int RowBatch = 256;

    /// <summary>Sum of all elements, as a one-element tensor of shape [].</summary>
    public static Tensor Sum(Tensor x)
    {
        double s = 0;
        var span = x.Span;
        // Pairwise-ish: TensorPrimitives.Sum over chunks, accumulated in double, for stable large sums.
        for (int i = 0; i < span.Length; i += 4096) s += TensorPrimitives.Sum(span.Slice(i, Math.Min(4096, span.Length - i)));
        var y = new Tensor(new[] { (float)s });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("sum", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            TensorPrimitives.Add(gx, g.Data[0], gx);
        });
    }

    /// <summary>
    /// Sum over one axis (negative counts from the end). The axis is removed, or kept with size 1 when
    /// keepDim. Throws ArgumentOutOfRangeException when the axis is out of range.
    /// </summary>
    public static Tensor Sum(Tensor x, int axis, bool keepDim = false) => SumAxes(x, new[] { axis }, keepDim, mean: false, "sum");

    /// <summary>
    /// Sum over several axes at once. Throws ArgumentException when axes is empty, repeats an axis, or
    /// names one out of range.
    /// </summary>
    public static Tensor Sum(Tensor x, int[] axes, bool keepDim = false) => SumAxes(x, axes, keepDim, mean: false, "sum");

    /// <summary>Mean of all elements, shape [] (NaN for an empty tensor).</summary>
    public static Tensor Mean(Tensor x)
    {
        float inv = 1f / x.Size;
        var y = new Tensor(new[] { (float)(SumDouble(x.Span) / x.Size) });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("mean", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            TensorPrimitives.Add(gx, g.Data[0] * inv, gx);
        });
    }

    /// <summary>Mean over one axis; see <see cref="Sum(Tensor, int, bool)"/> for shapes and errors.</summary>
    public static Tensor Mean(Tensor x, int axis, bool keepDim = false) => SumAxes(x, new[] { axis }, keepDim, mean: true, "mean");

    /// <summary>Mean over several axes; see <see cref="Sum(Tensor, int[], bool)"/> for shapes and errors.</summary>
    public static Tensor Mean(Tensor x, int[] axes, bool keepDim = false) => SumAxes(x, axes, keepDim, mean: true, "mean");

    /// <summary>
    /// Variance over one axis: Σ(x − mean)² / n, or / (n − 1) when unbiased (NaN when that is 0).
    /// Throws ArgumentOutOfRangeException when the axis is out of range.
    /// </summary>
    public static Tensor Var(Tensor x, int axis, bool keepDim = false, bool unbiased = false)
    {
        int a = CheckAxis(axis, x.Shape, "var");
        var (outer, n, inner) = Geometry(x.Shape, a, a);
        float denom = Math.Max(0, unbiased ? n - 1 : n); // 0 makes the result NaN, as PyTorch
        var mean = new float[outer * inner];
        SumKernel(x.Data, outer, n, inner, mean);
        TensorPrimitives.Multiply(mean, 1f / n, mean);
        var v = new float[outer * inner];
        var xd = x.Data;
        if (inner == 1)
            ForRows(outer, n, (s, e) =>
            {
                Span<float> tmp = stackalloc float[Block];
                for (int o = s; o < e; o++)
                {
                    double ss = 0;
                    for (int j = 0; j < n; j += Block)
                    {
                        int len = Math.Min(Block, n - j);
                        TensorPrimitives.Subtract(xd.AsSpan(o * n + j, len), mean[o], tmp[..len]);
                        ss += TensorPrimitives.SumOfSquares(tmp[..len]);
                    }
                    v[o] = (float)(ss / denom);
                }
            });
        else
            ForTiles(outer, n, inner, (o, c0, len) =>
            {
                Span<float> tmp = stackalloc float[ColTile];
                var acc = v.AsSpan(o * inner + c0, len);
                var m = mean.AsSpan(o * inner + c0, len);
                for (int j = 0; j < n; j++)
                {
                    TensorPrimitives.Subtract(xd.AsSpan((o * n + j) * inner + c0, len), m, tmp[..len]);
                    TensorPrimitives.MultiplyAdd(tmp[..len], tmp[..len], acc, acc);
                }
                TensorPrimitives.Multiply(acc, 1f / denom, acc);
            });
        var y = new Tensor(v, ReducedShape(x.Shape, a, keepDim));
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("var", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            var gd = g.Data;
            var tmp = new float[inner == 1 ? n : inner];
            for (int o = 0; o < outer; o++)
            {
                if (inner == 1)
                {
                    // One contiguous row per output: gx_row += (x_row − m)·(2g/d).
                    var row = gx.Slice(o * n, n);
                    TensorPrimitives.Subtract(xd.AsSpan(o * n, n), mean[o], tmp);
                    TensorPrimitives.MultiplyAdd(tmp, 2f * gd[o] / denom, row, row);
                    continue;
                }
                for (int j = 0; j < n; j++)
                {
                    int at = (o * n + j) * inner;
                    var row = gx.Slice(at, inner);
                    TensorPrimitives.Subtract(xd.AsSpan(at, inner), mean.AsSpan(o * inner, inner), tmp);
                    TensorPrimitives.Multiply(tmp, gd.AsSpan(o * inner, inner), tmp);
                    TensorPrimitives.MultiplyAdd(tmp, 2f / denom, row, row);
                }
            }
        });
    }

    /// <summary>Largest element, shape []. Gradient goes to the first maximum. NaN wins if present. Throws ArgumentException for an empty tensor.</summary>
    public static Tensor Max(Tensor x) => ExtremumAll(x, takeMax: true);

    /// <summary>Smallest element, shape []. Gradient goes to the first minimum. NaN wins if present. Throws ArgumentException for an empty tensor.</summary>
    public static Tensor Min(Tensor x) => ExtremumAll(x, takeMax: false);

    /// <summary>
    /// Maximum over one axis; the gradient goes to the first maximum along the axis. Throws
    /// ArgumentOutOfRangeException for a bad axis and ArgumentException when the axis is empty.
    /// </summary>
    public static Tensor Max(Tensor x, int axis, bool keepDim = false) => ExtremumAxis(x, axis, keepDim, takeMax: true);

    /// <summary>Minimum over one axis; see <see cref="Max(Tensor, int, bool)"/>.</summary>
    public static Tensor Min(Tensor x, int axis, bool keepDim = false) => ExtremumAxis(x, axis, keepDim, takeMax: false);

    /// <summary>
    /// Index of the first maximum along the axis, for every position of the other axes (row-major over
    /// x's shape with the axis removed). No gradient. Throws as <see cref="Max(Tensor, int, bool)"/>.
    /// </summary>
    public static int[] ArgMax(Tensor x, int axis)
    {
        int a = CheckAxis(axis, x.Shape, "argmax");
        var (outer, n, inner) = Geometry(x.Shape, a, a);
        if (n == 0) throw new ArgumentException($"argmax: axis {axis} of shape {Tensor.ShapeString(x.Shape)} is empty");
        var val = new float[outer * inner];
        var idx = new int[outer * inner];
        ExtremumKernel(x.Data, outer, n, inner, true, val, idx);
        return idx;
    }

    /// <summary>L2 norm of all elements, √Σx², shape []. The gradient at x = 0 is 0.</summary>
    public static Tensor Norm(Tensor x)
    {
        var span = x.Span;
        double ss = 0;
        for (int i = 0; i < span.Length; i += 4096) ss += TensorPrimitives.SumOfSquares(span.Slice(i, Math.Min(4096, span.Length - i)));
        float norm = (float)Math.Sqrt(ss);
        var y = new Tensor(new[] { norm });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("norm", y, new[] { x }, g =>
        {
            var gx = x.GradSpan(); // allocated even at x = 0, where the gradient is zero
            if (norm == 0f) return;
            TensorPrimitives.MultiplyAdd(x.Span, g.Data[0] / norm, gx, gx);
        });
    }

    // ---- helpers ----

    private static Tensor SumAxes(Tensor x, int[] axes, bool keepDim, bool mean, string op)
    {
        ArgumentNullException.ThrowIfNull(axes);
        int r = x.Rank;
        if (axes.Length == 0) throw new ArgumentException($"{op}: no axes given for shape {Tensor.ShapeString(x.Shape)}");
        var reduced = new bool[r];
        foreach (int ax in axes)
        {
            int a = CheckAxis(ax, x.Shape, op);
            if (reduced[a]) throw new ArgumentException($"{op}: axis {ax} repeated in [{string.Join(", ", axes)}] for shape {Tensor.ShapeString(x.Shape)}");
            reduced[a] = true;
        }
        var keepShape = (int[])x.Shape.Clone();
        var outShape = new List<int>(r);
        long count = 1;
        for (int a = 0; a < r; a++)
        {
            if (reduced[a]) { count *= x.Shape[a]; keepShape[a] = 1; }
            if (!reduced[a] || keepDim) outShape.Add(keepShape[a]);
        }

        // Reduce each run of adjacent reduced axes as one extent; reduced axes keep size 1 in curShape
        // so later runs see the same axis numbers.
        float[] cur = x.Data;
        var curShape = (int[])x.Shape.Clone();
        for (int a = 0; a < r;)
        {
            if (!reduced[a]) { a++; continue; }
            int b = a;
            while (b + 1 < r && reduced[b + 1]) b++;
            var (outer, n, inner) = Geometry(curShape, a, b);
            var next = new float[outer * inner];
            SumKernel(cur, outer, n, inner, next);
            for (int k = a; k <= b; k++) curShape[k] = 1;
            cur = next;
            a = b + 1;
        }
        float scale = mean ? (float)(1.0 / count) : 1f;
        if (mean) TensorPrimitives.Multiply(cur, scale, cur);
        var y = new Tensor(cur, outShape.ToArray());
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record(op, y, new[] { x }, g =>
        {
            x.GradSpan();
            float[] gd = g.Data, gxd = x.Grad!.Data;
            // g laid out in keepShape broadcasts over x's shape: stride 0 along the reduced axes.
            var gStrides = Broadcast.Strides(keepShape, x.Shape);
            Broadcast.ForEachRun(x.Shape, gStrides, new int[r], (o, ig, _, len, sg, _) =>
            {
                var dst = gxd.AsSpan(o, len);
                if (sg == 0) TensorPrimitives.Add(dst, gd[ig] * scale, dst);
                else TensorPrimitives.MultiplyAdd(gd.AsSpan(ig, len), scale, dst, dst);
            });
        });
    }

    /// <summary>dst[o, i] = Σ_j src[o, j, i] for src viewed as [outer, n, inner].</summary>
    private static void SumKernel(float[] src, int outer, int n, int inner, float[] dst)
    {
        if (inner == 1)
        {
            ForRows(outer, n, (s, e) =>
            {
                for (int o = s; o < e; o++) dst[o] = (float)SumDouble(src.AsSpan(o * n, n));
            });
            return;
        }
        ForTiles(outer, n, inner, (o, c0, len) =>
        {
            // Two-level float sum: batches of RowBatch rows into `part`, batches into `acc`; the error
            // grows with RowBatch + n/RowBatch instead of n.
            Span<float> part = stackalloc float[ColTile];
            var acc = dst.AsSpan(o * inner + c0, len);
            acc.Clear();
            for (int j0 = 0; j0 < n; j0 += RowBatch)
            {
                int j1 = Math.Min(n, j0 + RowBatch);
                var p = j0 == 0 ? acc : part[..len];
                if (j0 != 0) p.Clear();
                for (int j = j0; j < j1; j++) TensorPrimitives.Add(p, src.AsSpan((o * n + j) * inner + c0, len), p);
                if (j0 != 0) TensorPrimitives.Add(acc, p, acc);
            }
        });
    }

    /// <summary>Sum in double over float chunks (vectorised inside a chunk, exact enough across them).</summary>
    private static double SumDouble(ReadOnlySpan<float> x)
    {
        double s = 0;
        for (int i = 0; i < x.Length; i += 4096) s += TensorPrimitives.Sum(x.Slice(i, Math.Min(4096, x.Length - i)));
        return s;
    }

    private static Tensor ExtremumAll(Tensor x, bool takeMax)
    {
        string op = takeMax ? "max" : "min";
        if (x.Size == 0) throw new ArgumentException($"{op}: tensor of shape {Tensor.ShapeString(x.Shape)} is empty");
        int at = takeMax ? TensorPrimitives.IndexOfMax(x.Span) : TensorPrimitives.IndexOfMin(x.Span);
        var y = new Tensor(new[] { x.Data[at] });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record(op, y, new[] { x }, g => x.GradSpan()[at] += g.Data[0]);
    }

    private static Tensor ExtremumAxis(Tensor x, int axis, bool keepDim, bool takeMax)
    {
        string op = takeMax ? "max" : "min";
        int a = CheckAxis(axis, x.Shape, op);
        var (outer, n, inner) = Geometry(x.Shape, a, a);
        if (n == 0) throw new ArgumentException($"{op}: axis {axis} of shape {Tensor.ShapeString(x.Shape)} is empty");
        var val = new float[outer * inner];
        var idx = new int[outer * inner];
        ExtremumKernel(x.Data, outer, n, inner, takeMax, val, idx);
        var y = new Tensor(val, ReducedShape(x.Shape, a, keepDim));
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record(op, y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            var gd = g.Data;
            for (int o = 0; o < outer; o++)
                for (int i = 0; i < inner; i++)
                    gx[(o * n + idx[o * inner + i]) * inner + i] += gd[o * inner + i];
        });
    }

    /// <summary>Value and index of the first extreme along n for src viewed as [outer, n, inner]; NaN counts as extreme.</summary>
    private static void ExtremumKernel(float[] src, int outer, int n, int inner, bool takeMax, float[] val, int[] idx)
    {
        if (inner == 1)
        {
            ForRows(outer, n, (s, e) =>
            {
                for (int o = s; o < e; o++)
                {
                    var row = src.AsSpan(o * n, n);
                    int k = takeMax ? TensorPrimitives.IndexOfMax(row) : TensorPrimitives.IndexOfMin(row);
                    idx[o] = k;
                    val[o] = row[k];
                }
            });
            return;
        }
        ForTiles(outer, n, inner, (o, c0, len) =>
        {
            int at = o * inner + c0;
            src.AsSpan(o * n * inner + c0, len).CopyTo(val.AsSpan(at, len));
            idx.AsSpan(at, len).Clear();
            for (int j = 1; j < n; j++)
            {
                int rowAt = (o * n + j) * inner + c0;
                for (int c = 0; c < len; c++)
                {
                    float v = src[rowAt + c], best = val[at + c];
                    // Strict comparison keeps the first extreme; a NaN replaces any non-NaN once.
                    bool better = (takeMax ? v > best : v < best) || (float.IsNaN(v) && !float.IsNaN(best));
                    if (better) { val[at + c] = v; idx[at + c] = j; }
                }
            }
        });
    }

    /// <summary>Runs body(start, end) over [0, outer) rows of n elements each, in parallel when large.</summary>
    private static void ForRows(int outer, int n, Action<int, int> body) =>
        Parallelism.ForChunks(outer, Math.Max(1, ParallelGrain / Math.Max(1, n)), body);

    /// <summary>Runs body(o, c0, len) over every (outer row, tile of ≤ ColTile inner columns), in parallel when large.</summary>
    private static void ForTiles(int outer, int n, int inner, Action<int, int, int> body)
    {
        int tiles = (inner + ColTile - 1) / ColTile;
        int work = Math.Max(1, n * Math.Min(inner, ColTile));
        Parallelism.ForChunks(outer * tiles, Math.Max(1, ParallelGrain / work), (s, e) =>
        {
            for (int t = s; t < e; t++)
            {
                int o = t / tiles, c0 = t % tiles * ColTile;
                body(o, c0, Math.Min(ColTile, inner - c0));
            }
        });
    }

    /// <summary>x viewed as [outer, n, inner] with n the product of axes a0..a1 (inclusive).</summary>
    private static (int outer, int n, int inner) Geometry(int[] shape, int a0, int a1)
    {
        int outer = 1, n = 1, inner = 1;
        for (int i = 0; i < a0; i++) outer *= shape[i];
        for (int i = a0; i <= a1; i++) n *= shape[i];
        for (int i = a1 + 1; i < shape.Length; i++) inner *= shape[i];
        return (outer, n, inner);
    }

    /// <summary>The shape with axis a removed, or set to 1 when keepDim.</summary>
    private static int[] ReducedShape(int[] shape, int a, bool keepDim)
    {
        if (keepDim)
        {
            var k = (int[])shape.Clone();
            k[a] = 1;
            return k;
        }
        var s = new int[shape.Length - 1];
        for (int i = 0, j = 0; i < shape.Length; i++) if (i != a) s[j++] = shape[i];
        return s;
    }

    /// <summary>Normalises a possibly negative axis; throws ArgumentOutOfRangeException naming the op and shape.</summary>
    private static int CheckAxis(int axis, int[] shape, string op)
    {
        int a = axis < 0 ? axis + shape.Length : axis;
        if ((uint)a >= (uint)shape.Length)
            throw new ArgumentOutOfRangeException(nameof(axis), axis, $"{op}: axis {axis} is out of range for shape {Tensor.ShapeString(shape)}");
        return a;
    }
}
