using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

// Ops whose outputs skip the arena's zero fill (Tensor.OutputUninitialized) must write every element:
// a recycled buffer still holds the previous step's values. Here the previous values are poisoned with
// NaN before the buffers are rented again, and the results must equal a computation outside any arena.
public class UninitializedOutputTests
{
    private static Tensor[] Ops1(Tensor x, Tensor qkv, Tensor w, Tensor b, Tensor gamma, Tensor beta) => new[]
    {
        Ops.Linear(x, w, b),
        Ops.Linear(x, w, null),
        Ops.Gelu(x),
        Ops.LayerNorm(x, gamma, beta, 1e-5f),
        Ops.Add(x, x),
        Ops.Mul(x, x),
        Ops.FusedAttention(qkv, 2, 0.3f),
    };

    [Fact]
    public void RecycledBuffersWithGarbageGiveTheSameResults()
    {
        var rng = new Rng(31);
        var x = Tensor.Randn(rng, 1f, 4, 50, 32);       // 6400 floats: large enough to be pooled
        var qkv = Tensor.Randn(rng, 1f, 2, 40, 48);     // outputs [2, 40, 16] and probs [2, 2, 40, 40]
        var w = Tensor.Randn(rng, 0.2f, 24, 32);
        var b = Tensor.Randn(rng, 1f, 24);
        var gamma = Tensor.Randn(rng, 1f, 32);
        var beta = Tensor.Randn(rng, 1f, 32);
        using var _ = Autograd.NoGrad();
        var want = Ops1(x, qkv, w, b, gamma, beta).Select(t => t.ToArray()).ToArray();
        for (int step = 0; step < 3; step++)
        {
            float[][] got;
            using (TensorArena.Scope())
            {
                var outs = Ops1(x, qkv, w, b, gamma, beta);
                got = outs.Select(t => t.ToArray()).ToArray();
                // Poison what goes back to the free lists (the outputs and any temporaries of this scope).
                foreach (var t in outs) Array.Fill(t.Data, float.NaN);
            }
            for (int i = 0; i < want.Length; i++) Assert.Equal(want[i], got[i]);
        }
    }
    // The fused attention's backward stores a fresh qkv gradient without a zero fill first (AVX-512, head widths of 32,
    // all query rows), and clears it first on the other paths: a gradient buffer recycled from NaN-filled ones must give
    // the gradient computed outside any arena, and a second backward onto a kept gradient must add to it.
    [Fact]
    public void AttentionBackwardOverwritesARecycledGradient()
    {
        var rng = new Rng(37);
        var leaf = Tensor.Randn(rng, 1f, 2, 50, 192).RequireGrad(); // 2 heads of width 32: the AVX-512 kernel's
        var gOut = Tensor.Randn(rng, 1f, 2, 50, 64);
        float[] Run()
        {
            leaf.Grad = null;
            var qkv = Ops.Mul(leaf, leaf); // not a leaf: its gradient comes from the arena
            Ops.FusedAttention(qkv, 2, 0.3f).Backward(gOut);
            return leaf.Grad!.ToArray();
        }
        var want = Run();
        Assert.DoesNotContain(want, float.IsNaN);
        for (int step = 0; step < 3; step++)
        {
            using (TensorArena.Scope())
                for (int i = 0; i < 6; i++) Array.Fill(Tensor.OutputUninitialized(2, 50, 192).Data, float.NaN);
            using (TensorArena.Scope()) Assert.Equal(want, Run());
        }
        // Kept gradient: a second backward adds (the leaf's own gradient, accumulated by Mul's backward).
        leaf.Grad = null;
        var q2 = Ops.Mul(leaf, leaf);
        q2.RetainsGrad = true;
        Ops.FusedAttention(q2, 2, 0.3f).Backward(gOut);
        var once = q2.Grad!.ToArray();
        Ops.FusedAttention(q2, 2, 0.3f).Backward(gOut);
        Assert.Equal(once.Select(v => 2 * v), q2.Grad!.ToArray());
    }
}
