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
        var cmd = new Command("info", "print the engine backends (GEMM, SIMD width, threads)") { threads, json };
        cmd.SetAction(r =>
        {
            CommonOptions.ApplyThreads(r.GetValue(threads));
            var info = EngineInfo();
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(info));
            else foreach (var (k, v) in info) Console.WriteLine($"{k,-14} {v}");
            return 0;
        });
        return cmd;
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
