// The integer runtime's forward pass over a compiled Int8Plan (Int8Plan.cs has the per-layer math).
//
// Buffers (B images, N tokens, D width, Hd MLP width, H heads, dh head width), allocated once per batch
// size and reused by every call (the engine is not re-entrant: calls are serialised by a lock):
//   x [B·N, D] residual stream   h [B·N, D] LayerNorm output   qkv [B·N, 3D]   ctx [B·N, D] heads merged
//   y [B·N, D] projection output  mlp [B·N, Hd]   a16 [B·N, max(D, Hd) + 2] int16 GEMM operand
//   a8 [B·N, max(D, Hd) + 4] u8 operand of the AVX-512 VNNI kernel   qkv16 / qkv8 [B·N, 3D] q, k, v codes
//   per attention task (B·H of them, pooled): q16/k16/v16 [N, dh+1], logits [N, N], p16 [N, N+1], p8 [N, ⌈N/4⌉·4],
//   packed k/v (int16 pairs or shifted bytes), row/column zero-point terms.
// Order (timm pre-norm, as VisionTransformer): embed → per block x += proj(attn(LN1 x)), x += fc2(gelu(fc1(LN2 x)))
// → final norm on the class (and distillation) token → head(s).
// Row-wise passes: when a block's four linear layers are integer (per-tensor input grids: nothing couples rows),
// LN1 → qkv → q/k/v codes run over 64-row chunks in one parallel region, and proj → residual → LN2 → fc1 → GELU →
// fc2 → residual in another: two fork/joins per block besides attention instead of one per op, and each chunk's
// activations stay in cache between ops. Every op is row-local, so the bits equal the op-by-op order
// (RowWisePasses = false), which blocks with a float-mode layer (whole-tensor fake quantizers) still take.
// The code buffers are indexed by row at the widest layer's stride, so chunks at different layers never overlap.
using System.Collections.Concurrent;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using ViTQuant.Kernels;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Runtime;

/// <summary>Runs a compiled <see cref="Int8Plan"/> (file header).</summary>
public sealed partial class Int8Engine
{
    private readonly Int8Plan _p;
    private readonly object _lock = new();
    private readonly Dictionary<int, Arena> _arenas = new();
    private readonly ConcurrentBag<AttnScratch> _scratch = new();
    private readonly float[] _qkScale, _pvScale, _zerosN, _zerosDh;

    /// <summary>An engine for a compiled plan; buffers are allocated on the first call for each batch size.</summary>
    public Int8Engine(Int8Plan plan)
    {
        _p = plan ?? throw new ArgumentNullException(nameof(plan));
        if (plan.Swin != null)
        {
            _zerosN = _zerosDh = _qkScale = _pvScale = Array.Empty<float>();
            return;
        }
        var c = plan.Vit;
        int N = c.NumTokens, dh = c.HeadDim;
        _zerosN = Int8Gemm.PadToPanels(new float[N], N);
        _zerosDh = Int8Gemm.PadToPanels(new float[dh], dh);
        _qkScale = new float[_zerosN.Length];
        _pvScale = new float[_zerosDh.Length];
    }

    /// <summary>The compiled plan this engine runs.</summary>
    public Int8Plan Plan => _p;

    /// <summary>When true, Forward adds each stage's wall time (seconds) to <see cref="StageSeconds"/> (bench profiles).</summary>
    public bool Profile { get; set; }

    /// <summary>
    /// Accumulated time per stage (embed, layernorm, qkv, attn.q·kᵀ, attn.softmax, attn.probs·v, proj, fc1, gelu, fc2,
    /// residual, head; attn.codes when q/k/v are quantised outside the row-wise pass; sync) while Profile is on. Stages
    /// that run inside a parallel region (row-wise passes, attention heads) report their summed worker time divided by
    /// the worker count, and "sync" the rest of those regions' wall time (fork/join, waiting for the slowest worker);
    /// the others wall time.
    /// </summary>
    public Dictionary<string, double> StageSeconds { get; } = new();

    private long _t0;

    private void Mark(string stage)
    {
        if (!Profile) return;
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        StageSeconds[stage] = StageSeconds.GetValueOrDefault(stage) + (now - _t0) / (double)System.Diagnostics.Stopwatch.Frequency;
        _t0 = now;
    }

