// Progress display for long work: a Spectre.Console bar (rate and ETA) on an interactive stderr, and
// plain timestamped lines every few seconds when stderr is redirected (CI logs, pipes), so both a
// person at a terminal and a log file see where the job is; both show the step's ETA. A job of several
// steps (demo) declares them in an Overall plan, and every status then also shows the whole job's
// progress and remaining time. Human output always goes to stderr.
using System.Diagnostics;
using Spectre.Console;
using ViTQuant.Api;

namespace ViTQuant.Cli;

internal static class Progress
{
    /// <summary>The console for human output (stderr), so stdout stays clean for --json.</summary>
    public static readonly IAnsiConsole Err = AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Console.Error),
    });

    /// <summary>The live display every bar uses: kept on screen when done, with ETA and elapsed time.</summary>
    private static Spectre.Console.Progress Bars() => Err.Progress()
        .AutoClear(false)
        .HideCompleted(false)
        .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
            new RemainingTimeColumn(), new ElapsedTimeColumn(), new SpinnerColumn());

    /// <summary>
    /// Runs work with a progress reporter. The reporter's Update(done, status) may be called from the
    /// worker at any rate; display is throttled.
    /// </summary>
    public static T Run<T>(string title, long total, Func<Reporter, T> work)
    {
        if (!Console.IsErrorRedirected && Err.Profile.Capabilities.Interactive)
        {
            T result = default!;
            Bars().Start(ctx =>
                {
                    var task = ctx.AddTask(Markup.Escape(title), maxValue: Math.Max(1, total));
                    var rep = new Reporter(total, (done, status) =>
                    {
                        task.Value = done;
                        task.Description = Markup.Escape(string.IsNullOrEmpty(status) ? title : $"{title} {status}");
                    }, stage: title);
                    result = work(rep);
                    task.Value = task.MaxValue;
                });
            return result;
        }
        else
        {
            var rep = new Reporter(total, (done, status) =>
                Console.Error.WriteLine($"[{DateTime.Now:HH:mm:ss}] {title} {done}/{total} {status}"), appendEta: true, stage: title);
            var r = work(rep);
            rep.Flush();
            return r;
        }
    }

    /// <summary>
    /// Runs a library operation that reports <see cref="OperationProgress"/>: each new stage gets its own bar
    /// (or, redirected, its own series of lines) titled by the stage, as <see cref="Run{T}"/> shows one step.
    /// With <paramref name="title"/>, every stage is shown under that title instead (one operation among many of a verb).
    /// </summary>
    public static T Staged<T>(Func<IProgress<OperationProgress>, T> work, string? title = null)
    {
        if (title != null)
        {
            var inner = work;
            work = p => inner(new Sink(op => p.Report(op with { Stage = title })));
        }
        string? stage = null;
        Reporter? rep = null;
        if (!Console.IsErrorRedirected && Err.Profile.Capabilities.Interactive)
        {
            T result = default!;
            ProgressTask? task = null;
            Bars().Start(ctx =>
                {
                    result = work(new Sink(p =>
                    {
                        if (p.Stage != stage)
                        {
                            if (task != null) task.Value = task.MaxValue;
                            string title = stage = p.Stage;
                            var t = task = ctx.AddTask(Markup.Escape(title), maxValue: Math.Max(1, p.Total));
                            rep = new Reporter(p.Total, (done, status) =>
                            {
                                t.Value = done;
                                t.Description = Markup.Escape(string.IsNullOrEmpty(status) ? title : $"{title} {status}");
                            }, stage: title);
                        }
                        rep!.Update(p.Step, p.Message);
                    }));
                    if (task != null) task.Value = task.MaxValue;
                });
            return result;
        }
        var r = work(new Sink(p =>
        {
            if (p.Stage != stage)
            {
                rep?.Flush();
                string title = stage = p.Stage;
                long total = p.Total;
                rep = new Reporter(total, (done, status) => Console.Error.WriteLine($"[{DateTime.Now:HH:mm:ss}] {title} {done}/{total} {status}"), appendEta: true, stage: title);
            }
            rep!.Update(p.Step, p.Message);
        }));
        rep?.Flush();
        return r;
    }

    /// <summary>Reports synchronously on the worker's thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class Sink(Action<OperationProgress> report) : IProgress<OperationProgress>
    {
        public void Report(OperationProgress value) => report(value);
    }

    /// <summary>Thread-safe, throttled progress sink; also computes a rate for status lines.</summary>
    public sealed class Reporter
    {
        private readonly Action<long, string> _show;
        private readonly Stopwatch _sw = Stopwatch.StartNew();
        private readonly long _total;
        private long _done;
        private string _status = "";
        private double _lastShown = -1;
        private long _shownDone = -1;
        private readonly object _lock = new();

        private readonly bool _appendEta;

        private readonly string _stage;

        /// <param name="appendEta">Add the step's ETA to the status (plain lines; the interactive bar has its own column).</param>
        /// <param name="stage">The stage (bar) this reporter shows, for the overall plan's stage costs.</param>
        public Reporter(long total, Action<long, string> show, bool appendEta = false, string stage = "")
        {
            _stage = stage;
            _total = total;
            _show = show;
            _appendEta = appendEta;
        }

        public double Elapsed => _sw.Elapsed.TotalSeconds;

        private long _firstDone = -1;

        /// <summary>
        /// Seconds left for this step at the rate of this run (a resumed step starts part-way: its rate counts
        /// only the items done since), or null before there is a rate.
        /// </summary>
        public double? Eta
        {
            get { lock (_lock) return EtaLocked(); }
        }

        private double? EtaLocked()
        {
            long doneHere = _done - Math.Max(0, _firstDone);
            if (_firstDone < 0 || doneHere <= 0 || Elapsed < 1e-3) return null;
            return (_total - _done) * Elapsed / doneHere;
        }

        /// <summary>Items per second since the start.</summary>
        public double Rate => _done / Math.Max(1e-9, _sw.Elapsed.TotalSeconds);

        public void Update(long done, string status = "")
        {
            lock (_lock)
            {
                // The first report of a resumed step already counts the items done before it; Eta must not.
                if (_firstDone < 0) _firstDone = done;
                _done = done;
                if (_appendEta && EtaLocked() is double eta) status = $"{status} ETA {Overall.Clock(eta)}";
                if (Overall.Current is Overall o)
                {
                    o.Report(_stage, _total > 0 ? (double)done / _total : 1);
                    status = $"{status} | {o.Describe()}";
                }
                _status = status;
                double now = _sw.Elapsed.TotalSeconds;
                bool interactive = !Console.IsErrorRedirected;
                if (done >= _total || now - _lastShown >= (interactive ? 0.1 : 10.0))
                {
                    _lastShown = now;
                    _shownDone = done;
                    _show(done, status);
                }
            }
        }

        /// <summary>Shows the last state if it has not been shown yet.</summary>
        public void Flush()
        {
            lock (_lock)
                if (_shownDone != _done) _show(_done, _status);
        }
    }
}
