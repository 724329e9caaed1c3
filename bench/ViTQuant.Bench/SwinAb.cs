// Same-process A/B of the Swin block's fused paths on a Swin model, calls interleaved round by round: the fused window
// attention (Ops.WindowAttention) against the op graph (SwinBlock.UnfusedWindowAttention), the two row gathers against
// the roll / pad / partition / reverse / crop ops (SwinBlock.SeparateWindowOps), the residuals added in fc2's GEMM and in
// the attention branch's row gather against adds of their own (VisionTransformer.SeparateResidualAdds), and all three off
// (the engine before them). With one thread calls
// are timed by the thread's CPU clock.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- swin-ab [--arch swin_fmnist] [--batch B] [--threads T] [--rounds R]
//       [--train | --input-grad]
// --train times VisionModel.ForwardBackward of the cross-entropy to every parameter (no optimizer step), --input-grad to
// the input only, else the no-grad Infer.
using System.Diagnostics;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class SwinAb
{
    private sealed record Variant(string Name, bool Unfused, bool Separate, bool SeparateAdd = false);

    public static int Run(string[] args)
    {
        string arch = "swin_fmnist";
        int batch = 64, rounds = 15;
        bool train = false, inputGrad = false;
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            switch (args[i])
            {
                case "--arch" when value != null: arch = value; i++; break;
                case "--batch" when int.TryParse(value, out int b) && b >= 1: batch = b; i++; break;
                case "--threads" when int.TryParse(value, out int th) && th >= 1: Parallelism.Threads = th; i++; break;
                case "--rounds" when int.TryParse(value, out int r) && r >= 1: rounds = r; i++; break;
                case "--train": train = true; break;
                case "--input-grad": inputGrad = true; break;
                default:
                    Console.Error.WriteLine($"swin-ab: unknown or invalid argument '{args[i]}' (expected --arch A, --batch B, --threads T, --rounds R, --train, --input-grad)");
                    return 2;
            }
        }
        if (train && inputGrad) { Console.Error.WriteLine("swin-ab: --train or --input-grad, not both"); return 2; }
        var variants = new[]
        {
            new Variant("fused (default)", false, false), new Variant("window ops apart", false, true),
            new Variant("attention op graph", true, false), new Variant("residual adds apart", false, false, true),
            new Variant("all off", true, true, true),
        };
        var model = new SwinTransformer(SwinConfig.FromArchitecture(arch), seed: 1);
        var c = model.Config;
        var x = Tensor.Randn(new Rng(3), 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(i => i % c.NumClasses).ToArray();
        if (inputGrad)
        {
            foreach (var p in model.Parameters()) p.RequiresGrad = false;
            x.RequireGrad();
        }
        Tensor Loss(Tensor logits, int first) => Ops.CrossEntropy(logits, labels[first..(first + logits.Shape[0])], meanOver: batch);
        var t = variants.Select(_ => new List<double>()).ToArray();
        bool cpu = Parallelism.Threads == 1;
        try
        {
            for (int r = -2; r < rounds; r++)
                for (int i = 0; i < variants.Length; i++)
                {
                    SwinBlock.UnfusedWindowAttention = variants[i].Unfused;
                    SwinBlock.SeparateWindowOps = variants[i].Separate;
                    VisionTransformer.SeparateResidualAdds = variants[i].SeparateAdd;
                    double t0 = cpu ? ForwardOps.ThreadCpuMs() : 0;
                    var sw = Stopwatch.StartNew();
                    using (TensorArena.Scope())
                    {
                        if (train || inputGrad) { model.ZeroGrad(); x.Grad = null; model.ForwardBackward(x, Loss); }
                        else using (Autograd.NoGrad()) model.Infer(x);
                    }
                    if (r >= 0) t[i].Add(cpu ? ForwardOps.ThreadCpuMs() - t0 : sw.Elapsed.TotalMilliseconds);
                }
        }
        finally { SwinBlock.UnfusedWindowAttention = SwinBlock.SeparateWindowOps = VisionTransformer.SeparateResidualAdds = false; }
        Console.WriteLine($"{arch} batch {batch} threads {Parallelism.Threads}, {(train ? "ForwardBackward to the parameters" : inputGrad ? "ForwardBackward to the input" : "Infer")}, {rounds} interleaved rounds"
            + (cpu ? ", thread CPU time" : ", wall clock"));
        double baseMed = 0;
        for (int i = 0; i < variants.Length; i++)
        {
            t[i].Sort();
            double med = t[i][t[i].Count / 2];
            if (i == 0) baseMed = med;
            Console.WriteLine($"{variants[i].Name,-20} median {med,8:F1} ms ({med / baseMed:F2}×)   fastest {t[i][0],8:F1} ms   {batch * 1000.0 / med,7:F1} img/s");
        }
        return 0;
    }
}
