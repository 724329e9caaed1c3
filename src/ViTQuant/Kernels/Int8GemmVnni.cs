// AVX-512 VNNI integer GEMM: C[M, N] (float) = FMA((float)(Σ_k u[m, k]·w[k, n] + corr[n]), scale[n], bias[n]),
// u unsigned 8-bit activation codes (code − q_min), w signed 8-bit weights, the sum in int32.
//
// Why machine code. The Zen 4 machines here have AVX-512 VNNI, whose vpdpbusd multiplies 64 u8×s8 pairs and
// adds them, four to a lane, into 16 int32 accumulators in one instruction, without saturation (exact). .NET 10
// exposes VNNI only as the VEX AvxVnni (not on Zen 4) and AvxVnniInt8/Avx10v2; no API emits the EVEX form. So
// the micro-kernel is written in assembly (tools/int8vnni/vnni8x32.s, assembled by tools/int8vnni/gen.sh into
// the bytes of Code below), copied once into an executable page (mmap + mprotect, Linux x64 only) and called
// through an unmanaged function pointer. Everything around it (packing, threading, the epilogue) is C#. On any
// other OS or CPU IsSupported is false and the runtime keeps the int16 vpmaddwd kernels (Int8Gemm.cs).
//
// Zero points. The activation integer is a = code − z = u − z_u with u = code − q_min ∈ [0, 255] and
// z_u = z − q_min; the weights are symmetric integers k ∈ [−128, 127] (a layer whose k leave that range keeps
// the int16 path). Σ_k a·w = Σ_k u·w − z_u·Σ_k w, so corr[n] = −z_u·colsum[n] (int32, exact), added to the
// accumulators before the conversion: the int32 sum, and so every output bit, equals the int16 kernels' and the
// reference's.
//
// Packed B (PackedB8, built once per weight): ⌈N/32⌉ panels of 32 columns; within a panel, for each k-quad q
// (K rounded up to a multiple of 4, Kq = ⌈K/4⌉ quads), 128 bytes [c0k0..c0k3 c1k0..c1k3 … c31k0..c31k3]:
//   Bp[panel·Kq·128 + q·128 + 4c + j] = w[4q + j, panel·32 + c], zero past K and N.
// A is u8 row-major [M, lda] with lda ≥ 4·Kq; bytes past K are ignored (their B rows are zero).
// Micro-tile: 8 rows × 32 columns (16 zmm accumulators); a short last tile reads its rows from a zeroed copy.
// The scalar twin (TileScalar) walks the same packed layout; Reference8 multiplies unpacked B.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ViTQuant.Kernels;

/// <summary>Signed 8-bit B packed for <see cref="Int8GemmVnni"/> (file header layout), with its column sums.</summary>
internal sealed class PackedB8
{
    /// <summary>Reduction length and column count of the logical B [K, N].</summary>
    public int K { get; }
    public int N { get; }
    /// <summary>Number of k-quads (⌈K/4⌉); A's row stride must be at least 4·Kq.</summary>
    public int Kq => (K + 3) / 4;
    /// <summary>Number of 32-column panels.</summary>
    public int Panels => (N + Int8Gemm.NR - 1) / Int8Gemm.NR;
    /// <summary>Σ_k B[k, n] for each column, padded with zeros to whole panels.</summary>
    public int[] ColumnSums { get; }
    internal readonly sbyte[] Buf;
    internal readonly int Offset;
    /// <summary>The packed bytes (Panels·Kq·128).</summary>
    public ReadOnlySpan<sbyte> Data => Buf.AsSpan(Offset, Panels * Kq * 128);

    private PackedB8(int k, int n)
    {
        K = k;
        N = n;
        int len = Panels * Kq * 128;
        Buf = GC.AllocateArray<sbyte>(len + 64, pinned: true); // 64-byte aligned start: one cache line a zmm load
        unsafe { fixed (sbyte* p = Buf) Offset = (int)((64 - ((nint)p & 63)) & 63); }
        ColumnSums = new int[Panels * Int8Gemm.NR];
    }

