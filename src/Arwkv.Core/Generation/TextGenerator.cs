using System.Diagnostics;
using System.Runtime.CompilerServices;
using Arwkv.Tokenization;

namespace Arwkv.Generation;

/// <summary>
/// Generates tokens and streamed text from a <see cref="LanguageModel"/>: the prompt is prefilled in one forward
/// pass, then tokens are chosen and fed one at a time. Not thread-safe: one generation at a time per instance
/// (the model's forward pass is not reentrant either).
/// </summary>
public sealed class TextGenerator
{
    private readonly ITokenCodec? _codec;

    /// <summary>Creates a generator over <paramref name="model"/>.</summary>
    /// <param name="model">The model.</param>
    /// <param name="tokenizer">The tokenizer for text prompts and output; null uses <see cref="LanguageModel.Tokenizer"/>.
    /// Without one, only token-id prompts work and generated text is empty.</param>
    public TextGenerator(LanguageModel model, QwenTokenizer? tokenizer = null)
        : this(model, (tokenizer ?? model?.Tokenizer) is { } t ? new QwenTokenCodec(t) : null)
    {
    }

    internal TextGenerator(LanguageModel model, ITokenCodec? codec)
    {
        ArgumentNullException.ThrowIfNull(model);
        Model = model;
        _codec = codec;
        var stops = new List<int>(model.EosTokenIds);
        if (codec?.ImEndId is int imEnd) stops.Add(imEnd);
        if (codec?.EndOfTextId is int endOfText) stops.Add(endOfText);
        DefaultStopTokenIds = stops.Distinct().ToArray();
    }

    /// <summary>The model that generates.</summary>
    public LanguageModel Model { get; }

    /// <summary>Whether text prompts and text output are available.</summary>
    public bool HasTokenizer => _codec is not null;

    /// <summary>The stop tokens used when <see cref="GenerationOptions.StopTokenIds"/> is null: the model's EOS ids, &lt;|im_end|&gt; and &lt;|endoftext|&gt;.</summary>
    public IReadOnlyList<int> DefaultStopTokenIds { get; }

    /// <summary>Id of &lt;|im_end|&gt;, when the tokenizer has it.</summary>
    internal int? ImEndId => _codec?.ImEndId;

    internal ITokenCodec? Codec => _codec;

    /// <summary>Statistics of the latest generation started on this instance.</summary>
    public GenerationStats? LastStats { get; private set; }

    /// <summary>Token ids of <paramref name="text"/> (no special tokens added).</summary>
    /// <exception cref="InvalidOperationException">No tokenizer.</exception>
    public int[] Encode(string text) => RequireCodec().Encode(text);

    /// <summary>Token ids of a conversation rendered with the ChatML template, ending with the assistant's turn header.</summary>
    /// <exception cref="InvalidOperationException">No tokenizer.</exception>
    public int[] EncodeChat(IEnumerable<ChatTurn> conversation)
    {
        ITokenCodec codec = RequireCodec();
        return codec.Encode(codec.ApplyChatTemplate(conversation, addGenerationPrompt: true));
    }

    /// <summary>Continues <paramref name="prompt"/>, encoded without special tokens added.</summary>
    /// <inheritdoc cref="GenerateAsync(IReadOnlyList{int}, GenerationOptions?, ModelState?, CancellationToken)"/>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(string prompt, GenerationOptions? options = null, ModelState? state = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(Encode(prompt), options, state, cancellationToken);

    /// <summary>Answers a conversation as the assistant (ChatML template with the generation prompt).</summary>
    /// <inheritdoc cref="GenerateAsync(IReadOnlyList{int}, GenerationOptions?, ModelState?, CancellationToken)"/>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(IEnumerable<ChatTurn> conversation, GenerationOptions? options = null, ModelState? state = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(EncodeChat(conversation), options, state, cancellationToken);

