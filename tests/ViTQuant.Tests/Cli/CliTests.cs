// End-to-end tests of the vitq verbs, run as a child process: exit codes (0 success, 2 user error),
// one "vitq: error: …" line on stderr for every user mistake, clean JSON on stdout with --json, and
// results that match an in-process computation or the PyTorch fixtures. The train/eval pair needs
// Fashion-MNIST (Debian dataset-fashion-mnist, installed by tools/ensure-deps.sh).
using System.Text.Json;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Models;
using ViTQuant.Tests.Nn;
using static ViTQuant.Tests.Cli.VitqProcess;

namespace ViTQuant.Tests.Cli;

public class CliTests
{
    private static readonly string OddDir = VitParityTests.FixturePath("vit_odd");

    private static JsonElement ParseJsonStdout(VitqResult r)
    {
        AssertSuccess(r);
        try { return JsonDocument.Parse(r.Stdout).RootElement.Clone(); } // the whole stdout is one JSON document
        catch (JsonException e) { throw new Xunit.Sdk.XunitException($"stdout is not clean JSON ({e.Message}): {r}"); }
    }

    [Fact]
    public void Info_Json_IsCleanAndHonoursThreads()
    {
        var r = Run("info", "--json", "--threads", "1");
        var j = ParseJsonStdout(r);
        Assert.Equal(1, j.GetProperty("threads").GetInt32());
        Assert.True(j.GetProperty("cores").GetInt32() >= 1);
        Assert.False(string.IsNullOrWhiteSpace(j.GetProperty("gemm_backend").GetString()));
        Assert.Equal("", r.Stderr);
    }

    [Fact]
    public void ParseErrors_OneLineExit2()
    {
        AssertUserError(Run("info", "--threads", "0"), "--threads must be at least 1, got 0");
        AssertUserError(Run("eval", "--bogus-flag"), "--bogus-flag", "vitq eval --help");
        AssertUserError(Run("infer"), "--input");
        AssertUserError(Run("train", "--epochs", "abc", "--out", "x.safetensors"), "abc", "--epochs");
        AssertUserError(Run("frobnicate"), "frobnicate");
        AssertUserError(Run());
        // --verbose adds the stack trace for user errors (the one-line message comes first)
        var v = Run("info", "--threads", "0", "--verbose");
        Assert.Equal(2, v.ExitCode);
        Assert.StartsWith("vitq: error: --threads must be at least 1", v.StderrLines[0]);
        Assert.True(v.StderrLines.Length > 1, v.ToString());
    }

    [Fact]
    public void Eval_ImageFolderOfPngs_MatchesInProcessComputation()
    {
        using var dir = new TempDir();
        var model = ModelIO.Load(OddDir);
        WriteOddPngFolder(dir.Path, model.Config.ClassNames!);
        var r = Run("eval", "--model", OddDir, "--dataset", "folder:" + dir.Path, "--batch", "8", "--json");
        var j = ParseJsonStdout(r);

        // Independent of the CLI's loader and evaluator: decode, normalise by hand, forward, score in double.
        var ds = ImageFolder.FromDirectory(dir.Path, new EvalTransform(20, model.Config.CropPct, 3));
        Assert.Equal(21, ds.Count);
        var x = new Tensor(ds.Count, 3, 20, 20);
        for (int n = 0; n < ds.Count; n++)
        {
            var img = x.Data.AsSpan(n * 1200, 1200);
            ds.GetImage(n, img);
            for (int k = 0; k < 1200; k++) img[k] = (img[k] - model.Config.Mean[k / 400]) / model.Config.Std[k / 400];
        }
        float[] logits;
        using (Autograd.NoGrad()) logits = model.Forward(x).ToArray();
        int correct = 0, correct5 = 0;
        double loss = 0;
        for (int n = 0; n < ds.Count; n++)
        {
            var row = logits.AsSpan(n * 7, 7).ToArray();
            int label = ds.Label(n), arg = 0;
            for (int k = 1; k < 7; k++) if (row[k] > row[arg]) arg = k;
            if (arg == label) correct++;
            if (Enumerable.Range(0, 7).Count(k => row[k] > row[label] || (row[k] == row[label] && k < label)) < 5) correct5++;
            double max = row[arg], sum = 0;
            foreach (float v in row) sum += Math.Exp(v - max);
            loss += Math.Log(sum) + max - row[label];
        }
        Assert.Equal(21, j.GetProperty("count").GetInt32());
        Assert.Equal(100.0 * correct / 21, j.GetProperty("top1").GetDouble(), 1e-9);
        Assert.Equal(loss / 21, j.GetProperty("loss").GetDouble(), 1e-4);
        Assert.Equal(100.0 * correct5 / 21, j.GetProperty("top5").GetDouble(), 1e-9); // more than 5 classes: top-5 reported
        Assert.Equal("vit_tiny_patch16_224", j.GetProperty("model").GetString());
    }

