// ADFQ-ViT reconstruction on tiny random models (28×28×1, patch 4, width 32, 4 heads): it lowers the
// units' output error on held-out inputs, changes only the parameters it should, is deterministic for
// a seed, its streams reproduce the whole quantized model, and `vitq quantize --method adfq` writes a
// checkpoint that `vitq eval` reloads with the same accuracy.
using System.Text.Json;
using ViTQuant.Algorithms.Ptq;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Cli;

namespace ViTQuant.Tests.Ptq;

public class AdfqReconstructionTests
{
    private static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };

    /// <summary>Tiny with patch 7: 17 tokens instead of 50 keep the optimisation loops fast.</summary>
    private static ViTConfig Small => Tiny with { PatchSize = 7 };

    private static List<Tensor> Batches(int n, int batch, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n).Select(_ => Tensor.Randn(rng, 1f, batch, 1, 28, 28)).ToList();
    }

    /// <summary>
    /// Images with correlated pixels (a 7×7 Gaussian grid upsampled bilinearly, plus a little noise). With
    /// white-noise images the patch embedding's input covariance is the identity, and then rounding to
    /// nearest is already the least-squares optimum AdaRound searches for.
    /// </summary>
    private static List<Tensor> SmoothBatches(int n, int batch, ulong seed)
    {
        var rng = new Rng(seed);
        var list = new List<Tensor>();
        for (int k = 0; k < n; k++)
        {
            var x = new Tensor(batch, 1, 28, 28);
            var g = new float[8 * 8];
            for (int b = 0; b < batch; b++)
            {
                rng.FillNormal(g, 0f, 1f);
                for (int i = 0; i < 28; i++)
                    for (int j = 0; j < 28; j++)
                    {
                        float u = i / 4f, v = j / 4f;
                        int i0 = (int)u, j0 = (int)v;
                        float fu = u - i0, fv = v - j0;
                        float val = (1 - fu) * ((1 - fv) * g[i0 * 8 + j0] + fv * g[i0 * 8 + j0 + 1]) + fu * ((1 - fv) * g[(i0 + 1) * 8 + j0] + fv * g[(i0 + 1) * 8 + j0 + 1]);
                        x.Data[(b * 28 + i) * 28 + j] = val + 0.1f * rng.NextNormal();
                    }
            }
            list.Add(x);
        }
        return list;
    }

    private static QuantizedModel Calibrated(VisionTransformer fp, List<Tensor> calib, int bits = 4)
    {
        var qm = new QuantizedModel(fp.Clone(), new AdfqOptions().CreatePlan(bits, bits));
        qm.Calibrate(calib);
        return qm;
    }

    /// <summary>Rec of each of the first units on float inputs computed from images x (the unit alone, no earlier quantization).</summary>
    private static double[] UnitErrors(VisionTransformer fp, QuantizedModel qm, Tensor x, int units)
    {
        using var _ = Autograd.NoGrad();
        var all = AdfqUnit.For(fp.Config);
        var errors = new double[units];
        Tensor h = x;
        for (int u = 0; u < units; u++)
        {
            var unit = all[u];
            var input = unit.Input(fp, h);
            var ofp = unit.Forward(fp, null, input);
            errors[u] = AdfqLoss.Reconstruction(unit.Forward((VisionTransformer)qm.Model, qm, input), ofp).Item();
            h = unit.Advance(fp, h, ofp)!;
        }
        return errors;
    }

    [Fact]
    public void ReconstructionLowersUnitErrorOnHeldOutInputs()
    {
        var fp = new VisionTransformer(Small, seed: 11);
        var calib = SmoothBatches(2, 32, 1);
        var heldOut = SmoothBatches(1, 48, 99)[0];
        var nearest = Calibrated(fp, calib);
        var learned = Calibrated(fp, calib);
        var rn = new AdfqReconstruction(fp, nearest, calib, new AdfqOptions { Reconstruct = false });
        // Learning rates above the defaults so that a few dozen steps move the rounding decisions.
        var rl = new AdfqReconstruction(fp, learned, calib, new AdfqOptions { Iterations = 80, Seed = 3, WeightLr = 3e-2f, StepLr = 1e-3f });
        const int units = 3; // patch embedding, blocks.0.attn, blocks.0.mlp
        var losses = new List<float>();
        for (int u = 0; u < units; u++)
        {
            var a = rn.ReconstructNext();
            var b = rl.ReconstructNext(p => { if (p.UnitIndex == 1) losses.Add(p.Loss); });
            Assert.Equal(0, a.Iterations);
            Assert.Equal(rl.Options.Iterations, b.Iterations);
            Assert.True(b.CalibrationRec < a.CalibrationRec, $"{b.Unit.Name}: calibration Rec {b.CalibrationRec:G4} vs nearest {a.CalibrationRec:G4}");
        }
        var before = UnitErrors(fp, nearest, heldOut, units);
        var after = UnitErrors(fp, learned, heldOut, units);
        for (int u = 0; u < units; u++)
            Assert.True(after[u] < 0.95 * before[u], $"unit {u}: held-out Rec {after[u]:G4} after reconstruction vs {before[u]:G4} with nearest rounding");
        Assert.Equal(rl.Options.Iterations, losses.Count); // one progress report per iteration of blocks.0.attn
        Assert.All(losses, l => Assert.True(float.IsFinite(l) && l > 0));
    }

    private static Dictionary<string, float[]> Snapshot(QuantizedModel qm)
    {
        var s = qm.Model.StateDict().ToDictionary(kv => "model." + kv.Key, kv => kv.Value.ToArray());
        foreach (var (p, q) in qm.ActivationQuantizers) foreach (var (n, v) in q.State()) s[$"act.{p}.{n}"] = v.ToArray();
        foreach (var (l, q) in qm.WeightQuantizers) foreach (var (n, v) in q.State()) s[$"weight.{l}.{n}"] = v.ToArray();
        return s;
    }

    [Fact]
    public void OnlyTheUnitsRoundingAndInputStepsChange()
    {
        var fp = new VisionTransformer(Small, seed: 12);
        var teacherBefore = fp.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        var calib = Batches(1, 32, 2);
        var qm = Calibrated(fp, calib);
        var flags = qm.Model.Parameters().Select(p => p.RequiresGrad).ToArray();
        var before = Snapshot(qm);
        var r = new AdfqReconstruction(fp, qm, calib, new AdfqOptions { Iterations = 30, WarmupFraction = 0.5 });
        r.ReconstructNext(); // patch embedding
        r.ReconstructNext(); // blocks.0.attn
        var after = Snapshot(qm);

        string[] changed =
        {
            "weight.patch_embed.proj.v", "weight.patch_embed.proj.hard", "weight.blocks.0.attn.qkv.v", "weight.blocks.0.attn.qkv.hard",
            "weight.blocks.0.attn.proj.v", "weight.blocks.0.attn.proj.hard", "act.blocks.0.attn.qkv.scale", "act.blocks.0.attn.proj.scale",
        };
        foreach (var (k, v) in before)
        {
            if (changed.Contains(k)) Assert.False(v.SequenceEqual(after[k]), $"{k} did not change");
            else Assert.True(v.SequenceEqual(after[k]), $"{k} changed"); // model weights, zero points, q/k/v/probs, later units
        }
        Assert.Equal(new[] { 1f }, after["weight.blocks.0.attn.qkv.hard"]);
        Assert.Equal(new[] { 0f }, after["weight.blocks.0.mlp.fc1.hard"]);
        Assert.All(fp.StateDict(), kv => Assert.Equal(teacherBefore[kv.Key], kv.Value.ToArray()));
        Assert.Equal(flags, qm.Model.Parameters().Select(p => p.RequiresGrad).ToArray()); // restored
        Assert.False(((AdaRoundQuantizer)qm.WeightQuantizers["blocks.0.attn.qkv"]).V!.RequiresGrad);
        Assert.True(((AdaRoundQuantizer)qm.WeightQuantizers["blocks.0.mlp.fc1"]).V!.RequiresGrad);
        Assert.Equal(2, r.CompletedUnits);
    }

    private static (float[] Logits, float[] V) RunAll(VisionTransformer fp, List<Tensor> calib, Tensor x, ulong seed)
    {
        var qm = Calibrated(fp, calib);
        new AdfqReconstruction(fp, qm, calib, new AdfqOptions { Iterations = 12, Seed = seed, WarmupFraction = 0.25 }).Run();
        using var _ = Autograd.NoGrad();
        return (qm.Forward(x).ToArray(), ((AdaRoundQuantizer)qm.WeightQuantizers["blocks.1.mlp.fc2"]).V!.ToArray());
    }

    [Fact]
    public void RunIsDeterministicForASeed()
    {
        var fp = new VisionTransformer(Small, seed: 13);
        var calib = Batches(1, 40, 3);
        var x = Batches(1, 8, 4)[0];
        var a = RunAll(fp, calib, x, 7);
        var b = RunAll(fp, calib, x, 7);
        var c = RunAll(fp, calib, x, 8);
        Assert.Equal(a.Logits, b.Logits);
        Assert.Equal(a.V, b.V);
        Assert.NotEqual(a.V, c.V);
    }

    [Theory]
    [InlineData("token")]
    [InlineData("distilled")]
    [InlineData("avg")]
    public void StreamsReproduceTheWholeQuantizedModel(string variant)
    {
        var cfg = variant switch
        {
            "distilled" => Small with { Distilled = true },
            "avg" => Small with { GlobalPool = "avg", ClassToken = false },
            _ => Small,
        };
        var fp = new VisionTransformer(cfg, seed: 14);
        var calib = Batches(2, 24, 5);
        var qm = Calibrated(fp, calib);
        var r = new AdfqReconstruction(fp, qm, calib, new AdfqOptions { Iterations = 3 });
        Assert.Equal(2 + 2 * cfg.Depth, r.Units.Count);
        var results = r.Run();
        Assert.Equal(r.Units.Select(u => u.Name), results.Select(x => x.Unit.Name));
        Assert.Throws<InvalidOperationException>(() => r.ReconstructNext());
        // The head's calibration Rec, computed from the reconstructed streams, is the whole model's logit error.
        double direct;
        using (Autograd.NoGrad())
        {
            double sq = 0;
            int count = 0;
            foreach (var b in calib)
            {
                var d = Ops.Sub(qm.Forward(b), fp.Forward(b));
                foreach (float v in d.Span) sq += (double)v * v;
                count += b.Shape[0];
            }
            direct = sq / (count * cfg.NumClasses);
        }
        Assert.Equal(direct, results[^1].CalibrationRec, direct * 1e-4);
        Assert.All(qm.WeightQuantizers.Values, q => Assert.True(((AdaRoundQuantizer)q).HardRounding));
    }

    [Fact]
    public void BadInputsAreRejected()
    {
        var fp = new VisionTransformer(Tiny, seed: 15);
        var calib = Batches(1, 8, 6);
        var uncalibrated = new QuantizedModel(fp.Clone(), new AdfqOptions().CreatePlan(4, 4));
        Assert.Throws<InvalidOperationException>(() => new AdfqReconstruction(fp, uncalibrated, calib, new AdfqOptions()));
        var qm = Calibrated(fp, calib);
        Assert.Throws<ArgumentException>(() => new AdfqReconstruction((VisionTransformer)qm.Model, qm, calib, new AdfqOptions()));
        Assert.Throws<ViTQuantException>(() => new AdfqReconstruction(fp, qm, new List<Tensor>(), new AdfqOptions()));
        Assert.Contains("[B, 1, 28, 28]", Assert.Throws<ViTQuantException>(() => new AdfqReconstruction(fp, qm, new List<Tensor> { Tensor.Zeros(2, 1, 14, 14) }, new AdfqOptions())).Message);
    }

    [Fact]
    public void CliQuantizeAdfqThenEvalReportsTheSameAccuracy()
    {
        var dir = Directory.CreateTempSubdirectory("vitq-adfq-").FullName;
        try
        {
            var model = Path.Combine(dir, "m.safetensors");
            ModelIO.Save(new VisionTransformer(Tiny, seed: 3), model);
            var q = Path.Combine(dir, "q.safetensors");
            var r = VitqProcess.Run(new[] { "quantize", "--model", model, "--method", "adfq", "--wbits", "4", "--abits", "4", "--iters", "5",
                "--calib-size", "32", "--limit", "200", "--out", q, "--json" }, timeoutSeconds: 120);
            Assert.True(r.ExitCode == 0, r.ToString());
            var j = JsonDocument.Parse(r.Stdout).RootElement;
            Assert.Equal("w4a4", j.GetProperty("bits").GetString());
            var units = j.GetProperty("adfq").GetProperty("units");
            Assert.Equal(2 + 2 * Tiny.Depth, units.GetArrayLength());
            Assert.All(units.EnumerateArray(), u => Assert.Equal(5, u.GetProperty("iterations").GetInt32()));
            Assert.Contains("blocks.1.mlp", r.Stderr);
            var e = VitqProcess.Run(new[] { "eval", "--model", q, "--limit", "200", "--json" }, timeoutSeconds: 120);
            Assert.True(e.ExitCode == 0, e.ToString());
            Assert.Equal(j.GetProperty("quant_top1").GetDouble(), JsonDocument.Parse(e.Stdout).RootElement.GetProperty("top1").GetDouble(), 9);

            // Ablations: plan switches end up in the checkpoint's plan; --no-recon runs no iterations.
            var q2 = Path.Combine(dir, "q2.safetensors");
            var r2 = VitqProcess.Run(new[] { "quantize", "--model", model, "--method", "adfq", "--no-recon", "--no-per-patch", "--no-shift-log",
                "--no-attn-kl", "--qdrop-prob", "0", "--calib-size", "32", "--limit", "50", "--out", q2, "--json" }, timeoutSeconds: 120);
            Assert.True(r2.ExitCode == 0, r2.ToString());
            Assert.All(JsonDocument.Parse(r2.Stdout).RootElement.GetProperty("adfq").GetProperty("units").EnumerateArray(),
                u => Assert.Equal(0, u.GetProperty("iterations").GetInt32()));
            var plan = QuantizedCheckpoint.Load(q2).Plan;
            Assert.Equal(QuantKind.Uniform, plan.ActivationSpec("blocks.0.attn.qkv")!.Kind);
            Assert.Equal(QuantKind.Uniform, plan.ActivationSpec("blocks.0.mlp.fc2")!.Kind);

            var x = Path.Combine(dir, "x.safetensors");
            VitqProcess.AssertUserError(VitqProcess.Run("quantize", "--model", model, "--method", "adfq", "--iters", "0", "--out", x), "--iters");
            VitqProcess.AssertUserError(VitqProcess.Run("quantize", "--model", model, "--method", "adfq", "--shift-log-base", "3", "--out", x), "--shift-log-base");
            VitqProcess.AssertUserError(VitqProcess.Run("quantize", "--model", model, "--method", "minmax", "--iters", "5", "--out", x), "--iters", "adfq");
            Assert.False(File.Exists(x));
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
