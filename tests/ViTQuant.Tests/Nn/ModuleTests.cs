using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Nn;

public class ModuleTests
{
    // The same tree as module_orders() in tools/reference/make_optim_fixture.py, registered in the
    // same order; the fixture holds PyTorch's name orders for it.
    private sealed class Leaf : Module
    {
        public readonly Tensor Weight, Scale, Bias;
        public Leaf(Rng rng)
        {
            Weight = RegisterParameter("weight", Tensor.Randn(rng, 1f, 3, 2));
            Scale = RegisterBuffer("scale", Tensor.Randn(rng, 1f, 3));
            Bias = RegisterParameter("bias", Tensor.Randn(rng, 1f, 3));
        }
    }

    private sealed class Attn : Module
    {
        public Attn(Rng rng)
        {
            RegisterModule("qkv", new Leaf(rng));
            RegisterParameter("rel_bias", Tensor.Randn(rng, 1f, 2));
            RegisterModule("proj", new Leaf(rng));
        }
    }

    private sealed class Block : Module
    {
        public readonly Attn Attn;
        public Block(Rng rng)
        {
            RegisterModule("norm1", new Leaf(rng));
            Attn = RegisterModule("attn", new Attn(rng));
            RegisterBuffer("mask", Tensor.Randn(rng, 1f, 2, 2));
        }
    }

    private sealed class Tied : Module
    {
        public Tied(Tensor weight) => RegisterParameter("weight", weight);
    }

    private sealed class Net : Module
    {
        public readonly ModuleList<Block> Blocks;
        public readonly Leaf Head;
        public Net(ulong seed)
        {
            var rng = new Rng(seed);
            RegisterParameter("cls_token", Tensor.Randn(rng, 1f, 1, 2));
            Blocks = RegisterModule("blocks", new ModuleList<Block>(new[] { new Block(rng), new Block(rng) }));
            Head = RegisterModule("head", new Leaf(rng));
            RegisterBuffer("pos", Tensor.Randn(rng, 1f, 4));
            RegisterModule("tied", new Tied(Head.Weight));
        }
    }

    private static readonly Lazy<FixtureFile> Fixture = new(() => new FixtureFile("optim_pytorch.safetensors"));

    private static string[] TorchOrder(string key) => Fixture.Value.Metadata[key].Split(',');

    [Fact]
    public void NamesAndOrdersMatchPyTorch()
    {
        var net = new Net(1);
        Assert.Equal(TorchOrder("named_parameters"), net.NamedParameters().Select(x => x.Name));
        Assert.Equal(TorchOrder("named_buffers"), net.NamedBuffers().Select(x => x.Name));
        Assert.Equal(TorchOrder("state_dict"), net.StateDict().Keys);
        Assert.Equal(TorchOrder("named_modules"), net.NamedModules().Select(x => x.Name));
        Assert.Equal(long.Parse(Fixture.Value.Metadata["parameter_count"]), net.ParameterCount());
        // Spot-check the first-hand names too, in case the fixture and the tree drifted together.
        Assert.Contains("blocks.1.attn.qkv.weight", net.StateDict().Keys);
        Assert.Same(net.Blocks[1].Attn, net.NamedModules().Single(x => x.Name == "blocks.1.attn").Module);
    }

    [Fact]
    public void RegisteredParametersRequireGradAndBuffersDoNot()
    {
        var net = new Net(1);
        Assert.All(net.Parameters(), p => Assert.True(p.RequiresGrad));
        Assert.All(net.NamedBuffers(), b => Assert.False(b.Buffer.RequiresGrad));
        Assert.Equal(17, net.Parameters().Count()); // tied.weight is head.weight: listed once
    }

    [Fact]
    public void StateDictSharesStorageAndLoadCopies()
    {
        var a = new Net(1);
        var b = new Net(2);
        Assert.NotEqual(a.Head.Bias.ToArray(), b.Head.Bias.ToArray());

        var sd = a.StateDict();
        sd["head.bias"].Data[0] = 42f;                      // a view: writes through to the model
        Assert.Equal(42f, a.Head.Bias.Data[0]);

        var result = b.LoadStateDict(sd);
        Assert.Empty(result.MissingKeys);
        Assert.Empty(result.UnexpectedKeys);
        foreach (var (name, t) in a.StateDict()) Assert.Equal(t.ToArray(), b.StateDict()[name].ToArray());
        Assert.NotSame(a.Head.Bias.Data, b.Head.Bias.Data); // copied, not aliased
        Assert.Equal(a.Head.Scale.ToArray(), b.Head.Scale.ToArray()); // buffers load too
    }

