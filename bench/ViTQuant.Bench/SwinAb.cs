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
        var step = train ? VariantTiming.Step.Train : inputGrad ? VariantTiming.Step.InputGrad : VariantTiming.Step.Infer;
        List<double>[] t;
        try
        {
            t = VariantTiming.Run(model, c.InChans, c.ImageSize, c.NumClasses, batch, step, variants.Length, i =>
            {
                SwinBlock.UnfusedWindowAttention = variants[i].Unfused;
                SwinBlock.SeparateWindowOps = variants[i].Separate;
                VisionTransformer.SeparateResidualAdds = variants[i].SeparateAdd;
            }, rounds);
        }
        finally { SwinBlock.UnfusedWindowAttention = SwinBlock.SeparateWindowOps = VisionTransformer.SeparateResidualAdds = false; }
        VariantTiming.Report($"{arch} batch {batch} threads {Parallelism.Threads}, {VariantTiming.Describe(step)}, {rounds} interleaved rounds",
            variants.Select(v => v.Name).ToArray(), t, 20, batch);
        return 0;
    }
}
