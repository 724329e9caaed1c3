// Ctrl-C (SIGINT) on a resumable job: before the process ends, print the exact command that continues
// it, so the user does not have to reconstruct a long command line (or guess that --resume exists).
// The work itself needs no handler: every finished step is already on disk (epoch checkpoints, shards,
// cells, rows), and the default SIGINT action ends the process as before.
using System.Text;

namespace ViTQuant.Cli;

internal static class Interrupt
{
    private static readonly object Lock = new();
    private static string[] _args = Array.Empty<string>();
    private static string? _resumeCommand;
    private static bool _hooked;

    /// <summary>The command line of this invocation (set once by Cli.Run).</summary>
    public static void SetArguments(string[] args) => _args = (string[])args.Clone();

    /// <summary>The command that resumes this invocation: its own arguments, plus --resume where the verb needs it.</summary>
    public static string ResumeCommand(IReadOnlyList<string> args, bool addResume)
    {
        var parts = args.ToList();
        if (addResume && !parts.Contains("--resume")) parts.Add("--resume");
        return "vitq " + string.Join(' ', parts.Select(ShellQuote));
    }

    /// <summary>From now on, SIGINT prints "vitq: interrupted; resume with: …" on stderr before the process ends.</summary>
    public static void Arm(bool addResume)
    {
        lock (Lock)
        {
            _resumeCommand = ResumeCommand(_args, addResume);
            if (_hooked) return;
            _hooked = true;
            Console.CancelKeyPress += (_, _) =>
            {
                string? cmd;
                lock (Lock) cmd = _resumeCommand;
                if (cmd != null) Console.Error.WriteLine($"\nvitq: interrupted; finished steps are kept, resume with:\n  {cmd}");
            };
        }
    }

    /// <summary>POSIX-shell quoting: plain words as they are, anything else in single quotes.</summary>
    public static string ShellQuote(string s)
    {
        if (s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,+@%".Contains(c))) return s;
        var b = new StringBuilder("'");
        foreach (char c in s) b.Append(c == '\'' ? "'\\''" : c.ToString());
        return b.Append('\'').ToString();
    }
}