    private sealed class Arena
    {
        public float[] X = null!, H = null!, Qkv = null!, Ctx = null!, Y = null!, Mlp = null!, Patches = null!, Mean = null!, Rstd = null!, Pooled = null!, Logits = null!, Logits2 = null!;
        public short[] A16 = null!;
        /// <summary>u8 activation codes of a linear layer's input for the VNNI kernel [rows, In rounded up to 4].</summary>
        public byte[] A8 = null!;
        /// <summary>q, k, v codes of the whole batch [B·N, 3D] (even head widths), quantised once per block.</summary>
        public short[] Qkv16 = null!;
        /// <summary>The same as unsigned bytes (code − q_min) for the VNNI attention products (head widths a multiple of 4).</summary>
        public byte[] Qkv8 = null!;
    }

    private sealed class AttnScratch
    {
        public short[] Q16 = null!, K16 = null!, V16 = null!, P16 = null!;
        public float[] Logits = null!, Fq = null!, Fk = null!, Fv = null!;
        public PackedB? Kb, Vb;
        // VNNI attention: probability codes [N, ⌈N/4⌉·4], row and column terms, signed-byte panels of k and v.
        public byte[] P8 = null!;
        public int[] RowQ = null!, RowP = null!, ColK = null!, ColV = null!;
        public PackedB8? Kb8, Vb8;
    }

    private Arena ArenaFor(int B)
    {
        if (_arenas.TryGetValue(B, out var a)) return a;
        var c = _p.Vit;
        int N = c.NumTokens, D = c.EmbedDim, Hd = c.MlpHidden, cpp = c.InChans * c.PatchSize * c.PatchSize;
        int rows = B * N;
        a = new Arena
        {
            X = new float[rows * D], H = new float[rows * D], Qkv = new float[rows * 3 * D], Ctx = new float[rows * D], Y = new float[rows * D],
            Mlp = new float[rows * Hd], Patches = new float[B * c.NumPatches * Math.Max(cpp, D)], Mean = new float[rows], Rstd = new float[rows],
            Pooled = new float[2 * B * D], Logits = new float[B * c.NumClasses], Logits2 = new float[B * c.NumClasses],
            A16 = new short[rows * (Math.Max(D, Hd) + 2)],
            A8 = new byte[rows * (Math.Max(D, Hd) + 4)],
            Qkv16 = new short[rows * 3 * D],
            Qkv8 = new byte[rows * 3 * D],
        };
        _arenas[B] = a;
        return a;
    }

    /// <summary>Logits [B, classes] for normalised images [B, C, H, W]. Throws ViTQuantException on a wrong shape.</summary>
    public Tensor Forward(Tensor images)
    {
        if (_p.Swin != null) return ForwardSwin(images);
        var c = _p.Vit;
        if (images.Rank != 4 || images.Shape[1] != c.InChans || images.Shape[2] != c.ImageSize || images.Shape[3] != c.ImageSize)
            throw new ViTQuantException($"model expects images [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}], got {Tensor.ShapeString(images.Shape)}");
        int B = images.Shape[0];
        var logits = new Tensor(B, c.NumClasses);
        lock (_lock) Run(images.Data, B, logits.Span);
        return logits;
    }