    /// <summary>
    /// Packs B given as W [N, K] row-major (row c = column c of B: a linear layer's weight), or returns null
    /// when a value lies outside [−128, 127] (the caller keeps the int16 kernels).
    /// </summary>
    public static PackedB8? FromRowsOfColumns(ReadOnlySpan<short> w, int n, int k, int ldw)
    {
        if (ldw < k || (n > 0 && w.Length < (long)(n - 1) * ldw + k)) throw new ArgumentException($"W has {w.Length} values for {n}×{k} with stride {ldw}");
        var pb = new PackedB8(k, n);
        var d = pb.Buf.AsSpan(pb.Offset);
        int kq = pb.Kq;
        for (int c = 0; c < n; c++)
        {
            int baseIdx = c / Int8Gemm.NR * kq * 128 + c % Int8Gemm.NR * 4, sum = 0;
            for (int i = 0; i < k; i++)
            {
                short v = w[c * ldw + i];
                if (v < sbyte.MinValue || v > sbyte.MaxValue) return null;
                d[baseIdx + i / 4 * 128 + i % 4] = (sbyte)v;
                sum += v;
            }
            pb.ColumnSums[c] = sum;
        }
        return pb;
    }

    /// <summary>An empty buffer for B [K, N], to be filled by <see cref="PackShiftedColumns"/> or <see cref="PackShiftedRows"/> (reused when the shape matches).</summary>
    public static PackedB8 For(int k, int n, PackedB8? reuse) => reuse != null && reuse.K == k && reuse.N == n ? reuse : new PackedB8(k, n);

    /// <summary>
    /// Packs B[k, c] = u[c·ldu + k] − 128 for c &lt; N, k &lt; K (unsigned codes of rows, e.g. k tokens [N, dh], as columns;
    /// the −128 shift makes them signed bytes) and sets ColumnSums to Σ_k u (the unshifted sums). Zero past K.
    /// </summary>
    public unsafe void PackShiftedColumns(ReadOnlySpan<byte> u, int ldu)
    {
        if (ldu < K || (N > 0 && u.Length < (long)(N - 1) * ldu + K)) throw new ArgumentException($"u has {u.Length} values for {N}×{K} with stride {ldu}");
        int kq = Kq, full = K / 4;
        var d = Buf.AsSpan(Offset, Panels * kq * 128);
        if (K % 4 != 0 || N % Int8Gemm.NR != 0) d.Clear();
        fixed (byte* pu = u)
        fixed (sbyte* pd = d)
        {
            for (int c = 0; c < N; c++)
            {
                byte* row = pu + (nint)c * ldu;
                uint* dst = (uint*)(pd + c / Int8Gemm.NR * kq * 128 + c % Int8Gemm.NR * 4);
                int sum = 0, i = 0;
                for (int q = 0; q < full; q++) dst[q * 32] = *(uint*)(row + 4 * q) ^ 0x80808080u;
                if (Avx512BW.IsSupported)
                {
                    var vs = Vector512<ulong>.Zero;
                    for (; i + 64 <= K; i += 64) vs += Avx512BW.SumAbsoluteDifferences(Vector512.Load(row + i), Vector512<byte>.Zero).AsUInt64();
                    sum = (int)Vector512.Sum(vs);
                }
                for (; i < K; i++) sum += row[i];
                for (int t = full * 4; t < K; t++) ((sbyte*)dst)[full * 128 + t % 4] = (sbyte)(row[t] - 128);
                ColumnSums[c] = sum;
            }
        }
    }

