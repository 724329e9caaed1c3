// Running a synthesis job to a set file, resumably.
//
// The job is ⌈count/batch⌉ independent batches. Batch b, attempt a draws everything from
// Rng(Mix(seed, b, a)), so any batch can be (re)made on its own and a resumed run produces the same
// bytes as an uninterrupted one (same thread count; kernels are deterministic for a given count).
// Each finished batch is written atomically to OUT.shards/batch-00012.safetensors with the settings,
// the model fingerprint and its losses. --resume validates and keeps the shards that exist; without it
// an existing shard folder is an error (it belongs to some other run). When every batch exists, the
// shards are concatenated into OUT atomically and the shard folder is removed. OUT itself is never
// overwritten. A batch whose optimisation yields NaN is redrawn with the next attempt's seed.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>Where a running job is: batch, step within it, attempt, and the last losses.</summary>
internal sealed record SynthesisProgress(int Batch, int BatchCount, int Iteration, int Iterations, int Attempt, SynthesisLosses Losses,
    long StepsDone, long StepsTotal);

/// <summary>
/// Outcome of <see cref="SynthesisRunner.Run"/>. Complete is false when the run stopped early (maxNewBatches);
/// then OutPath does not exist yet and the shards wait for a resume.
/// </summary>
public sealed record SynthesisRunResult(string OutPath, bool Complete, int BatchesMade, int BatchesResumed,
    IReadOnlyList<SyntheticBatchInfo> Batches, double Seconds);

/// <summary>Runs a synthesis job batch by batch into a set file, with atomic shards and validated resume.</summary>
public static class SynthesisRunner
{
    /// <summary>The shard folder of an output path: OUT.shards.</summary>
    public static string ShardDirectory(string outPath) => outPath + ".shards";

    /// <summary>The shard file of batch b.</summary>
    internal static string ShardPath(string outPath, int batch) =>
        Path.Combine(ShardDirectory(outPath), $"batch-{batch.ToString("D5", CultureInfo.InvariantCulture)}.safetensors");

    /// <summary>The generator seed of batch b, attempt a (SplitMix64 finaliser over the three values).</summary>
    internal static ulong BatchSeed(ulong seed, int batch, int attempt)
    {
        ulong z = seed;
        z = Mix(z ^ Mix((ulong)(uint)batch + 0x9E3779B97F4A7C15UL));
        z = Mix(z ^ Mix(((ulong)(uint)attempt << 32) + 0xD1B54A32D192ED03UL));
        return z;
    }

    /// <summary>
    /// Makes the set described by <paramref name="settings"/> for <paramref name="model"/> into
    /// <paramref name="outPath"/> (see file header). <paramref name="maxNewBatches"/> stops after that many
    /// newly made batches (time-boxing; tests use it to simulate an interruption). A custom
    /// <paramref name="synthesizer"/> replaces the one the settings name; with <paramref name="overwrite"/> an
    /// existing set at OUT is replaced (atomically, once the new one is complete). Throws ViTQuantException when
    /// OUT is a folder or exists without <paramref name="overwrite"/>, when a shard folder exists without <paramref name="resume"/>, when a shard is corrupt or
    /// belongs to other settings or another model (naming the shard), or when a batch keeps diverging.
    /// </summary>
    internal static SynthesisRunResult Run(VisionModel model, SynthesisSettings settings, string outPath, bool resume,
        Action<SynthesisProgress>? progress = null, int? maxNewBatches = null, IImageSynthesizer? synthesizer = null, bool overwrite = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(outPath);
        settings = settings.Validated();
        var sw = Stopwatch.StartNew();
        if (Directory.Exists(outPath) || (File.Exists(outPath) && !overwrite))
            throw new ViTQuantException($"{outPath}: already exists; refusing to overwrite it");
        string dir = ShardDirectory(outPath);
        if (Directory.Exists(dir) && !resume)
            throw new ViTQuantException($"{dir}: shards of an earlier run exist; pass --resume to continue it, or delete the folder");
        var synth = synthesizer ?? Synthesis.Create(settings);
        string settingsJson = settings.ToJson(), hash = SyntheticSet.ModelFingerprint(model), cfgJson = model.Config.ToJson();
        int nb = settings.BatchCount;
        long totalSteps = (long)nb * synth.Iterations;
        var infos = new SyntheticBatchInfo[nb];
        int made = 0, resumed = 0;
        for (int b = 0; b < nb; b++)
        {
            int n = Math.Min(settings.BatchSize, settings.Count - b * settings.BatchSize);
            string shard = ShardPath(outPath, b);
            if (resume && File.Exists(shard))
            {
                infos[b] = ReadShard(shard, settingsJson, hash, model.Config, b, n).Info;
                resumed++;
                continue;
            }
            if (maxNewBatches is int max && made >= max)
                return new SynthesisRunResult(outPath, false, made, resumed, infos.Where(i => i != null).ToList(), sw.Elapsed.TotalSeconds);
            var (batch, attempts) = MakeBatch(model, settings, synth, b, n, nb, totalSteps, progress);
            var info = new SyntheticBatchInfo(b, n, attempts, batch.Losses);
            var meta = new Dictionary<string, string>
            {
                [SyntheticSet.FormatKey] = SyntheticSet.ShardFormat,
                [SyntheticSet.SettingsKey] = settingsJson,
                [SyntheticSet.ModelHashKey] = hash,
                [SyntheticSet.ModelConfigKey] = cfgJson,
                [SyntheticSet.BatchKey] = b.ToString(CultureInfo.InvariantCulture),
                [SyntheticSet.AttemptsKey] = attempts.ToString(CultureInfo.InvariantCulture),
                [SyntheticSet.LossesKey] = JsonSerializer.Serialize(info, SyntheticSet.JsonOpts),
            };
            SyntheticSet.WriteFile(shard, batch.Images, batch.Labels, meta);
            infos[b] = info;
            made++;
        }
        Concatenate(model, settings, outPath, settingsJson, hash, cfgJson, nb);
        return new SynthesisRunResult(outPath, true, made, resumed, infos, sw.Elapsed.TotalSeconds);
    }