    [Fact]
    public void LoadStateDictListsEveryProblemAndChangesNothing()
    {
        var net = new Net(1);
        var before = net.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        var sd = new Net(2).StateDict().ToDictionary(kv => kv.Key, kv => kv.Value);
        sd.Remove("cls_token");
        sd.Remove("blocks.1.mask");
        sd["blocks.0.attn.extra"] = Tensor.Zeros(3);
        sd["head.bias"] = Tensor.Zeros(4);
        sd["pos"] = Tensor.Zeros(2, 2);                     // same size, other shape: still a mismatch

        var ex = Assert.Throws<ViTQuantException>(() => net.LoadStateDict(sd));
        foreach (var name in new[] { "cls_token", "blocks.1.mask", "blocks.0.attn.extra", "head.bias (checkpoint [4] vs model [3])", "pos (checkpoint [2, 2] vs model [4])" })
            Assert.Contains(name, ex.Message);
        Assert.Contains("missing 2", ex.Message);
        Assert.Contains("unexpected 1", ex.Message);
        Assert.Contains("shape mismatch 2", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        foreach (var (name, t) in net.StateDict()) Assert.Equal(before[name], t.ToArray());

        // Non-strict: missing and unexpected names are reported, not thrown; shapes must still fit.
        Assert.Throws<ViTQuantException>(() => net.LoadStateDict(sd, strict: false));
        sd["head.bias"] = Tensor.Full(5f, 3);
        sd["pos"] = Tensor.Full(6f, 4);
        var result = net.LoadStateDict(sd, strict: false);
        Assert.Equal(new[] { "cls_token", "blocks.1.mask" }, result.MissingKeys);
        Assert.Equal(new[] { "blocks.0.attn.extra" }, result.UnexpectedKeys);
        Assert.Equal(new[] { 5f, 5f, 5f }, net.Head.Bias.ToArray());
        Assert.Equal(before["cls_token"], net.StateDict()["cls_token"].ToArray());
    }

    [Fact]
    public void TrainAndEvalReachEveryModule()
    {
        var net = new Net(1);
        Assert.All(net.NamedModules(), m => Assert.True(m.Module.Training));
        Assert.Same(net, net.Eval());
        Assert.All(net.NamedModules(), m => Assert.False(m.Module.Training));
        net.Blocks[0].Train();                              // a subtree only
        Assert.True(net.Blocks[0].Attn.Training);
        Assert.False(net.Blocks[1].Attn.Training);
        Assert.False(net.Training);
        net.Train();
        Assert.All(net.NamedModules(), m => Assert.True(m.Module.Training));
    }

    [Fact]
    public void ZeroGradDropsEveryGradient()
    {
        var net = new Net(1);
        var loss = Ops.Sum(net.Head.Weight * net.Head.Weight) + Ops.Sum(net.Blocks[1].Attn.NamedParameters().First().Param);
        loss.Backward();
        Assert.NotNull(net.Head.Weight.Grad);
        Assert.Equal(net.Head.Weight.ToArray().Select(v => 2 * v), net.Head.Weight.Grad!.ToArray());
        net.ZeroGrad();
        Assert.All(net.Parameters(), p => Assert.Null(p.Grad));
    }

    private sealed class Bare : Module { }

    [Fact]
    public void RegistrationRejectsBadNamesAndNonLeaves()
    {
        var m = new Bare();
        m.RegisterParameter("w", Tensor.Zeros(2));
        Assert.Throws<ArgumentException>(() => m.RegisterBuffer("w", Tensor.Zeros(2)));
        Assert.Throws<ArgumentException>(() => m.RegisterModule("w", new Bare()));
        Assert.Throws<ArgumentException>(() => m.RegisterParameter("a.b", Tensor.Zeros(2)));
        Assert.Throws<ArgumentException>(() => m.RegisterParameter("", Tensor.Zeros(2)));
        Assert.Throws<ArgumentException>(() => m.RegisterModule("self", m));
        var nonLeaf = Tensor.Zeros(2).RequireGrad() * 2f;
        Assert.Throws<ArgumentException>(() => m.RegisterParameter("v", nonLeaf));
        Assert.Single(m.NamedParameters());
    }
}
