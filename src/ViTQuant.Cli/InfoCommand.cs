// vitq info: the engine's backends (and, with --model, the model's configuration).
using System.CommandLine;
using System.Numerics;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using ViTQuant.Kernels;

namespace ViTQuant.Cli;

internal static class InfoCommand
{
    public static Command Create()
    {
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var model = new Option<string?>("--model") { Description = "also describe this model (our .safetensors, quantized or not, or a timm folder); 'default' for the shipped one" };
        var cmd = new Command("info", "print the engine backends (GEMM, SIMD width, threads), and a model's configuration with --model") { threads, json, model };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var info = EngineInfo();
            if (r.GetValue(model) is string mp) info["model"] = ModelInfo(mp == "default" ? null : mp);
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(info));
            else foreach (var (k, v) in info)
                    if (v is Dictionary<string, object?> sub)
                        foreach (var (k2, v2) in sub) Console.WriteLine($"{k2,-14} {Human(k2, v2)}");
                    else Console.WriteLine($"{k,-14} {v}");
            return 0;
        });
        return cmd;
    }

    /// <summary>One value as the human report prints it: a long class list (ImageNet's 1,000) is cut to its first ten; --json has all.</summary>
    private static string Human(string key, object? v) => v switch
    {
        null => "-",
        string s => s,
        IReadOnlyList<string> names when key == "class_names" && names.Count > 10 =>
            $"{JsonSerializer.Serialize(names.Take(10))[..^1]}, … ({names.Count} in all; --json lists them)]",
        _ => JsonSerializer.Serialize(v),
    };

    /// <summary>A model's configuration (and, for a quantized checkpoint, its quantization) for info's report.</summary>
    private static Dictionary<string, object?> ModelInfo(string? path)
    {
        var (m, quant) = DataSources.LoadAny(path);
        var c = m.Config;
        return new Dictionary<string, object?>
        {
            ["model"] = path ?? "(shipped default)",
            ["architecture"] = c.Architecture,
            ["parameters"] = m.ParameterCount(),
            ["input"] = $"{c.InChans}×{c.ImageSize}×{c.ImageSize}, patch {c.PatchSize}, mean [{string.Join(", ", c.Mean)}], std [{string.Join(", ", c.Std)}]",
            ["shape"] = c.DescribeShape(),
            ["classes"] = c.NumClasses,
            ["class_names"] = c.ClassNames,
            ["quantization"] = DataSources.QuantizationReport(path, quant),
        };
    }

    public static Dictionary<string, object> EngineInfo() => new()
    {
        ["gemm_backend"] = Gemm.Describe(),
        ["simd"] = $"Vector<float> {Vector<float>.Count * 32} bit; AVX2 {Avx2.IsSupported}, FMA {Fma.IsSupported}, AVX-512F {Avx512F.IsSupported}",
        ["int8_kernel"] = Int8Gemm.Describe(),
        ["threads"] = Parallelism.Threads,
        ["cores"] = Environment.ProcessorCount,
        ["runtime"] = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
    };
}
