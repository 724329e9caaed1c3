// Streaming calibration statistics, whatever the number of batches.
//
// A quantizer splits a tensor into groups that share one set of quantization parameters:
//   per tensor   one group;
//   per channel  weights [out, ...]: group = index along dim 0 (runs of `in·…` contiguous values);
//   per token    activations [..., N, C]: group = token position along dim −2 (runs of C values),
//                shared over the batch and the channels.
// All three are "element i belongs to group (i / Inner) mod Groups" (GroupLayout), so every loop in
// the quantizers walks contiguous runs of one group.
//
// Two observers keep the statistics:
//   MinMaxObserver     exact running min and max per group (two floats per group).
//   ReservoirObserver  the observed values per group, for quantiles and the MSE / Lp range searches.
//                      Default (capacity 0 = Exact): EVERY value is kept, so quantiles and search
//                      errors are exact over the whole calibration set, as in the published ADFQ-ViT
//                      code (which takes torch.quantile over the whole calibration batch). Memory is
//                      4 bytes per observed value (QuantizedModel.Calibrate bounds it by calibrating
//                      the blocks in separate passes). A positive capacity is a deliberate option: a
//                      uniform random sample of at most that many values per group (Vitter's
//                      reservoir sampling, Li's "Algorithm L", which skips ahead geometrically instead
//                      of drawing a random number per value); quantiles are then those of the sample
//                      once a group has seen more values than the capacity. Its size is part of the
//                      spec (QuantSpec.SampleSize) and printed with it.
//                      Determinism: the same seed and the same sequence of tensors give the same sample
//                      (each group has its own generator derived from the seed and the group index).
using ViTQuant.Tensors;

namespace ViTQuant.Quantization;

/// <summary>How a tensor's elements split into quantization groups: element i belongs to group (i / Inner) mod Groups.</summary>
internal readonly record struct GroupLayout(int Groups, int Inner)
{
    /// <summary>
    /// The layout of a tensor of this shape under a granularity. Throws ViTQuantException for an empty
    /// tensor, a per-channel tensor of rank 0, or a per-token tensor of rank below 2.
    /// </summary>
    public static GroupLayout For(Granularity granularity, int[] shape, string? what = null)
    {
        int size = Tensor.Numel(shape);
        string name = what ?? "tensor";
        if (size == 0) throw new ViTQuantException($"{name} of shape {Tensor.ShapeString(shape)} is empty and cannot be quantized");
        switch (granularity)
        {
            case Granularity.PerTensor:
                return new GroupLayout(1, size);
            case Granularity.PerChannel:
                if (shape.Length < 1) throw new ViTQuantException($"per-channel quantization of {name} needs rank ≥ 1, got shape {Tensor.ShapeString(shape)}");
                return new GroupLayout(shape[0], size / shape[0]);
            case Granularity.PerToken:
                if (shape.Length < 2) throw new ViTQuantException($"per-token quantization of {name} needs shape [..., N, C], got {Tensor.ShapeString(shape)}");
                return new GroupLayout(shape[^2], shape[^1]);
            default:
                throw new ArgumentOutOfRangeException(nameof(granularity), granularity, null);
        }
    }

    /// <summary>The group of flat element index i.</summary>
    public int GroupOf(int index) => (int)((uint)index / (uint)Inner % (uint)Groups);

    /// <summary>Calls visit(start, length, group) for every contiguous run of one group in a tensor of `size` elements.</summary>
    public void ForEachRun(int size, Action<int, int, int> visit)
    {
        int runs = size / Inner;
        for (int r = 0; r < runs; r++) visit(r * Inner, Inner, r % Groups);
    }
}

/// <summary>Exact running minimum and maximum per group over every observed batch (NaN values are ignored).</summary>
internal sealed class MinMaxObserver
{
    private float[]? _min, _max;

    /// <summary>An observer whose groups follow <paramref name="granularity"/>.</summary>
    public MinMaxObserver(Granularity granularity) => Granularity = granularity;

    /// <summary>How observed tensors split into groups.</summary>
    public Granularity Granularity { get; }

    /// <summary>Number of groups (0 before the first batch).</summary>
    public int Groups => _min?.Length ?? 0;

    /// <summary>Values observed so far, over all groups.</summary>
    public long Count { get; private set; }

    /// <summary>Per-group minimum (+∞ for a group that has seen only NaN).</summary>
    public ReadOnlySpan<float> Min => _min ?? throw new InvalidOperationException("nothing observed yet");

