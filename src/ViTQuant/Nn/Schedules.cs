// Learning-rate schedules as closed forms of the step index.
//
// LrAt(step) is the rate for the optimizer update with 0-based index `step`, which is what a torch
// scheduler holds after being stepped `step` times (torch sets the step-0 rate at construction and
// calls scheduler.step() after each optimizer.step()). All arithmetic is in double; the result is
// rounded to float once.
//   CosineWithWarmup:  s < W        : lr₀ + (lr − lr₀)·s/W                         (linear warm-up)
//                      W ≤ s ≤ T    : lr_min + (lr − lr_min)·(1 + cos(π(s − W)/(T − W)))/2
//                      s > T        : lr_min
//   MultiStep:         lr·γ^k, k = number of milestones ≤ s (torch's bisect_right; repeats count)
//   CosineAnnealing:   lr_min + (lr_max − lr_min)·(1 + cos(π·s/T))/2   (torch's closed form; like
//                      torch it is not clamped, so past T it rises again with period 2T)
namespace ViTQuant.Nn;

/// <summary>A learning rate as a function of the 0-based optimizer step.</summary>
internal interface ILrSchedule
{
    /// <summary>The learning rate for update number <paramref name="step"/> (0-based).</summary>
    float LrAt(int step);
}

/// <summary>Linear warm-up from <see cref="WarmupStartLr"/> to <see cref="BaseLr"/>, then cosine decay to <see cref="MinLr"/> at <see cref="TotalSteps"/>, constant after.</summary>
internal sealed class CosineWithWarmup : ILrSchedule
{
    /// <summary>Peak rate, reached at the end of the warm-up.</summary>
    public double BaseLr { get; }
    /// <summary>Steps of linear warm-up W.</summary>
    public int WarmupSteps { get; }
    /// <summary>Step T at which the cosine reaches <see cref="MinLr"/>.</summary>
    public int TotalSteps { get; }
    /// <summary>Rate at and after <see cref="TotalSteps"/>.</summary>
    public double MinLr { get; }
    /// <summary>Rate at step 0, the start of the warm-up.</summary>
    public double WarmupStartLr { get; }

    /// <summary>
    /// Throws ArgumentOutOfRangeException for a negative or non-finite rate, warmupSteps &lt; 0, or
    /// totalSteps ≤ warmupSteps (the cosine phase needs at least one step).
    /// </summary>
    public CosineWithWarmup(double baseLr, int warmupSteps, int totalSteps, double minLr = 0, double warmupStartLr = 0)
    {
        ParamGroup.CheckNonNegative(baseLr, "base lr");
        ParamGroup.CheckNonNegative(minLr, "min lr");
        ParamGroup.CheckNonNegative(warmupStartLr, "warm-up start lr");
        if (warmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(warmupSteps), $"warm-up steps must be ≥ 0, got {warmupSteps}");
        if (totalSteps <= warmupSteps) throw new ArgumentOutOfRangeException(nameof(totalSteps), $"total steps ({totalSteps}) must exceed warm-up steps ({warmupSteps})");
        (BaseLr, WarmupSteps, TotalSteps, MinLr, WarmupStartLr) = (baseLr, warmupSteps, totalSteps, minLr, warmupStartLr);
    }

    /// <summary>The closed form in the file header. Throws ArgumentOutOfRangeException for a negative step.</summary>
    public float LrAt(int step)
    {
        LrSchedules.CheckStep(step);
        if (step < WarmupSteps) return (float)(WarmupStartLr + (BaseLr - WarmupStartLr) * step / WarmupSteps);
        if (step >= TotalSteps) return (float)MinLr;
        double progress = (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        return (float)(MinLr + (BaseLr - MinLr) * (1 + Math.Cos(Math.PI * progress)) / 2);
    }
}

/// <summary>Step decay: the base rate times γ for every milestone reached (torch.optim.lr_scheduler.MultiStepLR).</summary>
internal sealed class MultiStep : ILrSchedule
{
    private readonly int[] _milestones;

    /// <summary>Rate before the first milestone.</summary>
    public double BaseLr { get; }
    /// <summary>Factor γ applied at every milestone.</summary>
    public double Gamma { get; }

