// Class names end to end (issue 17, item 2): eval on a folder whose sub-folders are named (in any case
// and punctuation, or by index) scores exactly as the canonically named folder; an unmatched folder is
// one error line; --labels overrides; infer writes and prints top-5 with names and reads synthetic sets.
using System.Text.Json;
using ViTQuant.Algorithms.DataFree;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Tensors;
using ViTQuant.Tests.DataFree;
using ViTQuant.Tests.Models;
using static ViTQuant.Tests.Cli.VitqProcess;

namespace ViTQuant.Tests.Cli;

public class ClassNameCliTests
{
    private static readonly string OddDir = VitParityTests.FixturePath("vit_odd");
    private static readonly string[] OddNames = { "ant", "bee", "cat", "dog", "eel", "fox", "gnu" };

    private static JsonElement Json(VitqResult r)
    {
        AssertSuccess(r);
        return JsonDocument.Parse(r.Stdout).RootElement.Clone();
    }

    private static JsonElement Eval(string folder, params string[] extra) =>
        Json(Run(new[] { "eval", "--model", OddDir, "--dataset", "folder:" + folder, "--json" }.Concat(extra).ToArray()));

    [Fact]
    public void Eval_FolderNamedInAnyForm_ScoresAsTheCanonicalFolder_AndFillsTop5()
    {
        using var dir = new TempDir();
        string canon = dir.File("canon"), renamed = dir.File("renamed");
        CliTests.WriteOddPngFolder(canon, OddNames);
        // Sorted, these names would put class 2 ("2") first and gnu ("6") second: sort-order labels would be wrong.
        CliTests.WriteOddPngFolder(renamed, new[] { "ANT", "Bee", "2", "Dog", "EEL", "fox", "6" });
        var a = Eval(canon);
        var b = Eval(renamed);
        Assert.Equal(a.GetProperty("top1").GetDouble(), b.GetProperty("top1").GetDouble());
        // The same images in other batch rows (the folders sort differently): OpenBLAS, the float GEMM on
        // AVX2-only machines, rounds a row by its place in the block, so the loss agrees to float rounding.
        double loss = a.GetProperty("loss").GetDouble();
        Assert.Equal(loss, b.GetProperty("loss").GetDouble(), 1e-6 * loss);
        Assert.Equal(JsonValueKind.Number, b.GetProperty("top5").ValueKind); // 7 classes: top-5 is reported
        Assert.True(b.GetProperty("top5").GetDouble() >= b.GetProperty("top1").GetDouble());

        // --labels: folders named by the user's own vocabulary, mapped by a file of names in output order
        string mine = dir.File("mine"), labels = dir.File("labels.txt");
        var words = new[] { "formica", "apis", "felis", "canis", "anguilla", "vulpes", "gnou" };
        CliTests.WriteOddPngFolder(mine, words);
        File.WriteAllLines(labels, words);
        var c = Eval(mine, "--labels", labels);
        Assert.Equal(loss, c.GetProperty("loss").GetDouble(), 1e-6 * loss);
        AssertUserError(Run("eval", "--model", OddDir, "--dataset", "folder:" + mine), "'anguilla'", "'apis'", "'ant'", "'gnu'", "--labels");
        File.WriteAllLines(labels, words[..3]);
        AssertUserError(Run("eval", "--model", OddDir, "--dataset", "folder:" + mine, "--labels", labels), "--labels", "3 class names", "7 classes");
    }

    [Fact]
    public void Eval_ModelWithoutNames_UsesSortedOrderAndPrintsTheMapping()
    {
        using var dir = new TempDir();
        string model = dir.File("tiny.safetensors"), folder = dir.File("f");
        ModelIO.Save(TinyModels.Model(), model); // no class names
        foreach (var (name, v) in new[] { ("zeta", 200), ("alpha", 50) })
        {
            Directory.CreateDirectory(Path.Combine(folder, name));
            File.WriteAllBytes(Path.Combine(folder, name, "x.png"), ViTQuant.Tests.IO.MiniPng.Encode(Enumerable.Repeat((byte)v, 64).ToArray(), 8, 8, ViTQuant.Tests.IO.MiniPng.Gray));
        }
        var r = Run("eval", "--model", model, "--dataset", "folder:" + folder);
        AssertSuccess(r);
        Assert.Contains("labels by sorted sub-folder name: 0 = alpha, 1 = zeta", r.Stderr);
    }

