using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using Arwkv.IO;

namespace Arwkv;

/// <summary>
/// Writes a random ARWKV (or Qwen2 teacher) checkpoint of any size as a single safetensors file, generating values in small chunks so
/// that a multi-gigabyte model never needs its weights in memory. For speed measurements and memory tests: the values
/// have plausible scales (activations stay of order one) but carry no knowledge.
/// </summary>
internal static class RandomCheckpointWriter
{
    /// <summary>Shapes of real checkpoints, for benchmarks on random weights of the right size.</summary>
    public static ArwkvConfig Preset(string name) => name switch
    {
        "tiny" => new ArwkvConfig { HiddenSize = 256, NumLayers = 4, IntermediateSize = 768, VocabSize = 4096, EosTokenIds = [2] },
        // Qwen2.5-0.5B's shape (hidden 896, 24 layers, ffn 4864, vocab 151936).
        "qwen2.5-0.5b" => new ArwkvConfig { HiddenSize = 896, NumLayers = 24, IntermediateSize = 4864, VocabSize = 151936, EosTokenIds = [151645], BosTokenId = 151643 },
        // ARWKV-7B-Preview-0.1 (Qwen2.5-7B's shape).
        "arwkv-7b" => new ArwkvConfig { HiddenSize = 3584, NumLayers = 28, IntermediateSize = 18944, VocabSize = 152064, EosTokenIds = [151645], BosTokenId = 151643 },
        _ => throw new ArgumentException($"unknown preset '{name}' (tiny, qwen2.5-0.5b, arwkv-7b)"),
    };

    /// <summary>Qwen2 teacher shapes for --arch qwen2: a tiny one and Qwen2.5-0.5B's (tied, as the real one).</summary>
    public static Qwen2Config Qwen2Preset(string name) => name switch
    {
        "tiny" => new Qwen2Config { HiddenSize = 64, NumLayers = 2, IntermediateSize = 160, VocabSize = 512, NumAttentionHeads = 4, NumKeyValueHeads = 2 },
        "qwen2.5-0.5b" => new Qwen2Config
        {
            HiddenSize = 896, NumLayers = 24, IntermediateSize = 4864, VocabSize = 151936, NumAttentionHeads = 14, NumKeyValueHeads = 2,
            RopeTheta = 1000000, TieWordEmbeddings = true, EosTokenIds = [151645, 151643],
        },
        _ => throw new ArgumentException($"unknown Qwen2 preset '{name}' (tiny, qwen2.5-0.5b)"),
    };

    /// <summary>Writes config.json and model.safetensors into <paramref name="directory"/>; returns the weights' size in bytes.</summary>
    public static long Write(string directory, ArwkvConfig config, ArwkvLoraRanks ranks, DType type, ulong seed = 42)
    {
        ArwkvCheckpointLayout.WriteConfig(directory, config);
        return WriteWeights(directory, ArwkvCheckpointLayout.Tensors(config, ranks).ToList(), type, seed);
    }

    /// <summary>A random Qwen2ForCausalLM teacher: config.json and model.safetensors; returns the weights' size in bytes.</summary>
    public static long WriteQwen2(string directory, Qwen2Config config, DType type, ulong seed = 42)
    {
        config.Validate(Path.Combine(directory, "config.json"));
        Qwen2Checkpoint.WriteConfig(directory, config, type);
        return WriteWeights(directory, Qwen2Checkpoint.TensorShapes(config), type, seed);
    }

    private static long WriteWeights(string directory, IReadOnlyList<(string Name, long[] Shape)> layout, DType type, ulong seed)
    {
        int size = type.SizeOf();
        var header = new MemoryStream();
        using (var json = new Utf8JsonWriter(header))
        {
            json.WriteStartObject();
            long offset = 0;
            foreach (var (name, shape) in layout)
            {
                long bytes = shape.Aggregate(1L, (a, b) => a * b) * size;
                json.WriteStartObject(name);
                json.WriteString("dtype", type.SafeTensorsName());
                json.WriteStartArray("shape");
                foreach (long d in shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        while (header.Length % 8 != 0) header.WriteByte((byte)' ');

        string path = Path.Combine(directory, "model.safetensors");
        ulong state = seed | 1;
        var floats = new float[1 << 16];
        var bytesBuffer = new byte[floats.Length * size];
        // Atomically, like every other writer: a target that is a FIFO, a device or a directory is refused, not replaced.
        AtomicFile.Write(path, stream =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            stream.Write(len);
            stream.Write(header.GetBuffer(), 0, (int)header.Length);
            foreach (var (name, shape) in layout)
            {
                var (lo, hi) = Range(name, shape);
                long count = shape.Aggregate(1L, (a, b) => a * b);
                for (long done = 0; done < count; done += floats.Length)
                {
                    int n = (int)Math.Min(floats.Length, count - done);
                    // Later chunks of a big tensor repeat the first one: the values only need to be plausible, and
                    // generating hundreds of millions of them would dominate the test's time.
                    if (done > 0)
                    {
                        stream.Write(bytesBuffer, 0, n * size);
                        continue;
                    }
                    for (int i = 0; i < n; i++)
                    {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        floats[i] = (float)(lo + (hi - lo) * ((state >> 11) * (1.0 / (1UL << 53))));
                    }
                    Span<byte> dst = bytesBuffer.AsSpan(0, n * size);
                    switch (type)
                    {
                        case DType.F32: MemoryMarshal.AsBytes(floats.AsSpan(0, n)).CopyTo(dst); break;
                        case DType.BF16: global::Arwkv.Kernels.Convert.Float32ToBFloat16(floats.AsSpan(0, n), MemoryMarshal.Cast<byte, ushort>(dst)); break;
                        case DType.F16: System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(floats.AsSpan(0, n), MemoryMarshal.Cast<byte, Half>(dst)); break;
                    }
                    stream.Write(dst);
                }
            }
        });
        // Through the handle: a link's own FileInfo.Length is the link's size, not the file's.
        using var written = File.OpenHandle(AtomicFile.ResolveTarget(path));
        return RandomAccess.GetLength(written);
    }

    /// <summary>
    /// The uniform range for a tensor's random values: scales that keep activations of order one (matrices by
    /// 1/sqrt(fan-in); lerps, decays and norms in their meaningful intervals; Qwen2's biases small). Shared with the
    /// test fixtures.
    /// </summary>
    internal static (double Lo, double Hi) Range(string name, long[] shape)
    {
        string[] parts = name.Split('.');
        if (parts[^1] == "bias") return (-0.1, 0.1);
        string leaf = parts[^1] == "weight" ? parts[^2] : parts[^1];
        double fanIn = shape.Length == 2 ? (name.Contains("time_mixer.") && !name.EndsWith(".weight") ? shape[0] : shape[1]) : 1;
        return leaf switch
        {
            "embed_tokens" => (-1, 1),
            "input_layernorm" or "post_attention_layernorm" or "norm" => (0.7, 1.3),
            "x_r" or "x_w" or "x_k" or "x_v" or "x_a" or "x_g" => (0, 1),
            "w0" => (-3, 1),
            "a0" or "v0" => (-1, 1),
            "k_k" => (0.5, 1.2),
            "k_a" => (0.5, 1.5),
            "r_k" => (-0.5, 0.5),
            _ => (-1.5 / Math.Sqrt(fanIn), 1.5 / Math.Sqrt(fanIn)),
        };
    }
}
