using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Arwkv.Tokenization;

/// <summary>
/// Makes a Hugging Face pre-tokenizer regex match code points the way Rust's regex and Oniguruma do, although .NET's
/// Regex works on UTF-16 units.
/// </summary>
/// <remarks>
/// In .NET, \p{L} and \p{N} never match a character outside the BMP (its two surrogates are category Cs), while a
/// negated class such as [^\s\p{L}\p{N}] matches each surrogate. Qwen's regex would then treat "𝔘" (a letter) or
/// "𠮷" (CJK Extension B) as punctuation and "𝟙" as a non-digit, and the ids would differ from Hugging Face's. Every
/// class (bracketed, or an escape such as \p{L}, \w, \S) is therefore rewritten as
/// <c>(?:[its BMP part, surrogates removed]|surrogate pairs of its supplementary-plane members|lone surrogates if it
/// matched them before)</c>, with the members taken from .NET's own Unicode tables.
/// </remarks>
internal static class CodePointRegex
{
    private const int FirstSupplementary = 0x10000;
    private const int CodePointCount = 0x110000 - FirstSupplementary;
    private const string LoneSurrogate = @"[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]";

    // Loading several checkpoints with the same tokenizer rewrites the pattern once.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> Rewritten = new(StringComparer.Ordinal);

    private static byte[] SupplementaryCategories()
    {
        var categories = new byte[CodePointCount];
        for (int i = 0; i < categories.Length; i++)
            categories[i] = (byte)CharUnicodeInfo.GetUnicodeCategory(FirstSupplementary + i);
        return categories;
    }

    /// <summary>Returns <paramref name="pattern"/> with every character class made code-point aware.</summary>
    /// <exception cref="NotSupportedException">The pattern uses a class construct this rewrite does not handle.</exception>
    public static string Rewrite(string pattern) => Rewritten.GetOrAdd(pattern, RewriteUncached);

    private static string RewriteUncached(string pattern)
    {
        byte[] categories = SupplementaryCategories();
        var result = new StringBuilder(pattern.Length * 4);
        // Whether case-insensitive matching is on, per open group (the innermost last).
        var ignoreCase = new Stack<bool>();
        bool ignoring = false;
        int i = 0;
        while (i < pattern.Length)
        {
            char c = pattern[i];
            if (c == '(')
            {
                // (?i:...), (?-i:...), (?i) and friends; other (?...) constructs have no letters before ':' or ')'.
                int flagsEnd = i + 1;
                bool? setting = null;
                if (flagsEnd < pattern.Length && pattern[flagsEnd] == '?')
                {
                    flagsEnd++;
                    bool on = true;
                    while (flagsEnd < pattern.Length && (char.IsAsciiLetter(pattern[flagsEnd]) || pattern[flagsEnd] == '-'))
                    {
                        if (pattern[flagsEnd] == '-')
                            on = false;
                        else if (pattern[flagsEnd] == 'i')
                            setting = on;
                        flagsEnd++;
                    }
                    if (flagsEnd >= pattern.Length || pattern[flagsEnd] is not (':' or ')'))
                        setting = null;
                }
                if (setting is { } value && pattern[flagsEnd] == ')')
                {
                    // (?i) switches the enclosing group from here on; it opens no group.
                    ignoring = value;
                    result.Append(pattern, i, flagsEnd + 1 - i);
                    i = flagsEnd + 1;
                    continue;
                }
                ignoreCase.Push(ignoring);
                if (setting is { } groupValue)
                    ignoring = groupValue;
                result.Append(c);
                i++;
            }
            else if (c == ')')
            {
                ignoring = ignoreCase.Count > 0 ? ignoreCase.Pop() : ignoring;
                result.Append(c);
                i++;
            }
            else if (ignoring && c is 's' or 'S' or 'k' or 'K')
            {
                // Unicode simple case folding, which Rust's regex and Oniguruma apply, also matches U+017F (long s)
                // with s and U+212A (Kelvin sign) with k; .NET's IgnoreCase does not.
                result.Append(c is 's' or 'S' ? @"[sS\u017F]" : @"[kK\u212A]");
                i++;
            }
            else if (c == '[')
            {
                int end = ParseClass(pattern, i, out List<ClassItem> items, out bool negated);
                AppendClass(result, pattern[i..end], items, negated, categories);
                i = end;
            }
            else if (c == '\\' && i + 1 < pattern.Length && TryParseClassEscape(pattern, i, out ClassItem item, out int end))
            {
                AppendClass(result, $"[{pattern[i..end]}]", [item], negated: false, categories);
                i = end;
            }
            else if (c == '\\' && i + 1 < pattern.Length)
            {
                result.Append(pattern, i, 2);
                i += 2;
            }
            else
            {
                if (char.IsSurrogate(c))
                    throw new NotSupportedException("a supplementary-plane literal in a pre-tokenizer regex");
                result.Append(c);
                i++;
            }
        }
        return result.ToString();
    }

