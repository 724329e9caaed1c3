// Integer GEMM for the int8 runtime: C[M, N] (float) = FMA((float)Σ_k A[m, k]·B[k, n], scale[n], bias[n]),
// with A and B small signed integers (8-bit codes minus their zero points) and the sum in int32.
//
// Names: M rows of A (tokens), N columns of B (output channels), K the reduction length.
//
// Which instruction. .NET 10 exposes VNNI only as AvxVnni (VEX, 256-bit: Alder Lake, Zen 5) and
// AvxVnniInt8/Avx10v2; there is no public Avx512Vnni class, so the EVEX vpdpbusd of AVX-512 VNNI CPUs
// (the Zen 4 machines here) cannot be emitted from C#. The fastest exact form .NET offers on those CPUs is
// AVX-512BW vpmaddwd (16-bit pairs → int32, 32 products per instruction). vpmaddubsw (u8×s8 → saturating
// int16 pairs) is not used: 2·255·128 = 65280 overflows int16 for 8-bit operands, so it is exact only for
// 7-bit weights or split activations, which costs as much as the int16 form. So every SIMD path here
// multiplies int16-widened operands with vpmaddwd: exact for any codes in [−32768, 32767] whose K-sums fit
// int32 (|a|, |b| ≤ 255 and K ≤ 33000 here). Where the VEX AVX-VNNI exists (AvxVnni.IsSupported: Alder Lake,
// Zen 5) its int16 form vpdpwssd fuses the multiply-add and the accumulation on the same layout. Signed operands also absorb both zero points for free: the
// runtime stores a − z_a and b − z_b directly, so no column-sum compensation is needed.
//
// Packed B (built once per weight, PackB*): ⌈N/32⌉ panels of 32 columns; within a panel, for each k pair
// p (K rounded up to even, Kp), 64 int16 [c0k0 c0k1 c1k0 c1k1 … c31k0 c31k1], zero past K and N:
//   Bp[panel·Kp·32 + p·64 + 2c + j] = B[2p + j, panel·32 + c].
// vpmaddwd of that row with the broadcast pair (A[m, 2p], A[m, 2p+1]) gives each column's two products
// summed, in column order. A is row-major int16 [M, lda] with lda ≥ Kp and A[m, K] = 0 when K is odd.
//
// Paths (IntGemmPath): Avx512 (4 rows × 32 columns, 8 zmm accumulators), AvxVnni (vpdpwssd, the AVX2 tile
// with multiply and add fused; not testable on the Zen 4 machines here, which lack the VEX form), Avx2 (4 rows
// × 16 columns, 8 ymm), Scalar (the same packed walk in plain C#); the reference twin (Reference) multiplies unpacked
// row-major B with a triple loop. All paths give identical bits: the int32 sums are exact and the
// epilogue is one fused multiply-add per element everywhere. Tests run every path this CPU supports.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

/// <summary>The integer GEMM implementations, fastest last.</summary>
public enum IntGemmPath
{
    /// <summary>Plain C# over the packed layout (runs everywhere).</summary>
    Scalar,
    /// <summary>AVX2 vpmaddwd + vpaddd, 4 rows × 16 columns per micro-tile.</summary>
    Avx2,
    /// <summary>AVX-VNNI vpdpwssd (VEX, 256-bit: the AVX2 tile with the multiply-add fused), for CPUs without AVX-512.</summary>
    AvxVnni,
    /// <summary>AVX-512BW vpmaddwd, 8 rows × 32 columns per micro-tile.</summary>
    Avx512,
    /// <summary>
    /// AVX-512 VNNI vpdpbusd on u8 activations × s8 weights (Int8GemmVnni.cs, machine code) for the linear layers
    /// whose weights fit 8 bits signed; everything else (attention products, wider weights) on the Avx512 kernel.
    /// </summary>
    Avx512Vnni,
}

