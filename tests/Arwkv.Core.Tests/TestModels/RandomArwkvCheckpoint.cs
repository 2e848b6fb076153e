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
            var (lo, hi) = RandomCheckpointWriter.Range(name, shape);
            for (long i = 0; i < count; i++) data[i] = U(lo, hi);
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
