// The overall ETA of a job made of several steps (vitq demo): each pending step has an estimated cost
// in forward-image units (one image through the model forward; a backward counts about two). The
// remaining cost is divided by the rate measured so far in this run, so the estimate corrects its own
// scale as the job runs; the relative costs are a model (see DemoCommand), so it is "about".
// A step that runs several progress stages one after another (calibrate, one reconstruction per module,
// evaluate) declares their costs by stage name; its progress is then the cost-weighted sum of its
// stages' fractions. Without them a step counts its furthest stage, which is right only for one stage: the
// first of many stages at 100 % read as the whole step done ("overall 100 %" through a demo's ADFQ row).
using System.Diagnostics;

namespace ViTQuant.Cli;

internal sealed class Overall : IDisposable
{
    /// <summary>The plan every Progress reporter adds its overall status from, while one is active.</summary>
    public static Overall? Current { get; private set; }

    private readonly Dictionary<string, (double Cost, Func<string, double>? StageCost)> _plan;
    private readonly Dictionary<string, double> _stageFraction = new();
    private Func<string, double>? _stageCost;
    private readonly double _total;
    private readonly Stopwatch _sw = Stopwatch.StartNew();
    private readonly object _lock = new();
    private double _finished, _currentCost, _fraction;
    private int _stepsDone;

    /// <summary>Starts a plan of the steps this run still has to do (finished ones are left out: they cost nothing).</summary>
    public Overall(IEnumerable<(string Step, double Cost)> pending)
        : this(pending.Select(p => (p.Step, p.Cost, (Func<string, double>?)null)))
    {
    }

    /// <summary>
    /// A plan whose steps may price their stages: StageCost(stage name) is the stage's cost (0 for one that does
    /// not count); the stage costs of a step should add up to the step's cost. Null: the step is one stage.
    /// </summary>
    public Overall(IEnumerable<(string Step, double Cost, Func<string, double>? StageCost)> pending)
    {
        _plan = pending.Where(p => p.Cost > 0).ToDictionary(p => p.Step, p => (p.Cost, p.StageCost));
        _total = _plan.Values.Sum(p => p.Cost);
        Current = this;
    }

    public int Steps => _plan.Count;

    /// <summary>Runs one planned step and accounts for it; a name not in the plan runs untracked.</summary>
    public T Step<T>(string name, Func<T> run)
    {
        if (!_plan.TryGetValue(name, out var step)) return run();
        double c = step.Cost;
        lock (_lock) { _currentCost = c; _fraction = 0; _stageCost = step.StageCost; _stageFraction.Clear(); }
        var result = run();
        lock (_lock) { _finished += c; _currentCost = 0; _fraction = 0; _stageCost = null; _stageFraction.Clear(); _stepsDone++; }
        Console.Error.WriteLine($"[{DateTime.Now:HH:mm:ss}] step {name} done: {_stepsDone}/{Steps} steps of this run, {Clock(_sw.Elapsed.TotalSeconds)} elapsed, {Describe()}");
        return result;
    }

    /// <summary>
    /// Progress of a stage of the current step, 0..1: the step's progress is its stages' fractions weighted by
    /// their declared costs, or, when it declares none, its furthest stage's fraction. It never goes back.
    /// </summary>
    public void Report(string stage, double fraction)
    {
        lock (_lock)
        {
            fraction = Math.Clamp(fraction, 0, 1);
            _stageFraction[stage] = Math.Max(_stageFraction.GetValueOrDefault(stage), fraction);
            double step;
            if (_stageCost == null) step = _stageFraction.Values.Max();
            else
            {
                double done = 0;
                foreach (var (name, f) in _stageFraction) done += f * _stageCost(name);
                step = _currentCost > 0 ? done / _currentCost : 0;
            }
            _fraction = Math.Clamp(Math.Max(_fraction, step), 0, 1);
        }
    }

    /// <summary>"overall 42%, about 3:10 left", or "overall: estimating" before any work is measured.</summary>
    public string Describe()
    {
        lock (_lock)
        {
            double done = _finished + _currentCost * _fraction, t = _sw.Elapsed.TotalSeconds;
            if (_total <= 0) return "overall 100%";
            if (done <= 0 || t < 1) return "overall: estimating";
            return $"overall {100 * done / _total:F0}%, about {Clock(t / done * (_total - done))} left";
        }
    }

    /// <summary>h:mm:ss or m:ss.</summary>
    public static string Clock(double seconds)
    {
        var ts = TimeSpan.FromSeconds(Math.Max(0, Math.Round(seconds)));
        return ts.TotalHours >= 1 ? $"{(int)ts.TotalHours}:{ts.Minutes:D2}:{ts.Seconds:D2}" : $"{ts.Minutes}:{ts.Seconds:D2}";
    }

    public void Dispose()
    {
        if (ReferenceEquals(Current, this)) Current = null;
    }
}
