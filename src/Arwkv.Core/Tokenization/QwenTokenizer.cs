using System.Text;
using System.Text.RegularExpressions;
using Arwkv.IO;
using Microsoft.ML.Tokenizers;

namespace Arwkv.Tokenization;

/// <summary>One message of a chat, rendered by the ChatML template.</summary>
/// <param name="Role">"system", "user" or "assistant" ("tool" results are rendered as Qwen2.5 does).</param>
/// <param name="Content">The message text.</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>
/// Qwen2.5's byte-level BPE tokenizer, read from a checkpoint's tokenizer.json and run by Microsoft.ML.Tokenizers.
/// </summary>
/// <remarks>
/// The vocabulary, merges, added tokens, NFC normalizer and the pre-tokenizer regex all come from the file, so the ids
/// match Hugging Face's tokenizers for the same file. Decoding does not go through Microsoft.ML.Tokenizers: every id
/// maps to its raw UTF-8 bytes (the GPT-2 byte-to-unicode table reversed), which is what streaming needs too.
/// </remarks>
public sealed class QwenTokenizer
{
    /// <summary>Qwen2.5's default system message, inserted when a conversation does not start with one.</summary>
    internal const string DefaultSystemPrompt = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _idByToken;
    // The bytes of id i are _tokenBytes[_byteStart[i].._byteStart[i + 1]]; ids missing from the file have none.
    private readonly byte[] _tokenBytes;
    private readonly int[] _byteStart;

    private QwenTokenizer(BpeTokenizer bpe, Dictionary<string, int> idByToken, byte[] tokenBytes, int[] byteStart)
    {
        _bpe = bpe;
        _idByToken = idByToken;
        _tokenBytes = tokenBytes;
        _byteStart = byteStart;
        EndOfTextId = TokenToId("<|endoftext|>");
        ImEndId = TokenToId("<|im_end|>");
        ImStartId = TokenToId("<|im_start|>");
    }

    /// <summary>Reads a Hugging Face tokenizer.json.</summary>
    /// <exception cref="IO.CheckpointException">The file is missing or not a byte-level BPE tokenizer.json.</exception>
    public static QwenTokenizer FromFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        TokenizerJson json = TokenizerJson.Read(path);

        int vocabSize = 0;
        foreach (KeyValuePair<string, int> entry in json.Vocab)
            vocabSize = Math.Max(vocabSize, entry.Value + 1);
        foreach (KeyValuePair<string, int> entry in json.AddedTokens)
            vocabSize = Math.Max(vocabSize, entry.Value + 1);

        var idByToken = new Dictionary<string, int>(json.Vocab.Count + json.AddedTokens.Count, StringComparer.Ordinal);
        var tokenById = new string?[vocabSize];
        var isAdded = new bool[vocabSize];
        foreach (KeyValuePair<string, int> entry in json.Vocab)
        {
            if (tokenById[entry.Value] is not null)
                throw new CheckpointException(path, $"model.vocab gives id {entry.Value} to both '{tokenById[entry.Value]}' and '{entry.Key}'");
            tokenById[entry.Value] = entry.Key;
            idByToken[entry.Key] = entry.Value;
        }
        foreach (KeyValuePair<string, int> entry in json.AddedTokens)
        {
            if (tokenById[entry.Value] is { } existing && existing != entry.Key)
                throw new CheckpointException(path, $"added token '{entry.Key}' reuses id {entry.Value} of '{existing}'");
            tokenById[entry.Value] = entry.Key;
            isAdded[entry.Value] = true;
            idByToken[entry.Key] = entry.Value;
        }

