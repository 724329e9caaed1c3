// BenchmarkDotNet comparison of the two SGEMM backends on the shapes the models run.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- --filter '*GemmBench*'
// The quick table (`-- gemm`) in Program.cs uses the same shape list.
using BenchmarkDotNet.Attributes;
using ViTQuant.Kernels;

namespace ViTQuant.Bench;

/// <summary>One benchmarked product: C[M,N] = op(A)[M,K]·op(B)[K,N].</summary>
public sealed record GemmShape(string Name, int M, int N, int K, bool TransA, bool TransB)
{
    public override string ToString() => $"{Name} {M}x{N}x{K}{(TransA ? " Aᵀ" : "")}{(TransB ? " Bᵀ" : "")}";

    /// <summary>
    /// 1024³ (NN), then the ViT linear layers as the model calls them (x·Wᵀ with W stored
    /// [out, in], so B transposed): the Fashion-MNIST ViT (batch 64 × 50 tokens, width 128, MLP 512,
    /// qkv 384) and 224-px DeiT-Tiny (8 images × 197 tokens, width 192, MLP 768, qkv 576); last one
    /// attention head of DeiT-Tiny (q·kᵀ and probs·v, 197 tokens, head size 64). The backward's weight
    /// gradient gᵀ·x (A transposed, K = all rows) and input gradient g·W (NN) appear for qkv and fc1.
    /// </summary>
    public static readonly GemmShape[] All =
    {
        new("square", 1024, 1024, 1024, false, false),
        new("vit-fm qkv", 3200, 384, 128, false, true),
        new("vit-fm fc1", 3200, 512, 128, false, true),
        new("vit-fm fc2", 3200, 128, 512, false, true),
        new("deit-t qkv", 1576, 576, 192, false, true),
        new("deit-t fc1", 1576, 768, 192, false, true),
        new("deit-t fc2", 1576, 192, 768, false, true),
        new("vit-fm dW qkv", 384, 128, 3200, true, false),
        new("vit-fm dX fc1", 3200, 128, 512, false, false),
        new("deit-t dW fc1", 768, 192, 1576, true, false),
        new("deit-t dX fc1", 1576, 192, 768, false, false),
        new("deit-t q·kᵀ", 197, 197, 64, false, true),
        new("deit-t p·v", 197, 64, 197, false, false),
    };
}

[MemoryDiagnoser]
public class GemmBench
{
    private float[] _a = Array.Empty<float>(), _b = Array.Empty<float>(), _c = Array.Empty<float>();

    public static IEnumerable<GemmShape> Shapes => GemmShape.All;

    [ParamsSource(nameof(Shapes))]
    public GemmShape Shape { get; set; } = GemmShape.All[0];

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        _a = new float[Shape.M * Shape.K];
        _b = new float[Shape.K * Shape.N];
        _c = new float[Shape.M * Shape.N];
        for (int i = 0; i < _a.Length; i++) _a[i] = (float)(2 * rng.NextDouble() - 1);
        for (int i = 0; i < _b.Length; i++) _b[i] = (float)(2 * rng.NextDouble() - 1);
    }

    private int Lda => Shape.TransA ? Shape.M : Shape.K;
    private int Ldb => Shape.TransB ? Shape.K : Shape.N;

    [Benchmark(Baseline = true)]
    public void OpenBlasSgemm()
    {
        if (!OpenBlas.IsAvailable) throw new InvalidOperationException("OpenBLAS is not available");
        OpenBlas.Sgemm(Shape.TransA, Shape.TransB, Shape.M, Shape.N, Shape.K, 1f, _a, Lda, _b, Ldb, 0f, _c, Shape.N);
    }

    [Benchmark]
    public void ManagedSgemm() =>
        ManagedGemm.Sgemm(Shape.TransA, Shape.TransB, Shape.M, Shape.N, Shape.K, 1f, _a, Lda, _b, Ldb, 0f, _c, Shape.N, parallel: true);
}
