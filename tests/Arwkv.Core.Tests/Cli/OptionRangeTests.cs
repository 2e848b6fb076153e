using System.CommandLine;
using Arwkv.Cli;
using Arwkv.Generation;
using Arwkv.Tests.Generation;

namespace Arwkv.Tests.Cli;

/// <summary>Issue 11 class 7: every numeric option has a documented range and a clear error outside it.</summary>
public class OptionRangeTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("arwkv-ranges-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static async Task<(int Code, string Out, string Err)> Run(CliHost host, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, host, output, error);
        return (code, output.ToString(), error.ToString());
    }

    private static (CliHost Host, FakeModel Model) Fake()
    {
        var model = new FakeModel(5, (_, logits) => logits.Clear());
        var host = new CliHost
        {
            LoadModel = (_, options) =>
            {
                model.LoadedWith.Add(options);
                return model;
            },
            LoadTokenizer = _ => new FakeCodec(),
            CreateGenerator = m => new TextGenerator(m, new FakeCodec()),
            Input = new StringReader(""),
        };
        return (host, model);
    }

    private static void AssertOneLine(string err, string contains)
    {
        Assert.That(err, Does.Contain(contains));
        Assert.That(err.TrimEnd().Split('\n'), Has.Length.EqualTo(1), err);
    }

    private static IEnumerable<Command> AllCommands(Command command)
    {
        yield return command;
        foreach (Command sub in command.Subcommands)
            foreach (Command c in AllCommands(sub)) yield return c;
    }

    [Test]
    public void EveryNumericOptionStatesItsRangeInTheHelp()
    {
        var numeric = new[] { typeof(int), typeof(long), typeof(float), typeof(double), typeof(int?), typeof(long?) };
        var missing = new List<string>();
        int seen = 0;
        foreach (Command command in AllCommands(CliApp.BuildRoot(new CliHost())))
            foreach (Option option in command.Options.Where(o => numeric.Contains(o.ValueType)))
            {
                seen++;
                if (option.Description is not { } d || !d.Contains("(range ")) missing.Add($"{command.Name} {option.Name}");
            }
        Assert.That(seen, Is.GreaterThan(20));
        Assert.That(missing, Is.Empty);
    }

    [Test]
    public async Task HugeThreadCountIsRefusedBeforeLoading()
    {
        var (host, model) = Fake();
        var (code, _, err) = await Run(host, "bench", "--model", _dir, "--threads", "100000");
        Assert.That(code, Is.EqualTo(2));
        AssertOneLine(err, "--threads must be in [1, 256], got 100000");
        Assert.That(model.LoadedWith, Is.Empty);
    }

    [Test]
    public async Task HugePromptTokenCountIsRefusedBeforeLoading()
    {
        var (host, model) = Fake();
        var (code, _, err) = await Run(host, "bench", "--model", _dir, "--prompt-tokens", "2000000000");
        Assert.That(code, Is.EqualTo(2));
        AssertOneLine(err, "--prompt-tokens must be in [1, 131072], got 2000000000");
        Assert.That(model.LoadedWith, Is.Empty);
    }

    [TestCase("--top-p", "0", "--top-p must be in (0, 1], got 0")]
    [TestCase("--temperature", "NaN", "--temperature must be in [0, 100], got NaN")]
    [TestCase("--max-tokens", "0", "--max-tokens must be in [1, 131072], got 0")]
    public async Task GenerateRefusesOutOfRangeSampling(string option, string value, string message)
    {
        var (host, model) = Fake();
        var (code, _, err) = await Run(host, "generate", "--model", _dir, "--prompt", "a", option, value);
        Assert.That(code, Is.EqualTo(2));
        AssertOneLine(err, message);
        Assert.That(model.LoadedWith, Is.Empty);
    }

    [Test]
    public async Task NegativeCheckpointIntervalIsRefused()
    {
        var (code, _, err) = await Run(new CliHost(), "distill", "--teacher", Path.Combine(_dir, "t"), "--data", Path.Combine(_dir, "d.txt"),
            "--stage", "1", "--out", Path.Combine(_dir, "out"), "--checkpoint-every", "-1");
        Assert.That(code, Is.EqualTo(2));
        AssertOneLine(err, "--checkpoint-every must be in [0, 100000000], got -1");
        Assert.That(Directory.Exists(Path.Combine(_dir, "out")), Is.False);
    }

    [Test]
    public async Task NegativeMaxSequencesIsRefused()
    {
        var (code, _, err) = await Run(new CliHost(), "eval", "--model", _dir, "--data", Path.Combine(_dir, "d.txt"), "--max-sequences", "-1");
        Assert.That(code, Is.EqualTo(2));
        AssertOneLine(err, "--max-sequences must be in [0, 100000000], got -1");
    }

    [Test]
    public async Task ValuesAtTheBoundsAreAccepted()
    {
        var (host, model) = Fake();
        var (code, _, err) = await Run(host, "bench", "--model", _dir, "--threads", "256", "--prompt-tokens", "1", "--new-tokens", "1", "--repeat", "1");
        Assert.That(code, Is.Zero, err);
        Assert.That(model.LoadedWith.Single().Threads, Is.EqualTo(256));
    }
}
