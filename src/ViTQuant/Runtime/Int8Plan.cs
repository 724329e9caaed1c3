// The integer runtime's plan, compiled once from a frozen quantized model (QuantizedCheckpoint.Freeze/Load).
//
// Per linear layer (qkv, proj, fc1, fc2, head): Integer mode when the weight has an integer grid
// (w = k_c·Δ_c exactly, recovered from the frozen float weights and the recorded AffineGrid) and the input
// quantizer is uniform per tensor (UniformQuantizer per tensor, static or learned step; LsqQuantizer with one
// α and z). Then y[m, c] = FMA((float)Σ_k a[m, k]·k[c, k], Δ_x·Δ_c, b_c) with a = code − z_x (ActGrid):
// the zero point of x is inside a (int16 operands), the bias fused into the dequantisation.
// Otherwise Float mode: the input is fake-quantized by the plan's own quantizer object (exactly the
// simulation's values: ADFQ's per-patch outlier and Shift-Log inputs, log quantizers, per-token grids)
// and multiplied by the frozen float weights — every layer's mode and the reason are in Layers.
// Attention: q·kᵀ is integer when q and k are uniform per tensor; probs·V when probs and v are.
// The patch embedding always runs in float (the presets keep the image input float; a plan that
// quantizes it gets the fake-quantized image). Non-linear ops (LayerNorm, softmax, GELU, residuals) are float.
//
// Weight storage: the stored layout is the checkpoint's (Quantization/CodePacking): the codes k − q_min
// packed densely least significant bit first at the layer's bit width — one byte a weight at 8 bits, two at
// 4 (low nibble first), eight in three bytes at 3 (StoredCodes, WeightBytes); a checkpoint's
// {layer}.weight.codes tensor holds the same bytes. The kernel reads them unpacked at compile time into
// int16 pairwise panels (PackedB) for the vpmaddwd kernels (Kernels/Int8Gemm.cs), and, on AVX-512 VNNI machines
// where the weight integers fit a signed byte, also into byte quads (PackedB8) for the machine-code vpdpbusd
// kernel (Kernels/Int8GemmVnni.cs) with its zero-point term.
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Quantization;

namespace ViTQuant.Runtime;

/// <summary>How the runtime executes one layer or product.</summary>
public enum Int8Mode
{
    /// <summary>Integer GEMM (int32 accumulation) with a fused float dequantisation.</summary>
    Integer,
    /// <summary>Float GEMM on the exactly fake-quantized input (no integer form for this quantizer).</summary>
    Float,
}

/// <summary>One row of the compiled plan's table.</summary>
/// <param name="Name">point name (e.g. blocks.0.attn.qkv, blocks.0.attn.q·kᵀ).</param>
/// <param name="Mode">integer or float.</param>
/// <param name="Detail">the input grid / weight bits, or why it runs in float.</param>
public sealed record Int8LayerInfo(string Name, Int8Mode Mode, string Detail);

/// <summary>A linear layer as the runtime runs it.</summary>
internal sealed class Int8Linear
{
    internal Int8Linear(string name, int inF, int outF) { Name = name; In = inF; Out = outF; }
    /// <summary>The layer's point name (e.g. blocks.0.mlp.fc1).</summary>
    public string Name { get; }
    /// <summary>Input features.</summary>
    public int In { get; }
    /// <summary>Output features.</summary>
    public int Out { get; }
    /// <summary>Integer or float execution.</summary>
    public Int8Mode Mode { get; internal set; }
    /// <summary>The input grid and weight bits, or why the layer runs in float.</summary>
    public string Detail { get; internal set; } = "";
    /// <summary>Integer mode: weight panels, Δ_x·Δ_c and bias padded to whole panels, the input grid.</summary>
    internal PackedB? Packed;
    /// <summary>The same weights as signed bytes for the AVX-512 VNNI kernel, and its zero-point term (null when unsupported or wider than 8 bits).</summary>
    internal PackedB8? Packed8;
    internal int[] Corr = Array.Empty<int>();
    internal float[] Scale = Array.Empty<float>();
    internal float[] BiasPadded = Array.Empty<float>();
    internal ActGrid Grid;
    /// <summary>Float mode: frozen (dequantized) weight [Out, In], bias [Out] and the input quantizer (or null).</summary>
    internal float[]? Weight;
    internal float[] Bias = Array.Empty<float>();
    internal Quantizer? InputQuantizer;
    /// <summary>The stored codes, packed as the checkpoint's {layer}.weight.codes (file header); null when the weight is not quantized.</summary>
    public byte[]? StoredCodes { get; internal set; }
}

/// <summary>One block's attention products.</summary>
internal sealed class Int8Attention
{
    public bool QkInteger, PvInteger;
    public ActGrid Q, K, V, P;
    public Quantizer? Qq, Kq, Vq, Pq;
}

