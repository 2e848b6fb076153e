using System.Text;

namespace Arwkv.Training.Data;

/// <summary>
/// The demo's tokenizer: one id per UTF-8 byte (0..255) plus ChatML's special tokens. Small enough that a
/// teacher trained on a few hundred kilobytes of text learns something, and trivially invertible.
/// </summary>
internal sealed class ByteTokenizer : ITrainingTokenizer
{
    public const int EndOfText = 256;
    public const int ImStart = 257;
    public const int ImEnd = 258;
    public const int VocabSize = 259;

    private static readonly (string Text, int Id)[] Specials =
        [("<|endoftext|>", EndOfText), ("<|im_start|>", ImStart), ("<|im_end|>", ImEnd)];

    public static ByteTokenizer Instance { get; } = new();

    string ITrainingTokenizer.Kind => "byte-level";
    int ITrainingTokenizer.IdCount => VocabSize;
    int ITrainingTokenizer.EndOfText => EndOfText;
    int ITrainingTokenizer.ImStart => ImStart;
    int ITrainingTokenizer.ImEnd => ImEnd;
    int[] ITrainingTokenizer.EncodeText(string text) => Encode(text);

    /// <summary>
    /// UTF-8 bytes of <paramref name="text"/>. With <paramref name="allowSpecial"/>, the literal strings
    /// "&lt;|endoftext|&gt;", "&lt;|im_start|&gt;" and "&lt;|im_end|&gt;" become their ids (used for rendered chats);
    /// otherwise they are ordinary bytes, so plain text can never inject control tokens.
    /// </summary>
    public int[] Encode(string text, bool allowSpecial = false)
    {
        var ids = new List<int>(text.Length + 8);
        int start = 0;
        while (start < text.Length)
        {
            int next = text.Length, id = -1, length = 0;
            if (allowSpecial)
            {
                foreach (var (special, specialId) in Specials)
                {
                    int at = text.IndexOf(special, start, StringComparison.Ordinal);
                    if (at >= 0 && at < next)
                    {
                        next = at;
                        id = specialId;
                        length = special.Length;
                    }
                }
            }
            foreach (byte b in Encoding.UTF8.GetBytes(text, start, next - start)) ids.Add(b);
            if (id < 0) break;
            ids.Add(id);
            start = next + length;
        }
        return ids.ToArray();
    }

    /// <summary>Decodes ids back to text; special ids become their literal strings, invalid UTF-8 becomes U+FFFD.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var text = new StringBuilder();
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if ((uint)id < 256)
            {
                bytes.Add((byte)id);
                continue;
            }
            Flush();
            text.Append(id switch
            {
                EndOfText => "<|endoftext|>",
                ImStart => "<|im_start|>",
                ImEnd => "<|im_end|>",
                _ => throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the byte vocabulary [0, {VocabSize})"),
            });
        }
        Flush();
        return text.ToString();

        void Flush()
        {
            text.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
    }
}
