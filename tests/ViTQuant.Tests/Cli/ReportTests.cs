// Reports say what was measured (issue 17, item 3): eval/info on a quantized checkpoint name the method,
// bits, quantizers and engine; option parse errors in plain words; --calib errors name --calib; step
// and overall ETAs.
using System.Text.Json;
using ViTQuant.Cli;
using ViTQuant.Tests.Models;
using static ViTQuant.Tests.Cli.VitqProcess;

namespace ViTQuant.Tests.Cli;

public class ReportTests
{
    private static JsonElement Json(VitqResult r)
    {
        AssertSuccess(r);
        return JsonDocument.Parse(r.Stdout).RootElement.Clone();
    }

    [Fact]
    public void EvalAndInfo_OnAQuantizedCheckpoint_SayMethodBitsQuantizersAndEngine()
    {
        using var dir = new TempDir();
        string q = dir.File("q.safetensors");
        AssertSuccess(Run("quantize", "--method", "percentile", "--wbits", "4", "--abits", "6", "--calib-size", "32", "--limit", "50", "--out", q));

        var e = Json(Run("eval", "--model", q, "--limit", "50", "--json"));
        Assert.Equal("sim", e.GetProperty("engine").GetString());
        Assert.True(e.GetProperty("quantized").GetBoolean());
        var qz = e.GetProperty("quantization");
        Assert.Equal("percentile", qz.GetProperty("method").GetString());
        Assert.Equal(4, qz.GetProperty("weight_bits").GetInt32());
        Assert.Equal(6, qz.GetProperty("activation_bits").GetInt32());
        var quantizers = qz.GetProperty("quantizers").EnumerateArray().ToList();
        Assert.Contains(quantizers, x => x.GetProperty("target").GetString() == "weight" && x.GetProperty("bits").GetInt32() == 4);
        Assert.Contains(quantizers, x => x.GetProperty("target").GetString() == "activation" && x.GetProperty("bits").GetInt32() == 6);
        Assert.All(quantizers, x => Assert.False(string.IsNullOrEmpty(x.GetProperty("kind").GetString())));
        // every weight layer is either quantized or counted as float
        int weightPoints = quantizers.Where(x => x.GetProperty("target").GetString() == "weight").Sum(x => x.GetProperty("points").GetInt32());
        Assert.Equal(6 * 4 + 2, weightPoints + qz.GetProperty("float_weight_points").GetInt32()); // vit_fmnist: 6 blocks × 4 + patch embed + head

        var f = Json(Run("eval", "--limit", "50", "--json"));
        Assert.False(f.GetProperty("quantized").GetBoolean());
        Assert.Equal(JsonValueKind.Null, f.GetProperty("quantization").ValueKind);

        var info = Json(Run("info", "--model", q, "--json")).GetProperty("model");
        Assert.Equal("vit_fmnist", info.GetProperty("architecture").GetString());
        Assert.Equal("percentile", info.GetProperty("quantization").GetProperty("method").GetString());
        Assert.Equal("vitq-quant/2", info.GetProperty("quantization").GetProperty("format").GetString());
        Assert.Equal(new FileInfo(q).Length, info.GetProperty("quantization").GetProperty("file_bytes").GetInt64());
        Assert.Equal("Ankle boot", info.GetProperty("class_names")[9].GetString());
        var plain = Run("info", "--model", "default");
        AssertSuccess(plain);
        Assert.Contains("architecture   vit_fmnist", plain.Stdout);
    }

    [Theory]
    [InlineData("--wbits", "abc", "--wbits expects a whole number, got 'abc'")]
    [InlineData("--seed", "-1", "--seed expects a whole number, 0 or more, got '-1'")]
    [InlineData("--limit", "1.5", "--limit expects a whole number, got '1.5'")]
    public void OptionParseErrors_NameTheOptionAndTheExpectedValueInWords(string option, string value, string expected)
    {
        var line = AssertUserError(Run("quantize", option, value, "--out", "never-written.safetensors"), expected);
        Assert.DoesNotContain("System.", line);
    }

