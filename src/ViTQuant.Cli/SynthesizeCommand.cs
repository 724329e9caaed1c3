// vitq synthesize: make a data-free synthetic image set (gaussian, psaq or mimiq) for a model,
// resumably (finished batches are kept as shards next to --out; see SynthesisRunner).
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using ViTQuant.Algorithms.DataFree;
using ViTQuant.Api;
using ViTQuant.IO;

namespace ViTQuant.Cli;

internal static class SynthesizeCommand
{
    public static Command Create()
    {
        var model = DataSources.ModelOption();
        var method = new Option<string>("--method") { Description = "gaussian (N(0,1) noise), psaq (PSAQ-ViT) or mimiq (MimiQ)", Required = true };
        var count = new Option<int>("--count") { Description = "number of images to make", Required = true };
        var iterations = new Option<int?>("--iterations") { Description = "optimiser steps per batch (default: mimiq 2000, psaq 1000 over two rounds)" };
        var batch = new Option<int?>("--batch") { Description = "images optimised together (default: mimiq 16, psaq 32, gaussian 64)" };
        var seed = CommonOptions.Seed();
        var lambdaIhc = new Option<float?>("--lambda-ihc") { Description = "MimiQ weight of the inter-head coherency loss (default 1)" };
        var lambdaCe = new Option<float?>("--lambda-ce") { Description = "MimiQ weight of the cross-entropy to random labels (default 1)" };
        var lambdaTv = new Option<float?>("--lambda-tv") { Description = "MimiQ weight of the total-variation prior (default 2.5e-5)" };
        var ihcSigned = new Option<bool>("--ihc-signed") { Description = "ablation: MimiQ's L_IHC as mean(1 − SSIM) instead of the spec's mean(1 − SSIM²)" };
        var init = new Option<string?>("--init") { Description = "ablation: where MimiQ's pixels start, normal (the spec: N(0, 1)) or black (the black level + N(0, 0.1²))" };
        var augment = new Option<string?>("--augment") { Description = "ablation: MimiQ's augmentation, all (the spec), roll (no brightness/contrast jitter) or none" };
        var threads = CommonOptions.Threads();
        var outOpt = new Option<string>("--out") { Description = "the set to write (.safetensors); never overwritten", Required = true };
        var resume = new Option<bool>("--resume") { Description = "continue an interrupted run from the shards in OUT.shards" };
        var overwrite = OutputGuard.OverwriteOption();
        var json = CommonOptions.Json();
        var cmd = new Command("synthesize", "make a synthetic calibration/fine-tuning set without real data")
            { model, method, count, iterations, batch, seed, lambdaIhc, lambdaCe, lambdaTv, ihcSigned, init, augment, threads, outOpt, resume, overwrite, json };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            string m = r.GetValue(method)!;
            if (!SynthesisSettings.Methods.Contains(m))
                throw new ViTQuantException($"--method: unknown method '{m}' (gaussian, psaq or mimiq)");
            var settings = SynthesisSettings.For(m) with { Count = r.GetValue(count), Seed = r.GetValue(seed) };
            if (r.GetValue(batch) is int b) settings = settings with { BatchSize = b };
            if (r.GetValue(iterations) is int it)
            {
                if (m == "gaussian") throw new ViTQuantException("--iterations does not apply to --method gaussian (nothing is optimised)");
                settings = settings with { Iterations = it };
            }
            float? li = r.GetValue(lambdaIhc), lc = r.GetValue(lambdaCe), lt = r.GetValue(lambdaTv);
            string? initMode = r.GetValue(init), augMode = r.GetValue(augment);
            if (m != "mimiq" && (li != null || lc != null || lt != null || r.GetValue(ihcSigned) || initMode != null || augMode != null))
                throw new ViTQuantException($"--lambda-ihc/--lambda-ce/--lambda-tv/--ihc-signed/--init/--augment apply to --method mimiq only, not {m}");
            settings = settings with
            {
                LambdaIhc = li ?? settings.LambdaIhc, LambdaCe = lc ?? settings.LambdaCe, LambdaTv = lt ?? settings.LambdaTv,
                IhcSigned = r.GetValue(ihcSigned),
                // the spec's values are stored as null so the settings JSON of a spec run stays as before
                Init = initMode == "normal" ? null : initMode,
                Augment = augMode == "all" ? null : augMode,
            };
            settings = settings.Validated();

            string outPath = r.GetValue(outOpt)!;
            string? modelPath = r.GetValue(model);
            OutputGuard.CheckFile(outPath, r.GetValue(overwrite), "--out", modelPath);
            Interrupt.Arm(addResume: true);
            var net = DataSources.LoadModel(modelPath);
            Console.Error.WriteLine($"synthesizing {settings.Count} images with {m} for {net.Config.Architecture}: {settings.BatchCount} batches of {settings.BatchSize}"
                + (m == "gaussian" ? "" : $", {settings.Iterations} iterations each") + $", seed {settings.Seed}, threads {Kernels.Parallelism.Threads}");
            // Every run keeps its shards when it fails (resumable), so that the resume command Interrupt prints
            // has them to continue; only --resume may continue the shards of an earlier run.
            string shards = SynthesisRunner.ShardDirectory(outPath);
            if (Directory.Exists(shards) && !r.GetValue(resume))
                throw new ViTQuantException($"{shards}: shards of an earlier run exist; pass --resume to continue it, or delete the folder");
            var res = Progress.Staged(p => Vitq.Synthesize(net, settings, outPath, resumable: true, overwrite: r.GetValue(overwrite), progress: p));
            string resumed = res.BatchesResumed > 0 ? $" ({res.BatchesResumed} batches resumed from shards)" : "";
            Console.Error.WriteLine($"wrote {outPath}: {settings.Count} images{resumed} in {res.Seconds:F1} s");
            foreach (var bi in res.Batches.Where(x => x.Losses.Total != null).TakeLast(3))
                Console.Error.WriteLine($"  batch {bi.Batch}: {bi.Losses.Describe()}");
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    out_path = outPath, method = m, count = settings.Count, batches = settings.BatchCount, batch_size = settings.BatchSize,
                    iterations = m == "gaussian" ? (int?)null : settings.Iterations, seed = settings.Seed.ToString(CultureInfo.InvariantCulture),
                    batches_made = res.BatchesMade, batches_resumed = res.BatchesResumed, seconds = res.Seconds,
                    final_losses = res.Batches.Select(x => new
                    {
                        batch = x.Batch, attempts = x.Attempts, total = x.Losses.Total, ihc = x.Losses.Ihc, ce = x.Losses.Ce,
                        tv = x.Losses.Tv, entropy = x.Losses.Entropy,
                    }),
                }));
            return 0;
        });
        return cmd;
    }
}
