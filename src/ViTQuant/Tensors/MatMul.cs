// Matrix products: batched MatMul with transpose flags, and Linear (x·wᵀ + b) as one GEMM.
//
// C = op(A)·op(B), op(X) = X or Xᵀ, per batch item; A is stored [M, K] (or [K, M] when transA) and B
// [K, N] (or [N, K] when transB), so lda = transA ? M : K and ldb = transB ? K : N. Backward, with G
// the output gradient [M, N], written as GEMMs on the stored layouts (no transposed copies):
//   dA = G·op(B)ᵀ    stored [M, K]:  !transA → Sgemm(G, B, transB: !tB)       = G·Bᵀ  or G·B
//                    stored [K, M]:   transA → Sgemm(B, G, transA: tB, transB: true) = B·Gᵀ or Bᵀ·Gᵀ
//   dB = op(A)ᵀ·G    stored [K, N]:  !transB → Sgemm(A, G, transA: !tA)       = Aᵀ·G  or A·G
//                    stored [N, K]:   transB → Sgemm(G, A, transA: true, transB: tA) = Gᵀ·A or Gᵀ·Aᵀ
// Every backward GEMM runs with beta = 1, accumulating straight into the gradient buffers.
//
// Batching: when B is shared (2-D) and A is not transposed, the batch folds into M — one GEMM of
// [batch·M, K]·op(B), whose dB GEMM then sums over the batch for free. Otherwise many small products
// run under Parallelism.For over the batch (GEMM then runs single-threaded inside), while few large
// products run one after another, each a multi-threaded top-level GEMM.
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using ViTQuant.Kernels;

namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>
    /// Batched matrix product op(a)·op(b). a is [..., M, K] ([..., K, M] when transA), b is [..., K, N]
    /// ([..., N, K] when transB). The batch dimensions of a and b must be equal, or b may be 2-D and is
    /// then shared by every batch item of a (its gradient sums over the batch). Result: [..., M, N].
    /// Throws ArgumentException when a rank is below 2, the inner sizes differ, or batch shapes mismatch.
    /// </summary>
    public static Tensor MatMul(Tensor a, Tensor b, bool transA = false, bool transB = false)
    {
        if (a.Rank < 2 || b.Rank < 2)
            throw new ArgumentException($"matmul needs tensors of rank >= 2, got {Tensor.ShapeString(a.Shape)} and {Tensor.ShapeString(b.Shape)}");
        int m = transA ? a.Shape[^1] : a.Shape[^2], k = transA ? a.Shape[^2] : a.Shape[^1];
        int kb = transB ? b.Shape[^1] : b.Shape[^2], n = transB ? b.Shape[^2] : b.Shape[^1];
        bool shared = b.Rank == 2;
        if (k != kb || (!shared && !a.Shape.AsSpan(0, a.Rank - 2).SequenceEqual(b.Shape.AsSpan(0, b.Rank - 2))))
            throw new ArgumentException($"matmul: shapes {Tensor.ShapeString(a.Shape)}{(transA ? "ᵀ" : "")} and {Tensor.ShapeString(b.Shape)}{(transB ? "ᵀ" : "")} are incompatible (inner sizes {k} vs {kb}; batch dims must match or b must be 2-D)");
        int batch = 1;
        for (int i = 0; i < a.Rank - 2; i++) batch *= a.Shape[i];
        var outShape = a.Shape.ToArray();
        outShape[^2] = m;
        outShape[^1] = n;
        bool empty = batch == 0 || m == 0 || n == 0 || k == 0;
        // A product with an empty dimension is all zeros; otherwise the GEMM (beta = 0) writes every element.
        var c = empty ? Tensor.Output(outShape) : Tensor.OutputUninitialized(outShape);

        int lda = transA ? m : k, ldb = transB ? k : n;
        int aStride = m * k, bStride = shared ? 0 : k * n, cStride = m * n;
        float[] ad = a.Data, bd = b.Data, cd = c.Data;
        bool fold = shared && !transA;
        // (An empty product's gradients add nothing.)
        if (!empty && fold)
            Gemm.Sgemm(false, transB, batch * m, n, k, 1f, ad.AsSpan(0, a.Size), k, bd.AsSpan(0, b.Size), ldb, 0f, cd.AsSpan(0, c.Size), n);
        else if (!empty)
            MatMulForBatch(batch, (long)m * n * k, i => Gemm.Sgemm(transA, transB, m, n, k, 1f,
                ad.AsSpan(i * aStride, aStride), lda, bd.AsSpan(i * bStride, k * n), ldb, 0f, cd.AsSpan(i * cStride, cStride), n));

        if (!Autograd.Needs(a, b)) return c;
        return Autograd.Record("matmul", c, new[] { a, b }, g =>
        {
            if (empty) return;
            float[] gd = g.Data;
            if (a.RequiresGrad)
            {
                a.GradSpan();
                float[] ga = a.Grad!.Data;
                if (fold)
                    Gemm.Sgemm(false, !transB, batch * m, k, n, 1f, gd.AsSpan(0, g.Size), n, bd.AsSpan(0, b.Size), ldb, 1f, ga.AsSpan(0, a.Size), k);
                else
                    MatMulForBatch(batch, (long)m * n * k, i =>
                    {
                        var gi = gd.AsSpan(i * cStride, cStride);
                        var bi = bd.AsSpan(i * bStride, k * n);
                        var dai = ga.AsSpan(i * aStride, aStride);
                        if (!transA) Gemm.Sgemm(false, !transB, m, k, n, 1f, gi, n, bi, ldb, 1f, dai, k);
                        else Gemm.Sgemm(transB, true, k, m, n, 1f, bi, ldb, gi, n, 1f, dai, m);
                    });
            }
            if (b.RequiresGrad)
            {
                b.GradSpan();
                float[] gb = b.Grad!.Data;
                void DbOf(int i, int rowsOfA, Span<float> db)
                {
                    var ai = ad.AsSpan(i * aStride, rowsOfA * k);
                    var gi = gd.AsSpan(i * cStride, rowsOfA * n);
                    if (!transB) Gemm.Sgemm(!transA, false, k, n, rowsOfA, 1f, ai, lda, gi, n, 1f, db, n);
                    else Gemm.Sgemm(true, transA, n, k, rowsOfA, 1f, gi, n, ai, lda, 1f, db, k);
                }
                if (fold) DbOf(0, batch * m, gb.AsSpan(0, b.Size));
                // Shared b under transposed a cannot fold; each product adds into the one dB, in order.
                else if (shared) for (int i = 0; i < batch; i++) DbOf(i, m, gb.AsSpan(0, b.Size));
                else MatMulForBatch(batch, (long)m * n * k, i => DbOf(i, m, gb.AsSpan(i * bStride, k * n)));
            }
        });
    }

    /// <summary>
    /// Fully connected layer y = x·wᵀ + b over the last axis, computed as one GEMM over all leading rows.
    /// x is [..., in], w is [out, in] (PyTorch layout), b is [out] or null; the result is [..., out].
    /// Throws ArgumentException on a rank-0 x, a w that is not 2-D, or mismatched sizes.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor w, Tensor? b) => Linear(x, w, b, frozenWeight: false);

    /// <summary>
    /// <see cref="Linear(Tensor, Tensor, Tensor?)"/>; <paramref name="frozenWeight"/>: w is the layer's own parameter
    /// (not a per-call copy), so inside a WeightPacking.Freeze() scope its packed form may be cached.
    /// </summary>
    internal static Tensor Linear(Tensor x, Tensor w, Tensor? b, bool frozenWeight) => LinearCore(x, w, b, null, frozenWeight);

    /// <summary>
    /// residual + Linear(x, w, b): a layer's output added to a residual stream of its shape, the bits of
    /// Add(residual, Linear(x, w, b)) in one op. With w frozen (the layer's own parameter inside a WeightPacking.Freeze()
    /// scope) the addition lands on the GEMM's tiles while they are in L1 instead of in a pass of its own, and the
    /// backward gives the layer's input and weight gradients from the output gradient itself, then hands that buffer to
    /// the residual (an add would copy it for the layer first). Throws ArgumentException as Linear does, or when
    /// residual's shape is not the output's.
    /// </summary>
    internal static Tensor LinearResidual(Tensor x, Tensor w, Tensor? b, Tensor residual, bool frozenWeight)
    {
        ArgumentNullException.ThrowIfNull(residual);
        return LinearCore(x, w, b, residual, frozenWeight);
    }

    // Linear, plus residual when it is not null (LinearResidual).
    private static Tensor LinearCore(Tensor x, Tensor w, Tensor? b, Tensor? residual, bool frozenWeight)
    {
        if (x.Rank < 1 || w.Rank != 2 || x.Shape[^1] != w.Shape[1])
            throw new ArgumentException($"linear: x {Tensor.ShapeString(x.Shape)} and weight {Tensor.ShapeString(w.Shape)} are incompatible (weight must be [out, in] with in = x's last dimension)");
        int inF = w.Shape[1], outF = w.Shape[0];
        if (b != null && (b.Rank != 1 || b.Shape[0] != outF))
            throw new ArgumentException($"linear: bias has shape {Tensor.ShapeString(b.Shape)}, expected [{outF}]");
        int rows = inF == 0 ? Tensor.Numel(x.Shape.AsSpan(0, x.Rank - 1)) : x.Size / inF;
        var outShape = x.Shape.ToArray();
        outShape[^1] = outF;
        if (residual != null && !Broadcast.SameShape(residual.Shape, outShape))
            throw new ArgumentException($"linear: residual {Tensor.ShapeString(residual.Shape)} is not the output's shape {Tensor.ShapeString(outShape)}");
        var y = Tensor.OutputUninitialized(outShape); // DenseCore writes every row (bias or zeros, then the product)
        var bias = b != null ? b.Span : default;
        var key = frozenWeight ? w.Data : null;
        if (residual == null) DenseCore.Forward(x.Span, rows, inF, w.Span, outF, bias, y.Span, key);
        else if (!DenseCore.Forward(x.Span, rows, inF, w.Span, outF, bias, residual.Span, y.Span, key))
            ElementwiseChunks(y.Size, residual.Data, y.Data, y.Data, TensorPrimitives.Add);

        if (!Autograd.IsEnabled || !(x.RequiresGrad || w.RequiresGrad || b is { RequiresGrad: true } || residual is { RequiresGrad: true })) return y;
        var parents = (b, residual) switch
        {
            (null, null) => new[] { x, w },
            (not null, null) => new[] { x, w, b },
            (null, not null) => new[] { x, w, residual },
            _ => new[] { x, w, b, residual },
        };
        return Autograd.Record(residual == null ? "linear" : "linear_residual", y, parents, g =>
        {
            if (x.RequiresGrad || w.RequiresGrad || b is { RequiresGrad: true })
            {
                bool dxFresh = false, dwFresh = false;
                var dx = x.RequiresGrad ? x.GradSpanForOverwrite(out dxFresh) : default;
                var dw = w.RequiresGrad ? w.GradSpanForOverwrite(out dwFresh) : default;
                DenseCore.Backward(g.Span, x.Span, w.Span, rows, inF, outF, dx, dw,
                    b is { RequiresGrad: true } ? b.GradSpan() : default, dxFresh, dwFresh, key);
            }
            // Last: the residual may take g's buffer.
            if (residual is { RequiresGrad: true }) residual.TakeOrAccumulateGrad(g);
        });
    }

    /// <summary>Runs body over the batch: in parallel for many small products, sequentially (each GEMM multi-threaded) for few big ones.</summary>
    private static void MatMulForBatch(int batch, long flopsPerItem, Action<int> body)
    {
        const long BigProduct = 1L << 21; // ~2 M multiply-adds: large enough for a threaded GEMM to pay off
        if (batch == 1 || (flopsPerItem >= BigProduct && batch < 2 * Parallelism.Threads))
            for (int i = 0; i < batch; i++) body(i);
        else Parallelism.For(0, batch, body);
    }
}

