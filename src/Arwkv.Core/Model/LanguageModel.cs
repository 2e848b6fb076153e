using Arwkv.IO;
using Arwkv.Tokenization;

namespace Arwkv;

/// <summary>Which logits a forward pass writes.</summary>
public enum LogitsScope
{
    /// <summary>None: only the state advances (the lm_head is skipped).</summary>
    None,
    /// <summary>The last token's logits, [VocabSize].</summary>
    Last,
    /// <summary>Every token's logits, [tokens, VocabSize].</summary>
    All,
}

/// <summary>How a multi-token forward pass is computed.</summary>
public enum ForwardMode
{
    /// <summary>All tokens at once: matrix-matrix products for the projections and MLP.</summary>
    Prefill,
    /// <summary>One token at a time, exactly as decoding does.</summary>
    Recurrent,
}

/// <summary>Options for loading a model.</summary>
public sealed record ModelOptions
{
    /// <summary>Threads that run the kernels; defaults to the processor count.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>How multi-token inputs are processed; both modes give the same logits.</summary>
    public ForwardMode Mode { get; init; } = ForwardMode.Prefill;
}

/// <summary>
/// A causal language model: ARWKV (recurrent, constant-size state) or its Qwen2 teacher (KV cache).
/// Generation, the CLI and the chat client are written against this class.
/// </summary>
public abstract class LanguageModel : IDisposable
{
    /// <summary>The architecture, as config.json's <c>model_type</c> names it ("rwkv_hybrid", "qwen2").</summary>
    public abstract string Architecture { get; }

    /// <summary>Size of the logits vector.</summary>
    public abstract int VocabSize { get; }

    /// <summary>The checkpoint's tokenizer, or null when its directory has no tokenizer.json.</summary>
    public QwenTokenizer? Tokenizer { get; protected init; }

    /// <summary>End-of-sequence token ids from the checkpoint's config (generation stops on them by default).</summary>
    public IReadOnlyList<int> EosTokenIds { get; protected init; } = [];

    /// <summary>A fresh state: no tokens seen.</summary>
    public abstract ModelState CreateState();

    /// <summary>
    /// Feeds <paramref name="tokens"/> after whatever <paramref name="state"/> has seen, advancing it, and writes
    /// the logits <paramref name="scope"/> asks for into <paramref name="logits"/>.
    /// </summary>
    public abstract void Forward(ReadOnlySpan<int> tokens, ModelState state, Span<float> logits, LogitsScope scope = LogitsScope.Last);

    /// <summary>Loads the checkpoint directory, choosing the architecture from its config.json.</summary>
    public static LanguageModel Load(string directory, ModelOptions? options = null)
    {
        string modelType = ModelConfigFile.ReadModelType(directory);
        return modelType switch
        {
            ArwkvConfig.ModelType => ArwkvModel.Load(directory, options),
            Qwen2Config.ModelType => Qwen2Model.Load(directory, options),
            _ => throw new CheckpointException(Path.Combine(directory, "config.json"),
                $"unknown model_type '{modelType}' (supported: {ArwkvConfig.ModelType})"),
        };
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the mapped weights and worker threads.</summary>
    protected virtual void Dispose(bool disposing) { }
}

/// <summary>
/// Everything a model remembers about the tokens it has seen. Clone it to fork a conversation; save it to
/// resume later from the same point (the recurrent model's answer to a prompt cache).
/// </summary>
public abstract class ModelState
{
    /// <summary>Tokens seen so far.</summary>
    public int Position { get; protected internal set; }

    /// <summary>An independent copy.</summary>
    public abstract ModelState Clone();

    /// <summary>Forgets every token seen.</summary>
    public abstract void Reset();

    /// <summary>Writes the state so that <c>LoadState</c> on the same model restores it exactly.</summary>
    public abstract void Save(Stream stream);
}
