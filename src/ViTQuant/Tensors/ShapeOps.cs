// Shape ops. Reshape and its relatives (Flatten, Unsqueeze, Squeeze) are views sharing the input's
// storage; everything else copies, so kernels never see strides. The backward of each op is the
// inverse data movement, accumulated into the input gradient:
//   reshape family       gradient taken in the input's shape (same element order)
//   permute by p         gradient permuted by p⁻¹
//   concat/stack/narrow/pad   gradient sliced back to each input's region
//   (index_select, gather_rows and take_rows: IndexOps.cs)
//   roll by s            gradient rolled by −s;  flip: gradient flipped
//   broadcast_to         gradient summed over the stretched dimensions
// Most copies view the tensor as [outer, n, inner] around one axis (as the reductions do) and move
// whole runs of inner elements. Permute first drops unit axes and merges input axes that stay
// adjacent and in order, then picks a tiled 2-D transpose, a run copy (last axis kept) or a strided
// gather; PermuteReference is the slow twin the tests hold all three against.
using System.Numerics.Tensors;
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>
    /// A view of x with a new shape and the same elements in the same order; shares x.Data. One
    /// dimension may be −1 and is inferred. Throws ArgumentException when the element counts differ,
    /// more than one −1 is given, or a dimension is below −1.
    /// </summary>
    public static Tensor Reshape(Tensor x, params int[] shape)
    {
        var s = ResolveShape(x.Shape, x.Size, shape);
        var y = new Tensor(x.Data, s);
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("reshape", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            TensorPrimitives.Add(gx, g.Span, gx);
        });
    }

    /// <summary>
    /// A view merging axes startAxis..endAxis (inclusive, negative counts from the end) into one.
    /// A rank-0 tensor becomes shape [1]. Throws ArgumentOutOfRangeException for a bad axis and
    /// ArgumentException when startAxis comes after endAxis.
    /// </summary>
    public static Tensor Flatten(Tensor x, int startAxis, int endAxis)
    {
        if (x.Rank == 0) return Reshape(x, 1);
        int a = CheckAxis(startAxis, x.Shape, "flatten"), b = CheckAxis(endAxis, x.Shape, "flatten");
        if (a > b) throw new ArgumentException($"flatten: start axis {startAxis} comes after end axis {endAxis} for shape {Tensor.ShapeString(x.Shape)}");
        var s = new int[x.Rank - (b - a)];
        int merged = 1;
        for (int i = a; i <= b; i++) merged *= x.Shape[i];
        for (int i = 0, j = 0; i < x.Rank; i++)
        {
            if (i < a || i > b) s[j++] = x.Shape[i];
            else if (i == a) s[j++] = merged;
        }
        return Reshape(x, s);
    }

    /// <summary>A view with a new axis of size 1 at position axis, in [−rank−1, rank]. Throws ArgumentOutOfRangeException otherwise.</summary>
    public static Tensor Unsqueeze(Tensor x, int axis)
    {
        int r = x.Rank, a = axis < 0 ? axis + r + 1 : axis;
        if ((uint)a > (uint)r) throw new ArgumentOutOfRangeException(nameof(axis), axis, $"unsqueeze: axis {axis} is out of range for shape {Tensor.ShapeString(x.Shape)}");
        var s = new int[r + 1];
        for (int i = 0, j = 0; i <= r; i++) s[i] = i == a ? 1 : x.Shape[j++];
        return Reshape(x, s);
    }

    /// <summary>A view without axis, which must have size 1 (ArgumentException otherwise, unlike PyTorch's silent no-op).</summary>
    public static Tensor Squeeze(Tensor x, int axis)
    {
        int a = CheckAxis(axis, x.Shape, "squeeze");
        if (x.Shape[a] != 1) throw new ArgumentException($"squeeze: axis {axis} of shape {Tensor.ShapeString(x.Shape)} has size {x.Shape[a]}, not 1");
        return Reshape(x, ReducedShape(x.Shape, a, keepDim: false));
    }

    /// <summary>
    /// Copy with axes reordered: output axis k is input axis perm[k] (negative entries count from the end).
    /// Throws ArgumentException when perm is not a permutation of the axes.
    /// </summary>
    public static Tensor Permute(Tensor x, params int[] perm)
    {
        int r = x.Rank;
        if (perm.Length != r) throw new ArgumentException($"permute: [{string.Join(", ", perm)}] has {perm.Length} axes, shape {Tensor.ShapeString(x.Shape)} has {r}");
        var p = new int[r];
        var seen = new bool[r];
        for (int k = 0; k < r; k++)
        {
            p[k] = CheckAxis(perm[k], x.Shape, "permute");
            if (seen[p[k]]) throw new ArgumentException($"permute: [{string.Join(", ", perm)}] repeats axis {perm[k]} for shape {Tensor.ShapeString(x.Shape)}");
            seen[p[k]] = true;
        }
        var outShape = new int[r];
        for (int k = 0; k < r; k++) outShape[k] = x.Shape[p[k]];
        var y = Tensor.Output(outShape);
        PermuteKernel(x.Data, x.Shape, p, y.Data);
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("permute", y, new[] { x }, g =>
        {
            var inv = new int[r];
            for (int k = 0; k < r; k++) inv[p[k]] = k;
            // From the arena and back at once: a fresh array here was swin_fmnist's whole 47 MB a training step.
            var back = TensorArena.RentUninitialized(x.Size);
            PermuteKernel(g.Data, outShape, inv, back);
            var gx = x.GradSpan();
            TensorPrimitives.Add(gx, back, gx);
            TensorArena.Release(back);
        });
    }

    /// <summary>Copy with axes d0 and d1 swapped (negative counts from the end). Throws ArgumentOutOfRangeException for a bad axis.</summary>
    public static Tensor Transpose(Tensor x, int d0, int d1)
    {
        int a = CheckAxis(d0, x.Shape, "transpose"), b = CheckAxis(d1, x.Shape, "transpose");
        var p = new int[x.Rank];
        for (int i = 0; i < p.Length; i++) p[i] = i;
        (p[a], p[b]) = (b, a);
        return Permute(x, p);
    }

    /// <summary>
    /// Joins tensors along an existing axis. Throws ArgumentException when xs is empty, ranks differ,
    /// or any dimension other than axis differs; ArgumentOutOfRangeException for a bad axis.
    /// </summary>
    public static Tensor Concat(Tensor[] xs, int axis)
    {
        CheckList(xs, "concat");
        var s0 = xs[0].Shape;
        if (s0.Length == 0) throw new ArgumentException("concat: cannot concatenate rank-0 tensors");
        int a = CheckAxis(axis, s0, "concat");
        var outShape = (int[])s0.Clone();
        outShape[a] = 0;
        var blocks = new int[xs.Length];
        foreach (var t in xs)
        {
            bool ok = t.Rank == s0.Length;
            for (int i = 0; ok && i < s0.Length; i++) ok = i == a || t.Shape[i] == s0[i];
            if (!ok) throw new ArgumentException($"concat: shapes {ShapesString(xs)} differ outside axis {axis}");
        }
        for (int k = 0; k < xs.Length; k++)
        {
            var (_, n, inner) = Geometry(xs[k].Shape, a, a);
            outShape[a] += n;
            blocks[k] = n * inner;
        }
        return Join(xs, outShape, Geometry(outShape, a, a).outer, blocks, "concat");
    }

    /// <summary>
    /// Joins equally shaped tensors along a new axis at position axis, in [−rank−1, rank]. Throws
    /// ArgumentException when xs is empty or the shapes differ; ArgumentOutOfRangeException for a bad axis.
    /// </summary>
    public static Tensor Stack(Tensor[] xs, int axis)
    {
        CheckList(xs, "stack");
        var s0 = xs[0].Shape;
        foreach (var t in xs)
            if (!Broadcast.SameShape(t.Shape, s0)) throw new ArgumentException($"stack: shapes {ShapesString(xs)} differ");
        int r = s0.Length, a = axis < 0 ? axis + r + 1 : axis;
        if ((uint)a > (uint)r) throw new ArgumentOutOfRangeException(nameof(axis), axis, $"stack: axis {axis} is out of range for shape {Tensor.ShapeString(s0)}");
        var outShape = new int[r + 1];
        for (int i = 0, j = 0; i <= r; i++) outShape[i] = i == a ? xs.Length : s0[j++];
        int outer = 1, block = 1;
        for (int i = 0; i < a; i++) outer *= s0[i];
        for (int i = a; i < r; i++) block *= s0[i];
        var blocks = new int[xs.Length];
        Array.Fill(blocks, block);
        return Join(xs, outShape, outer, blocks, "stack");
    }

    /// <summary>
    /// Copy of x[..., start : start + length, ...] along axis (a negative start counts from the end).
    /// Throws ArgumentOutOfRangeException when the range leaves the axis or the axis is bad.
    /// </summary>
    public static Tensor Narrow(Tensor x, int axis, int start, int length)
    {
        int a = CheckAxis(axis, x.Shape, "narrow");
        var (outer, n, inner) = Geometry(x.Shape, a, a);
        int s = start < 0 ? start + n : start;
        if (s < 0 || length < 0 || s + length > n)
            throw new ArgumentOutOfRangeException(nameof(start), $"narrow: start {start}, length {length} leave axis {axis} of shape {Tensor.ShapeString(x.Shape)}");
        var outShape = (int[])x.Shape.Clone();
        outShape[a] = length;
        var y = Tensor.Output(outShape);
        int rowIn = n * inner, rowOut = length * inner, at = s * inner;
        float[] xd = x.Data, yd = y.Data;
        ForRows(outer, rowOut, (s0, e) =>
        {
            for (int o = s0; o < e; o++) xd.AsSpan(o * rowIn + at, rowOut).CopyTo(yd.AsSpan(o * rowOut, rowOut));
        });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("narrow", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            for (int o = 0; o < outer; o++)
            {
                var dst = gx.Slice(o * rowIn + at, rowOut);
                TensorPrimitives.Add(dst, g.Data.AsSpan(o * rowOut, rowOut), dst);
            }
        });
    }

    /// <summary>
    /// Circular shift along axis like torch.roll: y[..., (j + shift) mod n, ...] = x[..., j, ...].
    /// Throws ArgumentOutOfRangeException for a bad axis.
    /// </summary>
    public static Tensor Roll(Tensor x, int shift, int axis)
    {
        int a = CheckAxis(axis, x.Shape, "roll");
        var (outer, n, inner) = Geometry(x.Shape, a, a);
        var y = Tensor.Output(x.Shape);
        int s = n == 0 ? 0 : (int)(((long)shift % n + n) % n) * inner, row = n * inner;
        float[] xd = x.Data, yd = y.Data;
        // Two block copies per row: x[0, n−s) lands at [s, n) and x[n−s, n) wraps to [0, s).
        ForRows(outer, row, (s0, e) =>
        {
            for (int o = s0; o < e; o++)
            {
                xd.AsSpan(o * row, row - s).CopyTo(yd.AsSpan(o * row + s, row - s));
                xd.AsSpan(o * row + row - s, s).CopyTo(yd.AsSpan(o * row, s));
            }
        });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("roll", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            var gd = g.Data;
            for (int o = 0; o < outer; o++)
            {
                var head = gx.Slice(o * row, row - s);
                TensorPrimitives.Add(head, gd.AsSpan(o * row + s, row - s), head);
                var tail = gx.Slice(o * row + row - s, s);
                TensorPrimitives.Add(tail, gd.AsSpan(o * row, s), tail);
            }
        });
    }

    /// <summary>Copy with the order of entries along axis reversed. Throws ArgumentOutOfRangeException for a bad axis.</summary>
    public static Tensor Flip(Tensor x, int axis)
    {
        int a = CheckAxis(axis, x.Shape, "flip");
        var (outer, n, inner) = Geometry(x.Shape, a, a);
        var y = Tensor.Output(x.Shape);
        FlipKernel(x.Data, outer, n, inner, y.Data);
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("flip", y, new[] { x }, g =>
        {
            var back = TensorArena.RentUninitialized(x.Size);
            FlipKernel(g.Data, outer, n, inner, back);
            var gx = x.GradSpan();
            TensorPrimitives.Add(gx, back, gx);
            TensorArena.Release(back);
        });
    }

    /// <summary>
    /// Copy of x stretched to shape under NumPy broadcasting (x's dims align to the right and each
    /// must equal the target or be 1). Throws ArgumentException when x cannot broadcast to shape.
    /// </summary>
    public static Tensor BroadcastTo(Tensor x, params int[] shape)
    {
        int r = shape.Length, off = r - x.Rank;
        bool ok = off >= 0;
        for (int i = 0; ok && i < r; i++) ok = shape[i] >= 0 && (i < off || x.Shape[i - off] == shape[i] || x.Shape[i - off] == 1);
        if (!ok) throw new ArgumentException($"broadcast_to: {Tensor.ShapeString(x.Shape)} cannot broadcast to {Tensor.ShapeString(shape)}");
        var outShape = (int[])shape.Clone();
        var y = Tensor.Output(outShape);
        float[] xd = x.Data, yd = y.Data;
        Broadcast.ForEachRun(outShape, Broadcast.Strides(x.Shape, outShape), new int[r], (o, ia, _, len, sa, _) =>
        {
            if (sa == 0) yd.AsSpan(o, len).Fill(xd[ia]);
            else xd.AsSpan(ia, len).CopyTo(yd.AsSpan(o, len));
        });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("broadcast_to", y, new[] { x }, g => Broadcast.ReduceInto(g.Span, outShape, x.GradSpan(), x.Shape));
    }

    /// <summary>
    /// Pads the last two axes of x [..., H, W] by pad on every side with the constant value, giving
    /// [..., H + 2·pad, W + 2·pad]. Throws ArgumentException when x has rank below 2 or pad is negative.
    /// </summary>
    public static Tensor Pad2d(Tensor x, int pad, float value)
    {
        if (x.Rank < 2) throw new ArgumentException($"pad2d: expected [..., H, W], got {Tensor.ShapeString(x.Shape)}");
        if (pad < 0) throw new ArgumentException($"pad2d: pad {pad} is negative (input {Tensor.ShapeString(x.Shape)})");
        int h = x.Shape[^2], w = x.Shape[^1], ho = h + 2 * pad, wo = w + 2 * pad;
        var outShape = (int[])x.Shape.Clone();
        outShape[^2] = ho;
        outShape[^1] = wo;
        var y = Tensor.Output(outShape);
        y.Span.Fill(value);
        int planes = Tensor.Numel(x.Shape.AsSpan(0, x.Rank - 2));
        float[] xd = x.Data, yd = y.Data;
        ForRows(planes, h * w, (s, e) =>
        {
            for (int p = s; p < e; p++)
                for (int i = 0; i < h; i++)
                    xd.AsSpan((p * h + i) * w, w).CopyTo(yd.AsSpan((p * ho + i + pad) * wo + pad, w));
        });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("pad2d", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            for (int p = 0; p < planes; p++)
                for (int i = 0; i < h; i++)
                {
                    var dst = gx.Slice((p * h + i) * w, w);
                    TensorPrimitives.Add(dst, g.Data.AsSpan((p * ho + i + pad) * wo + pad, w), dst);
                }
        });
    }

    // ---- kernels and helpers ----

    /// <summary>dst = src permuted: dst axis k is src axis perm[k]. src has the given shape; both are dense.</summary>
    internal static void PermuteKernel(float[] src, int[] shape, int[] perm, float[] dst)
    {
        int total = Tensor.Numel(shape);
        if (total == 0) return;
        var (cs, cp) = Coalesce(shape, perm);
        int r = cs.Length;
        if (r <= 1) { src.AsSpan(0, total).CopyTo(dst); return; } // the identity, once merged
        if (r == 2 && cp[0] == 1) { Transpose2d(src, 1, cs[0], cs[1], dst); return; }
        if (r == 3 && cp[0] == 0 && cp[1] == 2) { Transpose2d(src, cs[0], cs[1], cs[2], dst); return; }

        // Walk the output in runs along its last axis; with the input's last axis kept last the run is
        // contiguous in the input too (a block copy), otherwise it is a strided gather.
        var outShape = new int[r];
        var str = new int[r];
        var inStr = Tensor.Strides(cs);
        for (int k = 0; k < r; k++) { outShape[k] = cs[cp[k]]; str[k] = inStr[cp[k]]; }
        int len = outShape[r - 1], step = str[r - 1];
        Parallelism.ForChunks(total / len, Math.Max(1, ParallelGrain / len), (s, e) =>
        {
            var idx = new int[r - 1];
            int off = 0;
            for (int k = r - 2, q = s; k >= 0; k--) { idx[k] = q % outShape[k]; q /= outShape[k]; off += idx[k] * str[k]; }
            for (int run = s; run < e; run++)
            {
                int o = run * len;
                if (step == 1) src.AsSpan(off, len).CopyTo(dst.AsSpan(o, len));
                else for (int i = 0; i < len; i++) dst[o + i] = src[off + i * step];
                for (int k = r - 2; k >= 0; k--)
                {
                    off += str[k];
                    if (++idx[k] < outShape[k]) break;
                    off -= str[k] * outShape[k];
                    idx[k] = 0;
                }
            }
        });
    }

    /// <summary>The reference twin of PermuteKernel: one output element at a time, index arithmetic only.</summary>
    internal static void PermuteReference(float[] src, int[] shape, int[] perm, float[] dst)
    {
        int r = shape.Length, total = Tensor.Numel(shape);
        var inStr = Tensor.Strides(shape);
        for (int o = 0; o < total; o++)
        {
            int rem = o, off = 0;
            for (int k = r - 1; k >= 0; k--)
            {
                int d = shape[perm[k]];
                off += rem % d * inStr[perm[k]];
                rem /= d;
            }
            dst[o] = src[off];
        }
    }

    /// <summary>
    /// Drops unit axes, then merges input axes that stay adjacent and in order under perm; returns the
    /// smaller input shape and the permutation over it. The data movement is the same.
    /// </summary>
    private static (int[] shape, int[] perm) Coalesce(int[] shape, int[] perm)
    {
        var newIndex = new int[shape.Length];
        var kept = new List<int>();
        for (int i = 0; i < shape.Length; i++) { newIndex[i] = kept.Count; if (shape[i] != 1) kept.Add(shape[i]); }
        var p = new List<int>();
        foreach (int a in perm) if (shape[a] != 1) p.Add(newIndex[a]);
        // Groups in output order: (first input axis, number of axes).
        var groups = new List<(int start, int count)>();
        for (int k = 0; k < p.Count; k++)
        {
            if (k > 0 && p[k] == p[k - 1] + 1) groups[^1] = (groups[^1].start, groups[^1].count + 1);
            else groups.Add((p[k], 1));
        }
        var byInput = groups.Select((grp, k) => (grp, k)).OrderBy(t => t.grp.start).ToArray();
        var cs = new int[groups.Count];
        var cp = new int[groups.Count];
        for (int i = 0; i < byInput.Length; i++)
        {
            var (grp, k) = byInput[i];
            int size = 1;
            for (int j = grp.start; j < grp.start + grp.count; j++) size *= kept[j];
            cs[i] = size;
            cp[k] = i;
        }
        return (cs, cp);
    }

    /// <summary>dst[b, j, i] = src[b, i, j] for src [batch, m, n], in 32×32 tiles so both sides stay cache-friendly.</summary>
    private static void Transpose2d(float[] src, int batch, int m, int n, float[] dst)
    {
        const int T = 32;
        int rowTiles = (m + T - 1) / T, plane = m * n;
        Parallelism.ForChunks(batch * rowTiles, Math.Max(1, ParallelGrain / (T * n)), (s, e) =>
        {
            for (int t = s; t < e; t++)
            {
                int b = t / rowTiles, i0 = t % rowTiles * T, i1 = Math.Min(m, i0 + T), bo = b * plane;
                for (int j0 = 0; j0 < n; j0 += T)
                {
                    int j1 = Math.Min(n, j0 + T);
                    for (int i = i0; i < i1; i++)
                        for (int j = j0; j < j1; j++)
                            dst[bo + j * m + i] = src[bo + i * n + j];
                }
            }
        });
    }

    /// <summary>dst[o, j, :] = src[o, n − 1 − j, :] for [outer, n, inner].</summary>
    private static void FlipKernel(float[] src, int outer, int n, int inner, float[] dst)
    {
        for (int o = 0; o < outer; o++)
        {
            if (inner == 1)
            {
                var row = dst.AsSpan(o * n, n);
                src.AsSpan(o * n, n).CopyTo(row);
                row.Reverse();
                continue;
            }
            for (int j = 0; j < n; j++)
                src.AsSpan((o * n + n - 1 - j) * inner, inner).CopyTo(dst.AsSpan((o * n + j) * inner, inner));
        }
    }

    /// <summary>Lays blocks[k] elements of every outer row of xs[k] side by side: the shared body of Concat and Stack.</summary>
    private static Tensor Join(Tensor[] xs, int[] outShape, int outer, int[] blocks, string op)
    {
        xs = (Tensor[])xs.Clone(); // the caller's array may change before backward runs
        var y = Tensor.Output(outShape);
        var offsets = new int[xs.Length];
        int row = 0;
        for (int k = 0; k < xs.Length; k++) { offsets[k] = row; row += blocks[k]; }
        var yd = y.Data;
        ForRows(outer, row, (s, e) =>
        {
            for (int o = s; o < e; o++)
                for (int k = 0; k < xs.Length; k++)
                    xs[k].Data.AsSpan(o * blocks[k], blocks[k]).CopyTo(yd.AsSpan(o * row + offsets[k], blocks[k]));
        });
        if (!Autograd.Needs(xs)) return y;
        return Autograd.Record(op, y, xs, g =>
        {
            for (int k = 0; k < xs.Length; k++)
            {
                if (!xs[k].RequiresGrad) continue;
                var gx = xs[k].GradSpan();
                for (int o = 0; o < outer; o++)
                {
                    var dst = gx.Slice(o * blocks[k], blocks[k]);
                    TensorPrimitives.Add(dst, g.Data.AsSpan(o * row + offsets[k], blocks[k]), dst);
                }
            }
        });
    }

    /// <summary>Fills in a −1 and checks the element count; the shape array is copied.</summary>
    private static int[] ResolveShape(int[] from, int size, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var s = (int[])shape.Clone();
        int infer = -1;
        long known = 1;
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == -1)
            {
                if (infer >= 0) throw new ArgumentException($"reshape: more than one -1 in {Tensor.ShapeString(shape)} (input {Tensor.ShapeString(from)})");
                infer = i;
            }
            else if (s[i] < 0) throw new ArgumentException($"reshape: negative dimension in {Tensor.ShapeString(shape)} (input {Tensor.ShapeString(from)})");
            else known *= s[i];
        }
        if (infer >= 0)
        {
            if (known == 0 || size % known != 0)
                throw new ArgumentException($"reshape: cannot view {Tensor.ShapeString(from)} ({size} elements) as {Tensor.ShapeString(shape)}");
            s[infer] = (int)(size / known);
        }
        else if (known != size)
            throw new ArgumentException($"reshape: cannot view {Tensor.ShapeString(from)} ({size} elements) as {Tensor.ShapeString(shape)}");
        return s;
    }

    private static void CheckList(Tensor[] xs, string op)
    {
        ArgumentNullException.ThrowIfNull(xs);
        if (xs.Length == 0) throw new ArgumentException($"{op}: no tensors given");
        foreach (var t in xs) if (t is null) throw new ArgumentException($"{op}: null tensor in the list");
    }

    private static string ShapesString(Tensor[] xs) => string.Join(", ", xs.Select(t => Tensor.ShapeString(t.Shape)));
}
