// LSQ / LSQ+ quantizer with a learned step α and zero point z (MimiQ's activation quantizer, spec §2).
//
//     v  = x/α + ⌊z⌉            ⌊·⌉ = round half to even, straight-through in the backward
//     x̂  = (⌊clamp(v, q_min, q_max)⌉ − ⌊z⌉)·α
// Gradients (what autograd gives for this composition with round_ste; clamp passes at its bounds):
//     ∂x̂/∂x = 1 if q_min ≤ v ≤ q_max else 0
//     ∂x̂/∂α = ⌊v⌉ − ⌊z⌉ − x/α inside,  q_min − ⌊z⌉ or q_max − ⌊z⌉ outside   (LSQ; −x/α + ⌊x/α⌉ for z = 0)
//     ∂x̂/∂z = 0 inside,  −α outside                                       (LSQ+)
// and the α and z gradients are multiplied by LSQ's gradient scale g = 1/√(n·q_max), n = elements per
// group of the tensor being quantized (numel(x) per tensor). A learned α below RangeSearch.MinScale is
// used as MinScale and gets no gradient.
//
// Initialisation from the observed batches:
//   activations  signed = (min of the FIRST batch < 0); [q_min, q_max] = [−2^(b−1), 2^(b−1) − 1] when
//                signed else [0, 2^b − 1]; α = 2·mean|x|/√q_max per group, z = 0. mean|x| runs over all
//                observed batches — observe exactly one batch to reproduce the MimiQ code's first-batch
//                initialisation. Spec.Symmetric is not used (the data decide).
//                With Spec.RangeInit the step and zero point instead come from the Spec.Range search
//                (min–max, percentile or Lp/MSE, RangeSearch) on a sample of the observed values: the
//                searched asymmetric grid q ∈ [0, 2^b − 1] with zero point z is the same set of levels as
//                the LSQ grid [q_min, q_max] with zero point z + q_min, so that is the z stored. The
//                spec's rule puts α at 2·mean|x|/√q_max, which on tensors with outlier channels clips far
//                more than a range search would; a range-searched start gives fine-tuning a better point.
//   weights      from min–max per group: symmetric → signed grid, α = 2·max|w|/(2^b − 1), z = 0;
//                asymmetric → [0, 2^b − 1], α = (max − min)/(2^b − 1), z = round(−min/α) (range widened
//                to contain 0, as RangeSearch.FromRange).
using System.Runtime.Intrinsics;
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>Learned-step (LSQ) and learned-zero-point (LSQ+) fake quantization.</summary>
internal sealed class LsqQuantizer : Quantizer
{
    private readonly bool _isWeight;
    private readonly MinMaxObserver _minMax;
    private readonly ReservoirObserver? _sample; // RangeInit activations only
    private double[]? _absSum;
    private long[]? _absCount;
    private bool? _signed;
    private Tensor? _alpha; // [G]
    private Tensor? _zero;  // [G]

    /// <param name="spec">an Lsq spec (validated).</param>
    /// <param name="isWeight">initialise from min–max (weights) instead of LSQ's mean-|x| rule (activations).</param>
    /// <exception cref="ArgumentException">when spec.Kind is not Lsq.</exception>
    public LsqQuantizer(QuantSpec spec, bool isWeight = false) : base(spec)
    {
        if (Spec.Kind != QuantKind.Lsq) throw new ArgumentException($"LsqQuantizer needs an Lsq spec, got {Spec.Kind}", nameof(spec));
        _isWeight = isWeight;
        _minMax = new MinMaxObserver(Spec.Granularity);
        if (Spec.RangeInit && !isWeight && Spec.Range != RangeMethod.MinMax) _sample = new ReservoirObserver(Spec.Granularity, Spec.SampleSize);
    }

    /// <summary>True for the signed grid. Throws InvalidOperationException before the first batch (activations).</summary>
    public bool Signed => _isWeight ? Spec.Symmetric : _signed ?? throw new InvalidOperationException($"{Spec} quantizer has not seen a batch yet");

