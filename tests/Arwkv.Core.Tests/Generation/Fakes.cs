using System.Text;
using Arwkv.Generation;
using Arwkv.Tokenization;

namespace Arwkv.Tests.Generation;

/// <summary>Writes the logits that follow <c>seen</c> (every token fed so far, the current one last).</summary>
internal delegate void LogitsRule(IReadOnlyList<int> seen, Span<float> logits);

/// <summary>A deterministic stand-in for a model: logits are a function of the tokens the state has seen.</summary>
internal sealed class FakeModel : LanguageModel
{
    private readonly int _vocab;
    private readonly LogitsRule _rule;

    public FakeModel(int vocab, LogitsRule rule, params int[] eos)
    {
        _vocab = vocab;
        _rule = rule;
        EosTokenIds = eos;
    }

    /// <summary>A model whose next token is a fixed function of the last one (logit 10 for it, 0 elsewhere).</summary>
    public static FakeModel Successor(int vocab, Func<int, int> next, params int[] eos) =>
        new(vocab, (seen, logits) =>
        {
            logits.Clear();
            logits[next(seen[^1])] = 10;
        }, eos);

    /// <summary>A model that, after the prompt, walks <paramref name="script"/> token by token (then repeats its last entry).</summary>
    public static FakeModel Scripted(int vocab, int promptLength, int[] script, params int[] eos) =>
        new(vocab, (seen, logits) =>
        {
            logits.Clear();
            int k = Math.Min(seen.Count - promptLength, script.Length - 1);
            logits[script[Math.Max(k, 0)]] = 10;
        }, eos);

    public override string Architecture => "fake";
    public override int VocabSize => _vocab;
    public List<(int Tokens, LogitsScope Scope)> Calls { get; } = [];
    public List<int[]> Fed { get; } = [];
    public List<ModelOptions> LoadedWith { get; } = [];
    public bool Disposed { get; private set; }

    public override ModelState CreateState() => new FakeState();

    public override void Forward(ReadOnlySpan<int> tokens, ModelState state, Span<float> logits, LogitsScope scope = LogitsScope.Last)
    {
        var s = (FakeState)state;
        Calls.Add((tokens.Length, scope));
        Fed.Add(tokens.ToArray());
        for (int t = 0; t < tokens.Length; t++)
        {
            if ((uint)tokens[t] >= (uint)_vocab) throw new ArgumentOutOfRangeException(nameof(tokens));
            s.Seen.Add(tokens[t]);
            s.Advance();
            if (scope == LogitsScope.All) _rule(s.Seen, logits.Slice(t * _vocab, _vocab));
        }
        if (scope == LogitsScope.Last) _rule(s.Seen, logits[.._vocab]);
    }

    protected override void Dispose(bool disposing) => Disposed = true;
}

internal sealed class FakeState : ModelState
{
    public List<int> Seen { get; } = [];
    public void Advance() => Position++;
    public override ModelState Clone()
    {
        var c = new FakeState { Position = Position };
        c.Seen.AddRange(Seen);
        return c;
    }
    public override void Reset()
    {
        Seen.Clear();
        Position = 0;
    }
    public override void Save(Stream stream)
    {
        foreach (int id in Seen) stream.Write(BitConverter.GetBytes(id));
    }
}

/// <summary>
/// A tokenizer over a tiny fixed vocabulary: ids 0..25 are 'a'..'z', then a space, a newline, the ChatML and
/// end-of-text specials, and two ids that are the two UTF-8 bytes of 'é' (so streaming must hold the first back).
/// </summary>
internal sealed class FakeCodec : ITokenCodec
{
    public const int Space = 26, Newline = 27, ImStart = 28, ImEnd = 29, EndOfText = 30, EAcuteHigh = 31, EAcuteLow = 32, Vocab = 33;
    private static readonly string[] Specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"];

    public int? EndOfTextId => EndOfText;
    public int? ImEndId => ImEnd;

    public static string Piece(int id) => id switch
    {
        < 26 => ((char)('a' + id)).ToString(),
        Space => " ",
        Newline => "\n",
        ImStart => "<|im_start|>",
        ImEnd => "<|im_end|>",
        EndOfText => "<|endoftext|>",
        _ => throw new ArgumentOutOfRangeException(nameof(id)),
    };

    public int[] Encode(string text)
    {
        var ids = new List<int>();
        for (int i = 0; i < text.Length;)
        {
            string? special = Specials.FirstOrDefault(s => text.AsSpan(i).StartsWith(s));
            if (special is not null)
            {
                ids.Add(ImStart + Array.IndexOf(Specials, special));
                i += special.Length;
                continue;
            }
            char c = text[i++];
            ids.Add(c switch
            {
                >= 'a' and <= 'z' => c - 'a',
                ' ' => Space,
                '\n' => Newline,
                'é' => EAcuteHigh,
                _ => throw new ArgumentException($"fake tokenizer cannot encode '{c}'"),
            });
            if (c == 'é') ids.Add(EAcuteLow);
        }
        return [.. ids];
    }

    public string ApplyChatTemplate(IEnumerable<ChatTurn> messages, bool addGenerationPrompt)
    {
        var sb = new StringBuilder();
        foreach (ChatTurn turn in messages) sb.Append($"<|im_start|>{turn.Role}\n{turn.Content}<|im_end|>\n");
        if (addGenerationPrompt) sb.Append("<|im_start|>assistant\n");
        return sb.ToString();
    }

    public ITokenTextStream CreateStream() => new Stream();

    private sealed class Stream : ITokenTextStream
    {
        private bool _pendingHigh;

        public string Append(int id)
        {
            if (id == EAcuteHigh)
            {
                string before = _pendingHigh ? "\uFFFD" : "";
                _pendingHigh = true;
                return before;
            }
            if (id == EAcuteLow)
            {
                string text = _pendingHigh ? "é" : "\uFFFD";
                _pendingHigh = false;
                return text;
            }
            string prefix = _pendingHigh ? "\uFFFD" : "";
            _pendingHigh = false;
            return prefix + Piece(id);
        }

        public string Flush()
        {
            string text = _pendingHigh ? "\uFFFD" : "";
            _pendingHigh = false;
            return text;
        }
    }
}
