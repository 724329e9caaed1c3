using System.Text;
using ViTQuant.IO;

namespace ViTQuant.Tests.IO;

/// <summary>A fresh directory under the system temp folder, deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "vitq-io-" + Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public string File(params string[] parts) => System.IO.Path.Combine(new[] { Path }.Concat(parts).ToArray());

    /// <summary>Leftover temporary files anywhere below the directory.</summary>
    public string[] TempFiles() => Directory.GetFiles(Path, "*.tmp-*", SearchOption.AllDirectories);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

public class AtomicFileTests
{
    [Fact]
    public void WriteCreatesParentDirectoriesAndLeavesNoTemp()
    {
        using var dir = new TempDir();
        string path = dir.File("a", "b", "out.bin");
        AtomicFile.Write(path, s => s.Write(new byte[] { 1, 2, 3 }));
        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(path));
        Assert.Empty(dir.TempFiles());
    }

    [Fact]
    public void WriteReplacesExistingFile()
    {
        using var dir = new TempDir();
        string path = dir.File("f.txt");
        File.WriteAllText(path, "old content that is longer");
        AtomicFile.WriteAllText(path, "new");
        Assert.Equal("new", File.ReadAllText(path));
        Assert.Empty(dir.TempFiles());
    }

    [Fact]
    public void ThrowingWriterLeavesOldFileIntactAndNoTemp()
    {
        using var dir = new TempDir();
        string path = dir.File("model.safetensors");
        File.WriteAllBytes(path, new byte[] { 9, 8, 7 });
        string? tempSeen = null;
        var ex = Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s =>
        {
            s.Write(new byte[100_000]); // partially written output must never reach the destination
            s.Flush();
            tempSeen = ((FileStream)s).Name;
            throw new InvalidOperationException("writer failed");
        }));
        Assert.Equal("writer failed", ex.Message);
        Assert.Equal(new byte[] { 9, 8, 7 }, File.ReadAllBytes(path));
        Assert.NotNull(tempSeen);
        Assert.StartsWith(path + ".tmp-", tempSeen);
        Assert.False(File.Exists(tempSeen));
        Assert.Empty(dir.TempFiles());
    }

    [Fact]
    public void ThrowingWriterDoesNotCreateDestination()
    {
        using var dir = new TempDir();
        string path = dir.File("new.bin");
        Assert.Throws<FormatException>(() => AtomicFile.Write(path, _ => throw new FormatException()));
        Assert.False(File.Exists(path));
        Assert.Empty(dir.TempFiles());
    }

    [Fact]
    public void DirectoryDestinationIsAUserError()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("d"));
        var ex = Assert.Throws<ViTQuantException>(() => AtomicFile.WriteAllBytes(dir.File("d"), new byte[] { 1 }));
        Assert.Contains(dir.File("d"), ex.Message);
        Assert.Contains("directory", ex.Message);
    }

    [Fact]
    public void WriteHelpersWriteExactBytes()
    {
        using var dir = new TempDir();
        AtomicFile.WriteAllText(dir.File("t.txt"), "héllo\n");
        Assert.Equal(Encoding.UTF8.GetBytes("héllo\n"), File.ReadAllBytes(dir.File("t.txt"))); // no BOM
        AtomicFile.WriteAllBytes(dir.File("b.bin"), new byte[] { 0, 255, 10 });
        Assert.Equal(new byte[] { 0, 255, 10 }, File.ReadAllBytes(dir.File("b.bin")));
    }

    [Fact]
    public void SymlinkDestinationKeepsLinkAndReplacesTarget()
    {
        if (OperatingSystem.IsWindows()) return; // creating symlinks needs privileges there
        using var dir = new TempDir();
        File.WriteAllText(dir.File("real.txt"), "old");
        File.CreateSymbolicLink(dir.File("link.txt"), "real.txt");
        AtomicFile.WriteAllText(dir.File("link.txt"), "new");
        Assert.NotNull(new FileInfo(dir.File("link.txt")).LinkTarget);
        Assert.Equal("new", File.ReadAllText(dir.File("real.txt")));
        Assert.Empty(dir.TempFiles());
    }

    [Fact]
    public void SamePathWithDifferentSpellingsIsRejected()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("sub"));
        string input = dir.File("in.bin");
        File.WriteAllBytes(input, new byte[] { 1 });

        var spellings = new[]
        {
            input,
            dir.File("sub", "..", "in.bin"),
            dir.File(".", "sub", ".", "..", "in.bin"),
            dir.Path + "//in.bin",
            Path.GetRelativePath(Environment.CurrentDirectory, input),
        };
        foreach (var output in spellings)
        {
            var ex = Assert.Throws<ViTQuantException>(() => AtomicFile.EnsureNotSameFile(input, output));
            Assert.Contains(output, ex.Message);
            Assert.Contains("overwrite an input", ex.Message);
        }
        // A relative input against an absolute output, too.
        Assert.Throws<ViTQuantException>(() => AtomicFile.EnsureNotSameFile(Path.GetRelativePath(Environment.CurrentDirectory, input), input));
    }

    [Fact]
    public void SymlinkedFileAndDirectoryAreResolved()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("real"));
        string input = dir.File("real", "w.safetensors");
        File.WriteAllBytes(input, new byte[] { 1 });
        File.CreateSymbolicLink(dir.File("alias.safetensors"), input);
        Directory.CreateSymbolicLink(dir.File("dirlink"), "real");
        Directory.CreateSymbolicLink(dir.File("chain"), "dirlink"); // link to a link

        Assert.Throws<ViTQuantException>(() => AtomicFile.EnsureNotSameFile(input, dir.File("alias.safetensors")));
        Assert.Throws<ViTQuantException>(() => AtomicFile.EnsureNotSameFile(input, dir.File("dirlink", "w.safetensors")));
        Assert.Throws<ViTQuantException>(() => AtomicFile.EnsureNotSameFile(dir.File("chain", "w.safetensors"), dir.File("alias.safetensors")));
    }

    [Fact]
    public void DotDotAfterSymlinkFollowsTheTarget()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("a", "b"));
        string input = dir.File("a", "b", "w.bin");
        File.WriteAllBytes(input, new byte[] { 1 });
        Directory.CreateSymbolicLink(dir.File("l"), Path.Combine("a", "b"));
        // The kernel resolves l/.. to a (the target's parent), so l/../b/w.bin is the input; a lexical
        // normaliser would say dir/b/w.bin and let the input be overwritten.
        Assert.Equal(AtomicFile.ResolvePath(input), AtomicFile.ResolvePath(dir.File("l", "..", "b", "w.bin")));
        Assert.Throws<ViTQuantException>(() => AtomicFile.EnsureNotSameFile(input, dir.File("l", "..", "b", "w.bin")));
    }

    [Fact]
    public void DifferentOrMissingFilesAreAccepted()
    {
        using var dir = new TempDir();
        string input = dir.File("in.bin");
        File.WriteAllBytes(input, new byte[] { 1 });
        AtomicFile.EnsureNotSameFile(input, dir.File("out.bin"));
        AtomicFile.EnsureNotSameFile(input, dir.File("in.bin.q"));
        AtomicFile.EnsureNotSameFile(input, dir.File("missing", "in.bin"));
        if (!OperatingSystem.IsWindows() && !OperatingSystem.IsMacOS())
            AtomicFile.EnsureNotSameFile(input, dir.File("IN.bin")); // case-sensitive file systems
    }

    [Fact]
    public void SymlinkLoopDoesNotHang()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        File.CreateSymbolicLink(dir.File("x"), "y");
        File.CreateSymbolicLink(dir.File("y"), "x");
        AtomicFile.EnsureNotSameFile(dir.File("x"), dir.File("z"));
        Assert.NotNull(AtomicFile.ResolvePath(dir.File("x")));
    }

    [Fact]
    public void TemporaryNameCarriesThePid_AndStaleOnesOfThisOutputOnlyAreRemoved()
    {
        using var dir = new TempDir();
        string path = dir.File("out.bin");
        Assert.Matches($"^{System.Text.RegularExpressions.Regex.Escape(path)}\\.tmp-{Environment.ProcessId}-[0-9a-f]{{12}}$", AtomicFile.TemporaryName(path));
        string legacyOld = path + ".tmp-00112233aabb", legacyNew = path + ".tmp-445566778899", live = AtomicFile.TemporaryName(path);
        string otherOutput = dir.File("out.bin2.tmp-1-0123456789ab"), deadPidOfOther = dir.File("other.bin.tmp-999999999-0123456789ab");
        foreach (var f in new[] { legacyOld, legacyNew, live, otherOutput, deadPidOfOther }) File.WriteAllBytes(f, new byte[] { 1 });
        File.SetLastWriteTimeUtc(legacyOld, DateTime.UtcNow.AddHours(-2));
        // pid 999999999 is above Linux's pid_max (4194304), so it names no running process
        string deadPid = path + ".tmp-999999999-0123456789ab";
        File.WriteAllBytes(deadPid, new byte[] { 1 });

        var removed = AtomicFile.RemoveStaleTemporaries(path);
        Assert.Equal(new[] { deadPid, legacyOld }.Order(), removed.Order());
        foreach (var kept in new[] { legacyNew, live, otherOutput, deadPidOfOther }) Assert.True(File.Exists(kept), kept);
        Assert.Empty(AtomicFile.RemoveStaleTemporaries(dir.File("missing", "x.bin")));
    }
}