internal sealed class Int8Block
{
    public required float[] Ln1W, Ln1B, Ln2W, Ln2B;
    public required Int8Linear Qkv, Proj, Fc1, Fc2;
    public required Int8Attention Attn;
}

/// <summary>A quantized model compiled for the integer runtime (file header; Swin: Int8Swin.cs).</summary>
public sealed partial class Int8Plan
{
    /// <summary>The model's configuration (a <see cref="ViTConfig"/> or a <see cref="SwinConfig"/>).</summary>
    public IModelConfig Config { get; }

    /// <summary>The ViT/DeiT configuration (the engine's ViT path; a Swin plan has <see cref="Swin"/> instead).</summary>
    internal ViTConfig Vit => (ViTConfig)Config;
    internal float[] PatchW = null!, PatchB = null!, Pos = null!, NormW = null!, NormB = null!;
    internal float[]? Cls, Dist;
    internal Quantizer? PatchInputQ;
    internal Int8Block[] Blocks = null!;
    internal Int8Linear Head = null!;
    internal Int8Linear? HeadDist;
    private readonly List<Int8LayerInfo> _layers = new();

    /// <summary>Every linear layer and attention product with its mode, in forward order.</summary>
    public IReadOnlyList<Int8LayerInfo> Layers => _layers;

    /// <summary>Name of the quantization plan this was compiled from.</summary>
    public string PlanName { get; }

    private Int8Plan(IModelConfig c, string planName) { Config = c; PlanName = planName; }

    /// <summary>Bytes of the stored weight codes (bits/8 per weight, packed as in the checkpoint) plus float weights kept in float.</summary>
    public long WeightBytes { get; private set; }

    /// <summary>Fraction of the GEMM MACs (patch embedding, linear layers, attention products) that run as integers.</summary>
    public double IntegerMacFraction => _macsAll == 0 ? 0 : (double)_macsInt / _macsAll;

    /// <summary>
    /// Compiles a frozen quantized model. Throws ViTQuantException for a float plan (no quantized weights),
    /// a model whose weights were not frozen (run QuantizedCheckpoint.Freeze, or load a checkpoint), or a model
    /// not in Quantize mode.
    /// </summary>
    internal static Int8Plan Compile(QuantizedModel qm)
    {
        ArgumentNullException.ThrowIfNull(qm);
        if (qm.WeightQuantizers.Count == 0)
            throw new ViTQuantException($"the integer runtime needs a quantized model; plan '{qm.Plan.Name}' quantizes no weight (quantize it with `vitq quantize`, or use --engine sim)");
        if (!qm.WeightsFrozen || qm.WeightGrids.Count == 0)
            throw new ViTQuantException("the integer runtime needs frozen integer weights: freeze the model (QuantizedCheckpoint.Freeze) or load a quantized checkpoint");
        if (qm.Mode != QuantMode.Quantize)
            throw new ViTQuantException($"the integer runtime compiles a calibrated model in Quantize mode, this one is in {qm.Mode} mode");
        if (qm.Model is SwinTransformer swin) return CompileSwin(qm, swin);
        var m = qm.Model.RequireViT("the integer runtime (--engine int8)");
        var c = m.Config;
        var p = new Int8Plan(c, qm.Plan.Name)
        {
            PatchW = m.PatchWeight.ToArray(), PatchB = m.PatchBias.ToArray(), Pos = m.PosEmbed.ToArray(),
            Cls = m.ClsToken?.ToArray(), Dist = m.DistToken?.ToArray(),
            NormW = m.Norm.Weight.ToArray(), NormB = m.Norm.Bias.ToArray(),
        };
        p.AddPatchEmbedding(qm, (long)c.NumPatches * c.EmbedDim * c.InChans * c.PatchSize * c.PatchSize);
        long N = c.NumTokens;
        Int8Linear L(string name, Nn.Linear lin, long rows) => p.AddLinear(qm, name, lin, rows);
        var blocks = new List<Int8Block>();
        for (int i = 0; i < c.Depth; i++)
        {
            var b = m.Blocks[i];
            string pre = $"blocks.{i}";
            var qkv = L($"{pre}.attn.qkv", b.Qkv, N);
            var attn = p.AddAttention(qm, pre, N * N * c.EmbedDim);
            blocks.Add(new Int8Block
            {
                Ln1W = b.Norm1.Weight.ToArray(), Ln1B = b.Norm1.Bias.ToArray(), Ln2W = b.Norm2.Weight.ToArray(), Ln2B = b.Norm2.Bias.ToArray(),
                Qkv = qkv, Attn = attn, Proj = L($"{pre}.attn.proj", b.Proj, N), Fc1 = L($"{pre}.mlp.fc1", b.Fc1, N), Fc2 = L($"{pre}.mlp.fc2", b.Fc2, N),
            });
        }
        p.Blocks = blocks.ToArray();
        p.Head = L("head", m.Head, 1);
        if (m.HeadDist != null) p.HeadDist = L("head_dist", m.HeadDist, 1);
        return p;
    }

