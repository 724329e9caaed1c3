// Token-layout ops of the transformer: splitting the fused qkv projection into heads, merging heads
// back, prepending class/distillation tokens, and picking one token. Each is a pure index permutation,
// so forward and backward are the same copy loop in opposite directions.
//   B batch, N tokens, C = H·D channels, H heads, D head dim, P prefix tokens.
namespace ViTQuant.Tensors;

internal static partial class Ops
{
    /// <summary>
    /// qkv [B, N, 3·C] laid out as timm's (3, H, D) inner order → (q, k, v), each [B, H, N, D].
    /// Throws ArgumentException when the last dimension is not 3·heads·D.
    /// </summary>
    public static (Tensor Q, Tensor K, Tensor V) SplitQkv(Tensor qkv, int heads)
    {
        if (qkv.Rank != 3 || qkv.Shape[2] % (3 * heads) != 0)
            throw new ArgumentException($"SplitQkv: expected [B, N, 3·heads·D] with heads={heads}, got {Tensor.ShapeString(qkv.Shape)}");
        int B = qkv.Shape[0], N = qkv.Shape[1], C3 = qkv.Shape[2], C = C3 / 3, D = C / heads;
        var outs = new Tensor[3];
        for (int s = 0; s < 3; s++) outs[s] = Tensor.OutputUninitialized(B, heads, N, D); // every element copied below
        float[] src = qkv.Data;
        Kernels.Parallelism.For(0, B, b =>
        {
            for (int n = 0; n < N; n++)
            {
                int row = (b * N + n) * C3;
                for (int s = 0; s < 3; s++)
                    for (int h = 0; h < heads; h++) // span copies: Array.Copy's checks cost more than a 32-float row
                        src.AsSpan(row + s * C + h * D, D).CopyTo(outs[s].Data.AsSpan(((b * heads + h) * N + n) * D, D));
            }
        });
        if (!Autograd.Needs(qkv)) return (outs[0], outs[1], outs[2]);
        for (int s = 0; s < 3; s++)
        {
            int which = s;
            Autograd.Record("split_qkv", outs[s], new[] { qkv }, g =>
            {
                qkv.GradSpan();
                float[] dst = qkv.Grad!.Data, gd = g.Data;
                Kernels.Parallelism.For(0, B, b =>
                {
                    for (int h = 0; h < heads; h++)
                        for (int n = 0; n < N; n++)
                        {
                            var o = dst.AsSpan((b * N + n) * C3 + which * C + h * D, D);
                            System.Numerics.Tensors.TensorPrimitives.Add(o, gd.AsSpan(((b * heads + h) * N + n) * D, D), o);
                        }
                });
            });
        }
        return (outs[0], outs[1], outs[2]);
    }

    /// <summary>o [B, H, N, D] → [B, N, H·D] (heads concatenated per token, timm's transpose(1, 2).reshape).</summary>
    public static Tensor MergeHeads(Tensor o)
    {
        if (o.Rank != 4) throw new ArgumentException($"MergeHeads: expected [B, H, N, D], got {Tensor.ShapeString(o.Shape)}");
        int B = o.Shape[0], H = o.Shape[1], N = o.Shape[2], D = o.Shape[3], C = H * D;
        var y = Tensor.OutputUninitialized(B, N, C); // every (image, token, head) row copied below
        Kernels.Parallelism.For(0, B, b =>
        {
            for (int h = 0; h < H; h++)
                for (int n = 0; n < N; n++)
                    o.Data.AsSpan(((b * H + h) * N + n) * D, D).CopyTo(y.Data.AsSpan((b * N + n) * C + h * D, D));
        });
        if (!Autograd.Needs(o)) return y;
        return Autograd.Record("merge_heads", y, new[] { o }, g =>
        {
            o.GradSpan();
            float[] dst = o.Grad!.Data, gd = g.Data;
            Kernels.Parallelism.For(0, B, b =>
            {
                for (int h = 0; h < H; h++)
                    for (int n = 0; n < N; n++)
                    {
                        var i = dst.AsSpan(((b * H + h) * N + n) * D, D);
                        System.Numerics.Tensors.TensorPrimitives.Add(i, gd.AsSpan((b * N + n) * C + h * D, D), i);
                    }
            });
        });
    }

    /// <summary>tokens [B, Np, C] with prefix [P, C] (or [1, P, C]) → [B, P + Np, C]; the prefix is shared by all images.</summary>
    public static Tensor PrependTokens(Tensor tokens, Tensor prefix)
    {
        if (tokens.Rank != 3) throw new ArgumentException($"PrependTokens: tokens must be [B, N, C], got {Tensor.ShapeString(tokens.Shape)}");
        int B = tokens.Shape[0], Np = tokens.Shape[1], C = tokens.Shape[2];
        if (prefix.Size % C != 0 || prefix.Shape[^1] != C)
            throw new ArgumentException($"PrependTokens: prefix {Tensor.ShapeString(prefix.Shape)} does not end in C={C}");
        int P = prefix.Size / C, N = P + Np;
        var y = Tensor.OutputUninitialized(B, N, C); // prefix and tokens copied below
        for (int b = 0; b < B; b++)
        {
            Array.Copy(prefix.Data, 0, y.Data, b * N * C, P * C);
            Array.Copy(tokens.Data, b * Np * C, y.Data, (b * N + P) * C, Np * C);
        }
        if (!Autograd.Needs(tokens, prefix)) return y;
        return Autograd.Record("prepend_tokens", y, new[] { tokens, prefix }, g =>
        {
            for (int b = 0; b < B; b++)
            {
                if (prefix.RequiresGrad)
                    System.Numerics.Tensors.TensorPrimitives.Add(prefix.GradSpan(), g.Data.AsSpan(b * N * C, P * C), prefix.GradSpan());
                if (tokens.RequiresGrad)
                {
                    var dst = tokens.GradSpan().Slice(b * Np * C, Np * C);
                    System.Numerics.Tensors.TensorPrimitives.Add(dst, g.Data.AsSpan((b * N + P) * C, Np * C), dst);
                }
            }
        });
    }

    /// <summary>x [B, N, C] → token `index` of every image, [B, C].</summary>
    public static Tensor SelectToken(Tensor x, int index)
    {
        if (x.Rank != 3 || (uint)index >= (uint)x.Shape[1])
            throw new ArgumentException($"SelectToken: token {index} of {Tensor.ShapeString(x.Shape)}");
        int B = x.Shape[0], N = x.Shape[1], C = x.Shape[2];
        var y = Tensor.Output(B, C);
        for (int b = 0; b < B; b++) Array.Copy(x.Data, (b * N + index) * C, y.Data, b * C, C);
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("select_token", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            for (int b = 0; b < B; b++)
            {
                var dst = gx.Slice((b * N + index) * C, C);
                System.Numerics.Tensors.TensorPrimitives.Add(dst, g.Data.AsSpan(b * C, C), dst);
            }
        });
    }
}
