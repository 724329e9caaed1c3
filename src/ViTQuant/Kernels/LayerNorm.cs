// Layer normalisation over the rows of a [rows, C] row-major buffer (PyTorch semantics).
//
//   μ = (1/C) Σ x_j,   σ² = (1/C) Σ (x_j − μ)²  (biased),   rstd = 1/√(σ² + eps)
//   x̂_j = (x_j − μ)·rstd,   y_j = γ_j·x̂_j + β_j
//
// Backward, with g_j = dy_j·γ_j and ∂x̂_j/∂x_i = rstd·(δ_ij − 1/C − x̂_i·x̂_j/C) (μ and rstd both move with x):
//   dx_j += rstd · (g_j − (1/C) Σ_k g_k − x̂_j · (1/C) Σ_k g_k·x̂_k)
//   dγ_j += Σ_rows dy_j·x̂_j,   dβ_j += Σ_rows dy_j
//
// Fast kernels: the row stays in cache, so statistics use two vector passes (mean, then centred sum
// of squares — no E[x²]−E[x]² cancellation) and one fused normalise+affine pass. The backward fuses
// Σg, Σg·x̂ and the dγ/dβ contributions into one pass and dx into a second. The forward takes four rows at a time,
// phase by phase (ForwardRows: the same bits as one row at a time). Rows are split across
// threads; dγ/dβ are accumulated per chunk and summed in chunk order, so a given thread count always
// gives the same bits. An empty gamma/beta span means "no affine" (γ = 1, β = 0).
// The forward row loops are jitted fully optimised from the first call (AggressiveOptimization on the chunk
// body and on the row functions, which stay separate: inlined into the body they ran as slowly): under tiered
// compilation a loop starts as unoptimised code with on-stack replacement and profiling, and in a process
// that runs a few dozen forwards (vitq bench, an evaluation) the forward LayerNorm stayed 2× slower
// (DeiT-Tiny, one thread: 10.4 against 4.7 ms of fused add + norm per forward, 234 against 221 ms in all).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace ViTQuant.Kernels;

/// <summary>Row layer normalisation, forward (saving mean and rstd) and backward.</summary>
internal static unsafe class LayerNormKernel
{
    /// <summary>
    /// y[r, :] = LayerNorm(x[r, :])·gamma + beta, writing mean[r] and rstd[r] for the backward.
    /// gamma/beta may be empty (no scale / no shift). Throws ArgumentException on short buffers or eps &lt; 0.
    /// </summary>
    public static void LayerNormRows(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y,
        Span<float> mean, Span<float> rstd, int rows, int cols, float eps)
    {
        Check(rows, cols, x.Length, y.Length, gamma.Length, beta.Length, mean.Length, rstd.Length, eps);
        bool hasG = gamma.Length > 0, hasB = beta.Length > 0;
        if (cols == 0)
        {
            // An empty row: mean 0, variance 0 (what the reference computes), and nothing to write.
            mean[..rows].Clear();
            rstd[..rows].Fill(1f / MathF.Sqrt(eps));
            return;
        }
        fixed (float* px = x, pg = gamma, pb = beta, py = y, pm = mean, pr = rstd)
        {
            float* xx = px, gg = pg, bb = pb, yy = py, mm = pm, rr = pr;
            RowSimd.ForRows(rows, cols, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (r0, r1) =>
                ForwardRows(xx + (long)r0 * cols, hasG ? gg : null, hasB ? bb : null, yy + (long)r0 * cols, mm + r0, rr + r0, r1 - r0, cols, eps));
        }
    }