    // GEMM multiply-accumulates per image, all and integer, as the plan's layers are added (IntegerMacFraction).
    private long _macsAll, _macsInt;

    /// <summary>The float patch embedding's table row, weight bytes and MACs; the plan's image-input quantizer, if any.</summary>
    private void AddPatchEmbedding(QuantizedModel qm, long macs)
    {
        qm.ActivationQuantizers.TryGetValue("patch_embed.proj", out PatchInputQ);
        _layers.Add(new("patch_embed.proj", Int8Mode.Float, PatchInputQ == null ? "float image input (the plan keeps it float)" : $"input {PatchInputQ.Spec} fake-quantized, float GEMM"));
        WeightBytes += PatchW.Length * 4L;
        _macsAll += macs;
    }

    /// <summary>A compiled linear layer over <paramref name="rows"/> rows per image, with its table row, bytes and MACs.</summary>
    private Int8Linear AddLinear(QuantizedModel qm, string name, Nn.Linear lin, long rows)
    {
        var l = CompileLinear(qm, name, lin);
        _layers.Add(new(name, l.Mode, l.Detail));
        WeightBytes += l.StoredCodes?.Length ?? l.In * (long)l.Out * 4;
        long macs = rows * l.In * l.Out;
        _macsAll += macs;
        if (l.Mode == Int8Mode.Integer) _macsInt += macs;
        return l;
    }

    /// <summary>A block's attention products (each <paramref name="productMacs"/> per image), with their table rows and MACs.</summary>
    private Int8Attention AddAttention(QuantizedModel qm, string pre, long productMacs)
    {
        var attn = CompileAttention(qm, pre);
        _layers.Add(new($"{pre}.attn.q·kᵀ", attn.QkInteger ? Int8Mode.Integer : Int8Mode.Float, AttnDetail(attn.QkInteger, attn.Qq, attn.Kq, "q", "k")));
        _layers.Add(new($"{pre}.attn.probs·v", attn.PvInteger ? Int8Mode.Integer : Int8Mode.Float, AttnDetail(attn.PvInteger, attn.Pq, attn.Vq, "probs", "v")));
        _macsAll += 2 * productMacs;
        _macsInt += (attn.QkInteger ? productMacs : 0) + (attn.PvInteger ? productMacs : 0);
        return attn;
    }

    private static string AttnDetail(bool integer, Quantizer? a, Quantizer? b, string an, string bn) =>
        integer ? $"{an} {a!.Spec}, {bn} {b!.Spec}"
        : $"float: {an} {(a == null ? "not quantized" : a.Spec.ToString())}, {bn} {(b == null ? "not quantized" : b.Spec.ToString())} (integer needs both uniform per tensor)";

    private static Int8Attention CompileAttention(QuantizedModel qm, string pre)
    {
        var a = new Int8Attention();
        var aq = qm.ActivationQuantizers;
        aq.TryGetValue($"{pre}.attn.q", out a.Qq);
        aq.TryGetValue($"{pre}.attn.k", out a.Kq);
        aq.TryGetValue($"{pre}.attn.v", out a.Vq);
        aq.TryGetValue($"{pre}.attn.probs", out a.Pq);
        ActGrid? gq = GridOf(a.Qq), gk = GridOf(a.Kq), gv = GridOf(a.Vq), gp = GridOf(a.Pq);
        if (gq is ActGrid q && gk is ActGrid k) { a.QkInteger = true; a.Q = q; a.K = k; }
        if (gp is ActGrid pp && gv is ActGrid v) { a.PvInteger = true; a.P = pp; a.V = v; }
        return a;
    }

    /// <summary>The integer grid of a per-tensor uniform or LSQ activation quantizer; null for every other kind.</summary>
    internal static ActGrid? GridOf(Quantizer? q)
    {
        switch (q)
        {
            case UniformQuantizer u when u.Spec.Granularity == Granularity.PerTensor && !u.Spec.Dynamic && u.Groups == 1:
            {
                var g = u.Params(0);
                return new ActGrid(g.Scale, g.ZeroPoint, g.QMin, g.QMax, LsqOrder: false);
            }
            case LsqQuantizer l when l.IsCalibrated && l.Alpha!.Size == 1:
                return new ActGrid(RangeSearch.SafeScale(l.Alpha.Data[0]), MathF.Round(l.ZeroPoint!.Data[0]), l.QMin, l.QMax, LsqOrder: true);
            default:
                return null;
        }
    }

