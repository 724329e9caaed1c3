// Quantization plans: which quantizer sits at which named point of the model (docs/ARCHITECTURE.md).
//
// A plan is data. Rules are (pattern, spec) pairs tried in order, first match wins; a null spec
// keeps the point in float. Patterns are globs over point names ('*' any run of characters,
// '?' one). Weight rules and activation rules are separate lists because the same layer name
// denotes both its weight and its input. Presets build the plans of the methods we implement for
// any bit setting. Plans serialise to JSON and travel inside quantized checkpoints.
using System.Text.Json;
using System.Text.RegularExpressions;
using ViTQuant.Models;

namespace ViTQuant.Quantization;

/// <summary>One rule of a plan: points whose name matches the glob <paramref name="Pattern"/> get <paramref name="Spec"/> (null keeps them in float).</summary>
public sealed record QuantRule(string Pattern, QuantSpec? Spec);

/// <summary>Which quantizer sits at which named point: ordered weight and activation rules, first match wins. Serialises to JSON.</summary>
public sealed record QuantPlan
{
    /// <summary>Plan name for reports ("minmax", "adfq", … for presets).</summary>
    public string Name { get; init; } = "custom";
    /// <summary>Nominal weight bits for reports (rules may differ, e.g. 8-bit first and last layers).</summary>
    public int WeightBits { get; init; }
    /// <summary>Nominal activation bits for reports.</summary>
    public int ActivationBits { get; init; }
    /// <summary>Weight rules over layer names, tried in order.</summary>
    public IReadOnlyList<QuantRule> Weights { get; init; } = Array.Empty<QuantRule>();
    /// <summary>Activation rules over point names (a layer name means its input), tried in order.</summary>
    public IReadOnlyList<QuantRule> Activations { get; init; } = Array.Empty<QuantRule>();

    /// <summary>The spec for a layer's weight, or null to keep it in float.</summary>
    public QuantSpec? WeightSpec(string layer) => Match(Weights, layer);

    /// <summary>The spec for an activation point, or null to keep it in float.</summary>
    public QuantSpec? ActivationSpec(string point) => Match(Activations, point);

    private static QuantSpec? Match(IReadOnlyList<QuantRule> rules, string name)
    {
        foreach (var r in rules) if (Glob(r.Pattern).IsMatch(name)) return r.Spec;
        return null;
    }

    private static readonly Dictionary<string, Regex> GlobCache = new();

    private static Regex Glob(string pattern)
    {
        lock (GlobCache)
        {
            if (!GlobCache.TryGetValue(pattern, out var re))
                GlobCache[pattern] = re = new Regex("^" + Regex.Escape(pattern).Replace(@"\*", ".*").Replace(@"\?", ".") + "$", RegexOptions.CultureInvariant);
            return re;
        }
    }

    /// <summary>Validates every spec (bits 2–8 etc.); throws ViTQuantException naming the rule.</summary>
    public QuantPlan Validated()
    {
        foreach (var r in Weights.Concat(Activations))
        {
            if (string.IsNullOrWhiteSpace(r.Pattern)) throw new ViTQuantException($"plan '{Name}': empty pattern");
            try { r.Spec?.Validated(); }
            catch (ViTQuantException e) { throw new ViTQuantException($"plan '{Name}', rule '{r.Pattern}': {e.Message}"); }
        }
        return this;
    }

    private static readonly JsonSerializerOptions JsonOpts = new() { WriteIndented = false };

    /// <summary>The plan as JSON (what quantized checkpoints store).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOpts);

    /// <summary>Parses and validates a plan written by <see cref="ToJson"/>; throws ViTQuantException starting with <paramref name="source"/> on invalid JSON or specs.</summary>
    public static QuantPlan FromJson(string json, string source)
    {
        try { return (JsonSerializer.Deserialize<QuantPlan>(json, JsonOpts) ?? throw new ViTQuantException($"{source}: empty plan")).Validated(); }
        catch (JsonException e) { throw new ViTQuantException($"{source}: quantization plan is not valid JSON ({e.Message})"); }
    }

    /// <summary>Every weight layer of a model, in forward order (ViT: blocks.{i}.…; Swin: layers.{s}.blocks.{b}.…).</summary>
    public static IEnumerable<string> WeightLayers(IModelConfig c) => c.WeightLayers();

    /// <summary>Every activation point of a model, in forward order.</summary>
    public static IEnumerable<string> ActivationPoints(IModelConfig c) => c.ActivationPoints();
}

/// <summary>The plans of the implemented methods (baselines.md, adfq-vit.md §4, mimiq.md §2).</summary>
internal static class QuantPresets
{
    /// <summary>The preset names <see cref="Create"/> accepts.</summary>
    public static readonly string[] Names = { "minmax", "percentile", "adfq", "mimiq" };

