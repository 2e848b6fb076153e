using Arwkv.IO;

namespace Arwkv;

/// <summary>An ARWKV checkpoint: Qwen2.5 with every attention block replaced by an RWKV-7 time mix.</summary>
public sealed class ArwkvModel : LanguageModel
{
    private ArwkvModel(ArwkvConfig config) => Config = config;

    /// <summary>The checkpoint's hyper-parameters.</summary>
    public ArwkvConfig Config { get; }

    /// <inheritdoc />
    public override string Architecture => ArwkvConfig.ModelType;

    /// <inheritdoc />
    public override int VocabSize => Config.VocabSize;

    /// <summary>Loads an ARWKV checkpoint directory (config.json, safetensors weights, optional tokenizer.json).</summary>
    public static new ArwkvModel Load(string directory, ModelOptions? options = null) =>
        throw new NotImplementedException("model: in progress");

    /// <inheritdoc />
    public override ModelState CreateState() => throw new NotImplementedException();

    /// <inheritdoc />
    public override void Forward(ReadOnlySpan<int> tokens, ModelState state, Span<float> logits, LogitsScope scope = LogitsScope.Last) =>
        throw new NotImplementedException();
}
