// TorchSharp 0.107 (LibTorch 2.10) side of `make bench-compare`: the same model, shapes and measurements as
// tools/reference/bench_torch.py (PyTorch 1.13) and `vitq bench --json`, printed as one JSON object.
//   tools/reference/torchsharp_bench.sh --arch vit_fmnist --batch 64 --threads 2 --iters 5 [--attention sdpa|explicit] [--interleave]
// The model mirrors tools/reference/torch_vit.py (timm's VisionTransformer). Attention defaults to
// scaled_dot_product_attention, LibTorch's fused kernel and what current timm calls; `explicit` is the
// matmul-softmax-matmul graph of torch_vit.py.
// --interleave: also runs our engine's model of the same architecture in this process and times the two in
// alternating visits (each: one untimed call, the faster of two timed ones, a pause), so that a slow phase of a
// shared machine falls on both; adds vitq_*_img_per_s and the medians of the per-visit ratios (interleaved_*). Our steps are those of
// `vitq bench`: Infer under FreezeWeights, forward + backward + AdamW, the input gradient.
using System.Diagnostics;
using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using ViTQuant.Kernels;
using static TorchSharp.torch;
using VTensor = ViTQuant.Tensors.Tensor;

var archs = new Dictionary<string, (int Img, int Patch, int Chans, int Classes, int Dim, int Depth, int Heads, double Mlp)>
{
    ["vit_fmnist"] = (28, 4, 1, 10, 128, 6, 4, 2.0),
    ["vit_tiny_patch16_224"] = (224, 16, 3, 1000, 192, 12, 3, 4.0),
    ["deit_tiny_patch16_224"] = (224, 16, 3, 1000, 192, 12, 3, 4.0),
    ["vit_small_patch16_224"] = (224, 16, 3, 1000, 384, 12, 6, 4.0),
    ["deit_small_patch16_224"] = (224, 16, 3, 1000, 384, 12, 6, 4.0),
    ["vit_base_patch16_224"] = (224, 16, 3, 1000, 768, 12, 12, 4.0),
    ["deit_base_patch16_224"] = (224, 16, 3, 1000, 768, 12, 12, 4.0),
};
string arch = "vit_fmnist", attention = "sdpa";
int batch = 32, threads = 2, iters = 5;
bool interleave = args.Contains("--interleave");
args = args.Where(a => a != "--interleave").ToArray();
for (int i = 0; i + 1 < args.Length; i += 2)
{
    switch (args[i])
    {
        case "--arch": arch = args[i + 1]; break;
        case "--batch": batch = int.Parse(args[i + 1]); break;
        case "--threads": threads = int.Parse(args[i + 1]); break;
        case "--iters": iters = int.Parse(args[i + 1]); break;
        case "--attention": attention = args[i + 1]; break;
        default: Console.Error.WriteLine($"torchsharp bench: unknown argument '{args[i]}'"); return 2;
    }
}
if (args.Length % 2 != 0 || !archs.TryGetValue(arch, out var a) || attention is not ("sdpa" or "explicit"))
{
    Console.Error.WriteLine($"torchsharp bench: expected --arch {{{string.Join("|", archs.Keys)}}} --batch B --threads T --iters N --attention sdpa|explicit");
    return 2;
}

torch.set_num_threads(threads);
torch.manual_seed(0);
var model = new Vit(a.Img, a.Patch, a.Chans, a.Classes, a.Dim, a.Depth, a.Heads, a.Mlp, attention == "sdpa");
var x = torch.randn(batch, a.Chans, a.Img, a.Img);
var y = torch.randint(0, a.Classes, batch, dtype: ScalarType.Int64);
var opt = torch.optim.AdamW(model.parameters(), lr: 1e-4, weight_decay: 0.05);
var cpu = new Dictionary<string, double>();

double Median(string name, Action step)
{
    using (torch.NewDisposeScope()) step();
    var wall = new List<double>();
    var cpus = new List<double>();
    var process = Process.GetCurrentProcess();
    for (int i = 0; i < iters; i++)
    {
        process.Refresh();
        var c = process.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        using (torch.NewDisposeScope()) step();
        wall.Add(sw.Elapsed.TotalSeconds);
        process.Refresh();
        cpus.Add((process.TotalProcessorTime - c).TotalSeconds);
    }
    cpu[name] = MedianOf(cpus);
    return MedianOf(wall);
}

