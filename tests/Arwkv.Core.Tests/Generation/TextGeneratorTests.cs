using Arwkv.Generation;
using Arwkv.Tokenization;
using static Arwkv.Tests.Generation.FakeCodec;

namespace Arwkv.Tests.Generation;

public class TextGeneratorTests
{
    private static async Task<List<GeneratedToken>> Collect(IAsyncEnumerable<GeneratedToken> tokens)
    {
        var list = new List<GeneratedToken>();
        await foreach (GeneratedToken t in tokens) list.Add(t);
        return list;
    }

    private static GenerationOptions Greedy(int maxTokens = 50) => new() { MaxTokens = maxTokens, Sampling = SamplingOptions.Greedy };

    [Test]
    public async Task StopsOnTheStopTokenAndFeedsEveryYieldedToken()
    {
        // After the prompt the model says b, c, d, <|im_end|>.
        var model = FakeModel.Scripted(Vocab, 2, [1, 2, 3, ImEnd]);
        var generator = new TextGenerator(model, new FakeCodec());
        var state = (FakeState)model.CreateState();
        List<GeneratedToken> tokens = await Collect(generator.GenerateAsync([7, 8], Greedy(), state));

        Assert.That(tokens.Select(t => t.Id), Is.EqualTo(new[] { 1, 2, 3, ImEnd }));
        Assert.That(string.Concat(tokens.Select(t => t.Text)), Is.EqualTo("bcd"), "the stop token's text is not emitted");
        Assert.That(tokens.Take(3).All(t => t.FinishReason is null));
        Assert.That(tokens[^1].FinishReason, Is.EqualTo(GenerationFinishReason.Stop));
        Assert.That(state.Seen, Is.EqualTo(new[] { 7, 8, 1, 2, 3, ImEnd }));
        // One prefill with the whole prompt, then one token per forward; the last needs no logits.
        Assert.That(model.Calls, Is.EqualTo(new[]
        {
            (2, LogitsScope.Last), (1, LogitsScope.Last), (1, LogitsScope.Last), (1, LogitsScope.Last), (1, LogitsScope.None),
        }));
        GenerationStats stats = tokens[^1].Stats;
        Assert.That((stats.PromptTokens, stats.GeneratedTokens, stats.FinishReason), Is.EqualTo((2, 4, (GenerationFinishReason?)GenerationFinishReason.Stop)));
        Assert.That(stats.DecodeTokensPerSecond, Is.GreaterThan(0));
        Assert.That(stats.PrefillTokensPerSecond, Is.GreaterThan(0));
        Assert.That(generator.LastStats, Is.SameAs(stats));
    }

    [Test]
    public async Task DefaultStopTokensAreModelEosPlusImEndAndEndOfText()
    {
        var model = FakeModel.Successor(Vocab, x => x + 1, 5);
        var generator = new TextGenerator(model, new FakeCodec());
        Assert.That(generator.DefaultStopTokenIds.Order(), Is.EqualTo(new[] { 5, ImEnd, EndOfText }));
        // a -> b -> ... -> f: id 5 is the model's EOS.
        List<GeneratedToken> tokens = await Collect(generator.GenerateAsync([0], Greedy()));
        Assert.That(tokens.Select(t => t.Id), Is.EqualTo(new[] { 1, 2, 3, 4, 5 }));
        Assert.That(string.Concat(tokens.Select(t => t.Text)), Is.EqualTo("bcde"));

        // An explicit list replaces the defaults.
        tokens = await Collect(generator.GenerateAsync([0], Greedy() with { StopTokenIds = [3] }));
        Assert.That(tokens.Select(t => t.Id), Is.EqualTo(new[] { 1, 2, 3 }));
    }

    [Test]
    public async Task StopsAtMaxTokensWithLengthReason()
    {
        var model = FakeModel.Successor(Vocab, x => (x + 1) % 20);
        var generator = new TextGenerator(model, new FakeCodec());
        var state = (FakeState)model.CreateState();
        List<GeneratedToken> tokens = await Collect(generator.GenerateAsync("a", Greedy(4), state));
        Assert.That(tokens.Select(t => t.Id), Is.EqualTo(new[] { 1, 2, 3, 4 }));
        Assert.That(tokens[^1].FinishReason, Is.EqualTo(GenerationFinishReason.Length));
        Assert.That(string.Concat(tokens.Select(t => t.Text)), Is.EqualTo("bcde"));
        Assert.That(state.Seen, Has.Count.EqualTo(5));
        Assert.That(model.Calls[^1].Scope, Is.EqualTo(LogitsScope.None));

        // A second call continues the same state.
        tokens = await Collect(generator.GenerateAsync("k", Greedy(2), state));
        Assert.That(tokens.Select(t => t.Id), Is.EqualTo(new[] { 11, 12 }));
        Assert.That(state.Seen, Is.EqualTo(new[] { 0, 1, 2, 3, 4, 10, 11, 12 }));
    }