    [Fact]
    public void Infer_WritesTop5WithNames_PrintsWithoutOutput_AndReadsSyntheticSets()
    {
        using var dir = new TempDir();
        var model = ModelIO.Load(OddDir);
        var x = HashInit.Images(7, 3, 3, 20, 20);
        string input = dir.File("x.safetensors"), y = dir.File("y.safetensors");
        SafeTensorsWriter.Write(input, new[] { ("pixel_values", x) });
        float[] logits;
        using (Autograd.NoGrad()) logits = model.Forward(x).ToArray();

        var r = Run("infer", "--model", OddDir, "--input", input, "--output", y);
        AssertSuccess(r);
        var f = SafeTensorsFile.Read(y);
        Assert.Equal(new[] { 3, 5 }, f.Info("top5_indices").Shape);
        Assert.Equal("I32", f.Info("top5_indices").DType);
        Assert.Equal(OddNames, JsonSerializer.Deserialize<string[]>(f.Metadata["vitq.class_names"]));
        var probs = f.GetTensor("top5_probs").ToArray();
        var idxBytes = f.GetRaw("top5_indices");
        for (int b = 0; b < 3; b++)
        {
            var row = logits.AsSpan(b * 7, 7).ToArray();
            double max = row.Max(), sum = row.Sum(v => Math.Exp(v - max));
            var expect = Enumerable.Range(0, 7).OrderByDescending(k => row[k]).Take(5).ToArray();
            for (int j = 0; j < 5; j++)
            {
                Assert.Equal(expect[j], BitConverter.ToInt32(idxBytes, (b * 5 + j) * 4));
                Assert.Equal(Math.Exp(row[expect[j]] - max) / sum, probs[b * 5 + j], 1e-5);
            }
            Assert.Contains($"image {b}: {OddNames[expect[0]]} ", r.Stderr);
        }

        // No --output: nothing written, top-5 printed; --json lists every image.
        var j2 = Json(Run("infer", "--model", OddDir, "--input", input, "--json"));
        Assert.Equal(3, j2.GetProperty("top5").GetArrayLength());
        Assert.Equal(OddNames[BitConverter.ToInt32(idxBytes, 0)], j2.GetProperty("top5")[0][0].GetProperty("name").GetString());
        AssertUserError(Run("infer", "--model", OddDir, "--input", input, "--taps"), "--taps needs --output");

        // A synthetic set (tensor 'images') is an input too.
        string tiny = dir.File("tiny.safetensors"), set = dir.File("set.safetensors"), z = dir.File("z.safetensors");
        ModelIO.Save(TinyModels.Model(), tiny);
        AssertSuccess(Run("synthesize", "--model", tiny, "--method", "gaussian", "--count", "3", "--out", set));
        AssertSuccess(Run("infer", "--model", tiny, "--input", set, "--output", z));
        var images = SafeTensorsFile.Read(set).GetTensor("images");
        float[] want;
        using (Autograd.NoGrad()) want = ModelIO.Load(tiny).Forward(images).ToArray();
        Assert.Equal(want, SafeTensorsFile.Read(z).GetTensor("logits").ToArray());
    }

    [Fact]
    public void Train_FreshModelOnAFolder_LearnsTheFoldersClassesAndKeepsTheirNames()
    {
        using var dir = new TempDir();
        string folder = dir.File("f"), m = dir.File("m.safetensors");
        var names = new[] { "Ankle boot", "bag", "coat", "dress", "pullover", "sandal", "shirt", "sneaker", "t-shirt", "trouser" };
        for (int c = 0; c < names.Length; c++)
        {
            Directory.CreateDirectory(Path.Combine(folder, names[c]));
            File.WriteAllBytes(Path.Combine(folder, names[c], "x.png"),
                ViTQuant.Tests.IO.MiniPng.Encode(Enumerable.Repeat((byte)(c * 20), 28 * 28).ToArray(), 28, 28, ViTQuant.Tests.IO.MiniPng.Gray));
        }
        var r = Run("train", "--dataset", "folder:" + folder, "--epochs", "1", "--batch", "5", "--threads", "1", "--out", m);
        AssertSuccess(r);
        Assert.Contains("classes by sorted sub-folder name: 0 = Ankle boot, 1 = bag", r.Stderr);
        Assert.Equal(names, ModelIO.Load(m).Config.ClassNames);
    }
}
