// AdaRound weight quantizer (Nagel et al. 2020), as ADFQ-ViT reconstructs weights (spec §3–4).
//
// Base grid: uniform per Spec.Granularity (ADFQ: per output channel, asymmetric, Range = Percentile,
// i.e. the percentile-MSE search over the weight itself), giving Δ, z, [q_min, q_max] per group.
// Learned rounding V (same shape as W) through the rectified sigmoid
//     h(V) = clamp(σ(V)·(ζ − γ) + γ, 0, 1),   ζ = 1.1, γ = −0.1
// initialised so that h(V) = frac(W/Δ) = W/Δ − ⌊W/Δ⌋:  V = −ln((ζ − γ)/(frac − γ) − 1).
//     soft:  W̃ = Δ·(clamp(⌊W/Δ⌋ + h(V) + z, q_min, q_max) − z)
//     hard:  W̃ = Δ·(clamp(⌊W/Δ⌋ + [h(V) ≥ ½] + z, q_min, q_max) − z),  [h(V) ≥ ½] ⇔ V ≥ 0 (tested exactly)
//     ∂W̃/∂V = Δ·(ζ − γ)·σ(V)(1 − σ(V)) where neither clamp is active (clamp passes at its bounds), else 0
// No gradient reaches W: ⌊W/Δ⌋ has derivative 0, and AdaRound learns V with W fixed (as QDrop's code).
// Regulariser: Round(β) = Σ (1 − |2h(V) − 1|^β), differentiable in V (RoundingLoss).
// ⌊W/Δ⌋ is recomputed from the tensor Forward receives, so W must be the calibrated weight.
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>Uniform weight fake quantization with learned rounding (AdaRound).</summary>
internal sealed class AdaRoundQuantizer : Quantizer
{
    /// <summary>Stretch bounds of the rectified sigmoid.</summary>
    public const float Zeta = 1.1f, Gamma = -0.1f;

    private readonly MinMaxObserver _minMax;
    private readonly ReservoirObserver? _sample;
    private Tensor? _observed;
    private float[]? _scale, _zero;
    private Tensor? _v;
    private GroupLayout _layout;

    /// <param name="spec">a Uniform spec (AdaRound's base grid; Dynamic is not allowed).</param>
    /// <param name="seed">seed of the calibration sample (exact for rows up to 16384 values anyway).</param>
    /// <exception cref="ArgumentException">when spec.Kind is not Uniform or spec.Dynamic is set.</exception>
    public AdaRoundQuantizer(QuantSpec spec, ulong seed = 0) : base(spec)
    {
        if (Spec.Kind != QuantKind.Uniform || Spec.Dynamic) throw new ArgumentException($"AdaRound needs a calibrated Uniform spec, got {Spec}", nameof(spec));
        (QMin, QMax) = RangeSearch.IntRange(Spec.Bits, Spec.Symmetric);
        _minMax = new MinMaxObserver(Spec.Granularity);
        if (Spec.Range != RangeMethod.MinMax) _sample = new ReservoirObserver(Spec.Granularity, Spec.SampleSize, seed);
    }

    /// <summary>Lowest integer code of the grid.</summary>
    public int QMin { get; }

    /// <summary>Highest integer code of the grid.</summary>
    public int QMax { get; }

    /// <summary>True once FreezeHardRounding() has fixed every weight to its hard rounding.</summary>
    public bool HardRounding { get; private set; }

    /// <summary>The rounding variables V (same shape as W; null before calibration).</summary>
    public Tensor? V => _v;

    /// <summary>The base grid of one group. Throws InvalidOperationException before calibration.</summary>
    public UniformParams Params(int group)
    {
        EnsureCalibrated();
        return new UniformParams(_scale![group], _zero![group], QMin, QMax);
    }

    /// <summary>h(V) = clamp(σ(V)·(ζ − γ) + γ, 0, 1).</summary>
    public static float RectifiedSigmoid(float v) => Math.Clamp(Sigmoid(v) * (Zeta - Gamma) + Gamma, 0f, 1f);

    private static float Sigmoid(float v) => 1f / (1f + MathF.Exp(-v));

    /// <summary>Observes the weight (its last observed value initialises V).</summary>
    public override void Observe(Tensor x)
    {
        var layout = GroupLayout.For(Spec.Granularity, x.Shape, "weight");
        _minMax.Observe(x.Span, layout);
        _sample?.Observe(x.Span, layout);
        _observed = x.Clone();
        _layout = layout;
    }

