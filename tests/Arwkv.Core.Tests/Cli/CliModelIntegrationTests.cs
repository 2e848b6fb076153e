using System.Numerics.Tensors;
using System.Text.Json;
using Arwkv.Cli;
using Arwkv.Generation;
using Arwkv.Tests.Reference;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.Cli;

/// <summary>
/// The CLI and the generator on a real (random, small) ARWKV checkpoint through <see cref="LanguageModel.Load"/>,
/// checked against the float64 reference. Ignored, with a message, while ArwkvModel is still a contract stub.
/// </summary>
public class CliModelIntegrationTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, new CliHost(), output, error);
        return (code, output.ToString(), error.ToString());
    }

    private static void IgnoreWhileModelIsAStub(int code, string err)
    {
        if (code != 0 && err.Contains("not implemented in this build")) Assert.Ignore("ArwkvModel is not implemented on this branch yet: " + err.Trim());
    }

    [TestCase("prefill")]
    [TestCase("recurrent")]
    public async Task LogitsMatchTheFloat64Reference(string mode)
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 77);
        int[] ids = [1, 5, 300, 42, 516, 0, 7];
        string outPath = dir.File("logits.npy");
        var (code, _, err) = await Run("logits", "--model", dir.Path, "--ids", string.Join(",", ids), "--out", outPath, "--mode", mode, "--threads", "2");
        IgnoreWhileModelIsAStub(code, err);
        Assert.That(code, Is.Zero, err);
        (float[] data, long[] shape) = Npy.ReadFloat32(outPath);
        Assert.That(shape, Is.EqualTo(new long[] { ids.Length, 517 }));
        double[,] expected = new ArwkvReference(dir.Path).Logits(ids);
        Assert.That(ArwkvReference.RelativeL2(data, expected), Is.LessThan(1e-4));
    }

    [Test]
    public async Task BenchRunsWithoutATokenizer()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 5);
        var (code, stdout, err) = await Run("bench", "--model", dir.Path, "--prompt-tokens", "8", "--new-tokens", "3", "--threads", "1");
        IgnoreWhileModelIsAStub(code, err);
        Assert.That(code, Is.Zero, err);
        using JsonDocument json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        Assert.That(json.RootElement.GetProperty("decode_tokens_per_s").GetDouble(), Is.GreaterThan(0));
    }

    /// <summary>--profile prints one row per phase with its time and, with two threads, how busy the other thread was.</summary>
    [Test]
    public async Task BenchProfileTabulatesThePhases()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 6);
        var (code, _, err) = await Run("bench", "--model", dir.Path, "--prompt-tokens", "24", "--new-tokens", "1", "--threads", "2",
            "--repeat", "2", "--profile");
        Assert.That(code, Is.Zero, err);
        Assert.That(err, Does.Contain("| phase | ms | share | other threads busy |"));
        foreach (string phase in new[] { "MlpGateUp", "MlpDown", "Wkv7", "TimeMixProjections" })
        {
            string row = err.Split('\n').Single(l => l.StartsWith($"| {phase} |", StringComparison.Ordinal));
            string[] cells = row.Split('|', StringSplitOptions.TrimEntries);
            Assert.That(double.Parse(cells[2], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(0), row);
            Assert.That(cells[4], Does.Match(@"^(\d+ %|-)$"), row);
        }
    }

    [Test]
    public async Task GreedyGenerationFollowsTheReferenceArgmax()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 9);
        LanguageModel model;
        try
        {
            model = LanguageModel.Load(dir.Path, new ModelOptions { Threads = 1 });
        }
        catch (NotImplementedException ex)
        {
            Assert.Ignore("ArwkvModel is not implemented on this branch yet: " + ex.Message);
            return;
        }
        using (model)
        {
            var generator = new TextGenerator(model);
            var options = new GenerationOptions { MaxTokens = 6, StopTokenIds = [], Sampling = SamplingOptions.Greedy };
            var sequence = new List<int> { 3, 14, 15 };
            var generated = new List<int>();
            await foreach (GeneratedToken token in generator.GenerateAsync(sequence.ToArray(), options)) generated.Add(token.Id);

            var reference = new ArwkvReference(dir.Path);
            foreach (int id in generated)
            {
                double[,] logits = reference.Logits(sequence);
                var last = new double[logits.GetLength(1)];
                for (int i = 0; i < last.Length; i++) last[i] = logits[sequence.Count - 1, i];
                Assert.That(id, Is.EqualTo(TensorPrimitives.IndexOfMax(last)), $"after [{string.Join(", ", sequence)}]");
                sequence.Add(id);
            }
            Assert.That(generated, Has.Count.EqualTo(6));
        }
    }
}
