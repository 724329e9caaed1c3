// `vitq quantize --method mimiq`: the fine-tuning half (MimiQ paper). QuantizeCommand owns the
// shared flags (--wbits, --abits, --first-last-8bit, --seed, --out) and the evaluation, freezing and
// saving; this file owns the fine-tuning flags, loads the distillation images, runs MimiqTrainer with a
// progress bar and hands back the fine-tuned student plus a summary for the report.
//
// --data:  a synthetic set file (.safetensors with "images" F32 [N, C, H, W] in its generating model's
//          normalised space and optional "labels" I32 [N]; re-normalised when that model's mean/std,
//          from the "vitq.model_config" metadata, differ from the teacher's), fashion-mnist (real training
//          images, the real-data baseline), folder:PATH, or gaussian (N(0, 1) images in the normalised
//          space, the noise baseline). --data-size takes a seeded random subset (gaussian: the count).
using System.CommandLine;
using System.Diagnostics;
using ViTQuant.Algorithms.Qat;
using ViTQuant.Api;
using ViTQuant.Data;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;

namespace ViTQuant.Cli;

/// <summary>Parsed fine-tuning settings of `vitq quantize --method mimiq` (the shared flags included).</summary>
internal sealed record MimiqCliOptions(
    string Data, int? DataSize, int Epochs, int Batch, float Lr, float Temperature, float KdWeight, float HadWeight,
    string Distance, float CeWeight, double? CropScale, bool NoAugment, bool Resume, string LsqInit,
    int WeightBits, int ActivationBits, bool FirstLast8Bit, ulong Seed, string OutPath);

/// <summary>
/// The fine-tuned student, the resume file to delete once the output is saved, the report summary, and up
/// to 64 distillation images (un-augmented) for the per-layer report, so a data-free run needs no real data.
/// </summary>
internal sealed record MimiqFineTuneCliResult(QuantizedModel Student, string ResumePath, object Summary, Tensor ReportBatch);

/// <summary>The fine-tuning flags; AddTo registers them on a command, Read collects them into <see cref="MimiqCliOptions"/>.</summary>
internal sealed class MimiqFlags
{
    public readonly Option<string> Data = new("--data") { Description = "mimiq: distillation images: a synthetic set .safetensors, fashion-mnist, folder:PATH or gaussian", DefaultValueFactory = _ => "fashion-mnist" };
    public readonly Option<int?> DataSize = new("--data-size") { Description = "mimiq: use a random subset of this many images (gaussian: how many; default 10000)" };
    public readonly Option<int> Epochs = new("--epochs") { Description = "mimiq: fine-tuning epochs", DefaultValueFactory = _ => 1 };
    public readonly Option<int> Batch = new("--batch") { Description = "mimiq: batch size", DefaultValueFactory = _ => 16 };
    public readonly Option<float> Lr = new("--lr") { Description = "mimiq: peak SGD learning rate (cosine decay to 0)", DefaultValueFactory = _ => MimiqOptions.DefaultLr };
    public readonly Option<float> Temperature = new("--temperature") { Description = "mimiq: distillation temperature T", DefaultValueFactory = _ => 5f };
    public readonly Option<float> KdWeight = new("--kd-weight") { Description = "mimiq: weight α_KD of the logit distillation", DefaultValueFactory = _ => 1f };
    public readonly Option<float> HadWeight = new("--had-weight") { Description = "mimiq: weight γ of the attention distillation L_HAD", DefaultValueFactory = _ => 10f };
    public readonly Option<string> Distance = new("--had-distance") { Description = "mimiq: L_HAD distance: ssim, mse, l1, kl or off", DefaultValueFactory = _ => "ssim" };
    public readonly Option<float> CeWeight = new("--ce-weight") { Description = "mimiq: weight of cross-entropy to the set's labels (0 = off)", DefaultValueFactory = _ => 0f };
    public readonly Option<double?> CropScale = new("--crop-scale") { Description = "mimiq: smallest random-resized-crop area (default 0.5 below 64 px, else 0.08)" };
    public readonly Option<bool> NoAugment = new("--no-augment") { Description = "mimiq: fine-tune on the images as they are" };
    public readonly Option<string> LsqInit = new("--lsq-init") { Description = "mimiq: start of the LSQ activation steps: spec (2·mean|x|/√q_max), minmax, percentile or mse (range search on the first batch)", DefaultValueFactory = _ => MimiqOptions.DefaultLsqInit.ToString().ToLowerInvariant() };
    public readonly Option<bool> Resume = new("--resume") { Description = "mimiq: continue from OUT.resume.safetensors after its last finished epoch" };

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { Data, DataSize, Epochs, Batch, Lr, Temperature, KdWeight, HadWeight, Distance, CeWeight, CropScale, NoAugment, LsqInit, Resume })
            cmd.Options.Add(o);
    }

    public MimiqCliOptions Read(ParseResult r, int wbits, int abits, bool firstLast8Bit, ulong seed, string outPath) => new(
        r.GetValue(Data)!, r.GetValue(DataSize), r.GetValue(Epochs), r.GetValue(Batch), r.GetValue(Lr), r.GetValue(Temperature),
        r.GetValue(KdWeight), r.GetValue(HadWeight), r.GetValue(Distance)!, r.GetValue(CeWeight), r.GetValue(CropScale),
        r.GetValue(NoAugment), r.GetValue(Resume), r.GetValue(LsqInit)!, wbits, abits, firstLast8Bit, seed, outPath);
}

