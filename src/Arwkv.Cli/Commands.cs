using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Numerics.Tensors;
using Arwkv.Generation;
using Arwkv.Tokenization;

namespace Arwkv.Cli;

internal static partial class CliApp
{
    // ---- logits ----

    private static Command LogitsCommand(CliHost host)
    {
        var model = ModelOption();
        var ids = new Option<string>("--ids") { Description = "Comma-separated token ids, e.g. 1,2,3", Required = true };
        var outPath = new Option<string>("--out", "-o") { Description = "Output .npy file: float32 logits [tokens, vocab]", Required = true };
        var mode = ModeOption();
        var threads = ThreadsOption();
        var device = DeviceOption();
        var command = new Command("logits", "Write the logits of every position of a token sequence to a NumPy .npy file")
        {
            model, ids, outPath, mode, threads, device,
        };
        SetBody(command, (result, output, error, _) =>
        {
            string deviceName = result.GetValue(device)!;
            RequireDevice(host, deviceName);
            int[] tokens = ParseIds(result.GetValue(ids)!);
            string path = result.GetValue(outPath)!;
            // Before the model runs: an output that is a device, a directory or one of the checkpoint's files fails first.
            IReadOnlyList<string> inputs = Arwkv.IO.SafeTensorsCheckpoint.InputFiles(result.GetValue(model)!);
            Arwkv.IO.AtomicFile.ResolveTarget(path, inputs);
            using LanguageModel lm = LoadModel(host, result, model, threads, ParseMode(result.GetValue(mode)!), deviceName);
            int vocab = lm.VocabSize;
            foreach (int id in tokens)
                if (id >= vocab) throw new UsageException($"--ids: token id {id} is outside the model's vocabulary [0, {vocab})");
            long count = (long)tokens.Length * vocab;
            if (count > Array.MaxLength) throw new UsageException($"{tokens.Length} tokens x {vocab} logits do not fit in one array; pass fewer ids");
            var logits = new float[count];
            lm.Forward(tokens, lm.CreateState(), logits, LogitsScope.All);
            Npy.WriteFloat32(path, inputs, logits, tokens.Length, vocab);
            output.WriteLine($"wrote {path}: float32 [{tokens.Length}, {vocab}]");
            return Task.FromResult(0);
        });
        return command;
    }

    // ---- tokenize ----