    /// <summary>Per-group maximum (−∞ for a group that has seen only NaN).</summary>
    public ReadOnlySpan<float> Max => _max ?? throw new InvalidOperationException("nothing observed yet");

    /// <summary>Minimum over all groups.</summary>
    public float GlobalMin => Min.ToArray().Min();

    /// <summary>Maximum over all groups.</summary>
    public float GlobalMax => Max.ToArray().Max();

    /// <summary>Folds one batch in. Throws ViTQuantException when its group count differs from earlier batches.</summary>
    public void Observe(Tensor x) => Observe(x.Span, GroupLayout.For(Granularity, x.Shape));

    /// <summary>Folds values laid out as <paramref name="layout"/> describes in.</summary>
    public void Observe(ReadOnlySpan<float> data, GroupLayout layout)
    {
        if (_min == null)
        {
            _min = new float[layout.Groups];
            _max = new float[layout.Groups];
            _min.AsSpan().Fill(float.PositiveInfinity);
            _max.AsSpan().Fill(float.NegativeInfinity);
        }
        else if (_min.Length != layout.Groups)
            throw new ViTQuantException($"observed a tensor with {layout.Groups} {Granularity} groups, earlier batches had {_min.Length}");
        int runs = data.Length / layout.Inner;
        for (int r = 0; r < runs; r++)
        {
            int g = r % layout.Groups;
            float mn = _min[g], mx = _max![g];
            foreach (float v in data.Slice(r * layout.Inner, layout.Inner))
            {
                if (v < mn) mn = v; // comparisons with NaN are false: NaN never becomes an extreme
                if (v > mx) mx = v;
            }
            _min[g] = mn;
            _max[g] = mx;
        }
        Count += data.Length;
    }
}

/// <summary>
/// The observed values per group: all of them (capacity <see cref="Exact"/>, the default) or a uniform
/// random sample of at most <see cref="CapacityPerGroup"/> values (reservoir sampling). While a group
/// has seen no more values than the capacity, its sample is exactly its data (in arrival order).
/// </summary>
internal sealed class ReservoirObserver
{
    /// <summary>Capacity meaning "keep every value" (the largest array a group can hold).</summary>
    public static readonly int Exact = Array.MaxLength;

    private readonly ulong _seed;
    private Reservoir[]? _groups;

    /// <param name="granularity">how tensors split into groups.</param>
    /// <param name="capacityPerGroup">values kept per group; 0 keeps every value (exact statistics).</param>
    /// <param name="seed">seed of the sampling (same seed and same batches give the same sample).</param>
    /// <exception cref="ArgumentOutOfRangeException">when capacityPerGroup is negative.</exception>
    public ReservoirObserver(Granularity granularity, int capacityPerGroup = 0, ulong seed = 0)
    {
        if (capacityPerGroup < 0) throw new ArgumentOutOfRangeException(nameof(capacityPerGroup), "capacity must be positive (0 = every value)");
        Granularity = granularity;
        CapacityPerGroup = capacityPerGroup > 0 ? Math.Min(capacityPerGroup, Exact) : Exact;
        _seed = seed;
    }

    /// <summary>True when every observed value is kept (no sampling).</summary>
    public bool KeepsEverything => CapacityPerGroup == Exact;

    /// <summary>How observed tensors split into groups.</summary>
    public Granularity Granularity { get; }

    /// <summary>Values kept per group (<see cref="Exact"/> when every value is kept).</summary>
    public int CapacityPerGroup { get; }

    /// <summary>Number of groups (0 before the first batch).</summary>
    public int Groups => _groups?.Length ?? 0;

    /// <summary>Values stored over all groups (never more than Groups × CapacityPerGroup).</summary>
    public long StoredCount => _groups?.Sum(r => (long)r.Count) ?? 0;

    /// <summary>Values seen over all groups (stored or not).</summary>
    public long SeenCount => _groups?.Sum(r => r.SeenCount) ?? 0;

    /// <summary>Frees the stored values (after calibration: they can be gigabytes). Observing starts afresh.</summary>
    public void Clear() => _groups = null;

    /// <summary>Values the group has seen (stored or not).</summary>
    public long Seen(int group) => Group(group).SeenCount;

    /// <summary>True while the group's sample holds every value it has seen (quantiles are then exact).</summary>
    public bool IsExact(int group) => Group(group).SeenCount <= CapacityPerGroup;

    /// <summary>A copy of the group's sample (every value in arrival order when nothing was sampled away).</summary>
    public float[] Sample(int group) => Group(group).ToArray();

