using System.Text;
using System.Text.RegularExpressions;
using Arwkv.Tokenization;

namespace Arwkv.Tests.Tokenization;

/// <summary>The rewrite that makes .NET regex classes match supplementary-plane code points as Rust/Oniguruma do.</summary>
[TestFixture]
public sealed class CodePointRegexTests
{
    private static readonly Regex Qwen = new(CodePointRegex.Rewrite(SyntheticTokenizerJson.QwenRegex), RegexOptions.CultureInvariant);

    private static string[] Split(string text) => Qwen.Matches(text).Select(m => m.Value).ToArray();

    [Test]
    public void SupplementaryLettersAndDigitsKeepTheirCategories()
    {
        Assert.That(Split("𝔘's"), Is.EqualTo(new[] { "𝔘", "'s" }));
        Assert.That(Split("x𝟘y"), Is.EqualTo(new[] { "x", "𝟘", "y" }));
        Assert.That(Split(" 𠮷野家"), Is.EqualTo(new[] { " 𠮷野家" }));
        Assert.That(Split("a 😀😀 b"), Is.EqualTo(new[] { "a", " 😀😀", " b" }));
        Assert.That(Split("1𝟙2"), Is.EqualTo(new[] { "1", "𝟙", "2" }));
    }

    [Test]
    public void UnicodeCaseFoldingAppliesInCaseInsensitiveGroups()
    {
        Assert.That(Split("it'ſ"), Is.EqualTo(new[] { "it", "'ſ" }));
        Assert.That(new Regex(CodePointRegex.Rewrite("(?i)k")).IsMatch("\u212A"), Is.True);
        Assert.That(new Regex(CodePointRegex.Rewrite("(?i:x)s")).IsMatch("Xſ"), Is.False, "the flag ends with its group");
        Assert.That(new Regex(CodePointRegex.Rewrite("(?i:x(?-i:s))")).IsMatch("Xſ"), Is.False);
    }

    [Test]
    public void NothingIsDroppedNotEvenLoneSurrogates()
    {
        foreach (string text in (string[])["a\uD800b", "\uDC00x", "x\uD83D", "𝔘\uDC00𝔘", "'\uD800s 𠮷\uDBFF\n\uDFFF"])
            Assert.That(string.Concat(Split(text)), Is.EqualTo(text), Escape(text));
    }

    [Test]
    public void ClassesAgreeWithRuneCategoriesOnSampledSupplementaryCodePoints()
    {
        var letter = new Regex($"^{CodePointRegex.Rewrite(@"\p{L}")}$", RegexOptions.CultureInvariant);
        var number = new Regex($"^{CodePointRegex.Rewrite(@"\p{N}")}$", RegexOptions.CultureInvariant);
        var other = new Regex($"^{CodePointRegex.Rewrite(@"[^\s\p{L}\p{N}]")}$", RegexOptions.CultureInvariant);
        var word = new Regex($"^{CodePointRegex.Rewrite(@"\w")}$", RegexOptions.CultureInvariant);
        int checkedCount = 0;
        for (int cp = 0x10000; cp <= 0x10FFFF; cp += cp < 0x20000 ? 11 : 257)
        {
            var rune = new Rune(cp);
            string text = rune.ToString();
            bool isLetter = Rune.IsLetter(rune), isNumber = Rune.IsNumber(rune);
            Assert.That(letter.IsMatch(text), Is.EqualTo(isLetter), $"\\p{{L}} U+{cp:X}");
            Assert.That(number.IsMatch(text), Is.EqualTo(isNumber), $"\\p{{N}} U+{cp:X}");
            Assert.That(other.IsMatch(text), Is.EqualTo(!isLetter && !isNumber), $"[^\\s\\p{{L}}\\p{{N}}] U+{cp:X}");
            Assert.That(word.IsMatch(text), Is.EqualTo(isLetter || Rune.IsDigit(rune) || Rune.GetUnicodeCategory(rune) is System.Globalization.UnicodeCategory.NonSpacingMark or System.Globalization.UnicodeCategory.ConnectorPunctuation), $"\\w U+{cp:X}");
            checkedCount++;
        }
        Assert.That(checkedCount, Is.GreaterThan(8_000));
    }

    [Test]
    public void BmpBehaviourIsUnchanged()
    {
        var original = new Regex(SyntheticTokenizerJson.QwenRegex, RegexOptions.CultureInvariant);
        string text = string.Concat(QwenTokenizerInteropTests.HandWrittenCorpus).Where(c => !char.IsSurrogate(c) && c != 'ſ').Aggregate(new StringBuilder(), (b, c) => b.Append(c)).ToString();
        Assert.That(Split(text), Is.EqualTo(original.Matches(text).Select(m => m.Value)));
    }

    [TestCase(@"[a-z-[aeiou]]")]
    [TestCase(@"\p{IsGreek}")]
    [TestCase(@"[\uD835]")]
    public void UnsupportedConstructsAreRefused(string pattern) =>
        Assert.Throws<NotSupportedException>(() => CodePointRegex.Rewrite(pattern));

    private static string Escape(string text) => string.Concat(text.Select(c => c < 128 ? c.ToString() : $"\\u{(int)c:X4}"));
}
