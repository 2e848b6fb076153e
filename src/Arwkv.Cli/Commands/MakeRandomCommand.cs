using System.CommandLine;
using System.Diagnostics;
using Arwkv.IO;

namespace Arwkv.Cli.Commands;

/// <summary>
/// <c>arwkv make-random --out DIR [--preset tiny|qwen2.5-0.5b|arwkv-7b] [--dtype bf16|f16|f32] [--seed N]</c>: writes an
/// ARWKV checkpoint of a real model's shape with random weights, for speed measurements (no weights can be downloaded
/// on our machines, and speed does not depend on the values).
/// </summary>
internal static class MakeRandomCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "checkpoint directory to write", Required = true };
        var preset = new Option<string>("--preset") { Description = "shape: tiny, qwen2.5-0.5b or arwkv-7b", DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong("tiny", "qwen2.5-0.5b", "arwkv-7b");
        var dtype = new Option<string>("--dtype") { Description = "storage type: bf16, f16 or f32", DefaultValueFactory = _ => "bf16" };
        dtype.AcceptOnlyFromAmong("bf16", "f16", "f32");
        var seed = new Option<int>("--seed") { Description = "random seed", DefaultValueFactory = _ => 42 };
        var command = new Command("make-random", "Write an ARWKV checkpoint of a real model's shape with random weights (for benchmarks)");
        command.Options.Add(output);
        command.Options.Add(preset);
        command.Options.Add(dtype);
        command.Options.Add(seed);
        command.SetAction(parse =>
        {
            DType type = parse.GetValue(dtype) switch { "f32" => DType.F32, "f16" => DType.F16, _ => DType.BF16 };
            string dir = parse.GetValue(output)!;
            ArwkvConfig config = RandomCheckpointWriter.Preset(parse.GetValue(preset)!);
            Directory.CreateDirectory(dir);
            var clock = Stopwatch.StartNew();
            long bytes = RandomCheckpointWriter.Write(dir, config, new ArwkvLoraRanks(), type, (ulong)parse.GetValue(seed));
            Console.WriteLine($"wrote {dir} ({bytes / 1048576.0:F0} MiB, {parse.GetValue(preset)}, {type}) in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }
}
