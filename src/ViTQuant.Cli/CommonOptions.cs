// Flags shared by all verbs (DESIGN.md: the same names everywhere).
using System.CommandLine;
using ViTQuant.Kernels;

namespace ViTQuant.Cli;

internal static class CommonOptions
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "print stack traces on errors", Recursive = true };

    public static Option<int> Threads() => new("--threads") { Description = "worker threads (default: all cores)", DefaultValueFactory = _ => Environment.ProcessorCount };

    public static Option<bool> Json() => new("--json") { Description = "machine-readable result on stdout (human output goes to stderr)" };

    public static Option<ulong> Seed(ulong def = 0) => new("--seed") { Description = "random seed", DefaultValueFactory = _ => def };

    public static void ApplyThreads(int threads)
    {
        if (threads < 1) throw new ViTQuantException($"--threads must be at least 1, got {threads}");
        Parallelism.Threads = threads;
    }
}
