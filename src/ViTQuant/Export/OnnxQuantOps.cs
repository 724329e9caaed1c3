// Activation quantizers as ONNX subgraphs that compute what the fake-quant simulation computes.
//
// Per-tensor uniform grids (min–max, percentile, Lp, learned-step) and LSQ grids with ⌊z⌉ = 0 take the
// QDQ form ONNX Runtime fuses into integer kernels:
//     [Clip(lo, hi)] → QuantizeLinear(s, z) → DequantizeLinear(s, z)
// QuantizeLinear is saturate(round(x/s) + z) with ties to even, our rule (RangeSearch) exactly; the
// storage type is uint8 for grids with q_min ≥ 0 and int8 otherwise (uint8 shifted by 128 in the default
// U8U8 layout, OnnxExportOptions.Int8Layout, so ORT's integer kernels are exact on CPUs without VNNI). A
// grid narrower than its storage type (bits < 8) gets a Clip to lo = (q_min − z)·s, hi = (q_max − z)·s first: lo/s and hi/s lie within
// a few ulps of the integers q_min − z and q_max − z, so round() lands on them, and every x outside
// [lo, hi] then quantizes to the same clamped level as in the simulation. LSQ rounds after adding its
// offset, round(clamp(x/α + ⌊z⌉)); with ⌊z⌉ = 0 that is clamp(round(x/α)), the QDQ rule; with ⌊z⌉ ≠ 0
// the float sum x/α + ⌊z⌉ can round across a half-way point, so that case uses the exact subgraph —
// unless LsqAsQdq asks for QDQ with zero point ⌊z⌉ (integer kernels; it differs from the simulation only
// where fl(x/α + ⌊z⌉) lands on the other side of a half-integer than x/α + ⌊z⌉: about one element in
// 10⁵–10⁶, each moved by one level).
//
// Everything else is an exact subgraph of standard float ops in the simulation's own operation order:
//     uniform per token      Div(Δ_t) → Round → Add(z_t) → Clip(q_min, q_max) → Sub(z_t) → Mul(Δ_t)   (FakeQuant.UniformSpan)
//     LSQ                    Div(α) → Add(⌊z⌉) → Clip → Round → Sub(⌊z⌉) → Mul(α)                    (LsqQuantizer.Apply)
//     per-patch outlier      Where(|x| > α, x, uniform per token (x))                                 (PerPatchOutlierQuantizer)
//     log2 / log√2           level q = min{k : x > T_k} by a branchless binary search over the threshold
//                            table (b + 1 Gather/Greater/Where steps, the comparisons LogGrid.Level makes),
//                            then Gather from the value table padded with 0 for "flushed"  (LogGrid)
//     Shift-Log              Sub(m) → Add(ε) → the log search → Gather → Add(c)                       (ShiftLogQuantizer)
// Per-token tensors [N, 1] broadcast over [B, N, C] and [B, H, N, D]. Round is ONNX's Round (half to
// even), Clip/Min/Max/Where/Greater are exact, so these agree with the simulation bit for bit.
using ViTQuant.Quantization;

namespace ViTQuant.Export;

/// <summary>How one activation point was exported; <see cref="Scale"/> is set for a per-tensor QDQ output (int32 bias possible).</summary>
internal readonly record struct QuantOut(string Value, float? Scale, string Form);

internal sealed class OnnxQuantOps
{
    private readonly OnnxGraph _g;
    private readonly bool _lsqAsQdq, _unsigned;

    /// <param name="g">the graph the quantizer nodes are added to.</param>
    /// <param name="lsqAsQdq">export per-tensor LSQ grids with an offset ⌊z⌉ ≠ 0 as QDQ too (OnnxExportOptions.LsqAsQdq).</param>
    /// <param name="layout">U8U8 stores signed grids as uint8 shifted by 128 (OnnxExportOptions.Int8Layout).</param>
    public OnnxQuantOps(OnnxGraph g, bool lsqAsQdq = false, Int8Layout layout = Int8Layout.U8U8) =>
        (_g, _lsqAsQdq, _unsigned) = (g, lsqAsQdq, layout == Int8Layout.U8U8);

