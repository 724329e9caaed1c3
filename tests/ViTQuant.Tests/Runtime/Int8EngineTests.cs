// The integer runtime against the fake-quant simulation (within rounding) and against itself across
// kernel paths (bit for bit), on tiny quantized models of every preset; plus its refusals.
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Runtime;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Runtime;

public class Int8EngineTests
{
    internal static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 2, MlpRatio = 2f };

    private static List<Tensor> Batches(int n, int batch, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n).Select(_ => Tensor.Randn(rng, 1f, batch, 1, 28, 28)).ToList();
    }

    /// <summary>A calibrated, frozen tiny model quantized with a preset.</summary>
    internal static QuantizedModel Frozen(string method, int w, int a, ulong seed = 5, ViTConfig? config = null)
    {
        var qm = new QuantizedModel(new VisionTransformer(config ?? Tiny, seed), QuantPresets.Create(method, w, a));
        qm.Calibrate(Batches(2, 16, 1));
        QuantizedCheckpoint.Freeze(qm);
        return qm;
    }

    private static Tensor Sim(QuantizedModel qm, Tensor x)
    {
        using var _ = Autograd.NoGrad();
        return qm.Model.Infer(x, qm);
    }

    [Theory]
    [InlineData("minmax", 8, 8, 0.02, 1.0)]
    [InlineData("percentile", 8, 8, 0.02, 1.0)]
    [InlineData("minmax", 4, 4, 0.25, 0.9)]
    [InlineData("percentile", 4, 4, 0.25, 0.9)]
    [InlineData("mimiq", 4, 4, 0.25, 0.9)]
    [InlineData("mimiq", 8, 8, 0.02, 1.0)]
    public void MatchesTheSimulationWithinRounding(string method, int w, int a, double relTol, double minAgree)
    {
        var qm = Frozen(method, w, a);
        var plan = Int8Plan.Compile(qm);
        // Uniform per-tensor plans run every linear layer and both attention products as integers.
        Assert.All(plan.Layers.Where(l => l.Name != "patch_embed.proj"), l => Assert.Equal(Int8Mode.Integer, l.Mode));
        var engine = new Int8Engine(plan);
        var x = Batches(1, 64, 9)[0];
        var want = Sim(qm, x);
        var got = engine.Forward(x);
        float scale = want.Span.ToArray().Max(MathF.Abs);
        double maxDiff = 0;
        for (int i = 0; i < want.Size; i++) maxDiff = Math.Max(maxDiff, Math.Abs(want.Data[i] - got.Data[i]));
        Assert.True(maxDiff <= relTol * scale, $"{method} W{w}A{a}: max |Δlogit| {maxDiff} vs logit scale {scale}");
        int K = Tiny.NumClasses, agree = 0;
        for (int b = 0; b < 64; b++) agree += ArgMax(want.Span.Slice(b * K, K)) == ArgMax(got.Span.Slice(b * K, K)) ? 1 : 0;
        Assert.True(agree >= minAgree * 64, $"{method} W{w}A{a}: argmax agrees on {agree}/64");
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    [Theory]
    [InlineData("minmax", 8, 8)]
    [InlineData("mimiq", 4, 4)]
    public void EveryKernelPathGivesTheSameLogitsBitForBit(string method, int w, int a)
    {
        var engine = new Int8Engine(Int8Plan.Compile(Frozen(method, w, a)));
        var x = Batches(1, 5, 4)[0];
        try
        {
            Int8Gemm.Path = IntGemmPath.Scalar;
            var want = engine.Forward(x).Span.ToArray();
            foreach (var p in Int8Gemm.SupportedPaths)
            {
                Int8Gemm.Path = p;
                Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), engine.Forward(x).Span.ToArray().Select(BitConverter.SingleToInt32Bits));
            }
        }
        finally { Int8Gemm.ResetPath(); }
    }

    [Theory]
    [InlineData("minmax", 8, 8)]
    [InlineData("percentile", 4, 4)]
    [InlineData("mimiq", 4, 4)]
    public void EqualsAnIndependentIntegerReferenceBitForBit(string method, int w, int a)
    {
        var qm = Frozen(method, w, a);
        var x = Batches(1, 3, 6)[0];
        var want = IntegerReference.Logits(qm, x);
        foreach (var p in Int8Gemm.SupportedPaths)
        {
            try
            {
                Int8Gemm.Path = p;
                var got = new Int8Engine(Int8Plan.Compile(qm)).Forward(x).Span.ToArray();
                Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));
            }
            finally { Int8Gemm.ResetPath(); }
        }
    }

    [Fact]
    public void RowWisePassesGiveTheSameBitsAsOpByOp()
    {
        // 7 images × 50 tokens = 350 rows: five full chunks of 64 and a short one, on every kernel path.
        var engine = new Int8Engine(Int8Plan.Compile(Frozen("minmax", 8, 8)));
        SameBitsOnEveryPath(engine, Batches(1, 7, 12)[0], on => engine.RowWisePasses = on);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LastBlockOnTheHeadsTokensGivesTheSameBits(bool distilled)
    {
        // The last block past its attention on the prefix rows only (one, or two with a distillation token) against
        // all rows; 5 images × 50 tokens, so the moved rows overlap where they came from.
        var config = distilled ? Tiny with { Distilled = true } : Tiny;
        var engine = new Int8Engine(Int8Plan.Compile(Frozen("minmax", 8, 8, config: config)));
        SameBitsOnEveryPath(engine, Batches(1, 5, 13)[0], on => engine.HeadRowsOnly = on);
    }

    // The engine's logits with a switch off and on, the same bits on every kernel path this CPU runs.
    private static void SameBitsOnEveryPath(Int8Engine engine, Tensor x, Action<bool> setSwitch)
    {
        try
        {
            foreach (var p in Int8Gemm.SupportedPaths)
            {
                Int8Gemm.Path = p;
                setSwitch(false);
                var want = engine.Forward(x).Span.ToArray();
                setSwitch(true);
                Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), engine.Forward(x).Span.ToArray().Select(BitConverter.SingleToInt32Bits));
            }
        }
        finally { Int8Gemm.ResetPath(); }
    }

    [Fact]
    public void OddHeadWidthsTakeThePaddedPerHeadPathAndStillMatchTheReference()
    {
        // dh = 15: head slices of the batch-wide q/k/v codes would lack the zero pad, so each head is quantised on its own.
        var qm = Frozen("minmax", 8, 8, config: Tiny with { EmbedDim = 30, NumHeads = 2 });
        var x = Batches(1, 2, 8)[0];
        var want = IntegerReference.Logits(qm, x);
        var got = new Int8Engine(Int8Plan.Compile(qm)).Forward(x).Span.ToArray();
        Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void BatchSizesAndRepeatedCallsAgree()
    {
        var engine = new Int8Engine(Int8Plan.Compile(Frozen("minmax", 8, 8)));
        var x = Batches(1, 6, 2)[0];
        var all = engine.Forward(x).Span.ToArray();
        var again = engine.Forward(x).Span.ToArray();
        Assert.Equal(all, again);
        var one = engine.Forward(Tensor.FromArray(x.Span[..(28 * 28)], 1, 1, 28, 28)).Span.ToArray();
        Assert.Equal(all[..Tiny.NumClasses], one);
    }

    [Fact]
    public void AdfqRunsItsNonUniformPointsInFloatAndStillMatches()
    {
        var qm = Frozen("adfq", 8, 8);
        var plan = Int8Plan.Compile(qm);
        var byName = plan.Layers.ToDictionary(l => l.Name);
        Assert.Equal(Int8Mode.Float, byName["blocks.0.attn.qkv"].Mode);     // per-patch outlier input
        Assert.Equal(Int8Mode.Float, byName["blocks.0.mlp.fc2"].Mode);      // Shift-Log input
        Assert.Equal(Int8Mode.Float, byName["blocks.0.attn.probs·v"].Mode); // log√2 probs
        Assert.Equal(Int8Mode.Integer, byName["blocks.0.attn.q·kᵀ"].Mode);  // uniform q, k
        Assert.Equal(Int8Mode.Integer, byName["blocks.0.attn.proj"].Mode);  // learned-step uniform input, asymmetric weight
        Assert.Contains("no uniform per-tensor integer form", byName["blocks.1.mlp.fc1"].Detail);
        var x = Batches(1, 16, 3)[0];
        var want = Sim(qm, x);
        var got = new Int8Engine(plan).Forward(x);
        float scale = want.Span.ToArray().Max(MathF.Abs);
        for (int i = 0; i < want.Size; i++) Assert.True(Math.Abs(want.Data[i] - got.Data[i]) <= 0.02 * scale);
        Assert.Contains("blocks.1.attn.proj", plan.Describe());
    }

    [Fact]
    public void StoredCodesArePackedAtTheLayerBitWidth()
    {
        // Every layer here has a multiple of 8 weights, so bits/8 bytes a weight exactly (CodePacking).
        long weights = Tiny.Depth * (3L * 32 * 32 + 32 * 32 + 2L * 32 * 64) + 32L * Tiny.NumClasses;
        long patchFloat = 32L * Tiny.PatchSize * Tiny.PatchSize * 4;
        foreach (int bits in new[] { 8, 4, 3 })
            Assert.Equal(weights * bits / 8 + patchFloat, Int8Plan.Compile(Frozen("minmax", bits, bits)).WeightBytes);
    }

    [Fact]
    public void RefusesFloatAndUnfrozenModelsWithOneClearMessage()
    {
        var fp = new VisionTransformer(Tiny, 1);
        var noWeights = new QuantizedModel(fp, new QuantPlan { Name = "float" });
        var e = Assert.Throws<ViTQuantException>(() => Int8Plan.Compile(noWeights));
        Assert.Contains("quantizes no weight", e.Message);
        var unfrozen = new QuantizedModel(fp.Clone(), QuantPresets.Create("minmax", 8, 8));
        unfrozen.Calibrate(Batches(1, 4, 1));
        e = Assert.Throws<ViTQuantException>(() => Int8Plan.Compile(unfrozen));
        Assert.Contains("Freeze", e.Message);
        var engine = new Int8Engine(Int8Plan.Compile(Frozen("minmax", 8, 8)));
        Assert.Throws<ViTQuantException>(() => engine.Forward(new Tensor(1, 1, 27, 28)));
    }
}