    [Test]
    public async Task CancellationBetweenTokensLeavesTheStateAtTheLastYieldedToken()
    {
        var model = FakeModel.Successor(Vocab, x => (x + 1) % 20);
        var generator = new TextGenerator(model, new FakeCodec());
        var state = (FakeState)model.CreateState();
        using var cts = new CancellationTokenSource();
        var received = new List<int>();
        // NUnit 5's ThrowsAsync returns a task: without the await nothing runs.
        await Assert.ThrowsAsync<OperationCanceledException>(async () =>
        {
            await foreach (GeneratedToken t in generator.GenerateAsync([0], Greedy(100), state, cts.Token))
            {
                received.Add(t.Id);
                if (received.Count == 3) cts.Cancel();
            }
        });
        Assert.That(received, Is.EqualTo(new[] { 1, 2, 3 }));
        Assert.That(state.Seen, Is.EqualTo(new[] { 0, 1, 2, 3 }));
        Assert.That(generator.LastStats!.FinishReason, Is.Null);
    }

    [Test]
    public async Task AnAlreadyCancelledTokenRunsNoForwardPass()
    {
        var model = FakeModel.Successor(Vocab, x => x);
        var generator = new TextGenerator(model, new FakeCodec());
        // NUnit 5's ThrowsAsync returns a task: without the await nothing runs.
        await Assert.ThrowsAsync<OperationCanceledException>(async () =>
            await Collect(generator.GenerateAsync([0], Greedy(), null, new CancellationToken(true))));
        Assert.That(model.Calls, Is.Empty);
    }

    [Test]
    public async Task StreamingHoldsBackAnIncompleteCharacter()
    {
        // x, high byte of é, low byte of é, y, then a dangling high byte cut off by max tokens.
        var model = FakeModel.Scripted(Vocab, 1, [23, EAcuteHigh, EAcuteLow, 24, EAcuteHigh]);
        var generator = new TextGenerator(model, new FakeCodec());
        List<GeneratedToken> tokens = await Collect(generator.GenerateAsync([0], Greedy(5)));
        Assert.That(tokens.Select(t => t.Text), Is.EqualTo(new[] { "x", "", "é", "y", "\uFFFD" }));
    }

    [Test]
    public async Task StopStringsCutTheTextAndEndGeneration()
    {
        // "ab cstop de": with stop string "stop" the output is "ab c" and nothing after.
        int[] script = new FakeCodec().Encode("b cstop de");
        var model = FakeModel.Scripted(Vocab, 1, script);
        var generator = new TextGenerator(model, new FakeCodec());
        List<GeneratedToken> tokens = await Collect(generator.GenerateAsync([0], Greedy(30) with { StopStrings = ["stop", "zzz"] }));
        Assert.That(string.Concat(tokens.Select(t => t.Text)), Is.EqualTo("b c"));
        Assert.That(tokens[^1].FinishReason, Is.EqualTo(GenerationFinishReason.Stop));
        Assert.That(tokens[^1].Id, Is.EqualTo(script[6]), "ends on the token that completes the stop string");

        // A prefix of a stop string that does not complete is released, at the latest when generation ends.
        script = new FakeCodec().Encode("b sto");
        model = FakeModel.Scripted(Vocab, 1, script);
        generator = new TextGenerator(model, new FakeCodec());
        tokens = await Collect(generator.GenerateAsync([0], Greedy(script.Length) with { StopStrings = ["stop"] }));
        Assert.That(tokens.Select(t => t.Text), Is.EqualTo(new[] { "b", " ", "", "", "sto" }));
        Assert.That(tokens[^1].FinishReason, Is.EqualTo(GenerationFinishReason.Length));
    }

    [Test]
    public void StopStringMatcherHoldsOnlyPossibleStarts()
    {
        var m = new StopStringMatcher(["<end>", "xy"]);
        Assert.That(m.Push("ab<e", out bool hit), Is.EqualTo("ab"));
        Assert.That(hit, Is.False);
        Assert.That(m.Push("nx", out hit), Is.EqualTo("<en"), "'<en' cannot start '<end>' once 'x' follows, but 'x' may start 'xy'");
        Assert.That(m.Push("y!", out hit), Is.EqualTo(""));
        Assert.That(hit, Is.True);
    }