    /// <summary>
    /// The group's sample as a range search over it needs it: for Percentile, with the order statistics that
    /// RangeSearch.Quantile reads for RangeSearch.Percentiles (both tails) in their sorted places
    /// (<see cref="PlaceQuantiles"/>); a plain copy for the other methods, which score every value in any order.
    /// A full sort of 1.6–3.3 M values cost 0.15–0.3 s per calibrated point of ADFQ-ViT on vit_fmnist.
    /// </summary>
    public float[] SampleFor(RangeMethod method, int group)
    {
        var s = Sample(group);
        if (method == RangeMethod.Percentile) PlaceQuantiles(s, RangeSearch.Percentiles);
        return s;
    }

    /// <summary>
    /// Reorders a so that every index RangeSearch.Quantile reads for the quantiles p and 1 − p (p in
    /// <paramref name="percentiles"/>) holds the value a full sort would put there: the lower tail up to the
    /// highest such index below the middle, and the upper tail from the lowest one above it, are selected
    /// (quickselect) and sorted; the middle stays unordered. Samples with a non-finite sum are sorted whole.
    /// </summary>
    internal static void PlaceQuantiles(float[] a, IReadOnlyList<double> percentiles)
    {
        int n = a.Length;
        int lowEnd = -1, highStart = n; // sort a[0 ..= lowEnd] and a[highStart ..]
        foreach (double p in percentiles)
            foreach (double q in new[] { p, 1 - p })
            {
                int i = (int)Math.Floor(Math.Clamp(q, 0, 1) * (n - 1)); // as Quantile, which reads i and i + 1
                if (i < n / 2) lowEnd = Math.Max(lowEnd, Math.Min(n - 1, i + 1));
                else highStart = Math.Min(highStart, i);
            }
        // A non-finite sum (NaN, infinities, overflow) takes the full sort: the selection assumes NaN-free values.
        if (lowEnd + 1 >= highStart || !float.IsFinite(System.Numerics.Tensors.TensorPrimitives.Sum(a)))
        {
            Array.Sort(a);
            return;
        }
        if (highStart < n)
        {
            Select(a, 0, n - 1, highStart);
            Array.Sort(a, highStart, n - highStart);
        }
        if (lowEnd >= 0)
        {
            Select(a, 0, highStart - 1, lowEnd);
            Array.Sort(a, 0, lowEnd + 1);
        }
    }

    // Quickselect (Hoare partition, median-of-three pivot) on a[lo ..= hi]: afterwards a[k] is the value a sort
    // would put there, nothing before it is larger and nothing after it smaller. NaN-free input.
    private static void Select(float[] a, int lo, int hi, int k)
    {
        while (hi > lo)
        {
            int mid = lo + (hi - lo) / 2;
            float x = a[lo], y = a[mid], z = a[hi];
            float pivot = Math.Max(Math.Min(x, y), Math.Min(Math.Max(x, y), z));
            int i = lo, j = hi;
            while (i <= j)
            {
                while (a[i] < pivot) i++;
                while (a[j] > pivot) j--;
                if (i <= j)
                {
                    (a[i], a[j]) = (a[j], a[i]);
                    i++;
                    j--;
                }
            }
            if (k <= j) hi = j;
            else if (k >= i) lo = i;
            else return;
        }
    }

    /// <summary>A sorted copy of the group's sample.</summary>
    public float[] SortedSample(int group)
    {
        var s = Sample(group);
        Array.Sort(s);
        return s;
    }

    /// <summary>Adds one batch. Throws ViTQuantException when its group count differs from earlier batches.</summary>
    public void Observe(Tensor x) => Observe(x.Span, GroupLayout.For(Granularity, x.Shape));

    /// <summary>Adds values laid out as <paramref name="layout"/> describes.</summary>
    public void Observe(ReadOnlySpan<float> data, GroupLayout layout)
    {
        if (_groups == null)
        {
            _groups = new Reservoir[layout.Groups];
            for (int g = 0; g < _groups.Length; g++)
                _groups[g] = new Reservoir(CapacityPerGroup, new Rng(_seed ^ (0x9E3779B97F4A7C15UL * (ulong)(g + 1))));
        }
        else if (_groups.Length != layout.Groups)
            throw new ViTQuantException($"observed a tensor with {layout.Groups} {Granularity} groups, earlier batches had {_groups.Length}");
        int runs = data.Length / layout.Inner;
        for (int r = 0; r < runs; r++) _groups[r % layout.Groups].Add(data.Slice(r * layout.Inner, layout.Inner));
    }

