using System.Text.Json;
using Arwkv.IO;
using Arwkv.Tokenization;

namespace Arwkv.Training.Data;

/// <summary>
/// A Hugging Face tokenizer.json equivalent to <see cref="ByteTokenizer"/>: byte-level BPE with Qwen's pre-tokenizer,
/// one vocabulary entry per byte (id = byte value), no merges, and the three ChatML specials at 256..258. Saved next
/// to the demo checkpoints so `arwkv generate` and <see cref="QwenTokenizer"/> read them like any Qwen model.
/// </summary>
internal static class ByteTokenizerJson
{
    private const string QwenRegex =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public static void Write(string directory)
    {
        Directory.CreateDirectory(directory);
        AtomicFile.Write(Path.Combine(directory, "tokenizer.json"), stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteString("version", "1.0");
            json.WriteNull("truncation");
            json.WriteNull("padding");
            json.WriteStartArray("added_tokens");
            foreach (var (content, id) in new[] { ("<|endoftext|>", ByteTokenizer.EndOfText), ("<|im_start|>", ByteTokenizer.ImStart), ("<|im_end|>", ByteTokenizer.ImEnd) })
            {
                json.WriteStartObject();
                json.WriteNumber("id", id);
                json.WriteString("content", content);
                json.WriteBoolean("single_word", false);
                json.WriteBoolean("lstrip", false);
                json.WriteBoolean("rstrip", false);
                json.WriteBoolean("normalized", false);
                json.WriteBoolean("special", true);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteStartObject("normalizer");
            json.WriteString("type", "NFC");
            json.WriteEndObject();
            json.WriteStartObject("pre_tokenizer");
            json.WriteString("type", "Sequence");
            json.WriteStartArray("pretokenizers");
            json.WriteStartObject();
            json.WriteString("type", "Split");
            json.WriteStartObject("pattern");
            json.WriteString("Regex", QwenRegex);
            json.WriteEndObject();
            json.WriteString("behavior", "Isolated");
            json.WriteBoolean("invert", false);
            json.WriteEndObject();
            WriteByteLevel(json, null);
            json.WriteEndArray();
            json.WriteEndObject();
            WriteByteLevel(json, "post_processor");
            WriteByteLevel(json, "decoder");
            json.WriteStartObject("model");
            json.WriteString("type", "BPE");
            json.WriteNull("dropout");
            json.WriteNull("unk_token");
            json.WriteString("continuing_subword_prefix", "");
            json.WriteString("end_of_word_suffix", "");
            json.WriteBoolean("fuse_unk", false);
            json.WriteBoolean("byte_fallback", false);
            json.WriteBoolean("ignore_merges", false);
            json.WriteStartObject("vocab");
            for (int b = 0; b < 256; b++) json.WriteNumber(ByteLevelAlphabet.ToChar((byte)b).ToString(), b);
            json.WriteEndObject();
            json.WriteStartArray("merges");
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndObject();
        });
    }

    /// <summary>
    /// Whether <paramref name="json"/> is the tokenizer <see cref="Write"/> writes: exactly the 256 byte tokens at their
    /// byte values, no merges, and the three ChatML specials at 256..258 as their only added tokens. Such a file gives
    /// the ids of <see cref="ByteTokenizer"/>.
    /// </summary>
    public static bool IsByteTokenizer(TokenizerJson json)
    {
        if (json.Vocab.Count != 256 || json.Merges.Count != 0 || json.AddedTokens.Count != 3) return false;
        foreach (var (token, id) in json.Vocab)
            if (token.Length != 1 || id is < 0 or > 255 || ByteLevelAlphabet.ToChar((byte)id) != token[0]) return false;
        return json.AddedTokens.TryGetValue("<|endoftext|>", out int eot) && eot == ByteTokenizer.EndOfText
            && json.AddedTokens.TryGetValue("<|im_start|>", out int start) && start == ByteTokenizer.ImStart
            && json.AddedTokens.TryGetValue("<|im_end|>", out int end) && end == ByteTokenizer.ImEnd;
    }

    private static void WriteByteLevel(Utf8JsonWriter json, string? name)
    {
        if (name is null) json.WriteStartObject(); else json.WriteStartObject(name);
        json.WriteString("type", "ByteLevel");
        json.WriteBoolean("add_prefix_space", false);
        json.WriteBoolean("trim_offsets", false);
        json.WriteBoolean("use_regex", false);
        json.WriteEndObject();
    }
}