    /// <summary>
    /// Feeds <paramref name="prompt"/> after whatever <paramref name="state"/> has seen and generates until a stop
    /// token, a stop string or <see cref="GenerationOptions.MaxTokens"/>. Every yielded token has been fed to the
    /// state before it is yielded, so after the enumeration ends (or is abandoned, or cancelled between tokens)
    /// the state has seen the prompt and exactly the tokens yielded.
    /// </summary>
    /// <param name="prompt">Token ids to feed first; must not be empty.</param>
    /// <param name="options">Limits, stop conditions and sampling; null uses the defaults.</param>
    /// <param name="state">State to continue from (and advance); null starts from a fresh one.</param>
    /// <param name="cancellationToken">Checked before every forward pass; cancellation throws <see cref="OperationCanceledException"/>.</param>
    /// <exception cref="ArgumentException">An empty prompt, an id outside the vocabulary, or invalid options.</exception>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(IReadOnlyList<int> prompt, GenerationOptions? options = null, ModelState? state = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        options ??= new GenerationOptions();
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty", nameof(prompt));
        if (options.MaxTokens < 1) throw new ArgumentException($"max tokens must be at least 1, got {options.MaxTokens}", nameof(options));
        options.Sampling.Validate();
        int vocab = Model.VocabSize;
        int[] ids = prompt.ToArray();
        foreach (int id in ids)
            if ((uint)id >= (uint)vocab) throw new ArgumentException($"token id {id} is outside the vocabulary [0, {vocab})", nameof(prompt));
        if (options.StopStrings is { } strings && strings.Any(string.IsNullOrEmpty))
            throw new ArgumentException("stop strings must not be empty", nameof(options));
        return Run(ids, options, state ?? Model.CreateState(), cancellationToken);
    }

    private async IAsyncEnumerable<GeneratedToken> Run(int[] prompt, GenerationOptions options, ModelState state, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        // The forward passes are long and synchronous: start them on the thread pool, not on the caller's context.
        await Task.Yield();
        var stats = new GenerationStats { PromptTokens = prompt.Length };
        LastStats = stats;
        int vocab = Model.VocabSize;
        var logits = new float[vocab];
        var sampler = new Sampler(vocab, options.Sampling);
        var history = new int[prompt.Length + options.MaxTokens];
        prompt.CopyTo(history, 0);
        int historyCount = prompt.Length;
        var stops = new HashSet<int>(options.StopTokenIds ?? DefaultStopTokenIds);
        ITokenTextStream? text = _codec?.CreateStream();
        StopStringMatcher? matcher = text is not null && options.StopStrings is { Count: > 0 } s ? new StopStringMatcher(s) : null;
        var one = new int[1];

        cancellationToken.ThrowIfCancellationRequested();
        long start = Stopwatch.GetTimestamp();
        Model.Forward(prompt, state, logits, LogitsScope.Last);
        stats.PrefillTime = Stopwatch.GetElapsedTime(start);

        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            start = Stopwatch.GetTimestamp();
            int id = sampler.Sample(logits, history.AsSpan(0, historyCount));
            history[historyCount++] = id;
            stats.GeneratedTokens++;
            bool isStop = stops.Contains(id);
            GenerationFinishReason? finish = isStop ? GenerationFinishReason.Stop
                : stats.GeneratedTokens >= options.MaxTokens ? GenerationFinishReason.Length : null;
            one[0] = id;
            Model.Forward(one, state, logits, finish is null ? LogitsScope.Last : LogitsScope.None);
            stats.DecodeTime += Stopwatch.GetElapsedTime(start);

            string piece = "";
            if (text is not null)
            {
                piece = isStop ? "" : text.Append(id);
                if (finish is not null) piece += text.Flush();
                if (matcher is not null)
                {
                    piece = matcher.Push(piece, out bool hit);
                    if (hit) finish = GenerationFinishReason.Stop;
                    else if (finish is not null) piece += matcher.TakeHeld();
                }
            }
            stats.FinishReason = finish;
            yield return new GeneratedToken(id, piece, finish, stats);
            if (finish is not null) yield break;
        }
    }

    private ITokenCodec RequireCodec() =>
        _codec ?? throw new InvalidOperationException("this model has no tokenizer (tokenizer.json is missing from its directory); pass token ids instead of text");
}

/// <summary>Finds stop strings in streamed text, holding back any tail that could be the start of one.</summary>
internal sealed class StopStringMatcher(IReadOnlyList<string> stops)
{
    private string _held = "";

    /// <summary>Adds <paramref name="piece"/>; returns the text safe to emit. On a hit, that is the text before the stop string.</summary>
    public string Push(string piece, out bool hit)
    {
        string s = _held + piece;
        int first = -1;
        foreach (string stop in stops)
        {
            int at = s.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        if (first >= 0)
        {
            hit = true;
            _held = "";
            return s[..first];
        }
        hit = false;
        int keep = 0;
        foreach (string stop in stops)
        {
            for (int n = Math.Min(stop.Length - 1, s.Length); n > keep; n--)
            {
                if (s.AsSpan(s.Length - n).SequenceEqual(stop.AsSpan(0, n)))
                {
                    keep = n;
                    break;
                }
            }
        }
        _held = s[(s.Length - keep)..];
        return s[..(s.Length - keep)];
    }

    /// <summary>Returns and clears the held-back text.</summary>
    public string TakeHeld()
    {
        string held = _held;
        _held = "";
        return held;
    }
}