        // Base tokens are spelled in the byte-to-unicode alphabet; added tokens are plain text.
        var byteStart = new int[vocabSize + 1];
        var bytes = new List<byte>(vocabSize * 8);
        for (int id = 0; id < vocabSize; id++)
        {
            byteStart[id] = bytes.Count;
            string? token = tokenById[id];
            if (token is null)
                continue;
            if (isAdded[id])
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
                continue;
            }
            foreach (char c in token)
            {
                int b = ByteLevelAlphabet.ToByte(c);
                if (b < 0)
                    throw new CheckpointException(path, $"model.vocab token {id} ('{token}') has character U+{(int)c:X4}, which is not in the byte-level alphabet");
                bytes.Add((byte)b);
            }
        }
        byteStart[vocabSize] = bytes.Count;

        Regex regex;
        try
        {
            // Interpreted: RegexOptions.Compiled needs over a second to build the rewritten pattern (NativeAOT ignores it).
            regex = new Regex(CodePointRegex.Rewrite(json.PreTokenizerPattern), RegexOptions.CultureInvariant);
        }
        catch (NotSupportedException e)
        {
            throw new CheckpointException(path, $"pre_tokenizer regex uses {e.Message}, which is not supported", e);
        }
        catch (ArgumentException e)
        {
            throw new CheckpointException(path, $"pre_tokenizer regex is not valid in .NET: {e.Message}", e);
        }

        var specialTokens = new Dictionary<string, int>(json.AddedTokens, StringComparer.Ordinal);
        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(json.Vocab)
            {
                Merges = json.Merges,
                ByteLevel = true,
                SpecialTokens = specialTokens,
                PreTokenizer = new RegexPreTokenizer(regex, specialTokens),
                Normalizer = json.NfcNormalization ? NfcNormalizer.Instance : null,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new CheckpointException(path, $"Microsoft.ML.Tokenizers rejected the BPE model: {e.Message}", e);
        }

        return new QwenTokenizer(bpe, idByToken, bytes.ToArray(), byteStart);
    }

    /// <summary>Number of ids (base vocabulary plus added tokens).</summary>
    public int VocabSize => _byteStart.Length - 1;

    /// <summary>Id of &lt;|endoftext|&gt;, if the vocabulary has it.</summary>
    public int? EndOfTextId { get; }

    /// <summary>Id of &lt;|im_end|&gt;, the end of a ChatML turn, if the vocabulary has it.</summary>
    public int? ImEndId { get; }

    internal int? ImStartId { get; }

    /// <summary>Token ids of <paramref name="text"/>. Special tokens written in the text (e.g. &lt;|im_start|&gt;) are recognized; none are added.</summary>
    /// <exception cref="ArgumentException"><paramref name="text"/> has an unpaired surrogate, so it has no UTF-8 bytes to encode.</exception>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        ThrowIfUnpairedSurrogate(text);
        IReadOnlyList<int> ids = _bpe.EncodeToIds(text);
        var result = new int[ids.Count];
        for (int i = 0; i < result.Length; i++)
            result[i] = ids[i];
        return result;
    }

    private static void ThrowIfUnpairedSurrogate(string text)
    {
        // Hugging Face refuses such strings too (they are not valid Unicode); most text has no surrogates at all.
        int i = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (i < 0)
            return;
        for (; i < text.Length; i++)
        {
            if (!char.IsSurrogate(text[i]))
                continue;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
                continue;
            }
            throw new ArgumentException($"text has an unpaired surrogate U+{(int)text[i]:X4} at index {i}", nameof(text));
        }
    }

    /// <summary>The text of <paramref name="ids"/> (special tokens included as written).</summary>
    /// <remarks>Byte sequences that are not valid UTF-8 (e.g. half of a character) become U+FFFD.</remarks>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, <see cref="VocabSize"/>).</exception>
    public string Decode(ReadOnlySpan<int> ids)
    {
        int byteCount = 0;
        foreach (int id in ids)
            byteCount += TokenBytes(id).Length;
        byte[]? rented = byteCount > 1024 ? System.Buffers.ArrayPool<byte>.Shared.Rent(byteCount) : null;
        Span<byte> buffer = rented ?? stackalloc byte[1024];
        int at = 0;
        foreach (int id in ids)
        {
            ReadOnlySpan<byte> tokenBytes = TokenBytes(id);
            tokenBytes.CopyTo(buffer[at..]);
            at += tokenBytes.Length;
        }
        string text = Encoding.UTF8.GetString(buffer[..at]);
        if (rented is not null)
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        return text;
    }

    /// <summary>The id of a token string (e.g. "&lt;|im_end|&gt;"), or null.</summary>
    /// <remarks>Base-vocabulary tokens are spelled as in tokenizer.json, i.e. in the byte-level alphabet ("Ġthe").</remarks>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return _idByToken.TryGetValue(token, out int id) ? id : null;
    }

    /// <summary>Renders a conversation with Qwen2.5's ChatML template.</summary>
    /// <param name="messages">The conversation so far.</param>
    /// <param name="addGenerationPrompt">Append "&lt;|im_start|&gt;assistant\n" so the model answers next.</param>
    /// <remarks>
    /// As Qwen2.5's template does, a conversation that does not open with a system message gets Qwen's default one,
    /// and consecutive "tool" messages are folded into one user turn of &lt;tool_response&gt; blocks.
    /// </remarks>
    /// <exception cref="ArgumentException">A message has a role other than system, user, assistant or tool.</exception>
    public string ApplyChatTemplate(IEnumerable<ChatTurn> messages, bool addGenerationPrompt = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        IReadOnlyList<ChatTurn> turns = messages as IReadOnlyList<ChatTurn> ?? messages.ToList();
        var text = new StringBuilder();
        if (turns.Count == 0 || turns[0].Role != "system")
            text.Append("<|im_start|>system\n").Append(DefaultSystemPrompt).Append("<|im_end|>\n");
        for (int i = 0; i < turns.Count; i++)
        {
            ChatTurn turn = turns[i] ?? throw new ArgumentException($"message {i} is null", nameof(messages));
            switch (turn.Role)
            {
                case "system" or "user" or "assistant":
                    text.Append("<|im_start|>").Append(turn.Role).Append('\n').Append(turn.Content).Append("<|im_end|>\n");
                    break;
                case "tool":
                    if (i == 0 || turns[i - 1].Role != "tool")
                        text.Append("<|im_start|>user");
                    text.Append("\n<tool_response>\n").Append(turn.Content).Append("\n</tool_response>");
                    if (i == turns.Count - 1 || turns[i + 1].Role != "tool")
                        text.Append("<|im_end|>\n");
                    break;
                default:
                    throw new ArgumentException($"message {i} has role '{turn.Role}'; expected system, user, assistant or tool", nameof(messages));
            }
        }
        if (addGenerationPrompt)
            text.Append("<|im_start|>assistant\n");
        return text.ToString();
    }

    /// <summary>A decoder for streaming: it holds back bytes of a character that later tokens complete.</summary>
    public TokenStreamDecoder CreateStreamDecoder() => new(this);

    /// <summary>The UTF-8 bytes that <paramref name="id"/> stands for.</summary>
    internal ReadOnlySpan<byte> TokenBytes(int id)
    {
        if ((uint)id >= (uint)VocabSize)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside [0, {VocabSize})");
        return _tokenBytes.AsSpan(_byteStart[id], _byteStart[id + 1] - _byteStart[id]);
    }
}

