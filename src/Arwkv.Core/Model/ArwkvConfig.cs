using Arwkv.IO;

namespace Arwkv;

/// <summary>The hyper-parameters of an ARWKV checkpoint, from its config.json (<c>model_type: rwkv_hybrid</c>).</summary>
public sealed record ArwkvConfig
{
    /// <summary>config.json's model_type for ARWKV.</summary>
    public const string ModelType = "rwkv_hybrid";

    /// <summary>Model width C.</summary>
    public required int HiddenSize { get; init; }
    /// <summary>Number of layers.</summary>
    public required int NumLayers { get; init; }
    /// <summary>MLP width F.</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>Vocabulary size V (rows of the embedding and lm_head).</summary>
    public required int VocabSize { get; init; }
    /// <summary>RWKV head size N (64 in every released checkpoint).</summary>
    public int HeadSize { get; init; } = 64;
    /// <summary>RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>Whether the time mix has the output gate (g1, g2).</summary>
    public bool WkvHasGate { get; init; } = true;
    /// <summary>Whether lm_head shares the embedding matrix.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Beginning-of-sequence token id, if any.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>End-of-sequence token ids.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary>Number of heads H = C / N.</summary>
    public int NumHeads => HiddenSize / HeadSize;

    /// <summary>Reads and validates <c>config.json</c> in <paramref name="directory"/>.</summary>
    /// <exception cref="CheckpointException">Missing fields, an unknown model type, or settings Arwkv.Core does not implement.</exception>
    public static ArwkvConfig Load(string directory)
    {
        var file = ModelConfigFile.Open(directory);
        string type = file.GetString("model_type");
        if (type != ModelType) throw new CheckpointException(file.Path, $"model_type is '{type}', expected '{ModelType}'");
        int version = file.GetInt("wkv_version", 7);
        if (version != 7) throw new CheckpointException(file.Path, $"wkv_version {version} is not supported (only RWKV-7)");
        if (file.GetBool("wkv_has_group_norm", false))
            throw new CheckpointException(file.Path, "wkv_has_group_norm: true is not supported (ARWKV-7 checkpoints have no ln_x)");
        var config = new ArwkvConfig
        {
            HiddenSize = file.GetInt("hidden_size"),
            NumLayers = file.GetInt("num_hidden_layers"),
            IntermediateSize = file.GetInt("intermediate_size"),
            VocabSize = file.GetInt("vocab_size"),
            HeadSize = file.GetInt("head_size", 64),
            RmsNormEps = file.GetDouble("rms_norm_eps", 1e-6),
            WkvHasGate = file.GetBool("wkv_has_gate", true),
            TieWordEmbeddings = file.GetBool("tie_word_embeddings", false),
            BosTokenId = file.Has("bos_token_id") ? file.GetInt("bos_token_id") : null,
            EosTokenIds = file.GetIntList("eos_token_id"),
        };
        config.Validate(file.Path);
        return config;
    }

    internal void Validate(string path)
    {
        if (HiddenSize <= 0 || NumLayers <= 0 || IntermediateSize <= 0 || VocabSize <= 0 || HeadSize <= 0)
            throw new CheckpointException(path, "hidden_size, num_hidden_layers, intermediate_size, vocab_size and head_size must be positive");
        if (HiddenSize % HeadSize != 0)
            throw new CheckpointException(path, $"hidden_size {HiddenSize} is not a multiple of head_size {HeadSize}");
    }
}