    /// <summary>
    /// sum = x + y, then ln[r, :] = LayerNorm(sum[r, :])·gamma + beta, row by row while the row is in L1: a
    /// transformer block's residual add and the next pre-norm in one pass over the residual stream (and across
    /// workers; the add alone was one serial pass). The same numbers as TensorPrimitives.Add followed by
    /// <see cref="LayerNormRows"/>. No mean/rstd: for inference. Throws ArgumentException on short buffers.
    /// </summary>
    public static void AddLayerNormRows(ReadOnlySpan<float> x, ReadOnlySpan<float> y, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta,
        Span<float> sum, Span<float> ln, int rows, int cols, float eps)
    {
        Check(rows, cols, x.Length, ln.Length, gamma.Length, beta.Length, rows, rows, eps);
        RowSimd.CheckRows(rows, cols, y.Length, "y", sum.Length, "sum");
        if (rows == 0 || cols == 0) return;
        bool hasG = gamma.Length > 0, hasB = beta.Length > 0;
        fixed (float* px = x, py = y, pg = gamma, pb = beta, ps = sum, pl = ln)
        {
            float* xx = px, yy = py, gg = pg, bb = pb, ss = ps, ll = pl;
            RowSimd.ForRows(rows, cols, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (r0, r1) =>
            {
                // Four rows' sums, then their norms four at a time (ForwardRows), while the rows are in L1.
                for (int q0 = r0; q0 < r1; q0 += 4)
                {
                    int q1 = Math.Min(r1, q0 + 4);
                    for (int r = q0; r < q1; r++) AddRow(xx + (long)r * cols, yy + (long)r * cols, ss + (long)r * cols, cols);
                    ForwardRows(ss + (long)q0 * cols, hasG ? gg : null, hasB ? bb : null, ll + (long)q0 * cols, null, null, q1 - q0, cols, eps);
                }
            });
        }
    }

    // s = x + y over one row in a loop of our own (a TensorPrimitives call per row of a ViT's width costs as much as
    // the adds).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddRow(float* x, float* y, float* s, int n)
    {
        int i = 0;
        for (; i + 8 <= n; i += 8) (Vector256.Load(x + i) + Vector256.Load(y + i)).Store(s + i);
        for (; i < n; i++) s[i] = x[i] + y[i];
    }

    /// <summary>Scalar twin of <see cref="AddLayerNormRows"/>: the float sum, then <see cref="ReferenceLayerNormRows"/>.</summary>
    public static void ReferenceAddLayerNormRows(ReadOnlySpan<float> x, ReadOnlySpan<float> y, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta,
        Span<float> sum, Span<float> ln, int rows, int cols, float eps)
    {
        for (int i = 0; i < rows * cols; i++) sum[i] = x[i] + y[i];
        ReferenceLayerNormRows(sum, gamma, beta, ln, new float[rows], new float[rows], rows, cols, eps);
    }

    // dγ/dβ partials of a backward outside a parallel body (LayerNormRowsBackward).
    private const int WholeBatchPartials = 2;

