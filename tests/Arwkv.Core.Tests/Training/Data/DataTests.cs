using System.Text;
using Arwkv.IO;
using Arwkv.Training.Data;

namespace Arwkv.Tests.Training.Data;

public class DataTests
{
    private string _dir = "";

    [SetUp]
    public void MakeDirectory()
    {
        _dir = Path.Combine(Path.GetTempPath(), "arwkv-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void RemoveDirectory() => Directory.Delete(_dir, recursive: true);

    private string WriteFile(string name, string content)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, content, new UTF8Encoding(false));
        return path;
    }

    private static List<int[]> Documents(int count, int minLength, int maxLength, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, rng.Next(minLength, maxLength + 1)).Select(_ => rng.Next(256)).ToArray()).ToList();
    }

    // ---- tokenizer ----

    [Test]
    public void ByteTokenizerRoundTripsUtf8AndSpecials()
    {
        var tok = ByteTokenizer.Instance;
        const string text = "Call me Ishmael — naïve 鯨 🐋";
        int[] ids = tok.Encode(text);
        Assert.That(ids, Is.EqualTo(Encoding.UTF8.GetBytes(text).Select(b => (int)b)));
        Assert.That(tok.Decode(ids), Is.EqualTo(text));

        Assert.That(tok.Encode("a<|im_end|>b"), Has.Length.EqualTo(12), "without allowSpecial a marker is plain bytes");
        Assert.That(tok.Encode("a<|im_end|>b<|endoftext|>", allowSpecial: true), Is.EqualTo(new[] { 'a', ByteTokenizer.ImEnd, 'b', ByteTokenizer.EndOfText }));
        Assert.That(tok.Decode([ByteTokenizer.ImStart, 'x', ByteTokenizer.ImEnd]), Is.EqualTo("<|im_start|>x<|im_end|>"));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([ByteTokenizer.VocabSize]));
    }

    // ---- corpus reading ----

    [Test]
    public void PlainTextIsOneDocument()
    {
        string path = WriteFile("book.txt", "Loomings.\n\nCall me Ishmael.\n");
        List<TextDocument> docs = Corpus.Read(path);
        Assert.That(docs, Has.Count.EqualTo(1));
        Assert.That(docs[0].Text, Is.EqualTo("Loomings.\n\nCall me Ishmael.\n"));
        Assert.That(docs[0].Messages, Is.Null);
    }

    [Test]
    public void JsonLinesReadTextAndRenderChatsWithChatMl()
    {
        string path = WriteFile("mix.jsonl", """
            {"text": "plain <|im_end|> words"}

            {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Ahoy."}]}
            {"text": ""}
            """);
        List<TextDocument> docs = Corpus.Read(path);
        Assert.That(docs, Has.Count.EqualTo(2), "blank lines and empty texts are skipped");
        Assert.That(docs[1].Text, Is.EqualTo("<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nAhoy.<|im_end|>\n"));

        List<int[]> ids = Corpus.Tokenize(docs, ByteTokenizer.Instance);
        Assert.That(ids[0], Does.Not.Contain(ByteTokenizer.ImEnd), "a marker inside plain text stays bytes");
        Assert.That(ids[1].Count(i => i == ByteTokenizer.ImStart), Is.EqualTo(2));
        Assert.That(ids[1].Count(i => i == ByteTokenizer.ImEnd), Is.EqualTo(2));
        Assert.That(ByteTokenizer.Instance.Decode(ids[1]), Is.EqualTo(docs[1].Text));
    }

    [Test]
    public void ChatContentCannotInjectSpecialTokens()
    {
        string path = WriteFile("chat.jsonl", """{"messages": [{"role": "user", "content": "x<|im_end|>y"}]}""");
        int[] ids = Corpus.Tokenize(Corpus.Read(path), ByteTokenizer.Instance)[0];
        Assert.That(ids.Count(i => i == ByteTokenizer.ImEnd), Is.EqualTo(1));
    }

    [TestCase("{\"text\": \"ok\"}\n{\"text\": 5}\n", 2, "\"text\" must be a string")]
    [TestCase("{\"text\": \"ok\"}\n\n{not json\n", 3, "not valid JSON")]
    [TestCase("[1, 2]\n", 1, "JSON object")]
    [TestCase("{\"title\": \"x\"}\n", 1, "\"text\" or \"messages\"")]
    [TestCase("{\"text\": \"a\"}\n{\"messages\": [{\"role\": \"user\"}]}\n", 2, "messages[0]")]
    [TestCase("{\"messages\": []}\n", 1, "non-empty array")]
    public void BadJsonLinesNameFileAndLine(string content, int line, string problem)
    {
        string path = WriteFile("bad.jsonl", content);
        var e = Assert.Throws<CheckpointException>(() => Corpus.Read(path))!;
        Assert.That(e.FilePath, Is.EqualTo(path));
        Assert.That(e.Problem, Does.StartWith($"line {line}:"));
        Assert.That(e.Problem, Does.Contain(problem));
    }

    [Test]
    public void InvalidUtf8AndMissingFilesAreReported()
    {
        string path = Path.Combine(_dir, "latin1.txt");
        File.WriteAllBytes(path, [0x41, 0xE9, 0x42]);
        Assert.That(Assert.Throws<CheckpointException>(() => Corpus.Read(path))!.Problem, Does.Contain("UTF-8"));
        Assert.That(Assert.Throws<CheckpointException>(() => Corpus.Read(Path.Combine(_dir, "none.txt")))!.Problem, Does.Contain("not found"));
    }

    [Test]
    public void EmptyCorpusIsAClearError()
    {
        string empty = WriteFile("empty.txt", "  \n\n");
        string blank = WriteFile("blank.jsonl", "\n{\"text\": \"\"}\n");
        Assert.That(Assert.Throws<CheckpointException>(() => Corpus.Read(empty))!.Problem, Does.Contain("empty corpus"));
        var e = Assert.Throws<CheckpointException>(() => Corpus.Read([empty, blank]))!;
        Assert.That(e.Problem, Does.Contain("empty corpus"));
        Assert.That(e.FilePath, Does.Contain("empty.txt").And.Contain("blank.jsonl"));
        // One non-empty file is enough.
        Assert.That(Corpus.Read([empty, WriteFile("ok.txt", "x")]), Has.Count.EqualTo(1));
    }

    // ---- sequences ----

    [Test]
    public void PackingCutsTheStreamIntoShiftedWindows()
    {
        List<int[]> docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]];
        // stream: 1 2 3 E 4 5 E 6 7 8 9 E  (12 tokens)
        const int E = ByteTokenizer.EndOfText;
        List<TrainingSequence> seqs = SequenceBuilder.Pack(docs, 4, E);
        Assert.That(seqs, Has.Count.EqualTo(2), "(12 - 1) / 4 full windows");
        Assert.That(seqs[0].Inputs, Is.EqualTo(new[] { 1, 2, 3, E }));
        Assert.That(seqs[0].Targets, Is.EqualTo(new[] { 2, 3, E, 4 }));
        Assert.That(seqs[1].Inputs, Is.EqualTo(new[] { 4, 5, E, 6 }));
        Assert.That(seqs[1].Targets, Is.EqualTo(new[] { 5, E, 6, 7 }));
        Assert.That(seqs.SelectMany(s => s.Mask), Is.All.EqualTo(1f));
    }

    [Test]
    public void PaddingRoundsUpToMultiplesOf16WithAMask()
    {
        const int E = ByteTokenizer.EndOfText;
        List<int[]> docs = [Enumerable.Range(0, 20).ToArray(), Enumerable.Range(0, 15).ToArray(), Enumerable.Range(0, 70).ToArray()];
        List<TrainingSequence> seqs = SequenceBuilder.Pad(docs, 32, E);
        // doc 0: 20 inputs -> 32; doc 1: 15 inputs (incl. the final token -> EOT) -> 16; doc 2: 70 inputs split 32 + 32 + 6 -> 32, 32, 16
        Assert.That(seqs.Select(s => s.Length), Is.EqualTo(new[] { 32, 16, 32, 32, 16 }));
        Assert.That(seqs.Select(s => s.ValidLength), Is.EqualTo(new[] { 20, 15, 32, 32, 6 }));
        foreach (TrainingSequence s in seqs)
        {
            Assert.That(s.Length % SequenceBuilder.PadMultiple, Is.Zero);
            for (int t = 0; t < s.Length; t++)
            {
                bool real = t < s.ValidLength;
                Assert.That(s.Mask[t], Is.EqualTo(real ? 1f : 0f));
                if (!real)
                {
                    Assert.That(s.Targets[t], Is.EqualTo(-1));
                    Assert.That(s.Inputs[t], Is.EqualTo(E));
                }
            }
        }
        Assert.That(seqs[0].Inputs[..20], Is.EqualTo(Enumerable.Range(0, 20)));
        Assert.That(seqs[0].Targets[19], Is.EqualTo(E), "the last real token predicts end-of-text");
        Assert.That(seqs[3].Inputs[0], Is.EqualTo(32), "a long document continues in the next window");
        Assert.That(seqs[2].Targets[31], Is.EqualTo(32));
        Assert.Throws<ArgumentOutOfRangeException>(() => SequenceBuilder.Pad(docs, 40, E));
    }

    // ---- shuffle and split ----

    [Test]
    public void ShuffleIsDeterministicForASeed()
    {
        int[] a = Enumerable.Range(0, 100).ToArray(), b = Enumerable.Range(0, 100).ToArray(), c = Enumerable.Range(0, 100).ToArray();
        SplitMix64.Shuffle(a, 7);
        SplitMix64.Shuffle(b, 7);
        SplitMix64.Shuffle(c, 8);
        Assert.That(a, Is.EqualTo(b));
        Assert.That(a, Is.Not.EqualTo(c));
        Assert.That(a, Is.Not.EqualTo(Enumerable.Range(0, 100)));
        Assert.That(a.Order(), Is.EqualTo(Enumerable.Range(0, 100)), "a permutation");
        // Pinned so that a change of generator (which would silently change every run's data order) fails here.
        int[] small = Enumerable.Range(0, 8).ToArray();
        SplitMix64.Shuffle(small, 1);
        Assert.That(small, Is.EqualTo(PinnedShuffleOfEightWithSeedOne));
    }

    // Computed independently with a Python SplitMix64 + Fisher-Yates.
    private static readonly int[] PinnedShuffleOfEightWithSeedOne = [4, 3, 2, 7, 5, 6, 0, 1];

    [Test]
    public void SplitSizesAndDisjointness()
    {
        List<TrainingSequence> seqs = SequenceBuilder.Pack(Documents(30, 10, 60, 1), 16, ByteTokenizer.EndOfText);
        var (train, validation) = DataSplit.Split(seqs, 0.1, 3);
        Assert.That(validation, Has.Count.EqualTo((int)Math.Round(seqs.Count * 0.1)));
        Assert.That(train.Count + validation.Count, Is.EqualTo(seqs.Count));
        Assert.That(train.Intersect(validation), Is.Empty);
        Assert.That(train.Concat(validation), Is.EquivalentTo(seqs));

        var again = DataSplit.Split(seqs, 0.1, 3);
        Assert.That(again.Validation, Is.EqualTo(validation));
        Assert.That(DataSplit.Split(seqs, 0.1, 4).Validation, Is.Not.EqualTo(validation));

        Assert.That(DataSplit.Split(seqs.Take(5).ToList(), 0.01, 1).Validation, Has.Count.EqualTo(1), "a positive fraction keeps at least one");
        Assert.That(DataSplit.Split(seqs, 0, 1).Validation, Is.Empty);
        Assert.Throws<ArgumentException>(() => DataSplit.Split(seqs.Take(1).ToList(), 0.5, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => DataSplit.Split(seqs, 1.0, 1));
    }

    // ---- batches ----

    [Test]
    public void BatchesCoverAnEpochAndReshuffleTheNext()
    {
        List<TrainingSequence> seqs = SequenceBuilder.Pack(Documents(20, 10, 40, 2), 8, ByteTokenizer.EndOfText);
        var it = new BatchIterator(seqs, 4, seed: 5);
        Assert.That(it.BatchesPerEpoch, Is.EqualTo(seqs.Count / 4));
        var firstEpoch = new List<int[]>();
        for (int i = 0; i < it.BatchesPerEpoch; i++)
        {
            Batch b = it.Next();
            Assert.That((b.Size, b.Length), Is.EqualTo((4, 8)));
            for (int r = 0; r < 4; r++) firstEpoch.Add(b.Inputs[(r * 8)..((r + 1) * 8)]);
        }
        Assert.That(it.Position, Is.EqualTo(new BatchPosition(1, 0)));
        Assert.That(firstEpoch.Select(x => string.Join(",", x)).Distinct().Count(), Is.EqualTo(firstEpoch.Count), "no sequence twice in an epoch");
        Batch secondEpochFirst = it.Next();
        Assert.That(secondEpochFirst.Inputs[..8], Is.Not.EqualTo(firstEpoch[0]), "epochs are shuffled differently");

        var ordered = new BatchIterator(seqs, 4, seed: 5, shuffle: false);
        Assert.That(ordered.Next().Inputs[..8], Is.EqualTo(seqs[0].Inputs));
    }

    [Test]
    public void ResumingFromASavedPositionGivesTheSameBatches()
    {
        List<TrainingSequence> seqs = SequenceBuilder.Pad(Documents(40, 5, 50, 3), 32, ByteTokenizer.EndOfText);
        var first = new BatchIterator(seqs, 3, seed: 11);
        int steps = first.BatchesPerEpoch + 2;
        for (int i = 0; i < steps; i++) first.Next();
        BatchPosition saved = first.Position;
        Assert.That(saved.Epoch, Is.EqualTo(1));
        var expected = Enumerable.Range(0, 5).Select(_ => first.Next()).ToList();

        var resumed = new BatchIterator(seqs, 3, seed: 11);
        resumed.Seek(saved);
        for (int i = 0; i < expected.Count; i++)
        {
            Batch b = resumed.Next();
            Assert.That(b.Inputs, Is.EqualTo(expected[i].Inputs));
            Assert.That(b.Targets, Is.EqualTo(expected[i].Targets));
            Assert.That(b.Mask, Is.EqualTo(expected[i].Mask));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => resumed.Seek(new BatchPosition(0, resumed.BatchesPerEpoch)));
        Assert.Throws<ArgumentException>(() => new BatchIterator(seqs.Take(2).ToList(), 3, 1));
    }

    [Test]
    public void PaddedBatchesUseTheLongestSequenceAndMaskTheRest()
    {
        const int E = ByteTokenizer.EndOfText;
        List<TrainingSequence> seqs = SequenceBuilder.Pad([Enumerable.Range(0, 40).ToArray(), [1, 2, 3]], 64, E);
        var it = new BatchIterator(seqs, 2, seed: 1, shuffle: false);
        Batch b = it.Next();
        Assert.That(b.Length, Is.EqualTo(48));
        Assert.That(b.Length % SequenceBuilder.PadMultiple, Is.Zero);
        Assert.That(b.ValidTokens, Is.EqualTo(40 + 3));
        Assert.That(b.Mask.Skip(48).Take(3), Is.All.EqualTo(1f));
        Assert.That(b.Mask.Skip(48 + 3), Is.All.EqualTo(0f));
        Assert.That(b.Targets.Skip(48 + 3), Is.All.EqualTo(-1));
        Assert.That(b.Inputs.Skip(48 + 3), Is.All.EqualTo(E));
    }

    // ---- the shipped demo text ----

    [Test]
    public void ShippedMobyDickExcerptLoadsAndPacks()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir != null && !File.Exists(Path.Combine(dir, "data", "moby-dick.txt"))) dir = Path.GetDirectoryName(dir);
        Assert.That(dir, Is.Not.Null, "data/moby-dick.txt is shipped in the repository");
        string path = Path.Combine(dir!, "data", "moby-dick.txt");
        long size = new FileInfo(path).Length;
        Assert.That(size, Is.InRange(300_000, 600_000));
        List<TextDocument> docs = Corpus.Read(path);
        Assert.That(docs[0].Text, Does.StartWith("CHAPTER 1. Loomings."));
        List<int[]> ids = Corpus.Tokenize(docs, ByteTokenizer.Instance);
        Assert.That(ids[0], Has.Length.EqualTo(size), "one id per byte");
        var (train, validation) = DataSplit.Split(SequenceBuilder.Pack(ids, 128, ByteTokenizer.EndOfText), 0.05, 1);
        Assert.That(train.Count, Is.GreaterThan(3000));
        Assert.That(validation.Count, Is.GreaterThan(100));
    }
}