    /// <summary>
    /// The subgraph of activation quantizer <paramref name="q"/> at <paramref name="point"/> applied to
    /// value <paramref name="x"/>. Throws ViTQuantException for a quantizer with no exact export.
    /// </summary>
    public QuantOut Apply(string point, Quantizer q, string x)
    {
        switch (q)
        {
            case UniformQuantizer u:
                if (u.Spec.Dynamic)
                    throw new ViTQuantException($"activation point {point}: a dynamic-range uniform quantizer has no static ONNX form; calibrate the activation ranges (a static range method) and export again");
                var grids = Enumerable.Range(0, u.Groups).Select(u.Params).ToArray();
                if (u.Spec.Granularity == Granularity.PerTensor) return Qdq(point, x, grids[0], "uniform");
                if (u.Spec.Granularity == Granularity.PerToken) return new(UniformPerToken(point, x, grids), null, $"uniform {u.Spec.Bits}-bit per token (float subgraph)");
                throw new ViTQuantException($"activation point {point}: per-channel activation quantization has no ONNX export (its groups are batch rows); use a per-tensor or per-token plan");
            case LsqQuantizer l:
            {
                float[] alpha = l.Alpha!.Span.ToArray().Select(a => RangeSearch.SafeScale(a)).ToArray();
                float[] rz = l.ZeroPoint!.Span.ToArray().Select(z => MathF.Round(z)).ToArray();
                bool fits = rz[0] >= (l.QMin < 0 ? -128 : 0) && rz[0] <= (l.QMin < 0 ? 127 : 255);
                if (l.Spec.Granularity == Granularity.PerTensor && (rz[0] == 0f || (_lsqAsQdq && fits)))
                    return Qdq(point, x, new UniformParams(alpha[0], rz[0], l.QMin, l.QMax), rz[0] == 0f ? "lsq" : "lsq (offset as zero point)");
                if (l.Spec.Granularity == Granularity.PerChannel)
                    throw new ViTQuantException($"activation point {point}: per-channel activation quantization has no ONNX export; use a per-tensor or per-token plan");
                return new(Lsq(point, x, alpha, rz, l.QMin, l.QMax, l.Spec.Granularity == Granularity.PerToken), null,
                    $"lsq {l.Spec.Bits}-bit with offset (float subgraph)");
            }
            case PerPatchOutlierQuantizer p:
            {
                var tokens = Enumerable.Range(0, p.Scale!.Size).Select(p.Params).ToArray();
                string inl = UniformPerToken(point, x, tokens);
                string big = _g.Node("Greater", point, new[] { _g.Node("Abs", point, new[] { x }), _g.Scalar($"{point}.alpha", p.Threshold) });
                return new(_g.Node("Where", point, new[] { big, x, inl }), null, $"per-patch outlier {p.Spec.Bits}-bit α={p.Threshold} (float subgraph)");
            }
            case LogQuantizer lg:
                return new(LogLevels(point, x, lg.Grid, 0f), null, $"{(lg.SqrtTwoBase ? "log√2" : "log2")} {lg.Spec.Bits}-bit (float subgraph)");
            case ShiftLogQuantizer sl:
            {
                var grid = new LogGrid(sl.Delta!.Item(), sl.Spec.Bits, sl.Spec.SqrtTwoBase);
                string shifted = _g.Node("Sub", point, new[] { x, _g.Scalar($"{point}.shift", sl.Shift) });
                shifted = _g.Node("Add", point, new[] { shifted, _g.Scalar($"{point}.eps", ShiftLogQuantizer.Epsilon) });
                return new(LogLevels(point, shifted, grid, sl.Offset, alwaysAddOffset: true), null, $"shift-log {sl.Spec.Bits}-bit (float subgraph)");
            }
            default:
                throw new ViTQuantException($"activation point {point}: {q.Spec} quantizers have no ONNX export");
        }
    }

    /// <summary>Per-tensor QDQ (with a Clip for grids narrower than their 8-bit storage).</summary>
    private QuantOut Qdq(string point, string x, UniformParams p, string kind)
    {
        bool signed = p.QMin < 0;
        if (signed && _unsigned)
        {
            // saturate(round(x/s) + z + 128) over [0, 255] is the int8 code plus 128: the same dequantized values.
            p = p with { QMin = p.QMin + 128, QMax = p.QMax + 128, ZeroPoint = p.ZeroPoint + 128 };
            signed = false;
        }
        int lo = signed ? -128 : 0, hi = signed ? 127 : 255;
        if (p.QMin < lo || p.QMax > hi || p.ZeroPoint < lo || p.ZeroPoint > hi)
            throw new ViTQuantException($"activation point {point}: grid [{p.QMin}, {p.QMax}] with zero point {p.ZeroPoint} does not fit 8-bit storage");
        string v = x;
        if (p.QMin != lo || p.QMax != hi)
        {
            float cl = (p.QMin - p.ZeroPoint) * p.Scale, ch = (p.QMax - p.ZeroPoint) * p.Scale;
            v = _g.Node("Clip", point, new[] { x, _g.Scalar($"{point}.clip_lo", cl), _g.Scalar($"{point}.clip_hi", ch) });
        }
        string s = _g.Scalar($"{point}.scale", p.Scale);
        string z = _g.Bytes($"{point}.zero_point", new[] { (int)p.ZeroPoint }, signed);
        string qv = _g.Node("QuantizeLinear", point, new[] { v, s, z });
        string dq = _g.Node("DequantizeLinear", point, new[] { qv, s, z });
        int bits = (int)Math.Round(Math.Log2(p.QMax - p.QMin + 1));
        return new(dq, p.Scale, $"{kind} {bits}-bit QDQ {(signed ? "int8" : "uint8")}{(v != x ? " + Clip" : "")}");
    }