    /// <summary>One member of a class, as a predicate on supplementary-plane code points.</summary>
    private readonly record struct ClassItem(Func<UnicodeCategory, bool>? Categories, bool Negated)
    {
        // Literals and ranges (necessarily BMP here) never match a supplementary code point.
        public bool Matches(UnicodeCategory category) => Categories is not null && Categories(category) != Negated;
    }

    private static void AppendClass(StringBuilder result, string bmpClass, List<ClassItem> items, bool negated, byte[] categories)
    {
        // The BMP part: the original class minus surrogates (class subtraction, valid for [..] and [^..] alike).
        string bmpOnly = bmpClass[..^1] + @"-[\uD800-\uDFFF]]";
        string pairs = SupplementaryAlternation(items, negated, categories);
        bool matchedLoneSurrogates = new Regex(bmpClass, RegexOptions.CultureInvariant).IsMatch("\uD800");
        if (pairs.Length == 0 && !matchedLoneSurrogates)
        {
            result.Append(bmpOnly);
            return;
        }
        result.Append("(?:").Append(bmpOnly);
        if (pairs.Length > 0)
            result.Append('|').Append(pairs);
        if (matchedLoneSurrogates)
            result.Append('|').Append(LoneSurrogate);
        result.Append(')');
    }

    /// <summary>The supplementary code points of the class as an alternation of surrogate pairs, grouped by high surrogate.</summary>
    private static string SupplementaryAlternation(List<ClassItem> items, bool negated, byte[] categories)
    {
        Span<bool> memberByCategory = stackalloc bool[32];
        bool any = false;
        for (int category = 0; category <= (int)UnicodeCategory.OtherNotAssigned; category++)
        {
            bool member = false;
            foreach (ClassItem item in items)
                member |= item.Matches((UnicodeCategory)category);
            memberByCategory[category] = member != negated;
            any |= memberByCategory[category];
        }
        if (!any)
            return "";

        var alternation = new StringBuilder();
        // Runs of whole high-surrogate blocks (1024 code points each) that are entirely members collapse into one range.
        int fullRunStart = -1;
        for (int high = 0; high < 1024; high++)
        {
            int blockStart = high * 1024;
            int memberCount = 0;
            for (int low = 0; low < 1024; low++)
                memberCount += memberByCategory[categories[blockStart + low]] ? 1 : 0;

            if (memberCount == 1024)
            {
                if (fullRunStart < 0)
                    fullRunStart = high;
                continue;
            }
            FlushFullRun(alternation, ref fullRunStart, high - 1);
            if (memberCount == 0)
                continue;

            Separate(alternation).Append(Escape((char)(0xD800 + high))).Append('[');
            int low2 = 0;
            while (low2 < 1024)
            {
                if (!memberByCategory[categories[blockStart + low2]])
                {
                    low2++;
                    continue;
                }
                int first = low2;
                while (low2 < 1024 && memberByCategory[categories[blockStart + low2]])
                    low2++;
                alternation.Append(Escape((char)(0xDC00 + first)));
                if (low2 - 1 > first)
                    alternation.Append('-').Append(Escape((char)(0xDC00 + low2 - 1)));
            }
            alternation.Append(']');
        }
        FlushFullRun(alternation, ref fullRunStart, 1023);
        // A lookahead on "some high surrogate" lets BMP text skip the whole alternation at once.
        return $@"(?=[\uD800-\uDBFF])(?:{alternation})";
    }

    private static void FlushFullRun(StringBuilder alternation, ref int fullRunStart, int lastHigh)
    {
        if (fullRunStart < 0)
            return;
        Separate(alternation).Append('[').Append(Escape((char)(0xD800 + fullRunStart)));
        if (lastHigh > fullRunStart)
            alternation.Append('-').Append(Escape((char)(0xD800 + lastHigh)));
        alternation.Append(@"][\uDC00-\uDFFF]");
        fullRunStart = -1;
    }

    private static StringBuilder Separate(StringBuilder alternation) => alternation.Length > 0 ? alternation.Append('|') : alternation;

    private static string Escape(char c) => $"\\u{(int)c:X4}";

