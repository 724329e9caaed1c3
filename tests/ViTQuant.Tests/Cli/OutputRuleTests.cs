// The overwrite rule (issue 17, item 1), verb by verb as a user runs them (child process): an existing
// output is refused with one "vitq: error:" line naming it, and the old file is byte-for-byte unchanged;
// --overwrite replaces it; stale temporaries of killed writers are removed and reported, live ones and
// unrelated files kept; SIGINT on a resumable job prints the command that resumes it.
using System.Diagnostics;
using System.Runtime.InteropServices;
using ViTQuant.Cli;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;
using ViTQuant.Tests.Models;
using static ViTQuant.Tests.Cli.VitqProcess;

namespace ViTQuant.Tests.Cli;

public class OutputRuleTests
{
    private static readonly byte[] Old = "precious bytes the user already has\n"u8.ToArray();

    /// <summary>Runs <paramref name="args"/> with an existing <paramref name="existing"/>: refused, naming it, file unchanged.</summary>
    private static void AssertRefusedAndUnchanged(string existing, params string[] args)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(existing)!);
        File.WriteAllBytes(existing, Old);
        var stamp = File.GetLastWriteTimeUtc(existing);
        AssertUserError(Run(args), existing, "already exists", "--overwrite");
        Assert.Equal(Old, File.ReadAllBytes(existing));
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(existing));
    }

    private static (string Model, string Input) TinyModelAndInput(TempDir dir)
    {
        string model = dir.File("tiny.safetensors"), input = dir.File("x.safetensors");
        ModelIO.Save(TinyModels.Model(), model);
        var x = new Tensor(2, 1, 8, 8);
        for (int i = 0; i < x.Size; i++) x.Data[i] = (i % 7 - 3) * 0.25f;
        SafeTensorsWriter.Write(input, new[] { ("pixel_values", x) });
        return (model, input);
    }

    [Fact]
    public void Train_RefusesAnExistingOut() { using var d = new TempDir(); AssertRefusedAndUnchanged(d.File("m.safetensors"), "train", "--out", d.File("m.safetensors"), "--epochs", "1"); }

    [Fact]
    public void Quantize_RefusesAnExistingOut() { using var d = new TempDir(); AssertRefusedAndUnchanged(d.File("q.safetensors"), "quantize", "--out", d.File("q.safetensors"), "--wbits", "4"); }

    [Fact]
    public void Synthesize_RefusesAnExistingOut() { using var d = new TempDir(); AssertRefusedAndUnchanged(d.File("s.safetensors"), "synthesize", "--method", "gaussian", "--count", "2", "--out", d.File("s.safetensors")); }

    [Fact]
    public void Analyze_RefusesAnExistingFigure()
    {
        using var d = new TempDir();
        string png = Path.Combine(d.File("an"), "attention_heads.png");
        AssertRefusedAndUnchanged(png, "analyze", "--data", "fashion-mnist", "--out", d.File("an"));
    }

    [Fact]
    public void Compare_RefusesAFolderThatIsNotAComparison()
    {
        using var d = new TempDir();
        string notes = Path.Combine(d.File("mine"), "notes.txt");
        Directory.CreateDirectory(d.File("mine"));
        File.WriteAllBytes(notes, Old);
        AssertUserError(Run("compare", "--out", d.File("mine"), "--bits", "w8a8"), d.File("mine"), "not a vitq compare folder");
        Assert.Equal(Old, File.ReadAllBytes(notes));
        Assert.Equal(new[] { notes }, Directory.GetFileSystemEntries(d.File("mine")));
    }

    [Fact]
    public void Infer_RefusesThenOverwritesAndCleansStaleTemporaries()
    {
        using var d = new TempDir();
        var (model, input) = TinyModelAndInput(d);
        string y = d.File("y.safetensors");
        AssertRefusedAndUnchanged(y, "infer", "--model", model, "--input", input, "--output", y);

        // A temporary of a writer that was killed (its pid no longer runs), one of a live writer (this test
        // process) and a file that only shares the prefix: only the first is ours to delete.
        int deadPid;
        using (var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!) { p.WaitForExit(); deadPid = p.Id; }
        string stale = $"{y}.tmp-{deadPid}-0123456789ab", live = $"{y}.tmp-{Environment.ProcessId}-0123456789ab", other = y + ".tmp-notes";
        foreach (var f in new[] { stale, live, other }) File.WriteAllBytes(f, Old);

        var r = Run("infer", "--model", model, "--input", input, "--output", y, "--overwrite");
        AssertSuccess(r);
        Assert.NotEqual(Old, File.ReadAllBytes(y));
        Assert.True(SafeTensorsFile.Read(y).Contains("logits"));
        Assert.False(File.Exists(stale));
        Assert.True(File.Exists(live));
        Assert.True(File.Exists(other));
        Assert.Contains($"removed {stale}", r.Stderr);
    }

    [Fact]
    public void Infer_NeverWritesOverItsInput()
    {
        using var d = new TempDir();
        var (model, input) = TinyModelAndInput(d);
        var before = File.ReadAllBytes(input);
        AssertUserError(Run("infer", "--model", model, "--input", input, "--output", input, "--overwrite"), "same file as input");
        Assert.Equal(before, File.ReadAllBytes(input));
    }

    [Fact]
    public void ResumeCommand_AddsResumeOnceAndQuotesForTheShell()
    {
        Assert.Equal("vitq train --out 'my model.safetensors' --resume",
            Interrupt.ResumeCommand(new[] { "train", "--out", "my model.safetensors" }, addResume: true));
        Assert.Equal("vitq synthesize --resume --out a.safetensors",
            Interrupt.ResumeCommand(new[] { "synthesize", "--resume", "--out", "a.safetensors" }, addResume: true));
        Assert.Equal("vitq compare --out 'it'\\''s' --bits w4a4", Interrupt.ResumeCommand(new[] { "compare", "--out", "it's", "--bits", "w4a4" }, addResume: false));
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int signal);

    [Fact]
    public void Sigint_OnSynthesis_PrintsTheResumeCommand()
    {
        if (!OperatingSystem.IsLinux()) return;
        // A test run started in the background by a shell without job control ignores SIGINT, and the child
        // inherits that (the runtime keeps an ignored SIGINT ignored): then there is nothing to observe.
        var sigIgn = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:"));
        if (sigIgn != null && (Convert.ToUInt64(sigIgn[7..].Trim(), 16) & (1UL << 1)) != 0) return;
        using var d = new TempDir();
        var (model, _) = TinyModelAndInput(d);
        string set = d.File("set.safetensors");
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h && File.Exists(h) ? h : "dotnet")
        {
            RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
        };
        foreach (var a in new[] { DllPath, "synthesize", "--model", model, "--method", "mimiq", "--count", "4", "--batch", "4",
                     "--iterations", "1000000", "--threads", "1", "--out", set })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = new System.Text.StringBuilder();
        var started = new ManualResetEventSlim();
        p.ErrorDataReceived += (_, e) => { if (e.Data == null) return; lock (err) err.AppendLine(e.Data); if (e.Data.StartsWith("synthesizing")) started.Set(); };
        p.BeginErrorReadLine();
        _ = p.StandardOutput.ReadToEndAsync();
        try
        {
            Assert.True(started.Wait(30_000), "synthesis did not start: " + err);
            Thread.Sleep(300);
            Assert.Equal(0, SysKill(p.Id, 2)); // SIGINT
            Assert.True(p.WaitForExit(30_000), "vitq did not stop on SIGINT");
            p.WaitForExit();
        }
        finally { if (!p.HasExited) p.Kill(true); }
        string text; lock (err) text = err.ToString();
        Assert.Contains($"vitq synthesize --model {model} --method mimiq --count 4 --batch 4 --iterations 1000000 --threads 1 --out {set} --resume", text);
        Assert.False(File.Exists(set));
    }
}