/// <summary>B packed for <see cref="Int8Gemm"/> (file header layout): built once, read by every path.</summary>
internal sealed class PackedB
{
    /// <summary>Reduction length of the logical B [K, N].</summary>
    public int K { get; }
    /// <summary>Column count of the logical B [K, N].</summary>
    public int N { get; }
    /// <summary>K rounded up to even; the row stride A needs at least.</summary>
    public int Kp => (K + 1) & ~1;
    /// <summary>Number of 32-column panels.</summary>
    public int Panels => (N + Int8Gemm.NR - 1) / Int8Gemm.NR;
    /// <summary>The packed values (Panels·Kp·32 int16).</summary>
    public Span<short> Data => _buf.AsSpan(_offset, _length);

    // A pinned array (never moved by the GC) with the data starting on a 64-byte boundary: every zmm load of
    // a panel row then reads one cache line. Unaligned, half of them straddle two lines, and the kernel's
    // speed swung by 2–4× from one allocation to the next.
    private readonly short[] _buf;
    private readonly int _offset, _length;

    internal PackedB(int k, int n, int length)
    {
        K = k;
        N = n;
        _length = length;
        _buf = GC.AllocateArray<short>(length + 32, pinned: true);
        unsafe
        {
            fixed (short* p = _buf) _offset = (int)((64 - ((nint)p & 63)) & 63) / 2;
        }
    }

    /// <summary>Packs B given as W [N, K] row-major (a linear layer's weight, or k [tokens, dh]: row c = column c of B), into a new or reused PackedB.</summary>
    public static PackedB FromRowsOfColumns(ReadOnlySpan<short> w, int n, int k, int ldw, PackedB? reuse = null)
    {
        if (ldw < k || (n > 0 && w.Length < (long)(n - 1) * ldw + k)) throw new ArgumentException($"W has {w.Length} values for {n}×{k} with stride {ldw}");
        var pb = Alloc(k, n, reuse);
        int kp = pb.Kp, NR = Int8Gemm.NR;
        var dst = pb.Data;
        if ((k & 1) != 0 || n % NR != 0) dst.Clear(); // zero padding; full panels of even K are overwritten entirely
        // One k pair of a column is two adjacent int16 in both layouts: move them as one int32.
        var d32 = System.Runtime.InteropServices.MemoryMarshal.Cast<short, int>(dst);
        int pairs = k >> 1;
        for (int c = 0; c < n; c++)
        {
            int baseIdx = (c / NR) * kp * NR / 2 + c % NR;
            var row = w.Slice(c * ldw, k);
            var r32 = System.Runtime.InteropServices.MemoryMarshal.Cast<short, int>(row[..(2 * pairs)]);
            for (int p = 0; p < pairs; p++) d32[baseIdx + p * NR] = r32[p];
            if ((k & 1) != 0) dst[2 * (baseIdx + pairs * NR)] = row[k - 1];
        }
        return pb;
    }

    /// <summary>Allocates (or reuses) a packed buffer for B [K, N].</summary>
    internal static PackedB Alloc(int k, int n, PackedB? reuse)
    {
        if (reuse != null && reuse.K == k && reuse.N == n) return reuse;
        int kp = (k + 1) & ~1, panels = (n + Int8Gemm.NR - 1) / Int8Gemm.NR;
        long size = (long)panels * kp * Int8Gemm.NR;
        if (size > Array.MaxLength) throw new ArgumentException($"B [{k}, {n}] is too large to pack");
        return new PackedB(k, n, (int)size);
    }

    /// <summary>Packs B[k, n] given row-major with row stride ldb into a new or reused PackedB.</summary>
    public static PackedB FromRows(ReadOnlySpan<short> b, int k, int n, int ldb, PackedB? reuse = null)
    {
        if (ldb < n || (k > 0 && b.Length < (long)(k - 1) * ldb + n)) throw new ArgumentException($"B has {b.Length} values for {k}×{n} with stride {ldb}");
        var pb = Alloc(k, n, reuse);
        int kp = pb.Kp, NR = Int8Gemm.NR;
        var dst = pb.Data;
        if ((k & 1) != 0 || n % NR != 0) dst.Clear();
        for (int kk = 0; kk < k; kk++)
        {
            var row = b.Slice(kk * ldb, n);
            int off = (kk >> 1) * 2 * NR + (kk & 1);
            for (int panel = 0, c = 0; c < n; panel++)
            {
                var d = dst.Slice(panel * kp * NR + off);
                int end = Math.Min(n, c + NR);
                for (int cc = 0; c < end; c++, cc += 2) d[cc] = row[c];
            }
        }
        return pb;
    }
}

