using System.CommandLine;
using System.Diagnostics;
using Arwkv.IO;

namespace Arwkv.Cli.Commands;

/// <summary>
/// <c>arwkv make-random --out DIR [--arch arwkv|qwen2] [--preset tiny|qwen2.5-0.5b|arwkv-7b] [--dtype bf16|f16|f32] [--seed N]</c>:
/// writes an ARWKV (or, with --arch qwen2, a Qwen2 teacher) checkpoint of a real model's shape with random weights, for
/// speed measurements and for trying the distillation path at full size (no weights can be downloaded on our machines,
/// and neither speed nor memory depends on the values).
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
        var seed = BoundedOption.Create("--seed", "random seed", 0, int.MaxValue, 42);
        var arch = new Option<string>("--arch") { Description = "arwkv (a student/inference checkpoint) or qwen2 (a Qwen2ForCausalLM teacher; presets tiny and qwen2.5-0.5b, tied)", DefaultValueFactory = _ => "arwkv" };
        arch.AcceptOnlyFromAmong("arwkv", "qwen2");
        var command = new Command("make-random", "Write an ARWKV checkpoint of a real model's shape with random weights (for benchmarks)");
        command.Options.Add(output);
        command.Options.Add(preset);
        command.Options.Add(dtype);
        command.Options.Add(seed);
        command.Options.Add(arch);
        // Through the shared body, so a bad preset or a failed write is one line on stderr, not a stack trace.
        CliApp.SetBody(command, (parse, stdout, _, _) =>
        {
            DType type = parse.GetValue(dtype) switch { "f32" => DType.F32, "f16" => DType.F16, _ => DType.BF16 };
            string dir = parse.GetValue(output)!;
            var clock = Stopwatch.StartNew();
            long bytes;
            if (parse.GetValue(arch) == "qwen2")
            {
                if (parse.GetValue(preset) == "arwkv-7b") throw new UsageException("--arch qwen2 has the presets tiny and qwen2.5-0.5b");
                bytes = RandomCheckpointWriter.WriteQwen2(dir, RandomCheckpointWriter.Qwen2Preset(parse.GetValue(preset)!), type, (ulong)parse.GetValue(seed));
            }
            else
            {
                ArwkvConfig config = RandomCheckpointWriter.Preset(parse.GetValue(preset)!);
                Directory.CreateDirectory(dir);
                bytes = RandomCheckpointWriter.Write(dir, config, new ArwkvLoraRanks(), type, (ulong)parse.GetValue(seed));
            }
            stdout.WriteLine($"wrote {dir} ({bytes / 1048576.0:F0} MiB, {parse.GetValue(preset)}, {type}) in {clock.Elapsed.TotalSeconds:F1} s");
            return Task.FromResult(0);
        });
        return command;
    }
}
