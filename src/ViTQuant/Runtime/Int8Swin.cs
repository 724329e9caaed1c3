// The integer runtime on Swin (SwinTransformer.cs has the float math; Int8Plan.cs the per-layer rules, which are
// the same here). The plan keeps what the forward needs per block: the four linear layers (integer or float mode,
// as for the ViT), the attention products' grids, the relative position bias already gathered from its table
// [heads, M², M²] and the shifted-window mask [nW, M², M²]; per stage the patch merging's norm and reduction.
//
// Forward, op by op over the whole batch (each op parallel inside: the linear layers over rows, the attention
// over (window, head)): patch embedding (float im2col GEMM, NHWC) → its LayerNorm → stages: (s > 0) merging:
// gather 2×2 neighbours of the zero-padded map in timm's order, LayerNorm, reduction; blocks: LayerNorm →
// windows of the rolled, zero-padded map gathered straight from the normalised map (the roll and the padding
// are index arithmetic, no copies of the whole map) → qkv → per (window, head) q·kᵀ (integer when the plan
// quantizes q and k per tensor), ·dh^-½ + bias (+ mask) in float, softmax, probs·v (integer when probs and v are)
// → heads merged → proj → scattered back to the un-rolled map and added to the residual; MLP as the ViT's;
// → final LayerNorm → mean over the map → head.fc.
// The attention products use the int16-pair kernels (Int8Gemm) on every CPU; the linear layers use the same
// Linear as the ViT path (VNNI bytes where the CPU has them). Same order of float operations as the simulation
// wherever the simulation computes in float, so the engine matches it within the rounding of the integer sums.
using System.Collections.Concurrent;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace ViTQuant.Runtime;

/// <summary>One Swin block as the runtime runs it.</summary>
internal sealed class SwinInt8Block
{
    public required float[] Ln1W, Ln1B, Ln2W, Ln2B;
    public required Int8Linear Qkv, Proj, Fc1, Fc2;
    public required Int8Attention Attn;
    public required int Window, Shift, Heads;
    /// <summary>Relative position bias [heads, M², M²]; mask [nW, M², M²] or null without shift.</summary>
    public required float[] Bias;
    public float[]? Mask;
    /// <summary>The integer products' dequantisation scales (Δq·Δk per key, Δp·Δv per column) and zero biases, padded to panels.</summary>
    public required float[] QkScale, PvScale, ZerosN, ZerosDh;
}

/// <summary>The Swin part of a plan: stages of (optional merging, blocks), final norm.</summary>
internal sealed class SwinInt8Part
{
    public required float[] PatchNormW, PatchNormB, NormW, NormB;
    public required (float[]? NormW, float[]? NormB, Int8Linear? Reduction, SwinInt8Block[] Blocks)[] Stages;
}

public sealed partial class Int8Plan
{
    /// <summary>The Swin stages (null for a ViT/DeiT plan).</summary>
    internal SwinInt8Part? Swin;

