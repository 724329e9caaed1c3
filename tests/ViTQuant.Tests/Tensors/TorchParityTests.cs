// PyTorch parity: a tiny ViT (patch embedding, cls token, one timm pre-norm Block, final norm, head,
// label-smoothed cross-entropy) composed from our ops must reproduce PyTorch 1.13's forward values and
// EVERY gradient stored in fixtures/block_parity.safetensors (written by tools/reference/make_block_fixture.py,
// computed in float64 and stored as float32), plus KL distillation, soft cross-entropy and cosine similarity.
//
// Metric, per tensor: max|ours − torch| / max(max|torch|, 1e-6) ≤ 1e-4.
//
// The head reshuffles (reshape, permute, slicing, concatenation) are not this library's ops yet; they are
// written below as small private ops through Autograd.Record, which doubles as a test of that extension point.
using System.Buffers.Binary;
using System.Text.Json;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Tensors;

public class TorchParityTests
{
    private const double Tolerance = 1e-4;
    private const int B = 2, N = 5, C = 12, Heads = 3, Hd = C / Heads, Patch = 4;

    private static readonly Lazy<Fixture> File = new(() => Fixture.Load(Path.Combine(AppContext.BaseDirectory, "fixtures", "block_parity.safetensors")));
    private static readonly Lazy<BlockRun> Run = new(() => BlockRun.Execute(File.Value));

    public static readonly string[] ParameterNames =
    {
        "patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed",
        "blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
        "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias", "blocks.0.norm2.weight", "blocks.0.norm2.bias",
        "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.weight", "blocks.0.mlp.fc2.bias",
        "norm.weight", "norm.bias", "head.weight", "head.bias",
    };

    public static TheoryData<string> Outputs => new() { "out.patch_tokens", "out.attn", "out.block", "out.logits", "out.loss" };

    public static readonly string[] GradientNames = new[] { "grad.image", "grad.block_in" }.Concat(ParameterNames.Select(n => "grad." + n)).ToArray();

    public static TheoryData<string> Gradients => new(GradientNames);

    [Theory]
    [MemberData(nameof(Outputs))]
    public void BlockForwardMatchesPyTorch(string name) => AssertMatches(name, Run.Value.Results[name], File.Value.F32(name));

    [Theory]
    [MemberData(nameof(Gradients))]
    public void BlockGradientMatchesPyTorch(string name) => AssertMatches(name, Run.Value.Results[name], File.Value.F32(name));

    [Fact]
    public void EveryStoredGradientIsCompared()
    {
        var stored = File.Value.Names.Where(n => n.StartsWith("grad.")).OrderBy(n => n).ToArray();
        var compared = GradientNames.OrderBy(n => n).ToArray();
        Assert.Equal(stored, compared);
    }

    [Fact]
    public void DistillationLossesMatchPyTorch()
    {
        var f = File.Value;
        var s = f.F32("kd.student").RequireGrad();
        var t = f.F32("kd.teacher").RequireGrad();
        var kd = Ops.KlDivergence(s, t, 2f);
        kd.Backward();
        AssertMatches("kd.loss", kd, f.F32("kd.loss"));
        AssertMatches("kd.grad_student", s.Grad!, f.F32("kd.grad_student"));
        AssertMatches("kd.grad_teacher", t.Grad!, f.F32("kd.grad_teacher"));

        var z = f.F32("sce.logits").RequireGrad();
        var p = f.F32("sce.target").RequireGrad();
        var sce = Ops.SoftCrossEntropy(z, p);
        sce.Backward();
        AssertMatches("sce.loss", sce, f.F32("sce.loss"));
        AssertMatches("sce.grad_logits", z.Grad!, f.F32("sce.grad_logits"));
        AssertMatches("sce.grad_target", p.Grad!, f.F32("sce.grad_target"));
    }

    [Fact]
    public void CosineSimilarityMatchesPyTorchIncludingTinyAndZeroRows()
    {
        var f = File.Value;
        var a = f.F32("cos.a").RequireGrad();
        var b = f.F32("cos.b").RequireGrad();
        var y = Ops.CosineSimilarity(a, b, -1, 1e-8f);
        AssertMatches("cos.out", y, f.F32("cos.out"));
        Ops.Sum(Ops.Mul(y, f.F32("cos.weights"))).Backward();
        // grad_a holds ~1e8 entries for the tiny row, so compare each row on its own scale
        var ga = f.F32("cos.grad_a");
        for (int r = 0; r < 4; r++)
            AssertMatches($"cos.grad_a row {r}", Tensor.FromArray(a.Grad!.Span.Slice(r * 6, 6), 6), Tensor.FromArray(ga.Span.Slice(r * 6, 6), 6));
        AssertMatches("cos.grad_b", b.Grad!, f.F32("cos.grad_b"));
    }

