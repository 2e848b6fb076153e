using System.Text.Json;
using Arwkv.IO;

namespace Arwkv;

/// <summary>
/// Writes a Qwen2ForCausalLM checkpoint in the Hugging Face layout (config.json + model.safetensors), e.g. the demo
/// teacher after training, so that <see cref="Qwen2Model"/> and transformers load it.
/// </summary>
internal static class Qwen2Checkpoint
{
    /// <summary>Every tensor name and shape a checkpoint of <paramref name="config"/> holds, in file order.</summary>
    public static List<(string Name, long[] Shape)> TensorShapes(Qwen2Config config)
    {
        long c = config.HiddenSize, kv = config.KeyValueSize, f = config.IntermediateSize, v = config.VocabSize;
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", [v, c]) };
        for (int l = 0; l < config.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            list.Add((p + "input_layernorm.weight", [c]));
            list.Add((p + "self_attn.q_proj.weight", [c, c]));
            list.Add((p + "self_attn.q_proj.bias", [c]));
            list.Add((p + "self_attn.k_proj.weight", [kv, c]));
            list.Add((p + "self_attn.k_proj.bias", [kv]));
            list.Add((p + "self_attn.v_proj.weight", [kv, c]));
            list.Add((p + "self_attn.v_proj.bias", [kv]));
            list.Add((p + "self_attn.o_proj.weight", [c, c]));
            list.Add((p + "post_attention_layernorm.weight", [c]));
            list.Add((p + "mlp.gate_proj.weight", [f, c]));
            list.Add((p + "mlp.up_proj.weight", [f, c]));
            list.Add((p + "mlp.down_proj.weight", [c, f]));
        }
        list.Add(("model.norm.weight", [c]));
        if (!config.TieWordEmbeddings) list.Add(("lm_head.weight", [v, c]));
        return list;
    }

    /// <summary>
    /// Writes config.json and model.safetensors into <paramref name="directory"/>, each atomically.
    /// <paramref name="tensors"/> must hold exactly the tensors <see cref="TensorShapes"/> lists, with matching sizes.
    /// </summary>
    public static void Write(string directory, Qwen2Config config, IReadOnlyDictionary<string, float[]> tensors, DType type = DType.F32)
    {
        config.Validate(Path.Combine(directory, "config.json"));
        var shapes = TensorShapes(config);
        var toWrite = new List<TensorToWrite>(shapes.Count);
        foreach (var (name, shape) in shapes)
        {
            if (!tensors.TryGetValue(name, out float[]? data)) throw new ArgumentException($"missing tensor '{name}'", nameof(tensors));
            long count = shape.Aggregate(1L, (a, b) => a * b);
            if (data.Length != count) throw new ArgumentException($"tensor '{name}' has {data.Length} values, [{string.Join(", ", shape)}] needs {count}", nameof(tensors));
            toWrite.Add(new TensorToWrite(name, type, shape, data));
        }
        foreach (string name in tensors.Keys)
            if (!shapes.Any(s => s.Name == name)) throw new ArgumentException($"unexpected tensor '{name}' for this configuration", nameof(tensors));

        Directory.CreateDirectory(directory);
        SafeTensorsWriter.Write(Path.Combine(directory, "model.safetensors"), toWrite, new Dictionary<string, string> { ["format"] = "pt" });
        WriteConfig(directory, config, type);
    }

    /// <summary>Writes config.json (Hugging Face's Qwen2 keys) into <paramref name="directory"/>, atomically.</summary>
    public static void WriteConfig(string directory, Qwen2Config config, DType type)
    {
        Directory.CreateDirectory(directory);
        AtomicFile.Write(Path.Combine(directory, "config.json"), stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            json.WriteStringValue("Qwen2ForCausalLM");
            json.WriteEndArray();
            json.WriteString("model_type", Qwen2Config.ModelType);
            json.WriteNumber("hidden_size", config.HiddenSize);
            json.WriteNumber("num_hidden_layers", config.NumLayers);
            json.WriteNumber("intermediate_size", config.IntermediateSize);
            json.WriteNumber("vocab_size", config.VocabSize);
            json.WriteNumber("num_attention_heads", config.NumAttentionHeads);
            json.WriteNumber("num_key_value_heads", config.NumKeyValueHeads);
            json.WriteNumber("rope_theta", config.RopeTheta);
            json.WriteNumber("rms_norm_eps", config.RmsNormEps);
            json.WriteBoolean("tie_word_embeddings", config.TieWordEmbeddings);
            json.WriteNumber("max_position_embeddings", config.MaxPositionEmbeddings);
            json.WriteString("hidden_act", "silu");
            json.WriteBoolean("use_sliding_window", false);
            json.WriteString("torch_dtype", type switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" });
            if (config.BosTokenId is int bos) json.WriteNumber("bos_token_id", bos);
            if (config.EosTokenIds.Count == 1) json.WriteNumber("eos_token_id", config.EosTokenIds[0]);
            else if (config.EosTokenIds.Count > 1)
            {
                json.WriteStartArray("eos_token_id");
                foreach (int eos in config.EosTokenIds) json.WriteNumberValue(eos);
                json.WriteEndArray();
            }
            json.WriteEndObject();
        });
    }
}