    /// <summary>3 images per class, 24×22 RGB (resize + centre crop to 20×20 on the way in), deterministic pixels.</summary>
    internal static void WriteOddPngFolder(string root, string[] classes)
    {
        for (int c = 0; c < classes.Length; c++)
        {
            Directory.CreateDirectory(Path.Combine(root, classes[c]));
            for (int i = 0; i < 3; i++)
            {
                var px = new byte[24 * 22 * 3];
                long seed = c * 3 + i;
                for (int k = 0; k < px.Length; k++) px[k] = (byte)(HashInit.SplitMix64(((ulong)seed << 32) + (ulong)k) >> 56);
                File.WriteAllBytes(Path.Combine(root, classes[c], $"img{i}.png"), ViTQuant.Tests.IO.MiniPng.Encode(px, 24, 22, ViTQuant.Tests.IO.MiniPng.Rgb));
            }
        }
    }

    [Fact]
    public void Compare_DataSourcesByMethods_WritesTableResumesAndMatchesQuantize()
    {
        using var dir = new TempDir();
        string images = dir.File("images"), outDir = dir.File("cmp");
        WriteOddPngFolder(images, ModelIO.Load(OddDir).Config.ClassNames!);
        string[] args =
        {
            "compare", "--model", OddDir, "--dataset", "folder:" + images, "--data", "real,gaussian", "--methods", "minmax,adfq-no-recon,mimiq",
            "--bits", "w6a6", "--seeds", "1", "--calib-size", "8", "--synth-count", "8", "--ft-epochs", "1", "--out", outDir, "--json",
        };
        var j = ParseJsonStdout(Run(args));
        var cells = j.GetProperty("cells").EnumerateArray().ToList();
        Assert.Equal(6, cells.Count); // 2 sources × 3 methods × 1 bit setting × 1 seed
        Assert.True(File.Exists(Path.Combine(outDir, "sets", "gaussian-s0.safetensors")));
        Assert.Equal("gaussian", j.GetProperty("synthetic_sets")[0].GetProperty("Data").GetString());
        var md = File.ReadAllText(Path.Combine(outDir, "compare.md"));
        Assert.Contains("| real+minmax |", md);
        Assert.Contains("| gaussian+mimiq |", md);
        Assert.Empty(Directory.GetFiles(Path.Combine(outDir, "cells"), "*.resume.safetensors"));

        // a real-data min–max cell is exactly what `vitq quantize` gives with the same images and seed
        var q = ParseJsonStdout(Run("quantize", "--model", OddDir, "--dataset", "folder:" + images, "--calib", "folder:" + images,
            "--calib-size", "8", "--wbits", "6", "--abits", "6", "--out", dir.File("q.safetensors"), "--json"));
        var realMinmax = cells.Single(c => c.GetProperty("Data").GetString() == "real" && c.GetProperty("Method").GetString() == "minmax");
        Assert.Equal(q.GetProperty("quant_top1").GetDouble(), realMinmax.GetProperty("Top1").GetDouble(), 9);

        // a second run reads every cell back instead of recomputing it
        var again = Run(args);
        Assert.Equal(6, again.StderrLines.Count(l => l.Contains("(from ")));
        Assert.Equal(j.GetProperty("cells").ToString(), ParseJsonStdout(again).GetProperty("cells").ToString());

        // a later invocation adds a cell; the table still covers every cell of the folder
        var more = args.ToArray();
        more[Array.IndexOf(more, "--data") + 1] = "real";
        more[Array.IndexOf(more, "--methods") + 1] = "percentile";
        Assert.Equal(7, ParseJsonStdout(Run(more)).GetProperty("cells").GetArrayLength());
        md = File.ReadAllText(Path.Combine(outDir, "compare.md"));
        Assert.Contains("| real+percentile |", md);
        Assert.Contains("| gaussian+mimiq |", md);
        Assert.DoesNotContain("| gaussian+percentile |", md); // no invocation asked for that pair

        // resuming with another budget would mix two experiments in one table: refused, nothing touched
        var other = args.ToArray();
        other[Array.IndexOf(other, "--ft-epochs") + 1] = "2";
        AssertUserError(Run(other), outDir, "FtEpochs 1 there, 2 now");
        Assert.Equal(7, Directory.GetFiles(Path.Combine(outDir, "cells"), "*.json").Length);

        AssertUserError(Run("compare", "--model", OddDir, "--data", "imagenet", "--out", outDir), "--data", "imagenet");
        AssertUserError(Run("compare", "--model", OddDir, "--methods", "adfq-no-magic", "--out", outDir), "--methods", "adfq-no-magic");
    }

