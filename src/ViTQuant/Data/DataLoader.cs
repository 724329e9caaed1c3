// Batching with a background producer.
//
// An epoch is a sequence of index batches: 0..Count−1, or a permutation drawn from
// Rng(Mix(seed, epoch)) when shuffling; the last partial batch is kept unless dropLast. A producer
// thread fills up to `prefetch` batches ahead of the consumer; each batch's samples are filled in
// parallel (Parallelism.For over the batch). Per sample: GetImage → augmentation (with its own
// Rng(Mix(seed, epoch, dataset index))) → Normalize. Because every random draw depends only on
// (seed, epoch, index) — never on which thread ran first — an epoch's batches are identical for a
// given seed whatever the timing or thread count.
//
// Batches are freshly allocated (the consumer may keep them, e.g. a calibration set), so memory per
// batch in flight is B·C·H·W floats: 38 MB at B = 64, 3×224×224.
using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using ViTQuant.Kernels;
using ViTQuant.Tensors;

namespace ViTQuant.Data;

/// <summary>One batch: normalised images [B, C, H, W], their labels, and their dataset indices.</summary>
internal sealed record Batch(Tensor Images, int[] Labels, int[] Indices)
{
    /// <summary>Number of images in the batch.</summary>
    public int Size => Labels.Length;
}

/// <summary>Iterates a dataset in (optionally shuffled, augmented) normalised batches, prefetching in the background.</summary>
internal sealed class DataLoader
{
    private readonly IImageDataset _ds;
    private readonly float[] _mean, _std;

    /// <summary>Images per batch.</summary>
    public int BatchSize { get; }
    /// <summary>Whether each epoch visits the images in a seeded random order.</summary>
    public bool Shuffle { get; }
    /// <summary>Whether a last, smaller batch is dropped.</summary>
    public bool DropLast { get; }
    /// <summary>Seed of the shuffle and of the per-sample augmentation.</summary>
    public ulong Seed { get; }

    /// <summary>Batches filled ahead of the consumer by the background producer; 0 fills each batch on the consumer's thread.</summary>
    public int Prefetch { get; }

    /// <summary>Per-sample augmentation applied before normalisation, or null.</summary>
    public Augmentation? Augment { get; }

    /// <summary>The dataset the batches are drawn from.</summary>
    public IImageDataset Dataset => _ds;

    /// <summary>
    /// Creates a loader. <paramref name="mean"/>/<paramref name="std"/> have 1 or Channels entries
    /// (null = no normalisation: mean 0, std 1). <paramref name="seed"/> drives both the shuffle and
    /// the per-sample augmentation randomness. Throws ArgumentException for batchSize &lt; 1,
    /// prefetch &lt; 0, or mean/std of the wrong length or with a non-positive std.
    /// </summary>
    public DataLoader(IImageDataset dataset, int batchSize, bool shuffle = false, ulong seed = 0, Augmentation? augment = null,
        bool dropLast = false, float[]? mean = null, float[]? std = null, int prefetch = 2)
    {
        _ds = dataset ?? throw new ArgumentNullException(nameof(dataset));
        if (batchSize < 1) throw new ArgumentException($"batch size must be at least 1, got {batchSize}");
        if (prefetch < 0) throw new ArgumentException($"prefetch must be non-negative, got {prefetch}");
        _mean = mean ?? new[] { 0f };
        _std = std ?? new[] { 1f };
        Transforms.Normalize(new float[dataset.Channels], dataset.Channels, _mean, _std); // validates lengths and std > 0
        BatchSize = batchSize; Shuffle = shuffle; Seed = seed; Augment = augment; DropLast = dropLast; Prefetch = prefetch;
    }

    /// <summary>Batches per epoch.</summary>
    public int BatchCount => DropLast ? _ds.Count / BatchSize : (_ds.Count + BatchSize - 1) / BatchSize;

    /// <summary>The dataset indices of epoch <paramref name="epoch"/> in visiting order.</summary>
    public int[] EpochOrder(int epoch)
    {
        var order = new int[_ds.Count];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        if (Shuffle) new Rng(Mix(Seed, (ulong)epoch, ulong.MaxValue)) /* no sample index is 2^64−1 */.Shuffle(order.AsSpan());
        return order;
    }

    /// <summary>
    /// The batches of epoch <paramref name="epoch"/>. Enumerate once per call; breaking out early stops
    /// the producer. An exception while loading (e.g. a corrupt image) is rethrown to the consumer.
    /// </summary>
    public IEnumerable<Batch> Epoch(int epoch)
    {
        var order = EpochOrder(epoch);
        int nb = BatchCount;
        if (Prefetch == 0)
        {
            for (int b = 0; b < nb; b++) yield return MakeBatch(order, b, epoch);
            yield break;
        }
        using var queue = new BlockingCollection<Batch>(Prefetch);
        using var cts = new CancellationTokenSource();
        ExceptionDispatchInfo? failure = null;
        var producer = new Thread(() =>
        {
            try
            {
                for (int b = 0; b < nb && !cts.IsCancellationRequested; b++) queue.Add(MakeBatch(order, b, epoch), cts.Token);
            }
            catch (OperationCanceledException) when (cts.IsCancellationRequested) { }
            catch (Exception e) { failure = ExceptionDispatchInfo.Capture(e); }
            finally { queue.CompleteAdding(); }
        }) { IsBackground = true, Name = "vitq-dataloader" };
        producer.Start();
        try
        {
            foreach (var batch in queue.GetConsumingEnumerable()) yield return batch;
            producer.Join();
            failure?.Throw();
        }
        finally
        {
            // Reached on normal completion and when the consumer stops early (enumerator disposed).
            cts.Cancel();
            producer.Join();
        }
    }

    /// <summary>Builds batch <paramref name="b"/> of the given order (used directly when Prefetch is 0).</summary>
    private Batch MakeBatch(int[] order, int b, int epoch)
    {
        int start = b * BatchSize, n = Math.Min(BatchSize, order.Length - start);
        int c = _ds.Channels, h = _ds.Height, w = _ds.Width, size = c * h * w;
        var images = new Tensor(n, c, h, w);
        var labels = new int[n];
        var indices = order.AsSpan(start, n).ToArray();
        var data = images.Data;
        try
        {
            Parallelism.For(0, n, i =>
            {
                int idx = indices[i];
                var img = data.AsSpan(i * size, size);
                _ds.GetImage(idx, img);
                labels[i] = _ds.Label(idx);
                Augment?.Invoke(img, c, h, w, new Rng(Mix(Seed, (ulong)epoch, (ulong)idx)));
                Transforms.Normalize(img, c, _mean, _std);
            });
        }
        catch (AggregateException ae)
        {
            // Surface the first real failure (e.g. the ViTQuantException naming a corrupt file), not the wrapper.
            ExceptionDispatchInfo.Capture(ae.Flatten().InnerExceptions[0]).Throw();
        }
        return new Batch(images, labels, indices);
    }

    /// <summary>A 64-bit hash of (seed, a, b), SplitMix64-style, so nearby inputs give unrelated streams.</summary>
    internal static ulong Mix(ulong seed, ulong a, ulong b)
    {
        ulong h = seed;
        h = Fmix(h ^ Fmix(a + 0x9E3779B97F4A7C15UL));
        h = Fmix(h ^ Fmix(b + 0xD1B54A32D192ED03UL));
        return h;
    }

    private static ulong Fmix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
