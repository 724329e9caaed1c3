// Per-layer damage report of a fake-quantized model against its float original, on one batch.
//
// For every activation point: the float network's tensor at that point (x_fp) against what the
// quantized network feeds onward there (x̂ = q(x_q), x_q being the quantized network's own, already
// perturbed, input). SQNR = 10·log10(Σ x_fp² / Σ (x_fp − x̂)²) measures the error accumulated up to
// and including that point; "local" SQNR compares x_q with q(x_q) only (this quantizer's own noise).
// For every weight: SQNR and cosine of ŵ against w. Rows are sorted worst first.
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Metrics;

/// <summary>One row of the damage report: the point or layer, "activation" or "weight", the quantizer spec, SQNR accumulated up to the point and of this quantizer alone (dB), cosine similarity, and the fraction kept in float (outlier-aware quantizers).</summary>
public sealed record LayerReport(string Point, string Kind, string Quantizer, double Sqnr, double LocalSqnr, double Cosine, double? OutlierFraction);

/// <summary>Per-layer damage of a fake-quantized model against its float original.</summary>
internal static class QuantReport
{
    /// <summary>Per quantization point, the damage on one batch, most damaged first.</summary>
    /// <param name="floatModel">the original model (the quantized model may hold frozen, quantized weights).</param>
    /// <param name="qm">the quantized model, calibrated (and possibly frozen).</param>
    /// <param name="batch">normalised images [B, C, H, W].</param>
    /// <remarks>
    /// Memory: the float pass keeps a copy of each activation point's input only; the quantized pass
    /// compares at each point as it goes. Both run block by block (VisionTransformer.Infer), so no
    /// whole-network set of activations is ever held.
    /// </remarks>
    public static List<LayerReport> Build(VisionModel floatModel, QuantizedModel qm, Tensor batch)
    {
        var rows = new List<LayerReport>();
        var fp = new FloatRecorder();
        var q = new Comparer(qm, fp.Inputs);
        using (TensorArena.Scope())
        {
            floatModel.Infer(batch, fp);
            qm.Model.Infer(batch, q);
        }
        var fpWeights = floatModel.NamedParameters().ToDictionary(p => p.Name, p => p.Param);
        foreach (var (point, quant) in qm.ActivationQuantizers)
        {
            if (!q.Activations.TryGetValue(point, out var a)) continue;
            rows.Add(new LayerReport(point, "activation", quant.Spec.ToString(), a.Sqnr, a.LocalSqnr, a.Cosine, (quant as IReportsOutliers)?.OutlierFraction));
        }
        foreach (var (layer, quant) in qm.WeightQuantizers)
        {
            if (!q.Weights.TryGetValue(layer, out var w)) continue;
            var original = fpWeights[layer + ".weight"];
            double s = Sqnr(original, w);
            rows.Add(new LayerReport(layer, "weight", quant.Spec.ToString(), s, s, Cosine(original, w), null));
        }
        rows.Sort((a, b) => a.Sqnr.CompareTo(b.Sqnr));
        return rows;
    }

    /// <summary>10·log10(Σ ref² / Σ (ref − test)²) in dB; +∞ when identical.</summary>
    public static double Sqnr(Tensor reference, Tensor test)
    {
        double sig = 0, err = 0;
        var a = reference.Span;
        var b = test.Span;
        for (int i = 0; i < a.Length; i++)
        {
            sig += (double)a[i] * a[i];
            double d = (double)a[i] - b[i];
            err += d * d;
        }
        return err == 0 ? double.PositiveInfinity : 10 * Math.Log10(Math.Max(sig, 1e-30) / err);
    }

    /// <summary>Cosine similarity of two tensors of the same length (1 when both are zero, 0 when only one is).</summary>
    public static double Cosine(Tensor a, Tensor b)
    {
        double ab = 0, aa = 0, bb = 0;
        var x = a.Span;
        var y = b.Span;
        for (int i = 0; i < x.Length; i++) { ab += (double)x[i] * y[i]; aa += (double)x[i] * x[i]; bb += (double)y[i] * y[i]; }
        return aa == 0 || bb == 0 ? (aa == bb ? 1 : 0) : ab / Math.Sqrt(aa * bb);
    }

    /// <summary>The float pass: a copy of each activation point's input (the tensors themselves are recycled block by block).</summary>
    private sealed class FloatRecorder : IModelHooks
    {
        public readonly Dictionary<string, Tensor> Inputs = new();

        public Tensor Activation(string point, Tensor x)
        {
            Inputs[point] = x.Clone();
            return x;
        }

        public Tensor Weight(string layer, Tensor w) => w;
        public void Tap(string name, Tensor t) { }
        public bool WantsTap(string name) => false;
    }

    /// <summary>
    /// The quantized pass: at each activation point, x̂ (after the quantized model's hooks) against the float
    /// input there and against its own input; each weight's quantized value (kept: cached or frozen, never recycled).
    /// </summary>
    private sealed class Comparer : IModelHooks
    {
        private readonly IModelHooks _inner;
        private readonly Dictionary<string, Tensor> _fp;
        public readonly Dictionary<string, (double Sqnr, double LocalSqnr, double Cosine)> Activations = new();
        public readonly Dictionary<string, Tensor> Weights = new();

        public Comparer(IModelHooks inner, Dictionary<string, Tensor> fpInputs)
        {
            _inner = inner;
            _fp = fpInputs;
        }

        public Tensor Activation(string point, Tensor x)
        {
            var y = _inner.Activation(point, x);
            if (_fp.TryGetValue(point, out var f)) Activations[point] = (Sqnr(f, y), Sqnr(x, y), Cosine(f, y));
            else Activations.Remove(point);
            return y;
        }

        public Tensor Weight(string layer, Tensor w)
        {
            var y = _inner.Weight(layer, w);
            Weights[layer] = ReferenceEquals(y, w) ? w : y.Clone();
            return y;
        }

        public void Tap(string name, Tensor t) => _inner.Tap(name, t);
        public bool WantsTap(string name) => _inner.WantsTap(name);
    }
}
