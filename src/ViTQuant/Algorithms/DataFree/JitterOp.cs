// The per-iteration augmentation of the pixel optimisers as one fused, differentiable op:
//
//   y[b, c, i, j] = a[b, c] · x[b, c, (i − dy) mod H, src(j)] + t[b, c]
//   src(j) = (j − dx) mod W, or (W − 1 − j − dx) mod W with a horizontal flip
//
// i.e. torch.roll(x, (dy, dx), (2, 3)), then an optional torch.flip(·, (3,)), then a per-(image,
// channel) affine map (MimiQ's offset and colour jitter: (x + o − m)/s = x·(1/s) + (o − m)/s).
// Backward: ∂x[b, c, (i − dy) mod H, src(j)] += a[b, c]·g[b, c, i, j] — a permutation, so no two output
// elements write the same input element and (b, c) planes run in parallel. The reference twin is the
// composition of Ops.Roll, Ops.Flip, Ops.Mul and Ops.Add (tests compare both and their gradients).
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>Roll, optional horizontal flip and per-channel affine jitter of an image batch.</summary>
internal static class JitterOp
{
    /// <summary>
    /// The jittered copy of x [B, C, H, W] (file header). <paramref name="scale"/> and
    /// <paramref name="shift"/> hold B·C values each (row-major over (b, c)) or are null for 1 and 0.
    /// Differentiable in x. Throws ArgumentException for a non-4-D x or wrongly sized scale/shift.
    /// </summary>
    public static Tensor Apply(Tensor x, int dy, int dx, bool flip, float[]? scale = null, float[]? shift = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.Rank != 4) throw new ArgumentException($"jitter: images must be [B, C, H, W], got {Tensor.ShapeString(x.Shape)}");
        int planes = x.Shape[0] * x.Shape[1], H = x.Shape[2], W = x.Shape[3];
        if (scale != null && scale.Length != planes) throw new ArgumentException($"jitter: {scale.Length} scales for {planes} image channels");
        if (shift != null && shift.Length != planes) throw new ArgumentException($"jitter: {shift.Length} shifts for {planes} image channels");
        int sy = Mod(dy, H), sx = Mod(dx, W);
        // Source column of every output column (same for every row and plane).
        var col = new int[W];
        for (int j = 0; j < W; j++) col[j] = Mod((flip ? W - 1 - j : j) - sx, W);
        var y = Tensor.Output(x.Shape);
        float[] xd = x.Data, yd = y.Data;
        Parallelism.ForChunks(planes, 8, (s, e) =>
        {
            for (int p = s; p < e; p++)
            {
                float a = scale?[p] ?? 1f, t = shift?[p] ?? 0f;
                int baseP = p * H * W;
                for (int i = 0; i < H; i++)
                {
                    int src = baseP + Mod(i - sy, H) * W, dst = baseP + i * W;
                    for (int j = 0; j < W; j++) yd[dst + j] = a * xd[src + col[j]] + t;
                }
            }
        });
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("jitter", y, new[] { x }, g =>
        {
            x.GradSpan();
            float[] gx = x.Grad!.Data, gd = g.Data;
            Parallelism.ForChunks(planes, 8, (s, e) =>
            {
                for (int p = s; p < e; p++)
                {
                    float a = scale?[p] ?? 1f;
                    int baseP = p * H * W;
                    for (int i = 0; i < H; i++)
                    {
                        int src = baseP + Mod(i - sy, H) * W, dst = baseP + i * W;
                        for (int j = 0; j < W; j++) gx[src + col[j]] += a * gd[dst + j];
                    }
                }
            });
        });
    }

    /// <summary>Reference twin: the same map composed from the generic ops.</summary>
    public static Tensor Reference(Tensor x, int dy, int dx, bool flip, float[]? scale = null, float[]? shift = null)
    {
        int B = x.Shape[0], C = x.Shape[1];
        var y = Ops.Roll(Ops.Roll(x, dy, 2), dx, 3);
        if (flip) y = Ops.Flip(y, 3);
        if (scale != null) y = Ops.Mul(y, Tensor.FromArray(scale, B, C, 1, 1));
        if (shift != null) y = Ops.Add(y, Tensor.FromArray(shift, B, C, 1, 1));
        return y;
    }

    private static int Mod(int v, int n) => ((v % n) + n) % n;
}