    /// <summary>
    /// Packs B[k, n] = u[k·ldu + n] − 128 for k &lt; K, n &lt; N (unsigned codes given row-major, e.g. v [N tokens, dh])
    /// and sets ColumnSums to Σ_k u[k, n] (unshifted). Zero past K.
    /// </summary>
    public unsafe void PackShiftedRows(ReadOnlySpan<byte> u, int ldu)
    {
        if (ldu < N || (K > 0 && u.Length < (long)(K - 1) * ldu + N)) throw new ArgumentException($"u has {u.Length} values for {K}×{N} with stride {ldu}");
        int kq = Kq, NR = Int8Gemm.NR;
        var d = Buf.AsSpan(Offset, Panels * kq * 128);
        if (K % 4 != 0 || N % NR != 0) d.Clear();
        Array.Clear(ColumnSums);
        bool simd = System.Runtime.Intrinsics.X86.Sse2.IsSupported && Avx512F.IsSupported;
        fixed (byte* pu = u)
        fixed (sbyte* pd = d)
        fixed (int* cs = ColumnSums)
        {
            int k = 0, n16 = simd ? N & ~15 : 0;
            var flip = Vector128.Create((byte)0x80);
            // Whole quads of rows, 16 columns at a time: a 4×16 byte interleave (column c's four k in four adjacent bytes).
            for (; k + 4 <= K; k += 4)
            {
                byte* r0 = pu + (nint)k * ldu, r1 = r0 + ldu, r2 = r1 + ldu, r3 = r2 + ldu;
                sbyte* dq = pd + k / 4 * 128;
                for (int n = 0; n < n16; n += 16)
                {
                    var a = Vector128.Load(r0 + n) ^ flip; var b = Vector128.Load(r1 + n) ^ flip;
                    var c = Vector128.Load(r2 + n) ^ flip; var e = Vector128.Load(r3 + n) ^ flip;
                    var abLo = System.Runtime.Intrinsics.X86.Sse2.UnpackLow(a, b).AsInt16(); var abHi = System.Runtime.Intrinsics.X86.Sse2.UnpackHigh(a, b).AsInt16();
                    var ceLo = System.Runtime.Intrinsics.X86.Sse2.UnpackLow(c, e).AsInt16(); var ceHi = System.Runtime.Intrinsics.X86.Sse2.UnpackHigh(c, e).AsInt16();
                    sbyte* o = dq + n / NR * kq * 128 + n % NR * 4; // 16 columns never straddle a 32-column panel
                    System.Runtime.Intrinsics.X86.Sse2.UnpackLow(abLo, ceLo).Store((short*)o);
                    System.Runtime.Intrinsics.X86.Sse2.UnpackHigh(abLo, ceLo).Store((short*)(o + 16));
                    System.Runtime.Intrinsics.X86.Sse2.UnpackLow(abHi, ceHi).Store((short*)(o + 32));
                    System.Runtime.Intrinsics.X86.Sse2.UnpackHigh(abHi, ceHi).Store((short*)(o + 48));
                }
                for (int j = 0; j < 4; j++)
                {
                    byte* row = pu + (nint)(k + j) * ldu;
                    for (int n = n16; n < N; n++) pd[k / 4 * 128 + j + n / NR * kq * 128 + n % NR * 4] = (sbyte)(row[n] - 128);
                }
            }
            for (; k < K; k++)
            {
                byte* row = pu + (nint)k * ldu;
                for (int n = 0; n < N; n++) pd[k / 4 * 128 + k % 4 + n / NR * kq * 128 + n % NR * 4] = (sbyte)(row[n] - 128);
            }
            // Column sums of the unshifted codes, 16 int32 lanes at a time.
            for (int n = 0; n < n16; n += 16)
            {
                var acc = Vector512<int>.Zero;
                for (int kk = 0; kk < K; kk++) acc += Avx512F.ConvertToVector512Int32(Vector128.Load(pu + (nint)kk * ldu + n));
                acc.Store(cs + n);
            }
            for (int n = n16; n < N; n++)
            {
                int sum = 0;
                for (int kk = 0; kk < K; kk++) sum += pu[(nint)kk * ldu + n];
                cs[n] = sum;
            }
        }
    }

    /// <summary>corr[n] = −zeroU·ColumnSums[n]: the epilogue term of an activation grid whose unsigned codes u have a = u − zeroU.</summary>
    public int[] Correction(int zeroU) => ColumnSums.Select(s => -zeroU * s).ToArray();
}

/// <summary>The AVX-512 VNNI integer GEMM (file header).</summary>
internal static unsafe class Int8GemmVnni
{
    /// <summary>Rows per micro-tile.</summary>
    public const int MR = 8;
    private const int NR = Int8Gemm.NR;

    /// <summary>True when this process can run the machine-code kernel (x64 Linux, AVX-512BW and AVX-512 VNNI).</summary>
    public static bool IsSupported => Kernel != null;

    /// <summary>True when the CPU reports AVX-512 VNNI (CPUID leaf 7, ECX bit 11).</summary>
    public static bool CpuHasVnni()
    {
        if (!X86Base.IsSupported) return false;
        var (_, _, ecx, _) = X86Base.CpuId(7, 0);
        return (ecx & (1 << 11)) != 0;
    }