static double MedianOf(List<double> v)
{
    v.Sort();
    return v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
}

var result = new Dictionary<string, object>
{
    ["framework"] = $"torchsharp 0.107.0 (libtorch 2.10.0, attention {attention})",
    ["arch"] = arch, ["batch"] = batch, ["threads"] = torch.get_num_threads(),
};
result["forward_img_per_s"] = batch / Median("forward", () => { using var _ = torch.no_grad(); model.forward(x); });
result["train_img_per_s"] = batch / Median("train", () =>
{
    opt.zero_grad();
    nn.functional.cross_entropy(model.forward(x), y).backward();
    opt.step();
});
foreach (var p in model.parameters()) p.requires_grad = false;
result["input_grad_img_per_s"] = batch / Median("input_grad", () =>
{
    var xi = x.clone().requires_grad_(true);
    nn.functional.cross_entropy(model.forward(xi), y).backward();
});
result["forward_cpu_s"] = cpu["forward"];
result["train_cpu_s"] = cpu["train"];
result["input_grad_cpu_s"] = cpu["input_grad"];
if (interleave)
{
    foreach (var p in model.parameters()) p.requires_grad = true;
    foreach (var (k, v) in Interleaved.Run(arch, batch, threads, iters, model, x, y, opt)) result[k] = v;
}
Console.WriteLine(JsonSerializer.Serialize(result));
return 0;

internal sealed class Attention : nn.Module<Tensor, Tensor>
{
    private readonly Linear qkv, proj;
    private readonly int heads;
    private readonly bool sdpa;

    public Attention(int dim, int heads, bool sdpa) : base("attn")
    {
        this.heads = heads;
        this.sdpa = sdpa;
        qkv = nn.Linear(dim, dim * 3);
        proj = nn.Linear(dim, dim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        long b = x.shape[0], n = x.shape[1], c = x.shape[2];
        var t = qkv.forward(x).reshape(b, n, 3, heads, c / heads).permute(2, 0, 3, 1, 4);
        Tensor q = t[0], k = t[1], v = t[2];
        Tensor o = sdpa
            ? nn.functional.scaled_dot_product_attention(q, k, v)
            : (q.matmul(k.transpose(-2, -1)) * Math.Pow(c / heads, -0.5)).softmax(-1).matmul(v);
        return proj.forward(o.transpose(1, 2).reshape(b, n, c));
    }
}

internal sealed class Block : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm norm1, norm2;
    private readonly Attention attn;
    private readonly Linear fc1, fc2;

    public Block(int dim, int heads, double mlpRatio, bool sdpa) : base("block")
    {
        norm1 = nn.LayerNorm(dim, eps: 1e-6);
        attn = new Attention(dim, heads, sdpa);
        norm2 = nn.LayerNorm(dim, eps: 1e-6);
        fc1 = nn.Linear(dim, (long)(dim * mlpRatio));
        fc2 = nn.Linear((long)(dim * mlpRatio), dim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        x = x + attn.forward(norm1.forward(x));
        return x + fc2.forward(nn.functional.gelu(fc1.forward(norm2.forward(x))));
    }
}

internal sealed class Vit : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d patchEmbed;
    private readonly Parameter clsToken, posEmbed;
    private readonly ModuleList<Block> blocks;
    private readonly LayerNorm norm;
    private readonly Linear head;

    public Vit(int img, int patch, int chans, int classes, int dim, int depth, int heads, double mlpRatio, bool sdpa) : base("vit")
    {
        patchEmbed = nn.Conv2d(chans, dim, patch, stride: patch);
        clsToken = nn.Parameter(torch.zeros(1, 1, dim));
        posEmbed = nn.Parameter(torch.randn(1, (img / patch) * (img / patch) + 1, dim) * 0.02);
        blocks = nn.ModuleList(Enumerable.Range(0, depth).Select(_ => new Block(dim, heads, mlpRatio, sdpa)).ToArray());
        norm = nn.LayerNorm(dim, eps: 1e-6);
        head = nn.Linear(dim, classes);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        x = patchEmbed.forward(x).flatten(2).transpose(1, 2);
        x = torch.cat(new[] { clsToken.expand(x.shape[0], -1, -1), x }, 1) + posEmbed;
        foreach (var b in blocks) x = b.forward(x);
        return head.forward(norm.forward(x)[.., 0]);
    }
}

