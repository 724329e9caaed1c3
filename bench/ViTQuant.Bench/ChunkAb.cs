// Same-process A/B of a batch at once against the batch in chunks of images, one worker per chunk
// (VisionModel.ChunkOverride: the default rule and fixed chunk sizes), calls interleaved round by round.
//   --step infer (default): Infer, weights packed once (WeightPacking.Freeze) as an evaluation runs; every variant must
//     give the whole batch's logits bit for bit.
//   --step input-grad: ForwardBackward of the cross-entropy to the input (parameters frozen); every variant must give
//     the whole batch's input gradient bit for bit.
//   --step train: ForwardBackward of the cross-entropy to every parameter (no optimizer step, so every round computes
//     the same gradients); a variant must repeat its own gradients bit for bit, and prints how far they are from the
//     whole batch's (the chunks sum weight gradients in another order).
// With one thread calls are timed by the thread's CPU clock. Each timed call follows an untimed call of its variant, so
// both find the buffers a loop of such calls keeps.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- chunk-ab [--arch A | --quantized Q.safetensors] [--step S] [--batch B] [--threads T] [--rounds R]
// --quantized evaluates a quantized checkpoint (its fake-quant simulation, as `vitq eval` runs it; infer only).
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
        string? quantized = null, step = "infer";
        int batch = 64, rounds = 15;
        Parallelism.Threads = 2;
        for (int i = 0; i < args.Length; i++)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            if (args[i] == "--arch" && value != null) { arch = value; i++; }
            else if (args[i] == "--quantized" && value != null) { quantized = value; i++; }
            else if (args[i] == "--step" && value is "infer" or "train" or "input-grad") { step = value; i++; }
            else if (args[i] == "--batch" && int.TryParse(value, out int b) && b >= 1) { batch = b; i++; }
            else if (args[i] == "--threads" && int.TryParse(value, out int th) && th >= 1) { Parallelism.Threads = th; i++; }
            else if (args[i] == "--rounds" && int.TryParse(value, out int r) && r >= 1) { rounds = r; i++; }
            else
            {
                Console.Error.WriteLine($"chunk-ab: unknown or invalid argument '{args[i]}' (expected --arch A, --quantized PATH, --step infer|train|input-grad, --batch B, --threads T, --rounds R)");
                return 2;
            }
        }
        if (quantized != null && step != "infer") { Console.Error.WriteLine("chunk-ab: --quantized times Infer only"); return 2; }
        var qm = quantized != null ? ViTQuant.Api.Vitq.LoadQuantized(quantized) : null;
        var model = qm?.Model ?? VisionModel.Create(ModelConfigs.FromArchitecture(arch), 1);
        if (qm != null && !((IImageLocalHooks)qm).ImageLocal) Console.WriteLine("chunk-ab: this quantized model's hooks are not image-local: no chunks");
        var c = model.Config;
        var rng = new Rng(3);
        var x = Tensor.Randn(rng, 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(_ => rng.NextInt(c.NumClasses)).ToArray();
        var parameters = model.Parameters().ToArray();
        if (step == "input-grad") foreach (var p in parameters) p.RequiresGrad = false;
        long gradientFloats = step == "train" ? model.ParameterCount() : 0;
        // -1: the whole batch; 0: the default rule; n: chunks of n images.
        var settings = new[] { -1, 0 }.Concat(new[] { 1, 2, 4, 8, 16 }.Where(s => s < batch)).ToArray();
        string Name(int s) => s < 0 ? "whole batch" : s == 0
            ? $"default ({(step == "infer" ? model.ChunkCount(batch) : model.BackwardChunkCount(batch, gradientFloats))} chunks)" : $"chunks of {s}";
        // What a call gives: the logits, the input gradient, or every parameter gradient one after another.
        float[] Call()
        {
            if (step == "infer") return model.Infer(x, qm).Span.ToArray();
            var xi = step == "input-grad" ? x.Clone().RequireGrad() : x;
            foreach (var p in parameters) p.Grad = null;
            model.ForwardBackward(xi, (logits, first) => Ops.CrossEntropy(logits, labels[first..(first + logits.Shape[0])], meanOver: batch));
            return step == "input-grad" ? xi.Grad!.Span.ToArray() : parameters.SelectMany(p => p.Grad!.Span.ToArray()).ToArray();
        }
        var t = settings.Select(_ => new List<double>()).ToArray();
        var firstResult = new float[settings.Length][];
        bool cpu = Parallelism.Threads == 1;
        using var frozen = step == "infer" ? WeightPacking.Freeze() : null;
        try
        {
            for (int r = -2; r < rounds; r++)
                for (int v = 0; v < settings.Length; v++)
                {
                    VisionModel.ChunkOverride = settings[v];
                    // An untimed call of the same variant first: the arena keeps a buffer size through two outermost
                    // scopes only, so after the other variants' calls a timed call would start from fresh buffers (page
                    // faults and zeroing, the most for the whole batch's large ones), which is not how a loop of steps runs.
                    using (TensorArena.Scope()) Call();
                    double t0 = cpu ? ForwardOps.ThreadCpuMs() : 0;
                    var sw = Stopwatch.StartNew();
                    float[] result;
                    using (TensorArena.Scope()) result = Call();
                    if (r >= 0) t[v].Add(cpu ? ForwardOps.ThreadCpuMs() - t0 : sw.Elapsed.TotalMilliseconds);
                    firstResult[v] ??= result;
                    var expected = step == "train" ? firstResult[v] : firstResult[0];
                    if (!result.AsSpan().SequenceEqual(expected))
                    {
                        Console.Error.WriteLine($"chunk-ab: {Name(settings[v])} gives other "
                            + (step == "train" ? "gradients than its own first call" : "results than the whole batch"));
                        return 1;
                    }
                }
        }
        finally { VisionModel.ChunkOverride = 0; }
        Console.WriteLine($"{quantized ?? arch} batch {batch} threads {Parallelism.Threads}, {step}, {rounds} interleaved rounds, "
            + (cpu ? "thread CPU time" : "wall clock") + (step == "train"
                ? "; each variant's gradients the same bit for bit in every round"
                : step == "infer" ? "; the same logits bit for bit in every variant" : "; the same input gradient bit for bit in every variant"));
        double baseMed = 0;
        for (int v = 0; v < settings.Length; v++)
        {
            t[v].Sort();
            double med = t[v][t[v].Count / 2];
            if (v == 0) baseMed = med;
            string diff = "";
            if (step == "train" && v > 0)
            {
                double worst = 0, scale = firstResult[0].Max(Math.Abs);
                for (int i = 0; i < firstResult[0].Length; i++) worst = Math.Max(worst, Math.Abs(firstResult[v][i] - firstResult[0][i]));
                diff = $"   largest gradient difference from the whole batch {worst / scale:E1} of the largest gradient";
            }
            Console.WriteLine($"{Name(settings[v]),-22} median {med,8:F2} ms ({med / baseMed:F2}×)   fastest {t[v][0],8:F2} ms{diff}");
        }
        return 0;
    }
}
