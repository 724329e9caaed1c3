// The CLI's fine-tuning helper (called by `vitq quantize --method mimiq`): loading a synthetic-set file
// (with re-normalisation and subsetting) and gaussian images, running, the summary, the resume guard,
// and one-line errors for bad flags and files.
using ViTQuant.Api;
using ViTQuant.Cli;
using ViTQuant.IO;
using ViTQuant.Models;
using ViTQuant.Quantization;
using ViTQuant.Tensors;
using ViTQuant.Tests.Models;

namespace ViTQuant.Tests.Qat;

public class MimiqFineTuneCliTests
{
    private static ViTConfig Tiny => ViTConfig.FashionMnistDefault() with { EmbedDim = 32, Depth = 2, NumHeads = 4, MlpRatio = 2f };

    private static MimiqCliOptions Opts(string data, string outPath, int? size = null, string distance = "ssim", bool resume = false, string lsqInit = "percentile") =>
        new(data, size, Epochs: 1, Batch: 8, Lr: 1e-3f, Temperature: 5f, KdWeight: 1f, HadWeight: 10f, Distance: distance, CeWeight: 0f,
            CropScale: null, NoAugment: false, Resume: resume, LsqInit: lsqInit, WeightBits: 4, ActivationBits: 4, FirstLast8Bit: false, Seed: 3, OutPath: outPath);

    /// <summary>The distillation images as --data reads them (the library's CalibrationData.LoadDistillation).</summary>
    private static (IReadOnlyList<Tensor> Images, int[]? Labels) LoadImages(string spec, int? size, ViTConfig c, ulong seed)
    {
        var d = CalibrationData.LoadDistillation(spec, size, c, seed);
        return (d.Batches, d.Labels);
    }

    [Fact]
    public void SetFileIsRenormalisedSubsetAndFineTunedWithItsLabels()
    {
        var c = Tiny;
        using var dir = new TempDir();
        // A set made for a model with another normalisation: pixel p is stored as (p − 0.5)/0.25.
        var gen = c with { Mean = new[] { 0.5f }, Std = new[] { 0.25f } };
        var pixels = Tensor.Uniform(new Rng(1), 0f, 1f, 12, 1, 28, 28);
        var stored = new Tensor(pixels.Span.ToArray().Select(p => (p - 0.5f) / 0.25f).ToArray(), 12, 1, 28, 28);
        var labels = Enumerable.Range(0, 12).Select(i => i % 10).ToArray();
        var path = dir.File("set.safetensors");
        SafeTensorsWriter.Write(path, new[] { SafeTensorsEntry.FromTensor("images", stored), SafeTensorsEntry.FromInt32("labels", labels, 12) },
            new Dictionary<string, string> { ["vitq.model_config"] = gen.ToJson() });

        var (images, got) = LoadImages(path, 5, c, seed: 2);
        Assert.Equal(new[] { 5, 1, 28, 28 }, images[0].Shape);
        Assert.Equal(5, got!.Length);
        // Each picked image is some stored image, mapped into the teacher's normalisation.
        for (int i = 0; i < 5; i++)
        {
            int src = Enumerable.Range(0, 12).Single(j => labels[j] == got[i] && Math.Abs(images[0][i, 0, 3, 3] - (pixels[j, 0, 3, 3] - c.Mean[0]) / c.Std[0]) < 1e-4);
            Assert.Equal((pixels[src, 0, 20, 7] - c.Mean[0]) / c.Std[0], images[0][i, 0, 20, 7], 4);
        }

        var teacher = HashInit.Apply(new VisionTransformer(c), 21);
        var r = MimiqFineTune.Run(teacher, Opts(path, dir.File("q.safetensors")));
        Assert.Equal(QuantMode.Quantize, r.Student.Mode);
        Assert.True(File.Exists(r.ResumePath)); // deleted by the caller once the output is saved
        var json = System.Text.Json.JsonSerializer.Serialize(r.Summary);
        Assert.Contains("\"images\":12", json);
        Assert.Contains("\"labelled\":true", json);
        Assert.Contains("\"steps\":2", json);
        Assert.Equal(new[] { 12, 1, 28, 28 }, r.ReportBatch.Shape);

        // The finished run's resume file is refused without --resume and continued (nothing left) with it.
        Assert.Contains("--resume", Assert.Throws<ViTQuantException>(() => MimiqFineTune.Run(teacher, Opts(path, dir.File("q.safetensors")))).Message);
        var again = MimiqFineTune.Run(teacher, Opts(path, dir.File("q.safetensors"), resume: true));
        var x = HashInit.Images(4, 2, 1, 28, 28);
        using (Autograd.NoGrad()) Assert.Equal(r.Student.Forward(x).ToArray(), again.Student.Forward(x).ToArray());
    }

    [Fact]
    public void GaussianDataAndBadFlags()
    {
        var c = Tiny;
        var (g, gl) = LoadImages("gaussian", 7, c, seed: 1);
        Assert.Null(gl);
        Assert.Equal(new[] { 7, 1, 28, 28 }, g[0].Shape);
        double mean = g[0].Span.ToArray().Average(v => (double)v), var = g[0].Span.ToArray().Average(v => (double)v * v) - mean * mean;
        Assert.InRange(mean, -0.1, 0.1);
        Assert.InRange(var, 0.9, 1.1);

        using var dir = new TempDir();
        var teacher = new VisionTransformer(c, 1);
        Assert.Contains("--had-distance", Assert.Throws<ViTQuantException>(() => MimiqFineTune.Run(teacher, Opts("gaussian", dir.File("a"), 4, "cosine"))).Message);
        Assert.Contains("--lsq-init", Assert.Throws<ViTQuantException>(() => MimiqFineTune.Run(teacher, Opts("gaussian", dir.File("a"), 4, lsqInit: "median"))).Message);
        Assert.Contains("--data-size", Assert.Throws<ViTQuantException>(() => LoadImages("gaussian", 0, c, 1)).Message);
        Assert.Contains("--data", Assert.Throws<ViTQuantException>(() => LoadImages(dir.File("missing.safetensors"), null, c, 1)).Message);
        var wrong = dir.File("wrong.safetensors");
        SafeTensorsWriter.Write(wrong, new[] { ("images", Tensor.Zeros(2, 3, 28, 28)) });
        Assert.Contains("expects [N, 1, 28, 28]", Assert.Throws<ViTQuantException>(() => LoadImages(wrong, null, c, 1)).Message);
        var noImages = dir.File("none.safetensors");
        SafeTensorsWriter.Write(noImages, new[] { ("pixels", Tensor.Zeros(2, 1, 28, 28)) });
        Assert.Contains("no 'images'", Assert.Throws<ViTQuantException>(() => LoadImages(noImages, null, c, 1)).Message);
        Assert.Throws<ViTQuantException>(() => MimiqFineTune.Run(teacher, Opts("gaussian", dir.File("b"), 4) with { Epochs = 0 }));
    }
}
