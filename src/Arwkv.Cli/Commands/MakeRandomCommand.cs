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
        var seed = new Option<int>("--seed") { Description = "random seed", DefaultValueFactory = _ => 42 };
        var arch = new Option<string>("--arch") { Description = "arwkv (a student/inference checkpoint) or qwen2 (a Qwen2ForCausalLM teacher; presets tiny and qwen2.5-0.5b, tied)", DefaultValueFactory = _ => "arwkv" };
        arch.AcceptOnlyFromAmong("arwkv", "qwen2");
        var command = new Command("make-random", "Write an ARWKV checkpoint of a real model's shape with random weights (for benchmarks)");
        command.Options.Add(output);
        command.Options.Add(preset);
        command.Options.Add(dtype);
        command.Options.Add(seed);
        command.Options.Add(arch);
        command.SetAction(parse =>
        {
            DType type = parse.GetValue(dtype) switch { "f32" => DType.F32, "f16" => DType.F16, _ => DType.BF16 };
            string dir = parse.GetValue(output)!;
            var clock = Stopwatch.StartNew();
            long bytes;
            if (parse.GetValue(arch) == "qwen2")
            {
                Qwen2Config teacher = parse.GetValue(preset) switch
                {
                    "tiny" => new Qwen2Config { HiddenSize = 64, NumLayers = 2, IntermediateSize = 160, VocabSize = 512, NumAttentionHeads = 4, NumKeyValueHeads = 2 },
                    "qwen2.5-0.5b" => new Qwen2Config
                    {
                        HiddenSize = 896, NumLayers = 24, IntermediateSize = 4864, VocabSize = 151936, NumAttentionHeads = 14, NumKeyValueHeads = 2,
                        RopeTheta = 1000000, TieWordEmbeddings = true, EosTokenIds = [151645, 151643],
                    },
                    _ => throw new UsageException("--arch qwen2 has the presets tiny and qwen2.5-0.5b"),
                };
                bytes = WriteRandomQwen2(dir, teacher, type, (ulong)parse.GetValue(seed));
            }
            else
            {
                ArwkvConfig config = RandomCheckpointWriter.Preset(parse.GetValue(preset)!);
                Directory.CreateDirectory(dir);
                bytes = RandomCheckpointWriter.Write(dir, config, new ArwkvLoraRanks(), type, (ulong)parse.GetValue(seed));
            }
            Console.WriteLine($"wrote {dir} ({bytes / 1048576.0:F0} MiB, {parse.GetValue(preset)}, {type}) in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }

    /// <summary>A random Qwen2 teacher: matrices scaled by 1/sqrt(fan-in), norms near one, small biases.</summary>
    private static long WriteRandomQwen2(string directory, Qwen2Config config, DType type, ulong seed)
    {
        var random = new Arwkv.Training.Data.SplitMix64(seed);
        var tensors = new Dictionary<string, float[]>();
        foreach (var (name, shape) in Qwen2Checkpoint.TensorShapes(config))
        {
            var values = new float[shape.Aggregate(1L, (a, b) => a * b)];
            var (lo, hi) = name.EndsWith(".bias", StringComparison.Ordinal) ? (-0.1, 0.1) : RandomCheckpointWriter.Range(name, shape);
            for (long i = 0; i < values.LongLength; i++) values[i] = (float)(lo + (hi - lo) * ((random.Next() >> 11) * (1.0 / (1UL << 53))));
            tensors[name] = values;
        }
        Qwen2Checkpoint.Write(directory, config, tensors, type);
        return new FileInfo(Path.Combine(directory, "model.safetensors")).Length;
    }
}
