// The synthesizer contract and what the pixel optimisers share: freezing the model, the valid pixel
// range, random labels, divergence detection — plus the trivial Gaussian baseline.
//
// A synthesizer turns (model, image count, generator) into one batch of images in the model's
// normalised input space with labels. Everything random is drawn from the generator it is given, in a
// fixed order, so the runner can reproduce any batch from (seed, batch index, attempt) alone.
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.DataFree;

/// <summary>Loss terms of one synthesis iteration (null: the method has no such term or its weight is 0).</summary>
public sealed record SynthesisLosses(double? Total, double? Ihc = null, double? Ce = null, double? Tv = null, double? Entropy = null)
{
    /// <summary>No losses (methods that do not optimise).</summary>
    public static readonly SynthesisLosses None = new((double?)null);

    /// <summary>The non-null terms as "name value" pairs, for progress lines.</summary>
    public string Describe()
    {
        var parts = new List<string>();
        void Add(string n, double? v) { if (v is double d) parts.Add($"{n} {d:G4}"); }
        Add("loss", Total); Add("ihc", Ihc); Add("ce", Ce); Add("tv", Tv); Add("entropy", Entropy);
        return string.Join(" ", parts);
    }
}

/// <summary>One synthesized batch: images [n, C, H, W] in the model's normalised space, labels, final losses.</summary>
internal sealed record SyntheticBatch(Tensor Images, int[] Labels, SynthesisLosses Losses);

/// <summary>Makes images for a model without real data.</summary>
internal interface IImageSynthesizer
{
    /// <summary>Optimiser steps per batch (1 for methods that do not optimise); progress callbacks count these.</summary>
    int Iterations { get; }

    /// <summary>
    /// Makes <paramref name="count"/> images for <paramref name="model"/> drawing every random choice from
    /// <paramref name="rng"/>. <paramref name="onIteration"/>(done, losses) is called after each step.
    /// The model's parameters are left as they were. Throws <see cref="SynthesisDivergedException"/>
    /// when the optimisation produces a non-finite loss or pixel (the caller redraws).
    /// </summary>
    SyntheticBatch Generate(VisionModel model, int count, Rng rng, Action<int, SynthesisLosses>? onIteration = null);
}

/// <summary>Thrown when a batch's optimisation produced NaN or infinity; the batch should be redrawn.</summary>
internal sealed class SynthesisDivergedException : Exception
{
    /// <summary>An exception with <paramref name="message"/> (which batch, which value).</summary>
    public SynthesisDivergedException(string message) : base(message) { }
}

/// <summary>Helpers shared by the synthesizers.</summary>
internal static class Synthesis
{
    /// <summary>The synthesizer for validated settings.</summary>
    public static IImageSynthesizer Create(SynthesisSettings s) => s.Validated().Method switch
    {
        "gaussian" => new GaussianSynthesizer(),
        "psaq" => new PsaqSynthesizer(s.Iterations),
        "mimiq" => new MimiqSynthesizer(s.Iterations, s.LambdaIhc, s.LambdaCe, s.LambdaTv) {
            IhcSigned = s.IhcSigned,
            BlackInit = s.Init == "black",
            Augment = s.Augment != "none",
            ColorAugment = s.Augment is null or "all",
        },
        _ => throw new ViTQuantException($"unknown synthesis method '{s.Method}'"),
    };

    /// <summary>Per channel c, the normalised image range [(0 − mean_c)/std_c, (1 − mean_c)/std_c].</summary>
    public static (float Lo, float Hi)[] ValidRange(IModelConfig c)
    {
        var r = new (float, float)[c.InChans];
        for (int i = 0; i < c.InChans; i++) r[i] = ((0 - c.Mean[i]) / c.Std[i], (1 - c.Mean[i]) / c.Std[i]);
        return r;
    }

    /// <summary>Clamps images [B, C, H, W] in place to each channel's valid range.</summary>
    public static void ClampToRange(Tensor x, (float Lo, float Hi)[] range)
    {
        int B = x.Shape[0], C = x.Shape[1], plane = x.Shape[2] * x.Shape[3];
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
            {
                var s = x.Data.AsSpan((b * C + c) * plane, plane);
                System.Numerics.Tensors.TensorPrimitives.Clamp(s, range[c].Lo, range[c].Hi, s);
            }
    }

    /// <summary>Labels drawn uniformly from [0, classes).</summary>
    public static int[] RandomLabels(Rng rng, int count, int classes)
    {
        var y = new int[count];
        for (int i = 0; i < count; i++) y[i] = rng.NextInt(classes);
        return y;
    }

