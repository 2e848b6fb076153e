using System.CommandLine;
using System.Globalization;
using Arwkv.Generation;
using Arwkv.Hip;
using Arwkv.IO;
using Arwkv.Tokenization;

namespace Arwkv.Cli;

/// <summary>What the commands load and read; tests replace the pieces with fakes.</summary>
internal sealed class CliHost
{
    public Func<string, ModelOptions, LanguageModel> LoadModel { get; init; } = (dir, options) => LanguageModel.Load(dir, options);
    public Func<string, ITokenCodec> LoadTokenizer { get; init; } = path => new QwenTokenCodec(QwenTokenizer.FromFile(path));
    public Func<LanguageModel, TextGenerator> CreateGenerator { get; init; } = model => new TextGenerator(model);

    /// <summary>Whether --device hip can run here (libarwkv_hip, the GPU runtime and a device), and if not, why.</summary>
    public Func<(bool Available, string Reason)> ProbeGpu { get; init; } = () => (HipRuntime.TryLoad(out string reason), reason);

    /// <summary>Loads a checkpoint onto the GPU for --device hip (called only after <see cref="ProbeGpu"/> says yes).</summary>
    public Func<string, ModelOptions, LanguageModel> LoadGpuModel { get; init; } = CliApp.LoadOnGpu;
    public TextReader Input { get; init; } = Console.In;
}

/// <summary>A mistake in the command line that the parser cannot see (e.g. a malformed id list).</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>The `arwkv` command tree.</summary>
internal static partial class CliApp
{
    public static Task<int> RunAsync(string[] args, CliHost host, TextWriter? output = null, TextWriter? error = null, CancellationToken cancellationToken = default)
    {
        var config = new InvocationConfiguration();
        if (output is not null) config.Output = output;
        if (error is not null) config.Error = error;
        // No response files: a prompt such as "@alice hi" must reach the model as written, not be read as a file name.
        var parser = new ParserConfiguration { ResponseFileTokenReplacer = null };
        return BuildRoot(host).Parse(args, parser).InvokeAsync(config, cancellationToken);
    }

    public static RootCommand BuildRoot(CliHost host)
    {
        var root = new RootCommand("arwkv: run and benchmark ARWKV models (Qwen2.5 with RWKV-7 time mixing) on the CPU, or on an AMD GPU with --device hip");
        root.Subcommands.Add(LogitsCommand(host));
        root.Subcommands.Add(TokenizeCommand(host));
        root.Subcommands.Add(BenchCommand(host));
        root.Subcommands.Add(GenerateCommand(host));
        root.Subcommands.Add(ChatCommand(host));
        root.Subcommands.Add(Commands.ConvertCommand.Create());
        root.Subcommands.Add(Commands.MakeRandomCommand.Create());
        root.Subcommands.Add(DemoCommand());
        root.Subcommands.Add(DistillCommand());
        root.Subcommands.Add(EvalCommand());
        return root;
    }

    internal delegate Task<int> CommandBody(ParseResult result, TextWriter output, TextWriter error, CancellationToken cancellationToken);

    /// <summary>Runs <paramref name="body"/> so that every failure is one line on stderr and a non-zero exit code, never a stack trace.</summary>
    internal static void SetBody(Command command, CommandBody body)
    {
        command.SetAction(async (result, cancellationToken) =>
        {
            TextWriter output = result.InvocationConfiguration.Output;
            TextWriter error = result.InvocationConfiguration.Error;
            try
            {
                if (BoundedOption.FirstViolation(command, result) is string outOfRange) throw new UsageException(outOfRange);
                return await body(result, output, error, cancellationToken);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                await output.FlushAsync(CancellationToken.None);
                error.WriteLine("arwkv: cancelled");
                return 130;
            }
            catch (Exception ex)
            {
                await output.FlushAsync(CancellationToken.None);
                error.WriteLine($"arwkv {command.Name}: {Describe(ex)}");
                if (Environment.GetEnvironmentVariable("ARWKV_DEBUG") == "1") error.WriteLine(ex);
                return ex is UsageException ? 2 : 1;
            }
        });
    }