    [Fact]
    public void Eval_BadDatasets_OneLineExit2()
    {
        using var dir = new TempDir();
        AssertUserError(Run("eval", "--model", OddDir, "--dataset", "imagenet-21k"), "unknown dataset 'imagenet-21k'");
        AssertUserError(Run("eval", "--model", OddDir, "--dataset", "folder:" + dir.File("absent")), dir.File("absent"));
        AssertUserError(Run("eval", "--model", dir.File("absent.safetensors")), dir.File("absent.safetensors"), "not found");
        AssertUserError(Run("eval", "--model", OddDir, "--batch", "0"), "--batch must be at least 1");
        // an empty directory given as the Fashion-MNIST location: a clear error naming it
        var env = new Dictionary<string, string?> { [FashionMnist.DirectoryEnvVar] = dir.Path };
        AssertUserError(Run(new[] { "eval", "--model", OddDir }, env), dir.Path, "not found");
        AssertUserError(Run(new[] { "train", "--epochs", "1", "--out", dir.File("m.safetensors") }, env), dir.Path);
        Assert.False(File.Exists(dir.File("m.safetensors")));
        env[FashionMnist.DirectoryEnvVar] = dir.File("missing");
        AssertUserError(Run(new[] { "eval", "--model", OddDir }, env), dir.File("missing"), "does not exist");
    }