    // tools/int8vnni/vnni8x32.s, assembled by tools/int8vnni/gen.sh.
    private static readonly byte[] Code =
    {
        0x62, 0xF1, 0x7D, 0x48, 0xEF, 0xC0, 0x62, 0xF1, 0x75, 0x48, 0xEF, 0xC9, 0x62, 0xF1, 0x6D, 0x48, 0xEF, 0xD2, 0x62, 0xF1, 0x65, 0x48, 0xEF, 0xDB,
        0x62, 0xF1, 0x5D, 0x48, 0xEF, 0xE4, 0x62, 0xF1, 0x55, 0x48, 0xEF, 0xED, 0x62, 0xF1, 0x4D, 0x48, 0xEF, 0xF6, 0x62, 0xF1, 0x45, 0x48, 0xEF, 0xFF,
        0x62, 0x51, 0x3D, 0x48, 0xEF, 0xC0, 0x62, 0x51, 0x35, 0x48, 0xEF, 0xC9, 0x62, 0x51, 0x2D, 0x48, 0xEF, 0xD2, 0x62, 0x51, 0x25, 0x48, 0xEF, 0xDB,
        0x62, 0x51, 0x1D, 0x48, 0xEF, 0xE4, 0x62, 0x51, 0x15, 0x48, 0xEF, 0xED, 0x62, 0x51, 0x0D, 0x48, 0xEF, 0xF6, 0x62, 0x51, 0x05, 0x48, 0xEF, 0xFF,
        0x4C, 0x8D, 0x0C, 0x76, 0x4C, 0x8D, 0x14, 0xB7, 0x62, 0xE1, 0x7E, 0x48, 0x6F, 0x02, 0x62, 0xE1, 0x7E, 0x48, 0x6F, 0x4A, 0x01, 0x62, 0xE2, 0x7D,
        0x48, 0x58, 0x17, 0x62, 0xE2, 0x7D, 0x48, 0x58, 0x1C, 0x37, 0x62, 0xE2, 0x7D, 0x48, 0x58, 0x24, 0x77, 0x62, 0xA2, 0x7D, 0x48, 0x58, 0x2C, 0x0F,
        0x62, 0xC2, 0x7D, 0x48, 0x58, 0x32, 0x62, 0xC2, 0x7D, 0x48, 0x58, 0x3C, 0x32, 0x62, 0x42, 0x7D, 0x48, 0x58, 0x04, 0x72, 0x62, 0x02, 0x7D, 0x48,
        0x58, 0x0C, 0x0A, 0x62, 0xB2, 0x6D, 0x40, 0x50, 0xC0, 0x62, 0xB2, 0x6D, 0x40, 0x50, 0xC9, 0x62, 0xB2, 0x65, 0x40, 0x50, 0xD0, 0x62, 0xB2, 0x65,
        0x40, 0x50, 0xD9, 0x62, 0xB2, 0x5D, 0x40, 0x50, 0xE0, 0x62, 0xB2, 0x5D, 0x40, 0x50, 0xE9, 0x62, 0xB2, 0x55, 0x40, 0x50, 0xF0, 0x62, 0xB2, 0x55,
        0x40, 0x50, 0xF9, 0x62, 0x32, 0x4D, 0x40, 0x50, 0xC0, 0x62, 0x32, 0x4D, 0x40, 0x50, 0xC9, 0x62, 0x32, 0x45, 0x40, 0x50, 0xD0, 0x62, 0x32, 0x45,
        0x40, 0x50, 0xD9, 0x62, 0x32, 0x3D, 0x40, 0x50, 0xE0, 0x62, 0x32, 0x3D, 0x40, 0x50, 0xE9, 0x62, 0x32, 0x35, 0x40, 0x50, 0xF0, 0x62, 0x32, 0x35,
        0x40, 0x50, 0xF9, 0x48, 0x83, 0xC7, 0x04, 0x49, 0x83, 0xC2, 0x04, 0x48, 0x83, 0xEA, 0x80, 0x48, 0xFF, 0xC9, 0x0F, 0x85, 0x48, 0xFF, 0xFF, 0xFF,
        0x62, 0xD1, 0x7E, 0x48, 0x7F, 0x00, 0x62, 0xD1, 0x7E, 0x48, 0x7F, 0x48, 0x01, 0x62, 0xD1, 0x7E, 0x48, 0x7F, 0x50, 0x02, 0x62, 0xD1, 0x7E, 0x48,
        0x7F, 0x58, 0x03, 0x62, 0xD1, 0x7E, 0x48, 0x7F, 0x60, 0x04, 0x62, 0xD1, 0x7E, 0x48, 0x7F, 0x68, 0x05, 0x62, 0xD1, 0x7E, 0x48, 0x7F, 0x70, 0x06,
        0x62, 0xD1, 0x7E, 0x48, 0x7F, 0x78, 0x07, 0x62, 0x51, 0x7E, 0x48, 0x7F, 0x40, 0x08, 0x62, 0x51, 0x7E, 0x48, 0x7F, 0x48, 0x09, 0x62, 0x51, 0x7E,
        0x48, 0x7F, 0x50, 0x0A, 0x62, 0x51, 0x7E, 0x48, 0x7F, 0x58, 0x0B, 0x62, 0x51, 0x7E, 0x48, 0x7F, 0x60, 0x0C, 0x62, 0x51, 0x7E, 0x48, 0x7F, 0x68,
        0x0D, 0x62, 0x51, 0x7E, 0x48, 0x7F, 0x70, 0x0E, 0x62, 0x51, 0x7E, 0x48, 0x7F, 0x78, 0x0F, 0xC5, 0xF8, 0x77, 0xC3
    };