    private static string Describe(Exception ex) => ex switch
    {
        CheckpointException or UsageException or ArgumentException or IOException or UnauthorizedAccessException
            or InvalidOperationException or OutOfMemoryException => ex.Message,
        NotImplementedException => $"not implemented in this build ({ex.Message})",
        _ => $"{ex.GetType().Name}: {ex.Message}",
    };

    // ---- shared options ----

    private static Option<string> ModelOption() => new("--model", "-m")
    {
        Description = "Checkpoint directory (config.json, *.safetensors, optional tokenizer.json)",
        Required = true,
    };

    /// <summary>Most kernel threads: far more than any core count we run on, far fewer than what aborts the runtime.</summary>
    internal const int MaxThreads = 256;

    /// <summary>Most tokens one command runs through a model (prompt, generated, or per training sequence): 4x
    /// Qwen2.5's context, and a bound on what the KV cache and activations may allocate.</summary>
    internal const int TokenLimit = 131072;

    private static Option<int> ThreadsOption() => BoundedOption.Create("--threads", "Kernel threads (default: the processor count)",
        1, MaxThreads, Math.Min(Environment.ProcessorCount, MaxThreads), aliases: "-t");

    private static Option<string> ModeOption()
    {
        var option = new Option<string>("--mode")
        {
            Description = "How multi-token inputs run: prefill (matrix-matrix) or recurrent (one token at a time)",
            DefaultValueFactory = _ => "prefill",
        };
        option.AcceptOnlyFromAmong("prefill", "recurrent");
        return option;
    }

    private static Option<string> DeviceOption()
    {
        var option = new Option<string>("--device")
        {
            Description = "Where to run: cpu, or hip (an AMD GPU through libarwkv_hip; ARWKV checkpoints only)",
            DefaultValueFactory = _ => "cpu",
        };
        option.AcceptOnlyFromAmong("cpu", "hip");
        return option;
    }

    /// <summary>
    /// Before any work: with --device hip, fails (one line, exit code 1) unless the GPU backend can run, saying what
    /// is missing (the library, the runtime or a device).
    /// </summary>
    private static void RequireDevice(CliHost host, string device)
    {
        if (device != "hip") return;
        var (available, reason) = host.ProbeGpu();
        if (!available) throw new InvalidOperationException($"--device hip: the GPU backend is unavailable: {reason} (--device cpu runs on the CPU)");
    }

    private static LanguageModel LoadModel(CliHost host, ParseResult result, Option<string> model, Option<int> threads, ForwardMode mode,
        string device = "cpu")
    {
        string dir = result.GetValue(model)!;
        int n = result.GetValue(threads);
        if (!Directory.Exists(dir)) throw new CheckpointException(dir, "model directory not found");
        var options = new ModelOptions { Threads = n, Mode = mode };
        return device == "hip" ? host.LoadGpuModel(dir, options) : host.LoadModel(dir, options);
    }

    /// <summary>The default GPU loader: <see cref="HipArwkvModel"/> with bf16 matrices; Qwen2 has no GPU model yet.</summary>
    internal static LanguageModel LoadOnGpu(string dir, ModelOptions options)
    {
        string type = ModelConfigFile.ReadModelType(dir);
        if (type != ArwkvConfig.ModelType)
            throw new UsageException($"--device hip runs ARWKV ({ArwkvConfig.ModelType}) checkpoints; {dir} is '{type}', which has no GPU " +
                "model yet: use --device cpu");
        return HipArwkvModel.Load(dir, new HipModelOptions { Mode = options.Mode });
    }

    private static ForwardMode ParseMode(string mode) => mode == "recurrent" ? ForwardMode.Recurrent : ForwardMode.Prefill;

    internal static int[] ParseIds(string text)
    {
        string[] parts = text.Split(',', StringSplitOptions.TrimEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i]))
                throw new UsageException($"--ids: '{parts[i]}' is not a token id (expected a comma-separated list such as 1,2,3)");
        }
        return ids;
    }

    private static string Format(double value) =>
        double.IsFinite(value) ? value.ToString("0.###", CultureInfo.InvariantCulture) : "0";
}
