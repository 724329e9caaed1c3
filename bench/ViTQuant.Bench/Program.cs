// Kernel micro-benchmarks (BenchmarkDotNet). Whole-model throughput is `vitq bench`.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- --filter '*'
using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