    /// <summary>Parses the class starting at <paramref name="start"/> ('['); returns the index after its ']'.</summary>
    private static int ParseClass(string pattern, int start, out List<ClassItem> items, out bool negated)
    {
        items = [];
        int i = start + 1;
        negated = i < pattern.Length && pattern[i] == '^';
        if (negated)
            i++;
        bool first = true;
        while (i < pattern.Length)
        {
            char c = pattern[i];
            if (c == ']' && !first)
                return i + 1;
            first = false;
            if (c == '[' || (c == '-' && i + 1 < pattern.Length && pattern[i + 1] == '['))
                throw new NotSupportedException("nested classes or class subtraction in a pre-tokenizer regex");
            if (char.IsSurrogate(c))
                throw new NotSupportedException("a supplementary-plane literal in a pre-tokenizer regex class");
            if (c == '\\' && i + 1 < pattern.Length)
            {
                if (TryParseClassEscape(pattern, i, out ClassItem item, out int end))
                {
                    items.Add(item);
                    i = end;
                    continue;
                }
                // \uD83D and the like would put half a pair into the class.
                if (pattern[i + 1] == 'u' && i + 6 <= pattern.Length
                    && int.TryParse(pattern.AsSpan(i + 2, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int unit)
                    && char.IsSurrogate((char)unit))
                    throw new NotSupportedException("a surrogate escape in a pre-tokenizer regex class");
                i += 2;
                continue;
            }
            i++;
        }
        throw new ArgumentException($"unterminated character class at offset {start}");
    }

    /// <summary>Recognizes \p{..}, \P{..}, \d, \D, \w, \W, \s, \S at <paramref name="i"/>.</summary>
    private static bool TryParseClassEscape(string pattern, int i, out ClassItem item, out int end)
    {
        char kind = pattern[i + 1];
        end = i + 2;
        switch (kind)
        {
            case 'p' or 'P':
                int close = pattern.IndexOf('}', i + 2);
                if (i + 2 >= pattern.Length || pattern[i + 2] != '{' || close < 0)
                    throw new ArgumentException($"malformed \\{kind} at offset {i}");
                string name = pattern[(i + 3)..close];
                end = close + 1;
                item = new ClassItem(CategoryPredicate(name), Negated: kind == 'P');
                return true;
            case 'd' or 'D':
                item = new ClassItem(static c => c == UnicodeCategory.DecimalDigitNumber, Negated: kind == 'D');
                return true;
            case 'w' or 'W':
                // .NET's \w is [\p{L}\p{Mn}\p{Nd}\p{Pc}].
                item = new ClassItem(static c => IsLetter(c) || c is UnicodeCategory.NonSpacingMark or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.ConnectorPunctuation, Negated: kind == 'W');
                return true;
            case 's' or 'S':
                // No supplementary code point is white space.
                item = new ClassItem(static c => false, Negated: kind == 'S');
                return true;
            default:
                item = default;
                return false;
        }
    }

    private static bool IsLetter(UnicodeCategory c) => c <= UnicodeCategory.OtherLetter;

    private static Func<UnicodeCategory, bool> CategoryPredicate(string name) => name switch
    {
        "L" => IsLetter,
        "M" => static c => c is >= UnicodeCategory.NonSpacingMark and <= UnicodeCategory.EnclosingMark,
        "N" => static c => c is >= UnicodeCategory.DecimalDigitNumber and <= UnicodeCategory.OtherNumber,
        "Z" => static c => c is >= UnicodeCategory.SpaceSeparator and <= UnicodeCategory.ParagraphSeparator,
        "C" => static c => c is >= UnicodeCategory.Control and <= UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned,
        "P" => static c => c is >= UnicodeCategory.ConnectorPunctuation and <= UnicodeCategory.OtherPunctuation,
        "S" => static c => c is >= UnicodeCategory.MathSymbol and <= UnicodeCategory.OtherSymbol,
        _ => SingleCategory(name),
    };

    private static Func<UnicodeCategory, bool> SingleCategory(string name)
    {
        UnicodeCategory category = name switch
        {
            "Lu" => UnicodeCategory.UppercaseLetter, "Ll" => UnicodeCategory.LowercaseLetter, "Lt" => UnicodeCategory.TitlecaseLetter,
            "Lm" => UnicodeCategory.ModifierLetter, "Lo" => UnicodeCategory.OtherLetter,
            "Mn" => UnicodeCategory.NonSpacingMark, "Mc" => UnicodeCategory.SpacingCombiningMark, "Me" => UnicodeCategory.EnclosingMark,
            "Nd" => UnicodeCategory.DecimalDigitNumber, "Nl" => UnicodeCategory.LetterNumber, "No" => UnicodeCategory.OtherNumber,
            "Zs" => UnicodeCategory.SpaceSeparator, "Zl" => UnicodeCategory.LineSeparator, "Zp" => UnicodeCategory.ParagraphSeparator,
            "Cc" => UnicodeCategory.Control, "Cf" => UnicodeCategory.Format, "Cs" => UnicodeCategory.Surrogate,
            "Co" => UnicodeCategory.PrivateUse, "Cn" => UnicodeCategory.OtherNotAssigned,
            "Pc" => UnicodeCategory.ConnectorPunctuation, "Pd" => UnicodeCategory.DashPunctuation, "Ps" => UnicodeCategory.OpenPunctuation,
            "Pe" => UnicodeCategory.ClosePunctuation, "Pi" => UnicodeCategory.InitialQuotePunctuation, "Pf" => UnicodeCategory.FinalQuotePunctuation,
            "Po" => UnicodeCategory.OtherPunctuation,
            "Sm" => UnicodeCategory.MathSymbol, "Sc" => UnicodeCategory.CurrencySymbol, "Sk" => UnicodeCategory.ModifierSymbol,
            "So" => UnicodeCategory.OtherSymbol,
            _ => throw new NotSupportedException($"\\p{{{name}}} in a pre-tokenizer regex (only general categories are supported)"),
        };
        return c => c == category;
    }
}
