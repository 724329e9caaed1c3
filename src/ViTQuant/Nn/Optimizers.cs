// Optimizer base: parameter groups, per-parameter state, and state export/import for exact resumption.
//
// Semantics follow torch.optim (1.13): parameters are grouped, each group has its own lr and
// weight_decay (schedulers rewrite lr each step); Step() updates every parameter whose Grad is
// non-null and skips the rest (their state, including the step count, is untouched); ZeroGrad()
// sets Grad = null. Per-parameter state lives in named tensors keyed by the parameter's index in
// the flattened group order, exactly as torch's state_dict keys them:
//   state.{i}.{name}     e.g. state.3.exp_avg, state.3.step (a one-element tensor, float as in torch)
//   group.{g}.lr         group.{g}.weight_decay   (one-element tensors)
// Hyper-parameters that PyTorch keeps as Python floats (betas, eps, momentum, dampening) are doubles
// here so that derived constants (1 − β, β^t) are formed in double as torch does and rounded to
// float32 only where torch's kernels round them; see Sgd.cs and Adam.cs.
using System.Globalization;
using ViTQuant.Tensors;

namespace ViTQuant.Nn;

/// <summary>A set of parameters sharing a learning rate and weight decay (a torch param_group).</summary>
internal sealed class ParamGroup
{
    private readonly float? _lr;
    private readonly float? _weightDecay;
    private float _lrValue = float.NaN, _wdValue = float.NaN;
    private bool _bound;

    /// <summary>
    /// Groups <paramref name="parameters"/>; a null lr or weight decay takes the optimizer's default.
    /// Throws ArgumentOutOfRangeException for a negative or non-finite lr or weight decay.
    /// </summary>
    public ParamGroup(IEnumerable<Tensor> parameters, float? lr = null, float? weightDecay = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Params = parameters.ToArray();
        if (lr is float l) CheckNonNegative(l, "lr");
        if (weightDecay is float w) CheckNonNegative(w, "weight decay");
        _lr = lr;
        _weightDecay = weightDecay;
    }

    /// <summary>The parameters of this group, in order.</summary>
    public IReadOnlyList<Tensor> Params { get; }

    /// <summary>Learning rate for the next Step(); schedulers set it. Throws ArgumentOutOfRangeException if negative or non-finite.</summary>
    public float Lr
    {
        get => _lrValue;
        set { CheckNonNegative(value, "lr"); _lrValue = value; }
    }

    /// <summary>Weight-decay coefficient (L2 for SGD/Adam, decoupled for AdamW). Throws ArgumentOutOfRangeException if negative or non-finite.</summary>
    public float WeightDecay
    {
        get => _wdValue;
        set { CheckNonNegative(value, "weight decay"); _wdValue = value; }
    }

    internal void Bind(float defaultLr, float defaultWeightDecay)
    {
        if (_bound) throw new ArgumentException("a ParamGroup belongs to one optimizer only");
        _bound = true;
        Lr = _lr ?? defaultLr;
        WeightDecay = _weightDecay ?? defaultWeightDecay;
    }

    internal static void CheckNonNegative(double v, string what)
    {
        if (!(v >= 0) || double.IsInfinity(v)) throw new ArgumentOutOfRangeException(what, $"{what} must be a finite value ≥ 0, got {v.ToString(CultureInfo.InvariantCulture)}");
    }
}

/// <summary>Base of the optimizers: owns the groups and per-parameter state; subclasses implement the update rule.</summary>
internal abstract class Optimizer
{
    private readonly ParamGroup[] _groups;
    private readonly Tensor[] _params;                  // flattened over groups: index = state key
    private readonly int[] _groupOf;                    // group index of each flattened parameter
    private readonly Dictionary<string, Tensor>?[] _state;

    /// <summary>
    /// Binds the groups (filling unset lr / weight decay with the defaults). Throws ArgumentException
    /// when there are no parameters, a parameter appears twice, or a parameter is not a leaf tensor.
    /// </summary>
    protected Optimizer(IEnumerable<ParamGroup> groups, float lr, float weightDecay)
    {
        ArgumentNullException.ThrowIfNull(groups);
        ParamGroup.CheckNonNegative(lr, "lr");
        ParamGroup.CheckNonNegative(weightDecay, "weight decay");
        _groups = groups.ToArray();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var flat = new List<Tensor>();
        var groupOf = new List<int>();
        for (int g = 0; g < _groups.Length; g++)
        {
            foreach (var p in _groups[g].Params)
            {
                ArgumentNullException.ThrowIfNull(p);
                if (!p.IsLeaf) throw new ArgumentException($"{GetType().Name} cannot optimize a non-leaf tensor ({p})");
                if (!seen.Add(p)) throw new ArgumentException($"{GetType().Name}: a parameter ({p}) appears more than once in the parameter groups");
                flat.Add(p);
                groupOf.Add(g);
            }
        }
        if (flat.Count == 0) throw new ArgumentException($"{GetType().Name} got an empty parameter list");
        foreach (var g in _groups) g.Bind(lr, weightDecay);
        _params = flat.ToArray();
        _groupOf = groupOf.ToArray();
        _state = new Dictionary<string, Tensor>?[_params.Length];
    }

    /// <summary>The parameter groups in construction order; set <see cref="ParamGroup.Lr"/> to schedule.</summary>
    public IReadOnlyList<ParamGroup> Groups => _groups;