/// <summary>Integer GEMM with a fused dequantisation epilogue (file header).</summary>
public static unsafe class Int8Gemm
{
    /// <summary>Columns per packed panel.</summary>
    internal const int NR = 32;

    /// <summary>Environment variable that forces a path (scalar, avx2, avxvnni, avx512, avx512vnni), for tests and comparisons.</summary>
    internal const string PathVariable = "VITQ_INT8_KERNEL";

    private static IntGemmPath? _forced;
    private static bool _envRead; // read lazily: a bad value must surface as a ViTQuantException, not a type-initializer failure

    /// <summary>True when this CPU (and .NET) can run the path.</summary>
    internal static bool IsSupported(IntGemmPath p) => p switch
    {
        IntGemmPath.Scalar => true,
        IntGemmPath.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        IntGemmPath.AvxVnni => AvxVnni.IsSupported && Avx2.IsSupported && Fma.IsSupported,
        IntGemmPath.Avx512 => Avx512BW.IsSupported && Avx512F.IsSupported,
        IntGemmPath.Avx512Vnni => Int8GemmVnni.IsSupported,
        _ => false,
    };

    /// <summary>The fastest supported path.</summary>
    internal static IntGemmPath Best =>
        IsSupported(IntGemmPath.Avx512Vnni) ? IntGemmPath.Avx512Vnni :
        IsSupported(IntGemmPath.Avx512) ? IntGemmPath.Avx512 :
        IsSupported(IntGemmPath.AvxVnni) ? IntGemmPath.AvxVnni :
        IsSupported(IntGemmPath.Avx2) ? IntGemmPath.Avx2 : IntGemmPath.Scalar;

    /// <summary>Every path this machine supports, slowest first.</summary>
    internal static IReadOnlyList<IntGemmPath> SupportedPaths => Enum.GetValues<IntGemmPath>().Where(IsSupported).ToArray();

    /// <summary>
    /// The path used by default: <see cref="Best"/> unless lowered by <see cref="PathVariable"/> or by setting
    /// this property. Setting an unsupported path throws InvalidOperationException; null restores the default.
    /// </summary>
    public static IntGemmPath Path
    {
        get
        {
            if (!_envRead)
            {
                _forced = ParseEnv();
                _envRead = true;
            }
            return _forced ?? Best;
        }
        set
        {
            if (!IsSupported(value)) throw new InvalidOperationException($"int8 GEMM path {value} is not supported by this CPU");
            _forced = value;
            _envRead = true;
        }
    }

    /// <summary>Forgets a forced path (back to the environment variable or <see cref="Best"/>).</summary>
    internal static void ResetPath()
    {
        _forced = null;
        _envRead = false;
    }

    private static IntGemmPath? ParseEnv()
    {
        var v = Environment.GetEnvironmentVariable(PathVariable);
        if (string.IsNullOrWhiteSpace(v)) return null;
        if (!Enum.TryParse<IntGemmPath>(v, ignoreCase: true, out var p) || !Enum.IsDefined(p))
            throw new ViTQuantException($"{PathVariable}={v}: expected scalar, avx2, avxvnni, avx512 or avx512vnni");
        if (!IsSupported(p)) throw new ViTQuantException($"{PathVariable}={v}: this CPU does not support that path (supported: {string.Join(", ", SupportedPaths)})");
        return p;
    }

    /// <summary>For `vitq info`: the path in use and every supported path.</summary>
    public static string Describe() =>
        $"{Path} ({Instruction(Path)}); supported: {string.Join(", ", SupportedPaths)}; " +
        $"CPU AVX512-VNNI {Int8GemmVnni.CpuHasVnni()}, AVX-VNNI {AvxVnni.IsSupported} (no .NET 10 API emits EVEX vpdpbusd: machine-code kernel {(Int8GemmVnni.IsSupported ? "loaded" : "not available")})";