/// <summary>Turns a stream of token ids into text, emitting each character only once all of its bytes have arrived.</summary>
public sealed class TokenStreamDecoder
{
    private readonly QwenTokenizer _tokenizer;
    // UTF8Encoding's decoder keeps the bytes of an unfinished character between calls; invalid bytes become U+FFFD,
    // exactly as QwenTokenizer.Decode does for the whole sequence.
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars;

    internal TokenStreamDecoder(QwenTokenizer tokenizer)
    {
        _tokenizer = tokenizer;
        _chars = new char[64];
    }

    /// <summary>Adds one token; returns the text that is now complete (possibly empty).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="id"/> is not a token id.</exception>
    public string Append(int id)
    {
        ReadOnlySpan<byte> bytes = _tokenizer.TokenBytes(id);
        // At most 3 held-back bytes plus this token's bytes, each of which yields at most one char (two per 4 bytes).
        int maxChars = bytes.Length + 4;
        if (_chars.Length < maxChars)
            _chars = new char[Math.Max(maxChars, _chars.Length * 2)];
        int count = _utf8.GetChars(bytes, _chars, flush: false);
        return count == 0 ? string.Empty : new string(_chars, 0, count);
    }

    /// <summary>Returns whatever is still held back (incomplete characters become U+FFFD) and clears the buffer.</summary>
    public string Flush()
    {
        int count = _utf8.GetChars(ReadOnlySpan<byte>.Empty, _chars, flush: true);
        _utf8.Reset();
        return count == 0 ? string.Empty : new string(_chars, 0, count);
    }
}
