using System.Text.Json.Nodes;
using Arwkv.Tokenization;

namespace Arwkv.Tests.Tokenization;

/// <summary>
/// A small byte-level BPE tokenizer.json shaped like Qwen's (same pre-tokenizer regex, NFC, ByteLevel), whose ids can
/// be worked out by hand: id b is the token of byte b, then a few merges and added tokens.
/// </summary>
internal static class SyntheticTokenizerJson
{
    public const string QwenRegex =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Merges in priority order; "e l" comes last, so "hello" only comes out right if ranks are honoured.</summary>
    public static readonly (string Left, string Right)[] Merges =
    [
        ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("\u0120", "w"), ("e", "l"),
    ];

    public const int He = 256, Ll = 257, Hell = 258, Hello = 259, SpaceW = 260, El = 261;
    public const int EndOfText = 262, ImStart = 263, ImEnd = 264;

    public static JsonObject Build(bool mergesAsPairs = false)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++)
            vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = b;
        int next = 256;
        var merges = new JsonArray();
        foreach ((string left, string right) in Merges)
        {
            vocab[left + right] = next++;
            merges.Add(mergesAsPairs ? new JsonArray(left, right) : JsonValue.Create($"{left} {right}"));
        }
        var added = new JsonArray();
        foreach (string content in (string[])["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        {
            added.Add(new JsonObject
            {
                ["id"] = next++, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            });
        }
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = QwenRegex }, ["behavior"] = "Isolated", ["invert"] = false,
                    },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
            },
            ["post_processor"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "", ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false, ["vocab"] = vocab, ["merges"] = merges,
            },
        };
    }

    /// <summary>Writes <paramref name="json"/> to a fresh file in the test's temporary folder.</summary>
    public static string Write(string directory, JsonNode json, string name = "tokenizer.json") => Write(directory, json.ToJsonString(), name);

    public static string Write(string directory, string text, string name = "tokenizer.json")
    {
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, name);
        File.WriteAllText(path, text);
        return path;
    }
}
