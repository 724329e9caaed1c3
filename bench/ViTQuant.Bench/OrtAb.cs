// ONNX Runtime on our float export with the last block for the head's tokens (the default) against the full graph
// (OnnxExporter.FullLastBlock), the two sessions timed call by call in turn in one process, a short pause before each.
//   dotnet run -c Release --project bench/ViTQuant.Bench -- ort-ab [--arch A] [--batch B] [--threads T] [--iters N]
using System.Diagnostics;
using ViTQuant.Export;
using ViTQuant.Models;
using ViTQuant.Onnx;
using ViTQuant.Tensors;

namespace ViTQuant.Bench;

internal static class OrtAb
{
    public static int Run(string[] args)
    {
        string arch = "deit_tiny_patch16_224";
        int batch = 8, threads = 2, iters = 21;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--arch": arch = args[i + 1]; break;
                case "--batch": batch = int.Parse(args[i + 1]); break;
                case "--threads": threads = int.Parse(args[i + 1]); break;
                case "--iters": iters = int.Parse(args[i + 1]); break;
                default: Console.Error.WriteLine($"ort-ab: unknown argument '{args[i]}'"); return 2;
            }
        }
        var model = new VisionTransformer(ViTConfig.FromArchitecture(arch), 1);
        var c = model.Config;
        var dir = Directory.CreateTempSubdirectory("vitq-ort-ab-");
        try
        {
            string st = Path.Combine(dir.FullName, "m.safetensors"), rows = Path.Combine(dir.FullName, "rows.onnx"), full = Path.Combine(dir.FullName, "full.onnx");
            ModelIO.Save(model, st);
            OnnxExporter.ExportFile(st, rows, new OnnxExportOptions());
            OnnxExporter.FullLastBlock = true;
            try { OnnxExporter.ExportFile(st, full, new OnnxExportOptions()); }
            finally { OnnxExporter.FullLastBlock = false; }
            var x = Tensor.Randn(new Rng(2), 1f, batch, c.InChans, c.ImageSize, c.ImageSize);
            using var er = new OnnxEngine(rows, new OnnxEngineOptions { Threads = threads });
            using var ef = new OnnxEngine(full, new OnnxEngineOptions { Threads = threads });
            er.Run(x);
            ef.Run(x);
            var tr = new List<double>();
            var tf = new List<double>();
            for (int i = 0; i < iters; i++)
            {
                Thread.Sleep(50);
                var sw = Stopwatch.StartNew();
                er.Run(x);
                tr.Add(sw.Elapsed.TotalMilliseconds);
                Thread.Sleep(50);
                sw.Restart();
                ef.Run(x);
                tf.Add(sw.Elapsed.TotalMilliseconds);
            }
            tr.Sort();
            tf.Sort();
            Console.WriteLine($"{arch} batch {batch} threads {threads}, ORT float, {iters} alternating calls: head's rows median {tr[iters / 2]:F2} ms "
                + $"(fastest {tr[0]:F2}), full last block {tf[iters / 2]:F2} ms (fastest {tf[0]:F2}); full / head's rows {tf[iters / 2] / tr[iters / 2]:F3}");
            return 0;
        }
        finally { dir.Delete(recursive: true); }
    }
}
