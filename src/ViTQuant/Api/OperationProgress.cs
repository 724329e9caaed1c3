// Progress and cancellation for the façade's long operations. The algorithms report through plain
// callbacks (per batch, iteration, unit or step); the façade turns each callback into an
// OperationProgress and checks the CancellationToken there, so a cancelled job stops at its next
// callback by throwing OperationCanceledException out of the algorithm, before anything is written.
namespace ViTQuant.Api;

/// <summary>
/// Where a long operation stands: <paramref name="Step"/> of <paramref name="Total"/> in its current
/// <paramref name="Stage"/> ("calibrate", "adfq blocks.3", "evaluate", …), with a human-readable status.
/// A multi-stage operation restarts Step at each new Stage.
/// </summary>
/// <param name="Stage">The part of the operation now running; a change of stage starts a new count.</param>
/// <param name="Step">Work done in this stage (images, iterations or steps), 0 ≤ Step ≤ Total.</param>
/// <param name="Total">Work in this stage, at least 1.</param>
/// <param name="Message">Status for a person (current loss, throughput); may be empty.</param>
public sealed record OperationProgress(string Stage, long Step, long Total, string Message = "")
{
    /// <summary>Step / Total in [0, 1].</summary>
    public double Fraction => Total <= 0 ? 1 : Math.Clamp((double)Step / Total, 0, 1);
}

/// <summary>Reports to an optional <see cref="IProgress{T}"/> and checks cancellation at every report.</summary>
internal readonly struct ProgressSink
{
    private readonly IProgress<OperationProgress>? _progress;
    private readonly CancellationToken _ct;

    public ProgressSink(IProgress<OperationProgress>? progress, CancellationToken ct)
    {
        _progress = progress;
        _ct = ct;
    }

    public CancellationToken Token => _ct;

    /// <summary>Throws OperationCanceledException when cancelled, else reports.</summary>
    public void Report(string stage, long step, long total, string message = "")
    {
        _ct.ThrowIfCancellationRequested();
        _progress?.Report(new OperationProgress(stage, Math.Clamp(step, 0, Math.Max(total, 1)), Math.Max(total, 1), message));
    }

    public void ThrowIfCancellationRequested() => _ct.ThrowIfCancellationRequested();
}