    private static Command TokenizeCommand(CliHost host)
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "Path of a Hugging Face tokenizer.json", Required = true };
        var textFile = new Option<string>("--text-file") { Description = "UTF-8 text file to encode (read exactly, trailing newline included)", Required = true };
        var chat = new Option<bool>("--chat") { Description = "Render the text as one user message with the ChatML template first" };
        var generationPrompt = new Option<bool>("--add-generation-prompt")
        {
            Description = "With --chat: end with the assistant's turn header (default true)",
            DefaultValueFactory = _ => true,
        };
        var command = new Command("tokenize", "Print the token ids of a text file as a JSON array (no special tokens added)")
        {
            tokenizer, textFile, chat, generationPrompt,
        };
        SetBody(command, (result, output, _, _) =>
        {
            string file = result.GetValue(textFile)!;
            if (!File.Exists(file)) throw new IOException($"{file}: text file not found");
            string text = File.ReadAllText(file);
            ITokenCodec codec = host.LoadTokenizer(result.GetValue(tokenizer)!);
            if (result.GetValue(chat))
                text = codec.ApplyChatTemplate([new ChatTurn("user", text)], result.GetValue(generationPrompt));
            int[] ids = codec.Encode(text);
            output.WriteLine("[" + string.Join(",", ids) + "]");
            return Task.FromResult(0);
        });
        return command;
    }

    // ---- bench ----

    private static Command BenchCommand(CliHost host)
    {
        var model = ModelOption();
        var promptTokens = BoundedOption.Create("--prompt-tokens", "Prompt length for the prefill measurement", 1, TokenLimit, 128);
        var newTokens = BoundedOption.Create("--new-tokens", "Tokens decoded one at a time (greedy)", 1, TokenLimit, 32);
        var threads = ThreadsOption();
        var mode = ModeOption();
        var seed = BoundedOption.Create("--seed", "Seed of the random prompt ids", int.MinValue, int.MaxValue, 1234);
        var repeat = BoundedOption.Create("--repeat", "Timed runs (after one untimed warm-up); the JSON reports the median of each rate", 1, 1000, 1);
        var profile = new Option<bool>("--profile") { Description = "Also print where the prefill's time goes, phase by phase (ARWKV models on the CPU)" };
        var device = DeviceOption();
        var command = new Command("bench", "Measure prefill and decode speed on random token ids; the last line is JSON")
        {
            model, promptTokens, newTokens, threads, mode, seed, repeat, profile, device,
        };
        SetBody(command, (result, output, error, cancellationToken) =>
        {
            int prompt = result.GetValue(promptTokens), decode = result.GetValue(newTokens);
            string deviceName = result.GetValue(device)!;
            RequireDevice(host, deviceName);
            using LanguageModel lm = LoadModel(host, result, model, threads, ParseMode(result.GetValue(mode)!), deviceName);
            var random = new Random(result.GetValue(seed));
            var ids = new int[prompt];
            for (int i = 0; i < ids.Length; i++) ids[i] = random.Next(lm.VocabSize);
            var logits = new float[lm.VocabSize];

            error.WriteLine(deviceName == "hip"
                ? $"bench: {lm.Architecture}, vocab {lm.VocabSize}, --device hip on {(lm is Arwkv.Hip.HipArwkvModel ? Arwkv.Hip.HipRuntime.GetDeviceInfo().Name : "?")}"
                : $"bench: {lm.Architecture}, vocab {lm.VocabSize}, {result.GetValue(threads)} threads, kernels {Arwkv.Kernels.MatMul.DetectedIsa}");
            // The same work once, untimed (as llama-bench and our llama.cpp bench.mjs do): the JIT's tiers, the first
            // touch of the memory-mapped weights and the pool's start-up are not what a prefill or decode costs.
            error.WriteLine("bench: warm-up (the same work, untimed)");
            RunOnce(lm, ids, decode, logits, cancellationToken);
            int runs = result.GetValue(repeat);
            var prefillRates = new double[runs];
            var decodeRates = new double[runs];
            bool profiling = result.GetValue(profile);
            Arwkv.Diagnostics.ForwardProfile.Reset();
            double profiledSeconds = 0;
            for (int run = 0; run < runs; run++)
            {
                error.WriteLine($"bench: prefill {prompt} tokens, then decode {decode} tokens");
                (TimeSpan prefillTime, TimeSpan decodeTime) = RunOnce(lm, ids, decode, logits, cancellationToken, profiling);
                profiledSeconds += prefillTime.TotalSeconds;
                prefillRates[run] = prompt / Math.Max(prefillTime.TotalSeconds, 1e-9);
                decodeRates[run] = decode / Math.Max(decodeTime.TotalSeconds, 1e-9);
                error.WriteLine($"bench: prefill {prefillTime.TotalSeconds:F3} s ({prefillRates[run]:F2} tok/s), decode {decodeTime.TotalSeconds:F3} s ({decodeRates[run]:F2} tok/s)");
            }
            if (profiling) PrintProfile(error, profiledSeconds, runs, result.GetValue(threads));
            Array.Sort(prefillRates);
            Array.Sort(decodeRates);
            double prefillRate = prefillRates[runs / 2], decodeRate = decodeRates[runs / 2];
            if (runs > 1)
                error.WriteLine($"bench: {runs} runs; prefill median {prefillRate:F2} best {prefillRates[^1]:F2} tok/s, decode median {decodeRate:F2} best {decodeRates[^1]:F2} tok/s");
            error.Flush();
            output.WriteLine($"{{\"prefill_tokens_per_s\": {Format(prefillRate)}, \"decode_tokens_per_s\": {Format(decodeRate)}}}");
            return Task.FromResult(0);
        });
        return command;
    }

    /// <summary>The prefill's time per phase, averaged over the timed runs, as a table on standard error.</summary>
    private static void PrintProfile(TextWriter error, double prefillSeconds, int runs, int threads)
    {
        var totals = Arwkv.Diagnostics.ForwardProfile.Totals;
        var workerTotals = Arwkv.Diagnostics.ForwardProfile.WorkerTotals;
        double sum = totals.Sum(t => t.Seconds);
        if (sum == 0)
        {
            error.WriteLine("bench: --profile has no phases for this architecture");
            return;
        }
        error.WriteLine($"bench: prefill time by phase (mean of {runs} run(s)):");
        // How much of the phase the threads other than the caller spent on work: the caller is busy throughout, so the
        // rest of this column is the idle share of the worker threads (serial code, imbalance, hand-off latency).
        error.WriteLine("| phase | ms | share | other threads busy |");
        error.WriteLine("|---|---:|---:|---:|");
        for (int i = 0; i < totals.Count; i++)
        {
            var (phase, seconds) = totals[i];
            // A worker adds its time when it leaves a job, which can be just after the caller has moved on to the next
            // phase: for a phase of under 1% that slip dominates, so none is shown.
            string busy = threads > 1 && seconds > 0.01 * prefillSeconds
                ? Math.Min(1, workerTotals[i].Seconds / (seconds * (threads - 1))).ToString("P0", CultureInfo.InvariantCulture) : "-";
            error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {phase} | {seconds * 1e3 / runs:F1} | {seconds / prefillSeconds:P1} | {busy} |"));
        }
        error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| (not in a phase) | {(prefillSeconds - sum) * 1e3 / runs:F1} | {(prefillSeconds - sum) / prefillSeconds:P1} | - |"));
    }

    /// <summary>Prefills <paramref name="prompt"/> into a fresh state, then decodes greedily one token at a time.</summary>
    private static (TimeSpan Prefill, TimeSpan Decode) RunOnce(LanguageModel lm, ReadOnlySpan<int> prompt, int decode, float[] logits,
        CancellationToken cancellationToken, bool profilePrefill = false)
    {
        ModelState state = lm.CreateState();
        Arwkv.Diagnostics.ForwardProfile.Enabled = profilePrefill;
        long start = Stopwatch.GetTimestamp();
        lm.Forward(prompt, state, logits, LogitsScope.Last);
        TimeSpan prefill = Stopwatch.GetElapsedTime(start);
        Arwkv.Diagnostics.ForwardProfile.Enabled = false;
        Span<int> one = stackalloc int[1];
        start = Stopwatch.GetTimestamp();
        for (int i = 0; i < decode; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            one[0] = TensorPrimitives.IndexOfMax(logits);
            lm.Forward(one, state, logits, LogitsScope.Last);
        }
        return (prefill, Stopwatch.GetElapsedTime(start));
    }

    // ---- generate and chat ----

    private sealed record SamplingArguments(
        Option<int> MaxTokens, Option<float> Temperature, Option<int> TopK, Option<float> TopP,
        Option<float> RepetitionPenalty, Option<long?> Seed)
    {
        public static SamplingArguments Create(Command command)
        {
            SamplingOptions d = SamplingOptions.Recommended;
            var args = new SamplingArguments(
                BoundedOption.Create("--max-tokens", "Most tokens to generate", 1, TokenLimit, 256, aliases: "-n"),
                BoundedOption.Create("--temperature", "Sampling temperature; 0 = greedy", 0f, 100f, d.Temperature),
                BoundedOption.Create("--top-k", "Keep the k most likely tokens; 0 = all", 0, 10_000_000, d.TopK),
                BoundedOption.Create("--top-p", "Nucleus: keep the most likely tokens up to this probability mass", 0f, 1f, d.TopP, minExclusive: true),
                BoundedOption.Create("--repetition-penalty", "Divide positive / multiply negative logits of recent tokens; 1 = off", 0f, 100f, d.RepetitionPenalty, minExclusive: true),
                BoundedOption.CreateOptional("--seed", "Random seed (default: random)", long.MinValue, long.MaxValue));
            command.Options.Add(args.MaxTokens);
            command.Options.Add(args.Temperature);
            command.Options.Add(args.TopK);
            command.Options.Add(args.TopP);
            command.Options.Add(args.RepetitionPenalty);
            command.Options.Add(args.Seed);
            return args;
        }

        public GenerationOptions Read(ParseResult result)
        {
            var options = new GenerationOptions
            {
                MaxTokens = result.GetValue(MaxTokens),
                Sampling = new SamplingOptions
                {
                    Temperature = result.GetValue(Temperature),
                    TopK = result.GetValue(TopK),
                    TopP = result.GetValue(TopP),
                    RepetitionPenalty = result.GetValue(RepetitionPenalty),
                    Seed = result.GetValue(Seed),
                },
            };
            if (options.MaxTokens < 1) throw new UsageException($"--max-tokens must be at least 1, got {options.MaxTokens}");
            try
            {
                options.Sampling.Validate();
            }
            catch (ArgumentException ex)
            {
                throw new UsageException(ex.Message);
            }
            return options;
        }
    }

    private static Command GenerateCommand(CliHost host)
    {
        var model = ModelOption();
        var prompt = new Option<string>("--prompt", "-p") { Description = "Text to continue (or, with --chat, the user's message)", Required = true };
        var chat = new Option<bool>("--chat") { Description = "Send the prompt as a user message through the ChatML template" };
        var system = new Option<string?>("--system") { Description = "With --chat: a system message" };
        var threads = ThreadsOption();
        var device = DeviceOption();
        var command = new Command("generate", "Generate text from a prompt, streaming it to stdout") { model, prompt, chat, system, threads, device };
        SamplingArguments sampling = SamplingArguments.Create(command);
        SetBody(command, async (result, output, error, cancellationToken) =>
        {
            string deviceName = result.GetValue(device)!;
            RequireDevice(host, deviceName);
            GenerationOptions options = sampling.Read(result);
            using LanguageModel lm = LoadModel(host, result, model, threads, ForwardMode.Prefill, deviceName);
            TextGenerator generator = host.CreateGenerator(lm);
            string text = result.GetValue(prompt)!;
            IAsyncEnumerable<GeneratedToken> tokens;
            if (result.GetValue(chat))
            {
                var turns = new List<ChatTurn>();
                if (result.GetValue(system) is { Length: > 0 } s) turns.Add(new ChatTurn("system", s));
                turns.Add(new ChatTurn("user", text));
                tokens = generator.GenerateAsync(turns, options, null, cancellationToken);
            }
            else
            {
                tokens = generator.GenerateAsync(text, options, null, cancellationToken);
            }
            GenerationStats? stats = await Stream(tokens, output);
            output.WriteLine();
            output.Flush();
            if (stats is not null) error.WriteLine(StatsLine(stats));
            return 0;
        });
        return command;
    }

    private static async Task<GenerationStats?> Stream(IAsyncEnumerable<GeneratedToken> tokens, TextWriter output)
    {
        GenerationStats? stats = null;
        await foreach (GeneratedToken token in tokens)
        {
            stats = token.Stats;
            if (token.Text.Length > 0)
            {
                output.Write(token.Text);
                output.Flush();
            }
        }
        return stats;
    }

    private static string StatsLine(GenerationStats stats) =>
        $"[{stats.PromptTokens} prompt tokens, {stats.PrefillTokensPerSecond:F2} tok/s prefill; {stats.GeneratedTokens} tokens, " +
        $"{stats.DecodeTokensPerSecond:F2} tok/s decode; finish: {stats.FinishReason?.ToString().ToLowerInvariant() ?? "none"}]";

    private static Command ChatCommand(CliHost host)
    {
        var model = ModelOption();
        var system = new Option<string?>("--system") { Description = "A system message for the conversation" };
        var threads = ThreadsOption();
        var device = DeviceOption();
        var command = new Command("chat", "Interactive chat; the model state is kept between turns. /reset starts over, /exit quits")
        {
            model, system, threads, device,
        };
        SamplingArguments sampling = SamplingArguments.Create(command);
        SetBody(command, async (result, output, error, cancellationToken) =>
        {
            string deviceName = result.GetValue(device)!;
            RequireDevice(host, deviceName);
            GenerationOptions options = sampling.Read(result);
            using LanguageModel lm = LoadModel(host, result, model, threads, ForwardMode.Prefill, deviceName);
            TextGenerator generator = host.CreateGenerator(lm);
            if (!generator.HasTokenizer) throw new InvalidOperationException("chat needs tokenizer.json in the model directory");
            var session = new ChatSession(generator, result.GetValue(system));
            error.WriteLine("arwkv chat: type a message; /reset starts over, /exit quits");
            while (true)
            {
                error.Write("> ");
                error.Flush();
                string? line = host.Input.ReadLine();
                if (line is null) break;
                line = line.Trim();
                if (line.Length == 0) continue;
                if (line == "/exit" || line == "/quit") break;
                if (line == "/reset")
                {
                    session.Reset();
                    error.WriteLine("(conversation reset)");
                    continue;
                }
                GenerationStats? stats = await Stream(session.ReplyAsync(line, options, cancellationToken), output);
                output.WriteLine();
                output.Flush();
                if (stats is not null) error.WriteLine(StatsLine(stats));
            }
            return 0;
        });
        return command;
    }
}

