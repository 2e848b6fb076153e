using System.Text.Json;
using Arwkv.IO;

namespace Arwkv;

/// <summary>LoRA ranks of the time mix. Checkpoints do not record them: they are read from tensor shapes.</summary>
/// <param name="Decay">w1/w2 rank (64 in ARWKV-7B).</param>
/// <param name="Iclr">a1/a2 rank, the in-context learning rate (64).</param>
/// <param name="ValueMix">v1/v2 rank, the value residual mix (32).</param>
/// <param name="Gate">g1/g2 rank (128); ignored without a gate.</param>
public sealed record ArwkvLoraRanks(int Decay = 64, int Iclr = 64, int ValueMix = 32, int Gate = 128);

/// <summary>
/// The Hugging Face ARWKV checkpoint layout (ARWKV.md section 3): tensor names and shapes, config.json, and
/// writing a checkpoint directory (one file or shards with model.safetensors.index.json).
/// </summary>
internal static class ArwkvCheckpointLayout
{
    public const string Embedding = "model.embed_tokens.weight";
    public const string LmHead = "lm_head.weight";
    public const string FinalNorm = "model.norm.weight";

    public static string Layer(int i, string name) => $"model.layers.{i}.{name}";
    public static string TimeMixer(int i, string name) => $"model.layers.{i}.self_attn.time_mixer.{name}";

    /// <summary>Per-channel time-mix vectors, stored [1, 1, C].</summary>
    public static readonly string[] TimeMixVectors = ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a"];

    /// <summary>Every tensor of a checkpoint with this config, in the order the reference writer emits them.</summary>
    public static IEnumerable<(string Name, long[] Shape)> Tensors(ArwkvConfig c, ArwkvLoraRanks ranks)
    {
        long C = c.HiddenSize, F = c.IntermediateSize, V = c.VocabSize;
        yield return (Embedding, [V, C]);
        for (int i = 0; i < c.NumLayers; i++)
        {
            yield return (Layer(i, "input_layernorm.weight"), [C]);
            yield return (Layer(i, "post_attention_layernorm.weight"), [C]);
            yield return (Layer(i, "mlp.gate_proj.weight"), [F, C]);
            yield return (Layer(i, "mlp.up_proj.weight"), [F, C]);
            yield return (Layer(i, "mlp.down_proj.weight"), [C, F]);
            foreach (string v in TimeMixVectors)
                if (v != "x_g" || c.WkvHasGate) yield return (TimeMixer(i, v), [1, 1, C]);
            yield return (TimeMixer(i, "w1"), [C, ranks.Decay]);
            yield return (TimeMixer(i, "w2"), [ranks.Decay, C]);
            yield return (TimeMixer(i, "a1"), [C, ranks.Iclr]);
            yield return (TimeMixer(i, "a2"), [ranks.Iclr, C]);
            yield return (TimeMixer(i, "v1"), [C, ranks.ValueMix]);
            yield return (TimeMixer(i, "v2"), [ranks.ValueMix, C]);
            if (c.WkvHasGate)
            {
                yield return (TimeMixer(i, "g1"), [C, ranks.Gate]);
                yield return (TimeMixer(i, "g2"), [ranks.Gate, C]);
            }
            yield return (TimeMixer(i, "r_k"), [c.NumHeads, c.HeadSize]);
            foreach (string p in new[] { "receptance", "key", "value", "output" })
                yield return (TimeMixer(i, p + ".weight"), [C, C]);
        }
        yield return (FinalNorm, [C]);
        if (!c.TieWordEmbeddings) yield return (LmHead, [V, C]);
    }

    /// <summary>Writes config.json as the released checkpoint has it (Qwen's unused attention fields included).</summary>
    public static void WriteConfig(string directory, ArwkvConfig c)
    {
        var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            json.WriteStringValue("RwkvHybridForCausalLM");
            json.WriteEndArray();
            json.WriteString("model_type", ArwkvConfig.ModelType);
            json.WriteNumber("hidden_size", c.HiddenSize);
            json.WriteNumber("num_hidden_layers", c.NumLayers);
            json.WriteNumber("intermediate_size", c.IntermediateSize);
            json.WriteNumber("vocab_size", c.VocabSize);
            json.WriteNumber("head_size", c.HeadSize);
            json.WriteNumber("rms_norm_eps", c.RmsNormEps);
            json.WriteBoolean("tie_word_embeddings", c.TieWordEmbeddings);
            json.WriteBoolean("wkv_has_gate", c.WkvHasGate);
            json.WriteBoolean("wkv_has_group_norm", false);
            json.WriteNumber("wkv_version", 7);
            json.WriteNumber("num_attention_heads", c.NumHeads);
            json.WriteNumber("num_key_value_heads", c.NumHeads);
            if (c.BosTokenId is int bos) json.WriteNumber("bos_token_id", bos);
            if (c.EosTokenIds.Count == 1) json.WriteNumber("eos_token_id", c.EosTokenIds[0]);
            else if (c.EosTokenIds.Count > 1)
            {
                json.WriteStartArray("eos_token_id");
                foreach (int e in c.EosTokenIds) json.WriteNumberValue(e);
                json.WriteEndArray();
            }
            json.WriteString("torch_dtype", "float32");
            json.WriteEndObject();
        }
        Directory.CreateDirectory(directory);
        AtomicFile.Write(Path.Combine(directory, "config.json"), s => s.Write(stream.ToArray()));
    }

    /// <summary>
    /// Writes config.json and the weights. With <paramref name="shards"/> &gt; 1 the tensors are split over
    /// model-0000i-of-0000N.safetensors files with a model.safetensors.index.json, as Hugging Face shards them.
    /// </summary>
    public static void Write(string directory, ArwkvConfig config, ArwkvLoraRanks ranks,
        IReadOnlyDictionary<string, float[]> tensors, DType type, int shards = 1)
    {
        var layout = Tensors(config, ranks).ToList();
        foreach (var (name, shape) in layout)
        {
            if (!tensors.TryGetValue(name, out float[]? data)) throw new ArgumentException($"missing tensor '{name}'");
            long count = shape.Aggregate(1L, (a, b) => a * b);
            if (data.Length != count) throw new ArgumentException($"tensor '{name}' has {data.Length} values, shape needs {count}");
        }
        WriteConfig(directory, config);
        if (shards <= 1)
        {
            SafeTensorsWriter.Write(Path.Combine(directory, "model.safetensors"),
                layout.Select(t => new TensorToWrite(t.Name, type, t.Shape, tensors[t.Name])), new Dictionary<string, string> { ["format"] = "pt" });
            return;
        }

        int perShard = (layout.Count + shards - 1) / shards;
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        long totalSize = 0;
        for (int s = 0; s < shards; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var part = layout.Skip(s * perShard).Take(perShard).ToList();
            foreach (var t in part)
            {
                weightMap[t.Name] = file;
                totalSize += tensors[t.Name].LongLength * type.SizeOf();
            }
            SafeTensorsWriter.Write(Path.Combine(directory, file),
                part.Select(t => new TensorToWrite(t.Name, type, t.Shape, tensors[t.Name])), new Dictionary<string, string> { ["format"] = "pt" });
        }
        var index = new MemoryStream();
        using (var json = new Utf8JsonWriter(index, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", totalSize);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap) json.WriteString(name, file);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        AtomicFile.Write(Path.Combine(directory, "model.safetensors.index.json"), s => s.Write(index.ToArray()));
    }
}