    /// <summary>Applies one update to every parameter whose Grad is non-null. Throws InvalidOperationException if a Grad's size differs from its parameter's.</summary>
    public abstract void Step();

    /// <summary>Sets every parameter's Grad to null (torch's set_to_none=True).</summary>
    public void ZeroGrad()
    {
        foreach (var p in _params) p.Grad = null;
    }

    /// <summary>The state names a parameter holds once it has been updated (e.g. "step", "exp_avg").</summary>
    protected abstract IReadOnlyList<string> StateNames { get; }

    /// <summary>Parameters that have a gradient, with their group and flattened index, in order.</summary>
    protected IEnumerable<(ParamGroup Group, Tensor Param, int Index)> ParamsWithGrad()
    {
        for (int i = 0; i < _params.Length; i++)
        {
            var p = _params[i];
            if (p.Grad is null) continue;
            if (p.Grad.Size != p.Size)
                throw new InvalidOperationException($"{GetType().Name}: gradient of shape {Tensor.ShapeString(p.Grad.Shape)} for parameter {i} of shape {Tensor.ShapeString(p.Shape)}");
            yield return (_groups[_groupOf[i]], p, i);
        }
    }

    /// <summary>The state of parameter <paramref name="index"/>, or null before its first update.</summary>
    protected Dictionary<string, Tensor>? StateOf(int index) => _state[index];

    /// <summary>Creates (empty) state for parameter <paramref name="index"/> and returns it.</summary>
    protected Dictionary<string, Tensor> CreateState(int index) => _state[index] = new Dictionary<string, Tensor>(StringComparer.Ordinal);

    /// <summary>
    /// A snapshot (copies) of everything needed to resume exactly: each group's lr and weight decay,
    /// and each updated parameter's state, named as in the file header.
    /// </summary>
    public IEnumerable<(string Name, Tensor Value)> SaveState()
    {
        var list = new List<(string, Tensor)>();
        for (int g = 0; g < _groups.Length; g++)
        {
            list.Add(($"group.{g}.lr", Tensor.Scalar(_groups[g].Lr)));
            list.Add(($"group.{g}.weight_decay", Tensor.Scalar(_groups[g].WeightDecay)));
        }
        for (int i = 0; i < _params.Length; i++)
        {
            if (_state[i] is not { } st) continue;
            foreach (var name in StateNames) list.Add(($"state.{i}.{name}", st[name].Clone()));
        }
        return list;
    }

    /// <summary>
    /// Replaces the optimizer's state with a copy of <paramref name="state"/> (as written by SaveState).
    /// Group entries are optional; parameters without entries start fresh. Validates everything first
    /// and throws ViTQuantException listing every unknown name, out-of-range index, wrong shape and
    /// incomplete parameter state; nothing changes in that case.
    /// </summary>
    public void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        ArgumentNullException.ThrowIfNull(state);
        var problems = new List<string>();
        var names = StateNames;
        var parsed = new Dictionary<string, Tensor>?[_params.Length];
        var groupValues = new List<(int Group, bool IsLr, float Value)>();
        foreach (var (key, value) in state)
        {
            var parts = key.Split('.');
            if (parts.Length == 3 && parts[0] == "group" && TryIndex(parts[1], _groups.Length, out int g) && parts[2] is "lr" or "weight_decay")
            {
                float v = value.Size == 1 ? value.Data[0] : float.NaN;
                if (!(v >= 0) || float.IsInfinity(v)) problems.Add($"{key} must be one finite value ≥ 0");
                else groupValues.Add((g, parts[2] == "lr", v));
            }
            else if (parts.Length == 3 && parts[0] == "state" && TryIndex(parts[1], _params.Length, out int i) && names.Contains(parts[2]))
            {
                bool isStep = parts[2] == "step";
                bool shapeOk = isStep ? value.Size == 1 && value.Data[0] >= 1 && value.Data[0] == MathF.Floor(value.Data[0])
                                      : value.Shape.AsSpan().SequenceEqual(_params[i].Shape);
                if (!shapeOk)
                {
                    problems.Add(isStep ? $"{key} must be one positive whole number"
                                        : $"{key} has shape {Tensor.ShapeString(value.Shape)}, parameter {i} has {Tensor.ShapeString(_params[i].Shape)}");
                }
                else (parsed[i] ??= new Dictionary<string, Tensor>(StringComparer.Ordinal))[parts[2]] = value.Clone();
            }
            else problems.Add($"unexpected entry {key}");
        }
        for (int i = 0; i < parsed.Length; i++)
        {
            if (parsed[i] is not { } st) continue;
            var absent = names.Where(n => !st.ContainsKey(n)).ToList();
            if (absent.Count > 0) problems.Add($"state.{i} lacks {string.Join(", ", absent)}");
        }
        if (problems.Count > 0) throw new ViTQuantException($"optimizer state does not fit {GetType().Name}: {string.Join("; ", problems)}");

        foreach (var (g, isLr, v) in groupValues)
        {
            if (isLr) _groups[g].Lr = v;
            else _groups[g].WeightDecay = v;
        }
        Array.Copy(parsed, _state, parsed.Length);
    }

    private static bool TryIndex(string s, int count, out int index) =>
        int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out index) && index < count;
}
