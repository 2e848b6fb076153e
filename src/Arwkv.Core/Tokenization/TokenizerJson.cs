using System.Text.Json;
using Arwkv.IO;

namespace Arwkv.Tokenization;

/// <summary>
/// The parts of a Hugging Face tokenizer.json that a Qwen-style byte-level BPE tokenizer needs, read with
/// System.Text.Json's DOM (no reflection, so it works under NativeAOT) and checked for settings that would change the
/// ids if ignored.
/// </summary>
internal sealed class TokenizerJson
{
    /// <summary>model.vocab: base token (in the byte-level alphabet) to id.</summary>
    public required List<KeyValuePair<string, int>> Vocab { get; init; }

    /// <summary>model.merges as "left right" strings, highest priority first.</summary>
    public required List<string> Merges { get; init; }

    /// <summary>added_tokens: text to id; these are matched verbatim in the input before anything else.</summary>
    public required Dictionary<string, int> AddedTokens { get; init; }

    /// <summary>The Split pre-tokenizer's regex (Qwen's, for Qwen checkpoints).</summary>
    public required string PreTokenizerPattern { get; init; }

    /// <summary>Whether the normalizer is NFC (otherwise there is none).</summary>
    public required bool NfcNormalization { get; init; }

    public static TokenizerJson Read(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new CheckpointException(path, "tokenizer file not found", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException(path, $"cannot read the tokenizer file: {e.Message}", e);
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new CheckpointException(path, $"not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            try
            {
                return Parse(path, document.RootElement);
            }
            catch (InvalidOperationException e)
            {
                // GetString/GetInt32 on an element of the wrong kind.
                throw new CheckpointException(path, $"unexpected JSON structure: {e.Message}", e);
            }
            catch (FormatException e)
            {
                throw new CheckpointException(path, $"unexpected JSON value: {e.Message}", e);
            }
        }
    }

    private static TokenizerJson Parse(string path, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(path, "not a tokenizer.json: the top level is not a JSON object");
        if (!root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(path, "not a tokenizer.json: no \"model\" object");

        string? type = StringOrNull(model, "type");
        if (type != "BPE")
            throw new CheckpointException(path, $"model.type is '{type ?? "(missing)"}', but only byte-level BPE is supported");
        if (StringOrNull(model, "continuing_subword_prefix") is { Length: > 0 } prefix)
            throw new CheckpointException(path, $"model.continuing_subword_prefix '{prefix}' is not supported (not a byte-level BPE)");
        if (StringOrNull(model, "end_of_word_suffix") is { Length: > 0 } suffix)
            throw new CheckpointException(path, $"model.end_of_word_suffix '{suffix}' is not supported (not a byte-level BPE)");
        if (model.TryGetProperty("byte_fallback", out JsonElement byteFallback) && byteFallback.ValueKind == JsonValueKind.True)
            throw new CheckpointException(path, "model.byte_fallback is true: a SentencePiece-style BPE, not a byte-level one");

        string pattern = ReadPreTokenizer(path, root);
        bool nfc = ReadNormalizer(path, root);

        if (!model.TryGetProperty("vocab", out JsonElement vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(path, "model.vocab is missing or not an object");
        var vocab = new List<KeyValuePair<string, int>>(200_000);
        foreach (JsonProperty entry in vocabElement.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw new CheckpointException(path, $"model.vocab['{entry.Name}'] is not a non-negative integer id");
            vocab.Add(new(entry.Name, id));
        }
        if (vocab.Count == 0)
            throw new CheckpointException(path, "model.vocab is empty");

        if (!model.TryGetProperty("merges", out JsonElement mergesElement) || mergesElement.ValueKind != JsonValueKind.Array)
            throw new CheckpointException(path, "model.merges is missing or not an array");
        var merges = new List<string>(mergesElement.GetArrayLength());
        int index = 0;
        foreach (JsonElement merge in mergesElement.EnumerateArray())
        {
            // Older files write "left right", newer ones ["left", "right"]; byte-level tokens never contain a space.
            string? left, right;
            if (merge.ValueKind == JsonValueKind.String)
            {
                string pair = merge.GetString()!;
                int space = pair.IndexOf(' ');
                left = space > 0 ? pair[..space] : null;
                right = space > 0 ? pair[(space + 1)..] : null;
            }
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                     && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String)
            {
                left = merge[0].GetString();
                right = merge[1].GetString();
            }
            else
            {
                left = right = null;
            }
            if (string.IsNullOrEmpty(left) || string.IsNullOrEmpty(right) || left.Contains(' ') || right.Contains(' '))
                throw new CheckpointException(path, $"model.merges[{index}] is not a pair of two tokens: {merge.GetRawText()}");
            merges.Add(string.Concat(left, " ", right));
            index++;
        }

        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out JsonElement addedElement) && addedElement.ValueKind != JsonValueKind.Null)
        {
            if (addedElement.ValueKind != JsonValueKind.Array)
                throw new CheckpointException(path, "added_tokens is not an array");
            index = 0;
            foreach (JsonElement token in addedElement.EnumerateArray())
            {
                if (token.ValueKind != JsonValueKind.Object
                    || !token.TryGetProperty("id", out JsonElement idElement) || !idElement.TryGetInt32(out int id) || id < 0
                    || StringOrNull(token, "content") is not { Length: > 0 } content)
                    throw new CheckpointException(path, $"added_tokens[{index}] has no non-negative id and non-empty content");
                foreach (string flag in (ReadOnlySpan<string>)["lstrip", "rstrip", "single_word"])
                {
                    // These change which text an added token swallows; Qwen's are all false and none is implemented.
                    if (token.TryGetProperty(flag, out JsonElement value) && value.ValueKind == JsonValueKind.True)
                        throw new CheckpointException(path, $"added token '{content}' has {flag}: true, which is not supported");
                }
                if (!added.TryAdd(content, id))
                    throw new CheckpointException(path, $"added token '{content}' is listed twice");
                index++;
            }
        }

        return new TokenizerJson
        {
            Vocab = vocab,
            Merges = merges,
            AddedTokens = added,
            PreTokenizerPattern = pattern,
            NfcNormalization = nfc,
        };
    }

    /// <summary>
    /// Expects Qwen's layout: a Split on a regex (behavior Isolated), then ByteLevel without its own GPT-2 regex and
    /// without a prefix space; returns the regex.
    /// </summary>
    private static string ReadPreTokenizer(string path, JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out JsonElement pre) || pre.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(path, "pre_tokenizer is missing: not a byte-level BPE tokenizer.json");
        var steps = new List<JsonElement>();
        if (StringOrNull(pre, "type") == "Sequence" && pre.TryGetProperty("pretokenizers", out JsonElement list) && list.ValueKind == JsonValueKind.Array)
            steps.AddRange(list.EnumerateArray());
        else
            steps.Add(pre);

        string? pattern = null;
        bool byteLevel = false;
        foreach (JsonElement step in steps)
        {
            string? type = step.ValueKind == JsonValueKind.Object ? StringOrNull(step, "type") : null;
            switch (type)
            {
                case "Split" when pattern is null && !byteLevel:
                    if (!step.TryGetProperty("pattern", out JsonElement patternElement) || patternElement.ValueKind != JsonValueKind.Object
                        || StringOrNull(patternElement, "Regex") is not { Length: > 0 } regex)
                        throw new CheckpointException(path, "pre_tokenizer Split has no pattern.Regex");
                    if (StringOrNull(step, "behavior") is { } behavior && behavior != "Isolated")
                        throw new CheckpointException(path, $"pre_tokenizer Split behavior '{behavior}' is not supported (expected Isolated)");
                    if (step.TryGetProperty("invert", out JsonElement invert) && invert.ValueKind == JsonValueKind.True)
                        throw new CheckpointException(path, "pre_tokenizer Split with invert: true is not supported");
                    pattern = regex;
                    break;
                case "ByteLevel" when !byteLevel:
                    if (step.TryGetProperty("add_prefix_space", out JsonElement prefix) && prefix.ValueKind == JsonValueKind.True)
                        throw new CheckpointException(path, "pre_tokenizer ByteLevel with add_prefix_space: true is not supported");
                    if (step.TryGetProperty("use_regex", out JsonElement useRegex) && useRegex.ValueKind == JsonValueKind.True)
                        throw new CheckpointException(path, "pre_tokenizer ByteLevel with use_regex: true (GPT-2's split) is not supported; expected a Split regex as in Qwen");
                    byteLevel = true;
                    break;
                default:
                    throw new CheckpointException(path, $"pre_tokenizer step '{type ?? step.GetRawText()}' is not supported (expected Qwen's Split regex then ByteLevel)");
            }
        }
        if (!byteLevel)
            throw new CheckpointException(path, "pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer.json");
        if (pattern is null)
            throw new CheckpointException(path, "pre_tokenizer has no Split regex");
        return pattern;
    }

    private static bool ReadNormalizer(string path, JsonElement root)
    {
        if (!root.TryGetProperty("normalizer", out JsonElement normalizer) || normalizer.ValueKind == JsonValueKind.Null)
            return false;
        string? type = normalizer.ValueKind == JsonValueKind.Object ? StringOrNull(normalizer, "type") : null;
        return type == "NFC"
            ? true
            : throw new CheckpointException(path, $"normalizer '{type ?? normalizer.GetRawText()}' is not supported (expected NFC or none)");
    }

    private static string? StringOrNull(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
}
