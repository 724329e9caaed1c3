// Fast row kernels (softmax, log-softmax, layer norm, GELU) against their scalar double-precision
// reference twins, at column counts around the 8-lane vector width (tails of 0..7), typical ViT widths
// (197 tokens, 768 channels), several row counts, and a buffer large enough to run in parallel chunks.
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Kernels;

public class FusedKernelTests
{
    public static readonly TheoryData<int, int> Sizes = BuildSizes();

    private static TheoryData<int, int> BuildSizes()
    {
        var d = new TheoryData<int, int>();
        foreach (int cols in new[] { 0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 197, 768 })
            foreach (int rows in new[] { 1, 3, 50 })
                d.Add(rows, cols);
        // Large enough (≥ 2 × 16384 elements) to split into parallel chunks, with vector tails.
        d.Add(2500, 17);
        d.Add(64, 768);
        return d;
    }

    private static float[] RandomRows(int rows, int cols, ulong seed, float scale = 3f, float rowShift = 0f)
    {
        var rng = new Rng(seed);
        var x = new float[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            float shift = rowShift * (r % 3 - 1); // rows offset by −shift, 0, +shift
            for (int j = 0; j < cols; j++) x[r * cols + j] = shift + scale * rng.NextNormal();
        }
        return x;
    }

    /// <summary>|fast − ref| ≤ atol + rtol·|ref| element by element, naming the first offender.</summary>
    private static void AssertClose(float[] expected, float[] actual, double atol, double rtol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            if (!(Math.Abs(a - e) <= atol + rtol * Math.Abs(e))) // message built only on failure: this runs per element
                Assert.Fail($"{what}[{i}]: fast {a:G9} vs reference {e:G9}");
        }
    }

    // Both widths of the softmax rows this CPU runs (16 lanes on AVX-512, 8 lanes elsewhere).
    [Theory]
    [MemberData(nameof(Sizes))]
    public void SoftmaxMatchesReference(int rows, int cols)
    {
        SoftmaxWidthMatchesReference(rows, cols);
        RowSimd.ForceNarrow = true;
        try { SoftmaxWidthMatchesReference(rows, cols); }
        finally { RowSimd.ForceNarrow = false; }
    }

    // The softmax on several rows (four at a time, phase by phase, then one by one) is the one-row kernel's bits on
    // every row, on 8 lanes and (on AVX-512 CPUs) on 16: each row count 1..9 (groups of four and a rest), row lengths
    // around the vectors and the attention's 49, 50 and 197 tokens, rows further apart than they are long (the
    // attention's padded scratch), and in place.
    [Fact]
    public unsafe void SoftmaxRowGroupsGiveTheOneRowKernelsBits()
    {
        foreach (bool wide in RowSimd.Wide ? new[] { false, true } : new[] { false })
            foreach (int n in new[] { 1, 2, 7, 8, 9, 15, 16, 17, 31, 49, 50, 64, 197 })
                for (int rows = 1; rows <= 9; rows++)
                {
                    int ldx = n + 7, ldy = n + 3;
                    var x = RandomRows(rows, ldx, (ulong)(n * 16 + rows), 4f, 2f);
                    var one = new float[rows * ldy];
                    var group = new float[rows * ldy];
                    var inPlace = (float[])x.Clone();
                    fixed (float* px = x, po = one, pg = group, pi = inPlace)
                    {
                        for (int r = 0; r < rows; r++)
                            if (wide) SoftmaxKernel.SoftmaxRow512(px + r * ldx, po + r * ldy, n);
                            else SoftmaxKernel.SoftmaxRow(px + r * ldx, po + r * ldy, n, log: false);
                        if (wide)
                        {
                            SoftmaxKernel.SoftmaxRows512(px, ldx, pg, ldy, rows, n);
                            SoftmaxKernel.SoftmaxRows512(pi, ldx, pi, ldx, rows, n);
                        }
                        else
                        {
                            SoftmaxKernel.SoftmaxRows256(px, ldx, pg, ldy, rows, n);
                            SoftmaxKernel.SoftmaxRows256(pi, ldx, pi, ldx, rows, n);
                        }
                    }
                    for (int r = 0; r < rows; r++)
                        for (int j = 0; j < n; j++)
                        {
                            Assert.Equal(BitConverter.SingleToInt32Bits(one[r * ldy + j]), BitConverter.SingleToInt32Bits(group[r * ldy + j]));
                            Assert.Equal(BitConverter.SingleToInt32Bits(one[r * ldy + j]), BitConverter.SingleToInt32Bits(inPlace[r * ldx + j]));
                        }
                    // Nothing past a row's n values is written (the gaps keep their zeros).
                    for (int r = 0; r < rows; r++)
                        for (int j = n; j < ldy && r * ldy + j < group.Length; j++) Assert.Equal(0f, group[r * ldy + j]);
                }
    }

    [Fact]
    public unsafe void SoftmaxRowsWithSignedZerosNaNAndInfinity()
    {
        // The row maximum is the native max (RowMax256): a row whose maximum is −0 gives the bits of the same row with
        // +0, a NaN anywhere makes the whole row NaN, and +∞ too (∞ − ∞); on every width this machine runs.
        foreach (bool wide in RowSimd.Wide ? new[] { false, true } : new[] { false })
            foreach (int n in new[] { 3, 8, 17, 50 })
            {
                var rng = new Random(n);
                var plus = new float[n];
                for (int j = 0; j < n; j++) plus[j] = j % 3 == 0 ? 0f : -(float)rng.NextDouble() * 5f;
                var minus = plus.Select(v => v == 0f ? -0f : v).ToArray();
                var mixed = plus.Select((v, j) => v == 0f && j % 2 == 1 ? -0f : v).ToArray();
                var zeros = Enumerable.Range(0, n).Select(j => j % 2 == 0 ? -0f : 0f).ToArray();
                var nan = (float[])plus.Clone(); nan[n / 2] = float.NaN;
                var inf = (float[])plus.Clone(); inf[n - 1] = float.PositiveInfinity;
                float[] Run(float[] row)
                {
                    var y = new float[n];
                    fixed (float* px = row, py = y)
                        if (wide) SoftmaxKernel.SoftmaxRows512(px, n, py, n, 1, n);
                        else SoftmaxKernel.SoftmaxRows256(px, n, py, n, 1, n);
                    return y;
                }
                var want = Run(plus);
                foreach (var row in new[] { minus, mixed })
                    Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), Run(row).Select(BitConverter.SingleToInt32Bits));
                Assert.All(Run(zeros), v => Assert.Equal(BitConverter.SingleToInt32Bits(1f / n), BitConverter.SingleToInt32Bits(v)));
                Assert.All(Run(nan), v => Assert.True(float.IsNaN(v)));
                Assert.All(Run(inf), v => Assert.True(float.IsNaN(v)));
            }
    }

    private static void SoftmaxWidthMatchesReference(int rows, int cols)
    {
        var x = RandomRows(rows, cols, 1);
        var fast = new float[x.Length];
        var slow = new float[x.Length];
        SoftmaxKernel.SoftmaxRows(x, fast, rows, cols);
        SoftmaxKernel.ReferenceSoftmaxRows(x, slow, rows, cols);
        AssertClose(slow, fast, 1e-7, 2e-6, "softmax");

        var dy = RandomRows(rows, cols, 2, 1f);
        var dxFast = RandomRows(rows, cols, 3, 1f); // non-zero start: the backward must accumulate
        var dxSlow = (float[])dxFast.Clone();
        SoftmaxKernel.SoftmaxRowsBackward(slow, dy, dxFast, rows, cols);
        SoftmaxKernel.ReferenceSoftmaxRowsBackward(slow, dy, dxSlow, rows, cols);
        AssertClose(dxSlow, dxFast, 2e-6, 2e-6, "softmax backward");
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void LogSoftmaxMatchesReference(int rows, int cols)
    {
        var x = RandomRows(rows, cols, 4);
        var fast = new float[x.Length];
        var slow = new float[x.Length];
        SoftmaxKernel.LogSoftmaxRows(x, fast, rows, cols);
        SoftmaxKernel.ReferenceLogSoftmaxRows(x, slow, rows, cols);
        AssertClose(slow, fast, 2e-6, 1e-6, "log_softmax");

        var dy = RandomRows(rows, cols, 5, 1f);
        var dxFast = RandomRows(rows, cols, 6, 1f);
        var dxSlow = (float[])dxFast.Clone();
        SoftmaxKernel.LogSoftmaxRowsBackward(slow, dy, dxFast, rows, cols);
        SoftmaxKernel.ReferenceLogSoftmaxRowsBackward(slow, dy, dxSlow, rows, cols);
        AssertClose(dxSlow, dxFast, 1e-5, 1e-5, "log_softmax backward");
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void LayerNormMatchesReference(int rows, int cols)
    {
        // Rows shifted by ±50 with spread 3: a one-pass E[x²]−E[x]² variance would lose digits here.
        var x = RandomRows(rows, cols, 7, 3f, 50f);
        var gamma = RandomRows(1, cols, 8, 1f);
        var beta = RandomRows(1, cols, 9, 1f);
        const float eps = 1e-6f;
        foreach (bool affine in new[] { true, false })
        {
            var g = affine ? gamma : Array.Empty<float>();
            var b = affine ? beta : Array.Empty<float>();
            var yFast = new float[x.Length];
            var ySlow = new float[x.Length];
            float[] mF = new float[rows], rF = new float[rows], mS = new float[rows], rS = new float[rows];
            LayerNormKernel.LayerNormRows(x, g, b, yFast, mF, rF, rows, cols, eps);
            LayerNormKernel.ReferenceLayerNormRows(x, g, b, ySlow, mS, rS, rows, cols, eps);
            AssertClose(ySlow, yFast, 2e-5, 2e-5, $"layer_norm y (affine {affine})");
            AssertClose(mS, mF, 1e-5, 1e-6, "layer_norm mean");
            AssertClose(rS, rF, 0, 2e-5, "layer_norm rstd");

            var dy = RandomRows(rows, cols, 10, 1f);
            var dxF = RandomRows(rows, cols, 11, 1f);
            var dxS = (float[])dxF.Clone();
            var dgF = affine ? RandomRows(1, cols, 12, 1f) : Array.Empty<float>();
            var dbF = affine ? RandomRows(1, cols, 13, 1f) : Array.Empty<float>();
            var dgS = (float[])dgF.Clone();
            var dbS = (float[])dbF.Clone();
            LayerNormKernel.LayerNormRowsBackward(x, g, mF, rF, dy, dxF, dgF, dbF, rows, cols);
            LayerNormKernel.ReferenceLayerNormRowsBackward(x, g, eps, dy, dxS, dgS, dbS, rows, cols);
            AssertClose(dxS, dxF, 1e-4, 1e-4, "layer_norm dx");
            // dγ, dβ sum over rows: float accumulation error grows like √rows.
            AssertClose(dgS, dgF, 1e-4 * Math.Sqrt(rows), 1e-4, "layer_norm dgamma");
            AssertClose(dbS, dbF, 1e-4 * Math.Sqrt(rows), 1e-4, "layer_norm dbeta");
        }
    }

    // LayerNormRows normalises rows four at a time phase by phase: bit for bit each row normalised alone (output, mean
    // and rstd), with and without the affine, for every row count 1..9 (groups of four and a rest) and row widths
    // around the 8-lane vector and a ViT's.
    [Fact]
    public void LayerNormRowGroupsGiveOneRowsBits()
    {
        const float eps = 1e-6f;
        foreach (int cols in new[] { 1, 7, 8, 9, 31, 128, 192 })
            for (int rows = 1; rows <= 9; rows++)
                foreach (bool affine in new[] { true, false })
                {
                    var x = RandomRows(rows, cols, (ulong)(cols * 16 + rows), 3f, 5f);
                    var gamma = affine ? RandomRows(1, cols, 31, 1f) : Array.Empty<float>();
                    var beta = affine ? RandomRows(1, cols, 32, 1f) : Array.Empty<float>();
                    var y = new float[x.Length];
                    var mean = new float[rows];
                    var rstd = new float[rows];
                    LayerNormKernel.LayerNormRows(x, gamma, beta, y, mean, rstd, rows, cols, eps);
                    for (int r = 0; r < rows; r++)
                    {
                        var y1 = new float[cols];
                        var m1 = new float[1];
                        var s1 = new float[1];
                        LayerNormKernel.LayerNormRows(x.AsSpan(r * cols, cols), gamma, beta, y1, m1, s1, 1, cols, eps);
                        Assert.Equal(y1, y.AsSpan(r * cols, cols).ToArray());
                        Assert.Equal(BitConverter.SingleToInt32Bits(m1[0]), BitConverter.SingleToInt32Bits(mean[r]));
                        Assert.Equal(BitConverter.SingleToInt32Bits(s1[0]), BitConverter.SingleToInt32Bits(rstd[r]));
                    }
                }
    }

    // The fused residual add + LayerNorm: bit for bit the add followed by LayerNormRows, and close to its twin.
    [Theory]
    [MemberData(nameof(Sizes))]
    public void AddLayerNormEqualsAddThenLayerNorm(int rows, int cols)
    {
        var x = RandomRows(rows, cols, 21, 3f, 5f);
        var y = RandomRows(rows, cols, 22, 2f);
        var gamma = RandomRows(1, cols, 23, 1f);
        var beta = RandomRows(1, cols, 24, 1f);
        const float eps = 1e-6f;
        var sum = new float[x.Length];
        var ln = new float[x.Length];
        LayerNormKernel.AddLayerNormRows(x, y, gamma, beta, sum, ln, rows, cols, eps);
        var wantSum = new float[x.Length];
        System.Numerics.Tensors.TensorPrimitives.Add(x, y, wantSum);
        var wantLn = new float[x.Length];
        LayerNormKernel.LayerNormRows(wantSum, gamma, beta, wantLn, new float[rows], new float[rows], rows, cols, eps);
        Assert.Equal(wantSum, sum);
        Assert.Equal(wantLn, ln);
        var refSum = new float[x.Length];
        var refLn = new float[x.Length];
        LayerNormKernel.ReferenceAddLayerNormRows(x, y, gamma, beta, refSum, refLn, rows, cols, eps);
        Assert.Equal(refSum, sum);
        AssertClose(refLn, ln, 2e-5, 2e-5, "add + layer_norm");
        Assert.Throws<ArgumentException>(() => LayerNormKernel.AddLayerNormRows(x, y.AsSpan(0, Math.Max(0, y.Length - 1)), gamma, beta, sum, ln, rows, Math.Max(1, cols), eps));
    }

    // The GELU paths, as (RowSimd.ForceNarrow, GeluKernel.ForceDoublePath): the float formula on 16 lanes
    // (AVX-512) or 8 (AVX2 + FMA; what a ForceNarrow scope runs on AVX-512), and the double-lane path.
    private static readonly (bool Narrow, bool Double)[] GeluPaths = { (false, false), (true, false), (false, true) };

    private static void OnGeluPath((bool Narrow, bool Double) path, Action body)
    {
        RowSimd.ForceNarrow = path.Narrow;
        GeluKernel.ForceDoublePath = path.Double;
        try { body(); }
        finally { RowSimd.ForceNarrow = false; GeluKernel.ForceDoublePath = false; }
    }

    // Every GELU path this CPU can run.
    [Theory]
    [MemberData(nameof(Sizes))]
    public void GeluMatchesReference(int rows, int cols)
    {
        foreach (var path in GeluPaths) OnGeluPath(path, () => GeluPathMatchesReference(rows, cols));
    }

    // The 8-lane float path runs the 16-lane formula's operations lane for lane: the same bits, forward and backward.
    [Fact]
    public void GeluFloatPathsAgreeBitForBit()
    {
        var x = RandomRows(37, 101, 15, 6f);
        var dy = RandomRows(37, 101, 16, 1f);
        (float[] Y, float[] Dx) Run((bool, bool) path)
        {
            var y = new float[x.Length];
            var dx = new float[x.Length];
            OnGeluPath(path, () => { GeluKernel.Gelu(x, y); GeluKernel.GeluBackward(x, dy, dx); });
            return (y, dx);
        }
        var wide = Run((false, false));
        var narrow = Run((true, false));
        Assert.Equal(wide.Y, narrow.Y);
        Assert.Equal(wide.Dx, narrow.Dx);
        Assert.True(GeluKernel.Avx512Path || GeluKernel.Float256Path || !System.Runtime.Intrinsics.X86.Fma.IsSupported);
    }

    // Dense grid over [−12, 12] and the special values: each path against the double twins.
    [Fact]
    public void GeluIsAccurateOnADenseGridOnEveryPath()
    {
        int n = 240001;
        var x = new float[n + 6];
        for (int i = 0; i < n; i++) x[i] = -12f + 24f * i / (n - 1);
        x[n] = 0f; x[n + 1] = 1e-30f; x[n + 2] = -1e-30f; x[n + 3] = 0.921875f * 1.41421356f; x[n + 4] = 4f * 1.41421356f; x[n + 5] = -5.6568542f;
        foreach (var path in GeluPaths)
        {
            RowSimd.ForceNarrow = path.Narrow;
            GeluKernel.ForceDoublePath = path.Double;
            string forceDouble = path.ToString();
            try
            {
                var yF = new float[x.Length];
                var yS = new float[x.Length];
                GeluKernel.Gelu(x, yF);
                GeluKernel.ReferenceGelu(x, yS);
                AssertClose(yS, yF, 3e-7, 2e-6, $"gelu (path {forceDouble})");
                var dy = Enumerable.Repeat(1f, x.Length).ToArray();
                var dF = new float[x.Length];
                var dS = new float[x.Length];
                GeluKernel.GeluBackward(x, dy, dF);
                GeluKernel.ReferenceGeluBackward(x, dy, dS);
                AssertClose(dS, dF, 1e-6, 2e-6, $"gelu backward (path {forceDouble})");
                var special = new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f };
                var ys = new float[4];
                GeluKernel.Gelu(special, ys);
                Assert.True(float.IsNaN(ys[0]));
                Assert.Equal(float.PositiveInfinity, ys[1]);
                Assert.True(float.IsNaN(ys[2])); // −∞·Φ(−∞) = −∞·0, as the reference gives
                Assert.Equal(0f, ys[3]);
            }
            finally { RowSimd.ForceNarrow = false; GeluKernel.ForceDoublePath = false; }
        }
    }

    private static void GeluPathMatchesReference(int rows, int cols)
    {
        var x = RandomRows(rows, cols, 14, 3f);
        var yFast = new float[x.Length];
        var ySlow = new float[x.Length];
        GeluKernel.Gelu(x, yFast);
        GeluKernel.ReferenceGelu(x, ySlow);
        AssertClose(ySlow, yFast, 3e-7, 2e-6, "gelu");

        var dy = RandomRows(rows, cols, 15, 1f);
        var dxF = RandomRows(rows, cols, 16, 1f);
        var dxS = (float[])dxF.Clone();
        GeluKernel.GeluBackward(x, dy, dxF);
        GeluKernel.ReferenceGeluBackward(x, dy, dxS);
        AssertClose(dxS, dxF, 1e-6, 2e-6, "gelu backward");
    }

    [Fact]
    public void ReferenceErfMatchesTabulatedValues()
    {
        // erf values to 16 digits (Abramowitz & Stegun table 7.1 / any CAS).
        (double z, double erf)[] table =
        {
            (0.0, 0.0), (0.1, 0.1124629160182849), (0.5, 0.5204998778130465), (1.0, 0.8427007929497149),
            (1.5, 0.9661051464753108), (2.0, 0.9953222650189527), (3.0, 0.9999779095030014), (4.0, 0.9999999845827421),
            (-0.75, -0.7111556336535151),
        };
        foreach (var (z, e) in table) Assert.True(Math.Abs(GeluKernel.ReferenceErf(z) - e) < 1e-15, $"erf({z}) = {GeluKernel.ReferenceErf(z):R}, expected {e:R}");
        Assert.Equal(1.0, GeluKernel.ReferenceErf(7.0));
        Assert.Equal(-1.0, GeluKernel.ReferenceErf(-9.0));
    }

    [Fact]
    public void VectorErfIsAccurateToAboutOneTenMillionth()
    {
        // Dense grid over [−6, 6], where GELU's erf(x/√2) lives for |x| ≤ 8.5, plus tiny arguments
        // where a 1 − (…)·e^(−x²) formula would lose all relative accuracy.
        int n = 120001;
        var x = new float[n + 5];
        for (int i = 0; i < n; i++) x[i] = -6f + 12f * i / (n - 1);
        x[n] = 1e-20f; x[n + 1] = -3e-8f; x[n + 2] = 1e-4f; x[n + 3] = 0f; x[n + 4] = 40f;
        var y = new float[x.Length];
        GeluKernel.Erf(x, y);
        double maxAbs = 0;
        for (int i = 0; i < x.Length; i++) maxAbs = Math.Max(maxAbs, Math.Abs(y[i] - GeluKernel.ReferenceErf(x[i])));
        Assert.True(maxAbs < 1.2e-7, $"max |erf error| = {maxAbs:G3}");
        for (int i = n; i < n + 3; i++)
            Assert.True(Math.Abs(y[i] / GeluKernel.ReferenceErf(x[i]) - 1) < 1e-6, $"relative error at {x[i]:G3}: {y[i]:G9}");
        Assert.Equal(0f, y[n + 3]);
        Assert.Equal(1f, y[n + 4]);
        GeluKernel.Erf(new[] { float.NaN }, y);
        Assert.True(float.IsNaN(y[0]));
    }

    [Fact]
    public unsafe void SoftmaxExpIsAccurateOnItsDomain()
    {
        // The float exp behind the softmax rows: relative error within ~3 ulp on [−87.3, 0].
        int n = 200000;
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = -87.3f * i / (n - 1);
        double maxRel = 0;
        fixed (float* px = x)
            for (int i = 0; i + 8 <= n; i += 8)
            {
                var y = RowSimd.ExpNonPositive(System.Runtime.Intrinsics.Vector256.Load(px + i));
                for (int j = 0; j < 8; j++) maxRel = Math.Max(maxRel, Math.Abs(y[j] / Math.Exp(x[i + j]) - 1));
            }
        Assert.True(maxRel < 3.6e-7, $"max relative exp error {maxRel:G3}");
        // The 16-lane twin (softmax rows and GELU on AVX-512) gives the same values lane for lane.
        if (System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated)
            fixed (float* px = x)
                for (int i = 0; i + 16 <= n; i += 16)
                {
                    var w = RowSimd.ExpNonPositive512(System.Runtime.Intrinsics.Vector512.Load(px + i));
                    var lo = RowSimd.ExpNonPositive(System.Runtime.Intrinsics.Vector256.Load(px + i));
                    var hi = RowSimd.ExpNonPositive(System.Runtime.Intrinsics.Vector256.Load(px + i + 8));
                    Assert.True(System.Runtime.Intrinsics.Vector512.GetLower(w) == lo && System.Runtime.Intrinsics.Vector512.GetUpper(w) == hi, $"ExpNonPositive512 differs from ExpNonPositive at {x[i]}");
                }
        if (System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated)
        {
            var s16 = RowSimd.ExpNonPositive512(System.Runtime.Intrinsics.Vector512.Create(0f, -1f, -88f, -1000f, float.NegativeInfinity, float.NaN, -1e-30f, -0.5f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f));
            Assert.Equal(1f, s16[0]);
            Assert.Equal(0f, s16[2]);
            Assert.Equal(0f, s16[4]);
            Assert.True(float.IsNaN(s16[5]));
        }
        var special = RowSimd.ExpNonPositive(System.Runtime.Intrinsics.Vector256.Create(0f, -1f, -88f, -1000f, float.NegativeInfinity, float.NaN, -1e-30f, -0.5f));
        Assert.Equal(1f, special[0]);
        Assert.Equal(MathF.Exp(-1f), special[1], 1e-7f);
        Assert.Equal(0f, special[2]); // below the normal range: flushed to zero
        Assert.Equal(0f, special[3]);
        Assert.Equal(0f, special[4]);
        Assert.True(float.IsNaN(special[5]));
        Assert.Equal(1f, special[6]);
        Assert.Equal(MathF.Exp(-0.5f), special[7], 1e-7f);
    }

    [Fact]
    public void SoftmaxIsStableForHugeLogitsAndInPlace()
    {
        var x = new float[] { 1000f, 999f, -1000f, 80f, 1000f, 3f, 2f, 1f, 0f };
        var expected = new float[x.Length];
        SoftmaxKernel.ReferenceSoftmaxRows(x, expected, 1, x.Length);
        SoftmaxKernel.SoftmaxRows(x, x, 1, x.Length); // src and dst alias
        Assert.All(x, v => Assert.True(float.IsFinite(v)));
        AssertClose(expected, x, 1e-7, 1e-6, "softmax huge logits");
        Assert.Equal(0.4223188f, x[0], 5e-7f); // e^0 / (2 + e^-1)

        var lx = new float[] { 1000f, -1000f, 0f };
        SoftmaxKernel.LogSoftmaxRows(lx, lx, 1, 3);
        Assert.Equal(0f, lx[0], 1e-6f);
        Assert.Equal(-2000f, lx[1], 1e-3f); // a probability of e^-2000 still has an exact log
    }

    [Fact]
    public void KernelsRejectShortBuffers()
    {
        var a = new float[10];
        Assert.Throws<ArgumentException>(() => SoftmaxKernel.SoftmaxRows(a, new float[9], 2, 5));
        Assert.Throws<ArgumentException>(() => SoftmaxKernel.LogSoftmaxRowsBackward(a, a, new float[3], 2, 5));
        Assert.Throws<ArgumentException>(() => LayerNormKernel.LayerNormRows(a, new float[4], default, new float[10], new float[2], new float[2], 2, 5, 1e-5f));
        Assert.Throws<ArgumentException>(() => LayerNormKernel.LayerNormRows(a, default, default, new float[10], new float[1], new float[2], 2, 5, 1e-5f));
        Assert.Throws<ArgumentException>(() => LayerNormKernel.LayerNormRows(a, default, default, new float[10], new float[2], new float[2], 2, 5, -1f));
        Assert.Throws<ArgumentException>(() => GeluKernel.Gelu(a, new float[9]));
        Assert.Throws<ArgumentException>(() => GeluKernel.GeluBackward(a, a, new float[9]));
    }

    [Fact]
    public void RowKernelsAreDeterministicAcrossRuns()
    {
        // Parallel chunking depends only on the thread count, so repeated runs give identical bits.
        int rows = 3000, cols = 33;
        var x = RandomRows(rows, cols, 20);
        var dy = RandomRows(rows, cols, 21, 1f);
        var gamma = RandomRows(1, cols, 22, 1f);
        float[] Run()
        {
            var y = new float[x.Length];
            float[] m = new float[rows], r = new float[rows], dx = new float[x.Length], dg = new float[cols], db = new float[cols];
            LayerNormKernel.LayerNormRows(x, gamma, default, y, m, r, rows, cols, 1e-5f);
            LayerNormKernel.LayerNormRowsBackward(x, gamma, m, r, dy, dx, dg, db, rows, cols);
            return y.Concat(dx).Concat(dg).Concat(db).ToArray();
        }
        Assert.Equal(Run(), Run());
    }

    // accumulate: false (a fresh gradient) never reads dx and gives, bit for bit, what accumulating onto zeros gives.
    [Fact]
    public void GeluBackwardWithoutAccumulateEqualsAccumulatingOntoZeros()
    {
        var x = RandomRows(41, 77, 23, 4f);
        var dy = RandomRows(41, 77, 24, 1f);
        foreach (var path in GeluPaths)
            OnGeluPath(path, () =>
            {
                var onZeros = new float[x.Length];
                GeluKernel.GeluBackward(x, dy, onZeros);
                var fresh = Enumerable.Repeat(float.NaN, x.Length).ToArray(); // garbage that must not be read
                GeluKernel.GeluBackward(x, dy, fresh, accumulate: false);
                Assert.Equal(onZeros, fresh);
            });
    }

    // The tail moves of the 8-lane row kernels: the first count elements, the fill in the other lanes, and a store
    // that writes nothing past count (the neighbours keep their values).
    [Fact]
    public unsafe void TailLoadAndStoreTouchOnlyTheirElements()
    {
        var buf = Enumerable.Range(1, 24).Select(i => (float)i).ToArray();
        fixed (float* p = buf)
            for (int count = 0; count <= 8; count++)
            {
                var v = RowSimd.LoadTail(p + 8, count, -7f);
                for (int i = 0; i < 8; i++) Assert.Equal(i < count ? 9f + i : -7f, v[i]);
                var dst = Enumerable.Repeat(-1f, 24).ToArray();
                fixed (float* d = dst) RowSimd.StoreTail(System.Runtime.Intrinsics.Vector256.Create(100f, 101, 102, 103, 104, 105, 106, 107), d + 8, count);
                for (int i = 0; i < 24; i++) Assert.Equal(i >= 8 && i < 8 + count ? 92f + i : -1f, dst[i]);
            }
        Assert.Equal(5f, RowSimd.HorizontalMax(System.Runtime.Intrinsics.Vector256.Create(1f, -2, 5, 3, -9, 4, 0, 2)));
        Assert.Equal(-0.5f, RowSimd.HorizontalMax(System.Runtime.Intrinsics.Vector256.Create(-3f, -0.5f, -9, -1, -2, -4, -8, -7)));
        // A NaN lane may be dropped (the native max); the softmax rows turn NaN through their sums instead
        // (SoftmaxRowsWithSignedZerosNaNAndInfinity).
    }
}
