// The one overwrite rule of every verb that writes a file: an existing output is refused with one
// "vitq: error:" line naming it unless --overwrite is given; an output never replaces an input; and the
// temporaries a killed earlier run of the same output left beside it ("NAME.tmp-PID-RANDOM", see
// AtomicFile) are removed, with a line saying so. Resume state (train/quantize OUT.resume.safetensors,
// synthesize OUT.shards, compare and demo work folders) keeps its own --resume rule.
using System.CommandLine;
using ViTQuant.IO;

namespace ViTQuant.Cli;

/// <summary>Checks an output path before a verb does any work, so a refusal costs nothing and changes nothing.</summary>
internal static class OutputGuard
{
    /// <summary>The shared <c>--overwrite</c> flag.</summary>
    public static Option<bool> OverwriteOption() => new("--overwrite") { Description = "replace the output if it already exists (default: refuse)" };

    /// <summary>
    /// Validates one output file before any work: <paramref name="path"/> must not be one of
    /// <paramref name="inputs"/> (symlinks resolved), must not be a directory, and must not exist unless
    /// <paramref name="overwrite"/>. Then removes stale temporaries of this output and reports them on stderr.
    /// </summary>
    /// <param name="flag">The option that named the output (e.g. "--out"), for the message.</param>
    /// <exception cref="ViTQuantException">The output is an input, a directory, or exists without --overwrite.</exception>
    public static void CheckFile(string path, bool overwrite, string flag, params string?[] inputs)
    {
        ArgumentNullException.ThrowIfNull(path);
        foreach (var input in inputs)
            if (input != null) AtomicFile.EnsureNotSameFile(input, path);
        if (Directory.Exists(path)) throw new ViTQuantException($"{flag} {path} is a folder; give a file name");
        if (File.Exists(path) && !overwrite)
            throw new ViTQuantException($"{flag} {path} already exists; pass --overwrite to replace it, or choose another path");
        RemoveStale(path);
    }

    /// <summary>
    /// For a work folder whose files are written one by one (compare cells, demo rows): removes the stale
    /// temporaries of every output in <paramref name="dir"/> (not recursive), and says so on stderr.
    /// </summary>
    public static void RemoveStaleIn(string dir)
    {
        if (!Directory.Exists(dir)) return;
        var outputs = Directory.EnumerateFiles(dir)
            .Select(f => (Path: f, At: Path.GetFileName(f).IndexOf(".tmp-", StringComparison.Ordinal)))
            .Where(x => x.At > 0)
            .Select(x => Path.Combine(dir, Path.GetFileName(x.Path)[..x.At]))
            .Distinct().ToList();
        foreach (var o in outputs) RemoveStale(o);
    }

    /// <summary>Removes the temporaries killed writers of <paramref name="path"/> left, and says so on stderr.</summary>
    public static void RemoveStale(string path)
    {
        foreach (var f in AtomicFile.RemoveStaleTemporaries(path))
            Console.Error.WriteLine($"removed {f}: the unfinished temporary of a run that was killed while writing {path}");
    }
}
