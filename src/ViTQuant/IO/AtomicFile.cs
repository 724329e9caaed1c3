// Atomic file writes: every output goes to "<path>.tmp-<random>" in the destination's directory, is
// flushed to the device, and is then renamed over the destination. rename(2) within one directory is
// atomic on POSIX file systems, so a reader sees either the old file or the complete new one, never a
// half-written file — even when the writer throws or the process is killed mid-write. The temp file
// lives in the same directory (not /tmp) because a rename across file systems is a copy, not atomic.
//
// Limits: the directory entry itself is not fsync'ed (.NET cannot open a directory for fsync), so after
// a power loss the rename may be lost while the data is intact; a killed process (SIGKILL, power loss)
// leaves its "<name>.tmp-<pid>-<random>" file behind. The writer's process id in the name lets the next
// run of the same output tell such a leftover from the temporary of a live concurrent writer
// (RemoveStaleTemporaries). EnsureNotSameFile resolves symlinks but cannot see hard links.
using System.Security.Cryptography;
using System.Text;

namespace ViTQuant.IO;

/// <summary>Crash-safe file output (temp file + flush + rename) and the "never overwrite an input" check.</summary>
public static class AtomicFile
{
    /// <summary>
    /// Writes a file atomically: <paramref name="write"/> fills a temporary file next to
    /// <paramref name="path"/>, which is flushed to disk and renamed over the destination. Missing parent
    /// directories are created. When <paramref name="path"/> is a symlink, its final target is replaced and
    /// the link kept. If <paramref name="write"/> throws, the temporary file is deleted, the destination is
    /// left untouched and the exception propagates unchanged (except I/O errors, which become
    /// ViTQuantException so the CLI reports them as one line naming the file).
    /// </summary>
    /// <exception cref="ViTQuantException">The path is a directory, or the file system refused to create,
    /// write or rename the file (permissions, disk full, ...); the message names the path.</exception>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(write);
        string dest = ResolveDestination(path);
        if (Directory.Exists(dest)) throw new ViTQuantException($"{path}: is a directory, cannot write a file there");
        string dir = Path.GetDirectoryName(dest) ?? throw new ViTQuantException($"{path}: has no parent directory");
        string tmp = TemporaryName(dest);
        try
        {
            Directory.CreateDirectory(dir);
            // CreateNew: never reuse (and so never clobber) a file that happens to carry the temp name.
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, dest, overwrite: true);
        }
        catch (Exception e)
        {
            TryDelete(tmp);
            if (e is IOException or UnauthorizedAccessException)
                throw new ViTQuantException($"{path}: cannot write file: {e.Message}", e);
            throw;
        }
    }

    /// <summary>Atomically writes <paramref name="text"/> as UTF-8 (no byte-order mark). Throws as <see cref="Write"/>.</summary>
    public static void WriteAllText(string path, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text);
        Write(path, s => s.Write(bytes));
    }

    /// <summary>Atomically writes <paramref name="bytes"/>. Throws as <see cref="Write"/>.</summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray(); // a span cannot be captured by the callback
        Write(path, s => s.Write(copy));
    }

    /// <summary>
    /// Refuses to let an output overwrite an input: both paths are made absolute and every symlink on the
    /// way (directories and the file itself) is resolved; if they name the same file this throws.
    /// Neither file needs to exist.
    /// </summary>
    /// <exception cref="ViTQuantException">Both paths resolve to the same file; the message names both.</exception>
    public static void EnsureNotSameFile(string input, string output)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        string a = ResolvePath(input), b = ResolvePath(output);
        // Windows and default macOS volumes compare names case-insensitively.
        var cmp = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        if (string.Equals(a, b, cmp))
            throw new ViTQuantException($"output {output} is the same file as input {input} ({a}); refusing to overwrite an input");
    }

    /// <summary>
    /// The absolute path with every symlink component resolved, like realpath(3) except that trailing
    /// components need not exist. ".." is applied after resolving the link before it, as the kernel does
    /// (so "link/.." is the parent of the link's target, not the link's directory). Chains of more than
    /// 40 links are treated as loops and left unresolved.
    /// </summary>
    internal static string ResolvePath(string path)
    {
        // Not Path.GetFullPath: it would collapse "link/.." lexically, which is wrong when link is a symlink.
        string full = Path.IsPathFullyQualified(path) ? path : Path.Combine(Environment.CurrentDirectory, path);
        if (!Path.IsPathFullyQualified(full)) full = Path.GetFullPath(path); // Windows drive-relative forms
        string current = Path.GetPathRoot(full)!;
        var pending = new Stack<string>();
        PushComponents(pending, full[current.Length..]);
        int hops = 0;
        while (pending.Count > 0)
        {
            string part = pending.Pop();
            if (part == ".") continue;
            if (part == "..") { current = Path.GetDirectoryName(current) ?? current; continue; }
            string next = Path.Combine(current, part);
            string? target = hops < 40 ? LinkTarget(next) : null;
            if (target == null) { current = next; continue; }
            hops++;
            // Walk the target's components in place of the link: a relative target continues from the
            // link's directory, an absolute one restarts at its root; either may contain links itself.
            if (Path.IsPathRooted(target))
            {
                string t = Path.IsPathFullyQualified(target) ? target : Path.GetFullPath(target);
                current = Path.GetPathRoot(t)!;
                PushComponents(pending, t[current.Length..]);
            }
            else PushComponents(pending, target);
        }
        return current;
    }

    private static void PushComponents(Stack<string> pending, string relative)
    {
        var parts = relative.Split(new[] { Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar }, StringSplitOptions.RemoveEmptyEntries);
        for (int i = parts.Length - 1; i >= 0; i--) pending.Push(parts[i]);
    }

    private static string? LinkTarget(string path)
    {
        // readlink(2) on Unix: null for a regular file, a directory, or a path that does not exist.
        try { return new FileInfo(path).LinkTarget; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    // A symlinked destination keeps its link: we replace what it points to.
    private static string ResolveDestination(string path)
    {
        string full = Path.GetFullPath(path);
        try
        {
            var fi = new FileInfo(full);
            if (fi.LinkTarget != null) return ResolvePath(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return full;
    }

    /// <summary>The temporary file name used for <paramref name="dest"/>: "dest.tmp-PID-RANDOM".</summary>
    internal static string TemporaryName(string dest) =>
        $"{dest}{TempMarker}{Environment.ProcessId}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}";

    private const string TempMarker = ".tmp-";

    /// <summary>
    /// Deletes the temporaries that killed writers of <paramref name="path"/> left beside it
    /// ("NAME.tmp-PID-RANDOM" from a process that no longer runs, or a legacy "NAME.tmp-RANDOM" older than
    /// <paramref name="legacyMinAge"/>, default one hour). Only files of exactly this output's name pattern are
    /// considered; a temporary whose writer is still running (another process, or this one) is kept. Returns
    /// the paths removed; files that cannot be deleted are skipped.
    /// </summary>
    public static IReadOnlyList<string> RemoveStaleTemporaries(string path, TimeSpan? legacyMinAge = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string dest = ResolveDestination(path);
        string? dir = Path.GetDirectoryName(dest);
        var removed = new List<string>();
        if (dir == null || !Directory.Exists(dir)) return removed;
        string prefix = Path.GetFileName(dest) + TempMarker;
        var minAge = legacyMinAge ?? TimeSpan.FromHours(1);
        IEnumerable<string> candidates;
        try { candidates = Directory.EnumerateFiles(dir).Where(f => Path.GetFileName(f).StartsWith(prefix, StringComparison.Ordinal)).ToList(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return removed; }
        foreach (var f in candidates)
        {
            string rest = Path.GetFileName(f)[prefix.Length..];
            bool stale;
            int dash = rest.IndexOf('-');
            if (dash > 0 && int.TryParse(rest[..dash], out int pid) && IsHex(rest[(dash + 1)..], 12))
                stale = !ProcessIsRunning(pid);
            else if (IsHex(rest, 12)) // written before temporaries carried the writer's pid
                stale = DateTime.UtcNow - File.GetLastWriteTimeUtc(f) >= minAge;
            else continue; // some other file that merely starts with the same name: not ours to delete
            if (!stale) continue;
            try { File.Delete(f); removed.Add(f); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return removed;
    }

    private static bool IsHex(string s, int length) => s.Length == length && s.All(char.IsAsciiHexDigitLower);

    // A reused pid keeps a leftover alive until that process ends: erring towards keeping a file is safe.
    private static bool ProcessIsRunning(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        if (OperatingSystem.IsLinux()) return Directory.Exists($"/proc/{pid}");
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return false; }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