    /// <summary>
    /// Accumulates dx, dgamma and dbeta from dy, the input x and the saved mean/rstd. An empty gamma
    /// means γ = 1; an empty dx/dgamma/dbeta is skipped. Throws ArgumentException on short buffers.
    /// </summary>
    public static void LayerNormRowsBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> mean, ReadOnlySpan<float> rstd,
        ReadOnlySpan<float> dy, Span<float> dx, Span<float> dgamma, Span<float> dbeta, int rows, int cols)
    {
        Check(rows, cols, x.Length, dy.Length, gamma.Length, 0, mean.Length, rstd.Length, 0f);
        if (dx.Length > 0) RowSimd.CheckRows(rows, cols, dx.Length, "dx", dx.Length, "dx");
        if ((dgamma.Length > 0 && dgamma.Length < cols) || (dbeta.Length > 0 && dbeta.Length < cols))
            throw new ArgumentException($"dgamma/dbeta have {dgamma.Length}/{dbeta.Length} elements, need {cols}");
        if (rows == 0 || cols == 0) return;
        bool wantDx = dx.Length > 0, wantDg = dgamma.Length > 0, wantDb = dbeta.Length > 0, hasG = gamma.Length > 0;

        // Own chunking (not ForChunks) because each chunk needs its own dγ/dβ partial buffer. The partials sit a
        // stride of whole cache lines plus one apart in one buffer, so no cache line holds two chunks' partials: every
        // row adds into all of them, and two workers writing one line (two arrays of `cols` floats back to back, as
        // before) made the backward slower on two threads than on one (`bench micro`, 1576×192: 0.51 ns per element
        // on one thread, 0.72–0.74 on two).
        // The partial count never follows Threads, so dγ/dβ's bits do not depend on it: one inside a parallel body (a
        // chunk of images in VisionModel.ForwardBackward), else WholeBatchPartials when the rows fill them. It had been
        // Threads, which made a whole-batch training step's bits depend on the thread count (and a test that trains
        // flaky while another test changed Threads); WholeBatchPartials = 2 keeps the bits two threads gave.
        int chunks = Parallelism.InsideParallelBody ? 1 : Math.Max(1, Math.Min(WholeBatchPartials, rows / Math.Max(1, RowSimd.ParallelGrain / cols)));
        int stride = (cols + 15) / 16 * 16 + 16;
        var part = wantDg || wantDb ? new float[chunks * 2 * stride] : null;
        fixed (float* px = x, pg = gamma, pm = mean, pr = rstd, pdy = dy, pdx = dx)
        {
            float* xx = px, gg = pg, mm = pm, rr = pr, gy = pdy, gx = pdx;
            Parallelism.For(0, chunks, c =>
            {
                int r0 = (int)((long)rows * c / chunks), r1 = (int)((long)rows * (c + 1) / chunks);
                fixed (float* pp = part)
                {
                    float* dgc = wantDg ? pp + (long)c * 2 * stride : null;
                    float* dbc = wantDb ? pp + (long)c * 2 * stride + stride : null;
                    for (int r = r0; r < r1; r++)
                        BackwardRow(xx + (long)r * cols, hasG ? gg : null, mm[r], rr[r], gy + (long)r * cols,
                            wantDx ? gx + (long)r * cols : null, dgc, dbc, cols);
                }
            });
        }
        for (int c = 0; c < chunks; c++)
        {
            if (wantDg) System.Numerics.Tensors.TensorPrimitives.Add(dgamma[..cols], part.AsSpan(c * 2 * stride, cols), dgamma[..cols]);
            if (wantDb) System.Numerics.Tensors.TensorPrimitives.Add(dbeta[..cols], part.AsSpan(c * 2 * stride + stride, cols), dbeta[..cols]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRow(float* x, float* g, float* b, float* y, out float mean, out float rstd, int n, float eps)
    {
        mean = RowMean(x, n);
        rstd = RowRstd(x, n, mean, eps);
        RowAffine(x, g, b, y, n, mean, rstd);
    }

    // ForwardRow on `rows` rows `n` apart (mean, rstd: per row, or null), four at a time phase by phase: the four
    // means, the four variances, the four normalisations. Each row gets ForwardRow's operations in its order, so the
    // same bits. Why: a row of a ViT's width is two chains of dependent vector adds (its sum, its centred sum of
    // squares: 16 each at width 128) and two sums across lanes, with little work beside them; four rows give the
    // core four chains to overlap.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRows(float* x, float* g, float* b, float* y, float* mean, float* rstd, int rows, int n, float eps)
    {
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            float* x0 = x + (long)r * n, x1 = x0 + n, x2 = x1 + n, x3 = x2 + n;
            float* y0 = y + (long)r * n;
            float m0 = RowMean(x0, n), m1 = RowMean(x1, n), m2 = RowMean(x2, n), m3 = RowMean(x3, n);
            float s0 = RowRstd(x0, n, m0, eps), s1 = RowRstd(x1, n, m1, eps), s2 = RowRstd(x2, n, m2, eps), s3 = RowRstd(x3, n, m3, eps);
            RowAffine(x0, g, b, y0, n, m0, s0);
            RowAffine(x1, g, b, y0 + n, n, m1, s1);
            RowAffine(x2, g, b, y0 + 2 * n, n, m2, s2);
            RowAffine(x3, g, b, y0 + 3 * n, n, m3, s3);
            if (mean != null) { mean[r] = m0; mean[r + 1] = m1; mean[r + 2] = m2; mean[r + 3] = m3; }
            if (rstd != null) { rstd[r] = s0; rstd[r + 1] = s1; rstd[r + 2] = s2; rstd[r + 3] = s3; }
        }
        for (; r < rows; r++)
        {
            ForwardRow(x + (long)r * n, g, b, y + (long)r * n, out float m, out float rs, n, eps);
            if (mean != null) mean[r] = m;
            if (rstd != null) rstd[r] = rs;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowMean(float* x, int n)
    {
        int full = n & ~7, tail = n - full;
        var vs = Vector256<float>.Zero;
        for (int i = 0; i < full; i += 8) vs += Vector256.Load(x + i);
        if (tail > 0) vs += RowSimd.LoadTail(x + full, tail, 0f);
        return Vector256.Sum(vs) / n;
    }

    // 1/√(σ² + eps) with σ² the centred mean of squares (no E[x²]−E[x]² cancellation).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowRstd(float* x, int n, float mu, float eps)
    {
        int full = n & ~7, tail = n - full;
        var vmu = Vector256.Create(mu);
        var vq = Vector256<float>.Zero;
        for (int i = 0; i < full; i += 8) { var d = Vector256.Load(x + i) - vmu; vq = Vector256.FusedMultiplyAdd(d, d, vq); }
        if (tail > 0) { var d = RowSimd.LoadTail(x + full, tail, mu) - vmu; vq = Vector256.FusedMultiplyAdd(d, d, vq); }
        return 1f / MathF.Sqrt(Vector256.Sum(vq) / n + eps);
    }

    // y = ((x − μ)·rstd)·γ + β (γ, β null: none).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowAffine(float* x, float* g, float* b, float* y, int n, float mu, float rs)
    {
        int full = n & ~7, tail = n - full;
        var vmu = Vector256.Create(mu);
        var vr = Vector256.Create(rs);
        for (int i = 0; i < full; i += 8)
        {
            var h = (Vector256.Load(x + i) - vmu) * vr;
            if (g != null) h *= Vector256.Load(g + i);
            if (b != null) h += Vector256.Load(b + i);
            h.Store(y + i);
        }
        if (tail > 0)
        {
            var h = (RowSimd.LoadTail(x + full, tail, mu) - vmu) * vr;
            if (g != null) h *= RowSimd.LoadTail(g + full, tail, 0f);
            if (b != null) h += RowSimd.LoadTail(b + full, tail, 0f);
            RowSimd.StoreTail(h, y + full, tail);
        }
    }

    private static void BackwardRow(float* x, float* gamma, float mean, float rstd, float* dy, float* dx, float* dg, float* db, int n)
    {
        int full = n & ~7, tail = n - full;
        var vmu = Vector256.Create(mean);
        var vr = Vector256.Create(rstd);
        // Pass 1: Σg, Σg·x̂, and this row's dγ, dβ contributions.
        var sg = Vector256<float>.Zero;
        var sgx = Vector256<float>.Zero;
        for (int i = 0; i < full; i += 8)
            SumsAndAffineGrads(x + i, gamma == null ? null : gamma + i, dy + i, dg == null ? null : dg + i, db == null ? null : db + i, vmu, vr, ref sg, ref sgx);
        if (tail > 0)
        {
            // The tail through the same code on padded copies: padding dy = 0 makes the extra lanes add nothing.
            float* bx = stackalloc float[8], bg = stackalloc float[8], bdy = stackalloc float[8], bdg = stackalloc float[8], bdb = stackalloc float[8];
            RowSimd.LoadTail(x + full, tail, mean).Store(bx);
            RowSimd.LoadTail(dy + full, tail, 0f).Store(bdy);
            if (gamma != null) RowSimd.LoadTail(gamma + full, tail, 0f).Store(bg);
            if (dg != null) RowSimd.LoadTail(dg + full, tail, 0f).Store(bdg);
            if (db != null) RowSimd.LoadTail(db + full, tail, 0f).Store(bdb);
            SumsAndAffineGrads(bx, gamma == null ? null : bg, bdy, dg == null ? null : bdg, db == null ? null : bdb, vmu, vr, ref sg, ref sgx);
            for (int j = 0; j < tail; j++)
            {
                if (dg != null) dg[full + j] = bdg[j];
                if (db != null) db[full + j] = bdb[j];
            }
        }
        if (dx == null) return;
        var a = Vector256.Create(Vector256.Sum(sg) / n);
        var c = Vector256.Create(Vector256.Sum(sgx) / n);
        // Pass 2: dx += rstd·(g − a − x̂·c).
        var one = Vector256<float>.One;
        for (int i = 0; i < full; i += 8)
        {
            var gv = gamma == null ? one : Vector256.Load(gamma + i);
            var xh = (Vector256.Load(x + i) - vmu) * vr;
            var t = Vector256.Load(dy + i) * gv - a - xh * c;
            Vector256.FusedMultiplyAdd(t, vr, Vector256.Load(dx + i)).Store(dx + i);
        }
        if (tail > 0)
        {
            var gv = gamma == null ? one : RowSimd.LoadTail(gamma + full, tail, 0f);
            var xh = (RowSimd.LoadTail(x + full, tail, mean) - vmu) * vr;
            var t = RowSimd.LoadTail(dy + full, tail, 0f) * gv - a - xh * c;
            RowSimd.StoreTail(Vector256.FusedMultiplyAdd(t, vr, RowSimd.LoadTail(dx + full, tail, 0f)), dx + full, tail);
        }
    }

    /// <summary>One 8-lane step of backward pass 1: sg += g, sgx += g·x̂, dγ += dy·x̂, dβ += dy (g = dy·γ).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SumsAndAffineGrads(float* x, float* gamma, float* dy, float* dg, float* db,
        Vector256<float> vmu, Vector256<float> vr, ref Vector256<float> sg, ref Vector256<float> sgx)
    {
        var dyv = Vector256.Load(dy);
        var xh = (Vector256.Load(x) - vmu) * vr;
        var g = gamma == null ? dyv : dyv * Vector256.Load(gamma);
        sg += g;
        sgx = Vector256.FusedMultiplyAdd(g, xh, sgx);
        if (dg != null) Vector256.FusedMultiplyAdd(dyv, xh, Vector256.Load(dg)).Store(dg);
        if (db != null) (Vector256.Load(db) + dyv).Store(db);
    }

    private static void Check(int rows, int cols, int xLen, int yLen, int gLen, int bLen, int meanLen, int rstdLen, float eps)
    {
        RowSimd.CheckRows(rows, cols, xLen, "x", yLen, "y/dy");
        if (gLen != 0 && gLen < cols) throw new ArgumentException($"gamma has {gLen} elements, need {cols}");
        if (bLen != 0 && bLen < cols) throw new ArgumentException($"beta has {bLen} elements, need {cols}");
        if (meanLen < rows || rstdLen < rows) throw new ArgumentException($"mean/rstd have {meanLen}/{rstdLen} elements, need {rows}");
        if (!(eps >= 0f)) throw new ArgumentException($"layer norm eps must be >= 0, got {eps}");
    }

    // ---- reference twins: scalar, double precision ----

    /// <summary>Scalar double-precision twin of <see cref="LayerNormRows"/>.</summary>
    public static void ReferenceLayerNormRows(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y,
        Span<float> mean, Span<float> rstd, int rows, int cols, float eps)
    {
        Check(rows, cols, x.Length, y.Length, gamma.Length, beta.Length, mean.Length, rstd.Length, eps);
        for (int r = 0; r < rows; r++)
        {
            int o = r * cols;
            double mu = 0, v = 0;
            for (int j = 0; j < cols; j++) mu += x[o + j];
            mu = cols > 0 ? mu / cols : 0;
            for (int j = 0; j < cols; j++) v += (x[o + j] - mu) * (x[o + j] - mu);
            v = cols > 0 ? v / cols : 0;
            double rs = 1.0 / Math.Sqrt(v + eps);
            for (int j = 0; j < cols; j++)
            {
                double h = (x[o + j] - mu) * rs;
                if (gamma.Length > 0) h *= gamma[j];
                if (beta.Length > 0) h += beta[j];
                y[o + j] = (float)h;
            }
            mean[r] = (float)mu;
            rstd[r] = (float)rs;
        }
    }

    /// <summary>
    /// Scalar double-precision twin of <see cref="LayerNormRowsBackward"/>. It recomputes the row
    /// statistics from x in double instead of trusting the saved mean/rstd, so it is an independent check.
    /// </summary>
    public static void ReferenceLayerNormRowsBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> gamma, float eps,
        ReadOnlySpan<float> dy, Span<float> dx, Span<float> dgamma, Span<float> dbeta, int rows, int cols)
    {
        RowSimd.CheckRows(rows, cols, x.Length, "x", dy.Length, "dy");
        var dg = new double[cols];
        var db = new double[cols];
        var xh = new double[cols];
        var g = new double[cols];
        for (int r = 0; r < rows; r++)
        {
            int o = r * cols;
            double mu = 0, v = 0;
            for (int j = 0; j < cols; j++) mu += x[o + j];
            mu /= cols;
            for (int j = 0; j < cols; j++) v += (x[o + j] - mu) * (x[o + j] - mu);
            double rs = 1.0 / Math.Sqrt(v / cols + eps);
            double sg = 0, sgx = 0;
            for (int j = 0; j < cols; j++)
            {
                xh[j] = (x[o + j] - mu) * rs;
                g[j] = dy[o + j] * (gamma.Length > 0 ? gamma[j] : 1.0);
                sg += g[j];
                sgx += g[j] * xh[j];
                dg[j] += dy[o + j] * xh[j];
                db[j] += dy[o + j];
            }
            if (dx.Length > 0)
                for (int j = 0; j < cols; j++) dx[o + j] = (float)(dx[o + j] + rs * (g[j] - sg / cols - xh[j] * sgx / cols));
        }
        for (int j = 0; j < cols; j++)
        {
            if (dgamma.Length > 0) dgamma[j] = (float)(dgamma[j] + dg[j]);
            if (dbeta.Length > 0) dbeta[j] = (float)(dbeta[j] + db[j]);
        }
    }
}
