// Calibration made inspectable: per-block passes give the same parameters as one pass, every point's
// parameters and value counts are summarised, and PointRecorder's taps are what the quantizers see and
// return (input.POINT / quantized.POINT), in the calibration stream or the quantized network.
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.QuantPipeline;

public class CalibrationInspectionTests
{
    private static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 3, NumHeads = 4, MlpRatio = 2f };

    private static List<Tensor> Batches(int n, int batch, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n).Select(_ => Tensor.Randn(rng, 1f, batch, 1, 28, 28)).ToList();
    }

    private static Dictionary<string, float[]> ActState(QuantizedModel qm) =>
        qm.ActivationQuantizers.SelectMany(kv => kv.Value.State().Select(s => ($"{kv.Key}.{s.Name}", s.Value.ToArray())))
            .ToDictionary(t => t.Item1, t => t.Item2);

    [Fact]
    public void PassesPerBlockGiveTheParametersOfOnePass()
    {
        var fp = new VisionTransformer(Tiny, seed: 5);
        var calib = Batches(3, 8, 1);
        var one = new QuantizedModel(fp.Clone(), QuantPresets.Create("adfq", 4, 4));
        one.Calibrate(calib);
        var staged = new QuantizedModel(fp.Clone(), QuantPresets.Create("adfq", 4, 4)) { CalibrationBlocksPerPass = 1 };
        Assert.Equal(3, staged.CalibrationPasses);
        int reported = 0;
        staged.Calibrate(calib, n => reported = n);
        Assert.Equal(3 * 24, reported); // progress counts the images of every pass
        var a = ActState(one);
        var b = ActState(staged);
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        foreach (var k in a.Keys) Assert.Equal(a[k], b[k]);
        Assert.Throws<ViTQuantException>(() => staged.CalibrationBlocksPerPass = -1);
    }

    [Fact]
    public void AutomaticPassesFitTheMemoryBudgetAndKeepTheParameters()
    {
        var fp = new VisionTransformer(Tiny, seed: 7);
        var calib = Batches(3, 8, 3);
        var one = new QuantizedModel(fp.Clone(), QuantPresets.Create("adfq", 4, 4));
        Assert.Equal(1, one.PlanCalibration(calib)); // the default budget holds this tiny model in one pass
        one.Calibrate(calib);
        // Every value a block's points observe over the 24 images, counted independently of the planner:
        // per image, qkv/proj/fc1 inputs 50×32, q/k/v 3·4·50·8, probs 4·50·50, fc2 input 50·64.
        long block = 4L * 24 * (3 * 50 * 32 + 3 * 4 * 50 * 8 + 4 * 50 * 50 + 50 * 64);
        var auto = new QuantizedModel(fp.Clone(), QuantPresets.Create("adfq", 4, 4)) { CalibrationMemoryBudget = 2 * block + block / 2 };
        int passes = auto.PlanCalibration(calib);
        Assert.True(auto.CalibrationBytesPerPass <= auto.CalibrationMemoryBudget, $"{auto.CalibrationBytesPerPass} > budget");
        Assert.True(auto.CalibrationBytesPerPass >= 2 * block, $"{auto.CalibrationBytesPerPass} < two blocks {2 * block}");
        Assert.Equal(2, passes); // two blocks, then one
        auto.Calibrate(calib);
        var a = ActState(one);
        var b = ActState(auto);
        foreach (var k in a.Keys) Assert.Equal(a[k], b[k]);
        // A budget below one block still calibrates, a block at a time.
        var tight = new QuantizedModel(fp.Clone(), QuantPresets.Create("adfq", 4, 4)) { CalibrationMemoryBudget = 1 };
        Assert.Equal(3, tight.PlanCalibration(calib));
        Assert.Throws<ViTQuantException>(() => tight.CalibrationMemoryBudget = 0);
    }

    [Fact]
    public void SummariesReportParametersAndEveryObservedValue()
    {
        var fp = new VisionTransformer(Tiny, seed: 6);
        var qm = new QuantizedModel(fp.Clone(), QuantPresets.Create("adfq", 4, 4));
        qm.Calibrate(Batches(2, 8, 2));
        var points = PointCalibration.Of(qm);
        var qkv = points.Single(p => p.Point == "blocks.0.attn.qkv" && p.Role == "activation");
        Assert.Equal(16L * 50 * 32, qkv.ValuesSeen); // 16 images × 50 tokens × 32 channels
        Assert.Equal(qkv.ValuesSeen, qkv.ValuesUsed);
        var scale = qkv.Parameters.Single(p => p.Name == "scale");
        var steps = ((PerPatchOutlierQuantizer)qm.ActivationQuantizers["blocks.0.attn.qkv"]).Scale!.ToArray().OrderBy(v => v).ToArray();
        Assert.Equal(50, scale.Count);
        Assert.Equal(steps[0], scale.Min);
        Assert.Equal(steps[^1], scale.Max);
        Assert.Equal(0.5 * (steps[24] + (double)steps[25]), scale.Median!.Value, 6);
        var fc2 = points.Single(p => p.Point == "blocks.0.mlp.fc2" && p.Role == "activation");
        Assert.Contains(fc2.Parameters, p => p.Name == "shift" && p.Value is double);
        Assert.DoesNotContain(points.Single(p => p.Point == "head" && p.Role == "weight").Parameters, p => p.Name == "v");
    }

    [Fact]
    public void RecordedPointsAreTheQuantizerInputsAndOutputs()
    {
        var fp = new VisionTransformer(Tiny, seed: 7);
        var qm = new QuantizedModel(fp.Clone(), QuantPresets.Create("percentile", 4, 4));
        qm.Calibrate(Batches(2, 8, 3));
        var x = Batches(1, 4, 4)[0];
        var want = new HashSet<string> { "blocks.1.mlp.fc2", "blocks.0.attn.probs", "patch_embed.proj" };
        var rec = new PointRecorder(want.Contains, qm);
        using (Autograd.NoGrad()) qm.Model.Forward(x, rec);
        var names = rec.Recorded.Select(r => r.Name).ToList();
        Assert.Equal(new[] { "input.patch_embed.proj", "input.blocks.0.attn.probs", "quantized.blocks.0.attn.probs", "input.blocks.1.mlp.fc2", "quantized.blocks.1.mlp.fc2" }, names);
        var d = rec.Recorded.ToDictionary(r => r.Name, r => r.Value);
        Assert.Equal(x.ToArray(), d["input.patch_embed.proj"].ToArray()); // the image stays float: no quantized entry
        using (Autograd.NoGrad())
            Assert.Equal(qm.ActivationQuantizers["blocks.1.mlp.fc2"].Forward(d["input.blocks.1.mlp.fc2"]).ToArray(), d["quantized.blocks.1.mlp.fc2"].ToArray());

        // The calibration stream: weights on their grid, activations untouched and not observed.
        qm.Mode = QuantMode.WeightsOnly;
        var stream = new PointRecorder(want.Contains, qm);
        using (Autograd.NoGrad()) qm.Model.Forward(x, stream);
        Assert.DoesNotContain(stream.Recorded, r => r.Name.StartsWith("quantized."));
        var probs = stream.Recorded.Single(r => r.Name == "input.blocks.0.attn.probs").Value.ToArray();
        Assert.NotEqual(d["input.blocks.0.attn.probs"].ToArray(), probs);
    }
}