    /// <summary>FakeQuant.UniformSpan per token: Div → Round → Add z → Clip → Sub z → Mul, with [N, 1] parameters.</summary>
    private string UniformPerToken(string point, string x, UniformParams[] grids)
    {
        int n = grids.Length;
        string s = _g.Floats($"{point}.scale", grids.Select(p => p.Scale).ToArray(), n, 1);
        string z = _g.Floats($"{point}.zero_point", grids.Select(p => p.ZeroPoint).ToArray(), n, 1);
        string v = _g.Node("Div", point, new[] { x, s });
        v = _g.Node("Round", point, new[] { v });
        v = _g.Node("Add", point, new[] { v, z });
        v = _g.Node("Clip", point, new[] { v, _g.Scalar($"{point}.qmin", grids[0].QMin), _g.Scalar($"{point}.qmax", grids[0].QMax) });
        v = _g.Node("Sub", point, new[] { v, z });
        return _g.Node("Mul", point, new[] { v, s });
    }

    /// <summary>LsqQuantizer.Apply: Div α → Add ⌊z⌉ → Clip → Round → Sub ⌊z⌉ → Mul α (per tensor, or [N, 1] per token).</summary>
    private string Lsq(string point, string x, float[] alpha, float[] rz, int qmin, int qmax, bool perToken)
    {
        long[] dims = perToken ? new long[] { alpha.Length, 1 } : Array.Empty<long>();
        string a = _g.Floats($"{point}.alpha", alpha, dims);
        string z = _g.Floats($"{point}.zero_point", rz, dims);
        string v = _g.Node("Div", point, new[] { x, a });
        v = _g.Node("Add", point, new[] { v, z });
        v = _g.Node("Clip", point, new[] { v, _g.Scalar($"{point}.qmin", qmin), _g.Scalar($"{point}.qmax", qmax) });
        v = _g.Node("Round", point, new[] { v });
        v = _g.Node("Sub", point, new[] { v, z });
        return _g.Node("Mul", point, new[] { v, a });
    }

    /// <summary>
    /// x̂ = Values[q] (0 when q = L) + offset with q = #{k : ¬(x &gt; T_k)} = min{k : x &gt; T_k} (the
    /// thresholds decrease). Branchless binary search: pos = 0; for step = L/2 … 1, pos += step when
    /// ¬(x &gt; T[pos + step − 1]); then pos += 1 when ¬(x &gt; T[pos]). NaN compares false and ends at L
    /// (flushed), as LogGrid.Level.
    /// </summary>
    private string LogLevels(string point, string x, LogGrid grid, float offset, bool alwaysAddOffset = false)
    {
        int L = grid.Levels;
        string t = _g.Floats($"{point}.thresholds", grid.Thresholds, L);
        var padded = grid.Values.Append(0f).ToArray();
        string vals = _g.Floats($"{point}.values", padded, L + 1);
        string one = _g.Int64s($"{point}.one", new long[] { 1 });
        string zero = _g.Int64s($"{point}.zero", new long[] { 0 });
        string? pos = null;
        for (int step = L / 2; step >= 1; step /= 2)
        {
            string stepM1 = _g.Int64s($"{point}.step{step}m1", new long[] { step - 1 });
            string idx = pos == null ? stepM1 : _g.Node("Add", point, new[] { pos, stepM1 });
            string th = _g.Node("Gather", point, new[] { t, idx }, OnnxGraph.Int("axis", 0));
            string gt = _g.Node("Greater", point, new[] { x, th });
            string cur = pos ?? zero;
            string next = _g.Node("Add", point, new[] { idx, one }); // pos + step
            pos = _g.Node("Where", point, new[] { gt, cur, next });
        }
        {
            string th = _g.Node("Gather", point, new[] { t, pos! }, OnnxGraph.Int("axis", 0));
            string gt = _g.Node("Greater", point, new[] { x, th });
            pos = _g.Node("Where", point, new[] { gt, pos!, _g.Node("Add", point, new[] { pos!, one }) });
        }
        string y = _g.Node("Gather", point, new[] { vals, pos }, OnnxGraph.Int("axis", 0));
        if (offset != 0f || alwaysAddOffset) y = _g.Node("Add", point, new[] { y, _g.Scalar($"{point}.offset", offset) });
        return y;
    }
}
