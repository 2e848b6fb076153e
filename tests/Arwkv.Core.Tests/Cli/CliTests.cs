using System.Text.Json;
using Arwkv.Cli;
using Arwkv.Generation;
using Arwkv.IO;
using Arwkv.Tests.Generation;
using static Arwkv.Tests.Generation.FakeCodec;

namespace Arwkv.Tests.Cli;

public class CliTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("arwkv-cli-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static async Task<(int Code, string Out, string Err)> Run(CliHost host, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, host, output, error);
        return (code, output.ToString(), error.ToString());
    }

    private static CliHost Host(FakeModel model, TextReader? input = null) => new()
    {
        LoadModel = (_, options) =>
        {
            model.LoadedWith.Add(options);
            return model;
        },
        LoadTokenizer = _ => new FakeCodec(),
        CreateGenerator = m => new TextGenerator(m, new FakeCodec()),
        Input = input ?? new StringReader(""),
    };

    private static CliHost WithGpu(CliHost host, Func<(bool, string)> probe, Func<string, ModelOptions, LanguageModel> loadGpu) => new()
    {
        LoadModel = host.LoadModel,
        LoadTokenizer = host.LoadTokenizer,
        CreateGenerator = host.CreateGenerator,
        Input = host.Input,
        ProbeGpu = probe,
        LoadGpuModel = loadGpu,
    };

    /// <summary>Logits that identify the position and token: row t, entry i = 1000 t + 10 token + i / V.</summary>
    private static FakeModel PositionModel(int vocab) => new(vocab, (seen, logits) =>
    {
        for (int i = 0; i < logits.Length; i++) logits[i] = 1000f * (seen.Count - 1) + 10f * seen[^1] + i / (float)vocab;
    });

    private static void AssertOneLineError(string err, string contains)
    {
        Assert.That(err, Does.Contain(contains));
        Assert.That(err.TrimEnd().Split('\n'), Has.Length.EqualTo(1), err);
        Assert.That(err, Does.Not.Contain("   at "), "no stack trace");
    }

    [Test]
    public async Task LogitsWritesEveryPositionAsNpy()
    {
        var model = PositionModel(7);
        string outPath = Path.Combine(_dir, "logits.npy");
        var (code, stdout, _) = await Run(Host(model), "logits", "--model", _dir, "--ids", "3, 1,4", "--out", outPath);
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("[3, 7]"));
        (float[] data, long[] shape) = Npy.ReadFloat32(outPath);
        Assert.That(shape, Is.EqualTo(new long[] { 3, 7 }));
        int[] ids = [3, 1, 4];
        for (int t = 0; t < 3; t++)
            for (int i = 0; i < 7; i++)
                Assert.That(data[t * 7 + i], Is.EqualTo(1000f * t + 10f * ids[t] + i / 7f));
        Assert.That(model.Calls, Is.EqualTo(new[] { (3, LogitsScope.All) }));
        Assert.That(model.LoadedWith[0].Mode, Is.EqualTo(ForwardMode.Prefill));
        Assert.That(model.Disposed, Is.True);
    }

    [Test]
    public async Task LogitsPassesModeAndThreads()
    {
        var model = PositionModel(5);
        var (code, _, _) = await Run(Host(model), "logits", "--model", _dir, "--ids", "1", "--out", Path.Combine(_dir, "a.npy"), "--mode", "recurrent", "--threads", "3");
        Assert.That(code, Is.Zero);
        Assert.That(model.LoadedWith.Single(), Is.EqualTo(new ModelOptions { Mode = ForwardMode.Recurrent, Threads = 3 }));
    }

    [Test]
    public async Task HipDeviceUnavailable_OneLineSaysWhyAndNothingLoads()
    {
        var model = PositionModel(5);
        const string why = "libarwkv_hip.so was not found. Searched: /x/libarwkv_hip.so";
        var host = WithGpu(Host(model), () => (false, why), (_, _) => throw new AssertionException("the GPU loader must not run"));
        foreach (string[] args in new[]
                 {
                     new[] { "logits", "--model", _dir, "--ids", "1", "--out", Path.Combine(_dir, "a.npy"), "--device", "hip" },
                     new[] { "generate", "--model", _dir, "--prompt", "a", "--device", "hip" },
                     new[] { "bench", "--model", _dir, "--device", "hip" },
                     new[] { "chat", "--model", _dir, "--device", "hip" },
                 })
        {
            var (code, _, err) = await Run(host, args);
            Assert.That(code, Is.EqualTo(1), args[0]);
            AssertOneLineError(err, $"arwkv {args[0]}: --device hip: the GPU backend is unavailable: {why}");
        }
        Assert.That(model.LoadedWith, Is.Empty);
        Assert.That(File.Exists(Path.Combine(_dir, "a.npy")), Is.False);
    }

    [Test]
    public async Task HipDevice_LoadsThroughTheGpuLoaderOnly()
    {
        var cpu = PositionModel(5);
        var gpu = PositionModel(5);
        var host = WithGpu(Host(cpu), () => (true, ""), (_, options) =>
        {
            gpu.LoadedWith.Add(options);
            return gpu;
        });
        var (code, _, err) = await Run(host, "logits", "--model", _dir, "--ids", "1,2", "--out", Path.Combine(_dir, "a.npy"), "--device", "hip",
            "--mode", "recurrent");
        Assert.That(code, Is.Zero, err);
        (code, _, err) = await Run(host, "generate", "--model", _dir, "--prompt", "a", "--device", "hip", "--max-tokens", "2");
        Assert.That(code, Is.Zero, err);
        Assert.That(cpu.LoadedWith, Is.Empty);
        Assert.That(gpu.LoadedWith.Select(o => o.Mode), Is.EqualTo(new[] { ForwardMode.Recurrent, ForwardMode.Prefill }));
        Assert.That(gpu.Calls[0], Is.EqualTo((2, LogitsScope.All)));
    }

    [TestCase("1,x", "'x' is not a token id")]
    [TestCase("1,,2", "'' is not a token id")]
    [TestCase("1,-2", "'-2' is not a token id")]
    [TestCase("1,5", "token id 5 is outside")]
    public async Task BadIdsGiveOneClearLine(string ids, string message)
    {
        var (code, _, err) = await Run(Host(PositionModel(5)), "logits", "--model", _dir, "--ids", ids, "--out", Path.Combine(_dir, "a.npy"));
        Assert.That(code, Is.Not.Zero);
        AssertOneLineError(err, message);
        Assert.That(File.Exists(Path.Combine(_dir, "a.npy")), Is.False);
    }

    [Test]
    public async Task CheckpointErrorsGiveOneLineAndExitOne()
    {
        var host = new CliHost { LoadModel = (dir, _) => throw new CheckpointException(Path.Combine(dir, "model.safetensors"), "truncated: 3 bytes") };
        var (code, _, err) = await Run(host, "bench", "--model", _dir);
        Assert.That(code, Is.EqualTo(1));
        AssertOneLineError(err, "model.safetensors: truncated: 3 bytes");

        (code, _, err) = await Run(new CliHost(), "logits", "--model", Path.Combine(_dir, "missing"), "--ids", "1", "--out", "x.npy");
        Assert.That(code, Is.EqualTo(1));
        AssertOneLineError(err, "model directory not found");
    }

    [Test]
    public async Task MissingRequiredOptionFails()
    {
        var (code, _, err) = await Run(Host(PositionModel(5)), "logits", "--model", _dir, "--ids", "1");
        Assert.That(code, Is.Not.Zero);
        Assert.That(err, Does.Contain("--out"));
    }

    [Test]
    public async Task BenchWarmsUpThenPrintsJsonLast()
    {
        var model = PositionModel(50);
        var (code, stdout, err) = await Run(Host(model), "bench", "--model", _dir, "--prompt-tokens", "20", "--new-tokens", "5", "--threads", "2");
        Assert.That(code, Is.Zero, err);
        Assert.That(err, Does.Contain("warm-up"));
        string last = stdout.TrimEnd().Split('\n')[^1];
        using JsonDocument json = JsonDocument.Parse(last);
        Assert.That(json.RootElement.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "prefill_tokens_per_s", "decode_tokens_per_s" }));
        Assert.That(json.RootElement.GetProperty("prefill_tokens_per_s").GetDouble(), Is.GreaterThan(0));
        Assert.That(json.RootElement.GetProperty("decode_tokens_per_s").GetDouble(), Is.GreaterThan(0));
        // The same work untimed (warm-up), then the measured run; decode is one token at a time with Last.
        var expected = new List<(int, LogitsScope)>();
        for (int run = 0; run < 2; run++)
        {
            expected.Add((20, LogitsScope.Last));
            expected.AddRange(Enumerable.Repeat((1, LogitsScope.Last), 5));
        }
        Assert.That(model.Calls, Is.EqualTo(expected));
        Assert.That(model.LoadedWith[0].Threads, Is.EqualTo(2));
        // Greedy decode feeds the argmax: the position model's argmax is always the last id.
        Assert.That(model.Fed.Skip(8).Select(f => f[0]), Is.EqualTo(Enumerable.Repeat(49, 4)));
    }

    [Test]
    public async Task BenchRepeatRunsTheWorkAgainAndReportsTheMedian()
    {
        var model = PositionModel(50);
        var (code, stdout, err) = await Run(Host(model), "bench", "--model", _dir, "--prompt-tokens", "8", "--new-tokens", "2", "--threads", "1", "--repeat", "3");
        Assert.That(code, Is.Zero, err);
        // One warm-up and three timed runs, each a prompt and two decode steps.
        Assert.That(model.Calls.Count(c => c.Item1 == 8), Is.EqualTo(4));
        Assert.That(model.Calls, Has.Count.EqualTo(4 * 3));
        Assert.That(err, Does.Contain("3 runs; prefill median"));
        Assert.That(stdout.TrimEnd().Split('\n')[^1], Does.StartWith("{\"prefill_tokens_per_s\""));
        var (badCode, _, badErr) = await Run(Host(PositionModel(50)), "bench", "--model", _dir, "--repeat", "0");
        Assert.That(badCode, Is.Not.Zero);
        Assert.That(badErr, Does.Contain("--repeat"));
    }

    [Test]
    public async Task TokenizePrintsJsonIds()
    {
        string text = Path.Combine(_dir, "t.txt");
        File.WriteAllText(text, "hi there\n");
        string tokenizer = Path.Combine(_dir, "tokenizer.json");
        string? loadedFrom = null;
        var host = new CliHost { LoadTokenizer = path => { loadedFrom = path; return new FakeCodec(); } };
        var (code, stdout, _) = await Run(host, "tokenize", "--tokenizer", tokenizer, "--text-file", text);
        Assert.That(code, Is.Zero);
        Assert.That(loadedFrom, Is.EqualTo(tokenizer));
        Assert.That(stdout.Trim(), Is.EqualTo("[7,8,26,19,7,4,17,4,27]"));

        (code, stdout, _) = await Run(host, "tokenize", "--tokenizer", tokenizer, "--text-file", text, "--chat");
        int[] expected = new FakeCodec().Encode("<|im_start|>user\nhi there\n<|im_end|>\n<|im_start|>assistant\n");
        Assert.That(JsonSerializer.Deserialize<int[]>(stdout), Is.EqualTo(expected));

        (code, stdout, _) = await Run(host, "tokenize", "--tokenizer", tokenizer, "--text-file", text, "--chat", "--add-generation-prompt", "false");
        Assert.That(JsonSerializer.Deserialize<int[]>(stdout), Is.EqualTo(expected[..^11]));

        (code, _, string err) = await Run(host, "tokenize", "--tokenizer", tokenizer, "--text-file", Path.Combine(_dir, "nope.txt"));
        Assert.That(code, Is.EqualTo(1));
        AssertOneLineError(err, "nope.txt");
    }

    /// <summary>Replies "ok" then &lt;|im_end|&gt; after every "&lt;|im_start|&gt;assistant\n".</summary>
    private static FakeModel ReplyModel()
    {
        int[] header = new FakeCodec().Encode("<|im_start|>assistant\n");
        return new FakeModel(Vocab, (seen, logits) =>
        {
            logits.Clear();
            int start = -1;
            for (int i = seen.Count - header.Length; i >= 0 && start < 0; i--)
                if (seen.Skip(i).Take(header.Length).SequenceEqual(header)) start = i + header.Length;
            int k = start < 0 ? 99 : seen.Count - start;
            logits[k switch { 0 => 'o' - 'a', 1 => 'k' - 'a', _ => ImEnd }] = 10;
        });
    }

    [Test]
    public async Task GenerateStreamsTextAndReportsSpeedOnStderr()
    {
        var model = FakeModel.Scripted(Vocab, 2, [7, 8, Space, 24, 14, ImEnd]);
        var (code, stdout, err) = await Run(Host(model), "generate", "--model", _dir, "--prompt", "ab", "--temperature", "0");
        Assert.That(code, Is.Zero, err);
        Assert.That(stdout, Is.EqualTo("hi yo" + Environment.NewLine));
        Assert.That(err, Does.Contain("tok/s").And.Contain("6 tokens").And.Contain("finish: stop"));
        Assert.That(model.Fed[0], Is.EqualTo(new[] { 0, 1 }));

        model = ReplyModel();
        (code, stdout, _) = await Run(Host(model), "generate", "--model", _dir, "--prompt", "hi", "--chat", "--system", "be brief");
        Assert.That(stdout.Trim(), Is.EqualTo("ok"));
        Assert.That(model.Fed[0], Is.EqualTo(new FakeCodec().Encode("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")));

        model = FakeModel.Successor(Vocab, x => (x + 1) % 26);
        (code, stdout, err) = await Run(Host(model), "generate", "--model", _dir, "--prompt", "a", "--max-tokens", "3", "--seed", "5", "--top-k", "1");
        Assert.That((code, stdout.Trim()), Is.EqualTo((0, "bcd")), err);
        Assert.That(err, Does.Contain("finish: length"));
    }

    [Test]
    public async Task PromptsStartingWithAtAreNotResponseFiles()
    {
        var model = ReplyModel();
        var (code, _, err) = await Run(Host(model), "generate", "--model", _dir, "--prompt", "@ab", "--max-tokens", "1");
        // '@' is outside the fake vocabulary: the prompt reached the tokenizer as written.
        Assert.That(code, Is.EqualTo(1));
        AssertOneLineError(err, "cannot encode '@'");
    }

    [TestCase("--top-p", "1.5", "top-p")]
    [TestCase("--temperature", "-1", "temperature")]
    [TestCase("--max-tokens", "0", "--max-tokens")]
    [TestCase("--top-k", "x", "x")]
    public async Task BadSamplingArgumentsAreRejected(string option, string value, string message)
    {
        var model = ReplyModel();
        var (code, _, err) = await Run(Host(model), "generate", "--model", _dir, "--prompt", "hi", option, value);
        Assert.That(code, Is.Not.Zero);
        Assert.That(err, Does.Contain(message));
        Assert.That(model.Calls, Is.Empty);
    }

    [Test]
    public async Task GenerateWithoutTokenizerSaysSo()
    {
        var model = ReplyModel();
        var host = new CliHost { LoadModel = (_, _) => model };
        var (code, _, err) = await Run(host, "generate", "--model", _dir, "--prompt", "hi");
        Assert.That(code, Is.EqualTo(1));
        AssertOneLineError(err, "no tokenizer");
    }

    [Test]
    public async Task ChatKeepsTheStateBetweenTurnsAndResets()
    {
        var model = ReplyModel();
        var input = new StringReader("hi\n\nyo\n/reset\nhey\n/exit\nnever read\n");
        var (code, stdout, err) = await Run(Host(model, input), "chat", "--model", _dir, "--temperature", "0");
        Assert.That(code, Is.Zero, err);
        Assert.That(stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "ok", "ok", "ok" }));
        var codec = new FakeCodec();
        int[][] prompts = model.Fed.Where(f => f.Length > 1).ToArray();
        Assert.That(prompts, Is.EqualTo(new[]
        {
            codec.Encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
            // The previous reply's <|im_end|> is already in the state: only the new turn is fed.
            codec.Encode("\n<|im_start|>user\nyo<|im_end|>\n<|im_start|>assistant\n"),
            codec.Encode("<|im_start|>user\nhey<|im_end|>\n<|im_start|>assistant\n"),
        }));
        Assert.That(err, Does.Contain("(conversation reset)"));
    }

    [Test]
    public async Task ChatClosesATurnCutOffByMaxTokens()
    {
        var model = ReplyModel();
        var generator = new TextGenerator(model, new FakeCodec());
        var session = new ChatSession(generator, "sys");
        var options = new GenerationOptions { MaxTokens = 1, Sampling = SamplingOptions.Greedy };
        await foreach (GeneratedToken _ in session.ReplyAsync("hi", options)) { }
        Assert.That(session.NextPrompt("yo"), Is.EqualTo(new FakeCodec().Encode("<|im_end|>\n<|im_start|>user\nyo<|im_end|>\n<|im_start|>assistant\n")));
    }

    [Test]
    public async Task DemoWithMissingTextFailsNamingTheFile()
    {
        string missing = Path.Combine(Path.GetTempPath(), "arwkv-no-such-text-" + Guid.NewGuid().ToString("N") + ".txt");
        var (code, _, err) = await Run(new CliHost(), "demo", "--quick", "--data", missing, "--out", Path.Combine(Path.GetTempPath(), "arwkv-demo-unused"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain(missing));
    }
}
