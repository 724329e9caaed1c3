// The quantized checkpoint on disk: format 2 stores packed low-bit codes and reloads bit-exactly at every
// weight width, signed and asymmetric grids alike; format 1 files (the fixtures, and files written by the
// old writer) still load exactly; the integer runtime and the ONNX exporter read the same codes from both.
using ViTQuant.Export;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Runtime;
using ViTQuant.Tensors;
using ViTQuant.Tests.Models;

namespace ViTQuant.Tests.QuantPipeline;

public class CheckpointFormatTests
{
    private static ViTConfig Tiny => QuantV1Fixture.Config with { Depth = 2 };

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", "quant_v1", name);

    private static (QuantizedModel Qm, Dictionary<string, (sbyte[]? Signed, byte[]? Unsigned, AffineGrid Grid)> Codes) Frozen(string method, int w, int a, bool firstLast = false)
    {
        var qm = new QuantizedModel(new VisionTransformer(Tiny, seed: 4), QuantPresets.Create(method, w, a, firstLast));
        var rng = new Rng(2);
        qm.Calibrate(Enumerable.Range(0, 2).Select(_ => Tensor.Randn(rng, 1f, 8, 1, 28, 28)).ToList());
        return (qm, QuantizedCheckpoint.Freeze(qm));
    }

    private static float[] Logits(QuantizedModel qm, Tensor x)
    {
        using var _ = Autograd.NoGrad();
        return qm.Forward(x).ToArray();
    }

