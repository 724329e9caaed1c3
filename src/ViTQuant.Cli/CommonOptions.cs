// Flags shared by all verbs (docs/ARCHITECTURE.md: the same names everywhere).
using System.CommandLine;
using ViTQuant.Kernels;

namespace ViTQuant.Cli;

internal static class CommonOptions
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "print stack traces on errors", Recursive = true };

    public static Option<int> Threads() => new("--threads") { Description = "worker threads (default: all cores)", DefaultValueFactory = _ => Environment.ProcessorCount };

    public static Option<bool> Json() => new("--json") { Description = "machine-readable result on stdout (human output goes to stderr)" };

    public static Option<ulong> Seed(ulong def = 0) => new("--seed") { Description = "random seed", DefaultValueFactory = _ => def };

    /// <summary>
    /// Which engine runs a model: our float/fake-quant simulation, our integer runtime, or ONNX Runtime on an
    /// exported file. eval, infer and bench take it.
    /// </summary>
    public static Option<string> Engine() => new Option<string>("--engine")
    {
        Description = "sim (our float / fake-quant simulation), int8 (our integer runtime, quantized models), onnx (ONNX Runtime on a .onnx file)",
        DefaultValueFactory = _ => "sim",
    }.AcceptOnlyFromAmong("sim", "int8", "onnx");

    public static void ApplyThreads(int threads)
    {
        if (threads < 1) throw new ViTQuantException($"--threads must be at least 1, got {threads}");
        Parallelism.Threads = threads;
    }
}
