using System.Text;
using System.Text.Json;
using Arwkv.IO;

namespace Arwkv.Training.Data;

/// <summary>
/// One training document: plain text, or a chat whose turns are rendered with ChatML. <see cref="Text"/> is the
/// rendered form either way; only the template's markers become special tokens, never text inside a turn.
/// </summary>
internal sealed record TextDocument(string Text, IReadOnlyList<(string Role, string Content)>? Messages = null);

/// <summary>
/// Reads training text. A <c>.jsonl</c> file holds one JSON object per line, either <c>{"text": "..."}</c> or
/// <c>{"messages": [{"role": "...", "content": "..."}, ...]}</c> (rendered with the ChatML template); blank
/// lines are skipped. Any other file is one plain UTF-8 document.
/// </summary>
internal static class Corpus
{
    /// <summary>ChatML, as Qwen2.5's chat template writes each turn.</summary>
    public static string RenderChat(IEnumerable<(string Role, string Content)> messages)
    {
        var text = new StringBuilder();
        foreach (var (role, content) in messages)
            text.Append("<|im_start|>").Append(role).Append('\n').Append(content).Append("<|im_end|>\n");
        return text.ToString();
    }

    /// <summary>Reads every file; throws a <see cref="CheckpointException"/> when all of them hold no text at all.</summary>
    public static List<TextDocument> Read(IEnumerable<string> paths)
    {
        var documents = new List<TextDocument>();
        var names = new List<string>();
        foreach (string path in paths)
        {
            names.Add(path);
            documents.AddRange(Read(path, requireText: false));
        }
        if (names.Count == 0) throw new ArgumentException("no corpus files given", nameof(paths));
        if (documents.Count == 0)
            throw new CheckpointException(string.Join(", ", names), "empty corpus: no training text in any file");
        return documents;
    }

    /// <summary>Reads one file; with <paramref name="requireText"/>, a file without any text is an error.</summary>
    public static List<TextDocument> Read(string path, bool requireText = true)
    {
        if (!File.Exists(path)) throw new CheckpointException(path, "corpus file not found");
        List<TextDocument> documents = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) ? ReadJsonLines(path) : ReadPlain(path);
        if (requireText && documents.Count == 0) throw new CheckpointException(path, "empty corpus: the file holds no training text");
        return documents;
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static List<TextDocument> ReadPlain(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path, StrictUtf8);
        }
        catch (DecoderFallbackException e)
        {
            throw new CheckpointException(path, "not valid UTF-8 text", e);
        }
        return string.IsNullOrWhiteSpace(text) ? [] : [new TextDocument(text)];
    }

    private static List<TextDocument> ReadJsonLines(string path)
    {
        var documents = new List<TextDocument>();
        int lineNumber = 0;
        using var reader = new StreamReader(path, StrictUtf8);
        while (true)
        {
            string? line;
            try
            {
                line = reader.ReadLine();
            }
            catch (DecoderFallbackException e)
            {
                throw new CheckpointException(path, $"line {lineNumber + 1}: not valid UTF-8", e);
            }
            if (line is null) break;
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            TextDocument? document = ParseLine(path, lineNumber, line);
            if (document is not null) documents.Add(document);
        }
        return documents;
    }

    private static TextDocument? ParseLine(string path, int lineNumber, string line)
    {
        CheckpointException Bad(string problem, Exception? inner = null) => new(path, $"line {lineNumber}: {problem}", inner);
        JsonDocument json;
        try
        {
            json = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw Bad("not valid JSON: " + e.Message, e);
        }
        using (json)
        {
            JsonElement root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad("expected a JSON object with a \"text\" or \"messages\" field");
            if (root.TryGetProperty("text", out JsonElement text))
            {
                if (text.ValueKind != JsonValueKind.String) throw Bad("\"text\" must be a string");
                string value = text.GetString()!;
                return value.Length == 0 ? null : new TextDocument(value);
            }
            if (root.TryGetProperty("messages", out JsonElement messages))
            {
                if (messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
                    throw Bad("\"messages\" must be a non-empty array");
                var turns = new List<(string, string)>();
                int index = 0;
                foreach (JsonElement m in messages.EnumerateArray())
                {
                    if (m.ValueKind != JsonValueKind.Object
                        || !m.TryGetProperty("role", out JsonElement role) || role.ValueKind != JsonValueKind.String
                        || !m.TryGetProperty("content", out JsonElement content) || content.ValueKind != JsonValueKind.String)
                        throw Bad($"messages[{index}] needs string \"role\" and \"content\" fields");
                    string roleText = role.GetString()!;
                    if (roleText.Length == 0 || roleText.Contains('\n') || roleText.Contains("<|"))
                        throw Bad($"messages[{index}] has an invalid role '{roleText}'");
                    turns.Add((roleText, content.GetString()!));
                    index++;
                }
                return new TextDocument(RenderChat(turns), turns);
            }
            throw Bad("expected a \"text\" or \"messages\" field");
        }
    }

    /// <summary>
    /// Tokenizes documents: plain text as ordinary text, chats as &lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n per
    /// turn, where only the two markers are control ids (a marker written inside a turn stays text).
    /// </summary>
    public static List<int[]> Tokenize(IEnumerable<TextDocument> documents, ITrainingTokenizer tokenizer)
    {
        var result = new List<int[]>();
        int[] newline = tokenizer.EncodeText("\n");
        foreach (TextDocument d in documents)
        {
            if (d.Messages is null)
            {
                result.Add(tokenizer.EncodeText(d.Text));
                continue;
            }
            var ids = new List<int>();
            foreach (var (role, content) in d.Messages)
            {
                ids.Add(tokenizer.ImStart);
                ids.AddRange(tokenizer.EncodeText(role + "\n" + content));
                ids.Add(tokenizer.ImEnd);
                ids.AddRange(newline);
            }
            result.Add(ids.ToArray());
        }
        return result;
    }
}
