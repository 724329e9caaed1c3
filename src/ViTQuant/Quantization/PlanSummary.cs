// What a quantization plan does to one model, in a few lines a report can print: for weights and for
// activations, each distinct quantizer (kind, bits, granularity, range method, learnable) with the
// points it covers, and how many points stay in float. `vitq eval` / `vitq info` put this in their
// JSON so a quantized model's result can never be mistaken for a float one's.
using ViTQuant.Models;

namespace ViTQuant.Quantization;

/// <summary>One distinct quantizer of a plan and the model points it sits at; Target is "weight" or "activation".</summary>
public sealed record PlanQuantizerUse(string Target, QuantKind Kind, int Bits, Granularity Granularity, RangeMethod Range,
    bool Learnable, IReadOnlyList<string> Points);

/// <summary>A plan as applied to a model's named points.</summary>
public sealed record PlanSummary(string Plan, int WeightBits, int ActivationBits, IReadOnlyList<PlanQuantizerUse> Quantizers,
    int FloatWeightPoints, int FloatActivationPoints)
{
    /// <summary>Matches every weight layer and activation point of <paramref name="config"/> against <paramref name="plan"/>.</summary>
    public static PlanSummary Of(QuantPlan plan, IModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(config);
        var uses = new List<PlanQuantizerUse>();
        int floatW = Collect("weight", QuantPlan.WeightLayers(config), plan.WeightSpec, uses);
        int floatA = Collect("activation", QuantPlan.ActivationPoints(config), plan.ActivationSpec, uses);
        return new PlanSummary(plan.Name, plan.WeightBits, plan.ActivationBits, uses, floatW, floatA);
    }

    private static int Collect(string target, IEnumerable<string> points, Func<string, QuantSpec?> spec, List<PlanQuantizerUse> into)
    {
        int kept = 0;
        var groups = new Dictionary<(QuantKind, int, Granularity, RangeMethod, bool), List<string>>();
        var order = new List<(QuantKind, int, Granularity, RangeMethod, bool)>();
        foreach (var p in points)
        {
            if (spec(p) is not QuantSpec s) { kept++; continue; }
            var key = (s.Kind, s.Bits, s.Granularity, s.Range, s.Learnable);
            if (!groups.TryGetValue(key, out var list)) { groups[key] = list = new List<string>(); order.Add(key); }
            list.Add(p);
        }
        foreach (var k in order) into.Add(new PlanQuantizerUse(target, k.Item1, k.Item2, k.Item3, k.Item4, k.Item5, groups[k]));
        return kept;
    }

    /// <summary>One line per quantizer, e.g. "weights: Uniform 4-bit PerChannel MinMax × 25".</summary>
    public IEnumerable<string> Describe() => Quantizers.Select(q =>
        $"{q.Target}s: {q.Kind} {q.Bits}-bit {q.Granularity} {q.Range}{(q.Learnable ? " learnable" : "")} × {q.Points.Count}");
}
