using Arwkv.IO;
using Arwkv.Tokenization;

namespace Arwkv.Training.Data;

/// <summary>
/// What turning training text into ids needs from a tokenizer: ordinary text that can never produce a control id,
/// and the ids of the ChatML markers and the document separator. <see cref="ByteTokenizer"/> (the demo's byte-level
/// models) and <see cref="QwenTrainingTokenizer"/> (a real checkpoint's tokenizer.json) implement it.
/// </summary>
internal interface ITrainingTokenizer
{
    /// <summary>"byte-level" or "bpe": two tokenizers of different kinds never give the same ids.</summary>
    string Kind { get; }

    /// <summary>One more than the largest id the tokenizer can produce (at most the model's vocab_size).</summary>
    int IdCount { get; }

    /// <summary>&lt;|endoftext|&gt;: separates packed documents.</summary>
    int EndOfText { get; }

    /// <summary>&lt;|im_start|&gt;.</summary>
    int ImStart { get; }

    /// <summary>&lt;|im_end|&gt;.</summary>
    int ImEnd { get; }

    /// <summary>Ids of <paramref name="text"/> as ordinary text: a marker string written in it is text, not a control id.</summary>
    int[] EncodeText(string text);
}

/// <summary>
/// A checkpoint's byte-level BPE tokenizer.json (Qwen's) for training data. <see cref="QwenTokenizer.Encode"/> turns any
/// added-token string it meets into that token's id; training text must not inject control tokens (a chat turn quoting
/// "&lt;|im_end|&gt;" would end the turn), so <see cref="EncodeText"/> cuts the text right after the leading punctuation
/// of every added-token string it holds ("&lt;|" of "&lt;|im_end|&gt;") and encodes the pieces separately. Qwen's
/// pre-tokenizer splits there anyway ("&lt;|" and "im" fall in different pre-tokens), so the ids are those of Hugging
/// Face's tokenizer with <c>split_special_tokens=True</c>.
/// </summary>
internal sealed class QwenTrainingTokenizer : ITrainingTokenizer
{
    private readonly QwenTokenizer _tokenizer;
    private readonly string[] _addedTokens;

    private QwenTrainingTokenizer(QwenTokenizer tokenizer, string[] addedTokens, int endOfText, int imStart, int imEnd)
    {
        _tokenizer = tokenizer;
        _addedTokens = addedTokens;
        EndOfText = endOfText;
        ImStart = imStart;
        ImEnd = imEnd;
    }

    /// <summary>Reads a tokenizer.json; it must define &lt;|endoftext|&gt;, &lt;|im_start|&gt; and &lt;|im_end|&gt;.</summary>
    /// <exception cref="CheckpointException">The file is missing, not a byte-level BPE tokenizer, or lacks a marker.</exception>
    public static QwenTrainingTokenizer FromFile(string path) => FromFile(path, TokenizerJson.Read(path));

    /// <summary>As <see cref="FromFile(string)"/>, with the file's <paramref name="json"/> already read.</summary>
    public static QwenTrainingTokenizer FromFile(string path, TokenizerJson json)
    {
        QwenTokenizer tokenizer = QwenTokenizer.FromFile(path);
        int Special(string token) => tokenizer.TokenToId(token)
            ?? throw new CheckpointException(path, $"has no '{token}' token, which training data needs (documents end with <|endoftext|>, chat turns are <|im_start|>...<|im_end|>)");
        return new QwenTrainingTokenizer(tokenizer, json.AddedTokens.Keys.Where(t => t.Length > 0).ToArray(),
            Special("<|endoftext|>"), Special("<|im_start|>"), Special("<|im_end|>"));
    }

    public string Kind => "bpe";

    public int IdCount => _tokenizer.VocabSize;

    public int EndOfText { get; }

    public int ImStart { get; }

    public int ImEnd { get; }

    public int[] EncodeText(string text)
    {
        var ids = new List<int>(text.Length / 2 + 8);
        int start = 0;
        while (start < text.Length)
        {
            int at = -1, cut = 0;
            foreach (string token in _addedTokens)
            {
                int found = text.IndexOf(token, start, StringComparison.Ordinal);
                if (found >= 0 && (at < 0 || found < at))
                {
                    at = found;
                    cut = LeadingPunctuation(token);
                }
            }
            int end = at < 0 ? text.Length : at + cut;
            ids.AddRange(_tokenizer.Encode(text[start..end]));
            start = end;
        }
        return ids.ToArray();
    }

