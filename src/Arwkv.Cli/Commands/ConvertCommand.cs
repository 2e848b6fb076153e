using System.CommandLine;
using System.Diagnostics;
using Arwkv.IO;

namespace Arwkv.Cli.Commands;

/// <summary>
/// <c>arwkv convert CHECKPOINT_DIR -o MODEL.gguf [--type f32|f16|bf16|q8_0|keep]</c>: writes an llama.cpp <c>arwkv7</c>
/// GGUF from a Hugging Face ARWKV checkpoint. Wire it up with <c>root.Subcommands.Add(ConvertCommand.Create())</c>.
/// </summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var checkpoint = new Argument<string>("checkpoint") { Description = "ARWKV checkpoint directory (config.json, *.safetensors, optional tokenizer.json)" };
        var output = new Option<string>("--output", "-o") { Description = "GGUF file to write", Required = true };
        var type = new Option<string>("--type")
        {
            Description = "storage type of the matrices: f32, f16, bf16, q8_0 (ggml blocks; the LoRAs stay as in the checkpoint), or keep (as in the checkpoint); vectors are always f32",
            DefaultValueFactory = _ => "keep",
        };
        type.AcceptOnlyFromAmong("f32", "f16", "bf16", "q8_0", "keep");
        var command = new Command("convert", "Convert an ARWKV checkpoint to an llama.cpp GGUF (arch arwkv7)");
        command.Arguments.Add(checkpoint);
        command.Options.Add(output);
        command.Options.Add(type);
        command.SetAction(parse => Run(parse.GetValue(checkpoint)!, parse.GetValue(output)!, parse.GetValue(type) ?? "keep", Console.Out, Console.Error));
        return command;
    }

    /// <summary>Runs the conversion; returns the process exit code (0, or 1 with the problem on <paramref name="error"/>).</summary>
    public static int Run(string checkpointDirectory, string outputPath, string type, TextWriter output, TextWriter error)
    {
        DType? matrixType = type.ToLowerInvariant() switch
        {
            "f32" => DType.F32,
            "f16" => DType.F16,
            "bf16" => DType.BF16,
            "q8_0" => DType.Q8_0,
            "keep" => null,
            _ => throw new ArgumentException($"unknown type '{type}' (f32, f16, bf16, q8_0, keep)", nameof(type)),
        };
        var clock = Stopwatch.StartNew();
        try
        {
            GgufExporter.Export(checkpointDirectory, outputPath, new GgufExportOptions { MatrixType = matrixType });
        }
        catch (CheckpointException e)
        {
            error.WriteLine($"arwkv convert: {e.Message}");
            return 1;
        }
        catch (IOException e)
        {
            // The writer's own refusals already name the path.
            error.WriteLine(e.Message.Contains(outputPath, StringComparison.Ordinal) ? $"arwkv convert: {e.Message}" : $"arwkv convert: {outputPath}: {e.Message}");
            return 1;
        }
        // Of the file written, through the handle: for a link, FileInfo.Length is the link's own size.
        using var written = File.OpenHandle(AtomicFile.ResolveTarget(outputPath));
        long bytes = RandomAccess.GetLength(written);
        output.WriteLine($"wrote {outputPath} ({bytes / 1048576.0:F1} MiB, {GgufExporter.Architecture}) in {clock.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
}
