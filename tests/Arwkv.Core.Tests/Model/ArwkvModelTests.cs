using Arwkv.IO;
using Arwkv.Tests.Reference;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.Model;

/// <summary>The fast ARWKV forward against the independent float64 reference, and its state and loading contracts.</summary>
public class ArwkvModelTests
{
    private const int SmallChunk = 64;

    internal static int[] Tokens(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        var ids = new int[count];
        for (int i = 0; i < count; i++) ids[i] = rng.Next(vocab);
        return ids;
    }

    internal static float[] AllLogits(ArwkvModel model, int[] tokens, ModelState? state = null)
    {
        var logits = new float[tokens.Length * model.VocabSize];
        model.Forward(tokens, state ?? model.CreateState(), logits, LogitsScope.All);
        return logits;
    }

    internal static float MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.That(a.Length, Is.EqualTo(b.Length));
        float max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    private static ArwkvModel Load(string dir, ForwardMode mode = ForwardMode.Prefill, int threads = 2, int chunk = SmallChunk) =>
        ArwkvModel.Load(dir, new ModelOptions { Threads = threads, Mode = mode }, chunk);

    [TestCase(true, false, ForwardMode.Prefill, 150)]
    [TestCase(true, false, ForwardMode.Recurrent, 150)]
    [TestCase(false, false, ForwardMode.Prefill, 70)]
    [TestCase(false, false, ForwardMode.Recurrent, 40)]
    [TestCase(true, true, ForwardMode.Prefill, 70)]
    [TestCase(false, true, ForwardMode.Recurrent, 40)]
    public void AllLogits_MatchFloat64Reference(bool gated, bool tied, ForwardMode mode, int length)
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig(gated, tied);
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 7 + length);
        int[] tokens = Tokens(length, config.VocabSize, seed: length);

        using var model = Load(dir.Path, mode);
        float[] logits = AllLogits(model, tokens);
        double error = ArwkvReference.RelativeL2(logits, new ArwkvReference(dir.Path).Logits(tokens));
        TestContext.Out.WriteLine($"gated={gated} tied={tied} {mode} T={length}: relative L2 error {error:E3}");
        Assert.That(error, Is.LessThan(1e-4));
    }

    [TestCase(DType.F16)]
    [TestCase(DType.BF16)]
    public void HalfPrecisionCheckpoints_MatchReferenceOnTheSameRoundedWeights(DType type)
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 11, type: type);
        int[] tokens = Tokens(80, config.VocabSize, seed: 3);
        using var model = Load(dir.Path);
        Assert.That(model.LoraRanks, Is.EqualTo(RandomArwkvCheckpoint.SmallRanks));
        double error = ArwkvReference.RelativeL2(AllLogits(model, tokens), new ArwkvReference(dir.Path).Logits(tokens));
        TestContext.Out.WriteLine($"{type}: relative L2 error {error:E3}");
        Assert.That(error, Is.LessThan(1e-4));
    }

    /// <summary>
    /// The whole model on each kernel path this CPU has (forced on the calling thread, which every kernel dispatch
    /// reads). Paths differ from each other only by float rounding, so all meet the same bound as the default path.
    /// </summary>
    [Test]
    public void EveryKernelPath_MatchesFloat64Reference([Values("Scalar", "Vector128", "Vector256", "Vector512")] string path,
        [Values] ForwardMode mode, [Values(DType.F32, DType.BF16)] DType type)
    {
        var isa = Enum.Parse<Arwkv.Kernels.KernelIsa>(path);
        Assume.That(isa <= Arwkv.Kernels.MatMul.DetectedIsa, $"this CPU has no {path} path");
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 19, type: type);
        int[] tokens = Tokens(40, config.VocabSize, seed: 5);
        Arwkv.Kernels.MatMul.ForceIsa = isa;
        try
        {
            using var model = Load(dir.Path, mode);
            double error = ArwkvReference.RelativeL2(AllLogits(model, tokens), new ArwkvReference(dir.Path).Logits(tokens));
            TestContext.Out.WriteLine($"{path} {mode} {type}: relative L2 error {error:E3}");
            Assert.That(error, Is.LessThan(1e-4));
        }
        finally
        {
            Arwkv.Kernels.MatMul.ForceIsa = null;
        }
    }

    [Test]
    public void ShardedCheckpoint_GivesTheSameLogitsAsOneFile()
    {
        using var single = new TempDirectory();
        using var sharded = new TempDirectory();
        RandomArwkvCheckpoint.Create(single.Path, seed: 5);
        RandomArwkvCheckpoint.Create(sharded.Path, seed: 5, shards: 3);
        int[] tokens = Tokens(20, 517, seed: 1);
        using var a = Load(single.Path);
        using var b = Load(sharded.Path);
        Assert.That(AllLogits(b, tokens), Is.EqualTo(AllLogits(a, tokens)));
    }

    [Test]
    public void Prefill_MatchesRecurrent()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 9);
        int[] tokens = Tokens(100, 517, seed: 2);
        using var prefill = Load(dir.Path, ForwardMode.Prefill);
        using var recurrent = Load(dir.Path, ForwardMode.Recurrent);
        float diff = MaxAbsDiff(AllLogits(prefill, tokens), AllLogits(recurrent, tokens));
        TestContext.Out.WriteLine($"prefill vs recurrent max abs diff {diff:E3}");
        Assert.That(diff, Is.LessThan(1e-4f));
    }

    [TestCase(ForwardMode.Prefill, 37)]
    [TestCase(ForwardMode.Prefill, 64)]
    [TestCase(ForwardMode.Recurrent, 37)]
    public void PromptFedInTwoPieces_EqualsOneCall(ForwardMode mode, int split)
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 13);
        int[] tokens = Tokens(90, 517, seed: 4);
        using var model = Load(dir.Path, mode);
        float[] whole = AllLogits(model, tokens);

        var state = model.CreateState();
        float[] first = AllLogits(model, tokens[..split], state);
        Assert.That(state.Position, Is.EqualTo(split));
        float[] second = AllLogits(model, tokens[split..], state);
        Assert.That(state.Position, Is.EqualTo(tokens.Length));
        float diff = MaxAbsDiff(first.Concat(second).ToArray(), whole);
        TestContext.Out.WriteLine($"split {split}: max abs diff {diff:E3}");
        Assert.That(diff, Is.LessThan(1e-5f));
    }

    [TestCase(ForwardMode.Prefill, 100)]
    [TestCase(ForwardMode.Recurrent, 10)]
    public void LastScope_EqualsLastRowOfAll_AndNoneAdvancesTheState(ForwardMode mode, int length)
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 17);
        int[] tokens = Tokens(length, 517, seed: 5);
        using var model = Load(dir.Path, mode);
        int V = model.VocabSize;
        float[] all = AllLogits(model, tokens);
        var last = new float[V];
        model.Forward(tokens, model.CreateState(), last, LogitsScope.Last);
        Assert.That(MaxAbsDiff(last, all.AsSpan((length - 1) * V, V)), Is.LessThan(1e-5f));

        // None for the prompt, then Last for one more token, equals All over both.
        var state = model.CreateState();
        model.Forward(tokens[..^1], state, Span<float>.Empty, LogitsScope.None);
        model.Forward(tokens[^1..], state, last, LogitsScope.Last);
        Assert.That(MaxAbsDiff(last, all.AsSpan((length - 1) * V, V)), Is.LessThan(1e-5f));
    }

    [Test]
    public void SavedLoadedAndClonedStates_ContinueBitIdentically()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 19);
        int[] prompt = Tokens(30, 517, seed: 6), continuation = Tokens(12, 517, seed: 7);
        using var model = Load(dir.Path);
        var state = (ArwkvState)model.CreateState();
        model.Forward(prompt, state, Span<float>.Empty, LogitsScope.None);

        var saved = new MemoryStream();
        state.Save(saved);
        ModelState clone = state.Clone();
        float[] original = AllLogits(model, continuation, state);

        saved.Position = 0;
        ArwkvState loaded = model.LoadState(saved);
        Assert.That(loaded.Position, Is.EqualTo(prompt.Length));
        Assert.That(clone.Position, Is.EqualTo(prompt.Length));
        Assert.That(AllLogits(model, continuation, loaded), Is.EqualTo(original));
        Assert.That(AllLogits(model, continuation, clone), Is.EqualTo(original));

        // The fork is independent: the original advanced without touching the clone, and Reset forgets everything.
        state.Reset();
        Assert.That(state.Position, Is.Zero);
        Assert.That(AllLogits(model, prompt, state), Is.EqualTo(AllLogits(model, prompt)));
    }

    [Test]
    public void LoadState_RejectsTruncatedForeignAndGarbageStreams()
    {
        using var dir = new TempDirectory();
        using var other = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 23);
        RandomArwkvCheckpoint.Create(other.Path, RandomArwkvCheckpoint.SmallConfig() with { NumLayers = 2 }, seed: 23);
        using var model = Load(dir.Path);
        using var otherModel = Load(other.Path);
        var saved = new MemoryStream();
        model.CreateState().Save(saved);
        byte[] bytes = saved.ToArray();

        var truncated = Assert.Throws<InvalidDataException>(() => model.LoadState(new MemoryStream(bytes[..^5])))!;
        Assert.That(truncated.Message, Does.Contain("truncated"));
        var foreign = Assert.Throws<InvalidDataException>(() => otherModel.LoadState(new MemoryStream(bytes)))!;
        Assert.That(foreign.Message, Does.Contain("L=3").And.Contain("L=2"));
        Assert.Throws<InvalidDataException>(() => model.LoadState(new MemoryStream(new byte[100])));
        Assert.Throws<ArgumentException>(() => model.Forward([1], otherModel.CreateState(), new float[517]));
    }

    [Test]
    public void OneAndTwoThreads_GiveTheSameLogits()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 29);
        int[] tokens = Tokens(70, 517, seed: 8);
        using var one = Load(dir.Path, threads: 1);
        using var two = Load(dir.Path, threads: 2);
        float diff = MaxAbsDiff(AllLogits(one, tokens), AllLogits(two, tokens));
        Assert.That(diff, Is.LessThan(1e-6f));
    }

    [Test]
    public void Forward_RejectsMisuse()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 31);
        using var model = Load(dir.Path);
        var state = model.CreateState();
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward([517], state, new float[517]));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward([-1], state, new float[517]));
        Assert.Throws<ArgumentException>(() => model.Forward([1, 2], state, new float[517], LogitsScope.All));
        Assert.Throws<ArgumentException>(() => model.Forward([], state, new float[517], LogitsScope.Last));
        Assert.That(state.Position, Is.Zero);
        model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.Forward([1], state, new float[517]));
    }

    [Test]
    public void LanguageModelLoad_PicksArwkvAndExposesConfig()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 37);
        using LanguageModel model = LanguageModel.Load(dir.Path, new ModelOptions { Threads = 1 });
        Assert.That(model, Is.TypeOf<ArwkvModel>());
        Assert.That(model.Architecture, Is.EqualTo("rwkv_hybrid"));
        Assert.That(model.VocabSize, Is.EqualTo(517));
        Assert.That(model.EosTokenIds, Is.EqualTo(new[] { 2 }));
        Assert.That(model.Tokenizer, Is.Null);
    }
}
