// What each quantizer's calibration produced, in a form a report can print or serialise: its state
// tensors (step, zero point, shift, Δ, …) with one-element tensors as numbers and longer ones (per-token
// or per-channel arrays) summarised as count / min / median / max, plus how many values the calibration
// saw and how many its statistic used (equal unless the spec asks for a sample).
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>One state tensor: its value when it has one element, else its summary.</summary>
public sealed record ParameterSummary(string Name, int Count, double? Value, double? Min, double? Median, double? Max);

/// <summary>The calibration of one quantization point.</summary>
public sealed record PointCalibration(string Point, string Role, string Quantizer, long ValuesSeen, long ValuesUsed, int SampleSize, IReadOnlyList<ParameterSummary> Parameters)
{
    /// <summary>Every calibrated quantizer of a model: weights (role "weight") then activations ("activation").</summary>
    internal static List<PointCalibration> Of(QuantizedModel qm)
    {
        var list = new List<PointCalibration>();
        foreach (var (name, q) in qm.WeightQuantizers) if (q.IsCalibrated) list.Add(Of(name, "weight", q));
        foreach (var (name, q) in qm.ActivationQuantizers) if (q.IsCalibrated) list.Add(Of(name, "activation", q));
        return list;
    }

    /// <summary>The summary of one calibrated quantizer. Throws InvalidOperationException before calibration.</summary>
    internal static PointCalibration Of(string point, string role, Quantizer q)
    {
        // AdaRound's rounding variables V are learned state, not calibration parameters.
        var ps = q.State().Where(s => s.Name != "v").Select(s => Summarise(s.Name, s.Value)).ToList();
        return new PointCalibration(point, role, q.Spec.ToString(), q.ValuesSeen, q.ValuesUsed, q.Spec.SampleSize, ps);
    }

    private static ParameterSummary Summarise(string name, Tensor t)
    {
        var v = t.ToArray();
        if (v.Length == 1) return float.IsFinite(v[0]) ? new ParameterSummary(name, 1, v[0], v[0], v[0], v[0]) : new ParameterSummary(name, 1, null, null, null, null);
        var s = v.Where(float.IsFinite).OrderBy(x => x).ToArray();
        if (s.Length == 0) return new ParameterSummary(name, v.Length, null, null, null, null);
        double median = s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * ((double)s[s.Length / 2 - 1] + s[s.Length / 2]);
        return new ParameterSummary(name, v.Length, null, s[0], median, s[^1]);
    }
}