    private void Run(float[] img, int B, Span<float> logits)
    {
        var c = _p.Vit;
        var a = ArenaFor(B);
        int N = c.NumTokens, D = c.EmbedDim, rows = B * N;
        _t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        Embed(img, B, a);
        Mark("embed");
        int tokens = N; // rows per image in a.X: N, or the prefix tokens once the last block drops the others
        for (int bi = 0; bi < _p.Blocks.Length; bi++)
        {
            var blk = _p.Blocks[bi];
            if (RowWisePasses && RowWise(blk))
            {
                // Every op but attention is row-local: run them over chunks of rows, one parallel region per side of
                // the attention instead of one per op, with each chunk's activations staying in cache (identical bits).
                RowChunks(rows, (r0, n, t) =>
                {
                    LayerNormKernel.LayerNormRows(a.X.AsSpan(r0 * D, n * D), blk.Ln1W, blk.Ln1B, a.H.AsSpan(r0 * D, n * D), a.Mean.AsSpan(r0, n), a.Rstd.AsSpan(r0, n), n, D, c.LayerNormEps);
                    t.Lap(0);
                    LinearRows(blk.Qkv, a.H, r0, n, a.Qkv, a);
                    QuantizeQkv(blk.Attn, a.Qkv, r0, n, a);
                    t.Lap(1);
                });
                Attention(blk.Attn, B, a, codesReady: true); // profiled as its attn.* sub-stages
                int after = rows;
                if (bi == _p.Blocks.Length - 1 && HeadRowsOnly && c.GlobalPool != "avg" && c.NumPrefixTokens > 0)
                {
                    // The head reads only the prefix tokens of the last block, and everything after its attention works
                    // row by row (as VisionTransformer's last block): move those rows of the residual stream and of the
                    // attention's output to the front (row b·P + t from b·N + t; each destination at or before its
                    // source and after every earlier source, so in place) and run the rest on B·P rows. The same bits.
                    tokens = c.NumPrefixTokens;
                    after = B * tokens;
                    for (int b = 0; b < B; b++)
                        for (int tk = 0; tk < tokens; tk++)
                        {
                            int src = b * N + tk, dst = b * tokens + tk;
                            if (src == dst) continue;
                            a.X.AsSpan(src * D, D).CopyTo(a.X.AsSpan(dst * D, D));
                            a.Ctx.AsSpan(src * D, D).CopyTo(a.Ctx.AsSpan(dst * D, D));
                        }
                }
                RowChunks(after, (r0, n, t) =>
                {
                    var x = a.X.AsSpan(r0 * D, n * D);
                    LinearRows(blk.Proj, a.Ctx, r0, n, a.Y, a);
                    t.Lap(2);
                    TensorPrimitives.Add(x, a.Y.AsSpan(r0 * D, n * D), x);
                    t.Lap(7);
                    LayerNormKernel.LayerNormRows(x, blk.Ln2W, blk.Ln2B, a.H.AsSpan(r0 * D, n * D), a.Mean.AsSpan(r0, n), a.Rstd.AsSpan(r0, n), n, D, c.LayerNormEps);
                    t.Lap(0);
                    LinearRows(blk.Fc1, a.H, r0, n, a.Mlp, a);
                    t.Lap(3);
                    GeluKernel.Gelu(a.Mlp.AsSpan(r0 * c.MlpHidden, n * c.MlpHidden), a.Mlp.AsSpan(r0 * c.MlpHidden, n * c.MlpHidden));
                    t.Lap(4);
                    LinearRows(blk.Fc2, a.Mlp, r0, n, a.Y, a);
                    t.Lap(5);
                    TensorPrimitives.Add(x, a.Y.AsSpan(r0 * D, n * D), x);
                    t.Lap(7);
                });
                continue;
            }
            LayerNormKernel.LayerNormRows(a.X, blk.Ln1W, blk.Ln1B, a.H, a.Mean, a.Rstd, rows, D, c.LayerNormEps);
            Mark("layernorm");
            Linear(blk.Qkv, a.H, rows, a.Qkv, a, new[] { B, N, D });
            Mark("qkv");
            Attention(blk.Attn, B, a);
            Linear(blk.Proj, a.Ctx, rows, a.Y, a, new[] { B, N, D });
            Mark("proj");
            TensorPrimitives.Add(a.X.AsSpan(0, rows * D), a.Y.AsSpan(0, rows * D), a.X.AsSpan(0, rows * D));
            LayerNormKernel.LayerNormRows(a.X, blk.Ln2W, blk.Ln2B, a.H, a.Mean, a.Rstd, rows, D, c.LayerNormEps);
            Mark("layernorm");
            Linear(blk.Fc1, a.H, rows, a.Mlp, a, new[] { B, N, D });
            Mark("fc1");
            GeluKernel.Gelu(a.Mlp.AsSpan(0, rows * c.MlpHidden), a.Mlp.AsSpan(0, rows * c.MlpHidden));
            Mark("gelu");
            Linear(blk.Fc2, a.Mlp, rows, a.Y, a, new[] { B, N, c.MlpHidden });
            Mark("fc2");
            TensorPrimitives.Add(a.X.AsSpan(0, rows * D), a.Y.AsSpan(0, rows * D), a.X.AsSpan(0, rows * D));
            Mark("residual");
        }
        Head(B, a, logits, tokens);
        Mark("head");
    }

    /// <summary>Run the row-local ops in chunked passes (default); false runs them op by op over all rows (same bits; for A/B timing).</summary>
    internal bool RowWisePasses { get; set; } = true;

    /// <summary>
    /// With token pooling, the row-wise passes of the last block run past its attention on the head's tokens only (Run);
    /// false runs them on every token (same bits; for A/B timing and tests).
    /// </summary>
    internal bool HeadRowsOnly { get; set; } = true;

    /// <summary>Rows per chunk of the row-wise passes: 8 micro-tiles, and a chunk's activations (≈ 0.3 MB with fc1's) stay in L2.</summary>
    private const int RowChunk = 64;

    private static readonly string[] ChunkStages = { "layernorm", "qkv", "proj", "fc1", "gelu", "fc2", "", "residual",
        "attn.q·kᵀ", "attn.softmax", "attn.probs·v" };