    private static Int8Plan CompileSwin(QuantizedModel qm, SwinTransformer m)
    {
        var c = m.Config;
        var p = new Int8Plan(c, qm.Plan.Name) { PatchW = m.PatchWeight.ToArray(), PatchB = m.PatchBias.ToArray() };
        p.AddPatchEmbedding(qm, (long)c.GridSize * c.GridSize * c.EmbedDim * c.InChans * c.PatchSize * c.PatchSize);
        Int8Linear L(string name, Nn.Linear lin, long rows) => p.AddLinear(qm, name, lin, rows);
        var stages = new (float[]?, float[]?, Int8Linear?, SwinInt8Block[])[c.NumStages];
        for (int s = 0; s < c.NumStages; s++)
        {
            var st = m.Stages[s];
            long r = c.ActualResolution(s);
            Int8Linear? red = st.Reduction != null ? L($"layers.{s}.downsample.reduction", st.Reduction, r * r) : null;
            var blocks = new SwinInt8Block[st.Blocks.Count];
            for (int b = 0; b < blocks.Length; b++)
            {
                var blk = st.Blocks[b];
                string pre = $"layers.{s}.blocks.{b}";
                int M = blk.Window, N = M * M, H = c.NumHeads[s], dh = c.StageDim(s) / H, Rp = ((int)r + M - 1) / M * M;
                long windowTokens = (long)Rp * Rp;
                var qkv = L($"{pre}.attn.qkv", blk.Qkv, windowTokens);
                var attn = p.AddAttention(qm, pre, windowTokens * N * c.StageDim(s));
                // bias [H, N, N] = table[relative_position_index] permuted (2, 0, 1), as the model computes it
                var table = blk.RelativePositionBiasTable.Data;
                var index = SwinWindows.RelativePositionIndex(M);
                var bias = new float[H * N * N];
                for (int i = 0; i < N * N; i++)
                    for (int h = 0; h < H; h++) bias[h * N * N + i] = table[index[i] * H + h];
                float[]? mask = null;
                if (blk.Shift > 0)
                {
                    var t = SwinWindows.ShiftMask(c.DeclaredResolution(s), M, blk.Shift);
                    if (t.Shape[0] != (Rp / M) * (Rp / M))
                        throw new ViTQuantException($"{pre}: a {r}×{r} map has {(Rp / M) * (Rp / M)} windows of {M}×{M}, the shifted-window mask was built for {t.Shape[0]}");
                    mask = t.ToArray();
                }
                blocks[b] = new SwinInt8Block
                {
                    Ln1W = blk.Norm1.Weight.ToArray(), Ln1B = blk.Norm1.Bias.ToArray(), Ln2W = blk.Norm2.Weight.ToArray(), Ln2B = blk.Norm2.Bias.ToArray(),
                    Qkv = qkv, Attn = attn, Proj = L($"{pre}.attn.proj", blk.Proj, windowTokens),
                    Fc1 = L($"{pre}.mlp.fc1", blk.Fc1, r * r), Fc2 = L($"{pre}.mlp.fc2", blk.Fc2, r * r),
                    Window = M, Shift = blk.Shift, Heads = H, Bias = bias, Mask = mask,
                    QkScale = Int8Gemm.PadToPanels(Enumerable.Repeat(attn.QkInteger ? attn.Q.Scale * attn.K.Scale : 0f, N).ToArray(), N),
                    PvScale = Int8Gemm.PadToPanels(Enumerable.Repeat(attn.PvInteger ? attn.P.Scale * attn.V.Scale : 0f, dh).ToArray(), dh),
                    ZerosN = Int8Gemm.PadToPanels(new float[N], N), ZerosDh = Int8Gemm.PadToPanels(new float[dh], dh),
                };
            }
            stages[s] = (st.MergeNorm?.Weight.ToArray(), st.MergeNorm?.Bias.ToArray(), red, blocks);
        }
        p.Head = L("head.fc", m.Head, 1);
        p.Swin = new SwinInt8Part
        {
            PatchNormW = m.PatchNorm.Weight.ToArray(), PatchNormB = m.PatchNorm.Bias.ToArray(),
            NormW = m.Norm.Weight.ToArray(), NormB = m.Norm.Bias.ToArray(), Stages = stages,
        };
        return p;
    }
}

public sealed partial class Int8Engine
{
    // Swin's buffers, by purpose, grown to the largest size any stage or batch asked for and then reused (fresh
    // multi-megabyte arrays on every call cost more than the arithmetic: page faults and zeroing, measured on Swin-T).
    private readonly Dictionary<string, Array> _swinBuffers = new();

    private T[] Buf<T>(string key, long size)
    {
        if (_swinBuffers.TryGetValue(key, out var b) && b.Length >= size) return (T[])b;
        var a = new T[size];
        _swinBuffers[key] = a;
        return a;
    }

    private Tensor ForwardSwin(Tensor images)
    {
        var c = (SwinConfig)_p.Config;
        if (images.Rank != 4 || images.Shape[1] != c.InChans || images.Shape[2] != c.ImageSize || images.Shape[3] != c.ImageSize)
            throw new ViTQuantException($"model expects images [B, {c.InChans}, {c.ImageSize}, {c.ImageSize}], got {Tensor.ShapeString(images.Shape)}");
        int B = images.Shape[0];
        var logits = new Tensor(B, c.NumClasses);
        lock (_lock) RunSwin(images.Data, B, logits.Span);
        return logits;
    }