    /// <summary>Fixes the base grid and initialises V from the observed weight. Throws InvalidOperationException when nothing was observed.</summary>
    public override void Calibrate()
    {
        if (_observed == null) throw new InvalidOperationException($"{Spec} AdaRound quantizer calibrated before observing its weight");
        int groups = _layout.Groups;
        var grids = new UniformParams[groups];
        float[] min = _minMax.Min.ToArray(), max = _minMax.Max.ToArray();
        Kernels.Parallelism.For(0, groups, g =>
        {
            float[] sample = _sample?.SampleFor(Spec.Range, g) ?? Array.Empty<float>();
            grids[g] = RangeSearch.Search(Spec.Range, sample, min[g], max[g], Spec.Bits, Spec.Symmetric, Spec.LpNorm);
        });
        FinishStatistics(_minMax, _sample);
        _scale = grids.Select(p => p.Scale).ToArray();
        _zero = grids.Select(p => p.ZeroPoint).ToArray();
        var v = new Tensor(_observed.Shape);
        float[] w = _observed.Data, vd = v.Data;
        for (int i = 0; i < w.Length; i++)
        {
            float u = w[i] / _scale[_layout.GroupOf(i)];
            double frac = u - MathF.Floor(u);
            vd[i] = (float)-Math.Log((Zeta - Gamma) / (frac - Gamma) - 1);
        }
        _v = v.RequireGrad();
        HardRounding = false;
        _observed = null;
        IsCalibrated = true;
    }

    /// <summary>
    /// Soft (learned) or hard fake quantization of W (file header); gradient to V only, in soft mode.
    /// Throws InvalidOperationException before calibration and ViTQuantException when W's shape is not V's.
    /// </summary>
    public override Tensor Forward(Tensor x) => Apply(x, HardRounding);

    /// <summary>
    /// W on its grid with the hard rounding of the current V (at calibration: round to nearest), no
    /// gradient: the weights the activation calibration runs with, as the published code calibrates its
    /// activations before AdaRound replaces the nearest-rounding weight quantizer.
    /// </summary>
    public Tensor ForwardHard(Tensor x)
    {
        using var _ = Autograd.NoGrad();
        return Apply(x, hard: true);
    }

    private Tensor Apply(Tensor x, bool hard)
    {
        EnsureCalibrated();
        if (!x.Shape.AsSpan().SequenceEqual(_v!.Shape))
            throw new ViTQuantException($"{Spec} AdaRound quantizer was calibrated for a weight of shape {Tensor.ShapeString(_v.Shape)}, got {Tensor.ShapeString(x.Shape)}");
        int n = x.Size;
        var y = Tensor.OutputUninitialized(x.Shape); // an op output (every element written below): recycled with the caller's arena scope
        float[] xd = x.Data, yd = y.Data, vd = _v.Data, sc = _scale!, zp = _zero!;
        var layout = _layout;
        float qmin = QMin, qmax = QMax;
        FakeQuant.ForSegments(n, layout, (_, start, end, g) =>
        {
            float s = sc[g], z = zp[g];
            for (int i = start; i < end; i++)
            {
                float r = hard ? (vd[i] >= 0 ? 1f : 0f) : RectifiedSigmoid(vd[i]);
                yd[i] = s * (Math.Clamp(MathF.Floor(xd[i] / s) + r + z, qmin, qmax) - z);
            }
        });
        var v = _v;
        if (hard || !Autograd.Needs(v)) return y;
        return Autograd.Record("adaround_fake_quant", y, new[] { v }, gy =>
        {
            float[] gd = gy.Data, gv = FakeQuant.GradData(v);
            FakeQuant.ForSegments(n, layout, (_, start, end, g) =>
            {
                float s = sc[g], z = zp[g];
                for (int i = start; i < end; i++)
                {
                    float sig = Sigmoid(vd[i]), h = sig * (Zeta - Gamma) + Gamma;
                    if (h < 0f || h > 1f) continue;
                    float level = MathF.Floor(xd[i] / s) + h + z;
                    if (level < qmin || level > qmax) continue;
                    gv[i] += gd[i] * s * (Zeta - Gamma) * sig * (1f - sig);
                }
            });
        });
    }

