using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

[Collection(ParallelismThreadsCollection.Name)] // LinearResidualIsTheAddOfTheLinear sets Parallelism.Threads
public class MatMulTests
{
    /// <summary>op(a)·op(b) per batch item by a triple loop in double, independent of Gemm.</summary>
    private static float[] NaiveMatMul(Tensor a, Tensor b, bool tA, bool tB)
    {
        int m = tA ? a.Shape[^1] : a.Shape[^2], k = tA ? a.Shape[^2] : a.Shape[^1];
        int n = tB ? b.Shape[^2] : b.Shape[^1];
        int batch = a.Size / (m * k);
        bool shared = b.Rank == 2;
        var c = new float[batch * m * n];
        for (int t = 0; t < batch; t++)
        {
            int ao = t * m * k, bo = shared ? 0 : t * k * n;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0;
                    for (int p = 0; p < k; p++)
                        s += (double)(tA ? a.Data[ao + p * m + i] : a.Data[ao + i * k + p]) * (tB ? b.Data[bo + j * k + p] : b.Data[bo + p * n + j]);
                    c[t * m * n + i * n + j] = (float)s;
                }
        }
        return c;
    }

    private static int[] Stored(int[] batch, int rows, int cols, bool trans) => batch.Concat(trans ? new[] { cols, rows } : new[] { rows, cols }).ToArray();

    public static readonly TheoryData<bool, bool> Flags = new() { { false, false }, { false, true }, { true, false }, { true, true } };

    [Theory]
    [MemberData(nameof(Flags))]
    public void ForwardMatchesNaiveLoopsForAllLayouts(bool tA, bool tB)
    {
        var rng = new Rng(1);
        int m = 5, k = 7, n = 3;
        foreach (var (batchA, sharedB) in new (int[], bool)[] { (Array.Empty<int>(), true), (new[] { 4 }, false), (new[] { 2, 3 }, false), (new[] { 2, 3 }, true) })
        {
            var a = Tensor.Randn(rng, 1f, Stored(batchA, m, k, tA));
            var b = Tensor.Randn(rng, 1f, Stored(sharedB ? Array.Empty<int>() : batchA, k, n, tB));
            var c = Ops.MatMul(a, b, tA, tB);
            Assert.Equal(batchA.Concat(new[] { m, n }).ToArray(), c.Shape);
            var expected = NaiveMatMul(a, b, tA, tB);
            for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], c.Data[i], 1e-5f);
        }
    }

    [Theory]
    [MemberData(nameof(Flags))]
    public void GradientsMatchFiniteDifferences(bool tA, bool tB)
    {
        var rng = new Rng(2);
        int m = 3, k = 5, n = 4;
        // plain 2-D, batched 3-D, batched 4-D, and b shared across a 3-D batch
        GradCheck.Check(x => Ops.MatMul(x[0], x[1], tA, tB), new[] { GradCheck.Rand(rng, Stored([], m, k, tA)), GradCheck.Rand(rng, Stored([], k, n, tB)) });
        GradCheck.Check(x => Ops.MatMul(x[0], x[1], tA, tB), new[] { GradCheck.Rand(rng, Stored([3], m, k, tA)), GradCheck.Rand(rng, Stored([3], k, n, tB)) });
        GradCheck.Check(x => Ops.MatMul(x[0], x[1], tA, tB), new[] { GradCheck.Rand(rng, Stored([2, 2], m, k, tA)), GradCheck.Rand(rng, Stored([2, 2], k, n, tB)) });
        GradCheck.Check(x => Ops.MatMul(x[0], x[1], tA, tB), new[] { GradCheck.Rand(rng, Stored([3], m, k, tA)), GradCheck.Rand(rng, Stored([], k, n, tB)) });
    }

    [Fact]
    public void SharedRightOperandGradientSumsOverBatch()
    {
        // dB of a shared b equals the sum of the per-item gradients of the unshared product.
        var rng = new Rng(3);
        foreach (bool tA in new[] { false, true })
        {
            var a = Tensor.Randn(rng, 1f, Stored([6], 4, 9, tA));
            var b = Tensor.Randn(rng, 1f, 9, 5).RequireGrad();
            var g = Tensor.Randn(rng, 1f, 6, 4, 5);
            Ops.MatMul(a, b, tA).Backward(g);
            var bTiled = new Tensor(Enumerable.Range(0, 6).SelectMany(_ => b.Data).ToArray(), 6, 9, 5).RequireGrad();
            Ops.MatMul(a, bTiled, tA).Backward(g);
            for (int j = 0; j < b.Size; j++)
            {
                float sum = 0;
                for (int t = 0; t < 6; t++) sum += bTiled.Grad!.Data[t * b.Size + j];
                Assert.Equal(sum, b.Grad!.Data[j], 1e-4f);
            }
        }
    }

    [Fact]
    public void LargeAndManySmallProductsMatchNaiveLoops()
    {
        // One product big enough for the multi-threaded top-level GEMM, a pair of big batched products
        // (sequential loop of threaded GEMMs), and many small ones (Parallelism.For over the batch).
        var rng = new Rng(4);
        foreach (var (batch, m, k, n) in new[] { (1, 130, 70, 90), (2, 129, 128, 130), (40, 6, 9, 7) })
        {
            var a = Tensor.Randn(rng, 1f, batch, m, k).RequireGrad();
            var b = Tensor.Randn(rng, 1f, batch, n, k).RequireGrad();
            var c = Ops.MatMul(a, b, transB: true);
            var expected = NaiveMatMul(a, b, false, true);
            for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], c.Data[i], 2e-4f);

            // Backward against the identity dA = G·B on the same layout, computed naively.
            var g = Tensor.Randn(rng, 1f, batch, m, n);
            c.Backward(g);
            var dA = NaiveMatMul(g, b, false, false);
            for (int i = 0; i < dA.Length; i++) Assert.Equal(dA[i], a.Grad!.Data[i], 2e-4f);
        }
    }

    [Fact]
    public void RejectsIncompatibleShapes()
    {
        Assert.Throws<ArgumentException>(() => Ops.MatMul(Tensor.Zeros(3), Tensor.Zeros(3, 2)));
        Assert.Throws<ArgumentException>(() => Ops.MatMul(Tensor.Zeros(2, 3), Tensor.Zeros(4, 2)));
        Assert.Throws<ArgumentException>(() => Ops.MatMul(Tensor.Zeros(2, 2, 3), Tensor.Zeros(3, 3, 2)));
        Assert.Throws<ArgumentException>(() => Ops.MatMul(Tensor.Zeros(2, 3), Tensor.Zeros(2, 3, 2)));
        Assert.Throws<ArgumentException>(() => Ops.MatMul(Tensor.Zeros(2, 3), Tensor.Zeros(2, 3), transA: false, transB: false));
        Assert.Equal(new[] { 2, 2 }, Ops.MatMul(Tensor.Zeros(2, 3), Tensor.Zeros(2, 3), transB: true).Shape);
        // An empty inner dimension gives zeros, not an error.
        Assert.All(Ops.MatMul(Tensor.Zeros(2, 0), Tensor.Zeros(0, 3)).ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void LinearForwardIsXTimesWTransposedPlusBias()
    {
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        var w = Tensor.FromArray(new float[] { 1, 0, -1, 2, 1, 0 }, 2, 3);
        var b = Tensor.FromArray(new float[] { 10, -10 }, 2);
        // row 0: [1−3, 2+2] + b = [8, −6]; row 1: [4−6, 8+5] + b = [8, 3]
        Assert.Equal(new float[] { 8, -6, 8, 3 }, Ops.Linear(x, w, b).ToArray());
        Assert.Equal(new float[] { -2, 4, -2, 13 }, Ops.Linear(x, w, null).ToArray());
    }

    [Fact]
    public void LinearGradientsMatchFiniteDifferences()
    {
        var rng = new Rng(5);
        GradCheck.Check(v => Ops.Linear(v[0], v[1], v[2]), new[] { GradCheck.Rand(rng, 4, 7), GradCheck.Rand(rng, 5, 7), GradCheck.Rand(rng, 5) });
        GradCheck.Check(v => Ops.Linear(v[0], v[1], null), new[] { GradCheck.Rand(rng, 4, 7), GradCheck.Rand(rng, 5, 7) });
        GradCheck.Check(v => Ops.Linear(v[0], v[1], v[2]), new[] { GradCheck.Rand(rng, 2, 3, 9), GradCheck.Rand(rng, 11, 9), GradCheck.Rand(rng, 11) });
        // only the weight requires a gradient (frozen input, as in calibration of a first layer)
        GradCheck.Check(v => Ops.Linear(v[0], v[1], null), new[] { Tensor.Randn(rng, 1f, 3, 2, 6), GradCheck.Rand(rng, 4, 6) });
    }

    [Fact]
    public void LinearMatchesMatMulWithTransposedWeight()
    {
        var rng = new Rng(6);
        var x = Tensor.Randn(rng, 1f, 3, 4, 17);
        var w = Tensor.Randn(rng, 1f, 9, 17);
        var y = Ops.Linear(x, w, null);
        Assert.Equal(new[] { 3, 4, 9 }, y.Shape);
        var z = Ops.MatMul(x, w, transB: true);
        for (int i = 0; i < y.Size; i++) Assert.Equal(z.Data[i], y.Data[i], 1e-5f);
        Assert.Throws<ArgumentException>(() => Ops.Linear(x, Tensor.Zeros(9, 16), null));
        Assert.Throws<ArgumentException>(() => Ops.Linear(x, w, Tensor.Zeros(8)));
    }

    [Fact]
    public void BackendGemmAgreesWithReferenceOnTransposedLayouts()
    {
        // The backward GEMMs use transposed layouts with beta = 1; check that combination directly.
        var rng = new Rng(7);
        var a = Tensor.Randn(rng, 1f, 7, 5).Data;
        var b = Tensor.Randn(rng, 1f, 3, 7).Data;
        var c1 = Tensor.Randn(rng, 1f, 5, 3).Data;
        var c2 = (float[])c1.Clone();
        Gemm.Sgemm(true, true, 5, 3, 7, 1f, a, 5, b, 7, 1f, c1, 3);
        Gemm.Reference(true, true, 5, 3, 7, 1f, a, 5, b, 7, 1f, c2, 3);
        for (int i = 0; i < c1.Length; i++) Assert.Equal(c2[i], c1[i], 1e-5f);
    }

    // LinearResidual is Add(residual, Linear(x, w, b)) bit for bit: the output and every gradient (x, w, b and a non-leaf
    // residual that takes the output gradient's buffer, or adds to a gradient it already has), with and without bias, with
    // the weight packed for a Freeze() scope (the addition in the GEMM's tiles, a last block of 4 rows) or not, on 1 and 2
    // threads; and its gradients match finite differences.
    [Fact]
    public void LinearResidualIsTheAddOfTheLinear()
    {
        int saved = Parallelism.Threads;
        try
        {
            foreach (int threads in new[] { 1, 2 })
                foreach (bool frozen in new[] { false, true })
                    foreach (bool bias in new[] { false, true })
                        foreach (bool residualUsedTwice in new[] { false, true })
                        {
                            Parallelism.Threads = threads;
                            var rng = new Rng(61);
                            var x = Tensor.Randn(rng, 1f, 8, 50, 40).RequireGrad();
                            var w = Tensor.Randn(rng, 0.2f, 96, 40).RequireGrad();
                            var b = bias ? Tensor.Randn(rng, 1f, 96).RequireGrad() : null;
                            var r0 = Tensor.Randn(rng, 1f, 8, 50, 96).RequireGrad();
                            var up = Tensor.Randn(rng, 1f, 8, 50, 96);
                            (float[] Y, float[][] Grads) Run(bool fused)
                            {
                                foreach (var t in new[] { x, w, b, r0 }) if (t != null) t.Grad = null;
                                using var scope = frozen ? WeightPacking.Freeze() : null;
                                var residual = Ops.Mul(r0, 1.5f); // not a leaf: it may take the output gradient's buffer
                                var y = fused ? Ops.LinearResidual(x, w, b, residual, frozenWeight: frozen)
                                    : Ops.Add(residual, Ops.Linear(x, w, b, frozenWeight: frozen));
                                var loss = Ops.Sum(Ops.Mul(y, up));
                                if (residualUsedTwice) loss = Ops.Add(loss, Ops.Sum(Ops.Mul(residual, residual)));
                                loss.Backward();
                                return (y.ToArray(), new[] { x, w, b, r0 }.Where(t => t != null).Select(t => t!.Grad!.ToArray()).ToArray());
                            }
                            var (want, wantGrads) = Run(false);
                            var (got, gotGrads) = Run(true);
                            string what = $"threads {threads} frozen {frozen} bias {bias} residual used twice {residualUsedTwice}";
                            Assert.True(want.AsSpan().SequenceEqual(got), what);
                            for (int i = 0; i < wantGrads.Length; i++) Assert.True(wantGrads[i].AsSpan().SequenceEqual(gotGrads[i]), $"{what}: gradient {i}");
                        }
        }
        finally { Parallelism.Threads = saved; }
        var g = new Rng(62);
        GradCheck.Check(v => Ops.LinearResidual(v[0], v[1], v[2], v[3], frozenWeight: false),
            new[] { GradCheck.Rand(g, 2, 3, 9), GradCheck.Rand(g, 11, 9), GradCheck.Rand(g, 11), GradCheck.Rand(g, 2, 3, 11) });
        Assert.Throws<ArgumentException>(() => Ops.LinearResidual(Tensor.Zeros(4, 9), Tensor.Zeros(11, 9), null, Tensor.Zeros(4, 10), frozenWeight: false));
    }

    // A leaf's gradient buffer is kept after ZeroGrad / Grad = null and reused by the next backward (overwritten
    // or zero-filled first: the same values as a fresh buffer); a gradient the caller assigned is never reused.
    [Fact]
    public void LeafGradientBuffersAreReusedWithTheSameValues()
    {
        var rng = new Rng(51);
        var x = Tensor.Randn(rng, 1f, 6, 10).RequireGrad();
        var w = Tensor.Randn(rng, 1f, 7, 10).RequireGrad();
        var b = Tensor.Randn(rng, 1f, 7).RequireGrad();
        var up = Tensor.Randn(rng, 1f, 6, 7);
        (float[] X, float[] W, float[] B) Step()
        {
            Ops.Sum(Ops.Mul(Ops.Linear(x, w, b), up)).Backward();
            return (x.Grad!.ToArray(), w.Grad!.ToArray(), b.Grad!.ToArray());
        }
        var first = Step();
        var wBuffer = w.Grad!;
        foreach (var t in new[] { x, w, b }) t.ZeroGrad();
        Assert.Null(w.Grad);
        var second = Step();
        Assert.Same(wBuffer, w.Grad);
        Assert.Equal(first.X, second.X);
        Assert.Equal(first.W, second.W);
        Assert.Equal(first.B, second.B);
        // Without ZeroGrad the gradients accumulate as always.
        var third = Step();
        Assert.Equal(first.W.Select(v => 2 * v).ToArray(), third.W, new FloatTolerance(1e-5f));
        // A caller's tensor assigned to Grad is not taken over after it is dropped.
        var mine = Tensor.Zeros(7, 10);
        w.Grad = mine;
        w.ZeroGrad();
        Step();
        Assert.NotSame(mine, w.Grad);
        Assert.All(mine.ToArray(), v => Assert.Equal(0f, v));
    }

    // The bias gradient: db += Σ_rows dy, column by column in row order, onto what db held. Full 64-column blocks run
    // in registers, others through spans; both must give the row-order float sums bit for bit.
    [Theory]
    [InlineData(300, 64)]
    [InlineData(300, 200)]
    [InlineData(3200, 128)]
    [InlineData(5, 7)]
    public void BiasGradientIsTheRowOrderColumnSum(int rows, int outF)
    {
        var rng = new Rng(61);
        var g = Tensor.Randn(rng, 1f, rows, outF).Data;
        var db = Tensor.Randn(rng, 1f, outF).Data;
        var expected = (float[])db.Clone();
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < outF; j++) expected[j] += g[r * outF + j];
        DenseCore.Backward(g, default, default, rows, 3, outF, default, default, db);
        Assert.Equal(expected, db);
    }

    private sealed class FloatTolerance(float tol) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) <= tol * Math.Max(1f, Math.Abs(a));
        public int GetHashCode(float v) => 0;
    }
}
