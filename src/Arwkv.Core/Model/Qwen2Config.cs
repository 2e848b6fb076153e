using Arwkv.IO;

namespace Arwkv;

/// <summary>The hyper-parameters of a Qwen2 / Qwen2.5 checkpoint, from its config.json (<c>model_type: qwen2</c>).</summary>
public sealed record Qwen2Config
{
    /// <summary>config.json's model_type for Qwen2 and Qwen2.5.</summary>
    public const string ModelType = "qwen2";

    /// <summary>Model width C.</summary>
    public required int HiddenSize { get; init; }
    /// <summary>Number of decoder layers.</summary>
    public required int NumLayers { get; init; }
    /// <summary>MLP width F.</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>Vocabulary size V (rows of the embedding and lm_head).</summary>
    public required int VocabSize { get; init; }
    /// <summary>Number of query heads.</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary>Number of key/value heads (grouped-query attention); equals <see cref="NumAttentionHeads"/> without GQA.</summary>
    public required int NumKeyValueHeads { get; init; }
    /// <summary>RoPE base frequency.</summary>
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary>RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>Whether lm_head shares the embedding matrix.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>The longest context the checkpoint was trained for.</summary>
    public int MaxPositionEmbeddings { get; init; } = 32768;
    /// <summary>Beginning-of-sequence token id, if any.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>End-of-sequence token ids.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary>Width of one attention head: C / heads.</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>Width of the key (and value) projection: kv heads * head dim.</summary>
    public int KeyValueSize => NumKeyValueHeads * HeadDim;

    /// <summary>Reads and validates <c>config.json</c> in <paramref name="directory"/>.</summary>
    /// <exception cref="CheckpointException">Missing or invalid fields, another model type, or settings Arwkv.Core does not implement.</exception>
    public static Qwen2Config Load(string directory)
    {
        var file = ModelConfigFile.Open(directory);
        string type = file.GetString("model_type");
        if (type != ModelType) throw new CheckpointException(file.Path, $"model_type is '{type}', expected '{ModelType}'");
        // Qwen2.5 ships use_sliding_window: false; a windowed checkpoint would need a different attention mask.
        if (file.GetBool("use_sliding_window", false))
            throw new CheckpointException(file.Path, "'use_sliding_window': true is not supported (only full causal attention)");
        if (file.Has("rope_scaling"))
            throw new CheckpointException(file.Path, "'rope_scaling' is not supported (only plain RoPE with rope_theta)");
        int heads = file.GetInt("num_attention_heads");
        var config = new Qwen2Config
        {
            HiddenSize = file.GetInt("hidden_size"),
            NumLayers = file.GetInt("num_hidden_layers"),
            IntermediateSize = file.GetInt("intermediate_size"),
            VocabSize = file.GetInt("vocab_size"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = file.GetInt("num_key_value_heads", heads),
            RopeTheta = file.GetDouble("rope_theta", 10000.0),
            RmsNormEps = file.GetDouble("rms_norm_eps", 1e-6),
            TieWordEmbeddings = file.GetBool("tie_word_embeddings", false),
            MaxPositionEmbeddings = file.GetInt("max_position_embeddings", 32768),
            BosTokenId = file.Has("bos_token_id") ? file.GetInt("bos_token_id") : null,
            EosTokenIds = file.GetIntList("eos_token_id"),
        };
        config.Validate(file.Path);
        return config;
    }

    internal void Validate(string path)
    {
        void Positive(string field, int value)
        {
            if (value <= 0) throw new CheckpointException(path, $"'{field}' must be positive, got {value}");
        }
        Positive("hidden_size", HiddenSize);
        Positive("num_hidden_layers", NumLayers);
        Positive("intermediate_size", IntermediateSize);
        Positive("vocab_size", VocabSize);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("num_key_value_heads", NumKeyValueHeads);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        if (HiddenSize % NumAttentionHeads != 0)
            throw new CheckpointException(path, $"'hidden_size' {HiddenSize} is not a multiple of 'num_attention_heads' {NumAttentionHeads}");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new CheckpointException(path, $"'num_attention_heads' {NumAttentionHeads} is not a multiple of 'num_key_value_heads' {NumKeyValueHeads}");
        if (HeadDim % 2 != 0)
            throw new CheckpointException(path, $"head dimension {HeadDim} (hidden_size / num_attention_heads) must be even for RoPE");
        if (!(RopeTheta > 1.0) || double.IsInfinity(RopeTheta))
            throw new CheckpointException(path, $"'rope_theta' must be a finite number above 1, got {RopeTheta}");
        if (!(RmsNormEps > 0.0) || RmsNormEps >= 1.0)
            throw new CheckpointException(path, $"'rms_norm_eps' must be in (0, 1), got {RmsNormEps}");
        if (BosTokenId is int bos && (bos < 0 || bos >= VocabSize))
            throw new CheckpointException(path, $"'bos_token_id' {bos} is outside the vocabulary [0, {VocabSize})");
        foreach (int eos in EosTokenIds)
            if (eos < 0 || eos >= VocabSize)
                throw new CheckpointException(path, $"'eos_token_id' {eos} is outside the vocabulary [0, {VocabSize})");
    }
}
