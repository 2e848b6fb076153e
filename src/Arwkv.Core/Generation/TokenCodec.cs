using Arwkv.Tokenization;

namespace Arwkv.Generation;

/// <summary>What generation needs from a tokenizer; lets tests drive <see cref="TextGenerator"/> without a tokenizer.json.</summary>
internal interface ITokenCodec
{
    int? EndOfTextId { get; }
    int? ImEndId { get; }
    int[] Encode(string text);
    string ApplyChatTemplate(IEnumerable<ChatTurn> messages, bool addGenerationPrompt);
    ITokenTextStream CreateStream();
}

/// <summary>Incremental detokenization (see <see cref="TokenStreamDecoder"/>).</summary>
internal interface ITokenTextStream
{
    string Append(int id);
    string Flush();
}

internal sealed class QwenTokenCodec(QwenTokenizer tokenizer) : ITokenCodec
{
    public QwenTokenizer Tokenizer { get; } = tokenizer;
    public int? EndOfTextId => Tokenizer.EndOfTextId;
    public int? ImEndId => Tokenizer.ImEndId;
    public int[] Encode(string text) => Tokenizer.Encode(text);
    public string ApplyChatTemplate(IEnumerable<ChatTurn> messages, bool addGenerationPrompt) => Tokenizer.ApplyChatTemplate(messages, addGenerationPrompt);
    public ITokenTextStream CreateStream() => new Stream(Tokenizer.CreateStreamDecoder());

    private sealed class Stream(TokenStreamDecoder decoder) : ITokenTextStream
    {
        public string Append(int id) => decoder.Append(id);
        public string Flush() => decoder.Flush();
    }
}
