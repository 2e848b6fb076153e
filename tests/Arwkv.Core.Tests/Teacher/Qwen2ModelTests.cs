using Arwkv.IO;

namespace Arwkv.Tests.Teacher;

public class Qwen2ModelTests
{
    private readonly List<string> _dirs = [];

    [TearDown]
    public void CleanUp()
    {
        foreach (string d in _dirs) Qwen2TestCheckpoint.Delete(d);
        _dirs.Clear();
    }

    private string Write(Qwen2TestShape s, Func<List<TensorToWrite>, IEnumerable<TensorToWrite>>? edit = null, string? extra = null)
    {
        string dir = Qwen2TestCheckpoint.Write(s, edit, extra);
        _dirs.Add(dir);
        return dir;
    }

    private static int[] Tokens(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(vocab)).ToArray();
    }

    private static float[] Decode(Qwen2Model model, int[] tokens)
    {
        ModelState state = model.CreateState();
        var all = new float[tokens.Length * model.VocabSize];
        for (int t = 0; t < tokens.Length; t++)
            model.Forward(tokens.AsSpan(t, 1), state, all.AsSpan(t * model.VocabSize, model.VocabSize), LogitsScope.Last);
        Assert.That(state.Position, Is.EqualTo(tokens.Length));
        return all;
    }

    [TestCase(false, DType.F32)]
    [TestCase(true, DType.F32)]
    [TestCase(false, DType.BF16)]
    [TestCase(true, DType.F16)]
    public void PrefillAndDecodeMatchFloat64Reference(bool tied, DType type)
    {
        var shape = new Qwen2TestShape { Tied = tied, Type = type, Seed = tied ? 7 : 3 };
        string dir = Write(shape);
        int[] tokens = Tokens(24, shape.Vocab, 11);
        double[] expected = new Qwen2Reference(shape, Qwen2TestCheckpoint.ReadWeights(dir)).Forward(tokens);

        using var model = Qwen2Model.Load(dir, new ModelOptions { Threads = 2 });
        Assert.That(model.Config.TieWordEmbeddings, Is.EqualTo(tied));
        ModelState state = model.CreateState();
        var prefill = new float[tokens.Length * shape.Vocab];
        model.Forward(tokens, state, prefill, LogitsScope.All);
        Assert.That(state.Position, Is.EqualTo(tokens.Length));
        float[] decode = Decode(model, tokens);

        double prefillError = Qwen2Reference.RelativeError(prefill, expected);
        double decodeError = Qwen2Reference.RelativeError(decode, expected);
        double agreement = Qwen2Reference.RelativeError(decode, prefill);
        TestContext.Out.WriteLine($"{type} tied={tied}: prefill {prefillError:E2}, decode {decodeError:E2}, prefill vs decode {agreement:E2}");
        Assert.That(prefillError, Is.LessThan(1e-4));
        Assert.That(decodeError, Is.LessThan(1e-4));
        Assert.That(agreement, Is.LessThan(1e-5));
    }

    [Test]
    public void RecurrentModeAndChunkedLongPrefillMatchReference()
    {
        var shape = new Qwen2TestShape { Hidden = 32, Heads = 2, KvHeads = 1, Intermediate = 48, Layers = 1, Vocab = 40, Seed = 5 };
        string dir = Write(shape);
        int[] tokens = Tokens(Qwen2Model.PrefillChunk + 40, shape.Vocab, 3);
        double[] expected = new Qwen2Reference(shape, Qwen2TestCheckpoint.ReadWeights(dir)).Forward(tokens);

        using var prefillModel = Qwen2Model.Load(dir);
        var prefill = new float[tokens.Length * shape.Vocab];
        prefillModel.Forward(tokens, prefillModel.CreateState(), prefill, LogitsScope.All);
        using var recurrentModel = Qwen2Model.Load(dir, new ModelOptions { Mode = ForwardMode.Recurrent, Threads = 1 });
        var recurrent = new float[tokens.Length * shape.Vocab];
        recurrentModel.Forward(tokens, recurrentModel.CreateState(), recurrent, LogitsScope.All);

        Assert.That(Qwen2Reference.RelativeError(prefill, expected), Is.LessThan(1e-4));
        Assert.That(Qwen2Reference.RelativeError(recurrent, expected), Is.LessThan(1e-4));
        Assert.That(Qwen2Reference.RelativeError(recurrent, prefill), Is.LessThan(1e-5));
    }

    [Test]
    public void TiedCheckpointUsesTheEmbeddingEvenWithASavedLmHead()
    {
        var shape = new Qwen2TestShape { Tied = true, Seed = 13 };
        var rng = new Random(1);
        var stray = Enumerable.Range(0, shape.Vocab * shape.Hidden).Select(_ => (float)rng.NextDouble()).ToArray();
        string dir = Write(shape, ts => ts.Append(new TensorToWrite("lm_head.weight", DType.F32, [shape.Vocab, shape.Hidden], stray)));
        int[] tokens = Tokens(6, shape.Vocab, 2);
        double[] expected = new Qwen2Reference(shape, Qwen2TestCheckpoint.ReadWeights(dir)).Forward(tokens);
        using var model = Qwen2Model.Load(dir);
        var logits = new float[tokens.Length * shape.Vocab];
        model.Forward(tokens, model.CreateState(), logits, LogitsScope.All);
        Assert.That(Qwen2Reference.RelativeError(logits, expected), Is.LessThan(1e-4));
    }

    [Test]
    public void LastScopeWritesTheFinalRowAndNoneOnlyAdvances()
    {
        var shape = new Qwen2TestShape();
        string dir = Write(shape);
        int[] tokens = Tokens(10, shape.Vocab, 4);
        using var model = Qwen2Model.Load(dir);
        var all = new float[tokens.Length * shape.Vocab];
        model.Forward(tokens, model.CreateState(), all, LogitsScope.All);

        var last = new float[shape.Vocab];
        model.Forward(tokens, model.CreateState(), last, LogitsScope.Last);
        Assert.That(Qwen2Reference.RelativeError(last, all.AsSpan((tokens.Length - 1) * shape.Vocab)), Is.LessThan(1e-6));

        // A prefix fed with None, then the rest, gives the same final logits.
        ModelState state = model.CreateState();
        model.Forward(tokens.AsSpan(0, 6), state, [], LogitsScope.None);
        Assert.That(state.Position, Is.EqualTo(6));
        var split = new float[shape.Vocab];
        model.Forward(tokens.AsSpan(6), state, split, LogitsScope.Last);
        Assert.That(Qwen2Reference.RelativeError(split, last), Is.LessThan(1e-5));
    }

    [TestCase(ForwardMode.Prefill, 12)]
    [TestCase(ForwardMode.Recurrent, 12)]
    [TestCase(ForwardMode.Prefill, Qwen2Model.PrefillChunk + 8)]
    public void LayerTapsMatchReference(ForwardMode mode, int count)
    {
        var shape = count > 100
            ? new Qwen2TestShape { Layers = 3, Hidden = 32, Heads = 2, KvHeads = 1, Intermediate = 32, Vocab = 40, Seed = 9 }
            : new Qwen2TestShape { Layers = 3, Seed = 9 };
        string dir = Write(shape);
        int[] tokens = Tokens(count, shape.Vocab, 8);
        int size = shape.Layers * tokens.Length * shape.Hidden;
        var expectedIn = new double[size];
        var expectedOut = new double[size];
        double[] expectedLogits = new Qwen2Reference(shape, Qwen2TestCheckpoint.ReadWeights(dir)).Forward(tokens, expectedIn, expectedOut);

        using var model = Qwen2Model.Load(dir, new ModelOptions { Mode = mode });
        var tapIn = new float[size];
        var tapOut = new float[size];
        var logits = new float[tokens.Length * shape.Vocab];
        ModelState state = model.CreateState();
        model.ForwardWithLayerTaps(tokens, state, tapIn, tapOut, logits, LogitsScope.All);
        Assert.That(Qwen2Reference.RelativeError(tapIn, expectedIn), Is.LessThan(1e-5));
        Assert.That(Qwen2Reference.RelativeError(tapOut, expectedOut), Is.LessThan(1e-4));
        Assert.That(Qwen2Reference.RelativeError(logits, expectedLogits), Is.LessThan(1e-4));
        // Per-layer slices line up: layer 2's input differs from layer 0's.
        Assert.That(Qwen2Reference.RelativeError(tapIn.AsSpan(2 * tokens.Length * shape.Hidden), expectedIn.AsSpan(2 * tokens.Length * shape.Hidden)), Is.LessThan(1e-5));

        Assert.Throws<ArgumentException>(() => model.ForwardWithLayerTaps(tokens, model.CreateState(), new float[size - 1], tapOut));
    }

    [Test]
    public void CloneForksResetForgetsAndSaveRestores()
    {
        var shape = new Qwen2TestShape();
        string dir = Write(shape);
        int[] prefix = Tokens(9, shape.Vocab, 1), a = Tokens(5, shape.Vocab, 2), b = Tokens(5, shape.Vocab, 3);
        using var model = Qwen2Model.Load(dir);
        int v = shape.Vocab;

        float[] Fresh(int[] tokens)
        {
            var r = new float[v];
            model.Forward(tokens, model.CreateState(), r);
            return r;
        }

        ModelState state = model.CreateState();
        model.Forward(prefix, state, new float[v]);
        ModelState fork = state.Clone();
        var stream = new MemoryStream();
        state.Save(stream);

        var fromA = new float[v];
        model.Forward(a, state, fromA);
        var fromB = new float[v];
        model.Forward(b, fork, fromB);
        Assert.That(Qwen2Reference.RelativeError(fromA, Fresh([.. prefix, .. a])), Is.LessThan(1e-5));
        Assert.That(Qwen2Reference.RelativeError(fromB, Fresh([.. prefix, .. b])), Is.LessThan(1e-5));
        Assert.That(Qwen2Reference.RelativeError(fromA, fromB), Is.GreaterThan(1e-2));

        stream.Position = 0;
        ModelState restored = model.LoadState(stream);
        Assert.That(restored.Position, Is.EqualTo(prefix.Length));
        var fromRestored = new float[v];
        model.Forward(a, restored, fromRestored);
        Assert.That(fromRestored, Is.EqualTo(fromA));

        state.Reset();
        Assert.That(state.Position, Is.Zero);
        var afterReset = new float[v];
        model.Forward(b, state, afterReset);
        Assert.That(afterReset, Is.EqualTo(Fresh(b)));

        stream.SetLength(stream.Length - 3);
        stream.Position = 0;
        Assert.Throws<InvalidDataException>(() => model.LoadState(stream));
        Assert.Throws<InvalidDataException>(() => model.LoadState(new MemoryStream(new byte[64])));
    }

    [Test]
    public void LanguageModelLoadDispatchesOnModelType()
    {
        var shape = new Qwen2TestShape();
        string dir = Write(shape);
        using LanguageModel model = LanguageModel.Load(dir);
        Assert.That(model, Is.InstanceOf<Qwen2Model>());
        Assert.That(model.Architecture, Is.EqualTo("qwen2"));
        Assert.That(model.EosTokenIds, Is.EqualTo(new[] { 2, 3 }));
        var q = (Qwen2Model)model;
        Assert.That(q.Config.NumKeyValueHeads, Is.EqualTo(2));
        Assert.That(q.Config.HeadDim, Is.EqualTo(16));
        Assert.That(q.Config.BosTokenId, Is.EqualTo(1));
    }

    [Test]
    public void BadCallsThrowArgumentExceptions()
    {
        var shape = new Qwen2TestShape();
        string dir = Write(shape);
        using var model = Qwen2Model.Load(dir);
        ModelState state = model.CreateState();
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward([shape.Vocab], state, new float[shape.Vocab]));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward([-1], state, new float[shape.Vocab]));
        Assert.Throws<ArgumentException>(() => model.Forward([1, 2], state, new float[shape.Vocab], LogitsScope.All));
        Assert.Throws<ArgumentException>(() => model.Forward([1], state, new float[shape.Vocab - 1]));
        Assert.Throws<ArgumentException>(() => model.Forward([], state, new float[shape.Vocab]));
        Assert.That(state.Position, Is.Zero, "a rejected call must not advance the state");

        string otherDir = Write(shape with { Layers = 1 });
        using var other = Qwen2Model.Load(otherDir);
        Assert.Throws<ArgumentException>(() => model.Forward([1], other.CreateState(), new float[shape.Vocab]));
        Assert.Throws<ArgumentException>(() => Qwen2Model.Load(dir, new ModelOptions { Threads = 0 }));
    }

    [Test]
    public void MissingOrMisshapedTensorsNameFileAndTensor()
    {
        var shape = new Qwen2TestShape();
        string missing = Write(shape, ts => ts.Where(t => t.Name != "model.layers.1.self_attn.k_proj.bias"));
        var e = Assert.Throws<CheckpointException>(() => Qwen2Model.Load(missing))!;
        Assert.That(e.FilePath, Does.EndWith("model.safetensors"));
        Assert.That(e.Message, Does.Contain("model.layers.1.self_attn.k_proj.bias"));

        string misshaped = Write(shape, ts => ts.Select(t => t.Name == "model.layers.0.self_attn.k_proj.weight"
            ? t with { Shape = [shape.Hidden, shape.KvSize] } : t));
        e = Assert.Throws<CheckpointException>(() => Qwen2Model.Load(misshaped))!;
        Assert.That(e.Message, Does.Contain("model.layers.0.self_attn.k_proj.weight").And.Contain($"[{shape.KvSize}, {shape.Hidden}]"));

        string noHead = Write(shape, ts => ts.Where(t => t.Name != "lm_head.weight"));
        e = Assert.Throws<CheckpointException>(() => Qwen2Model.Load(noHead))!;
        Assert.That(e.Message, Does.Contain("lm_head.weight"));

        string noWeights = Qwen2TestCheckpoint.NewDirectory();
        _dirs.Add(noWeights);
        File.WriteAllText(Path.Combine(noWeights, "config.json"), Qwen2TestCheckpoint.ConfigJson(shape));
        e = Assert.Throws<CheckpointException>(() => Qwen2Model.Load(noWeights))!;
        Assert.That(e.FilePath, Does.EndWith("model.safetensors"));
    }

    [TestCase("\"num_key_value_heads\": 3", "num_key_value_heads")]
    [TestCase("\"num_attention_heads\": 5", "num_attention_heads")]
    [TestCase("\"hidden_size\": 0", "hidden_size")]
    [TestCase("\"vocab_size\": \"many\"", "vocab_size")]
    [TestCase("\"rope_theta\": -1", "rope_theta")]
    [TestCase("\"rms_norm_eps\": 0", "rms_norm_eps")]
    [TestCase("\"eos_token_id\": 500", "eos_token_id")]
    [TestCase("\"use_sliding_window\": true", "use_sliding_window")]
    [TestCase("\"rope_scaling\": {\"type\": \"yarn\"}", "rope_scaling")]
    public void BadConfigNamesConfigJsonAndField(string replacement, string field)
    {
        var shape = new Qwen2TestShape();
        string dir = Write(shape);
        string path = Path.Combine(dir, "config.json");
        string json = File.ReadAllText(path);
        string key = replacement[..replacement.IndexOf(':')];
        string edited = System.Text.RegularExpressions.Regex.Replace(json, System.Text.RegularExpressions.Regex.Escape(key) + @":[^\n]*?(?=,?\r?\n)", replacement);
        Assert.That(edited, Is.Not.EqualTo(json));
        json = edited;
        File.WriteAllText(path, json);
        var e = Assert.Throws<CheckpointException>(() => Qwen2Model.Load(dir))!;
        Assert.That(e.FilePath, Does.EndWith("config.json"));
        Assert.That(e.Message, Does.Contain(field));
    }
}
