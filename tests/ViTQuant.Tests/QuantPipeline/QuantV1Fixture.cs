// Writes fixtures/quant_v1/: two quantized checkpoints in the first on-disk format ("vitq-quant/1", one
// byte per weight code) and what reading them must give, so that later formats keep loading old files.
// The committed files were written by QuantizedCheckpoint.Save while it still wrote that format (commit
// "Old-format (vitq-quant/1) quantized checkpoint fixtures"); LegacyQuantWriter is a copy of it.
// Run once by hand, never by CI:
//     VITQ_WRITE_QUANT_V1_FIXTURE=tests/ViTQuant.Tests/fixtures/quant_v1 \
//       dotnet test tests/ViTQuant.Tests -c Release --filter FullyQualifiedName~QuantV1Fixture
// minmax_w4a4.safetensors: signed (symmetric) 4-bit grids, I8 codes; adfq_w3a4.safetensors: unsigned
// (asymmetric AdaRound) 3-bit grids with an 8-bit patch embedding and head, U8 codes. expected.safetensors:
// the input x, each checkpoint's logits on x after Freeze, and every quantized weight as the writer froze it.
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.QuantPipeline;

public class QuantV1Fixture
{
    internal static ViTConfig Config => ViTConfig.FashionMnistDefault() with { EmbedDim = 16, Depth = 1, NumHeads = 2, MlpRatio = 2f };

    internal static readonly (string File, string Method, int W, int A, bool FirstLast)[] Checkpoints =
    {
        ("minmax_w4a4", "minmax", 4, 4, false),
        ("adfq_w3a4", "adfq", 3, 4, true),
    };

    internal static Tensor Input() => Tensor.Randn(new Rng(11), 1f, 4, 1, 28, 28);

    [Fact]
    public void WriteFixtureWhenAsked()
    {
        var dir = Environment.GetEnvironmentVariable("VITQ_WRITE_QUANT_V1_FIXTURE");
        if (string.IsNullOrEmpty(dir)) return; // a generator, not a check
        Directory.CreateDirectory(dir);
        var x = Input();
        var expected = new List<SafeTensorsEntry> { SafeTensorsEntry.FromTensor("x", x) };
        foreach (var (file, method, w, a, firstLast) in Checkpoints)
        {
            var qm = new QuantizedModel(new VisionTransformer(Config, seed: 7), QuantPresets.Create(method, w, a, firstLast));
            var rng = new Rng(3);
            qm.Calibrate(Enumerable.Range(0, 2).Select(_ => Tensor.Randn(rng, 1f, 8, 1, 28, 28)).ToList());
            var codes = QuantizedCheckpoint.Freeze(qm);
            LegacyQuantWriter.Save(qm, codes, Path.Combine(dir, file + ".safetensors"));
            using (Autograd.NoGrad()) expected.Add(SafeTensorsEntry.FromTensor($"{file}.logits", qm.Forward(x)));
            var weights = qm.Model.NamedParameters().ToDictionary(p => p.Name, p => p.Param);
            foreach (var layer in codes.Keys.Order())
                expected.Add(SafeTensorsEntry.FromTensor($"{file}.{layer}.weight", weights[layer + ".weight"].Detach().Clone()));
        }
        SafeTensorsWriter.Write(Path.Combine(dir, "expected.safetensors"), expected, new Dictionary<string, string>());
    }
}

/// <summary>QuantizedCheckpoint.Save as it was in format "vitq-quant/1" (one I8/U8 code per weight, in the weight's shape), kept to write old files.</summary>
internal static class LegacyQuantWriter
{
    public static void Save(QuantizedModel qm, Dictionary<string, (sbyte[]? Signed, byte[]? Unsigned, AffineGrid Grid)> codes, string path)
    {
        var entries = new List<SafeTensorsEntry>();
        foreach (var (name, t) in qm.Model.StateDict())
        {
            string layer = name.EndsWith(".weight") ? name[..^".weight".Length] : "";
            if (codes.TryGetValue(layer, out var c))
            {
                entries.Add(c.Signed != null ? SafeTensorsEntry.FromInt8(name + ".codes", c.Signed, t.Shape) : SafeTensorsEntry.FromUInt8(name + ".codes", c.Unsigned!, t.Shape));
                entries.Add(SafeTensorsEntry.FromTensor(name + ".scale", Tensor.FromArray(c.Grid.Scale, c.Grid.Scale.Length)));
                entries.Add(SafeTensorsEntry.FromTensor(name + ".zero_point", Tensor.FromArray(c.Grid.ZeroPoint, c.Grid.ZeroPoint.Length)));
            }
            else entries.Add(SafeTensorsEntry.FromTensor(name, t));
        }
        foreach (var (point, q) in qm.ActivationQuantizers)
            foreach (var (n, v) in q.State()) entries.Add(SafeTensorsEntry.FromTensor($"quant.act.{point}.{n}", v));
        var meta = new Dictionary<string, string>
        {
            [ModelIO.FormatKey] = QuantizedCheckpoint.FormatV1,
            [ModelIO.ConfigKey] = qm.Model.Config.ToJson(),
            [QuantizedCheckpoint.PlanKey] = qm.Plan.ToJson(),
        };
        SafeTensorsWriter.Write(path, entries, meta);
    }
}