    /// <summary>True when every linear layer of the block is integer (row-local quantizers), so the row-wise passes apply.</summary>
    private static bool RowWise(Int8Block blk) =>
        blk.Qkv.Mode == Int8Mode.Integer && blk.Proj.Mode == Int8Mode.Integer && blk.Fc1.Mode == Int8Mode.Integer && blk.Fc2.Mode == Int8Mode.Integer;

    /// <summary>Per-chunk stage timer (profiling only): Lap(i) adds the time since the previous lap to stage i.</summary>
    private sealed class ChunkTimer
    {
        private readonly double[]? _sums;
        private long _t;
        public ChunkTimer(double[]? sums) { _sums = sums; _t = sums == null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp(); }
        public void Lap(int stage)
        {
            if (_sums == null) return;
            long now = System.Diagnostics.Stopwatch.GetTimestamp();
            lock (_sums) _sums[stage] += (now - _t) / (double)System.Diagnostics.Stopwatch.Frequency;
            _t = now;
        }
    }

    /// <summary>
    /// body(r0, n, timer) over chunks of RowChunk rows in parallel (kernels inside run on the calling worker). When
    /// profiling, each stage's summed worker time divided by the worker count is added to StageSeconds.
    /// </summary>
    private void RowChunks(int rows, Action<int, int, ChunkTimer> body) => Timed((rows + RowChunk - 1) / RowChunk, (ci, t) =>
    {
        int r0 = ci * RowChunk;
        body(r0, Math.Min(RowChunk, rows - r0), t);
    });

    /// <summary>body(i, timer) for i &lt; count in parallel; when profiling, stage times as RowChunks.</summary>
    private void Timed(int count, Action<int, ChunkTimer> body)
    {
        int chunks = count;
        double[]? sums = Profile ? new double[ChunkStages.Length] : null;
        Parallelism.For(0, chunks, ci => body(ci, new ChunkTimer(sums)));
        if (sums == null) return;
        long end = System.Diagnostics.Stopwatch.GetTimestamp();
        int workers = Math.Min(chunks, Parallelism.Threads);
        double shares = 0;
        for (int i = 0; i < sums.Length; i++)
        {
            if (sums[i] <= 0) continue;
            StageSeconds[ChunkStages[i]] = StageSeconds.GetValueOrDefault(ChunkStages[i]) + sums[i] / workers;
            shares += sums[i] / workers;
        }
        // The region's wall time beyond its stages' shares: (the engine's time before the region,) fork/join and waiting
        // for the slowest worker — what a busy or uneven machine costs.
        double wall = (end - _t0) / (double)System.Diagnostics.Stopwatch.Frequency;
        StageSeconds["sync"] = StageSeconds.GetValueOrDefault("sync") + Math.Max(0, wall - shares);
        _t0 = end;
    }

    /// <summary>
    /// Rows [r0, r0 + n) of an integer layer: y[r, Out] = layer(x[r, In]), using the rows' own part of the code buffers.
    /// That part starts at r0 times the widest layer's stride, so chunks at different layers (fc1 in one, fc2 in
    /// another) never share code bytes.
    /// </summary>
    private void LinearRows(Int8Linear l, float[] x, int r0, int n, float[] y, Arena a)
    {
        var xs = x.AsSpan(r0 * l.In, n * l.In);
        var ys = y.AsSpan(r0 * l.Out, n * l.Out);
        int wide = Math.Max(_p.Vit.EmbedDim, _p.Vit.MlpHidden);
        if (l.Packed8 != null && Int8Gemm.Path == IntGemmPath.Avx512Vnni)
        {
            int lda8 = l.Packed8.Kq * 4;
            var a8 = a.A8.AsSpan(r0 * (wide + 4), n * lda8);
            ActQuantize.RowsU8(xs, l.In, n, l.In, a8, lda8, lda8, l.Grid);
            Int8GemmVnni.Gemm(a8, lda8, n, l.Packed8, l.Corr, l.Scale, l.BiasPadded, ys, l.Out);
            return;
        }
        int lda = l.Packed!.Kp;
        var a16 = a.A16.AsSpan(r0 * (wide + 2), n * lda);
        ActQuantize.Rows(xs, l.In, n, l.In, a16, lda, l.Grid);
        Int8Gemm.Gemm(a16, lda, n, l.Packed, l.Scale, l.BiasPadded, ys, l.Out);
    }