    [Fact]
    public void Infer_OddModel_WritesLogitsAndAttentionThatMatchPyTorch()
    {
        using var dir = new TempDir();
        var f = new FixtureFile(Path.Combine("vit_odd", "expected.safetensors"));
        string input = dir.File("in.safetensors"), output = dir.File("out.safetensors");
        SafeTensorsWriter.Write(input, new[] { ("pixel_values", HashInit.Images(ulong.Parse(f.Metadata["image_seed"]), 2, 3, 20, 20)) });
        var r = Run("infer", "--model", OddDir, "--input", input, "--output", output, "--taps");
        AssertSuccess(r);
        Assert.Equal("", r.Stdout);

        var o = SafeTensorsFile.Read(output);
        Assert.Equal(new[] { "logits", "top5_indices", "top5_probs", "blocks.0.attn.probs", "blocks.1.attn.probs" }, o.Names);
        Assert.Equal("vit_tiny_patch16_224", o.Metadata["vitq.model"]);
        foreach (var name in o.Names.Where(n => !n.StartsWith("top5_")))
        {
            var ours = o.GetTensor(name);
            var torch = f.F32(name);
            Assert.Equal(torch.Shape, ours.Shape);
            double e = HashInit.RelErr(ours.Span, torch.Span);
            Assert.True(e <= 1e-4, $"{name} rel err {e:E2}");
        }

        // without --taps only the logits are written
        string plain = dir.File("plain.safetensors");
        AssertSuccess(Run("infer", "--model", OddDir, "--input", input, "--output", plain));
        Assert.Equal(new[] { "logits", "top5_indices", "top5_probs" }, SafeTensorsFile.Read(plain).Names);
    }

    [Fact]
    public void Infer_TapsAll_WritesEveryQuantizationPointInput()
    {
        using var dir = new TempDir();
        string input = dir.File("in.safetensors"), output = dir.File("all.safetensors"), some = dir.File("some.safetensors");
        var x = HashInit.Images(3, 2, 3, 20, 20);
        SafeTensorsWriter.Write(input, new[] { ("pixel_values", x) });
        AssertSuccess(Run("infer", "--model", OddDir, "--input", input, "--output", output, "--taps", "all"));
        var o = SafeTensorsFile.Read(output);
        var model = ModelIO.Load(OddDir);
        var points = QuantPlan.ActivationPoints(model.Config).ToList();
        foreach (var p in points) Assert.Contains($"input.{p}", o.Names);
        Assert.Contains("blocks.0.attn.probs", o.Names); // the attention maps stay
        Assert.DoesNotContain(o.Names, n => n.StartsWith("quantized.")); // a float model quantizes nothing
        Assert.Equal(x.ToArray(), o.GetTensor("input.patch_embed.proj").ToArray());
        Assert.Equal(o.GetTensor("blocks.1.attn.probs").ToArray(), o.GetTensor("input.blocks.1.attn.probs").ToArray());

        AssertSuccess(Run("infer", "--model", OddDir, "--input", input, "--output", some, "--taps", "blocks.*.mlp.fc2, head"));
        Assert.Equal(new[] { "logits", "top5_indices", "top5_probs", "input.blocks.0.mlp.fc2", "input.blocks.1.mlp.fc2", "input.head" }, SafeTensorsFile.Read(some).Names);
        AssertUserError(Run("infer", "--model", OddDir, "--input", input, "--output", dir.File("bad.safetensors"), "--taps", "blocks.0.mlp.fc9"), "--taps", "blocks.0.mlp.fc9");
        AssertUserError(Run("infer", "--model", OddDir, "--input", input, "--output", dir.File("bad.safetensors"), "--calibration-stream"), "--calibration-stream");
    }

    [Fact]
    public void Infer_BadInput_OneLineExit2_AndNeverOverwritesTheInput()
    {
        using var dir = new TempDir();
        string input = dir.File("in.safetensors"), output = dir.File("out.safetensors");
        AssertUserError(Run("infer", "--model", OddDir, "--input", input, "--output", output), input, "not found");

        SafeTensorsWriter.Write(input, new[] { ("pixel_values", Tensor.Zeros(2, 3, 24, 24)) });
        AssertUserError(Run("infer", "--model", OddDir, "--input", input, "--output", output), input, "[2, 3, 24, 24]", "[B, 3, 20, 20]");
        string misnamed = dir.File("misnamed.safetensors");
        SafeTensorsWriter.Write(misnamed, new[] { ("x", Tensor.Zeros(1, 3, 20, 20)) });
        AssertUserError(Run("infer", "--model", OddDir, "--input", misnamed, "--output", output), "pixel_values");
        string ints = dir.File("ints.safetensors");
        SafeTensorsWriter.Write(ints, new[] { SafeTensorsEntry.FromInt32("pixel_values", new int[1200], 1, 3, 20, 20) });
        AssertUserError(Run("infer", "--model", OddDir, "--input", ints, "--output", output), ints, "dtype I32");
        Assert.False(File.Exists(output));

        byte[] before = File.ReadAllBytes(input);
        string sameViaDotDot = Path.Combine(dir.Path, "sub", "..", "in.safetensors");
        Directory.CreateDirectory(Path.Combine(dir.Path, "sub"));
        AssertUserError(Run("infer", "--model", OddDir, "--input", input, "--output", input));
        AssertUserError(Run("infer", "--model", OddDir, "--input", input, "--output", sameViaDotDot));
        Assert.Equal(before, File.ReadAllBytes(input));
    }

