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
}