    // Where to cut an added-token string so that neither piece is the token: after its leading run of punctuation
    // (a pre-token boundary for "<|...|>"), and after the first character when it starts with a letter or digit.
    private static int LeadingPunctuation(string token)
    {
        int i = 0;
        while (i < token.Length - 1 && !char.IsLetterOrDigit(token[i]) && !char.IsWhiteSpace(token[i])) i++;
        return Math.Max(1, i);
    }
}

/// <summary>Chooses the training tokenizer of a checkpoint directory.</summary>
internal static class TrainingTokenizers
{
    /// <summary>
    /// The tokenizer of <paramref name="directory"/>: a tokenizer.json written by <see cref="ByteTokenizerJson"/> is the
    /// <see cref="ByteTokenizer"/>, any other tokenizer.json a <see cref="QwenTrainingTokenizer"/>. Without a
    /// tokenizer.json only a byte-level model (vocab_size 259, as checkpoints saved before tokenizer.json was written
    /// next to them) falls back to the byte tokenizer; anything else is an error, since guessing the ids would train on
    /// garbage.
    /// </summary>
    /// <exception cref="CheckpointException">tokenizer.json is missing or unreadable, or its ids do not fit <paramref name="vocabSize"/>.</exception>
    public static ITrainingTokenizer FromDirectory(string directory, int vocabSize)
    {
        string path = Path.Combine(directory, "tokenizer.json");
        ITrainingTokenizer tokenizer;
        if (!File.Exists(path))
        {
            if (vocabSize != ByteTokenizer.VocabSize)
                throw new CheckpointException(path, $"tokenizer.json not found; it is needed to tokenize the data for a model with vocab_size {vocabSize}");
            tokenizer = ByteTokenizer.Instance;
        }
        else
        {
            TokenizerJson json = TokenizerJson.Read(path);
            tokenizer = ByteTokenizerJson.IsByteTokenizer(json) ? ByteTokenizer.Instance : QwenTrainingTokenizer.FromFile(path, json);
        }
        // A tokenizer may have fewer ids than the model (Qwen2.5 pads vocab_size to 151936 for 151665 ids), never more
        // markers than the model has rows; every data id is checked again after tokenizing.
        foreach (int id in new[] { tokenizer.EndOfText, tokenizer.ImStart, tokenizer.ImEnd })
            if (id >= vocabSize)
                throw new CheckpointException(path, $"special token id {id} is not below the model's vocab_size {vocabSize} (config.json)");
        return tokenizer;
    }

    /// <summary>
    /// Throws unless <paramref name="a"/> and <paramref name="b"/> give the same ids: both byte-level, or both with
    /// the same vocabulary, merges and added tokens in their tokenizer.json files.
    /// </summary>
    public static void RequireSame(string directoryA, ITrainingTokenizer a, string directoryB, ITrainingTokenizer b)
    {
        string pathA = Path.Combine(directoryA, "tokenizer.json"), pathB = Path.Combine(directoryB, "tokenizer.json");
        if (a.Kind != b.Kind || a.IdCount != b.IdCount)
            throw new CheckpointException(pathB, $"is a {b.Kind} tokenizer with {b.IdCount} ids, but {pathA} is a {a.Kind} tokenizer with {a.IdCount} ids; the model and the teacher must share one tokenizer");
        if (a.Kind != "bpe") return;
        TokenizerJson ja = TokenizerJson.Read(pathA), jb = TokenizerJson.Read(pathB);
        bool same = ja.Vocab.Count == jb.Vocab.Count && ja.Merges.SequenceEqual(jb.Merges) && ja.AddedTokens.Count == jb.AddedTokens.Count
            && ja.AddedTokens.All(kv => jb.AddedTokens.TryGetValue(kv.Key, out int id) && id == kv.Value)
            && ja.PreTokenizerPattern == jb.PreTokenizerPattern && ja.NfcNormalization == jb.NfcNormalization;
        if (same)
        {
            var vocabB = new Dictionary<string, int>(jb.Vocab, StringComparer.Ordinal);
            same = ja.Vocab.All(kv => vocabB.TryGetValue(kv.Key, out int id) && id == kv.Value);
        }
        if (!same)
            throw new CheckpointException(pathB, $"differs from {pathA} (vocabulary, merges, added tokens or pre-tokenizer); the model and the teacher must share one tokenizer");
    }

    /// <summary>Throws unless every id is below <paramref name="vocabSize"/>.</summary>
    public static void RequireIdsBelow(IEnumerable<int[]> documents, int vocabSize, string configPath, string dataPath)
    {
        foreach (int[] document in documents)
            foreach (int id in document)
                if ((uint)id >= (uint)vocabSize)
                    throw new CheckpointException(configPath,
                        $"vocab_size is {vocabSize}, but the tokenizer turned {dataPath} into id {id}; the tokenizer.json does not belong to this model");
    }
}
