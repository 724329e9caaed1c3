using System.Text.Json;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Quantization;

public class QuantizerFactoryTests
{
    /// <summary>One spec per quantizer, the kind of tensor it sits on, and a calibration batch for it.</summary>
    public static IEnumerable<(string Name, QuantSpec Spec, bool IsWeight, Func<Rng, Tensor> Data)> Cases()
    {
        Tensor Act(Rng r) => Tensor.Randn(r, 1f, 2, 9, 16);
        yield return ("uniform-tensor", new QuantSpec { Bits = 6, Range = RangeMethod.Percentile }, false, Act);
        yield return ("uniform-token-lp", new QuantSpec { Bits = 4, Granularity = Granularity.PerToken, Range = RangeMethod.LpSearch, LpNorm = 2.4f, Learnable = true }, false, Act);
        yield return ("uniform-weight-sym", new QuantSpec { Bits = 4, Symmetric = true, Granularity = Granularity.PerChannel }, true, r => Tensor.Randn(r, 0.1f, 12, 16));
        yield return ("adaround", new QuantSpec { Bits = 4, Granularity = Granularity.PerChannel, Range = RangeMethod.Percentile, AdaRound = true }, true, r => Tensor.Randn(r, 0.1f, 12, 16));
        yield return ("lsq-act", new QuantSpec { Kind = QuantKind.Lsq, Bits = 4 }, false, Act);
        yield return ("lsq-weight", new QuantSpec { Kind = QuantKind.Lsq, Bits = 3, Granularity = Granularity.PerChannel }, true, r => Tensor.Randn(r, 0.1f, 12, 16));
        yield return ("log-sqrt2", new QuantSpec { Kind = QuantKind.LogSqrt2, Bits = 4 }, false, r => Ops.Softmax(Tensor.Randn(r, 2f, 2, 9, 9)));
        yield return ("log2-lp", new QuantSpec { Kind = QuantKind.Log2, Bits = 3, Range = RangeMethod.LpSearch }, false, r => Ops.Softmax(Tensor.Randn(r, 2f, 2, 9, 9)));
        yield return ("per-patch", new QuantSpec { Kind = QuantKind.PerPatchOutlier, Bits = 4, Granularity = Granularity.PerToken, Range = RangeMethod.Percentile, OutlierThreshold = 2f }, false, Act);
        yield return ("shift-log", new QuantSpec { Kind = QuantKind.ShiftLog, Bits = 4, Range = RangeMethod.Percentile }, false, r => Ops.Gelu(Tensor.Randn(r, 1f, 2, 9, 16)));
    }

    public static TheoryData<string> CaseNames => new(Cases().Select(c => c.Name));

