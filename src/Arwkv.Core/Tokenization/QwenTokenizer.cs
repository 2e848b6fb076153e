namespace Arwkv.Tokenization;

/// <summary>One message of a chat, rendered by the ChatML template.</summary>
/// <param name="Role">"system", "user" or "assistant".</param>
/// <param name="Content">The message text.</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>Qwen2.5's byte-level BPE tokenizer, read from a checkpoint's tokenizer.json.</summary>
public sealed class QwenTokenizer
{
    private QwenTokenizer() { }

    /// <summary>Reads a Hugging Face tokenizer.json.</summary>
    public static QwenTokenizer FromFile(string path) => throw new NotImplementedException("tokenizer: in progress");
}
