// Managed SGEMM used when OpenBLAS is absent and inside parallel bodies.
// Row-major: each output row is a sum of scaled rows of op(B) (an axpy formulation), vectorised by
// TensorPrimitives. Parallel over row blocks when allowed.
using System.Numerics.Tensors;

namespace ViTQuant.Kernels;

internal static class ManagedGemm
{
    public static string Describe() => $"axpy rows, Vector{System.Numerics.Vector<float>.Count * 32}";

    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc, bool parallel)
    {
        // op(B) must be row-accessible: transpose it once into a K×N scratch when it is stored N×K.
        float[]? bt = null;
        if (transB)
        {
            bt = new float[k * n];
            for (int j = 0; j < n; j++)
                for (int p = 0; p < k; p++) bt[p * n + j] = b[j * ldb + p];
        }
        float[] aArr = a.ToArray(), bArr = bt ?? b.ToArray();
        int bStride = bt != null ? n : ldb;
        float[] cArr = c.ToArray();
        void Rows(int start, int end)
        {
            var row = new float[n];
            for (int i = start; i < end; i++)
            {
                Array.Clear(row);
                for (int p = 0; p < k; p++)
                {
                    float av = transA ? aArr[p * lda + i] : aArr[i * lda + p];
                    TensorPrimitives.MultiplyAdd(bArr.AsSpan(p * bStride, n), av, row, row);
                }
                var dst = cArr.AsSpan(i * ldc, n);
                if (beta == 0f) TensorPrimitives.Multiply(row, alpha, dst);
                else for (int j = 0; j < n; j++) dst[j] = alpha * row[j] + beta * dst[j];
            }
        }
        if (parallel) Parallelism.ForChunks(m, 16, Rows); else Rows(0, m);
        cArr.AsSpan(0, c.Length).CopyTo(c);
    }
}