    /// <summary>Lowest integer code of the grid (depends on <see cref="Signed"/>).</summary>
    public int QMin => RangeSearch.IntRange(Spec.Bits, Signed).QMin;

    /// <summary>Highest integer code of the grid (depends on <see cref="Signed"/>).</summary>
    public int QMax => RangeSearch.IntRange(Spec.Bits, Signed).QMax;

    /// <summary>Learned step α [G] (null before calibration).</summary>
    public Tensor? Alpha => _alpha;

    /// <summary>Learned zero point z [G] (used rounded; null before calibration).</summary>
    public Tensor? ZeroPoint => _zero;

    /// <inheritdoc/>
    public override void Observe(Tensor x)
    {
        var layout = GroupLayout.For(Spec.Granularity, x.Shape, "calibration batch");
        bool first = _minMax.Groups == 0;
        _minMax.Observe(x.Span, layout);
        _sample?.Observe(x.Span, layout);
        if (first && !_isWeight) _signed = _minMax.GlobalMin < 0;
        _absSum ??= new double[layout.Groups];
        _absCount ??= new long[layout.Groups];
        layout.ForEachRun(x.Size, (start, len, g) =>
        {
            double s = 0;
            foreach (float v in x.Data.AsSpan(start, len)) s += MathF.Abs(v);
            _absSum[g] += s;
            _absCount[g] += len;
        });
    }

    /// <summary>Initialises α and z (file header). Throws InvalidOperationException when nothing was observed.</summary>
    public override void Calibrate()
    {
        if (_minMax.Groups == 0) throw new InvalidOperationException($"{Spec} quantizer calibrated before observing any batch");
        int groups = _minMax.Groups;
        var alpha = new float[groups];
        var zero = new float[groups];
        for (int g = 0; g < groups; g++)
        {
            if (_isWeight)
            {
                var p = RangeSearch.FromRange(_minMax.Min[g], _minMax.Max[g], Spec.Bits, Spec.Symmetric);
                alpha[g] = p.Scale;
                zero[g] = p.ZeroPoint;
            }
            else if (Spec.RangeInit)
            {
                var sample = _sample?.SampleFor(Spec.Range, g) ?? Array.Empty<float>();
                var p = RangeSearch.Search(Spec.Range, sample, _minMax.Min[g], _minMax.Max[g], Spec.Bits, symmetric: false, Spec.LpNorm);
                alpha[g] = p.Scale;
                zero[g] = p.ZeroPoint + QMin;
            }
            else
            {
                double meanAbs = _absSum![g] / Math.Max(1, _absCount![g]);
                alpha[g] = RangeSearch.SafeScale((float)(2 * meanAbs / Math.Sqrt(QMax)));
            }
        }
        FinishStatistics(_minMax, _sample);
        SetParams(alpha, zero);
    }

    private void SetParams(float[] alpha, float[] zero)
    {
        _alpha = QuantState.Assign(_alpha, Tensor.FromArray(alpha, alpha.Length), requiresGrad: true);
        _zero = QuantState.Assign(_zero, Tensor.FromArray(zero, zero.Length), requiresGrad: true);
        IsCalibrated = true;
    }

    /// <summary>
    /// LSQ fake quantization (file header), one autograd node with gradients for x, α and z. Throws
    /// InvalidOperationException before calibration and ViTQuantException when x's group count differs.
    /// </summary>
    public override Tensor Forward(Tensor x)
    {
        EnsureCalibrated();
        var layout = GroupLayout.For(Spec.Granularity, x.Shape, "input");
        if (layout.Groups != _alpha!.Size)
            throw new ViTQuantException($"{Spec} quantizer was calibrated for {_alpha.Size} group(s), got a tensor of shape {Tensor.ShapeString(x.Shape)} with {layout.Groups}");
        return Apply(x, layout, _alpha, _zero!, QMin, QMax);
    }

