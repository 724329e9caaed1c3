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
root.Subcommands.Add(QuantizeCommand.Create());
root.Subcommands.Add(ExportCommand.Create());
root.Subcommands.Add(SynthesizeCommand.Create());
root.Subcommands.Add(AnalyzeCommand.Create());
root.Subcommands.Add(CompareCommand.Create());
root.Subcommands.Add(DemoCommand.Create());

return Cli.Run(root, args);

namespace ViTQuant.Cli
{
    internal static class Cli
    {
        public static int Run(RootCommand root, string[] args)
        {
            Interrupt.SetArguments(args);
            var parse = root.Parse(args);
            bool verbose = args.Contains("--verbose");
            // System.CommandLine's own handler would print every parse error plus the full help text
            // and exit 1; a user's typo is a user error like any other: one line, exit 2.
            if (parse.Errors.Count > 0)
            {
                var cmd = parse.CommandResult.Command;
                string help = ReferenceEquals(cmd, root) ? "vitq --help" : $"vitq {cmd.Name} --help";
                var msgs = parse.Errors.Select(e => PlainParseError(e.Message.ReplaceLineEndings(" ").Trim().TrimEnd('.')));
                Console.Error.WriteLine($"vitq: error: {string.Join("; ", msgs)} (see '{help}')");
                return 2;
            }
            try
            {
                return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
            }
            catch (Exception e)
            {
                var inner = e is AggregateException { InnerExceptions.Count: 1 } ae ? ae.InnerException! : e;
                if (inner is ViTQuantException or ArgumentException or IOException or UnauthorizedAccessException or FormatException)
                {
                    Console.Error.WriteLine($"vitq: error: {OneLine(inner.Message)}");
                    if (verbose) Console.Error.WriteLine(inner);
                    return 2;
                }
                Console.Error.WriteLine($"vitq: internal error: {inner.GetType().Name}: {OneLine(inner.Message)}"
                    + (verbose ? "" : " (run with --verbose for the stack trace)"));
                if (verbose) Console.Error.WriteLine(inner);
                return 1;
            }
        }

        private static readonly System.Text.RegularExpressions.Regex CannotParse = new(
            @"^Cannot parse argument '(?<value>.*)' for option '(?<option>[^']+)' as expected type '(?<type>[^']+)'$",
            System.Text.RegularExpressions.RegexOptions.CultureInvariant);

        /// <summary>
        /// System.CommandLine names the .NET type a value failed to convert to ("System.Int32"); a user needs the
        /// option and what it takes in words. Other parse messages are already plain and pass through.
        /// </summary>
        internal static string PlainParseError(string message)
        {
            var m = CannotParse.Match(message);
            if (!m.Success) return message;
            string type = m.Groups["type"].Value;
            // Nullable options report "System.Nullable`1[System.Int32]".
            var inner = System.Text.RegularExpressions.Regex.Match(type, @"^System\.Nullable`1\[\[?(?<t>[^,\]]+)");
            if (inner.Success) type = inner.Groups["t"].Value;
            string expects = type switch
            {
                "System.Int32" or "System.Int64" or "System.Int16" => "a whole number",
                "System.UInt64" or "System.UInt32" or "System.UInt16" or "System.Byte" => "a whole number, 0 or more",
                "System.Single" or "System.Double" or "System.Decimal" => "a number (e.g. 0.001 or 1e-3)",
                "System.Boolean" => "true or false",
                _ => "another kind of value",
            };
            return $"{m.Groups["option"].Value} expects {expects}, got '{m.Groups["value"].Value}'";
        }

        /// <summary>Messages that embed a nested one (JSON parser, OS errors) may span lines; the contract is one line.</summary>
        private static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();
    }
}
