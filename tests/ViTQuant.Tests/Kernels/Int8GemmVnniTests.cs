// The AVX-512 VNNI kernel (machine code) and its scalar twin against the plain reference, bit for bit, on
// shapes that exercise every edge (K not a multiple of 4, partial panels, short row tiles, row blocks), and the
// u8 activation codes against the int16 ones. The machine-code path runs where this CPU has AVX-512 VNNI.
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Kernels;

public class Int8GemmVnniTests
{
    public static TheoryData<bool> Kernels()
    {
        var d = new TheoryData<bool> { false };
        if (Int8GemmVnni.IsSupported) d.Add(true);
        return d;
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void EqualsTheReferenceAndTheInt16KernelBitForBit(bool vnni)
    {
        var rng = new Rng(11);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (3, 5, 7), (8, 32, 64), (13, 70, 33), (37, 97, 192), (9, 33, 2), (197, 64, 197), (130, 40, 768), (71, 96, 5000) })
        {
            int lda = (k + 3) / 4 * 4 + 4;
            var a = new byte[m * lda];
            for (int i = 0; i < m; i++) for (int j = 0; j < k; j++) a[i * lda + j] = (byte)rng.NextInt(256);
            // Extremes: codes 0 and 255 against −128 and 127.
            if (m > 1 && k > 4) { a[0] = 255; a[1] = 255; a[lda] = 0; }
            var w = new short[n * k];
            for (int i = 0; i < w.Length; i++) w[i] = (short)(rng.NextInt(256) - 128);
            w[0] = -128;
            var pb = PackedB8.FromRowsOfColumns(w, n, k, k)!;
            int zu = rng.NextInt(256);
            var corr = pb.Correction(zu);
            var scale = Enumerable.Range(0, n).Select(_ => rng.NextFloat() * 1e-3f + 1e-5f).ToArray();
            var bias = Enumerable.Range(0, n).Select(_ => rng.NextFloat() - 0.5f).ToArray();
            var bT = new sbyte[k * n];
            for (int i = 0; i < k; i++) for (int j = 0; j < n; j++) bT[i * n + j] = (sbyte)w[j * k + i];
            var want = new float[m * n];
            Int8GemmVnni.Reference(a, lda, m, k, bT, n, n, corr, scale, bias, want, n);
            var got = new float[m * n];
            Int8GemmVnni.Gemm(a, lda, m, pb, corr, Int8Gemm.PadToPanels(scale, n), Int8Gemm.PadToPanels(bias, n), got, n, vnni);
            Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));

            // The same product through the int16 kernel (a − z_u, int16 weights) gives the same bits.
            int kp = (k + 1) & ~1;
            var a16 = new short[m * kp];
            for (int i = 0; i < m; i++) for (int j = 0; j < k; j++) a16[i * kp + j] = (short)(a[i * lda + j] - zu);
            var c16 = new float[m * n];
            Int8Gemm.Gemm(a16, kp, m, PackedB.FromRowsOfColumns(w, n, k, k), Int8Gemm.PadToPanels(scale, n), Int8Gemm.PadToPanels(bias, n), c16, n, IntGemmPath.Scalar);
            Assert.Equal(c16.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));
        }
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void ShiftedCodePanelsWithRowAndColumnTermsEqualTheReference(bool vnni)
    {
        // The attention products: B from unsigned codes (u − 128), given as rows of columns (k) or as rows (v).
        var rng = new Rng(13);
        foreach (var (m, n, k) in new[] { (5, 7, 16), (197, 197, 64), (197, 64, 197), (9, 40, 6) })
        {
            int lda = (k + 3) / 4 * 4;
            var a = new byte[m * lda];
            for (int i = 0; i < m; i++) for (int j = 0; j < k; j++) a[i * lda + j] = (byte)rng.NextInt(256);
            var u = new byte[n * k]; // [N, K]: column c of B is row c
            for (int i = 0; i < u.Length; i++) u[i] = (byte)rng.NextInt(256);
            var bT = new sbyte[k * n];
            var uRows = new byte[k * n]; // the same B given row-major [K, N]
            for (int i = 0; i < k; i++) for (int j = 0; j < n; j++) { bT[i * n + j] = (sbyte)(u[j * k + i] - 128); uRows[i * n + j] = u[j * k + i]; }
            var rowCorr = Enumerable.Range(0, m).Select(_ => rng.NextInt(20001) - 10000).ToArray();
            var corr = Int8Gemm.PadToPanels(new float[n], n).Select(_ => rng.NextInt(20001) - 10000).ToArray();
            var scale = Int8Gemm.PadToPanels(Enumerable.Range(0, n).Select(_ => rng.NextFloat() * 1e-3f).ToArray(), n);
            var bias = new float[scale.Length];
            var want = new float[m * n];
            Int8GemmVnni.Reference(a, lda, m, k, bT, n, n, rowCorr, corr, scale, bias, want, n);
            foreach (var pb in new[] { Pack(k, n, p => p.PackShiftedColumns(u, k)), Pack(k, n, p => p.PackShiftedRows(uRows, n)) })
            {
                for (int j = 0; j < n; j++) Assert.Equal(Enumerable.Range(0, k).Sum(i => (int)u[j * k + i]), pb.ColumnSums[j]);
                var got = new float[m * n];
                Int8GemmVnni.Gemm(a, lda, m, pb, rowCorr, corr, scale, bias, got, n, vnni);
                Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));
            }
            var sums = new int[m];
            Int8GemmVnni.RowSums(a, lda, m, k, sums);
            for (int i = 0; i < m; i++) Assert.Equal(Enumerable.Range(0, k).Sum(j => (int)a[i * lda + j]), sums[i]);
        }
    }

    private static PackedB8 Pack(int k, int n, Action<PackedB8> fill)
    {
        var pb = PackedB8.For(k, n, null);
        fill(pb);
        return pb;
    }

    [Fact]
    public void WeightsOutsideSignedEightBitsAreNotPacked()
    {
        Assert.Null(PackedB8.FromRowsOfColumns(new short[] { 1, 128, 0, 0 }, 2, 2, 2));
        Assert.Null(PackedB8.FromRowsOfColumns(new short[] { 1, -129, 0, 0 }, 2, 2, 2));
        Assert.NotNull(PackedB8.FromRowsOfColumns(new short[] { 127, -128, 0, 0 }, 2, 2, 2));
    }

    [Fact]
    public void ShortBuffersAreRejected()
    {
        var pb = PackedB8.FromRowsOfColumns(new short[3 * 4], 3, 4, 4)!;
        var one = new float[32];
        Assert.Throws<ArgumentException>(() => Int8GemmVnni.Gemm(new byte[4], 4, 2, pb, new int[32], one, one, new float[6], 3, false));
        Assert.Throws<ArgumentException>(() => Int8GemmVnni.Gemm(new byte[8], 4, 2, pb, new int[3], one, one, new float[6], 3, false));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void UnsignedCodesAreTheInt16CodesShifted(bool lsq)
    {
        var rng = new Rng(5);
        foreach (var grid in new[] { new ActGrid(0.05f, 9f, 0, 255, lsq), new ActGrid(0.05f, 3f, -128, 127, lsq), new ActGrid(0.05f, 3f, -8, 7, lsq) })
            foreach (int cols in new[] { 77, 61, 197, 16 })
            {
                int rows = 5, ldx = cols + 3, pad = (cols + 3) / 4 * 4, ldd = pad + 4;
                var x = Enumerable.Range(0, rows * ldx).Select(_ => (rng.NextFloat() - 0.4f) * 20f).ToArray();
                for (int i = 0; i < 20; i++) x[i * 3] = (i - 10 + 0.5f) * 0.05f; // exact rounding ties
                foreach (bool simd in new[] { false, true })
                {
                    var got = Enumerable.Repeat((byte)0xAB, rows * ldd).ToArray();
                    ActQuantize.RowsU8(x, ldx, rows, cols, got, ldd, pad, grid, simd);
                    for (int r = 0; r < rows; r++)
                    {
                        for (int j = 0; j < cols; j++) Assert.Equal(grid.Code(x[r * ldx + j]), got[r * ldd + j] - grid.ZeroU);
                        for (int j = cols; j < pad; j++) Assert.Equal(0, got[r * ldd + j]);
                    }
                }
            }
    }
}