    private static Dictionary<string, float[]> State(QuantizedModel qm) => qm.Model.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());

    [Theory]
    [InlineData("minmax", 2)] [InlineData("minmax", 3)] [InlineData("minmax", 4)] [InlineData("minmax", 5)]
    [InlineData("minmax", 6)] [InlineData("minmax", 7)] [InlineData("minmax", 8)]
    [InlineData("adfq", 2)] [InlineData("adfq", 3)] [InlineData("adfq", 4)] [InlineData("adfq", 8)]
    public void PackedCheckpointReloadsBitExactlyAndIsLowBit(string method, int bits)
    {
        var (qm, codes) = Frozen(method, bits, 4);
        var x = QuantV1Fixture.Input();
        var before = Logits(qm, x);
        using var dir = new TempDir();
        string path = dir.File("q.safetensors"), old = dir.File("old.safetensors");
        var storage = QuantizedCheckpoint.Save(qm, codes, path);
        var loaded = QuantizedCheckpoint.Load(path);
        Assert.Equal(before, Logits(loaded, x));
        // Its weights on their grid and its activation grids calibrated: evaluation runs in chunks of images, same bits.
        Assert.True(((IImageLocalHooks)loaded).ImageLocal);
        Assert.Equal(Chunking.Infer(loaded.Model, x, -1, loaded), Chunking.Infer(loaded.Model, x, 1, loaded));
        var want = State(qm);
        foreach (var (name, v) in State(loaded)) Assert.True(want[name].AsSpan().SequenceEqual(v), name);
        Assert.Equal(qm.WeightGrids.Keys.Order(), loaded.WeightGrids.Keys.Order());
        foreach (var (layer, g) in qm.WeightGrids)
        {
            var h = loaded.WeightGrids[layer];
            Assert.Equal((g.QMin, g.QMax), (h.QMin, h.QMax));
            Assert.Equal(g.Scale, h.Scale);
            Assert.Equal(g.ZeroPoint, h.ZeroPoint);
        }

        // On disk: a U8 vector of ⌈n·bits/8⌉ bytes per weight, and the sizes the storage record reports.
        var f = SafeTensorsFile.Read(path);
        Assert.Equal(QuantizedCheckpoint.Format, f.Metadata[ModelIO.FormatKey]);
        long n = ((VisionTransformer)qm.Model).Head.Weight.Size;
        Assert.Equal("U8", f.Info("head.weight.codes").DType);
        Assert.Equal(new[] { (int)((n * bits + 7) / 8) }, f.Info("head.weight.codes").Shape);
        Assert.Equal(new FileInfo(path).Length, storage.FileBytes);
        Assert.Equal(codes.Keys.Sum(l => f.Info(l + ".weight.codes").ByteLength), storage.CodeBytes);
        Assert.Equal(codes.Values.Sum(c => c.Grid.Scale.Length) * 8L, storage.ScaleBytes);
        Assert.Equal(storage.CodeBytes + storage.ScaleBytes, storage.WeightBytes);
        // bits/8 of codes a weight (whole bytes per layer) plus the scales' share (large here: 16 inputs a channel).
        Assert.InRange((double)storage.CodeBytes / storage.QuantizedWeights, bits / 8.0, bits / 8.0 + 0.01);
        Assert.Equal((double)storage.WeightBytes / storage.QuantizedWeights, storage.BytesPerWeight);

        // The same model in the old format: identical on reload, and bigger below 8 bits.
        LegacyQuantWriter.Save(qm, codes, old);
        Assert.Equal(before, Logits(QuantizedCheckpoint.Load(old), x));
        Assert.Equal(storage.QuantizedWeights, codes.Keys.Sum(l => SafeTensorsFile.Read(old).Info(l + ".weight.codes").ByteLength));
        // Tiny layers: the vitq.codes JSON (~60 bytes a layer) outweighs the saving at 7 bits, not at ≤ 4.
        if (bits <= 4) Assert.True(new FileInfo(path).Length < new FileInfo(old).Length);
    }

    [Fact]
    public void ThreeBitCodesAreDenseNotFourBitCells()
    {
        // Dense 3-bit packing, not 4-bit cells: head [10, 16] = 160 weights → 60 bytes; 4-bit → 80.
        var (q3, c3) = Frozen("minmax", 3, 8);
        var (q4, c4) = Frozen("minmax", 4, 8);
        using var dir = new TempDir();
        QuantizedCheckpoint.Save(q3, c3, dir.File("3.safetensors"));
        QuantizedCheckpoint.Save(q4, c4, dir.File("4.safetensors"));
        Assert.Equal(60, SafeTensorsFile.Read(dir.File("3.safetensors")).Info("head.weight.codes").ByteLength);
        Assert.Equal(80, SafeTensorsFile.Read(dir.File("4.safetensors")).Info("head.weight.codes").ByteLength);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void OldFormatFixtureLoadsExactly(int which)
    {
        string file = QuantV1Fixture.Checkpoints[which].File;
        var expected = SafeTensorsFile.Read(Fixture("expected.safetensors"));
        var f = SafeTensorsFile.Read(Fixture(file + ".safetensors"));
        Assert.Equal(QuantizedCheckpoint.FormatV1, f.Metadata[ModelIO.FormatKey]);
        var qm = QuantizedCheckpoint.Load(f);
        // The format's promise: every weight decodes to the float the writer froze, bit for bit.
        var weights = qm.Model.NamedParameters().ToDictionary(p => p.Name, p => p.Param);
        int layers = 0;
        foreach (var name in expected.Names.Where(n => n.StartsWith(file + ".") && n != file + ".logits"))
        {
            Assert.Equal(expected.GetTensor(name).ToArray(), weights[name[(file.Length + 1)..]].ToArray());
            layers++;
        }
        Assert.Equal(qm.WeightGrids.Count, layers);
        // The logits: the same forward on the machine that wrote them; GEMM rounding may differ elsewhere.
        var want = expected.GetTensor(file + ".logits").ToArray();
        var got = Logits(qm, expected.GetTensor("x"));
        float scale = want.Max(MathF.Abs);
        for (int i = 0; i < want.Length; i++) Assert.True(MathF.Abs(want[i] - got[i]) <= 1e-4f * scale, $"logit {i}: {got[i]} vs {want[i]}");

        // Re-saved in the new format: the same model, smaller.
        using var dir = new TempDir();
        var codes = qm.WeightGrids.Keys.ToDictionary(l => l, l => ToFreezeCodes(QuantizedCheckpoint.ReadWeights(f, qm.Model.Config, qm.Plan)[l]));
        QuantizedCheckpoint.Save(qm, codes, dir.File("v2.safetensors"));
        var again = QuantizedCheckpoint.Load(dir.File("v2.safetensors"));
        Assert.Equal(Logits(qm, expected.GetTensor("x")), Logits(again, expected.GetTensor("x")));
        Assert.True(new FileInfo(dir.File("v2.safetensors")).Length < new FileInfo(Fixture(file + ".safetensors")).Length);
    }

    private static (sbyte[]?, byte[]?, AffineGrid) ToFreezeCodes(StoredWeight w) => w.Grid.QMin < 0
        ? (w.Codes.Select(k => (sbyte)k).ToArray(), null, w.Grid)
        : (null, w.Codes.Select(k => (byte)k).ToArray(), w.Grid);

    [Theory]
    [InlineData("minmax", 4)]
    [InlineData("adfq", 3)]
    public void ExporterAndRuntimeReadTheSameCodesFromEitherFormat(string method, int bits)
    {
        var (qm, codes) = Frozen(method, bits, 8, firstLast: true);
        using var dir = new TempDir();
        QuantizedCheckpoint.Save(qm, codes, dir.File("new.safetensors"));
        LegacyQuantWriter.Save(qm, codes, dir.File("old.safetensors"));
        var fNew = SafeTensorsFile.Read(dir.File("new.safetensors"));
        var fOld = SafeTensorsFile.Read(dir.File("old.safetensors"));
        var a = WeightCodes.FromCheckpoint(fNew, qm.Model.Config, qm.Plan);
        var b = WeightCodes.FromCheckpoint(fOld, qm.Model.Config, qm.Plan);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (layer, w) in a)
        {
            Assert.Equal(b[layer].Codes, w.Codes);
            Assert.Equal(b[layer].Shape, w.Shape);
            Assert.Equal((b[layer].Signed, b[layer].Bits), (w.Signed, w.Bits));
            var c = codes[layer];
            Assert.Equal(c.Signed?.Select(v => (int)v) ?? c.Unsigned!.Select(v => (int)v), w.Codes);
        }
        Assert.Equal(8, a["head"].Bits); // --first-last-8bit
        // The runtime's stored codes are the checkpoint's bytes.
        var plan = Int8Plan.Compile(QuantizedCheckpoint.Load(fNew));
        Assert.Equal(fNew.GetRaw("head.weight.codes"), plan.Head.StoredCodes);
        Assert.Equal(fNew.GetRaw("blocks.1.mlp.fc1.weight.codes"), plan.Blocks[1].Fc1.StoredCodes);
        Assert.Equal(plan.Head.StoredCodes, Int8Plan.Compile(QuantizedCheckpoint.Load(fOld)).Head.StoredCodes);
    }

    [Fact]
    public void DamagedPackedCodesAreRefusedNamingTheTensor()
    {
        var (qm, codes) = Frozen("minmax", 4, 8);
        using var dir = new TempDir();
        var good = dir.File("q.safetensors");
        QuantizedCheckpoint.Save(qm, codes, good);
        var f = SafeTensorsFile.Read(good);
        string Rewrite(string file, Func<SafeTensorsEntry, SafeTensorsEntry> edit, Func<IReadOnlyDictionary<string, string>, Dictionary<string, string>>? meta = null)
        {
            var path = dir.File(file);
            SafeTensorsWriter.Write(path, f.Names.Select(n => edit(new SafeTensorsEntry(n, f.Info(n).DType, f.Info(n).Shape, f.GetRaw(n)))),
                meta?.Invoke(f.Metadata) ?? f.Metadata.ToDictionary());
            return path;
        }
        var shortCodes = Rewrite("short.safetensors", e => e.Name == "head.weight.codes" ? new SafeTensorsEntry(e.Name, "U8", new[] { e.Data.Length - 1 }, e.Data[..^1]) : e);
        var err = Assert.Throws<ViTQuantException>(() => QuantizedCheckpoint.Load(shortCodes));
        Assert.Contains("head.weight.codes is U8 [79], expected U8 [80]", err.Message);
        var wrongBits = Rewrite("bits.safetensors", e => e, m =>
        {
            var d = m.ToDictionary();
            d[QuantizedCheckpoint.CodesKey] = d[QuantizedCheckpoint.CodesKey].Replace("\"bits\":4", "\"bits\":5");
            return d;
        });
        err = Assert.Throws<ViTQuantException>(() => QuantizedCheckpoint.Load(wrongBits));
        Assert.Contains("5-bit, the plan says 4", err.Message);
        var noLayout = Rewrite("nolayout.safetensors", e => e, m => m.Where(kv => kv.Key != QuantizedCheckpoint.CodesKey).ToDictionary());
        err = Assert.Throws<ViTQuantException>(() => WeightCodes.FromCheckpoint(SafeTensorsFile.Read(noLayout), qm.Model.Config, qm.Plan));
        Assert.Contains(QuantizedCheckpoint.CodesKey, err.Message);
    }
}
