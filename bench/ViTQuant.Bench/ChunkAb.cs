// Same-process A/B of Infer on the whole batch at once against Infer in chunks of images, one worker per chunk
// (VisionModel.ChunkOverride: the default rule and fixed chunk sizes), calls interleaved round by round, weights
// packed once (WeightPacking.Freeze) as an evaluation runs. Checks that every variant gives the whole batch's logits
// bit for bit. With one thread calls are timed by the thread's CPU clock.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- chunk-ab [--arch A | --quantized Q.safetensors] [--batch B] [--threads T] [--rounds R]
// --quantized evaluates a quantized checkpoint (its fake-quant simulation, as `vitq eval` runs it).
using System.Diagnostics;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class ChunkAb
{
    public static int Run(string[] args)
    {
        string arch = "vit_fmnist";
        string? quantized = null;
        int batch = 64, rounds = 15;
        Parallelism.Threads = 2;
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            if (args[i] == "--arch" && value != null) { arch = value; i++; }
            else if (args[i] == "--quantized" && value != null) { quantized = value; i++; }
            else if (args[i] == "--batch" && int.TryParse(value, out int b) && b >= 1) { batch = b; i++; }
            else if (args[i] == "--threads" && int.TryParse(value, out int th) && th >= 1) { Parallelism.Threads = th; i++; }
            else if (args[i] == "--rounds" && int.TryParse(value, out int r) && r >= 1) { rounds = r; i++; }
            else
            {
                Console.Error.WriteLine($"chunk-ab: unknown or invalid argument '{args[i]}' (expected --arch A, --quantized PATH, --batch B, --threads T, --rounds R)");
                return 2;
            }
        }
        var qm = quantized != null ? ViTQuant.Api.Vitq.LoadQuantized(quantized) : null;
        var model = qm?.Model ?? VisionModel.Create(ModelConfigs.FromArchitecture(arch), 1);
        if (qm != null && !((IImageLocalHooks)qm).ImageLocal) Console.WriteLine("chunk-ab: this quantized model's hooks are not image-local: no chunks");
        var c = model.Config;
        var x = Tensor.Randn(new Rng(3), 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        // -1: the whole batch; 0: the default rule; n: chunks of n images.
        var settings = new[] { -1, 0 }.Concat(new[] { 1, 2, 4, 8, 16 }.Where(s => s < batch)).ToArray();
        string Name(int s) => s < 0 ? "whole batch" : s == 0 ? $"default ({model.ChunkCount(batch)} chunks)" : $"chunks of {s}";
        var t = settings.Select(_ => new List<double>()).ToArray();
        bool cpu = Parallelism.Threads == 1;
        float[]? reference = null;
        using var frozen = WeightPacking.Freeze();
        try
        {
            for (int r = -2; r < rounds; r++)
                for (int v = 0; v < settings.Length; v++)
                {
                    VisionModel.ChunkOverride = settings[v];
                    double t0 = cpu ? ForwardOps.ThreadCpuMs() : 0;
                    var sw = Stopwatch.StartNew();
                    float[] logits;
                    using (TensorArena.Scope()) logits = model.Infer(x, qm).Span.ToArray();
                    if (r >= 0) t[v].Add(cpu ? ForwardOps.ThreadCpuMs() - t0 : sw.Elapsed.TotalMilliseconds);
                    reference ??= logits;
                    if (!logits.AsSpan().SequenceEqual(reference))
                    {
                        Console.Error.WriteLine($"chunk-ab: {Name(settings[v])} gives other logits than the whole batch");
                        return 1;
                    }
                }
        }
        finally { VisionModel.ChunkOverride = 0; }
        Console.WriteLine($"{quantized ?? arch} batch {batch} threads {Parallelism.Threads}, Infer, {rounds} interleaved rounds, "
            + (cpu ? "thread CPU time" : "wall clock") + "; the same logits bit for bit in every variant");
        double baseMed = 0;
        for (int v = 0; v < settings.Length; v++)
        {
            t[v].Sort();
            double med = t[v][t[v].Count / 2];
            if (v == 0) baseMed = med;
            Console.WriteLine($"{Name(settings[v]),-22} median {med,8:F2} ms ({med / baseMed:F2}×)   fastest {t[v][0],8:F2} ms");
        }
        return 0;
    }
}
