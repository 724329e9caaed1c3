// vitq: the ViTQuant command line. One file per verb; this file wires them and owns error handling:
// user errors (ViTQuantException, bad flags) print one line and exit 2; anything else is a bug and
// prints one line too (the stack trace only with --verbose), exit 1.
using System.CommandLine;
using ViTQuant;
using ViTQuant.Cli;

var root = new RootCommand("ViTQuant: low-bit Vision Transformers (MimiQ, ADFQ-ViT and baselines)");
root.Options.Add(CommonOptions.Verbose);
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(InferCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(SynthesizeCommand.Create());
root.Subcommands.Add(AnalyzeCommand.Create());

return Cli.Run(root, args);

namespace ViTQuant.Cli
{
    internal static class Cli
    {
        public static int Run(RootCommand root, string[] args)
        {
            var parse = root.Parse(args);
            bool verbose = args.Contains("--verbose");
            try
            {
                return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
            }
            catch (Exception e)
            {
                var inner = e is AggregateException { InnerExceptions.Count: 1 } ae ? ae.InnerException! : e;
                if (inner is ViTQuantException or ArgumentException or IOException or UnauthorizedAccessException or FormatException)
                {
                    Console.Error.WriteLine($"vitq: error: {inner.Message}");
                    if (verbose) Console.Error.WriteLine(inner);
                    return 2;
                }
                Console.Error.WriteLine($"vitq: internal error: {inner.GetType().Name}: {inner.Message}");
                if (verbose) Console.Error.WriteLine(inner); else Console.Error.WriteLine("(run with --verbose for the stack trace)");
                return 1;
            }
        }
    }
}
