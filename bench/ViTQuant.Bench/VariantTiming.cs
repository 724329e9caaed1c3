// The timing loop the same-process A/B commands share (engine-ab, swin-ab): one model step per variant, the variants
// visited in turn round after round so that drift in a shared machine's load falls on every variant alike; with one
// thread each call is timed by the thread's CPU clock, else by the wall clock.
using System.Diagnostics;
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class VariantTiming
{
    /// <summary>The step timed: the no-grad Infer, or ForwardBackward of the cross-entropy to every parameter or to the input only.</summary>
    public enum Step { Infer, Train, InputGrad }

    public static string Describe(Step step) => step switch
    {
        Step.Train => "ForwardBackward to the parameters",
        Step.InputGrad => "ForwardBackward to the input",
        _ => "Infer",
    };

    /// <summary>
    /// Times <paramref name="step"/> of <paramref name="model"/> on a random batch for each of <paramref name="variants"/>
    /// variants (<paramref name="set"/> switches to variant i before its call; sleepMs pauses before every call): two
    /// warm-up rounds, then <paramref name="rounds"/> timed ones. Returns each variant's milliseconds, sorted.
    /// </summary>
    public static List<double>[] Run(VisionModel model, int inChans, int imageSize, int numClasses, int batch, Step step,
        int variants, Action<int> set, int rounds, int sleepMs = 0)
    {
        var x = Tensor.Randn(new Rng(3), 1f, batch, inChans, imageSize, imageSize);
        var labels = Enumerable.Range(0, batch).Select(i => i % numClasses).ToArray();
        if (step == Step.InputGrad)
        {
            foreach (var p in model.Parameters()) p.RequiresGrad = false;
            x.RequireGrad();
        }
        Tensor Loss(Tensor logits, int first) => Ops.CrossEntropy(logits, labels[first..(first + logits.Shape[0])], meanOver: batch);
        var t = Enumerable.Range(0, variants).Select(_ => new List<double>()).ToArray();
        bool cpu = Parallelism.Threads == 1;
        for (int r = -2; r < rounds; r++)
            for (int i = 0; i < variants; i++)
            {
                set(i);
                if (sleepMs > 0) Thread.Sleep(sleepMs);
                double t0 = cpu ? ForwardOps.ThreadCpuMs() : 0;
                var sw = Stopwatch.StartNew();
                using (TensorArena.Scope())
                {
                    if (step != Step.Infer) { model.ZeroGrad(); x.Grad = null; model.ForwardBackward(x, Loss); }
                    else using (Autograd.NoGrad()) model.Infer(x);
                }
                if (r >= 0) t[i].Add(cpu ? ForwardOps.ThreadCpuMs() - t0 : sw.Elapsed.TotalMilliseconds);
            }
        foreach (var list in t) list.Sort();
        return t;
    }

    /// <summary>
    /// The header line (with the clock used) and a line per variant: median (and its ratio to the first variant's) and
    /// fastest call, plus images per second at the median when <paramref name="batch"/> is above 0.
    /// </summary>
    public static void Report(string header, IReadOnlyList<string> names, List<double>[] t, int nameWidth, int batch = 0)
    {
        Console.WriteLine(header + (Parallelism.Threads == 1 ? ", thread CPU time" : ", wall clock"));
        double baseMed = t[0][t[0].Count / 2];
        for (int i = 0; i < names.Count; i++)
        {
            double med = t[i][t[i].Count / 2];
            string rate = batch > 0 ? $"   {batch * 1000.0 / med,7:F1} img/s" : "";
            Console.WriteLine($"{names[i].PadRight(nameWidth)} median {med,8:F1} ms ({med / baseMed:F2}×)   fastest {t[i][0],8:F1} ms{rate}");
        }
    }
}