    private static (SyntheticBatch Batch, int Attempts) MakeBatch(VisionModel model, SynthesisSettings s, IImageSynthesizer synth,
        int b, int n, int nb, long totalSteps, Action<SynthesisProgress>? progress)
    {
        string? lastError = null;
        for (int attempt = 0; attempt < s.MaxAttempts; attempt++)
        {
            var rng = new Rng(BatchSeed(s.Seed, b, attempt));
            long before = (long)b * synth.Iterations;
            try
            {
                var batch = synth.Generate(model, n, rng, (it, losses) =>
                    progress?.Invoke(new SynthesisProgress(b, nb, it, synth.Iterations, attempt, losses, before + it, totalSteps)));
                return (batch, attempt + 1);
            }
            catch (SynthesisDivergedException e)
            {
                lastError = e.Message;
            }
        }
        throw new ViTQuantException($"batch {b}: the optimisation diverged in all {s.MaxAttempts} attempts (last: {lastError})");
    }

    /// <summary>Reads and validates one shard against the running job.</summary>
    private static (Tensor Images, int[] Labels, SyntheticBatchInfo Info) ReadShard(string path, string settingsJson, string hash, IModelConfig cfg, int batch, int count)
    {
        var file = SafeTensorsFile.Read(path); // corrupt bytes → ViTQuantException naming the shard
        string Meta(string key) => file.Metadata.TryGetValue(key, out var v) ? v
            : throw new ViTQuantException($"{path}: shard metadata has no '{key}'");
        if (Meta(SyntheticSet.FormatKey) != SyntheticSet.ShardFormat)
            throw new ViTQuantException($"{path}: not a synthesis shard (format '{Meta(SyntheticSet.FormatKey)}')");
        if (Meta(SyntheticSet.SettingsKey) != settingsJson)
            throw new ViTQuantException($"{path}: made with different settings ({Meta(SyntheticSet.SettingsKey)}); rerun with those settings or delete the shard folder");
        if (Meta(SyntheticSet.ModelHashKey) != hash)
            throw new ViTQuantException($"{path}: made for a different model (weights fingerprint differs); delete the shard folder to start over");
        if (Meta(SyntheticSet.BatchKey) != batch.ToString(CultureInfo.InvariantCulture))
            throw new ViTQuantException($"{path}: holds batch {Meta(SyntheticSet.BatchKey)}, expected {batch}");
        var (images, labels) = SyntheticSet.ReadPayload(file, path, cfg, count);
        SyntheticBatchInfo? info;
        try { info = JsonSerializer.Deserialize<SyntheticBatchInfo>(Meta(SyntheticSet.LossesKey), SyntheticSet.JsonOpts); }
        catch (JsonException e) { throw new ViTQuantException($"{path}: losses are not valid JSON ({e.Message})"); }
        if (info == null || info.Batch != batch || info.Count != count || info.Losses == null)
            throw new ViTQuantException($"{path}: losses record does not describe batch {batch} of {count} images");
        return (images, labels, info);
    }

    private static void Concatenate(VisionModel model, SynthesisSettings s, string outPath, string settingsJson, string hash, string cfgJson, int nb)
    {
        var c = model.Config;
        int per = c.InChans * c.ImageSize * c.ImageSize;
        var images = new Tensor(s.Count, c.InChans, c.ImageSize, c.ImageSize);
        var labels = new int[s.Count];
        var infos = new List<SyntheticBatchInfo>(nb);
        var shards = new List<string>(nb);
        for (int b = 0; b < nb; b++)
        {
            int n = Math.Min(s.BatchSize, s.Count - b * s.BatchSize);
            string shard = ShardPath(outPath, b);
            // Re-read (and re-validate) every shard, fresh or resumed, so both paths write identical bytes.
            var (img, lab, info) = ReadShard(shard, settingsJson, hash, c, b, n);
            img.Span.CopyTo(images.Data.AsSpan(b * s.BatchSize * per, n * per));
            lab.CopyTo(labels, b * s.BatchSize);
            infos.Add(info);
            shards.Add(shard);
        }
        var meta = new Dictionary<string, string>
        {
            [SyntheticSet.FormatKey] = SyntheticSet.Format,
            [SyntheticSet.MethodKey] = s.Method,
            [SyntheticSet.SettingsKey] = settingsJson,
            [SyntheticSet.SeedKey] = s.Seed.ToString(CultureInfo.InvariantCulture),
            [SyntheticSet.ArchitectureKey] = c.Architecture,
            [SyntheticSet.ModelConfigKey] = cfgJson,
            [SyntheticSet.ModelHashKey] = hash,
            [SyntheticSet.BatchLossesKey] = JsonSerializer.Serialize(infos, SyntheticSet.JsonOpts),
        };
        SyntheticSet.WriteFile(outPath, images, labels, meta);
        RemoveShards(ShardDirectory(outPath), shards);
    }

    /// <summary>Deletes our shard files (and temp files a crash left) and the folder if nothing else is in it.</summary>
    private static void RemoveShards(string dir, List<string> shards)
    {
        try
        {
            foreach (var f in shards) File.Delete(f);
            foreach (var f in Directory.EnumerateFiles(dir, "batch-*.safetensors.tmp-*")) File.Delete(f);
            if (!Directory.EnumerateFileSystemEntries(dir).Any()) Directory.Delete(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The set is complete; a leftover shard folder is untidy, not wrong.
        }
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