/// <summary>The dense layer y = x·wᵀ + b on raw row-major buffers, shared by Linear and PatchEmbed.</summary>
internal static class DenseCore
{
    /// <summary>
    /// False: the bias is broadcast into y in a pass of its own before the GEMM (the former path, kept for
    /// same-process A/B benchmarks; the numbers are the same bit for bit).
    /// </summary>
    internal static bool BiasEpilogue = true;

    /// <summary>
    /// False: the input gradient's product packs the weight on every call even inside a WeightPacking.Freeze() scope
    /// (the former path, kept for same-process A/B benchmarks; the same bits).
    /// </summary>
    internal static bool PrepackedInputGradient = true;

    /// <summary>
    /// y[rows, out] = x[rows, in]·w[out, in]ᵀ + b[out] (b empty: no bias). y is overwritten. <paramref name="weightKey"/>:
    /// the array w comes from, a module's own parameter — inside a WeightPacking.Freeze() scope its packed form is
    /// reused (the same bits).
    /// </summary>
    public static void Forward(ReadOnlySpan<float> x, int rows, int inF, ReadOnlySpan<float> w, int outF, ReadOnlySpan<float> b, Span<float> y,
        float[]? weightKey = null) => Forward(x, rows, inF, w, outF, b, default, y, weightKey);

