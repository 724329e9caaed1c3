// Same-process A/B of the engine's run-time switches on a whole model, calls interleaved round by round
// (so drift in a shared machine's load falls on every variant alike): SpinPool against the .NET thread pool
// (Parallelism.UseSpinPool), the shared-B parallel GEMM against one range per worker (ManagedGemm.SharedB),
// the AVX-512 / AVX2 attention against its two-GEMM path (AttentionKernel.Avx512Path, Avx2Path), the AVX-512 GEMM reading A in
// place against packing all of it (ManagedGemm.DirectA), the last block on the head's tokens against all of them
// (VisionTransformer.FullLastBlock), the batch in chunks of images against the whole batch at once
// (VisionModel.ChunkOverride), the input gradient's weight packed per call against once for a step's chunks
// (DenseCore.PrepackedInputGradient), the attention kernels' v, k, q and G read in place against packed
// (AttentionKernel.PackOperands), a GEMM's last block of rows padded to a whole tile against computed alone
// (ManagedGemm.PartialRowsKernel), the blocks' residual adds as ops of their own against in proj's and fc2's GEMM
// tiles (VisionTransformer.SeparateResidualAdds), and all of them off. With one thread calls are timed by the thread's CPU clock.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- engine-ab [--arch A] [--batch B] [--threads T] [--rounds R] [--sleep MS]
//       [--train | --input-grad] [--variants I,J,...]
// --train times VisionModel.ForwardBackward of the cross-entropy to every parameter (no optimizer step), --input-grad to
// the input only, else the no-grad Infer; --variants keeps the listed variants (0 is the default, always kept); --sleep
// pauses before every call (as `vitq bench --engine onnx` does), so each call starts with parked workers.
using ViTQuant.Kernels;
using ViTQuant.Models;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class EngineAb
{
    private sealed record Variant(string Name, bool SpinPool, bool SharedB, bool Attention512, bool DirectA, bool HeadRows = true, bool Chunks = true,
        bool PrepackedDx = true, bool PackedRows = true, bool PartialRows = true, bool FusedResidual = true);

    public static int Run(string[] args)
    {
        string arch = "deit_tiny_patch16_224";
        int batch = 8, rounds = 21, sleep = 0;
        bool train = false, inputGrad = false;
        int[]? keep = null;
        Parallelism.Threads = 2;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--arch": arch = args[++i]; break;
                case "--batch": batch = int.Parse(args[++i]); break;
                case "--threads": Parallelism.Threads = int.Parse(args[++i]); break;
                case "--rounds": rounds = int.Parse(args[++i]); break;
                case "--sleep": sleep = int.Parse(args[++i]); break;
                case "--train": train = true; break;
                case "--input-grad": inputGrad = true; break;
                case "--variants": keep = args[++i].Split(',').Select(int.Parse).ToArray(); break;
                default: Console.Error.WriteLine($"engine-ab: unknown argument '{args[i]}'"); return 2;
            }
        }
        var variants = new[]
        {
            new Variant("all on (default)", true, true, true, true),
            new Variant(".NET thread pool", false, true, true, true),
            new Variant("GEMM range per worker", true, false, true, true),
            new Variant("GEMM-path attention", true, true, false, true),
            new Variant("GEMM packs all of A", true, true, true, false),
            new Variant("last block on all tokens", true, true, true, true, HeadRows: false),
            new Variant("whole batch, no chunks", true, true, true, true, Chunks: false),
            new Variant("dx packs W per call", true, true, true, true, PrepackedDx: false),
            new Variant("attention rows in place", true, true, true, true, PackedRows: false),
            new Variant("GEMM pads partial rows", true, true, true, true, PartialRows: false),
            new Variant("residual adds apart", true, true, true, true, FusedResidual: false),
            new Variant("all off", false, false, false, false, HeadRows: false, Chunks: false, PrepackedDx: false, PackedRows: false,
                PartialRows: false, FusedResidual: false),
        };
        if (keep != null) variants = variants.Where((_, i) => i == 0 || keep.Contains(i)).ToArray();
        if (train && inputGrad) { Console.Error.WriteLine("engine-ab: --train or --input-grad, not both"); return 2; }
        var model = new VisionTransformer(ViTConfig.FromArchitecture(arch), 1);
        var c = model.Config;
        var step = train ? VariantTiming.Step.Train : inputGrad ? VariantTiming.Step.InputGrad : VariantTiming.Step.Infer;
        var saved = new Variant("", Parallelism.UseSpinPool, ManagedGemm.SharedB, AttentionKernel.Avx512Path, ManagedGemm.DirectA, !VisionTransformer.FullLastBlock,
            VisionModel.ChunkOverride >= 0, DenseCore.PrepackedInputGradient, AttentionKernel.PackOperands, ManagedGemm.PartialRowsKernel,
            !VisionTransformer.SeparateResidualAdds);
        void Set(Variant v)
        {
            Parallelism.UseSpinPool = v.SpinPool;
            ManagedGemm.SharedB = v.SharedB;
            AttentionKernel.Avx512Path = AttentionKernel.Avx2Path = v.Attention512;
            ManagedGemm.DirectA = v.DirectA;
            VisionTransformer.FullLastBlock = !v.HeadRows;
            VisionModel.ChunkOverride = v.Chunks ? 0 : -1;
            DenseCore.PrepackedInputGradient = v.PrepackedDx;
            AttentionKernel.PackOperands = v.PackedRows;
            ManagedGemm.PartialRowsKernel = v.PartialRows;
            VisionTransformer.SeparateResidualAdds = !v.FusedResidual;
        }
        List<double>[] t;
        try { t = VariantTiming.Run(model, c.InChans, c.ImageSize, c.NumClasses, batch, step, variants.Length, i => Set(variants[i]), rounds, sleep); }
        finally { Set(saved); }
        VariantTiming.Report($"{arch} batch {batch} threads {Parallelism.Threads}, {VariantTiming.Describe(step)}, {rounds} interleaved rounds, sleep {sleep} ms",
            variants.Select(v => v.Name).ToArray(), t, 24);
        return 0;
    }
}