    private static readonly Dictionary<string, Type> ExpectedType = new()
    {
        ["uniform-tensor"] = typeof(UniformQuantizer), ["uniform-token-lp"] = typeof(UniformQuantizer),
        ["uniform-weight-sym"] = typeof(UniformQuantizer), ["adaround"] = typeof(AdaRoundQuantizer),
        ["lsq-act"] = typeof(LsqQuantizer), ["lsq-weight"] = typeof(LsqQuantizer), ["log-sqrt2"] = typeof(LogQuantizer),
        ["log2-lp"] = typeof(LogQuantizer), ["per-patch"] = typeof(PerPatchOutlierQuantizer), ["shift-log"] = typeof(ShiftLogQuantizer),
    };

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void StateRoundTripGivesIdenticalForward(string name)
    {
        var c = Cases().Single(k => k.Name == name);
        var rng = new Rng(77);
        var q = QuantizerFactory.Create(c.Spec, c.IsWeight, seed: 5);
        Assert.IsType(ExpectedType[name], q);
        var batch = c.Data(rng);
        q.Observe(batch);
        if (!c.IsWeight) q.Observe(c.Data(rng));
        q.Calibrate();
        // Move the learned tensors off their initial values so the round trip must carry them.
        foreach (var p in q.LearnableParameters())
            for (int i = 0; i < p.Size; i++) p.Data[i] *= 1f + 0.01f * (i % 5);

        var state = q.State().ToDictionary(s => s.Name, s => s.Value);
        Assert.NotEmpty(state);
        var copy = QuantizerFactory.Create(c.Spec, c.IsWeight);
        Assert.False(copy.IsCalibrated);
        copy.LoadState(state);
        Assert.True(copy.IsCalibrated);

        var x = c.IsWeight ? batch : c.Data(rng);
        using var _ = Autograd.NoGrad();
        QuantTestUtil.BitEqual(q.Forward(x).ToArray(), copy.Forward(x).ToArray(), name);
        Assert.Equal(q.LearnableParameters().Count(), copy.LearnableParameters().Count());

        // State() returns copies: changing them does not change the quantizer.
        foreach (var t in state.Values) t.Span.Fill(123f);
        QuantTestUtil.BitEqual(copy.Forward(x).ToArray(), q.Forward(x).ToArray(), name);
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void BadStateIsRejected(string name)
    {
        var c = Cases().Single(k => k.Name == name);
        var q = QuantizerFactory.Create(c.Spec, c.IsWeight);
        q.Observe(c.Data(new Rng(1)));
        q.Calibrate();
        var state = q.State().ToDictionary(s => s.Name, s => s.Value);
        var fresh = QuantizerFactory.Create(c.Spec, c.IsWeight);

        var missing = new Dictionary<string, Tensor>(state);
        missing.Remove(state.Keys.First());
        Assert.Throws<ViTQuantException>(() => fresh.LoadState(missing));

        var extra = new Dictionary<string, Tensor>(state) { ["bogus"] = Tensor.Zeros(1) };
        Assert.Throws<ViTQuantException>(() => fresh.LoadState(extra));

        var nonFinite = state.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
        nonFinite.Values.First().Data[0] = float.NaN;
        Assert.Throws<ViTQuantException>(() => fresh.LoadState(nonFinite));
        Assert.False(fresh.IsCalibrated);
    }

    [Fact]
    public void WrongShapesAndZeroPointsInStateAreRejected()
    {
        var q = new UniformQuantizer(new QuantSpec { Bits = 4, Granularity = Granularity.PerToken });
        Assert.Throws<ViTQuantException>(() => q.LoadState(new Dictionary<string, Tensor> { ["scale"] = Tensor.Ones(3), ["zero_point"] = Tensor.Zeros(2) }));
        Assert.Throws<ViTQuantException>(() => q.LoadState(new Dictionary<string, Tensor> { ["scale"] = Tensor.Ones(2), ["zero_point"] = Tensor.Full(0.5f, 2) }));
        Assert.Throws<ViTQuantException>(() => q.LoadState(new Dictionary<string, Tensor> { ["scale"] = Tensor.Ones(2), ["zero_point"] = Tensor.Full(16f, 2) }));
        var l = new LogQuantizer(new QuantSpec { Kind = QuantKind.Log2, Bits = 4 });
        Assert.Throws<ViTQuantException>(() => l.LoadState(new Dictionary<string, Tensor> { ["delta"] = Tensor.Full(-1f, 1) }));
        var a = new AdaRoundQuantizer(new QuantSpec { Bits = 4, Granularity = Granularity.PerChannel, AdaRound = true });
        Assert.Throws<ViTQuantException>(() => a.LoadState(new Dictionary<string, Tensor>
        {
            ["scale"] = Tensor.Ones(3), ["zero_point"] = Tensor.Zeros(3), ["v"] = Tensor.Zeros(2, 5), ["hard"] = Tensor.Zeros(1),
        }));
    }

    public static TheoryData<QuantKind, int> BadBits()
    {
        var d = new TheoryData<QuantKind, int>();
        foreach (var k in Enum.GetValues<QuantKind>())
            foreach (int b in new[] { 0, 1, 9, 16, -3 }) d.Add(k, b);
        return d;
    }

    [Theory]
    [MemberData(nameof(BadBits))]
    public void BitsOutsideTwoToEightAreRejected(QuantKind kind, int bits)
    {
        var spec = new QuantSpec { Kind = kind, Bits = bits, Granularity = kind == QuantKind.PerPatchOutlier ? Granularity.PerToken : Granularity.PerTensor };
        var ex = Assert.Throws<ViTQuantException>(() => QuantizerFactory.Create(spec, isWeight: false));
        Assert.Contains("2–8", ex.Message);
        Assert.Throws<ViTQuantException>(() => kind switch
        {
            QuantKind.Uniform => new UniformQuantizer(spec),
            QuantKind.Lsq => new LsqQuantizer(spec),
            QuantKind.Log2 or QuantKind.LogSqrt2 => new LogQuantizer(spec),
            QuantKind.PerPatchOutlier => new PerPatchOutlierQuantizer(spec),
            QuantKind.ShiftLog => new ShiftLogQuantizer(spec),
            _ => (Quantizer)new AdaRoundQuantizer(spec),
        });
    }

    [Fact]
    public void FactoryRejectsMismatchedPoints()
    {
        Assert.Throws<ViTQuantException>(() => QuantizerFactory.Create(new QuantSpec { Kind = QuantKind.LogSqrt2 }, isWeight: true));
        Assert.Throws<ViTQuantException>(() => QuantizerFactory.Create(new QuantSpec { Kind = QuantKind.ShiftLog }, isWeight: true));
        Assert.Throws<ViTQuantException>(() => QuantizerFactory.Create(new QuantSpec { AdaRound = true }, isWeight: false));
        Assert.Throws<ViTQuantException>(() => QuantizerFactory.Create(new QuantSpec { Kind = QuantKind.Log2, Learnable = true }, isWeight: false));
        Assert.IsType<AdaRoundQuantizer>(QuantizerFactory.Create(new QuantSpec { AdaRound = true, Granularity = Granularity.PerChannel }, isWeight: true));
    }

    [Fact]
    public void SpecFlagsSurviveJson()
    {
        var spec = new QuantSpec { Kind = QuantKind.Uniform, Bits = 4, Learnable = true, Granularity = Granularity.PerToken, Range = RangeMethod.LpSearch, LpNorm = 2.4f };
        var back = JsonSerializer.Deserialize<QuantSpec>(JsonSerializer.Serialize(spec));
        Assert.Equal(spec, back);
        var dyn = new QuantSpec { Symmetric = true, Dynamic = true, Granularity = Granularity.PerChannel };
        Assert.Equal(dyn, JsonSerializer.Deserialize<QuantSpec>(JsonSerializer.Serialize(dyn)));
    }
}