    /// <summary>The LSQ op itself (also used by tests with hand-made α and z).</summary>
    internal static Tensor Apply(Tensor x, GroupLayout layout, Tensor alpha, Tensor zero, int qmin, int qmax)
    {
        int n = x.Size;
        var y = Tensor.OutputUninitialized(x.Shape); // an op output (every element written below): recycled with the caller's arena scope
        float[] xd = x.Data, yd = y.Data, ad = alpha.Data, zd = zero.Data;
        FakeQuant.ForSegments(n, layout, (_, start, end, g) =>
            ForwardSegment(xd.AsSpan(start, end - start), yd.AsSpan(start, end - start), RangeSearch.SafeScale(ad[g]), MathF.Round(zd[g]), qmin, qmax));
        if (!Autograd.Needs(x, alpha, zero)) return y;

        double gradScale = 1.0 / Math.Sqrt((double)(n / layout.Groups) * qmax);
        return Autograd.Record("lsq_fake_quant", y, new[] { x, alpha, zero }, gy =>
        {
            float[] gd = gy.Data;
            float[]? gxd = x.RequiresGrad ? FakeQuant.GradData(x) : null;
            int groups = layout.Groups, chunks = FakeQuant.Chunks(n);
            var pa = new double[chunks * groups];
            var pz = new double[chunks * groups];
            FakeQuant.ForSegments(n, layout, (c, start, end, g) =>
            {
                float a = RangeSearch.SafeScale(ad[g]), rz = MathF.Round(zd[g]);
                var (sa, sOut) = BackwardSegment(xd.AsSpan(start, end - start), gd.AsSpan(start, end - start),
                    gxd != null ? gxd.AsSpan(start, end - start) : default, a, rz, qmin, qmax);
                if (ad[g] >= RangeSearch.MinScale) pa[c * groups + g] += sa;
                pz[c * groups + g] -= sOut * a;
            });
            for (int k = 0; k < pa.Length; k++) { pa[k] *= gradScale; pz[k] *= gradScale; }
            if (alpha.RequiresGrad) FakeQuant.AddPartials(pa, groups, alpha.GradSpan());
            if (zero.RequiresGrad) FakeQuant.AddPartials(pz, groups, zero.GradSpan());
        });
    }

    /// <summary>
    /// y = (⌊clamp(x/α + ⌊z⌉, q_min, q_max)⌉ − ⌊z⌉)·α over one segment of one group, in one pass of eight lanes:
    /// each step rounded in float as the scalar form rounds it, so the result is the same bit for bit (the clamp as
    /// in FakeQuant.UniformSpan: the native max and min, bound first, are Math.Clamp lane for lane).
    /// </summary>
    internal static unsafe void ForwardSegment(ReadOnlySpan<float> x, Span<float> y, float a, float rz, int qmin, int qmax)
    {
        int len = x.Length, i = 0;
        var va = Vector256.Create(a);
        var vrz = Vector256.Create(rz);
        var vmin = Vector256.Create((float)qmin);
        var vmax = Vector256.Create((float)qmax);
        fixed (float* px = x, py = y)
            for (; i + 8 <= len; i += 8)
                ((Vector256.Round(Vector256.MinNative(vmax, Vector256.MaxNative(vmin, Vector256.Load(px + i) / va + vrz))) - vrz) * va).Store(py + i);
        for (; i < len; i++) y[i] = (MathF.Round(Math.Clamp(x[i] / a + rz, qmin, qmax)) - rz) * a;
    }

