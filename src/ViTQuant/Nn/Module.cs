// Module: a tree of named parameters, buffers and child modules, named and ordered as in PyTorch.
//
// Naming follows torch.nn.Module so that timm checkpoints map one to one: a module's own members come
// first, in registration order, then each child's subtree under "childName." (pre-order). Hence
//   NamedParameters(): per module (pre-order) its own parameters; a tensor shared by two modules
//                      (tied weights) is listed once, under the first name met.
//   StateDict():       per module (pre-order) its own parameters, then its own buffers, then children;
//                      no de-duplication, so a tied tensor appears under every name (as in PyTorch).
// Modules have no Forward here on purpose: layers take different inputs, and each declares its own.
using ViTQuant.Tensors;

namespace ViTQuant.Nn;

/// <summary>Base class of layers and models: owns named parameters, buffers and sub-modules.</summary>
public abstract class Module
{
    // Registration order is the naming order; one name space across the three kinds (as in PyTorch).
    private readonly List<(string Name, Tensor Param)> _parameters = new();
    private readonly List<(string Name, Tensor Buffer)> _buffers = new();
    private readonly List<(string Name, Module Child)> _children = new();
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>True in training mode (the default); layers such as dropout read it. Set with Train()/Eval().</summary>
    public bool Training { get; private set; } = true;

    /// <summary>
    /// Adds a trainable tensor under <paramref name="name"/> and sets its RequiresGrad. Returns p.
    /// Throws ArgumentException when the name is empty, contains '.', is already taken in this module,
    /// or when p is not a leaf (a parameter must not carry autograd history).
    /// </summary>
    public Tensor RegisterParameter(string name, Tensor p)
    {
        ArgumentNullException.ThrowIfNull(p);
        if (!p.IsLeaf) throw new ArgumentException($"parameter '{name}' of {GetType().Name} must be a leaf tensor (use Detach())", nameof(p));
        ClaimName(name);
        p.RequiresGrad = true;
        _parameters.Add((name, p));
        return p;
    }

    /// <summary>
    /// Adds a non-trainable tensor (e.g. running statistics, fixed tables) that is saved in the state
    /// dict. Returns b. Throws ArgumentException on an empty, dotted or duplicate name.
    /// </summary>
    public Tensor RegisterBuffer(string name, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(b);
        ClaimName(name);
        _buffers.Add((name, b));
        return b;
    }

    /// <summary>Adds a child module whose members are named "name.…". Returns m. Throws ArgumentException on an empty, dotted or duplicate name.</summary>
    public T RegisterModule<T>(string name, T m) where T : Module
    {
        ArgumentNullException.ThrowIfNull(m);
        if (ReferenceEquals(m, this)) throw new ArgumentException($"module '{name}' cannot contain itself", nameof(m));
        ClaimName(name);
        _children.Add((name, m));
        return m;
    }

    private void ClaimName(string name)
    {
        if (string.IsNullOrEmpty(name)) throw new ArgumentException($"member names of {GetType().Name} must not be empty", nameof(name));
        if (name.Contains('.')) throw new ArgumentException($"member name '{name}' of {GetType().Name} must not contain '.'", nameof(name));
        if (!_names.Add(name)) throw new ArgumentException($"{GetType().Name} already has a member named '{name}'", nameof(name));
    }

    /// <summary>Direct children in registration order.</summary>
    public IEnumerable<(string Name, Module Module)> NamedChildren()
    {
        foreach (var c in _children) yield return c;
    }

    /// <summary>This module (name "") and every descendant, pre-order, each module once (first name wins).</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules()
    {
        var seen = new HashSet<Module>(ReferenceEqualityComparer.Instance);
        return Walk("", seen);
    }

    private IEnumerable<(string Name, Module Module)> Walk(string prefix, HashSet<Module> seen)
    {
        if (!seen.Add(this)) yield break;
        yield return (prefix, this);
        foreach (var (name, child) in _children)
            foreach (var item in child.Walk(prefix.Length == 0 ? name : prefix + "." + name, seen))
                yield return item;
    }

