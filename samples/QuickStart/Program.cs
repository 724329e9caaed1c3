// Quantize the embedded Fashion-MNIST ViT with ADFQ-ViT at W4A4 (a small budget), compare float and
// quantized top-1 on 1,000 test images, and save the checkpoint and its ONNX graph in the current folder.
using System.Text.Json;
using ViTQuant.Api;

var progress = new ConsoleProgress();
var model = Vitq.LoadModel(); // null path: the default model embedded in the package
var calibration = CalibrationData.FashionMnist(model.Config, count: 128, seed: 0);
var options = new QuantizeOptions { Method = "adfq", WeightBits = 4, ActivationBits = 4, AdfqIterations = 20 };
var quantized = Vitq.Quantize(model, calibration, options, progress);

var test = Vitq.OpenDataset(model.Config, "fashion-mnist", split: "test", limit: 1000);
var floatResult = Vitq.Evaluate(model, test, progress: progress);
var quantizedResult = Vitq.Evaluate(quantized.Model, test, progress: progress);

quantized.Save("quickstart-w4a4.safetensors", overwrite: true);
quantized.ExportOnnx("quickstart-w4a4.onnx", overwrite: true);
Console.Error.WriteLine($"\nsaved quickstart-w4a4.safetensors and quickstart-w4a4.onnx in {Environment.CurrentDirectory}");
Console.WriteLine(JsonSerializer.Serialize(new { float_top1 = floatResult.Top1, quantized_top1 = quantizedResult.Top1 }));

// One status line per stage on stderr, rewritten in place, so stdout carries only the JSON.
sealed class ConsoleProgress : IProgress<OperationProgress>
{
    private string? _stage;

    public void Report(OperationProgress p)
    {
        if (_stage != null && (p.Stage != _stage || p.Step == 0)) Console.Error.WriteLine();
        _stage = p.Stage;
        Console.Error.Write($"\r{p.Stage,-22} {p.Step,6}/{p.Total,-6} {p.Fraction,4:P0} {p.Message,-36}");
    }
}