    /// <summary>
    /// Forward, and with a packed weight (weightKey inside a WeightPacking.Freeze() scope) and a non-empty
    /// <paramref name="residual"/> ([rows, out], laid out as y), y = residual + (x·wᵀ + b): the addition lands on each
    /// finished GEMM tile while it is in L1 (ManagedGemm.RunPrepacked), with the bits of adding residual to y afterwards.
    /// Returns whether residual was added; when false the caller adds it.
    /// </summary>
    public static bool Forward(ReadOnlySpan<float> x, int rows, int inF, ReadOnlySpan<float> w, int outF, ReadOnlySpan<float> b,
        ReadOnlySpan<float> residual, Span<float> y, float[]? weightKey = null)
    {
        if (weightKey != null && rows > 0 && BiasEpilogue && WeightPacking.Get(weightKey, outF, inF) is { } packed)
        {
            ManagedGemm.RunPrepacked(rows, x, inF, packed, b, y, outF, parallel: !Parallelism.InsideParallelBody, residual: residual);
            return !residual.IsEmpty;
        }
        if (rows == 0 || inF == 0 || outF == 0 || b.Length == 0 || !BiasEpilogue)
        {
            if (b.Length > 0) for (int r = 0; r < rows; r++) b[..outF].CopyTo(y.Slice(r * outF, outF));
            else y[..(rows * outF)].Clear();
            if (rows == 0 || inF == 0 || outF == 0) return false;
            Gemm.Sgemm(false, true, rows, outF, inF, 1f, x, inF, w, inF, 1f, y, outF);
            return false;
        }
        // The product accumulated onto the bias rows (as with y filled with them and beta = 1).
        Gemm.SgemmBias(false, true, rows, outF, inF, 1f, x, inF, w, inF, b, y, outF);
        return false;
    }