    // Declared after Code: static fields initialise in text order.
    private static readonly delegate* unmanaged[SuppressGCTransition]<byte*, nint, sbyte*, nint, int*, void> Kernel = Load();

    [DllImport("libc", SetLastError = true)] private static extern nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);
    [DllImport("libc", SetLastError = true)] private static extern int mprotect(nint addr, nuint length, int prot);

    private static delegate* unmanaged[SuppressGCTransition]<byte*, nint, sbyte*, nint, int*, void> Load()
    {
        if (Environment.GetEnvironmentVariable("VITQ_NO_VNNI") == "1") return null;
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return null;
        if (!Avx512BW.IsSupported || !Avx512F.IsSupported || !CpuHasVnni()) return null;
        try
        {
            const int Read = 1, Write = 2, Exec = 4, Private = 2, Anonymous = 0x20;
            nuint size = 4096;
            nint page = mmap(0, size, Read | Write, Private | Anonymous, -1, 0);
            if (page == -1 || page == 0) return null;
            Marshal.Copy(Code, 0, page, Code.Length);
            if (mprotect(page, size, Read | Exec) != 0) return null;
            return (delegate* unmanaged[SuppressGCTransition]<byte*, nint, sbyte*, nint, int*, void>)page;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or MarshalDirectiveException)
        {
            return null;
        }
    }

    /// <summary>
    /// c[m, n] = FMA((float)(Σ_k a[m, k]·B[k, n] + corr[n]), scale[n], bias[n]) for m &lt; M, n &lt; B.N (row stride ldc).
    /// a: u8 [M, lda] with lda ≥ 4·B.Kq. corr/scale/bias: B.Panels·32 values. vnni false runs the scalar twin on
    /// the same packed layout. Parallel over row × column blocks unless inside a parallel body; no allocation.
    /// Throws ArgumentException on short buffers, InvalidOperationException when vnni is asked for and unsupported.
    /// </summary>
    public static void Gemm(ReadOnlySpan<byte> a, int lda, int m, PackedB8 b, ReadOnlySpan<int> corr, ReadOnlySpan<float> scale, ReadOnlySpan<float> bias,
        Span<float> c, int ldc, bool vnni = true) => Gemm(a, lda, m, b, default, corr, scale, bias, c, ldc, vnni);

    /// <summary>
    /// As the other overload, with a per-row integer term as well: c[m, n] = FMA((float)(Σ_k a·B + rowCorr[m] + corr[n]), scale[n], bias[n]).
    /// rowCorr: M values, or empty for none (the attention products, whose B operand is shifted too: Int8Attention8).
    /// </summary>
    public static void Gemm(ReadOnlySpan<byte> a, int lda, int m, PackedB8 b, ReadOnlySpan<int> rowCorr, ReadOnlySpan<int> corr, ReadOnlySpan<float> scale, ReadOnlySpan<float> bias,
        Span<float> c, int ldc, bool vnni = true)
    {
        if (!rowCorr.IsEmpty && rowCorr.Length < m) throw new ArgumentException($"rowCorr has {rowCorr.Length} values for {m} rows");
        if (vnni && !IsSupported) throw new InvalidOperationException("the AVX-512 VNNI kernel is not supported on this machine");
        int kb = b.Kq * 4;
        if (lda < kb || (m > 0 && a.Length < (long)(m - 1) * lda + kb)) throw new ArgumentException($"A has {a.Length} values for {m} rows of stride {lda}, K {b.K} (rows of {kb})");
        if (ldc < b.N || (m > 0 && c.Length < (long)(m - 1) * ldc + b.N)) throw new ArgumentException($"C has {c.Length} values for {m}×{b.N} with stride {ldc}");
        int np = b.Panels * NR;
        if (scale.Length < np || bias.Length < np || corr.Length < np) throw new ArgumentException($"corr/scale/bias have {corr.Length}/{scale.Length}/{bias.Length} values, need {np}");
        if (m == 0 || b.N == 0) return;
        const int rowBlock = 64, colBlock = 2;
        int rowBlocks = (m + rowBlock - 1) / rowBlock, colBlocks = (b.Panels + colBlock - 1) / colBlock;
        fixed (byte* pa = a)
        fixed (sbyte* pbD = &b.Buf[b.Offset])
        fixed (float* pc = c, psc = scale, pbi = bias)
        fixed (int* pco = corr, prc = rowCorr)
        {
            int* Rc = prc;
            byte* A = pa;
            sbyte* Bd = pbD;
            float* C = pc, S = psc, Bi = pbi;
            int* Co = pco;
            int kq = b.Kq, n = b.N;
            Parallelism.For(0, rowBlocks * colBlocks, t =>
            {
                int r0 = t / colBlocks * rowBlock, r1 = Math.Min(m, r0 + rowBlock);
                int p0 = t % colBlocks * colBlock, p1 = Math.Min(b.Panels, p0 + colBlock);
                int* acc = stackalloc int[MR * NR];
                // The kernel reads 8 rows: a short last tile reads a zeroed copy of its rows instead.
                bool shortTile = vnni && (r1 - r0) % MR != 0;
                byte[]? heap = shortTile && MR * kb > 16384 ? GC.AllocateArray<byte>(MR * kb, pinned: true) : null;
                byte* copy = stackalloc byte[shortTile && heap == null ? MR * kb : 0];
                if (heap != null) copy = (byte*)Unsafe.AsPointer(ref heap[0]); // pinned: the address stays valid
                for (int r = r0; r < r1; r += MR)
                {
                    int rows = Math.Min(MR, r1 - r);
                    byte* ar = A + (nint)r * lda;
                    byte* src = ar;
                    nint ld = lda;
                    if (rows < MR && vnni)
                    {
                        new Span<byte>(copy, MR * kb).Clear();
                        for (int i = 0; i < rows; i++) Buffer.MemoryCopy(ar + (nint)i * lda, copy + i * kb, kb, kb);
                        src = copy;
                        ld = kb;
                    }
                    for (int panel = p0; panel < p1; panel++)
                    {
                        sbyte* bp = Bd + (nint)panel * kq * 128;
                        int col0 = panel * NR, cols = Math.Min(NR, n - col0);
                        if (vnni) Kernel(src, ld, bp, kq, acc);
                        else TileScalar(ar, lda, rows, bp, kq, acc);
                        Epilogue(acc, rows, Rc == null ? null : Rc + r, Co + col0, S + col0, Bi + col0, C + (nint)r * ldc + col0, ldc, cols);
                    }
                }
                GC.KeepAlive(heap);
            });
        }
    }

    /// <summary>sums[r] = Σ_j u[r·ldu + j] for r &lt; rows, j &lt; cols (the row terms of the attention products).</summary>
    public static void RowSums(ReadOnlySpan<byte> u, int ldu, int rows, int cols, Span<int> sums)
    {
        if (rows == 0) return;
        if (u.Length < (long)(rows - 1) * ldu + cols || sums.Length < rows) throw new ArgumentException($"row sums: buffers too short for {rows}×{cols}");
        fixed (byte* pu = u)
        {
            for (int r = 0; r < rows; r++)
            {
                byte* row = pu + (nint)r * ldu;
                int j = 0;
                var acc = Vector512<ulong>.Zero;
                if (Avx512BW.IsSupported)
                    for (; j + 64 <= cols; j += 64) acc += Avx512BW.SumAbsoluteDifferences(Vector512.Load(row + j), Vector512<byte>.Zero).AsUInt64();
                int s = (int)Vector512.Sum(acc);
                for (; j < cols; j++) s += row[j];
                sums[r] = s;
            }
        }
    }

    /// <summary>The scalar twin of the kernel: acc[r·32 + c] over the same packed walk (rows &lt; 8 only).</summary>
    private static void TileScalar(byte* a, int lda, int rows, sbyte* bp, int kq, int* acc)
    {
        for (int r = 0; r < rows; r++)
        {
            int* ar = acc + r * NR;
            for (int j = 0; j < NR; j++) ar[j] = 0;
            byte* arow = a + (nint)r * lda;
            for (int q = 0; q < kq; q++)
            {
                sbyte* bq = bp + q * 128;
                for (int j = 0; j < NR; j++)
                    ar[j] += arow[4 * q] * bq[4 * j] + arow[4 * q + 1] * bq[4 * j + 1] + arow[4 * q + 2] * bq[4 * j + 2] + arow[4 * q + 3] * bq[4 * j + 3];
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Epilogue(int* acc, int rows, int* rowCorr, int* corr, float* scale, float* bias, float* c, int ldc, int cols)
    {
        if (rowCorr != null)
        {
            // Fold the row term into the accumulators (integers: exact), then the column epilogue as usual.
            for (int r = 0; r < rows; r++)
            {
                var rc = Vector512.Create(rowCorr[r]);
                (Vector512.Load(acc + r * NR) + rc).Store(acc + r * NR);
                (Vector512.Load(acc + r * NR + 16) + rc).Store(acc + r * NR + 16);
            }
        }
        if (cols == NR)
        {
            var k0 = Vector512.Load(corr); var k1 = Vector512.Load(corr + 16);
            var s0 = Vector512.Load(scale); var s1 = Vector512.Load(scale + 16);
            var b0 = Vector512.Load(bias); var b1 = Vector512.Load(bias + 16);
            for (int r = 0; r < rows; r++)
            {
                int* ar = acc + r * NR;
                float* cr = c + (nint)r * ldc;
                Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(Vector512.Load(ar) + k0), s0, b0).Store(cr);
                Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(Vector512.Load(ar + 16) + k1), s1, b1).Store(cr + 16);
            }
            return;
        }
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++) c[(nint)r * ldc + j] = MathF.FusedMultiplyAdd(acc[r * NR + j] + corr[j], scale[j], bias[j]);
    }

    /// <summary>
    /// The reference twin: c[m, n] = FMA((float)(Σ_k a[m·lda + k]·b[k·ldb + n] + corr[n]), scale[n], bias[n]) with a
    /// plain triple loop over unpacked row-major B [K, N].
    /// </summary>
    public static void Reference(ReadOnlySpan<byte> a, int lda, int m, int k, ReadOnlySpan<sbyte> b, int ldb, int n,
        ReadOnlySpan<int> corr, ReadOnlySpan<float> scale, ReadOnlySpan<float> bias, Span<float> c, int ldc) =>
        Reference(a, lda, m, k, b, ldb, n, default, corr, scale, bias, c, ldc);

    /// <summary>The reference twin of the row-term overload (rowCorr empty: none).</summary>
    public static void Reference(ReadOnlySpan<byte> a, int lda, int m, int k, ReadOnlySpan<sbyte> b, int ldb, int n,
        ReadOnlySpan<int> rowCorr, ReadOnlySpan<int> corr, ReadOnlySpan<float> scale, ReadOnlySpan<float> bias, Span<float> c, int ldc)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                int acc = 0;
                for (int kk = 0; kk < k; kk++) acc += a[i * lda + kk] * b[kk * ldb + j];
                c[i * ldc + j] = MathF.FusedMultiplyAdd(acc + (rowCorr.IsEmpty ? 0 : rowCorr[i]) + corr[j], scale[j], bias[j]);
            }
    }
}