    [Fact]
    public void PlainParseError_CoversNumbersAndLeavesOtherMessagesAlone()
    {
        Assert.Equal("--lr expects a number (e.g. 0.001 or 1e-3), got 'x'",
            global::ViTQuant.Cli.Cli.PlainParseError("Cannot parse argument 'x' for option '--lr' as expected type 'System.Single'"));
        Assert.Equal("--taps expects true or false, got 'maybe'",
            global::ViTQuant.Cli.Cli.PlainParseError("Cannot parse argument 'maybe' for option '--taps' as expected type 'System.Boolean'"));
        Assert.Equal("Option '--input' is required", global::ViTQuant.Cli.Cli.PlainParseError("Option '--input' is required"));
    }

    [Fact]
    public void CalibFolderErrors_NameCalib()
    {
        using var dir = new TempDir();
        AssertUserError(Run("quantize", "--calib", "folder:" + dir.File("missing"), "--out", dir.File("q.safetensors")), "--calib", "not found");
        AssertUserError(Run("quantize", "--calib", "folder:", "--out", dir.File("q.safetensors")), "--calib folder: needs a path");
        Assert.False(File.Exists(dir.File("q.safetensors")));
    }

    [Fact]
    public void Overall_EstimatesFromTheMeasuredRate_AndClockFormats()
    {
        Assert.Equal("0:05", Overall.Clock(4.6));
        Assert.Equal("2:03", Overall.Clock(123));
        Assert.Equal("1:00:00", Overall.Clock(3600));
        using var o = new Overall(new[] { ("a", 1.0), ("b", 3.0), ("zero", 0.0) });
        Assert.Same(o, Overall.Current);
        Assert.Equal(2, o.Steps);
        Assert.Equal("overall: estimating", o.Describe());
        Thread.Sleep(1100);
        o.Step("a", () => 0);
        // a quarter of the cost took ~1.1 s, so about 3.3 s remain
        Assert.Matches(@"^overall 25%, about 0:0[34] left$", o.Describe());
        o.Dispose();
        Assert.Null(Overall.Current);
    }

    // A step of many stages (the demo's ADFQ row) advances by its stages' declared costs: the first unit at 100 %
    // is not the step done (it used to read "overall 100 %" through the rest of the row).
    [Fact]
    public void Overall_StepOfManyStages_AdvancesByStageCost()
    {
        var plan = DemoCommand.StepCosts(DemoCommand.Quick, testImages: 1000, depth: 6).ToList();
        var adfq = plan.Single(p => p.Step == "real+adfq");
        double units = adfq.Cost - DemoCommand.Quick.CalibImages - 1.5 * 1000;
        Assert.Equal(units / 14, adfq.StageCost!("adfq blocks.0.attn"), 9);
        Assert.Equal(0, adfq.StageCost!("calibrate adfq ranges"));
        using var o = new Overall(new[] { ("first", 1.0, (Func<string, double>?)null), adfq });
        o.Step("first", () => 0);
        string during = "";
        o.Step("real+adfq", () =>
        {
            o.Report("calibrate adfq", 1);
            o.Report("calibrate adfq ranges", 1);
            o.Report("adfq patch_embed", 1);
            o.Report("adfq blocks.0.attn", 0.5);
            Thread.Sleep(1100); // the estimate needs a second of measured work
            during = o.Describe();
            return 0;
        });
        double expected = 100 * (1 + DemoCommand.Quick.CalibImages + 1.5 * units / 14) / (1 + adfq.Cost);
        Assert.Matches($@"^overall {expected:F0}%, about ", during);
        // A step without stage costs keeps its furthest stage, and progress never goes back.
        using var single = new Overall(new[] { ("only", 4.0) });
        single.Step("only", () =>
        {
            single.Report("a", 0.5);
            single.Report("b", 0.25);
            Thread.Sleep(1100);
            Assert.StartsWith("overall 50%", single.Describe());
            return 0;
        });
    }

    [Fact]
    public void Reporter_Eta_CountsOnlyThisRunsItems()
    {
        var rep = new Progress.Reporter(100, (_, _) => { });
        Assert.Null(rep.Eta);
        rep.Update(40); // a resumed step: 40 items were done before this run
        Thread.Sleep(200);
        rep.Update(50);
        double eta = rep.Eta!.Value;
        // 10 items in ~0.2 s → 50 left ≈ 1 s (not the 0.25 s that counting the 40 resumed items would give)
        Assert.InRange(eta, 0.8, 3.0);
    }
}