    private static Int8Linear CompileLinear(QuantizedModel qm, string name, Nn.Linear lin)
    {
        int inF = lin.InFeatures, outF = lin.OutFeatures;
        var l = new Int8Linear(name, inF, outF);
        float[] w = lin.Weight.ToArray();
        float[] bias = lin.Bias?.ToArray() ?? new float[outF];
        qm.ActivationQuantizers.TryGetValue(name, out var inQ);
        qm.WeightGrids.TryGetValue(name, out var grid);
        var actGrid = GridOf(inQ);
        string? why = grid == null ? "weight not quantized" : actGrid == null
            ? (inQ == null ? "input not quantized" : $"input {inQ.Spec} has no uniform per-tensor integer form")
            : null;
        short[]? k = null;
        if (why == null)
        {
            k = WeightIntegers(w, grid!, outF, inF, out why);
        }
        if (grid != null) l.StoredCodes = StoreCodes(w, grid, outF, inF, qm.Plan.WeightSpec(name)!.Bits);
        if (why != null)
        {
            l.Mode = Int8Mode.Float;
            l.Detail = $"float: {why}" + (inQ != null ? "; input fake-quantized" : "");
            l.Weight = w;
            l.Bias = bias;
            l.InputQuantizer = inQ;
            return l;
        }
        var ag = actGrid!.Value;
        l.Mode = Int8Mode.Integer;
        l.Grid = ag;
        l.Packed = PackedB.FromRowsOfColumns(k, outF, inF, inF);
        if (Int8GemmVnni.IsSupported && ag.QMax - ag.QMin <= 255)
        {
            l.Packed8 = PackedB8.FromRowsOfColumns(k, outF, inF, inF);
            if (l.Packed8 != null) l.Corr = l.Packed8.Correction(ag.ZeroU);
        }
        var g = grid!; // non-null: why == null above
        var scale = new float[outF];
        for (int o = 0; o < outF; o++) scale[o] = ag.Scale * g.Scale[g.Scale.Length == 1 ? 0 : o];
        l.Scale = Int8Gemm.PadToPanels(scale, outF);
        l.BiasPadded = Int8Gemm.PadToPanels(bias, outF);
        l.Detail = $"W{qm.Plan.WeightSpec(name)!.Bits} per-{(g.Scale.Length == 1 ? "tensor" : "channel")}, input {inQ!.Spec} (z={ag.Zero + 0f})";
        return l;
    }

    /// <summary>k[c, i] = w[c, i]/Δ_c − … as integers (w = (code − z)·Δ exactly); null with a reason when a weight is off its grid.</summary>
    private static short[]? WeightIntegers(float[] w, AffineGrid grid, int outF, int inF, out string? why)
    {
        var k = new short[w.Length];
        for (int o = 0; o < outF; o++)
        {
            float s = grid.Scale[grid.Scale.Length == 1 ? 0 : o];
            for (int i = 0; i < inF; i++)
            {
                float v = w[o * inF + i];
                float r = MathF.Round(v / s);
                if (r * s != v || MathF.Abs(r) > 255)
                {
                    why = $"weight [{o}, {i}] = {v} is not an integer multiple of its step {s} (not frozen on its grid)";
                    return null;
                }
                k[o * inF + i] = (short)r;
            }
        }
        why = null;
        return k;
    }

    /// <summary>The checkpoint's codes (k + z − q_min ∈ [0, 2^bits)) packed as the checkpoint packs them (CodePacking).</summary>
    private static byte[] StoreCodes(float[] w, AffineGrid grid, int outF, int inF, int bits)
    {
        var cells = new int[w.Length];
        for (int o = 0; o < outF; o++)
        {
            int ch = grid.Scale.Length == 1 ? 0 : o;
            for (int i = 0; i < inF; i++)
            {
                int idx = o * inF + i;
                cells[idx] = Math.Clamp((int)MathF.Round(w[idx] / grid.Scale[ch] + grid.ZeroPoint[ch]), grid.QMin, grid.QMax) - grid.QMin;
            }
        }
        return CodePacking.Pack(cells, bits);
    }

    /// <summary>The plan as a text table (one row per layer: name, mode, detail).</summary>
    public string Describe()
    {
        var sb = new System.Text.StringBuilder();
        int w = Math.Max(20, _layers.Max(l => l.Name.Length) + 2);
        sb.AppendLine($"int8 plan '{PlanName}' for {Config.Architecture}: {_layers.Count(l => l.Mode == Int8Mode.Integer)}/{_layers.Count} layers integer, {IntegerMacFraction:P1} of GEMM MACs; kernel {Int8Gemm.Path}");
        foreach (var l in _layers) sb.AppendLine($"  {l.Name.PadRight(w)} {(l.Mode == Int8Mode.Integer ? "int" : "float"),-6} {l.Detail}");
        return sb.ToString();
    }
}