    private static void AssertMatches(string name, Tensor ours, Tensor torch)
    {
        Assert.True(ours.Size == torch.Size, $"{name}: {ours.Size} elements vs torch {torch.Size} ({Tensor.ShapeString(ours.Shape)} vs {Tensor.ShapeString(torch.Shape)})");
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < torch.Size; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs((double)ours.Data[i] - torch.Data[i]));
            maxRef = Math.Max(maxRef, Math.Abs((double)torch.Data[i]));
        }
        double rel = maxDiff / Math.Max(maxRef, 1e-6);
        Assert.True(rel <= Tolerance, $"{name}: max|ours − torch| / max|torch| = {rel:G3} (max diff {maxDiff:G3}, max |torch| {maxRef:G3})");
    }

    /// <summary>The tiny ViT of make_block_fixture.py, composed from Ops; keeps every compared tensor by fixture name.</summary>
    private sealed class BlockRun
    {
        public readonly Dictionary<string, Tensor> Results = new();

        public static BlockRun Execute(Fixture f)
        {
            var run = new BlockRun();
            var p = ParameterNames.ToDictionary(n => n, n => f.F32(n).RequireGrad());
            var image = f.F32("image").RequireGrad();
            var labels = f.I64("labels").Select(v => (int)v).ToArray();

            var tokens = Ops.PatchEmbed(image, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], Patch); // [B, 4, C]
            var x = Ops.Add(PrependToken(p["cls_token"], tokens), p["pos_embed"]);                            // [B, N, C]
            x.RetainsGrad = true;

            // attention branch, timm Attention: qkv → [3, B, heads, N, hd] → softmax(q·kᵀ·hd^-½)·v → proj
            var h = Ops.LayerNorm(x, p["blocks.0.norm1.weight"], p["blocks.0.norm1.bias"], 1e-6f);
            var qkv = Permute(View(Ops.Linear(h, p["blocks.0.attn.qkv.weight"], p["blocks.0.attn.qkv.bias"]), B, N, 3, Heads, Hd), 2, 0, 3, 1, 4);
            Tensor q = Select0(qkv, 0), k = Select0(qkv, 1), v = Select0(qkv, 2);
            var attn = Ops.Softmax(Ops.Mul(Ops.MatMul(q, k, transB: true), 1f / MathF.Sqrt(Hd)));       // [B, heads, N, N]
            var o = View(Permute(Ops.MatMul(attn, v), 0, 2, 1, 3), B, N, C);
            var x1 = Ops.Add(x, Ops.Linear(o, p["blocks.0.attn.proj.weight"], p["blocks.0.attn.proj.bias"]));

            // MLP branch
            var h2 = Ops.LayerNorm(x1, p["blocks.0.norm2.weight"], p["blocks.0.norm2.bias"], 1e-6f);
            var m = Ops.Linear(Ops.Gelu(Ops.Linear(h2, p["blocks.0.mlp.fc1.weight"], p["blocks.0.mlp.fc1.bias"])), p["blocks.0.mlp.fc2.weight"], p["blocks.0.mlp.fc2.bias"]);
            var x2 = Ops.Add(x1, m);

            var xf = Ops.LayerNorm(x2, p["norm.weight"], p["norm.bias"], 1e-6f);
            var logits = Ops.Linear(Select1(xf, 0), p["head.weight"], p["head.bias"]);
            var loss = Ops.CrossEntropy(logits, labels, 0.1f);
            loss.Backward();

            run.Results["out.patch_tokens"] = tokens;
            run.Results["out.attn"] = attn;
            run.Results["out.block"] = x2;
            run.Results["out.logits"] = logits;
            run.Results["out.loss"] = loss;
            run.Results["grad.image"] = image.Grad!;
            run.Results["grad.block_in"] = x.Grad!;
            foreach (var (name, t) in p) run.Results["grad." + name] = t.Grad!;
            return run;
        }
    }

    // ---- test-local shape ops through the Autograd.Record extension point ----

    /// <summary>Reshape as a view sharing storage; the gradient has the same element order.</summary>
    private static Tensor View(Tensor x, params int[] shape)
    {
        var y = new Tensor(x.Data, shape);
        Assert.Equal(x.Size, y.Size);
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("test_view", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            for (int i = 0; i < x.Size; i++) gx[i] += g.Data[i];
        });
    }

    /// <summary>y = x.permute(perm) (a copy); the backward scatters the gradient through the inverse map.</summary>
    private static Tensor Permute(Tensor x, params int[] perm)
    {
        int r = x.Rank;
        var yShape = perm.Select(d => x.Shape[d]).ToArray();
        var xs = Tensor.Strides(x.Shape);
        var src = new int[x.Size]; // src[flat index in y] = flat index in x
        var idx = new int[r];
        for (int o = 0; o < src.Length; o++)
        {
            int off = 0;
            for (int d = 0; d < r; d++) off += idx[d] * xs[perm[d]];
            src[o] = off;
            for (int d = r - 1; d >= 0 && ++idx[d] == yShape[d]; d--) idx[d] = 0;
        }
        var y = new Tensor(yShape);
        for (int o = 0; o < src.Length; o++) y.Data[o] = x.Data[src[o]];
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("test_permute", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            for (int o = 0; o < src.Length; o++) gx[src[o]] += g.Data[o];
        });
    }

    /// <summary>x[i] along the first axis.</summary>
    private static Tensor Select0(Tensor x, int i)
    {
        int n = x.Size / x.Shape[0];
        var y = new Tensor(x.Span.Slice(i * n, n).ToArray(), x.Shape[1..]);
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("test_select0", y, new[] { x }, g =>
        {
            var gx = x.GradSpan().Slice(i * n, n);
            for (int j = 0; j < n; j++) gx[j] += g.Data[j];
        });
    }

    /// <summary>x[:, t] of a [B, N, C] tensor → [B, C].</summary>
    private static Tensor Select1(Tensor x, int t)
    {
        int b = x.Shape[0], n = x.Shape[1], c = x.Shape[2];
        var y = new Tensor(b, c);
        for (int i = 0; i < b; i++) x.Span.Slice((i * n + t) * c, c).CopyTo(y.Span.Slice(i * c, c));
        if (!Autograd.Needs(x)) return y;
        return Autograd.Record("test_select1", y, new[] { x }, g =>
        {
            var gx = x.GradSpan();
            for (int i = 0; i < b; i++)
                for (int j = 0; j < c; j++) gx[(i * n + t) * c + j] += g.Data[i * c + j];
        });
    }

    /// <summary>cat([token.expand(B, 1, C), tokens], dim 1): [1, 1, C] and [B, L, C] → [B, L+1, C].</summary>
    private static Tensor PrependToken(Tensor token, Tensor tokens)
    {
        int b = tokens.Shape[0], l = tokens.Shape[1], c = tokens.Shape[2];
        var y = new Tensor(b, l + 1, c);
        for (int i = 0; i < b; i++)
        {
            token.Span.CopyTo(y.Span.Slice(i * (l + 1) * c, c));
            tokens.Span.Slice(i * l * c, l * c).CopyTo(y.Span.Slice((i * (l + 1) + 1) * c, l * c));
        }
        if (!Autograd.Needs(token, tokens)) return y;
        return Autograd.Record("test_prepend", y, new[] { token, tokens }, g =>
        {
            for (int i = 0; i < b; i++)
            {
                var row = g.Span.Slice(i * (l + 1) * c, (l + 1) * c);
                if (token.RequiresGrad) System.Numerics.Tensors.TensorPrimitives.Add(token.GradSpan(), row[..c], token.GradSpan());
                if (tokens.RequiresGrad)
                {
                    var dst = tokens.GradSpan().Slice(i * l * c, l * c);
                    System.Numerics.Tensors.TensorPrimitives.Add(dst, row[c..], dst);
                }
            }
        });
    }

    // ---- a minimal safetensors reader, private to this test (the library's reader lives in IO/) ----

    private sealed class Fixture
    {
        private readonly Dictionary<string, (string dtype, int[] shape, byte[] raw)> _tensors = new();

        public IEnumerable<string> Names => _tensors.Keys;

        public static Fixture Load(string path)
        {
            var bytes = System.IO.File.ReadAllBytes(path);
            ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            Assert.True(headerLen > 0 && 8 + headerLen <= (ulong)bytes.Length, $"{path}: bad header length {headerLen}");
            int dataStart = 8 + (int)headerLen;
            using var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLen));
            var f = new Fixture();
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__") continue;
                var dtype = entry.Value.GetProperty("dtype").GetString()!;
                var shape = entry.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray();
                var offs = entry.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                int elem = dtype switch { "F32" => 4, "I64" => 8, _ => throw new InvalidDataException($"{path}: {entry.Name} has unsupported dtype {dtype}") };
                long count = shape.Aggregate(1L, (a, d) => a * d);
                Assert.True(offs[1] - offs[0] == count * elem && dataStart + offs[1] <= bytes.Length, $"{path}: {entry.Name} offsets {offs[0]}..{offs[1]} do not fit shape/file");
                f._tensors[entry.Name] = (dtype, shape, bytes.AsSpan(dataStart + (int)offs[0], (int)(offs[1] - offs[0])).ToArray());
            }
            return f;
        }

        public Tensor F32(string name)
        {
            Assert.True(_tensors.TryGetValue(name, out var t), $"fixture has no tensor {name}");
            Assert.Equal("F32", t.dtype);
            var v = new float[t.raw.Length / 4];
            for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadSingleLittleEndian(t.raw.AsSpan(i * 4));
            return new Tensor(v, t.shape);
        }

        public long[] I64(string name)
        {
            Assert.True(_tensors.TryGetValue(name, out var t), $"fixture has no tensor {name}");
            Assert.Equal("I64", t.dtype);
            var v = new long[t.raw.Length / 8];
            for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadInt64LittleEndian(t.raw.AsSpan(i * 8));
            return v;
        }
    }
}
