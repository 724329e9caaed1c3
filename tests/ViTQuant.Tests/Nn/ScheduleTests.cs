using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Tests.Nn;

public class ScheduleTests
{
    private static void Near(double expected, float actual) => Assert.Equal(expected, actual, Math.Max(1e-7 * Math.Abs(expected), 1e-12));

    [Fact]
    public void CosineWithWarmupAtItsBoundaries()
    {
        var s = new CosineWithWarmup(baseLr: 1e-3, warmupSteps: 10, totalSteps: 110, minLr: 1e-5, warmupStartLr: 1e-6);
        Near(1e-6, s.LrAt(0));                                   // warm-up starts at its own rate
        Near(1e-6 + (1e-3 - 1e-6) * 5 / 10, s.LrAt(5));          // linear half way
        Near(1e-3, s.LrAt(10));                                  // warm-up end = peak
        Near(1e-5 + (1e-3 - 1e-5) * (1 + Math.Cos(Math.PI * 0.25)) / 2, s.LrAt(35));
        Near((1e-3 + 1e-5) / 2, s.LrAt(60));                     // cosine half way: the mean
        Near(1e-5, s.LrAt(110));                                 // total: the floor
        Near(1e-5, s.LrAt(1_000_000));                           // and stays there
        for (int t = 10; t < 110; t++) Assert.True(s.LrAt(t + 1) <= s.LrAt(t));
        for (int t = 0; t < 10; t++) Assert.True(s.LrAt(t + 1) > s.LrAt(t));

        var noWarmup = new CosineWithWarmup(0.1, 0, 4);
        Near(0.1, noWarmup.LrAt(0));
        Near(0.05, noWarmup.LrAt(2));
        Near(0, noWarmup.LrAt(4));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CosineWithWarmup(0.1, 5, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CosineWithWarmup(-0.1, 0, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.LrAt(-1));
    }

    [Fact]
    public void MultiStepCountsMilestonesReached()
    {
        var s = new MultiStep(0.1, new[] { 30, 10, 30 }, gamma: 0.1); // unsorted, repeated (torch counts repeats)
        Near(0.1, s.LrAt(0));
        Near(0.1, s.LrAt(9));
        Near(0.01, s.LrAt(10));                                  // a milestone applies at its own step
        Near(0.01, s.LrAt(29));
        Near(1e-4, s.LrAt(30));
        Near(1e-4, s.LrAt(500));
        Assert.Equal(new[] { 10, 30, 30 }, s.Milestones);
        Near(0.5, new MultiStep(0.5, Array.Empty<int>()).LrAt(100));
    }

    [Fact]
    public void CosineAnnealingIsTorchsClosedForm()
    {
        var s = new CosineAnnealing(lrMax: 0.1, lrMin: 1e-3, totalSteps: 8);
        Near(0.1, s.LrAt(0));
        Near((0.1 + 1e-3) / 2, s.LrAt(4));
        Near(1e-3, s.LrAt(8));
        Near(1e-3 + (0.1 - 1e-3) * (1 + Math.Cos(Math.PI * 3 / 8)) / 2, s.LrAt(3));
        Near(s.LrAt(7), s.LrAt(9));                              // unclamped like torch: rises again past T
        Near(0.1, s.LrAt(16));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CosineAnnealing(0.1, 0, 0));
    }

    [Fact]
    public void ApplySetsEveryGroupOrOnePerGroup()
    {
        var a = Tensor.Zeros(2).RequireGrad();
        var b = Tensor.Zeros(2).RequireGrad();
        var opt = new Sgd(new[] { new ParamGroup(new[] { a }), new ParamGroup(new[] { b }, lr: 5f) }, 1f);
        new MultiStep(0.2, new[] { 1 }, 0.5).Apply(opt, 1);
        Assert.Equal(new[] { 0.1f, 0.1f }, opt.Groups.Select(g => g.Lr));
        LrSchedules.Apply(new ILrSchedule[] { new CosineAnnealing(1, 0, 2), new CosineAnnealing(3, 1, 2) }, opt, 1);
        Assert.Equal(new[] { 0.5f, 2f }, opt.Groups.Select(g => g.Lr));
        Assert.Throws<ArgumentException>(() => LrSchedules.Apply(new ILrSchedule[] { new CosineAnnealing(1, 0, 2) }, opt, 0));
    }
}