    /// <summary>
    /// One segment of one group of the backward: gx[i] += g[i] where x[i] is inside the grid (gx may be empty),
    /// and the returns Σ g·∂x̂/∂α and Σ g over the elements outside. Eight lanes at a time; each product
    /// g·(∂x̂/∂α) is exact in double, so only the summation order differs from <see cref="ReferenceBackwardSegment"/>.
    /// </summary>
    internal static unsafe (double Sa, double SOut) BackwardSegment(ReadOnlySpan<float> x, ReadOnlySpan<float> g, Span<float> gx,
        float a, float rz, int qmin, int qmax)
    {
        int len = x.Length, i = 0;
        var va = Vector256.Create(a);
        var vrz = Vector256.Create(rz);
        var vmin = Vector256.Create((float)qmin);
        var vmax = Vector256.Create((float)qmax);
        Vector256<double> sa0 = default, sa1 = default, so0 = default, so1 = default;
        fixed (float* px = x, pg = g, pgx = gx)
        {
            for (; i + 8 <= len; i += 8)
            {
                var gv = Vector256.Load(pg + i);
                var u = Vector256.Load(px + i) / va;
                var v = u + vrz;
                var inside = Vector256.GreaterThanOrEqual(v, vmin) & Vector256.LessThanOrEqual(v, vmax);
                if (pgx != null) (Vector256.Load(pgx + i) + (gv & inside)).Store(pgx + i);
                // NaN is outside and takes q_max, as the scalar form's comparisons send it.
                var edge = Vector256.ConditionalSelect(Vector256.LessThan(v, vmin), vmin, vmax) - vrz;
                var term = Vector256.ConditionalSelect(inside, Vector256.Round(v) - vrz - u, edge);
                var (g0, g1) = Vector256.Widen(gv);
                var (t0, t1) = Vector256.Widen(term);
                sa0 = Vector256.FusedMultiplyAdd(g0, t0, sa0);
                sa1 = Vector256.FusedMultiplyAdd(g1, t1, sa1);
                var (o0, o1) = Vector256.Widen(Vector256.AndNot(gv, inside));
                so0 += o0;
                so1 += o1;
            }
        }
        double sa = Vector256.Sum(sa0 + sa1), sOut = Vector256.Sum(so0 + so1);
        var (ta, to) = ReferenceBackwardSegment(x[i..], g[i..], gx.IsEmpty ? default : gx[i..], a, rz, qmin, qmax);
        return (sa + ta, sOut + to);
    }

    /// <summary>The scalar form of <see cref="BackwardSegment"/> (its twin, and its tail).</summary>
    internal static (double Sa, double SOut) ReferenceBackwardSegment(ReadOnlySpan<float> x, ReadOnlySpan<float> g, Span<float> gx,
        float a, float rz, int qmin, int qmax)
    {
        double sa = 0, sOut = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float u = x[i] / a, v = u + rz;
            if (v >= qmin && v <= qmax)
            {
                if (!gx.IsEmpty) gx[i] += g[i];
                sa += g[i] * (double)(MathF.Round(v) - rz - u);
            }
            else
            {
                sa += g[i] * (double)((v < qmin ? qmin : qmax) - rz);
                sOut += g[i];
            }
        }
        return (sa, sOut);
    }

    /// <inheritdoc/>
    public override IEnumerable<Tensor> LearnableParameters() =>
        _alpha != null ? new[] { _alpha, _zero! } : Array.Empty<Tensor>();

    /// <summary>"alpha" [G], "zero_point" [G] and "signed" [1] (1 or 0). Throws InvalidOperationException before calibration.</summary>
    public override IEnumerable<(string Name, Tensor Value)> State()
    {
        EnsureCalibrated();
        return new[] { ("alpha", _alpha!.Clone()), ("zero_point", _zero!.Clone()), ("signed", Tensor.FromArray(new[] { Signed ? 1f : 0f }, 1)) };
    }

    /// <inheritdoc/>
    public override void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        QuantState.ExpectNames(state, Spec, "alpha", "zero_point", "signed");
        var alpha = state["alpha"];
        if (alpha.Size == 0) throw new ViTQuantException($"{Spec} quantizer state 'alpha' is empty");
        QuantState.Get(state, Spec, "alpha", alpha.Size);
        var zero = QuantState.Get(state, Spec, "zero_point", alpha.Size);
        float signed = QuantState.Get(state, Spec, "signed", 1).Item();
        if (signed != 0f && signed != 1f) throw new ViTQuantException($"{Spec} quantizer state 'signed' must be 0 or 1, got {signed}");
        if (_isWeight && (signed == 1f) != Spec.Symmetric)
            throw new ViTQuantException($"{Spec} weight quantizer state says signed={signed}, the spec says symmetric={Spec.Symmetric}");
        _signed = signed == 1f;
        SetParams(alpha.ToArray(), zero.ToArray());
    }
}