    private void RunSwin(float[] img, int B, Span<float> logits)
    {
        var c = (SwinConfig)_p.Config;
        var sw = _p.Swin!;
        int G = c.GridSize, D = c.EmbedDim, cpp = c.InChans * c.PatchSize * c.PatchSize;
        _t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        // Code buffers of the linear layers, sized for the widest input over the largest row count.
        int maxIn = 0;
        long maxRows = 0;
        for (int s = 0; s < c.NumStages; s++)
        {
            int r = c.ActualResolution(s), M = c.StageWindow(s), Rp = (r + M - 1) / M * M;
            maxRows = Math.Max(maxRows, (long)B * Rp * Rp);
            maxIn = Math.Max(maxIn, Math.Max(4 * c.StageDim(Math.Max(0, s - 1)), c.MlpHidden(s)));
        }
        var a = new Arena { A16 = Buf<short>("a16", maxRows * (maxIn + 2)), A8 = Buf<byte>("a8", maxRows * (maxIn + 4)) };

        // Patch embedding: the ViT path's im2col rows are (b, gy, gx), so tokens come out as the NHWC map.
        var patches = Buf<float>("patches", (long)B * G * G * cpp);
        Im2Col(img, B, patches);
        int rows = B * G * G;
        var tok = Buf<float>("tok", (long)rows * D);
        Gemm.SgemmBias(false, true, rows, D, cpp, 1f, patches, cpp, _p.PatchW, cpp, _p.PatchB, tok, D);
        var x = Buf<float>("x0", (long)rows * D);
        Norm(tok, rows, D, sw.PatchNormW, sw.PatchNormB, c.LayerNormEps, x);
        Mark("embed");
        int res = G, C = D;
        string cur = "x0";
        for (int s = 0; s < c.NumStages; s++)
        {
            var (mw, mb, red, blocks) = sw.Stages[s];
            if (red != null)
            {
                cur = cur == "x0" ? "x1" : "x0";
                x = Merge(x, B, res, C, mw!, mb!, red, c.LayerNormEps, a, cur);
                res = (res + 1) / 2;
                C = red.Out;
                Mark("merge");
            }
            foreach (var blk in blocks) SwinBlockForward(blk, x, B, res, C, c.LayerNormEps, a);
        }
        // final norm per pixel, mean over the map, head.fc
        var n = Buf<float>("h", (long)B * res * res * C);
        Norm(x, B * res * res, C, sw.NormW, sw.NormB, c.LayerNormEps, n);
        var pooled = new float[B * C];
        for (int b = 0; b < B; b++)
        {
            var m = pooled.AsSpan(b * C, C);
            for (int t = 0; t < res * res; t++) TensorPrimitives.Add(m, n.AsSpan((b * res * res + t) * C, C), m);
            TensorPrimitives.Divide(m, res * res, m);
        }
        var y = new float[B * c.NumClasses];
        Linear(_p.Head, pooled, B, y, a, new[] { B, C });
        y.AsSpan().CopyTo(logits);
        Mark("head");
    }

    private void Norm(float[] x, int rows, int C, float[] w, float[] b, float eps, float[] y) =>
        LayerNormKernel.LayerNormRows(x, w, b, y, Buf<float>("mean", rows), Buf<float>("rstd", rows), rows, C, eps);

    /// <summary>timm's PatchMerging on [B, r, r, C]: zero-pad an odd map, gather 2×2 neighbours ((dx, dy, C) order), norm, reduce.</summary>
    private float[] Merge(float[] x, int B, int r, int C, float[] nw, float[] nb, Int8Linear red, float eps, Arena a, string outKey)
    {
        int R = (r + 1) / 2, C4 = 4 * C;
        var g = Buf<float>("merge", (long)B * R * R * C4);
        Parallelism.ForChunks(B * R, 4, (r0, r1) =>
        {
            for (int bi = r0; bi < r1; bi++)
                for (int j = 0; j < R; j++)
                {
                    int b = bi / R, i = bi % R;
                    var dst = g.AsSpan((bi * R + j) * C4, C4);
                    for (int dx = 0; dx < 2; dx++)
                        for (int dy = 0; dy < 2; dy++)
                        {
                            int y = 2 * i + dy, xx = 2 * j + dx;
                            var d = dst.Slice((dx * 2 + dy) * C, C);
                            if (y < r && xx < r) x.AsSpan(((b * r + y) * r + xx) * C, C).CopyTo(d);
                            else d.Clear(); // the zero padding of an odd map
                        }
                }
        });
        var n = Buf<float>("merge_norm", (long)B * R * R * C4);
        Norm(g, B * R * R, C4, nw, nb, eps, n);
        var outp = Buf<float>(outKey, (long)B * R * R * red.Out);
        Linear(red, n, B * R * R, outp, a, new[] { B, R, R, C4 });
        return outp;
    }