    private static string Instruction(IntGemmPath p) => p switch
    {
        IntGemmPath.Avx512Vnni => "zmm vpdpbusd on u8×s8 quads (machine code), zmm vpmaddwd for the rest",
        IntGemmPath.Avx512 => "zmm vpmaddwd on int16 pairs",
        IntGemmPath.AvxVnni => "ymm vpdpwssd on int16 pairs",
        IntGemmPath.Avx2 => "ymm vpmaddwd on int16 pairs",
        _ => "scalar int32",
    };

    /// <summary>
    /// c[m, n] = FMA((float)Σ_k a[m, k]·B[k, n], scale[n], bias[n]) for m &lt; M, n &lt; B.N (row stride ldc).
    /// a: int16 [M, lda] with lda ≥ B.Kp (a[m, K] must be 0 when K is odd). scale/bias: B.Panels·32 values
    /// (padded so the vector epilogue reads no further; <see cref="PadToPanels"/>). No allocation. Parallel over row × column blocks unless already inside a parallel body.
    /// Throws ArgumentException on short buffers.
    /// </summary>
    internal static void Gemm(ReadOnlySpan<short> a, int lda, int m, PackedB b, ReadOnlySpan<float> scale, ReadOnlySpan<float> bias,
        Span<float> c, int ldc, IntGemmPath? path = null)
    {
        var p = path ?? Path;
        if (!IsSupported(p)) throw new InvalidOperationException($"int8 GEMM path {p} is not supported by this CPU");
        if (lda < b.Kp || (m > 0 && a.Length < (long)(m - 1) * lda + b.Kp)) throw new ArgumentException($"A has {a.Length} values for {m} rows of stride {lda}, K {b.K}");
        if (ldc < b.N || (m > 0 && c.Length < (long)(m - 1) * ldc + b.N)) throw new ArgumentException($"C has {c.Length} values for {m}×{b.N} with stride {ldc}");
        int np = b.Panels * NR;
        if (scale.Length < np || bias.Length < np) throw new ArgumentException($"scale/bias have {scale.Length}/{bias.Length} values, need {np} (padded to whole panels: PadToPanels)");
        if (m == 0 || b.N == 0) return;
        if (p == IntGemmPath.Avx512Vnni) p = IntGemmPath.Avx512; // the int16 operands' kernel on VNNI machines
        int mr = p == IntGemmPath.Avx512 ? 8 : 4;
        int rowBlock = Math.Max(mr, 64 / mr * mr), colBlock = 2;
        int rowBlocks = (m + rowBlock - 1) / rowBlock, colBlocks = (b.Panels + colBlock - 1) / colBlock;
        fixed (short* pa = a, pbD = b.Data)
        fixed (float* pc = c, psc = scale, pbi = bias)
        {
            short* A = pa, Bd = pbD;
            float* C = pc, S = psc, Bi = pbi;
            int kp = b.Kp, n = b.N;
            Parallelism.For(0, rowBlocks * colBlocks, t =>
            {
                int r0 = t / colBlocks * rowBlock, r1 = Math.Min(m, r0 + rowBlock);
                int p0 = t % colBlocks * colBlock, p1 = Math.Min(b.Panels, p0 + colBlock);
                for (int panel = p0; panel < p1; panel++)
                {
                    short* bp = Bd + (nint)panel * kp * NR;
                    int col0 = panel * NR, cols = Math.Min(NR, n - col0);
                    for (int r = r0; r < r1; r += mr)
                    {
                        int rows = Math.Min(mr, r1 - r);
                        switch (p)
                        {
                            case IntGemmPath.Avx512: Tile8x32(A + (nint)r * lda, lda, rows, bp, kp, S + col0, Bi + col0, C + (nint)r * ldc + col0, ldc, cols); break;
                            case IntGemmPath.AvxVnni: Tile4x32Avx2<VnniMadd>(A + (nint)r * lda, lda, rows, bp, kp, S + col0, Bi + col0, C + (nint)r * ldc + col0, ldc, cols); break;
                            case IntGemmPath.Avx2: Tile4x32Avx2<Avx2Madd>(A + (nint)r * lda, lda, rows, bp, kp, S + col0, Bi + col0, C + (nint)r * ldc + col0, ldc, cols); break;
                            default: TileScalar(A + (nint)r * lda, lda, rows, bp, kp, S + col0, Bi + col0, C + (nint)r * ldc + col0, ldc, cols); break;
                        }
                    }
                }
            });
        }
    }

