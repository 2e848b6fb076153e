using Arwkv.IO;

namespace Arwkv.Tests.TestModels;

/// <summary>Small ARWKV checkpoints with random weights, written in the exact Hugging Face layout.</summary>
internal static class RandomArwkvCheckpoint
{
    /// <summary>A small config: 2 heads of 64, 3 layers, enough vocabulary to exercise the lm_head.</summary>
    public static ArwkvConfig SmallConfig(bool gated = true, bool tied = false) => new()
    {
        HiddenSize = 128,
        NumLayers = 3,
        IntermediateSize = 320,
        VocabSize = 517,
        HeadSize = 64,
        WkvHasGate = gated,
        TieWordEmbeddings = tied,
        BosTokenId = 1,
        EosTokenIds = [2],
    };

    /// <summary>Small LoRA ranks that are not multiples of the vector width, to catch tail bugs.</summary>
    public static ArwkvLoraRanks SmallRanks => new(Decay: 24, Iclr: 20, ValueMix: 12, Gate: 40);

    /// <summary>Random float32 values for every tensor of the layout, with scales that keep activations O(1).</summary>
    public static Dictionary<string, float[]> RandomTensors(ArwkvConfig config, ArwkvLoraRanks ranks, int seed)
    {
        var rng = new Random(seed);
        float U(double lo, double hi) => (float)(lo + (hi - lo) * rng.NextDouble());
        var tensors = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in ArwkvCheckpointLayout.Tensors(config, ranks))
        {
            long count = shape.Aggregate(1L, (a, b) => a * b);
            var data = new float[count];
            string leaf = name.Split('.')[^1] == "weight" ? name.Split('.')[^2] : name.Split('.')[^1];
            // Matrices scale by 1/sqrt(fan-in) so every layer keeps activations of order one.
            double fanIn = shape.Length == 2 ? (name.Contains("time_mixer.") && !name.EndsWith(".weight") ? shape[0] : shape[1]) : 1;
            (double lo, double hi) range = leaf switch
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
            for (long i = 0; i < count; i++) data[i] = U(range.lo, range.hi);
            tensors[name] = data;
        }
        return tensors;
    }

    /// <summary>Writes a random checkpoint into <paramref name="directory"/> and returns its tensors (float32 before narrowing).</summary>
    public static Dictionary<string, float[]> Create(string directory, ArwkvConfig? config = null, int seed = 1234,
        DType type = DType.F32, int shards = 1, ArwkvLoraRanks? ranks = null)
    {
        config ??= SmallConfig();
        ranks ??= SmallRanks;
        var tensors = RandomTensors(config, ranks, seed);
        ArwkvCheckpointLayout.Write(directory, config, ranks, tensors, type, shards);
        return tensors;
    }
}

/// <summary>A temporary directory removed when disposed.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory(string prefix = "arwkv-test")
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
