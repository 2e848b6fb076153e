using System.Globalization;
using Arwkv.IO;

namespace Arwkv.Tests.Teacher;

/// <summary>Shape of a tiny random Qwen2 checkpoint written for tests.</summary>
internal sealed record Qwen2TestShape
{
    public int Hidden { get; init; } = 64;
    public int Layers { get; init; } = 2;
    public int Intermediate { get; init; } = 96;
    public int Vocab { get; init; } = 80;
    public int Heads { get; init; } = 4;
    public int KvHeads { get; init; } = 2;
    public double RopeTheta { get; init; } = 10000.0;
    public double Eps { get; init; } = 1e-6;
    public bool Tied { get; init; }
    public DType Type { get; init; } = DType.F32;
    public int Seed { get; init; } = 1;
    public int HeadDim => Hidden / Heads;
    public int KvSize => KvHeads * HeadDim;
}

/// <summary>Writes small random Qwen2ForCausalLM checkpoints (config.json + model.safetensors) in the Hugging Face layout.</summary>
internal static class Qwen2TestCheckpoint
{
    public static string NewDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "arwkv-qwen2-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static string ConfigJson(Qwen2TestShape s, string? extra = null) => string.Create(CultureInfo.InvariantCulture, $$"""
        {
          "architectures": ["Qwen2ForCausalLM"],
          "model_type": "qwen2",
          "hidden_size": {{s.Hidden}},
          "num_hidden_layers": {{s.Layers}},
          "intermediate_size": {{s.Intermediate}},
          "vocab_size": {{s.Vocab}},
          "num_attention_heads": {{s.Heads}},
          "num_key_value_heads": {{s.KvHeads}},
          "rope_theta": {{s.RopeTheta:R}},
          "rms_norm_eps": {{s.Eps:R}},
          "tie_word_embeddings": {{(s.Tied ? "true" : "false")}},
          "max_position_embeddings": 4096,
          "use_sliding_window": false,
          "rope_scaling": null,
          "bos_token_id": 1,
          "eos_token_id": [2, 3]{{extra}}
        }
        """);

    /// <summary>The tensors of a random checkpoint of this shape, by name.</summary>
    public static List<TensorToWrite> RandomTensors(Qwen2TestShape s)
    {
        var rng = new Random(s.Seed);
        var list = new List<TensorToWrite>();
        void Add(string name, long[] shape, double scale, double offset = 0)
        {
            long n = shape.Aggregate(1L, (a, b) => a * b);
            var data = new float[n];
            for (long i = 0; i < n; i++) data[i] = (float)(offset + scale * (2 * rng.NextDouble() - 1));
            list.Add(new TensorToWrite(name, s.Type, shape, data));
        }
        int c = s.Hidden, kv = s.KvSize, f = s.Intermediate, v = s.Vocab;
        double wc = Math.Sqrt(3.0 / c), wf = Math.Sqrt(3.0 / f);
        Add("model.embed_tokens.weight", [v, c], 1.0);
        for (int l = 0; l < s.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Add(p + "input_layernorm.weight", [c], 0.2, 1.0);
            // Larger q/k weights make the attention distribution far from uniform, so RoPE and masking matter.
            Add(p + "self_attn.q_proj.weight", [c, c], 2 * wc);
            Add(p + "self_attn.k_proj.weight", [kv, c], 2 * wc);
            Add(p + "self_attn.v_proj.weight", [kv, c], wc);
            Add(p + "self_attn.o_proj.weight", [c, c], wc);
            Add(p + "self_attn.q_proj.bias", [c], 0.5);
            Add(p + "self_attn.k_proj.bias", [kv], 0.5);
            Add(p + "self_attn.v_proj.bias", [kv], 0.2);
            Add(p + "post_attention_layernorm.weight", [c], 0.2, 1.0);
            Add(p + "mlp.gate_proj.weight", [f, c], wc);
            Add(p + "mlp.up_proj.weight", [f, c], wc);
            Add(p + "mlp.down_proj.weight", [c, f], wf);
        }
        Add("model.norm.weight", [c], 0.2, 1.0);
        if (!s.Tied) Add("lm_head.weight", [v, c], wc);
        return list;
    }

    /// <summary>Writes a checkpoint into a new temporary directory and returns it.</summary>
    public static string Write(Qwen2TestShape s, Func<List<TensorToWrite>, IEnumerable<TensorToWrite>>? edit = null, string? configExtra = null)
    {
        string dir = NewDirectory();
        File.WriteAllText(Path.Combine(dir, "config.json"), ConfigJson(s, configExtra));
        List<TensorToWrite> tensors = RandomTensors(s);
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), edit is null ? tensors : edit(tensors));
        return dir;
    }

    /// <summary>Every tensor of the written file widened to float64 (so BF16 rounding is part of the reference).</summary>
    public static Dictionary<string, double[]> ReadWeights(string dir)
    {
        using SafeTensorsFile file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        var result = new Dictionary<string, double[]>();
        foreach (TensorInfo info in file.Tensors.Values)
            result[info.Name] = Array.ConvertAll(file.ReadFloat32(info), x => (double)x);
        return result;
    }

    public static void Delete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