    /// <summary>Milestones, ascending (repeats kept: each multiplies by γ again).</summary>
    public IReadOnlyList<int> Milestones => _milestones;

    /// <summary>Throws ArgumentOutOfRangeException for a negative or non-finite base rate or γ, or a negative milestone.</summary>
    public MultiStep(double baseLr, IEnumerable<int> milestones, double gamma = 0.1)
    {
        ArgumentNullException.ThrowIfNull(milestones);
        ParamGroup.CheckNonNegative(baseLr, "base lr");
        ParamGroup.CheckNonNegative(gamma, "gamma");
        _milestones = milestones.Order().ToArray();
        if (_milestones.Length > 0 && _milestones[0] < 0) throw new ArgumentOutOfRangeException(nameof(milestones), $"milestones must be ≥ 0, got {_milestones[0]}");
        BaseLr = baseLr;
        Gamma = gamma;
    }

    /// <summary>BaseLr·γ^k with k the number of milestones ≤ step. Throws ArgumentOutOfRangeException for a negative step.</summary>
    public float LrAt(int step)
    {
        LrSchedules.CheckStep(step);
        int k = 0;
        while (k < _milestones.Length && _milestones[k] <= step) k++;
        return (float)(BaseLr * Math.Pow(Gamma, k));
    }
}

/// <summary>torch.optim.lr_scheduler.CosineAnnealingLR's closed form (half a cosine from lrMax at 0 to lrMin at totalSteps).</summary>
internal sealed class CosineAnnealing : ILrSchedule
{
    /// <summary>Rate at step 0.</summary>
    public double LrMax { get; }
    /// <summary>Rate at <see cref="TotalSteps"/>.</summary>
    public double LrMin { get; }
    /// <summary>Half-period T of the cosine, in steps.</summary>
    public int TotalSteps { get; }

    /// <summary>Throws ArgumentOutOfRangeException for a negative or non-finite rate or totalSteps ≤ 0.</summary>
    public CosineAnnealing(double lrMax, double lrMin, int totalSteps)
    {
        ParamGroup.CheckNonNegative(lrMax, "max lr");
        ParamGroup.CheckNonNegative(lrMin, "min lr");
        if (totalSteps <= 0) throw new ArgumentOutOfRangeException(nameof(totalSteps), $"total steps must be > 0, got {totalSteps}");
        (LrMax, LrMin, TotalSteps) = (lrMax, lrMin, totalSteps);
    }

    /// <summary>lrMin + (lrMax − lrMin)(1 + cos(π·step/T))/2, unclamped as in torch. Throws ArgumentOutOfRangeException for a negative step.</summary>
    public float LrAt(int step)
    {
        LrSchedules.CheckStep(step);
        return (float)(LrMin + (LrMax - LrMin) * (1 + Math.Cos(Math.PI * step / TotalSteps)) / 2);
    }
}

/// <summary>Applies schedules to an optimizer's parameter groups.</summary>
internal static class LrSchedules
{
    /// <summary>Sets every group's Lr to schedule.LrAt(step); call before optimizer.Step() for update number step.</summary>
    public static void Apply(this ILrSchedule schedule, Optimizer optimizer, int step)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(optimizer);
        float lr = schedule.LrAt(step);
        foreach (var g in optimizer.Groups) g.Lr = lr;
    }

    /// <summary>
    /// Sets group i's Lr to perGroup[i].LrAt(step) (torch's per-group base rates). Throws ArgumentException
    /// when the number of schedules differs from the number of groups.
    /// </summary>
    public static void Apply(IReadOnlyList<ILrSchedule> perGroup, Optimizer optimizer, int step)
    {
        ArgumentNullException.ThrowIfNull(perGroup);
        ArgumentNullException.ThrowIfNull(optimizer);
        if (perGroup.Count != optimizer.Groups.Count)
            throw new ArgumentException($"{perGroup.Count} schedules for {optimizer.Groups.Count} parameter groups", nameof(perGroup));
        for (int i = 0; i < perGroup.Count; i++) optimizer.Groups[i].Lr = perGroup[i].LrAt(step);
    }

    internal static void CheckStep(int step)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), $"step must be ≥ 0, got {step}");
    }
}