    /// <summary>
    /// Builds a preset plan. The image input of the patch embedding stays in float (as in MimiQ);
    /// <paramref name="firstLast8Bit"/> keeps the patch embedding and head at 8 bits.
    /// Throws ViTQuantException for an unknown name or bits outside 2–8.
    /// </summary>
    public static QuantPlan Create(string name, int wbits, int abits, bool firstLast8Bit = false)
    {
        if (wbits < 2 || wbits > 8) throw new ViTQuantException($"--wbits {wbits}: weight bits must be 2–8");
        if (abits < 2 || abits > 8) throw new ViTQuantException($"--abits {abits}: activation bits must be 2–8");
        QuantSpec W(QuantSpec s, string layer) => firstLast8Bit && layer is "patch_embed.proj" or "head" or "head_dist" or "head.fc" ? s with { Bits = 8 } : s;
        var weights = new List<QuantRule>();
        var acts = new List<QuantRule> { new("patch_embed.proj", null) }; // the image itself stays float
        switch (name)
        {
            case "minmax":
            case "percentile":
            {
                var w = new QuantSpec { Bits = wbits, Granularity = Granularity.PerChannel, Symmetric = true, Range = RangeMethod.MinMax };
                var a = new QuantSpec { Bits = abits, Range = name == "minmax" ? RangeMethod.MinMax : RangeMethod.Percentile };
                foreach (var l in new[] { "patch_embed.proj", "head", "head_dist", "head.fc" }) weights.Add(new(l, W(w, l)));
                weights.Add(new("*", w));
                foreach (var l in new[] { "head", "head_dist", "head.fc" }) acts.Add(new(l, W(a, l)));
                acts.Add(new("*", a));
                break;
            }
            case "adfq":
            {
                var w = new QuantSpec { Bits = wbits, Granularity = Granularity.PerChannel, Range = RangeMethod.Percentile, AdaRound = true };
                foreach (var l in new[] { "patch_embed.proj", "head", "head_dist", "head.fc" }) weights.Add(new(l, W(w, l)));
                weights.Add(new("*", w));
                var patch = new QuantSpec { Kind = QuantKind.PerPatchOutlier, Bits = abits, Granularity = Granularity.PerToken, OutlierThreshold = 5f, Range = RangeMethod.Percentile };
                // q, k, v: the published UniformAffineQuantizer searches the step and the zero point (p = 2.4).
                var qkv = new QuantSpec { Bits = abits, Range = RangeMethod.LpZeroPointSearch, LpNorm = 2.4f };
                var perc = new QuantSpec { Bits = abits, Range = RangeMethod.Percentile, Learnable = true }; // ADFQ learns these steps
                // "*blocks.*": ViT's blocks.{i}.… and Swin's layers.{s}.blocks.{b}.… alike.
                acts.Add(new("*blocks.*.attn.qkv", patch));
                acts.Add(new("*blocks.*.mlp.fc1", patch));
                acts.Add(new("*blocks.*.mlp.fc2", new QuantSpec { Kind = QuantKind.ShiftLog, Bits = abits, SqrtTwoBase = true, Range = RangeMethod.Percentile }));
                acts.Add(new("*blocks.*.attn.q", qkv));
                acts.Add(new("*blocks.*.attn.k", qkv));
                acts.Add(new("*blocks.*.attn.v", qkv));
                // Post-softmax: the published LogSqrt2Quantizer picks Δ among quantile(p) by MSE, not Δ = max(p).
                acts.Add(new("*blocks.*.attn.probs", new QuantSpec { Kind = QuantKind.LogSqrt2, Bits = abits, Range = RangeMethod.Percentile }));
                foreach (var l in new[] { "head", "head_dist", "head.fc" }) acts.Add(new(l, W(perc, l)));
                acts.Add(new("*", perc));
                break;
            }
            case "mimiq":
            {
                // Weights are re-quantized from their current values at every step of the fine-tuning.
                var w = new QuantSpec { Bits = wbits, Granularity = Granularity.PerChannel, Symmetric = true, Range = RangeMethod.MinMax, Dynamic = true };
                foreach (var l in new[] { "patch_embed.proj", "head", "head_dist", "head.fc" }) weights.Add(new(l, W(w, l)));
                weights.Add(new("*", w));
                var a = new QuantSpec { Kind = QuantKind.Lsq, Bits = abits };
                foreach (var l in new[] { "head", "head_dist", "head.fc" }) acts.Add(new(l, W(a, l)));
                acts.Add(new("*", a));
                break;
            }
            default:
                throw new ViTQuantException($"unknown method '{name}' (known: {string.Join(", ", Names)})");
        }
        return new QuantPlan { Name = name, WeightBits = wbits, ActivationBits = abits, Weights = weights, Activations = acts }.Validated();
    }
}