// TorchSharp's steps and ours, alternately in one process (file header).
internal static class Interleaved
{
    public static IEnumerable<(string, object)> Run(string arch, int batch, int threads, int iters, Vit model, Tensor x, Tensor y,
        TorchSharp.Modules.AdamW opt)
    {
        Parallelism.Threads = threads;
        var ours = new ViTQuant.Models.VisionTransformer(ViTQuant.Models.ViTConfig.FromArchitecture(arch), 1);
        var c = ours.Config;
        var rng = new ViTQuant.Tensors.Rng(1);
        var ox = VTensor.Randn(rng, 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(_ => rng.NextInt(c.NumClasses)).ToArray();
        var oopt = new ViTQuant.Nn.AdamW(ours.Parameters(), lr: 1e-4f, weightDecay: 0.05f);
        // Our steps as `vitq bench` runs them: ForwardBackward, which may run the batch in chunks of images.
        VTensor CrossEntropy(VTensor logits, int first) =>
            ViTQuant.Tensors.Ops.CrossEntropy(logits, labels[first..(first + logits.Shape[0])], meanOver: labels.Length);
        var steps = new (string Name, Action Torch, Action Ours)[]
        {
            ("forward", () => { using var _ = torch.no_grad(); model.forward(x); },
                () => { using var _ = Vitq(); ours.Infer(ox); }),
            ("train", () => { opt.zero_grad(); nn.functional.cross_entropy(model.forward(x), y).backward(); opt.step(); },
                () => { oopt.ZeroGrad(); ours.ForwardBackward(ox, CrossEntropy); oopt.Step(); }),
            ("input_grad", () => { var xi = x.clone().requires_grad_(true); nn.functional.cross_entropy(model.forward(xi), y).backward(); },
                () => { var xi = ox.Clone().RequireGrad(); ours.ForwardBackward(xi, CrossEntropy); }),
        };
        foreach (var (name, torchStep, ourStep) in steps)
        {
            bool frozen = name == "input_grad";
            foreach (var p in model.parameters()) p.requires_grad = !frozen;
            foreach (var p in ours.Parameters()) p.RequiresGrad = !frozen;
            // One visit: an untimed call (the runtime's workers wake and settle), then the faster of two timed
            // calls; a pause after it, so that neither runtime's idle workers still spin when the other one runs.
            double Visit(Action a, bool torchSide)
            {
                double best = double.MaxValue;
                for (int k = 0; k < 3; k++)
                {
                    var sw = Stopwatch.StartNew();
                    if (torchSide) using (torch.NewDisposeScope()) a();
                    else using (ViTQuant.Tensors.TensorArena.Scope()) a();
                    if (k > 0) best = Math.Min(best, sw.Elapsed.TotalSeconds);
                }
                Thread.Sleep(30);
                return best;
            }
            Visit(torchStep, true);
            Visit(ourStep, false);
            var tt = new List<double>();
            var to = new List<double>();
            var ratio = new List<double>();
            for (int i = 0; i < Math.Max(iters, 7); i++)
            {
                double a = Visit(torchStep, true), b = Visit(ourStep, false);
                tt.Add(a);
                to.Add(b);
                ratio.Add(a / b);
            }
            yield return ($"vitq_{name}_img_per_s", batch / Median(to));
            yield return ($"interleaved_torchsharp_{name}_img_per_s", batch / Median(tt));
            yield return ($"interleaved_{name}_ratio", Median(ratio));
        }
        foreach (var p in model.parameters()) p.requires_grad = true;
        foreach (var p in ours.Parameters()) p.RequiresGrad = true;
    }

    private static IDisposable Vitq() => WeightPacking.Freeze();

    private static double Median(List<double> v)
    {
        var s = v.OrderBy(t => t).ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }
}
