using Arwkv.IO;
using Arwkv.Tests.Reference;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.Interop;

/// <summary>
/// llama.cpp (an independent implementation, via node-llama-cpp's prebuilt CPU binding) runs the GGUF files that
/// <see cref="GgufExporter"/> writes, and its logits are compared with the float64 reference and with
/// <see cref="LanguageModel"/>. This validates the GGUF mapping (names, shapes, transposes, the layer-0 copies).
/// Gate-free models are not run: the prebuilt llama.cpp asserts on them.
/// </summary>
[TestFixture]
public class LlamaCppTests
{
    private static readonly int[] Ids = [5, 300, 17, 2, 516, 42, 42, 99, 260, 1, 7, 450];

    private TempDirectory? _gatedDirectory;
    private (string Checkpoint, float[] Logits, int Vocab)? _gated;

    [OneTimeTearDown]
    public void TearDown() => _gatedDirectory?.Dispose();

    /// <summary>The gated F32 model and llama.cpp's logits for it, computed once for the tests that compare against them.</summary>
    private (string Checkpoint, float[] Logits, int Vocab) GatedF32()
    {
        if (_gated is { } cached) return cached;
        _gatedDirectory = new TempDirectory("arwkv-llamacpp");
        string ckpt = Path.Combine(_gatedDirectory.Path, "ckpt");
        ArwkvConfig config = RandomArwkvCheckpoint.SmallConfig(gated: true);
        RandomArwkvCheckpoint.Create(ckpt, config, seed: 7);
        string gguf = _gatedDirectory.File("model.gguf");
        GgufExporter.Export(ckpt, gguf, new GgufExportOptions { MatrixType = DType.F32 });
        float[] logits = LlamaCppHarness.Logits(gguf, Ids, _gatedDirectory.File("logits.f32"), config.VocabSize);
        _gated = (ckpt, logits, config.VocabSize);
        return _gated.Value;
    }

    [Test]
    public void GatedF32Export_LlamaCppLogitsMatchFloat64Reference()
    {
        LlamaCppHarness.RequireInstalled();
        var (ckpt, llama, vocab) = GatedF32();
        double[,] reference = new ArwkvReference(ckpt).Logits(Ids);
        double error = ArwkvReference.RelativeL2(llama, reference);
        TestContext.Out.WriteLine($"llama.cpp F32 vs float64 reference: relative L2 {error:E3} over {Ids.Length} x {vocab} logits");
        Assert.That(error, Is.LessThan(1e-5));
        AssertSameArgmax(llama, reference, vocab);
    }

    [Test]
    public void TiedBf16Export_LlamaCppLogitsMatchFloat64Reference()
    {
        // BF16 weights on both sides (the reference widens the same bf16 values); llama.cpp also rounds the
        // activations to bf16 inside its matmuls, hence the looser bound.
        LlamaCppHarness.RequireInstalled();
        using var tmp = new TempDirectory("arwkv-llamacpp");
        string ckpt = Path.Combine(tmp.Path, "ckpt");
        ArwkvConfig config = RandomArwkvCheckpoint.SmallConfig(gated: true, tied: true);
        RandomArwkvCheckpoint.Create(ckpt, config, seed: 11, type: DType.BF16, shards: 2);
        // This run also checks that llama.cpp accepts a tokenizer exported from tokenizer.json (pre-tokenizer qwen2).
        WriteByteLevelTokenizerJson(ckpt);
        string gguf = tmp.File("model.gguf");
        GgufExporter.Export(ckpt, gguf);

        float[] llama = LlamaCppHarness.Logits(gguf, Ids, tmp.File("logits.f32"), config.VocabSize);
        double[,] reference = new ArwkvReference(ckpt).Logits(Ids);
        double error = ArwkvReference.RelativeL2(llama, reference);
        TestContext.Out.WriteLine($"llama.cpp BF16 (tied, sharded) vs float64 reference: relative L2 {error:E3}");
        Assert.That(error, Is.LessThan(3e-2));
    }

    [Test]
    [Category("NeedsModel")]
    public void GatedF32Export_LlamaCppLogitsMatchLanguageModel()
    {
        LlamaCppHarness.RequireInstalled();
        var (ckpt, llama, vocab) = GatedF32();
        using LanguageModel model = LanguageModel.Load(ckpt);
        Assert.That(model.VocabSize, Is.EqualTo(vocab));
        ModelState state = model.CreateState();
        var ours = new float[Ids.Length * vocab];
        model.Forward(Ids, state, ours, LogitsScope.All);

        var llamaAsReference = new double[Ids.Length, vocab];
        for (int t = 0; t < Ids.Length; t++)
            for (int v = 0; v < vocab; v++) llamaAsReference[t, v] = llama[t * vocab + v];
        double error = ArwkvReference.RelativeL2(ours, llamaAsReference);
        TestContext.Out.WriteLine($"LanguageModel vs llama.cpp: relative L2 {error:E3}");
        Assert.That(error, Is.LessThan(1e-4));
        AssertSameArgmax(ours, llamaAsReference, vocab);
    }

    /// <summary>A small Qwen-style tokenizer.json: the 256 byte symbols, a few merges, special added tokens.</summary>
    private static void WriteByteLevelTokenizerJson(string directory)
    {
        string[] bytes = GgufTokenizer.ByteSymbols();
        var vocab = new Dictionary<string, int>();
        for (int i = 0; i < 256; i++) vocab[bytes[i]] = i;
        var merges = new List<string>();
        foreach (string pair in new[] { "t h", "th e", "Ġ t", "Ġt he", "i n", "a n" })
        {
            merges.Add(pair);
            vocab[pair.Replace(" ", "")] = vocab.Count;
        }
        var json = new System.Text.Json.Nodes.JsonObject
        {
            ["model"] = new System.Text.Json.Nodes.JsonObject
            {
                ["type"] = "BPE",
                ["vocab"] = new System.Text.Json.Nodes.JsonObject(vocab.Select(kv => KeyValuePair.Create(kv.Key, (System.Text.Json.Nodes.JsonNode?)kv.Value))),
                ["merges"] = new System.Text.Json.Nodes.JsonArray(merges.Select(m => (System.Text.Json.Nodes.JsonNode?)m).ToArray()),
            },
            ["added_tokens"] = new System.Text.Json.Nodes.JsonArray(
                new System.Text.Json.Nodes.JsonObject { ["id"] = 300, ["content"] = "<|endoftext|>", ["special"] = true },
                new System.Text.Json.Nodes.JsonObject { ["id"] = 301, ["content"] = "<|im_start|>", ["special"] = true },
                new System.Text.Json.Nodes.JsonObject { ["id"] = 302, ["content"] = "<|im_end|>", ["special"] = true }),
        };
        File.WriteAllText(Path.Combine(directory, "tokenizer.json"), json.ToJsonString());
    }

    private static void AssertSameArgmax(float[] actual, double[,] expected, int V)
    {
        int rows = expected.GetLength(0);
        for (int t = 0; t < rows; t++)
        {
            int a = 0, e = 0;
            for (int v = 1; v < V; v++)
            {
                if (actual[t * V + v] > actual[t * V + a]) a = v;
                if (expected[t, v] > expected[t, e]) e = v;
            }
            Assert.That(a, Is.EqualTo(e), $"argmax at position {t}");
        }
    }
}