    /// <summary>One block on the map x [B, r, r, C], in place.</summary>
    private void SwinBlockForward(SwinInt8Block blk, float[] x, int B, int r, int C, float eps, Arena a)
    {
        int M = blk.Window, N = M * M, shift = blk.Shift, Rp = (r + M - 1) / M * M, nw = Rp / M, W = nw * nw, Bw = B * W;
        // attention half: windows of the rolled, zero-padded, normalised map
        var h = Buf<float>("h", (long)B * r * r * C);
        Norm(x, B * r * r, C, blk.Ln1W, blk.Ln1B, eps, h);
        var win = Buf<float>("win", (long)Bw * N * C);
        // Token i of window (wy, wx) sits at (y, x) = (wy·M + i / M, wx·M + i % M) of the rolled map; rows and
        // columns ≥ r are padding (zeros); the rolled map's (y, x) is the map's ((y + shift) mod r, (x + shift) mod r).
        int Src(int y, int xx) => y >= r || xx >= r ? -1 : ((y + shift) % r) * r + (xx + shift) % r;
        Parallelism.ForChunks(Bw, 1, (w0, w1) =>
        {
            for (int bw = w0; bw < w1; bw++)
            {
                int b = bw / W, wy = bw % W / nw, wx = bw % nw;
                for (int i = 0; i < N; i++)
                {
                    int src = Src(wy * M + i / M, wx * M + i % M);
                    var d = win.AsSpan((bw * N + i) * C, C);
                    if (src >= 0) h.AsSpan((b * r * r + src) * C, C).CopyTo(d);
                    else d.Clear();
                }
            }
        });
        Mark("windows");
        var qkv = Buf<float>("qkv", (long)Bw * N * 3 * C);
        // The plan's quantizer at a post-LayerNorm point sees the image's tokens [B, nW·M², C] (SwinBlock.Tokens), so
        // a per-patch grid applies per window position of the image, as in the simulation.
        Linear(blk.Qkv, win, Bw * N, qkv, a, new[] { B, W * N, C });
        Mark("qkv");
        var ctx = Buf<float>("ctx", (long)Bw * N * C);
        WindowAttention(blk, qkv, Bw, W, N, C, ctx);
        Mark("attention");
        var o = Buf<float>("win", (long)Bw * N * C); // the windows' buffer is free again
        Linear(blk.Proj, ctx, Bw * N, o, a, new[] { Bw, N, C });
        Mark("proj");
        // back to the map (crop the padding, roll back) and the residual; each map pixel is one window token
        Parallelism.ForChunks(Bw, 1, (w0, w1) =>
        {
            for (int bw = w0; bw < w1; bw++)
            {
                int b = bw / W, wy = bw % W / nw, wx = bw % nw;
                for (int i = 0; i < N; i++)
                {
                    int dst = Src(wy * M + i / M, wx * M + i % M);
                    if (dst >= 0) TensorPrimitives.Add(x.AsSpan((b * r * r + dst) * C, C), o.AsSpan((bw * N + i) * C, C), x.AsSpan((b * r * r + dst) * C, C));
                }
            }
        });
        Mark("residual");
        // MLP half
        int rows = B * r * r, Hd = blk.Fc1.Out;
        Norm(x, rows, C, blk.Ln2W, blk.Ln2B, eps, h);
        var f1 = Buf<float>("f1", (long)rows * Hd);
        Linear(blk.Fc1, h, rows, f1, a, new[] { B, r * r, C });
        Mark("fc1");
        GeluKernel.Gelu(f1.AsSpan(0, rows * Hd), f1.AsSpan(0, rows * Hd));
        Mark("gelu");
        var f2 = Buf<float>("f2", (long)rows * C);
        Linear(blk.Fc2, f1, rows, f2, a, new[] { B, r, r, Hd });
        Mark("fc2");
        TensorPrimitives.Add(x.AsSpan(0, rows * C), f2.AsSpan(0, rows * C), x.AsSpan(0, rows * C));
        Mark("residual");
    }

    /// <summary>A (window, head) task's buffers, pooled across tasks and calls.</summary>
    private sealed class SwinAttnScratch
    {
        public float[] Logits = Array.Empty<float>(), Fq = Array.Empty<float>(), Fk = Array.Empty<float>(), Fv = Array.Empty<float>();
        public short[] Q16 = Array.Empty<short>(), K16 = Array.Empty<short>(), V16 = Array.Empty<short>(), P16 = Array.Empty<short>();
        public PackedB? Kb, Vb;

