namespace Arwkv.Tokenization;

/// <summary>One message of a chat, rendered by the ChatML template.</summary>
/// <param name="Role">"system", "user" or "assistant".</param>
/// <param name="Content">The message text.</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>
/// Qwen2.5's byte-level BPE tokenizer, read from a checkpoint's tokenizer.json and run by Microsoft.ML.Tokenizers.
/// </summary>
public sealed class QwenTokenizer
{
    private QwenTokenizer() { }

    /// <summary>Reads a Hugging Face tokenizer.json.</summary>
    /// <exception cref="IO.CheckpointException">The file is missing or not a byte-level BPE tokenizer.json.</exception>
    public static QwenTokenizer FromFile(string path) => throw new NotImplementedException("contract: implemented on the tokenizer branch");

    /// <summary>Number of ids (base vocabulary plus added tokens).</summary>
    public int VocabSize => throw new NotImplementedException();

    /// <summary>Id of &lt;|endoftext|&gt;, if the vocabulary has it.</summary>
    public int? EndOfTextId => throw new NotImplementedException();

    /// <summary>Id of &lt;|im_end|&gt;, the end of a ChatML turn, if the vocabulary has it.</summary>
    public int? ImEndId => throw new NotImplementedException();

    /// <summary>Token ids of <paramref name="text"/>. Special tokens written in the text (e.g. &lt;|im_start|&gt;) are recognized; none are added.</summary>
    public int[] Encode(string text) => throw new NotImplementedException();

    /// <summary>The text of <paramref name="ids"/> (special tokens included as written).</summary>
    public string Decode(ReadOnlySpan<int> ids) => throw new NotImplementedException();

    /// <summary>The id of a token string (e.g. "&lt;|im_end|&gt;"), or null.</summary>
    public int? TokenToId(string token) => throw new NotImplementedException();

    /// <summary>Renders a conversation with Qwen2.5's ChatML template.</summary>
    /// <param name="messages">The conversation so far.</param>
    /// <param name="addGenerationPrompt">Append "&lt;|im_start|&gt;assistant\n" so the model answers next.</param>
    public string ApplyChatTemplate(IEnumerable<ChatTurn> messages, bool addGenerationPrompt = true) => throw new NotImplementedException();

    /// <summary>A decoder for streaming: it holds back bytes of a character that later tokens complete.</summary>
    public TokenStreamDecoder CreateStreamDecoder() => throw new NotImplementedException();
}

/// <summary>Turns a stream of token ids into text, emitting each character only once all of its bytes have arrived.</summary>
public sealed class TokenStreamDecoder
{
    internal TokenStreamDecoder() { }

    /// <summary>Adds one token; returns the text that is now complete (possibly empty).</summary>
    public string Append(int id) => throw new NotImplementedException();

    /// <summary>Returns whatever is still held back (incomplete characters become U+FFFD) and clears the buffer.</summary>
    public string Flush() => throw new NotImplementedException();
}
