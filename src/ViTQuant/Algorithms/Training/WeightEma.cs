// Exponential moving average of a model's parameters (timm's ModelEma, Polyak averaging):
// after every optimiser step  ema ← d·ema + (1 − d)·θ.  The average of the weights along the end of a
// noisy trajectory usually generalises better than its last point; with d = 0.999 and ~430 steps per
// epoch it averages over the last ~2–3 epochs. Only parameters are averaged: a ViT has no buffers
// (no batch-norm statistics) that would need the average too.
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using ViTQuant.Nn;
using ViTQuant.Tensors;

namespace ViTQuant.Algorithms.Training;

/// <summary>A moving average of a model's parameters, kept beside the live weights (file header).</summary>
internal sealed class WeightEma
{
    private readonly (string Name, Tensor Live, float[] Shadow)[] _params;

    /// <summary>Decay d of the update ema ← d·ema + (1 − d)·θ, in (0, 1).</summary>
    public float Decay { get; }

    /// <summary>Starts the average at the model's current weights.</summary>
    public WeightEma(Module model, float decay)
    {
        if (!(decay > 0 && decay < 1)) throw new ViTQuantException($"EMA decay must be in (0, 1), got {decay}");
        Decay = decay;
        _params = model.NamedParameters().Select(p => (p.Name, p.Param, p.Param.Span.ToArray())).ToArray();
    }

    /// <summary>ema ← d·ema + (1 − d)·θ for every parameter; call after each optimiser step.</summary>
    public void Update()
    {
        foreach (var (_, live, shadow) in _params)
        {
            TensorPrimitives.Multiply(shadow, Decay, shadow);
            TensorPrimitives.MultiplyAdd(live.Span, 1f - Decay, shadow, shadow);
        }
    }

    /// <summary>Exchanges the live weights with the averaged ones; calling it twice restores the model.</summary>
    public void Swap()
    {
        foreach (var (_, live, shadow) in _params)
        {
            var l = live.Span;
            for (int i = 0; i < shadow.Length; i++) (l[i], shadow[i]) = (shadow[i], l[i]);
        }
    }

    /// <summary>Runs <paramref name="action"/> with the averaged weights in the model, then puts the live ones back.</summary>
    public T WithAveraged<T>(Func<T> action)
    {
        Swap();
        try { return action(); }
        finally { Swap(); }
    }

    /// <summary>The averaged weights by parameter name (copies), for checkpoints.</summary>
    public IEnumerable<(string Name, Tensor Value)> State() =>
        _params.Select(p => (p.Name, Tensor.FromArray(p.Shadow, p.Live.Shape)));

    /// <summary>Restores the averaged weights saved by <see cref="State"/>; every parameter must be present with its shape.</summary>
    public void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        foreach (var (name, live, shadow) in _params)
        {
            if (!state.TryGetValue(name, out var t)) throw new ViTQuantException($"EMA state lacks '{name}'");
            if (!t.Shape.SequenceEqual(live.Shape))
                throw new ViTQuantException($"EMA state '{name}' has shape {Tensor.ShapeString(t.Shape)}, the model {Tensor.ShapeString(live.Shape)}");
            t.Span.CopyTo(shadow);
        }
    }
}
