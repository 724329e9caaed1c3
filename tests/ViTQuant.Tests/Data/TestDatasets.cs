using ViTQuant.Data;

namespace ViTQuant.Tests.Data;

/// <summary>
/// A synthetic dataset for loader/transform tests: pixel k of image i is value(i, k), label i % classes.
/// Optionally spins for an index-dependent time (to scramble thread timing without blocking pool threads) or fails at one index.
/// </summary>
internal sealed class FunctionDataset : IImageDataset
{
    private readonly Func<int, int, float> _value;
    private readonly int _classes;

    public FunctionDataset(int count, int c, int h, int w, Func<int, int, float> value, int classes = 10)
    {
        Count = count; Channels = c; Height = h; Width = w; _value = value; _classes = classes;
    }

    /// <summary>When set, GetImage(i) busy-waits Jitter(i) spin iterations first.</summary>
    public Func<int, int>? Jitter { get; init; }

    /// <summary>When set, GetImage of this index throws a ViTQuantException.</summary>
    public int FailAt { get; init; } = -1;

    public int Count { get; }
    public int Channels { get; }
    public int Height { get; }
    public int Width { get; }
    public int NumClasses => _classes;
    public IReadOnlyList<string> ClassNames => Enumerable.Range(0, _classes).Select(i => $"class{i}").ToArray();
    public int Label(int index) => index % _classes;

    public void GetImage(int index, Span<float> dst)
    {
        this.CheckGetImage(index, dst.Length);
        if (index == FailAt) throw new ViTQuantException($"synthetic image {index} is corrupt");
        if (Jitter != null) Thread.SpinWait(Jitter(index));
        for (int k = 0; k < dst.Length; k++) dst[k] = _value(index, k);
    }
}
