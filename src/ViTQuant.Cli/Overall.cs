// The overall ETA of a job made of several steps (vitq demo): each pending step has an estimated cost
// in forward-image units (one image through the model forward; a backward counts about two). The
// remaining cost is divided by the rate measured so far in this run, so the estimate corrects its own
// scale as the job runs; the relative costs are a model (see DemoCommand), so it is "about".
using System.Diagnostics;

namespace ViTQuant.Cli;

internal sealed class Overall : IDisposable
{
    /// <summary>The plan every Progress reporter adds its overall status from, while one is active.</summary>
    public static Overall? Current { get; private set; }

    private readonly Dictionary<string, double> _cost;
    private readonly double _total;
    private readonly Stopwatch _sw = Stopwatch.StartNew();
    private readonly object _lock = new();
    private double _finished, _currentCost, _fraction;
    private int _stepsDone;

    /// <summary>Starts a plan of the steps this run still has to do (finished ones are left out: they cost nothing).</summary>
    public Overall(IEnumerable<(string Step, double Cost)> pending)
    {
        _cost = pending.Where(p => p.Cost > 0).ToDictionary(p => p.Step, p => p.Cost);
        _total = _cost.Values.Sum();
        Current = this;
    }

    public int Steps => _cost.Count;

    /// <summary>Runs one planned step and accounts for it; a name not in the plan runs untracked.</summary>
    public T Step<T>(string name, Func<T> run)
    {
        if (!_cost.TryGetValue(name, out double c)) return run();
        lock (_lock) { _currentCost = c; _fraction = 0; }
        var result = run();
        lock (_lock) { _finished += c; _currentCost = 0; _fraction = 0; _stepsDone++; }
        Console.Error.WriteLine($"[{DateTime.Now:HH:mm:ss}] step {name} done: {_stepsDone}/{Steps} steps of this run, {Clock(_sw.Elapsed.TotalSeconds)} elapsed, {Describe()}");
        return result;
    }

    /// <summary>The current step's progress, 0..1 (a step with several progress bars keeps its furthest).</summary>
    public void Report(double fraction)
    {
        lock (_lock) _fraction = Math.Clamp(Math.Max(_fraction, fraction), 0, 1);
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