    /// <summary>
    /// Accumulates dx += g·w, dw += gᵀ·x, db += Σ_rows g for g = dy [rows, out]; empty targets are skipped.
    /// <paramref name="dxFresh"/> / <paramref name="dwFresh"/>: dx / dw hold no gradient yet (their contents are
    /// undefined) and are overwritten, dx = g·w, dw = gᵀ·x. <paramref name="weightKey"/>: as in Forward; dx's product
    /// then reads w packed once for the scope (as B = w), the same bits.
    /// </summary>
    public static unsafe void Backward(ReadOnlySpan<float> g, ReadOnlySpan<float> x, ReadOnlySpan<float> w, int rows, int inF, int outF,
        Span<float> dx, Span<float> dw, Span<float> db, bool dxFresh = false, bool dwFresh = false, float[]? weightKey = null)
    {
        if (dxFresh && (rows == 0 || outF == 0 || inF == 0)) dx[..(rows * inF)].Clear();
        if (dwFresh && (rows == 0 || outF == 0 || inF == 0)) dw[..(outF * inF)].Clear();
        if (rows == 0 || outF == 0) return;
        if (dx.Length > 0 && inF > 0)
        {
            if (weightKey != null && PrepackedInputGradient && WeightPacking.Get(weightKey, inF, outF, transposed: false) is { } packed)
                ManagedGemm.RunPrepacked(rows, g, outF, packed, default, dx, inF, parallel: !Parallelism.InsideParallelBody, beta: dxFresh ? 0f : 1f);
            else Gemm.Sgemm(false, false, rows, inF, outF, 1f, g, outF, w, inF, dxFresh ? 0f : 1f, dx, inF);
        }
        if (dw.Length > 0 && inF > 0) Gemm.Sgemm(true, false, outF, inF, rows, 1f, g, outF, x, inF, dwFresh ? 0f : 1f, dw, inF);
        if (db.Length == 0) return;
        // Column ranges across workers, each summing its columns over the rows in row order: the same
        // additions in the same order as one pass row by row, so the same bits for any thread count.
        const int Cols = 64;
        fixed (float* pg = g, pd = db)
        {
            nint gp = (nint)pg, dp = (nint)pd;
            int n = outF;
            Parallelism.ForChunks((n + Cols - 1) / Cols, Math.Max(1, RowSimd.ParallelGrain / Math.Max(1, rows * Cols)), (c0, c1) =>
            {
                for (int j0 = c0 * Cols; j0 < Math.Min(n, c1 * Cols); j0 += Cols)
                    AddColumnSums((float*)gp + j0, rows, n, Math.Min(Cols, n - j0), (float*)dp + j0);
            });
        }
    }

    // d[j] += g[0, j] + g[1, j] + … + g[rows−1, j] for j < len (g's rows ld apart), added in row order. A full 64-column
    // block keeps its eight 8-float sums in registers for all rows: a TensorPrimitives.Add per row (the former
    // loop) loaded and stored them every row and paid a call per row (1.2 % of `bench profile`'s samples, vit_fmnist).
    private static unsafe void AddColumnSums(float* g, int rows, int ld, int len, float* d)
    {
        if (len == 64 && Vector256.IsHardwareAccelerated)
        {
            var s0 = Vector256.Load(d); var s1 = Vector256.Load(d + 8); var s2 = Vector256.Load(d + 16); var s3 = Vector256.Load(d + 24);
            var s4 = Vector256.Load(d + 32); var s5 = Vector256.Load(d + 40); var s6 = Vector256.Load(d + 48); var s7 = Vector256.Load(d + 56);
            for (int r = 0; r < rows; r++, g += ld)
            {
                s0 += Vector256.Load(g); s1 += Vector256.Load(g + 8); s2 += Vector256.Load(g + 16); s3 += Vector256.Load(g + 24);
                s4 += Vector256.Load(g + 32); s5 += Vector256.Load(g + 40); s6 += Vector256.Load(g + 48); s7 += Vector256.Load(g + 56);
            }
            s0.Store(d); s1.Store(d + 8); s2.Store(d + 16); s3.Store(d + 24);
            s4.Store(d + 32); s5.Store(d + 40); s6.Store(d + 48); s7.Store(d + 56);
            return;
        }
        var dst = new Span<float>(d, len);
        for (int r = 0; r < rows; r++, g += ld) TensorPrimitives.Add(dst, new ReadOnlySpan<float>(g, len), dst);
    }
}