    /// <summary>
    /// The rounding regulariser Σ (1 − |2h(V) − 1|^β) as a one-element tensor with its gradient to V
    /// (recorded when V requires gradients). Throws ArgumentOutOfRangeException for β ≤ 0 and
    /// InvalidOperationException before calibration.
    /// </summary>
    public Tensor RoundingLoss(float beta)
    {
        EnsureCalibrated();
        if (!(beta > 0)) throw new ArgumentOutOfRangeException(nameof(beta), $"β must be positive, got {beta}");
        var v = _v!;
        float[] vd = v.Data;
        // Fixed chunks across the workers (a pow and an exp per weight made this a tenth of an ADFQ-ViT unit's
        // time on one thread); the partial sums are added in chunk order, so the thread count changes no bit.
        const int Chunk = 4096;
        int chunks = (vd.Length + Chunk - 1) / Chunk;
        var partial = new double[chunks];
        Kernels.Parallelism.For(0, chunks, c =>
        {
            int end = Math.Min(vd.Length, (c + 1) * Chunk);
            double s = 0;
            for (int i = c * Chunk; i < end; i++) s += 1 - Math.Pow(Math.Abs(2.0 * RectifiedSigmoid(vd[i]) - 1), beta);
            partial[c] = s;
        });
        double sum = 0;
        foreach (double s in partial) sum += s;
        var loss = new Tensor(new[] { (float)sum });
        if (!Autograd.Needs(v)) return loss;
        return Autograd.Record("adaround_round_loss", loss, new[] { v }, g =>
        {
            // d/dV (1 − |2h − 1|^β) = −β·|2h − 1|^(β−1)·sign(2h − 1)·2·h'(V), h' = (ζ − γ)σ(1 − σ) unclamped
            double go = g.Data[0];
            v.GradSpan();
            float[] gv = v.Grad!.Data;
            Kernels.Parallelism.For(0, chunks, c =>
            {
                int end = Math.Min(vd.Length, (c + 1) * Chunk);
                for (int i = c * Chunk; i < end; i++)
                {
                    double sig = 1 / (1 + Math.Exp(-(double)vd[i])), h = sig * (Zeta - Gamma) + Gamma;
                    if (h < 0 || h > 1) continue;
                    double t = 2 * h - 1;
                    if (t == 0) continue;
                    double d = -beta * Math.Pow(Math.Abs(t), beta - 1) * Math.Sign(t) * 2 * (Zeta - Gamma) * sig * (1 - sig);
                    gv[i] += (float)(go * d);
                }
            });
        });
    }

    /// <summary>Fixes every weight to its hard rounding (h(V) ≥ ½ rounds up); V stops being learnable.</summary>
    public void FreezeHardRounding()
    {
        EnsureCalibrated();
        HardRounding = true;
        _v!.ZeroGrad();
        _v.RequiresGrad = false;
    }

    /// <inheritdoc/>
    public override IEnumerable<Tensor> LearnableParameters() =>
        _v != null && !HardRounding ? new[] { _v } : Array.Empty<Tensor>();

    /// <summary>"scale" [G], "zero_point" [G], "v" (W's shape) and "hard" [1]. Throws InvalidOperationException before calibration.</summary>
    public override IEnumerable<(string Name, Tensor Value)> State()
    {
        EnsureCalibrated();
        return new[]
        {
            ("scale", QuantState.Vector(_scale)), ("zero_point", QuantState.Vector(_zero)), ("v", _v!.Clone()),
            ("hard", Tensor.FromArray(new[] { HardRounding ? 1f : 0f }, 1)),
        };
    }

    /// <inheritdoc/>
    public override void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        QuantState.ExpectNames(state, Spec, "scale", "zero_point", "v", "hard");
        var v = state["v"];
        var layout = GroupLayout.For(Spec.Granularity, v.Shape, "AdaRound state 'v'");
        var scale = QuantState.Get(state, Spec, "scale", layout.Groups);
        var zero = QuantState.Get(state, Spec, "zero_point", layout.Groups);
        QuantState.Get(state, Spec, "v", v.Size);
        float hard = QuantState.Get(state, Spec, "hard", 1).Item();
        if (hard != 0f && hard != 1f) throw new ViTQuantException($"{Spec} quantizer state 'hard' must be 0 or 1, got {hard}");
        foreach (float s in scale.Span)
            if (!(s >= RangeSearch.MinScale)) throw new ViTQuantException($"{Spec} quantizer state 'scale' holds {s}, below the minimum step {RangeSearch.MinScale}");
        foreach (float z in zero.Span)
            if (z != MathF.Round(z) || z < QMin || z > QMax)
                throw new ViTQuantException($"{Spec} quantizer state 'zero_point' holds {z}, not an integer in [{QMin}, {QMax}]");
        _layout = layout;
        _scale = scale.ToArray();
        _zero = zero.ToArray();
        HardRounding = hard == 1f;
        _v = QuantState.Assign(_v, v, requiresGrad: false);
        _v.RequiresGrad = !HardRounding;
        IsCalibrated = true;
    }
}
