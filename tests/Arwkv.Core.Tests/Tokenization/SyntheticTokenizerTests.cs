using System.Text;
using System.Text.Json.Nodes;
using Arwkv.IO;
using Arwkv.Tokenization;
using static Arwkv.Tests.Tokenization.SyntheticTokenizerJson;

namespace Arwkv.Tests.Tokenization;

/// <summary>QwenTokenizer on small hand-made tokenizer.json files: hand-computed ids, and every kind of bad file.</summary>
[TestFixture]
public sealed class SyntheticTokenizerTests
{
    private string _directory = null!;

    [SetUp]
    public void CreateDirectory() =>
        _directory = Path.Combine(Path.GetTempPath(), "arwkv-tokenizer-tests", TestContext.CurrentContext.Test.ID + "-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void DeleteDirectory()
    {
        if (Directory.Exists(_directory))
            Directory.Delete(_directory, recursive: true);
    }

    private QwenTokenizer Load(JsonNode json) => QwenTokenizer.FromFile(Write(_directory, json));

    [TestCase(false)]
    [TestCase(true)]
    public void MergesApplyInRankOrderInEitherFileFormat(bool mergesAsPairs)
    {
        QwenTokenizer tokenizer = Load(Build(mergesAsPairs));
        // "hello": h+e (rank 0), l+l (1), he+ll (2), hell+o (3); "e l" (rank 5) never gets a chance.
        // " world": Ġ+w (4), then the bytes o r l d.
        Assert.That(tokenizer.Encode("hello world"), Is.EqualTo(new[] { Hello, SpaceW, 'o', 'r', 'l', 'd' }));
        // l+l (rank 1) beats e+l (rank 5); alone, e+l applies.
        Assert.That(tokenizer.Encode("ell"), Is.EqualTo(new[] { 'e', Ll }));
        Assert.That(tokenizer.Encode("elo"), Is.EqualTo(new[] { El, 'o' }));
        Assert.That(tokenizer.Encode("hel"), Is.EqualTo(new[] { He, 'l' }));
        Assert.That(tokenizer.VocabSize, Is.EqualTo(ImEnd + 1));
        Assert.That(tokenizer.EndOfTextId, Is.EqualTo(EndOfText));
        Assert.That(tokenizer.ImEndId, Is.EqualTo(ImEnd));
    }

    [Test]
    public void NonAsciiTextBecomesByteTokens()
    {
        QwenTokenizer tokenizer = Load(Build());
        byte[] utf8 = Encoding.UTF8.GetBytes("é☃");
        Assert.That(tokenizer.Encode("é☃"), Is.EqualTo(utf8.Select(b => (int)b)));
        Assert.That(tokenizer.Decode(tokenizer.Encode("é☃ hello")), Is.EqualTo("é☃ hello"));
    }

    [Test]
    public void AddedTokensAreMatchedBeforePreTokenization()
    {
        QwenTokenizer tokenizer = Load(Build());
        Assert.That(tokenizer.Encode("<|im_start|>hello<|im_end|><|endoftext|>"), Is.EqualTo(new[] { ImStart, Hello, ImEnd, EndOfText }));
        Assert.That(tokenizer.Encode("<|im_start"), Has.Length.GreaterThan(1), "a partial marker is plain text");
        Assert.That(tokenizer.Decode([ImStart, Hello]), Is.EqualTo("<|im_start|>hello"));
    }

    [Test]
    public void NormalizerIsTakenFromTheFile()
    {
        Assert.That(Load(Build()).Encode("e\u0301"), Is.EqualTo(Encoding.UTF8.GetBytes("\u00E9").Select(b => (int)b)), "NFC composes");
        JsonObject withoutNormalizer = Build();
        withoutNormalizer["normalizer"] = null;
        Assert.That(Load(withoutNormalizer).Encode("e\u0301"), Is.EqualTo(Encoding.UTF8.GetBytes("e\u0301").Select(b => (int)b)));
    }

    // Attribute arguments are stored as UTF-8, which cannot hold an unpaired surrogate, hence the index.
    private static readonly string[] UnpairedSurrogateTexts = ["a\uD800b", "x\uDC00", "\uD83D", "ok 😀 \uDE00"];

    [Test]
    public void UnpairedSurrogatesAreRejected([Range(0, 3)] int index)
    {
        string text = UnpairedSurrogateTexts[index];
        JsonObject withoutNormalizer = Build();
        withoutNormalizer["normalizer"] = null;
        foreach (QwenTokenizer tokenizer in (QwenTokenizer[])[Load(Build()), Load(withoutNormalizer)])
        {
            ArgumentException e = Assert.Throws<ArgumentException>(() => tokenizer.Encode(text))!;
            Assert.That(e.Message, Does.Contain("unpaired surrogate"));
        }
        Assert.That(Load(Build()).Encode("😀"), Has.Length.EqualTo(4), "a proper pair is fine");
    }

    [Test]
    public void MissingImEndGivesNull()
    {
        JsonObject json = Build();
        json["added_tokens"]!.AsArray().RemoveAt(2);
        QwenTokenizer tokenizer = Load(json);
        Assert.That(tokenizer.ImEndId, Is.Null);
        Assert.That(tokenizer.VocabSize, Is.EqualTo(ImEnd));
    }

    [Test]
    public void MissingFile()
    {
        string path = Path.Combine(_directory, "nope", "tokenizer.json");
        CheckpointException e = Assert.Throws<CheckpointException>(() => QwenTokenizer.FromFile(path))!;
        Assert.That(e.FilePath, Is.EqualTo(path));
        Assert.That(e.Message, Does.Contain(path).And.Contain("not found"));
    }

    [Test]
    public void DirectoryInsteadOfFile()
    {
        Directory.CreateDirectory(_directory);
        CheckpointException e = Assert.Throws<CheckpointException>(() => QwenTokenizer.FromFile(_directory))!;
        Assert.That(e.FilePath, Is.EqualTo(_directory));
    }

    [TestCase("{ \"model\": ", "not valid JSON")]
    [TestCase("", "not valid JSON")]
    [TestCase("[1, 2]", "not a JSON object")]
    [TestCase("{\"version\": \"1.0\"}", "no \"model\" object")]
    public void MalformedJson(string text, string problem) => AssertRejected(Write(_directory, text), problem);

    [Test]
    public void TruncatedFile()
    {
        string full = Build().ToJsonString();
        AssertRejected(Write(_directory, full[..(full.Length / 2)]), "not valid JSON");
    }

    private static IEnumerable<TestCaseData> BadFiles()
    {
        yield return Case("WordPiece model", j => j["model"]!["type"] = "WordPiece", "model.type is 'WordPiece'");
        yield return Case("Unigram model", j => j["model"] = new JsonObject { ["type"] = "Unigram", ["vocab"] = new JsonArray() }, "model.type is 'Unigram'");
        yield return Case("no model type", j => j["model"]!.AsObject().Remove("type"), "model.type is '(missing)'");
        yield return Case("byte fallback", j => j["model"]!["byte_fallback"] = true, "byte_fallback");
        yield return Case("subword prefix", j => j["model"]!["continuing_subword_prefix"] = "##", "continuing_subword_prefix");
        yield return Case("no pre-tokenizer", j => j.Remove("pre_tokenizer"), "pre_tokenizer is missing");
        yield return Case("Metaspace pre-tokenizer", j => j["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace" }, "'Metaspace' is not supported");
        yield return Case("GPT-2 ByteLevel regex", j => j["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["use_regex"] = true }, "use_regex");
        yield return Case("prefix space", j => j["pre_tokenizer"]!["pretokenizers"]![1]!["add_prefix_space"] = true, "add_prefix_space");
        yield return Case("no ByteLevel step", j => j["pre_tokenizer"]!["pretokenizers"]!.AsArray().RemoveAt(1), "no ByteLevel step");
        yield return Case("Split without regex", j => j["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"] = new JsonObject { ["String"] = " " }, "no pattern.Regex");
        yield return Case("Split removing matches", j => j["pre_tokenizer"]!["pretokenizers"]![0]!["behavior"] = "Removed", "behavior 'Removed'");
        yield return Case("invalid regex", j => j["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "(\\p{L}", "regex");
        yield return Case("block property in regex", j => j["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "\\p{IsGreek}+", "IsGreek");
        yield return Case("NFKC normalizer", j => j["normalizer"] = new JsonObject { ["type"] = "NFKC" }, "normalizer 'NFKC'");
        yield return Case("vocab not an object", j => j["model"]!["vocab"] = new JsonArray(), "model.vocab is missing or not an object");
        yield return Case("empty vocab", j => j["model"]!["vocab"] = new JsonObject(), "model.vocab is empty");
        yield return Case("string id", j => j["model"]!["vocab"]!["a"] = "97", "model.vocab['a']");
        yield return Case("negative id", j => j["model"]!["vocab"]!["a"] = -1, "model.vocab['a']");
        yield return Case("duplicate id", j => j["model"]!["vocab"]!["zz"] = 5, "gives id 5");
        yield return Case("token outside the byte alphabet", j => j["model"]!["vocab"]!["中"] = 300, "not in the byte-level alphabet");
        yield return Case("merge without a space", j => j["model"]!["merges"]![0] = "he", "model.merges[0]");
        yield return Case("merge of three", j => j["model"]!["merges"]![1] = new JsonArray("l", "l", "o"), "model.merges[1]");
        yield return Case("merge of an unknown token", j => j["model"]!["merges"]!.AsArray().Add("ab c"), "'ab'");
        yield return Case("merge result not in vocab", j => j["model"]!["merges"]!.AsArray().Add("o r"), "'or'");
        yield return Case("merges missing", j => j["model"]!.AsObject().Remove("merges"), "model.merges is missing");
        yield return Case("added token without id", j => j["added_tokens"]![0]!.AsObject().Remove("id"), "added_tokens[0]");
        yield return Case("added token lstrip", j => j["added_tokens"]![1]!["lstrip"] = true, "lstrip: true");
        yield return Case("added token twice", j => j["added_tokens"]!.AsArray().Add(j["added_tokens"]![0]!.DeepClone()), "listed twice");
        yield return Case("added token reusing a base id", j => j["added_tokens"]![0]!["id"] = 97, "reuses id 97");
        yield return Case("model type not a string", j => j["model"]!["type"] = 3, "model.type is '(missing)'");
    }

    private static TestCaseData Case(string name, Action<JsonObject> damage, string problem) =>
        new TestCaseData(damage, problem).SetName($"BadFile({name})");

    [TestCaseSource(nameof(BadFiles))]
    public void BadFile(Action<JsonObject> damage, string problem)
    {
        JsonObject json = Build();
        damage(json);
        AssertRejected(Write(_directory, json), problem);
    }

    private static void AssertRejected(string path, string problem)
    {
        CheckpointException e = Assert.Throws<CheckpointException>(() => QwenTokenizer.FromFile(path))!;
        Assert.That(e.FilePath, Is.EqualTo(path));
        Assert.That(e.Message, Does.StartWith(path));
        Assert.That(e.Problem, Does.Contain(problem));
    }
}
