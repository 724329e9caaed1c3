// Runs the built `vitq` command line as a child process (`dotnet vitq.dll …`), the way a user does,
// with a timeout, capturing exit code, stdout and stderr. The test project references the CLI
// project, so vitq.dll sits next to the test assembly.
using System.Diagnostics;

namespace ViTQuant.Tests.Cli;

internal sealed record VitqResult(int ExitCode, string Stdout, string Stderr, string CommandLine)
{
    /// <summary>Lines written to stderr (trailing newline dropped).</summary>
    public string[] StderrLines => Stderr.TrimEnd('\r', '\n').Split('\n');

    public override string ToString() => $"`{CommandLine}` exited {ExitCode}\n--- stdout:\n{Stdout}\n--- stderr:\n{Stderr}";
}

internal static class VitqProcess
{
    public static string DllPath => Path.Combine(AppContext.BaseDirectory, "vitq.dll");

    /// <summary>The dotnet host running this test (set by the SDK), else the one on PATH.</summary>
    private static string DotnetHost => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } p && File.Exists(p) ? p : "dotnet";

    /// <summary>
    /// Runs vitq with <paramref name="args"/>; <paramref name="env"/> entries override (null: remove)
    /// environment variables. Kills the process tree and fails the test after <paramref name="timeoutSeconds"/>.
    /// </summary>
    public static VitqResult Run(string[] args, IReadOnlyDictionary<string, string?>? env = null, int timeoutSeconds = 60, string? workingDirectory = null)
    {
        Assert.True(File.Exists(DllPath), $"{DllPath} not found; the test project must reference ViTQuant.Cli");
        var psi = new ProcessStartInfo(DotnetHost)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (workingDirectory != null) psi.WorkingDirectory = workingDirectory;
        psi.ArgumentList.Add(DllPath);
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env != null)
            foreach (var (k, v) in env)
                if (v == null) psi.Environment.Remove(k); else psi.Environment[k] = v;
        string cmdLine = "vitq " + string.Join(' ', args);
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        // Read both pipes concurrently: a child blocked on a full stderr pipe would never exit.
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSeconds * 1000))
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            Assert.Fail($"`{cmdLine}` did not finish within {timeoutSeconds} s");
        }
        p.WaitForExit(); // drains the async readers
        return new VitqResult(p.ExitCode, stdout.Result, stderr.Result, cmdLine);
    }

    public static VitqResult Run(params string[] args) => Run(args, null);

    /// <summary>Asserts exit code 2, a clean stdout and exactly one stderr line "vitq: error: …" containing every fragment.</summary>
    public static string AssertUserError(VitqResult r, params string[] fragments)
    {
        Assert.True(r.ExitCode == 2, $"expected exit code 2: {r}");
        Assert.True(r.Stdout.Length == 0, $"stdout must stay empty on errors: {r}");
        Assert.True(r.StderrLines.Length == 1, $"expected one stderr line: {r}");
        string line = r.StderrLines[0];
        Assert.StartsWith("vitq: error: ", line);
        foreach (var f in fragments) Assert.True(line.Contains(f, StringComparison.Ordinal), $"'{f}' not in: {line}");
        return line;
    }

    public static void AssertSuccess(VitqResult r) => Assert.True(r.ExitCode == 0, $"expected success: {r}");
}