    private Reservoir Group(int group)
    {
        if (_groups == null) throw new InvalidOperationException("nothing observed yet");
        return _groups[group];
    }

    /// <summary>
    /// One reservoir, Algorithm L (Li 1994): after the first k values, the gap to the next value that
    /// enters is geometric, floor(ln u / ln(1 − W)), where W is the running product of u^(1/k); the
    /// entering value replaces a uniformly chosen slot. This gives every value seen the same
    /// probability k/n of being in the sample, and costs random numbers only for the values taken.
    /// </summary>
    private sealed class Reservoir
    {
        private readonly int _k;
        private readonly Rng _rng;
        private double _w;
        private long _next; // index (in the group's stream) of the next value that enters the sample

        // Exact mode stores the values in chunks that grow with the group up to 2^16 values: no copies
        // while a group grows and at most 2^16 values of slack per group (a doubling array peaks near 3×
        // the data in growth copies and garbage), while small groups (a weight row) stay small.
        private const int ChunkSize = 1 << 16;
        private readonly List<float[]>? _chunks;
        private int _lastFill; // values in the last chunk

        public Reservoir(int k, Rng rng)
        {
            _k = k;
            _rng = rng;
            if (k == Exact) _chunks = new List<float[]>();
            else Buffer = new float[Math.Min(k, 1024)];
        }

        public float[] Buffer { get; private set; } = Array.Empty<float>();

        public float[] ToArray()
        {
            if (_chunks == null) return Buffer.AsSpan(0, Count).ToArray();
            var all = new float[Count];
            int done = 0;
            for (int c = 0; c < _chunks.Count; c++)
            {
                int len = c == _chunks.Count - 1 ? _lastFill : _chunks[c].Length;
                _chunks[c].AsSpan(0, len).CopyTo(all.AsSpan(done));
                done += len;
            }
            return all;
        }
        public int Count { get; private set; }
        public long SeenCount { get; private set; }

        public void Add(ReadOnlySpan<float> run)
        {
            if (_k == Exact && SeenCount + run.Length > _k)
                throw new ViTQuantException($"a calibration group would hold more than {Exact} values; calibrate on fewer images or set a sample size");
            if (_chunks != null)
            {
                for (int i0 = 0; i0 < run.Length;)
                {
                    if (_chunks.Count == 0 || _lastFill == _chunks[^1].Length)
                    {
                        _chunks.Add(new float[Math.Clamp(Math.Max(Count, run.Length - i0), 256, ChunkSize)]);
                        _lastFill = 0;
                    }
                    int len = Math.Min(_chunks[^1].Length - _lastFill, run.Length - i0);
                    run.Slice(i0, len).CopyTo(_chunks[^1].AsSpan(_lastFill));
                    _lastFill += len;
                    i0 += len;
                    Count += len;
                }
                SeenCount += run.Length;
                return;
            }
            int i = 0;
            if (Count < _k)
            {
                int take = Math.Min(_k - Count, run.Length);
                if (Count + take > Buffer.Length)
                {
                    var grown = new float[(int)Math.Min(_k, Math.Max((long)Count + take, 2L * Buffer.Length))];
                    Buffer.AsSpan(0, Count).CopyTo(grown);
                    Buffer = grown;
                }
                run[..take].CopyTo(Buffer.AsSpan(Count));
                Count += take;
                SeenCount += take;
                i = take;
                if (Count == _k)
                {
                    _w = Math.Exp(Math.Log(Uniform()) / _k);
                    _next = SeenCount + Skip();
                }
            }
            while (i < run.Length)
            {
                long gap = _next - SeenCount;
                if (gap >= run.Length - i)
                {
                    SeenCount += run.Length - i;
                    return;
                }
                i += (int)gap;
                Buffer[_rng.NextInt(_k)] = run[i];
                i++;
                SeenCount += gap + 1;
                _w *= Math.Exp(Math.Log(Uniform()) / _k);
                _next = SeenCount + Skip();
            }
        }

        private double Uniform() => 1.0 - _rng.NextDouble(); // (0, 1]: the logarithm is finite

        private long Skip()
        {
            double s = Math.Floor(Math.Log(Uniform()) / double.LogP1(-_w));
            return s < 1e15 ? (long)s : (long)1e15; // W underflowing towards 0 means "practically never"
        }
    }
}