    [Fact]
    public void Train_ThenEval_ThenRefuseToOverwrite()
    {
        Assert.True(Directory.Exists(FashionMnist.ResolveDirectory()), "Fashion-MNIST is needed (tools/ensure-deps.sh)");
        using var dir = new TempDir();
        string outPath = dir.File("fmnist.safetensors");
        var train = Run("train", "--epochs", "1", "--limit", "256", "--batch", "64", "--out", outPath, "--json");
        var tj = ParseJsonStdout(train);
        Assert.Equal(outPath, tj.GetProperty("out_path").GetString());
        var history = tj.GetProperty("history");
        Assert.Equal(1, history.GetArrayLength());
        Assert.True(history[0].GetProperty("ValTop1").ValueKind == JsonValueKind.Number, train.ToString());
        Assert.True(File.Exists(outPath));
        Assert.False(File.Exists(outPath + ".resume.safetensors")); // removed after a finished run
        var meta = SafeTensorsFile.Read(outPath).Metadata;
        Assert.Equal("fashion-mnist", meta["vitq.train_dataset"]);
        Assert.Equal("vit_fmnist", ModelIO.Load(outPath).Config.Architecture);

        var eval = Run("eval", "--model", outPath, "--limit", "256", "--json");
        var ej = ParseJsonStdout(eval);
        Assert.Equal(256, ej.GetProperty("count").GetInt32());
        Assert.InRange(ej.GetProperty("top1").GetDouble(), 0, 100);
        // four AdamW steps from scratch already beat the uniform guess (ln 10 = 2.303)
        Assert.True(ej.GetProperty("loss").GetDouble() < 2.25, eval.ToString());
        Assert.Equal("test", ej.GetProperty("split").GetString());

        byte[] before = File.ReadAllBytes(outPath);
        AssertUserError(Run("train", "--epochs", "1", "--limit", "64", "--batch", "64", "--out", outPath), outPath, "already exists");
        Assert.Equal(before, File.ReadAllBytes(outPath));

        // --init continues from the trained weights: with a vanishing learning rate the result (here the
        // weight average, which starts at the initial weights) evaluates as its start
        string second = dir.File("second.safetensors");
        AssertSuccess(Run("train", "--init", outPath, "--epochs", "1", "--limit", "64", "--batch", "64", "--lr", "1e-12", "--min-lr", "0", "--ema", "0.9", "--out", second));
        Assert.Equal("fmnist.safetensors", SafeTensorsFile.Read(second).Metadata["vitq.init_from"]);
        Assert.Equal("ema 0.9", SafeTensorsFile.Read(second).Metadata["vitq.weights"]);
        var ej2 = ParseJsonStdout(Run("eval", "--model", second, "--limit", "256", "--json"));
        Assert.Equal(ej.GetProperty("loss").GetDouble(), ej2.GetProperty("loss").GetDouble(), 4);
        AssertUserError(Run("train", "--init", outPath, "--arch", "vit_fmnist", "--out", dir.File("x.safetensors")), "--init");
    }
}