    [Test]
    public async Task RepetitionPenaltySeesPromptAndGeneratedTokens()
    {
        // Token 5 always scores 2, token 6 scores 1.5: greedy repeats 5, a penalty of 2 (5 -> 1) moves to 6.
        var model = new FakeModel(Vocab, (_, logits) =>
        {
            logits.Clear();
            logits[5] = 2f;
            logits[6] = 1.5f;
        });
        var generator = new TextGenerator(model, new FakeCodec());
        var options = Greedy(3);
        Assert.That((await Collect(generator.GenerateAsync([0], options))).Select(t => t.Id), Is.EqualTo(new[] { 5, 5, 5 }));
        options = options with { Sampling = options.Sampling with { RepetitionPenalty = 2f } };
        // Once 5 is generated it scores 1 < 1.5, so 6 follows; with both penalized 5 (1) beats 6 (0.75).
        Assert.That((await Collect(generator.GenerateAsync([0], options))).Select(t => t.Id), Is.EqualTo(new[] { 5, 6, 5 }));
        // A prompt containing 5 penalizes it from the first token.
        Assert.That((await Collect(generator.GenerateAsync([5], options with { MaxTokens = 1 }))).Select(t => t.Id), Is.EqualTo(new[] { 6 }));
    }

    [Test]
    public async Task TextAndChatPromptsAreEncodedWithTheTokenizer()
    {
        var model = FakeModel.Scripted(Vocab, 0, [ImEnd]);
        var codec = new FakeCodec();
        var generator = new TextGenerator(model, codec);
        var state = (FakeState)model.CreateState();
        await Collect(generator.GenerateAsync([new ChatTurn("user", "hi")], Greedy(), state));
        Assert.That(state.Seen, Is.EqualTo(codec.Encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<|im_end|>")));
    }

    [Test]
    public async Task WithoutATokenizerIdsWorkAndTextIsEmpty()
    {
        var model = FakeModel.Successor(10, x => (x + 1) % 10);
        var generator = new TextGenerator(model);
        Assert.That(generator.HasTokenizer, Is.False);
        List<GeneratedToken> tokens = await Collect(generator.GenerateAsync([1], Greedy(3)));
        Assert.That(tokens.Select(t => t.Id), Is.EqualTo(new[] { 2, 3, 4 }));
        Assert.That(tokens.All(t => t.Text == ""));
        Assert.Throws<InvalidOperationException>(() => generator.GenerateAsync("text"));
    }

    [Test]
    public void BadArgumentsAreRejectedBeforeAnyWork()
    {
        var model = FakeModel.Successor(10, x => x);
        var generator = new TextGenerator(model);
        Assert.Throws<ArgumentException>(() => generator.GenerateAsync(Array.Empty<int>()));
        Assert.Throws<ArgumentException>(() => generator.GenerateAsync([10]));
        Assert.Throws<ArgumentException>(() => generator.GenerateAsync([-1]));
        Assert.Throws<ArgumentException>(() => generator.GenerateAsync([1], new GenerationOptions { MaxTokens = 0 }));
        Assert.Throws<ArgumentException>(() => generator.GenerateAsync([1], new GenerationOptions { Sampling = new() { TopP = 2 } }));
        Assert.Throws<ArgumentException>(() => generator.GenerateAsync([1], new GenerationOptions { StopStrings = [""] }));
        Assert.That(model.Calls, Is.Empty);
    }

    [Test]
    public async Task SeededSamplingIsReproducible()
    {
        var model = new FakeModel(Vocab, (seen, logits) =>
        {
            for (int i = 0; i < logits.Length; i++) logits[i] = (float)Math.Sin(i * 0.7 + seen.Count);
        });
        var generator = new TextGenerator(model, new FakeCodec());
        var options = new GenerationOptions { MaxTokens = 30, StopTokenIds = [], Sampling = new() { Temperature = 1f, Seed = 99 } };
        var a = (await Collect(generator.GenerateAsync([0], options))).Select(t => t.Id).ToArray();
        var b = (await Collect(generator.GenerateAsync([0], options))).Select(t => t.Id).ToArray();
        Assert.That(b, Is.EqualTo(a));
        Assert.That(a.Distinct().Count(), Is.GreaterThan(3), "sampling, not greedy");
    }
}
