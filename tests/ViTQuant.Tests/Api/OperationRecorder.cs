// A progress sink for the façade tests that records synchronously (Progress<T> would post to the thread pool).
using ViTQuant.Api;

namespace ViTQuant.Tests.Api;

/// <summary>Records every report in order and optionally reacts to it (to cancel mid-way).</summary>
internal sealed class OperationRecorder(Action<OperationProgress>? onReport = null) : IProgress<OperationProgress>
{
    public List<OperationProgress> Reports { get; } = new();

    public void Report(OperationProgress value)
    {
        Reports.Add(value);
        onReport?.Invoke(value);
    }
}