/// <summary>
/// A ChatML conversation kept in the model state: each turn feeds only the new user message, not the whole history.
/// </summary>
internal sealed class ChatSession(TextGenerator generator, string? systemMessage)
{
    private readonly ModelState _state = generator.Model.CreateState();
    private bool _started;
    private bool _closedTurn;

    public void Reset()
    {
        _state.Reset();
        _started = false;
    }

    /// <summary>The token ids that add <paramref name="message"/> as the next user turn and open the assistant's reply.</summary>
    public int[] NextPrompt(string message)
    {
        if (!_started)
        {
            var turns = new List<ChatTurn>();
            if (!string.IsNullOrEmpty(systemMessage)) turns.Add(new ChatTurn("system", systemMessage));
            turns.Add(new ChatTurn("user", message));
            return generator.EncodeChat(turns);
        }
        // The state has seen the last reply up to and including its stop token; close the turn if that was not <|im_end|>.
        string close = _closedTurn ? "" : "<|im_end|>";
        return generator.Encode($"{close}\n<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n");
    }

    public async IAsyncEnumerable<GeneratedToken> ReplyAsync(string message, GenerationOptions options,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        int[] prompt = NextPrompt(message);
        _started = true;
        _closedTurn = false;
        int? imEnd = generator.ImEndId;
        await foreach (GeneratedToken token in generator.GenerateAsync(prompt, options, _state, cancellationToken))
        {
            if (token.FinishReason is not null) _closedTurn = token.Id == imEnd && token.FinishReason == GenerationFinishReason.Stop;
            yield return token;
        }
    }
}