    /// <summary>values copied into a zero-padded array of whole panels (length ⌈n/32⌉·32), as Gemm's scale and bias.</summary>
    internal static float[] PadToPanels(ReadOnlySpan<float> values, int n)
    {
        var r = new float[(n + NR - 1) / NR * NR];
        values[..n].CopyTo(r);
        return r;
    }

    /// <summary>
    /// The reference twin: c[m, n] = FMA((float)Σ_k a[m·lda + k]·b[k·ldb + n], scale[n], bias[n]) with a
    /// plain triple loop over unpacked row-major B [K, N]. bias may be empty.
    /// </summary>
    internal static void Reference(ReadOnlySpan<short> a, int lda, int m, int k, ReadOnlySpan<short> b, int ldb, int n,
        ReadOnlySpan<float> scale, ReadOnlySpan<float> bias, Span<float> c, int ldc)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                int acc = 0;
                for (int kk = 0; kk < k; kk++) acc += a[i * lda + kk] * b[kk * ldb + j];
                c[i * ldc + j] = MathF.FusedMultiplyAdd(acc, scale[j], bias.Length == 0 ? 0f : bias[j]);
            }
    }

    private static void TileScalar(short* a, int lda, int rows, short* bp, int kp, float* scale, float* bias, float* c, int ldc, int cols)
    {
        int* acc = stackalloc int[NR];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < NR; j++) acc[j] = 0;
            short* ar = a + (nint)r * lda;
            for (int p = 0; p < kp; p += 2)
            {
                int a0 = ar[p], a1 = ar[p + 1];
                short* br = bp + (nint)p * NR;
                for (int j = 0; j < NR; j++) acc[j] += a0 * br[2 * j] + a1 * br[2 * j + 1];
            }
            for (int j = 0; j < cols; j++) c[(nint)r * ldc + j] = MathF.FusedMultiplyAdd(acc[j], scale[j], bias[j]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Madd(Vector512<int> acc, short* a, Vector512<short> b) =>
        Avx512F.Add(acc, Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)a).AsInt16(), b));

    private static void Tile8x32(short* a, int lda, int rows, short* bp, int kp, float* scale, float* bias, float* c, int ldc, int cols)
    {
        // Two 4-row halves: 8 zmm accumulators each. A single 8-row loop (16 accumulators) makes the .NET 10
        // JIT spill and reload every accumulator on each iteration, which runs at a third of this speed.
        Tile4x32(a, lda, Math.Min(rows, 4), bp, kp, scale, bias, c, ldc, cols);
        if (rows > 4) Tile4x32(a + 4 * lda, lda, rows - 4, bp, kp, scale, bias, c + 4 * ldc, ldc, cols);
    }

    private static void Tile4x32(short* a, int lda, int rows, short* bp, int kp, float* scale, float* bias, float* c, int ldc, int cols)
    {
        // Missing rows of a short tile read row 0 again (harmless) and are not stored.
        short* a0 = a, a1 = rows > 1 ? a + lda : a, a2 = rows > 2 ? a + 2 * lda : a, a3 = rows > 3 ? a + 3 * lda : a;
        Vector512<int> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        short* end = bp + (nint)kp * NR;
        for (; bp < end; bp += 2 * NR, a0 += 2, a1 += 2, a2 += 2, a3 += 2)
        {
            var b0 = Avx512F.LoadVector512(bp);
            var b1 = Avx512F.LoadVector512(bp + NR);
            c00 = Madd(c00, a0, b0); c01 = Madd(c01, a0, b1);
            c10 = Madd(c10, a1, b0); c11 = Madd(c11, a1, b1);
            c20 = Madd(c20, a2, b0); c21 = Madd(c21, a2, b1);
            c30 = Madd(c30, a3, b0); c31 = Madd(c31, a3, b1);
        }
        // Accumulators go through memory to the epilogue: passing them to a (non-inlined) helper makes the
        // JIT keep them in stack homes and store them on every loop iteration.
        int* acc = stackalloc int[4 * NR];
        c00.Store(acc); c01.Store(acc + 16); c10.Store(acc + NR); c11.Store(acc + NR + 16);
        c20.Store(acc + 2 * NR); c21.Store(acc + 2 * NR + 16); c30.Store(acc + 3 * NR); c31.Store(acc + 3 * NR + 16);
        Epilogue(acc, NR, rows, NR, scale, bias, c, ldc, cols);
    }

    /// <summary>c[r, j] = FMA((float)acc[r·lda + j], scale[j], bias[j]) for r &lt; rows, j &lt; cols (width ≤ 32, a multiple of 8).</summary>
    private static void Epilogue(int* acc, int ldacc, int rows, int width, float* scale, float* bias, float* c, int ldc, int cols)
    {
        for (int r = 0; r < rows; r++)
        {
            int* ar = acc + (nint)r * ldacc;
            float* cr = c + (nint)r * ldc;
            int j = 0;
            for (; j + 8 <= cols; j += 8)
                Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Vector256.Load(ar + j)), Vector256.Load(scale + j), Vector256.Load(bias + j)).Store(cr + j);
            for (; j < cols; j++) cr[j] = MathF.FusedMultiplyAdd(ar[j], scale[j], bias[j]);
        }
    }

    /// <summary>acc + pairwise int16 products of the broadcast A pair and B, summed into int32 lanes.</summary>
    private interface IMadd256
    {
        static abstract Vector256<int> Madd(Vector256<int> acc, short* a, Vector256<short> b);
    }

    private struct Avx2Madd : IMadd256
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Madd(Vector256<int> acc, short* a, Vector256<short> b) =>
            Avx2.Add(acc, Avx2.MultiplyAddAdjacent(Vector256.Create(*(int*)a).AsInt16(), b));
    }

    private struct VnniMadd : IMadd256
    {
        // vpdpwssd: the same sum without saturation (exact here), one instruction instead of two.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Madd(Vector256<int> acc, short* a, Vector256<short> b) =>
            AvxVnni.MultiplyWideningAndAdd(acc, Vector256.Create(*(int*)a).AsInt16(), b);
    }

    private static void Tile4x32Avx2<TM>(short* a, int lda, int rows, short* bp, int kp, float* scale, float* bias, float* c, int ldc, int cols)
        where TM : struct, IMadd256
    {
        short* a0 = a, a1 = rows > 1 ? a + lda : a, a2 = rows > 2 ? a + 2 * lda : a, a3 = rows > 3 ? a + 3 * lda : a;
        int* acc = stackalloc int[4 * 16];
        // Two half-panels of 16 columns each: 4 rows × 2 ymm accumulators per half.
        for (int h = 0; h < 2; h++)
        {
            int hc = Math.Min(16, cols - 16 * h);
            if (hc <= 0) break;
            short* b = bp + 32 * h;
            Vector256<int> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
            for (int p = 0; p < kp; p += 2, b += 2 * NR)
            {
                var b0 = Avx.LoadVector256(b);
                var b1 = Avx.LoadVector256(b + 16);
                c00 = TM.Madd(c00, a0 + p, b0); c01 = TM.Madd(c01, a0 + p, b1);
                c10 = TM.Madd(c10, a1 + p, b0); c11 = TM.Madd(c11, a1 + p, b1);
                c20 = TM.Madd(c20, a2 + p, b0); c21 = TM.Madd(c21, a2 + p, b1);
                c30 = TM.Madd(c30, a3 + p, b0); c31 = TM.Madd(c31, a3 + p, b1);
            }
            c00.Store(acc); c01.Store(acc + 8); c10.Store(acc + 16); c11.Store(acc + 24);
            c20.Store(acc + 32); c21.Store(acc + 40); c30.Store(acc + 48); c31.Store(acc + 56);
            Epilogue(acc, 16, rows, 16, scale + 16 * h, bias + 16 * h, c + 16 * h, ldc, hc);
        }
    }
}
