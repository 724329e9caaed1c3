// vitq train: train a ViT on Fashion-MNIST or an image folder, resumably.
using System.CommandLine;
using System.Text.Json;
using ViTQuant.Api;
using ViTQuant.Data;
using ViTQuant.Models;

namespace ViTQuant.Cli;

internal static class TrainCommand
{
    public static Command Create()
    {
        var arch = new Option<string?>("--arch") { Description = "architecture to train from scratch (default vit_fmnist; swin_fmnist for our small Swin; any known ViT/DeiT/Swin name)" };
        var init = new Option<string?>("--init") { Description = "start from this model's weights and architecture instead of a fresh initialisation (a second schedule, fine-tuning)" };
        var dataset = DataSources.DatasetOption();
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 20 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 128 };
        var lr = new Option<float>("--lr") { DefaultValueFactory = _ => 1e-3f };
        var minLr = new Option<float>("--min-lr") { DefaultValueFactory = _ => 1e-5f };
        var wd = new Option<float>("--weight-decay") { DefaultValueFactory = _ => 0.05f };
        // Default: one warm-up epoch, but none for a one-epoch run (warm-up must end before the last epoch).
        var warmup = new Option<int?>("--warmup-epochs") { Description = "linear warm-up epochs (default 1; 0 when --epochs is 1)" };
        var smoothing = new Option<float>("--label-smoothing") { DefaultValueFactory = _ => 0.1f };
        var clip = new Option<float>("--clip-norm") { Description = "global gradient-norm clip (0 = off)", DefaultValueFactory = _ => 1f };
        var pad = new Option<int>("--crop-padding") { Description = "random-crop padding in pixels (0 = no crop)", DefaultValueFactory = _ => 2 };
        var noFlip = new Option<bool>("--no-flip") { Description = "disable random horizontal flips" };
        var ema = new Option<float>("--ema") { Description = "keep an exponential moving average of the weights with this decay (e.g. 0.999), validate it each epoch and write it as the model (0 = off)" };
        var limit = new Option<int?>("--limit") { Description = "train on the first N training images and validate on at most N (smoke tests)" };
        var seed = CommonOptions.Seed();
        var threads = CommonOptions.Threads();
        var outOpt = new Option<string>("--out") { Description = "where to write the trained model (.safetensors)", Required = true };
        var resume = new Option<bool>("--resume") { Description = "continue from OUT.resume.safetensors after its last finished epoch" };
        var overwrite = OutputGuard.OverwriteOption();
        var labels = DataSources.LabelsOption();
        var json = CommonOptions.Json();
        var cmd = new Command("train", "train a ViT or Swin classifier (AdamW, cosine schedule, label smoothing, resumable)")
            { arch, init, dataset, epochs, batch, lr, minLr, wd, warmup, smoothing, clip, pad, noFlip, ema, limit, seed, threads, outOpt, resume, overwrite, json, labels };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var options = Validated(new TrainOptions
            {
                Epochs = r.GetValue(epochs), BatchSize = r.GetValue(batch), Lr = r.GetValue(lr), MinLr = r.GetValue(minLr),
                WeightDecay = r.GetValue(wd), WarmupEpochs = r.GetValue(warmup), LabelSmoothing = r.GetValue(smoothing),
                ClipNorm = r.GetValue(clip), Seed = r.GetValue(seed), CropPadding = r.GetValue(pad), Flip = !r.GetValue(noFlip),
                EmaDecay = r.GetValue(ema),
            });
            string outPath = r.GetValue(outOpt)!, resumePath = outPath + ".resume.safetensors";
            OutputGuard.CheckFile(outPath, r.GetValue(overwrite), "--out", r.GetValue(init));
            OutputGuard.RemoveStale(resumePath);
            if (File.Exists(resumePath) && !r.GetValue(resume))
                throw new ViTQuantException($"{resumePath} exists from an interrupted run; pass --resume to continue it or delete it");
            string? initPath = r.GetValue(init);
            if (initPath != null && r.GetValue(arch) != null) throw new ViTQuantException("--arch and --init exclude each other: --init takes the architecture of its model");
            var initModel = initPath != null ? Vitq.LoadModel(initPath) : null;
            var modelCfg = initModel?.Config ?? ModelConfigs.FromArchitecture(r.GetValue(arch) ?? "vit_fmnist");
            string spec = r.GetValue(dataset)!;
            // A fresh model learns the folder's own classes (sorted sub-folder names, or --labels), and keeps
            // their names; a model given by --init keeps its classes and the folder is matched to them by name.
            var folderLabels = initModel == null && r.GetValue(labels) == null ? FolderLabels.SortedFolders : FolderLabels.ByModelNames;
            var train = DataSources.Limit(DataSources.Open(spec, "train", modelCfg, labelsFile: r.GetValue(labels), labels: folderLabels), r.GetValue(limit));
            if (initModel == null && spec != "fashion-mnist")
            {
                var names = train.NumClasses == modelCfg.NumClasses ? train.ClassNames.ToArray() : null;
                modelCfg = modelCfg switch
                {
                    ViTConfig v => v with { ClassNames = names },
                    SwinConfig s => s with { ClassNames = names },
                    _ => modelCfg,
                };
            }
            var model = initModel ?? Vitq.CreateModel(modelCfg, options.Seed);
            // --limit caps validation too: a smoke run must not spend its time validating on 5k images.
            IImageDataset? val = spec == "fashion-mnist" ? DataSources.Limit(DataSources.Open(spec, "val", modelCfg), r.GetValue(limit)) : null;
            var meta = new Dictionary<string, string> { ["vitq.train_dataset"] = spec };
            if (initPath != null) meta["vitq.init_from"] = Path.GetFileName(initPath);
            Interrupt.Arm(addResume: true);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var res = Progress.Staged(p => Vitq.Train(model, train, val, options, outPath, resumePath, r.GetValue(overwrite), meta, p,
                onStart: plan => Console.Error.WriteLine($"training {modelCfg.Architecture} ({model.ParameterCount():N0} params{(initPath != null ? ", from " + initPath : "")}) on {spec}: {plan.Images} images, "
                    + $"{options.Epochs} epochs × {plan.StepsPerEpoch} steps, batch {options.BatchSize}, lr {options.Lr}, seed {options.Seed}, threads {Kernels.Parallelism.Threads}"),
                onEpoch: st => Console.Error.WriteLine($"epoch {st.Epoch}: train loss {st.TrainLoss:F4}, train top-1 {st.TrainTop1:F2}%"
                    + (st.ValTop1 is double v ? $", val top-1 {v:F2}%" : "") + (st.EmaValTop1 is double ev ? $", EMA val top-1 {ev:F2}%" : "") + $" ({st.Seconds:F0} s)")));
            Console.Error.WriteLine($"wrote {outPath}{(res.EmaWeights ? " (EMA weights)" : "")} after {sw.Elapsed.TotalMinutes:F1} min; final val top-1 {res.FinalValTop1?.ToString("F2") ?? "n/a"}%");
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(new { out_path = outPath, history = res.History, seconds = sw.Elapsed.TotalSeconds,
                peak_memory_mb = System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0 }));
            return 0;
        });
        return cmd;
    }

    /// <summary>The training options' flags, so that a value out of range is reported as the flag the user typed.</summary>
    private static readonly Dictionary<string, string> Flags = new()
    {
        [nameof(TrainOptions.Epochs)] = "--epochs", [nameof(TrainOptions.BatchSize)] = "--batch", [nameof(TrainOptions.Lr)] = "--lr",
        [nameof(TrainOptions.MinLr)] = "--min-lr", [nameof(TrainOptions.WeightDecay)] = "--weight-decay", [nameof(TrainOptions.WarmupEpochs)] = "--warmup-epochs",
        [nameof(TrainOptions.LabelSmoothing)] = "--label-smoothing", [nameof(TrainOptions.ClipNorm)] = "--clip-norm",
        [nameof(TrainOptions.CropPadding)] = "--crop-padding", [nameof(TrainOptions.EmaDecay)] = "--ema",
    };

    private static TrainOptions Validated(TrainOptions options)
    {
        try { return options.Validated(); }
        catch (ArgumentException e) when (e.ParamName is string p && Flags.TryGetValue(p, out var flag))
        {
            throw new ViTQuantException($"training config: {flag} {e.Message.Replace($" (Parameter '{p}')", "")}");
        }
    }
}