        public void Ensure(int N, int dh)
        {
            int ldq = (dh + 1) & ~1, ldp = (N + 1) & ~1;
            if (Logits.Length < N * N) Logits = new float[N * N];
            if (Fq.Length < N * dh) { Fq = new float[N * dh]; Fk = new float[N * dh]; Fv = new float[N * dh]; }
            if (Q16.Length < N * ldq) { Q16 = new short[N * ldq]; K16 = new short[N * ldq]; V16 = new short[N * ldq]; }
            if (P16.Length < N * ldp) P16 = new short[N * ldp];
        }
    }

    private readonly ConcurrentBag<SwinAttnScratch> _swinScratch = new();

    /// <summary>Every (window, head): q·kᵀ, ·dh^-½ + bias (+ mask), softmax, ·v into ctx [Bw·N, C] at the head's columns.</summary>
    private void WindowAttention(SwinInt8Block blk, float[] qkv, int Bw, int W, int N, int C, float[] ctx)
    {
        var at = blk.Attn;
        int H = blk.Heads, dh = C / H, ld = 3 * C, ldq = (dh + 1) & ~1, ldp = (N + 1) & ~1;
        float attnScale = 1f / MathF.Sqrt(dh);
        float[] qkScale = blk.QkScale, pvScale = blk.PvScale, zerosN = blk.ZerosN, zerosDh = blk.ZerosDh;
        // Tasks of (window, head) are tiny at Swin sizes (49 tokens): hand them out in chunks.
        Parallelism.ForChunks(Bw * H, 16, (t0, t1) =>
        {
            if (!_swinScratch.TryTake(out var s)) s = new SwinAttnScratch();
            s.Ensure(N, dh);
            try
            {
                for (int t = t0; t < t1; t++)
                {
                    int bw = t / H, h = t % H, w = bw % W;
                    int qOff = bw * N * ld + h * dh, kOff = qOff + C, vOff = qOff + 2 * C;
                    var logits = s.Logits.AsSpan(0, N * N);
                    if (at.QkInteger)
                    {
                        ActQuantize.Rows(qkv.AsSpan(qOff), ld, N, dh, s.Q16, ldq, at.Q);
                        ActQuantize.Rows(qkv.AsSpan(kOff), ld, N, dh, s.K16, ldq, at.K);
                        s.Kb = PackedB.FromRowsOfColumns(s.K16, N, dh, ldq, s.Kb);
                        // (Σ q·k)·Δq·Δk — the simulation's q·kᵀ of the fake-quantized values up to the float sum's rounding
                        Int8Gemm.Gemm(s.Q16, ldq, N, s.Kb, qkScale, zerosN, logits, N);
                    }
                    else
                    {
                        var q = Slice(qkv, qOff, ld, N, dh, s.Fq, at.Qq);
                        var k = Slice(qkv, kOff, ld, N, dh, s.Fk, at.Kq);
                        Gemm.Sgemm(false, true, N, N, dh, 1f, q, dh, k, dh, 0f, logits, N);
                    }
                    // scores = logits·dh^-½ + bias (+ mask), in the simulation's order
                    TensorPrimitives.Multiply(logits, attnScale, logits);
                    TensorPrimitives.Add(logits, blk.Bias.AsSpan(h * N * N, N * N), logits);
                    if (blk.Mask != null) TensorPrimitives.Add(logits, blk.Mask.AsSpan(w * N * N, N * N), logits);
                    SoftmaxKernel.SoftmaxRows(logits, logits, N, N);
                    var outSpan = ctx.AsSpan(bw * N * C + h * dh);
                    if (at.PvInteger)
                    {
                        ActQuantize.Rows(logits, N, N, N, s.P16, ldp, at.P);
                        ActQuantize.Rows(qkv.AsSpan(vOff), ld, N, dh, s.V16, ldq, at.V);
                        s.Vb = PackedB.FromRows(s.V16, N, dh, ldq, s.Vb);
                        Int8Gemm.Gemm(s.P16, ldp, N, s.Vb, pvScale, zerosDh, outSpan, C);
                    }
                    else
                    {
                        float[] probs = s.Logits;
                        if (at.Pq != null) probs = FakeQuant(at.Pq, s.Logits, N * N, new[] { 1, 1, N, N });
                        var v = Slice(qkv, vOff, ld, N, dh, s.Fv, at.Vq);
                        Gemm.Sgemm(false, false, N, dh, N, 1f, probs, N, v, dh, 0f, outSpan, C);
                    }
                }
            }
            finally { _swinScratch.Add(s); }
        });
    }
}