    /// <summary>All parameters with dotted names ("blocks.0.attn.qkv.weight"), PyTorch order, each tensor once.</summary>
    public IEnumerable<(string Name, Tensor Param)> NamedParameters()
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (prefix, m) in NamedModules())
            foreach (var (name, p) in m._parameters)
                if (seen.Add(p)) yield return (Join(prefix, name), p);
    }

    /// <summary>All parameter tensors in <see cref="NamedParameters"/> order.</summary>
    public IEnumerable<Tensor> Parameters() => NamedParameters().Select(x => x.Param);

    /// <summary>All buffers with dotted names, PyTorch order, each tensor once.</summary>
    public IEnumerable<(string Name, Tensor Buffer)> NamedBuffers()
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (prefix, m) in NamedModules())
            foreach (var (name, b) in m._buffers)
                if (seen.Add(b)) yield return (Join(prefix, name), b);
    }

    /// <summary>
    /// Parameters and buffers by dotted name in torch's state_dict order (per module: parameters,
    /// buffers, then children). Values are detached views sharing the live storage, so writing into
    /// them writes into the model; clone them to snapshot.
    /// </summary>
    public OrderedDictionary<string, Tensor> StateDict()
    {
        var dict = new OrderedDictionary<string, Tensor>(StringComparer.Ordinal);
        AddState(dict, "");
        return dict;
    }

    private void AddState(OrderedDictionary<string, Tensor> dict, string prefix)
    {
        foreach (var (name, p) in _parameters) dict[prefix + name] = p.Detach();
        foreach (var (name, b) in _buffers) dict[prefix + name] = b.Detach();
        foreach (var (name, child) in _children) child.AddState(dict, prefix + name + ".");
    }

    /// <summary>
    /// Copies values from <paramref name="state"/> into this module's parameters and buffers in place.
    /// Nothing is copied unless the whole load is valid. Throws ViTQuantException naming, in one line,
    /// every shape mismatch and, when <paramref name="strict"/>, every missing and every unexpected name.
    /// Without strict, missing and unexpected names are returned instead (shape mismatches still throw).
    /// </summary>
    public LoadStateResult LoadStateDict(IReadOnlyDictionary<string, Tensor> state, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(state);
        var own = StateDict();
        var missing = new List<string>();
        var mismatched = new List<string>();
        foreach (var (name, target) in own)
        {
            if (!state.TryGetValue(name, out var src)) missing.Add(name);
            else if (!src.Shape.AsSpan().SequenceEqual(target.Shape))
                mismatched.Add($"{name} (checkpoint {Tensor.ShapeString(src.Shape)} vs model {Tensor.ShapeString(target.Shape)})");
        }
        var unexpected = state.Keys.Where(k => !own.ContainsKey(k)).ToList();

        var problems = new List<string>();
        if (strict && missing.Count > 0) problems.Add($"missing {missing.Count}: {string.Join(", ", missing)}");
        if (strict && unexpected.Count > 0) problems.Add($"unexpected {unexpected.Count}: {string.Join(", ", unexpected)}");
        if (mismatched.Count > 0) problems.Add($"shape mismatch {mismatched.Count}: {string.Join(", ", mismatched)}");
        if (problems.Count > 0) throw new ViTQuantException($"state dict does not fit {GetType().Name}: {string.Join("; ", problems)}");

        foreach (var (name, target) in own)
            if (state.TryGetValue(name, out var src)) src.Span.CopyTo(target.Span);
        return new LoadStateResult(missing, unexpected);
    }

    /// <summary>Sets training mode on this module and all descendants; returns this.</summary>
    public Module Train(bool mode = true)
    {
        foreach (var (_, m) in NamedModules()) m.Training = mode;
        return this;
    }

    /// <summary>Sets evaluation mode (Training = false) on this module and all descendants; returns this.</summary>
    public Module Eval() => Train(false);

    /// <summary>Drops the gradient of every parameter (Grad = null), so the next Backward() starts fresh.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters()) p.Grad = null;
    }

    /// <summary>Number of scalar parameters, counting a tied tensor once.</summary>
    public long ParameterCount() => Parameters().Sum(p => (long)p.Size);

    private static string Join(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;
}

/// <summary>Names a non-strict <see cref="Module.LoadStateDict"/> skipped: model entries absent from the state, and state entries the model lacks.</summary>
public sealed record LoadStateResult(IReadOnlyList<string> MissingKeys, IReadOnlyList<string> UnexpectedKeys);

/// <summary>An indexable list of child modules named "0", "1", … (torch.nn.ModuleList), e.g. a ViT's blocks.</summary>
internal sealed class ModuleList<T> : Module, IReadOnlyList<T> where T : Module
{
    private readonly List<T> _items = new();

    /// <summary>An empty list.</summary>
    public ModuleList() { }

    /// <summary>A list holding <paramref name="modules"/> in order, named "0", "1", ….</summary>
    public ModuleList(IEnumerable<T> modules)
    {
        foreach (var m in modules) Add(m);
    }

    /// <summary>Appends m under the name of its index.</summary>
    public void Add(T m)
    {
        RegisterModule(_items.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), m);
        _items.Add(m);
    }

    /// <summary>The module at <paramref name="index"/>.</summary>
    public T this[int index] => _items[index];

    /// <summary>Number of modules.</summary>
    public int Count => _items.Count;

    /// <summary>The modules in order.</summary>
    public IEnumerator<T> GetEnumerator() => _items.GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