    /// <summary>
    /// im2col of the images [B, C, S, S] into rows (b, gy, gx) × columns (ch, py, px), the flattened conv weight's
    /// order — the image itself, or its fake-quantized values when the plan quantizes it (exactly as the simulation).
    /// The image is read in place (a copy of a DeiT batch is 4.8 MB, a large-object allocation every call: measured
    /// with the im2col at 3.2 ms of DeiT-Tiny's 6.4 ms embedding); one image row of patches per task, span copies
    /// (Array.Copy's call cost dominated 16-float rows).
    /// </summary>
    private void Im2Col(float[] img, int B, float[] patches)
    {
        var c = _p.Config;
        int C = c.InChans, S = c.ImageSize, P = c.PatchSize, G = S / P, cpp = C * P * P;
        float[] src = img;
        if (_p.PatchInputQ != null)
        {
            using var _ = Autograd.NoGrad();
            src = _p.PatchInputQ.Forward(Tensor.FromArray(img.AsSpan(0, B * C * S * S), B, C, S, S)).ToArray();
        }
        Parallelism.ForChunks(B * G, 8, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                int b = r / G, gy = r % G;
                for (int gx = 0; gx < G; gx++)
                {
                    var dst = patches.AsSpan(((b * G + gy) * G + gx) * cpp, cpp);
                    for (int ch = 0; ch < C; ch++)
                        for (int py = 0; py < P; py++)
                            src.AsSpan(((b * C + ch) * S + gy * P + py) * S + gx * P, P).CopyTo(dst.Slice((ch * P + py) * P, P));
                }
            }
        });
    }

    /// <summary>Patch embedding as an im2col float GEMM, prefix tokens, position embedding.</summary>
    private void Embed(float[] img, int B, Arena a)
    {
        var c = _p.Vit;
        int C = c.InChans, S = c.ImageSize, P = c.PatchSize, G = c.GridSize, Np = c.NumPatches, D = c.EmbedDim, N = c.NumTokens, pre = c.NumPrefixTokens;
        int cpp = C * P * P;
        var patches = a.Patches;
        Im2Col(img, B, patches);
        var tok = a.Y; // [B·Np, D]
        Gemm.Sgemm(false, true, B * Np, D, cpp, 1f, patches, cpp, _p.PatchW, cpp, 0f, tok, D);
        Parallelism.ForChunks(B, 1, (b0, b1) =>
        {
            for (int b = b0; b < b1; b++)
            {
                var xb = a.X.AsSpan(b * N * D, N * D);
                if (_p.Cls != null) _p.Cls.AsSpan().CopyTo(xb[..D]);
                if (_p.Dist != null) _p.Dist.AsSpan().CopyTo(xb.Slice(D, D));
                for (int t = 0; t < Np; t++)
                    TensorPrimitives.Add(tok.AsSpan((b * Np + t) * D, D), _p.PatchB, xb.Slice((pre + t) * D, D));
                TensorPrimitives.Add(xb, _p.Pos.AsSpan(0, N * D), xb);
            }
        });
    }

    /// <summary>y[rows, Out] = layer(x[rows, In]) (integer or float mode); shape is x's logical shape for fake quantizers.</summary>
    private void Linear(Int8Linear l, float[] x, int rows, float[] y, Arena a, int[] shape)
    {
        if (l.Mode == Int8Mode.Integer && l.Packed8 != null && Int8Gemm.Path == IntGemmPath.Avx512Vnni)
        {
            int lda8 = l.Packed8.Kq * 4;
            ActQuantize.RowsU8(x, l.In, rows, l.In, a.A8, lda8, lda8, l.Grid);
            Int8GemmVnni.Gemm(a.A8, lda8, rows, l.Packed8, l.Corr, l.Scale, l.BiasPadded, y, l.Out);
            return;
        }
        if (l.Mode == Int8Mode.Integer)
        {
            int lda = l.Packed!.Kp;
            ActQuantize.Rows(x, l.In, rows, l.In, a.A16, lda, l.Grid);
            Int8Gemm.Gemm(a.A16, lda, rows, l.Packed, l.Scale, l.BiasPadded, y, l.Out);
            return;
        }
        float[] xin = x;
        if (l.InputQuantizer != null) xin = FakeQuant(l.InputQuantizer, x, rows * l.In, shape);
        Gemm.Sgemm(false, true, rows, l.Out, l.In, 1f, xin, l.In, l.Weight!, l.In, 0f, y, l.Out);
        for (int r = 0; r < rows; r++) TensorPrimitives.Add(y.AsSpan(r * l.Out, l.Out), l.Bias, y.AsSpan(r * l.Out, l.Out));
    }

    /// <summary>The plan's quantizer applied to the first n values of x viewed as shape (a fresh array).</summary>
    private static float[] FakeQuant(Quantizer q, float[] x, int n, int[] shape)
    {
        using var _ = Autograd.NoGrad();
        return q.Forward(Tensor.FromArray(x.AsSpan(0, n), shape)).ToArray();
    }

    /// <summary>
    /// Which code buffers the attention products read: unsigned bytes (AVX-512 VNNI: head widths a multiple of 4, 8-bit
    /// grids) for q·kᵀ and/or probs·v, and int16 (even head widths) for an integer product not on bytes.
    /// </summary>
    private (bool Qk8, bool Pv8, bool Use16) AttnOperands(Int8Attention at)
    {
        int dh = _p.Vit.HeadDim;
        bool vnni = Int8Gemm.Path == IntGemmPath.Avx512Vnni && dh % 4 == 0;
        bool qk8 = vnni && at.QkInteger && Fits8(at.Q) && Fits8(at.K), pv8 = vnni && at.PvInteger && Fits8(at.P) && Fits8(at.V);
        return (qk8, pv8, dh % 2 == 0 && !(qk8 && pv8));
    }

    /// <summary>
    /// Rows [r0, r0 + n) of q, k and v quantised into the batch-wide code buffers the products read (AttnOperands).
    /// With an even head width every head's slice of such a buffer is a ready GEMM operand (no odd-K pad).
    /// </summary>
    private void QuantizeQkv(Int8Attention at, float[] qkv, int r0, int n, Arena a)
    {
        int D = _p.Vit.EmbedDim, ld = 3 * D, o = r0 * ld;
        var (qk8, pv8, use16) = AttnOperands(at);
        if (qk8)
        {
            ActQuantize.RowsU8(qkv.AsSpan(o), ld, n, D, a.Qkv8.AsSpan(o), ld, D, at.Q);
            ActQuantize.RowsU8(qkv.AsSpan(o + D), ld, n, D, a.Qkv8.AsSpan(o + D), ld, D, at.K);
        }
        if (pv8) ActQuantize.RowsU8(qkv.AsSpan(o + 2 * D), ld, n, D, a.Qkv8.AsSpan(o + 2 * D), ld, D, at.V);
        if (!use16) return;
        if (at.QkInteger && !qk8)
        {
            ActQuantize.Rows(qkv.AsSpan(o), ld, n, D, a.Qkv16.AsSpan(o), ld, at.Q);
            ActQuantize.Rows(qkv.AsSpan(o + D), ld, n, D, a.Qkv16.AsSpan(o + D), ld, at.K);
        }
        if (at.PvInteger && !pv8) ActQuantize.Rows(qkv.AsSpan(o + 2 * D), ld, n, D, a.Qkv16.AsSpan(o + 2 * D), ld, at.V);
    }

    /// <summary>Both attention products of every (image, head); codesReady: the row-wise pass already quantised q, k, v.</summary>
    private void Attention(Int8Attention at, int B, Arena a, bool codesReady = false)
    {
        var c = _p.Vit;
        int N = c.NumTokens, D = c.EmbedDim, H = c.NumHeads, dh = c.HeadDim;
        float attnScale = 1f / MathF.Sqrt(dh);
        if (at.QkInteger) Array.Fill(_qkScale, at.Q.Scale * at.K.Scale * attnScale, 0, N);
        if (at.PvInteger) Array.Fill(_pvScale, at.P.Scale * at.V.Scale, 0, dh);
        float[] qkv = a.Qkv, ctx = a.Ctx;
        // With an even head width every head's slice of the batch-wide code buffer is a ready GEMM operand
        // (no odd-K pad), so q, k and v are quantised in three wide passes instead of three per head.
        // AVX-512 VNNI: both products on unsigned-byte codes (head widths a multiple of 4, 8-bit grids).
        var (qk8, pv8, use16) = AttnOperands(at);
        short[]? qkv16 = use16 ? a.Qkv16 : null;
        if (!codesReady)
        {
            QuantizeQkv(at, qkv, 0, B * N, a);
            Mark("attn.codes");
        }
        Timed(B * H, (t, timer) =>
        {
            int b = t / H, h = t % H;
            if (!_scratch.TryTake(out var s)) s = NewScratch();
            try { AttendHead(at, b, h, qkv, qkv16, qk8 || pv8 ? a.Qkv8 : null, qk8, pv8, ctx, s, attnScale, timer); }
            finally { _scratch.Add(s); }
        });
    }

    private AttnScratch NewScratch()
    {
        var c = _p.Vit;
        int N = c.NumTokens, dh = c.HeadDim;
        return new AttnScratch
        {
            Q16 = new short[N * (dh + 1)], K16 = new short[N * (dh + 1)], V16 = new short[N * (dh + 1)], P16 = new short[N * (N + 1)],
            Logits = new float[N * N], Fq = new float[N * dh], Fk = new float[N * dh], Fv = new float[N * dh],
            P8 = new byte[N * ((N + 3) & ~3)], RowQ = new int[N], RowP = new int[N],
            ColK = new int[(N + Int8Gemm.NR - 1) / Int8Gemm.NR * Int8Gemm.NR], ColV = new int[(dh + Int8Gemm.NR - 1) / Int8Gemm.NR * Int8Gemm.NR],
        };
    }

    private static bool Fits8(ActGrid g) => g.QMax - g.QMin <= 255;

    private void AttendHead(Int8Attention at, int b, int h, float[] qkv, short[]? qkv16, byte[]? qkv8, bool qk8, bool pv8, float[] ctx, AttnScratch s, float attnScale, ChunkTimer timer)
    {
        var c = _p.Vit;
        int N = c.NumTokens, D = c.EmbedDim, dh = c.HeadDim, ld = 3 * D;
        int qOff = b * N * ld + h * dh, kOff = qOff + D, vOff = qOff + 2 * D;
        var logits = s.Logits;
        if (qk8)
        {
            // Σ_d (u_q − z_q')(u_k − z_k') with the kernel's B' = u_k − 128 (file Int8GemmVnni.cs):
            //   = Σ u_q·B' + [(128 − z_k')·Σ_d u_q + dh·z_q'·z_k'] (row term) − z_q'·Σ_d u_k (column term).
            int zq = at.Q.ZeroU, zk = at.K.ZeroU;
            s.Kb8 = PackedB8.For(dh, N, s.Kb8);
            s.Kb8.PackShiftedColumns(qkv8.AsSpan(kOff), ld);
            Int8GemmVnni.RowSums(qkv8.AsSpan(qOff), ld, N, dh, s.RowQ);
            for (int r = 0; r < N; r++) s.RowQ[r] = (128 - zk) * s.RowQ[r] + dh * zq * zk;
            for (int j = 0; j < N; j++) s.ColK[j] = -zq * s.Kb8.ColumnSums[j];
            Int8GemmVnni.Gemm(qkv8.AsSpan(qOff), ld, N, s.Kb8, s.RowQ, s.ColK, _qkScale, _zerosN, logits, N);
        }
        else if (at.QkInteger && qkv16 != null)
        {
            s.Kb = PackedB.FromRowsOfColumns(qkv16.AsSpan(kOff), N, dh, ld, s.Kb);
            Int8Gemm.Gemm(qkv16.AsSpan(qOff), ld, N, s.Kb, _qkScale, _zerosN, logits, N);
        }
        else if (at.QkInteger)
        {
            int ldq = (dh + 1) & ~1;
            ActQuantize.Rows(qkv.AsSpan(qOff), ld, N, dh, s.Q16, ldq, at.Q);
            ActQuantize.Rows(qkv.AsSpan(kOff), ld, N, dh, s.K16, ldq, at.K);
            s.Kb = PackedB.FromRowsOfColumns(s.K16, N, dh, ldq, s.Kb);
            Int8Gemm.Gemm(s.Q16, ldq, N, s.Kb, _qkScale, _zerosN, logits, N);
        }
        else
        {
            var q = Slice(qkv, qOff, ld, N, dh, s.Fq, at.Qq);
            var k = Slice(qkv, kOff, ld, N, dh, s.Fk, at.Kq);
            Gemm.Sgemm(false, true, N, N, dh, 1f, q, dh, k, dh, 0f, logits, N);
            TensorPrimitives.Multiply(logits.AsSpan(0, N * N), attnScale, logits.AsSpan(0, N * N));
        }
        timer.Lap(8);
        SoftmaxKernel.SoftmaxRows(logits, logits, N, N);
        timer.Lap(9);
        var outSpan = ctx.AsSpan(b * N * D + h * dh);
        if (pv8)
        {
            // Σ_j (u_p − z_p')(u_v − z_v') = Σ u_p·B' + [(128 − z_v')·Σ_j u_p + N·z_p'·z_v'] − z_p'·Σ_j u_v.
            int ldp = (N + 3) & ~3, zp = at.P.ZeroU, zv = at.V.ZeroU;
            ActQuantize.RowsU8(logits, N, N, N, s.P8, ldp, ldp, at.P);
            s.Vb8 = PackedB8.For(N, dh, s.Vb8);
            s.Vb8.PackShiftedRows(qkv8.AsSpan(vOff), ld);
            Int8GemmVnni.RowSums(s.P8, ldp, N, N, s.RowP);
            for (int r = 0; r < N; r++) s.RowP[r] = (128 - zv) * s.RowP[r] + N * zp * zv;
            for (int j = 0; j < dh; j++) s.ColV[j] = -zp * s.Vb8.ColumnSums[j];
            Int8GemmVnni.Gemm(s.P8, ldp, N, s.Vb8, s.RowP, s.ColV, _pvScale, _zerosDh, outSpan, D);
        }
        else if (at.PvInteger)
        {
            int ldp = (N + 1) & ~1;
            ActQuantize.Rows(logits, N, N, N, s.P16, ldp, at.P);
            if (qkv16 != null) s.Vb = PackedB.FromRows(qkv16.AsSpan(vOff), N, dh, ld, s.Vb);
            else
            {
                int ldv = (dh + 1) & ~1; // room for the odd-width pad the quantiser writes (unused as a B operand)
                ActQuantize.Rows(qkv.AsSpan(vOff), ld, N, dh, s.V16, ldv, at.V);
                s.Vb = PackedB.FromRows(s.V16, N, dh, ldv, s.Vb);
            }
            Int8Gemm.Gemm(s.P16, ldp, N, s.Vb, _pvScale, _zerosDh, outSpan, D);
        }
        else
        {
            float[] probs = logits;
            if (at.Pq != null) probs = FakeQuant(at.Pq, logits, N * N, new[] { 1, 1, N, N });
            var v = Slice(qkv, vOff, ld, N, dh, s.Fv, at.Vq);
            Gemm.Sgemm(false, false, N, dh, N, 1f, probs, N, v, dh, 0f, outSpan, D);
        }
        timer.Lap(10);
    }

    /// <summary>One head's q, k or v [N, dh] copied out of qkv (fake-quantized when the plan says so).</summary>
    private static float[] Slice(float[] qkv, int off, int ld, int N, int dh, float[] dst, Quantizer? q)
    {
        for (int n = 0; n < N; n++) Array.Copy(qkv, off + n * ld, dst, n * dh, dh);
        return q == null ? dst : FakeQuant(q, dst, N * dh, new[] { 1, 1, N, dh });
    }

    /// <summary>Final norm, pooling and the head(s); a.X holds <paramref name="N"/> rows per image (all tokens, or the prefix ones).</summary>
    private void Head(int B, Arena a, Span<float> logits, int N)
    {
        var c = _p.Vit;
        int D = c.EmbedDim, K = c.NumClasses;
        var pooled = a.Pooled;
        if (c.GlobalPool == "avg")
        {
            var mean = new float[B * D];
            for (int b = 0; b < B; b++)
            {
                var m = mean.AsSpan(b * D, D);
                for (int t = c.NumPrefixTokens; t < N; t++) TensorPrimitives.Add(m, a.X.AsSpan((b * N + t) * D, D), m);
                TensorPrimitives.Divide(m, c.NumPatches, m);
            }
            LayerNormKernel.LayerNormRows(mean, _p.NormW, _p.NormB, pooled, a.Mean, a.Rstd, B, D, c.LayerNormEps);
        }
        else
        {
            int tokens = c.Distilled ? 2 : 1;
            var sel = new float[B * tokens * D];
            for (int b = 0; b < B; b++)
                for (int t = 0; t < tokens; t++) a.X.AsSpan((b * N + t) * D, D).CopyTo(sel.AsSpan((t * B + b) * D, D));
            LayerNormKernel.LayerNormRows(sel, _p.NormW, _p.NormB, pooled, a.Mean, a.Rstd, B * tokens, D, c.LayerNormEps);
        }
        Linear(_p.Head, pooled, B, a.Logits, a, new[] { B, D });
        if (_p.HeadDist != null)
        {
            var dist = pooled.AsSpan(B * D, B * D).ToArray();
            Linear(_p.HeadDist, dist, B, a.Logits2, a, new[] { B, D });
            TensorPrimitives.Add(a.Logits.AsSpan(0, B * K), a.Logits2.AsSpan(0, B * K), a.Logits.AsSpan(0, B * K));
            TensorPrimitives.Multiply(a.Logits.AsSpan(0, B * K), 0.5f, a.Logits.AsSpan(0, B * K));
        }
        a.Logits.AsSpan(0, B * K).CopyTo(logits);
    }
}