internal static class MimiqFineTune
{
    /// <summary>
    /// Loads the distillation images and fine-tunes a MimiQ student of <paramref name="teacher"/> (not
    /// modified) through the library (ViTQuant.Api.MimiqFineTuning), resumably (OUT.resume.safetensors).
    /// Throws ViTQuantException for bad flags, unreadable or mismatched data, a stale resume file without
    /// --resume, or a diverging loss.
    /// </summary>
    public static MimiqFineTuneCliResult Run(VisionModel teacher, MimiqCliOptions o)
    {
        var distance = MimiqFineTuning.ParseDistance(o.Distance);
        var opts = new MimiqOptions
        {
            LsqInit = MimiqFineTuning.ParseLsqInit(o.LsqInit),
            WeightBits = o.WeightBits, ActivationBits = o.ActivationBits, FirstLast8Bit = o.FirstLast8Bit, Epochs = o.Epochs,
            BatchSize = o.Batch, Lr = o.Lr, Temperature = o.Temperature, KdWeight = o.KdWeight, HadWeight = o.HadWeight,
            Distance = distance, CeWeight = o.CeWeight, CropScaleMin = o.CropScale, Augment = !o.NoAugment, Seed = o.Seed,
        }.Validated();
        string resumePath = o.OutPath + ".resume.safetensors";
        if (File.Exists(resumePath) && !o.Resume)
            throw new ViTQuantException($"{resumePath} exists from an interrupted run; pass --resume to continue it or delete it");

        var c = teacher.Config;
        var data = CalibrationData.LoadDistillation(o.Data, o.DataSize, c, o.Seed);
        var result = Progress.Staged(p => MimiqFineTuning.Run(teacher, data, opts, resumePath, p,
            plan => Console.Error.WriteLine($"mimiq fine-tuning w{opts.WeightBits}a{opts.ActivationBits} on {o.Data}: {plan.Images} images, {opts.Epochs} epochs × {plan.StepsPerEpoch} steps, "
                + $"batch {opts.BatchSize}, lr {opts.Lr}, T {opts.Temperature}, α_KD {opts.KdWeight}, γ {opts.HadWeight} ({distance}), CE {opts.CeWeight}, seed {opts.Seed}"),
            e => Console.Error.WriteLine($"epoch {e.Epoch}: loss {e.Loss:F4} (kd {e.Kd:F4}, had {e.Had:F4}, ce {e.Ce:F4}) ({e.Seconds:F0} s)")));
        var summary = new
        {
            data = o.Data, images = data.Count, labelled = data.Labels != null, epochs = opts.Epochs, steps = result.Steps, batch = opts.BatchSize,
            lr = opts.Lr, temperature = opts.Temperature, kd_weight = opts.KdWeight, had_weight = opts.HadWeight,
            had_distance = o.Distance, ce_weight = opts.CeWeight, lsq_init = o.LsqInit, augment = opts.Augment, crop_scale = opts.CropScaleFor(c.ImageSize),
            fine_tune_seconds = result.Seconds,
            history = result.History.Select(h => new { epoch = h.Epoch, loss = h.Loss, kd = h.Kd, had = h.Had, ce = h.Ce, seconds = h.Seconds }),
        };
        var first = data.Batches[0];
        int nReport = Math.Min(64, first.Shape[0]), per = first.Size / first.Shape[0];
        var reportBatch = Tensor.FromArray(first.Data.AsSpan(0, nReport * per), nReport, c.InChans, c.ImageSize, c.ImageSize);
        return new MimiqFineTuneCliResult(result.Student, resumePath, summary, reportBatch);
    }
}
