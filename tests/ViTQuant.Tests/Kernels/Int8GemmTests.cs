// Integer GEMM and activation quantisation: every path this CPU supports against the scalar reference
// twins, bit for bit, on shapes that exercise every edge (odd K, partial panels, short row tiles).
using ViTQuant.Kernels;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Kernels;

public class Int8GemmTests
{
    public static TheoryData<IntGemmPath> Paths()
    {
        var d = new TheoryData<IntGemmPath>();
        foreach (var p in Int8Gemm.SupportedPaths) d.Add(p);
        return d;
    }

    private static short[] RandomCodes(Rng rng, int n, int lo, int hi)
    {
        var r = new short[n];
        for (int i = 0; i < n; i++) r[i] = (short)(lo + rng.NextInt(hi - lo + 1));
        return r;
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void EveryPathEqualsTheReferenceBitForBit(IntGemmPath path)
    {
        var rng = new Rng(7);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (3, 5, 7), (8, 32, 64), (13, 70, 33), (37, 97, 192), (9, 33, 2), (197, 64, 197) })
        {
            int kp = (k + 1) & ~1;
            // Extremes included: 8-bit activation codes minus zero points reach ±255, weights −128..127.
            var a = new short[m * kp];
            var aRaw = RandomCodes(rng, m * k, -255, 255);
            for (int i = 0; i < m; i++) Array.Copy(aRaw, i * k, a, i * kp, k);
            var b = RandomCodes(rng, k * n, -128, 127);
            var scale = Enumerable.Range(0, n).Select(_ => rng.NextFloat() * 1e-3f + 1e-5f).ToArray();
            var bias = Enumerable.Range(0, n).Select(_ => rng.NextFloat() - 0.5f).ToArray();
            var want = new float[m * n];
            Int8Gemm.Reference(a, kp, m, k, b, n, n, scale, bias, want, n);
            var pb = PackedB.FromRows(b, k, n, n);
            var got = new float[m * n];
            Int8Gemm.Gemm(a, kp, m, pb, Int8Gemm.PadToPanels(scale, n), Int8Gemm.PadToPanels(bias, n), got, n, path);
            Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));

            // The weight layout ([N, K], a linear layer's) packs to the same panels.
            var w = new short[n * k];
            for (int i = 0; i < k; i++) for (int j = 0; j < n; j++) w[j * k + i] = b[i * n + j];
            Assert.Equal(pb.Data.ToArray(), PackedB.FromRowsOfColumns(w, n, k, k).Data.ToArray());
        }
    }

    [Fact]
    public void ExtremeSumsStayExactInInt32()
    {
        // 255·(−128)·K with K = 3072 (a wide MLP) is far inside int32; the result must equal the exact product.
        int m = 2, n = 3, k = 3072;
        var a = Enumerable.Repeat((short)255, m * k).ToArray();
        var b = Enumerable.Repeat((short)-128, k * n).ToArray();
        var one = Int8Gemm.PadToPanels(new[] { 1f, 1f, 1f }, n);
        foreach (var p in Int8Gemm.SupportedPaths)
        {
            var c = new float[m * n];
            Int8Gemm.Gemm(a, k, m, PackedB.FromRows(b, k, n, n), one, new float[one.Length], c, n, p);
            Assert.All(c, v => Assert.Equal(255f * -128 * k, v));
        }
    }

    [Fact]
    public void ShortBuffersAndUnpaddedEpiloguesAreRejected()
    {
        var pb = PackedB.FromRows(new short[4 * 3], 4, 3, 3);
        Assert.Throws<ArgumentException>(() => Int8Gemm.Gemm(new short[4], 4, 2, pb, new float[32], new float[32], new float[6], 3));
        Assert.Throws<ArgumentException>(() => Int8Gemm.Gemm(new short[8], 4, 2, pb, new float[3], new float[3], new float[6], 3));
    }

    public static TheoryData<IntGemmPath, bool> PathsAndOrders()
    {
        var d = new TheoryData<IntGemmPath, bool>();
        foreach (var p in Int8Gemm.SupportedPaths) { d.Add(p, false); d.Add(p, true); }
        return d;
    }

    [Theory]
    [MemberData(nameof(PathsAndOrders))]
    public void QuantizedCodesReproduceTheSimulationExactly(IntGemmPath path, bool lsq)
    {
        // Row lengths that reach every vector step (32, 16, 8 wide) and the scalar tail.
        foreach (int cols in new[] { 77, 61, 197 })
            CheckCodes(path, lsq, cols);
    }

    private static void CheckCodes(IntGemmPath path, bool lsq, int cols)
    {
        var rng = new Rng(3);
        int rows = 7, ldx = cols + 3, ldd = cols + 1;
        var x = Enumerable.Range(0, rows * ldx).Select(_ => (rng.NextFloat() - 0.4f) * 6f).ToArray();
        // Values on exact rounding ties too (x/Δ = k + ½).
        for (int i = 0; i < 20; i++) x[i * 3] = (i - 10 + 0.5f) * 0.05f;
        var grid = lsq ? new ActGrid(0.05f, 3f, -8, 7, true) : new ActGrid(0.05f, 9f, 0, 15, false);
        var got = new short[rows * ldd];
        ActQuantize.Rows(x, ldx, rows, cols, got, ldd, grid, path);
        var sim = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            var xs = x.AsSpan(r * ldx, cols);
            if (lsq)
                LsqQuantizer.Apply(Tensor.FromArray(xs, cols), GroupLayout.For(Granularity.PerTensor, new[] { cols }, "x"),
                    Tensor.FromArray(new[] { grid.Scale }, 1), Tensor.FromArray(new[] { grid.Zero }, 1), grid.QMin, grid.QMax).Span.CopyTo(sim);
            else FakeQuant.UniformSpan(xs, sim, grid.Scale, grid.Zero, grid.QMin, grid.QMax);
            for (int j = 0; j < cols; j++)
            {
                Assert.Equal(grid.Code(xs[j]), got[r * ldd + j]);
                Assert.Equal(sim[j], got[r * ldd + j] * grid.Scale); // a·Δ is the simulated value, bit for bit
            }
            Assert.Equal(0, got[r * ldd + cols]); // odd K pad
        }
    }
}