    /// <summary>Throws SynthesisDivergedException unless v is finite.</summary>
    public static void CheckFinite(double v, string what, int iteration)
    {
        if (!double.IsFinite(v)) throw new SynthesisDivergedException($"{what} became {v} at iteration {iteration}");
    }

    /// <summary>Throws SynthesisDivergedException unless every value of x is finite.</summary>
    public static void CheckFinite(Tensor x, int iteration)
    {
        foreach (float v in x.Span)
            if (!float.IsFinite(v)) throw new SynthesisDivergedException($"pixels became {v} at iteration {iteration}");
    }

    /// <summary>
    /// Puts the model in eval mode with every parameter's RequiresGrad cleared (gradients flow to the
    /// pixels only); disposing restores both.
    /// </summary>
    public static IDisposable Freeze(VisionModel model) => new FrozenModel(model);

    /// <summary>
    /// The taps "{block}.{suffix}" of every transformer block of <paramref name="config"/> (ViT: blocks.{i},
    /// Swin: layers.{s}.blocks.{b}), in forward order, recorded by <paramref name="rec"/>. Throws
    /// InvalidOperationException when the model did not report one.
    /// </summary>
    public static List<Tensor> BlockTaps(TapRecorder rec, IModelConfig config, string suffix)
    {
        ArgumentNullException.ThrowIfNull(config);
        var list = new List<Tensor>();
        foreach (var p in config.BlockPrefixes())
        {
            if (!rec.Taps.TryGetValue($"{p}.{suffix}", out var t))
                throw new InvalidOperationException($"the model did not report tap {p}.{suffix}");
            list.Add(t);
        }
        return list;
    }

    /// <summary>
    /// A per-head attention tap with one image per row of the first axis: ViT's [B, heads, N, d] unchanged;
    /// Swin's windows [B·nW, heads, T, d] (the windows of one image are consecutive) as [B, heads, nW·T, d],
    /// so that the image's patches of every window are one set, as a ViT's tokens are.
    /// </summary>
    internal static Tensor PerImage(Tensor tap, int batch)
    {
        if (tap.Shape[0] == batch) return tap;
        int windows = tap.Shape[0] / batch, heads = tap.Shape[1], t = tap.Shape[2], d = tap.Shape[3];
        var grouped = Ops.Permute(Ops.Reshape(tap, batch, windows, heads, t, d), 0, 2, 1, 3, 4);
        return Ops.Reshape(grouped, batch, heads, windows * t, d);
    }

    /// <summary>The attention taps of every ViT block blocks.{i}, in block order, recorded by <paramref name="rec"/>.</summary>
    public static List<Tensor> BlockTaps(TapRecorder rec, int depth, string suffix)
    {
        var list = new List<Tensor>(depth);
        for (int i = 0; i < depth; i++)
        {
            if (!rec.Taps.TryGetValue($"blocks.{i}.{suffix}", out var t))
                throw new InvalidOperationException($"the model did not report tap blocks.{i}.{suffix}");
            list.Add(t);
        }
        return list;
    }

    private sealed class FrozenModel : IDisposable
    {
        private readonly VisionModel _model;
        private readonly List<(Tensor P, bool Req)> _saved;
        private readonly bool _training;
        private bool _disposed;

        public FrozenModel(VisionModel model)
        {
            _model = model;
            _training = model.Training;
            _saved = model.Parameters().Select(p => (p, p.RequiresGrad)).ToList();
            foreach (var (p, _) in _saved) p.RequiresGrad = false;
            model.Eval();
        }

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var (p, r) in _saved) p.RequiresGrad = r;
            _model.Train(_training);
        }
    }
}

/// <summary>The data-free floor: N(0, 1) noise in normalised space, clamped to the valid pixel range; random labels.</summary>
internal sealed class GaussianSynthesizer : IImageSynthesizer
{
    /// <summary>Always 1: the noise is drawn once, nothing is optimised.</summary>
    public int Iterations => 1;

    /// <summary>Draws labels, then pixels, from rng (the labels carry no information about the images).</summary>
    public SyntheticBatch Generate(VisionModel model, int count, Rng rng, Action<int, SynthesisLosses>? onIteration = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var c = model.Config; // any architecture: the noise needs only the input shape and normalisation
        var labels = Synthesis.RandomLabels(rng, count, c.NumClasses);
        var x = Tensor.Randn(rng, 1f, count, c.InChans, c.ImageSize, c.ImageSize);
        Synthesis.ClampToRange(x, Synthesis.ValidRange(c));
        onIteration?.Invoke(1, SynthesisLosses.None);
        return new SyntheticBatch(x, labels, SynthesisLosses.None);
    }
}
