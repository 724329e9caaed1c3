// The README's "Commands" section is true line by line: every flag a usage line shows exists on its
// verb, the shared-flag sentence holds for every verb, and the command lines marked runnable run
// (in order, in an empty folder, as a user would paste them).
using System.CommandLine;
using System.Text.RegularExpressions;
using ViTQuant.Cli;
using ViTQuant.Tests.Models;
using static ViTQuant.Tests.Cli.VitqProcess;

namespace ViTQuant.Tests.Cli;

public class ReadmeTests
{
    private static string ReadmePath()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "ViTQuant.slnx"))) return Path.Combine(d.FullName, "README.md");
        throw new FileNotFoundException("README.md: no ViTQuant.slnx above the test assembly");
    }

    private static readonly Dictionary<string, Command> Verbs = new[]
    {
        InfoCommand.Create(), TrainCommand.Create(), EvalCommand.Create(), InferCommand.Create(), BenchCommand.Create(), QuantizeCommand.Create(),
        SynthesizeCommand.Create(), AnalyzeCommand.Create(), CompareCommand.Create(), DemoCommand.Create(), ExportCommand.Create(),
    }.ToDictionary(c => c.Name);

    private static string CommandsSection()
    {
        string text = File.ReadAllText(ReadmePath());
        int start = text.IndexOf("\n## Commands", StringComparison.Ordinal);
        Assert.True(start >= 0, "README has no '## Commands' section");
        int end = text.IndexOf("\n## ", start + 5, StringComparison.Ordinal);
        return text[start..(end < 0 ? text.Length : end)];
    }

    [Fact]
    public void EveryFlagInACommandLine_ExistsOnItsVerb()
    {
        string? verb = null;
        int checkedFlags = 0;
        foreach (var line in CommandsSection().Split('\n'))
        {
            var m = Regex.Match(line, @"^    vitq (\w+)");
            if (m.Success) verb = m.Groups[1].Value;
            else if (!line.StartsWith("                    ", StringComparison.Ordinal)) { verb = null; continue; }
            if (verb == null) continue;
            Assert.True(Verbs.ContainsKey(verb), $"README names an unknown verb '{verb}'");
            var names = Verbs[verb].Options.SelectMany(o => o.Aliases.Append(o.Name)).ToHashSet();
            foreach (Match f in Regex.Matches(line, @"(?<![\w-])--[a-z0-9][a-z0-9-]*"))
            {
                Assert.True(names.Contains(f.Value), $"README: 'vitq {verb}' shows {f.Value}, which the verb does not take: {line.Trim()}");
                checkedFlags++;
            }
        }
        Assert.True(checkedFlags > 80, $"only {checkedFlags} flags found: the README format changed?");
    }

    [Fact]
    public void SharedFlagSentence_HoldsForEveryVerb()
    {
        foreach (var (name, cmd) in Verbs)
        {
            var opts = cmd.Options.Select(o => o.Name).ToHashSet();
            Assert.True(opts.Contains("--threads"), $"{name} lacks --threads");
            Assert.True(opts.Contains("--json"), $"{name} lacks --json");
            bool readsModel = name != "train"; // train takes --init (a starting model) or --arch
            Assert.True(!readsModel || opts.Contains("--model"), $"{name} lacks --model");
        }
        foreach (var name in new[] { "train", "quantize", "synthesize", "demo", "bench" })
            Assert.Contains("--seed", Verbs[name].Options.Select(o => o.Name));
        Assert.Contains("--seeds", Verbs["compare"].Options.Select(o => o.Name));
    }

    [Fact]
    public void RunnableLines_Run()
    {
        string section = CommandsSection();
        int a = section.IndexOf("<!-- runnable -->", StringComparison.Ordinal), b = section.IndexOf("<!-- /runnable -->", StringComparison.Ordinal);
        Assert.True(a >= 0 && b > a, "README: no runnable block in Commands");
        var lines = section[a..b].Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith("vitq ", StringComparison.Ordinal)).ToList();
        Assert.True(lines.Count >= 5, "README: too few runnable lines");
        using var dir = new TempDir();
        foreach (var line in lines)
        {
            Assert.DoesNotContain('\'', line); // split on spaces below: keep the lines free of quoting
            var r = Run(line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToArray(), timeoutSeconds: 120, workingDirectory: dir.Path);
            Assert.True(r.ExitCode == 0, $"README line failed: {r}");
        }
        Assert.True(File.Exists(Path.Combine(dir.Path, "try", "analysis", "attention_heads.png")));
    }

    [Fact]
    public void UseFromCSharp_ShowsTheSampleVerbatim()
    {
        string readme = File.ReadAllText(ReadmePath());
        string program = File.ReadAllText(Path.Combine(Path.GetDirectoryName(ReadmePath())!, "samples", "QuickStart", "Program.cs"));
        int section = readme.IndexOf("\n## Use from C#", StringComparison.Ordinal);
        Assert.True(section >= 0, "README has no '## Use from C#' section");
        int start = readme.IndexOf("```csharp\n", section, StringComparison.Ordinal) + "```csharp\n".Length;
        int end = readme.IndexOf("```", start, StringComparison.Ordinal);
        Assert.Equal(program.ReplaceLineEndings("\n"), readme[start..end].ReplaceLineEndings("\n"));
    }
}
