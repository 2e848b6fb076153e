using System.Runtime.CompilerServices;
using Arwkv.Generation;
using Arwkv.Tokenization;
using Microsoft.Extensions.AI;

namespace Arwkv.Extensions.AI;

/// <summary>
/// An <see cref="IChatClient"/> over a local ARWKV (or other <see cref="LanguageModel"/>) checkpoint. Each request
/// renders the conversation with the ChatML template and generates from a fresh state; requests run one at a time.
/// </summary>
/// <remarks>
/// <see cref="ChatOptions"/> maps to sampling as follows: Temperature, TopP, TopK and Seed to
/// <see cref="SamplingOptions"/>; MaxOutputTokens to <see cref="GenerationOptions.MaxTokens"/>; StopSequences to
/// stop strings; Instructions to a leading system message. Unset values come from the client's defaults.
/// Tools, response formats and penalties other than the repetition penalty are not supported and are ignored.
/// </remarks>
public sealed class ArwkvChatClient : IChatClient
{
    private readonly TextGenerator _generator;
    private readonly bool _ownsModel;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly ChatClientMetadata _metadata;
    private bool _disposed;

    /// <summary>Creates a client over <paramref name="model"/>, which must have a tokenizer.</summary>
    /// <param name="model">The model; it must come with its tokenizer.json.</param>
    /// <param name="defaults">Generation settings used where a request's <see cref="ChatOptions"/> leaves them unset; null uses <see cref="SamplingOptions.Recommended"/> and 512 tokens.</param>
    /// <param name="modelId">The id reported in responses and metadata; defaults to the model's architecture.</param>
    /// <param name="ownsModel">Dispose <paramref name="model"/> when this client is disposed.</param>
    /// <exception cref="ArgumentException">The model has no tokenizer.</exception>
    public ArwkvChatClient(LanguageModel model, GenerationOptions? defaults = null, string? modelId = null, bool ownsModel = false)
        : this(new TextGenerator(model ?? throw new ArgumentNullException(nameof(model))), defaults, modelId, ownsModel)
    {
    }

    /// <summary>Creates a client over <paramref name="generator"/>, which must have a tokenizer.</summary>
    /// <param name="generator">The generator (its model and tokenizer).</param>
    /// <param name="defaults">Generation settings used where a request's <see cref="ChatOptions"/> leaves them unset.</param>
    /// <param name="modelId">The id reported in responses and metadata; defaults to the model's architecture.</param>
    /// <param name="ownsModel">Dispose the generator's model when this client is disposed.</param>
    /// <exception cref="ArgumentException">The generator has no tokenizer.</exception>
    public ArwkvChatClient(TextGenerator generator, GenerationOptions? defaults = null, string? modelId = null, bool ownsModel = false)
    {
        ArgumentNullException.ThrowIfNull(generator);
        if (!generator.HasTokenizer) throw new ArgumentException("the model has no tokenizer (tokenizer.json is missing from its directory)", nameof(generator));
        _generator = generator;
        _ownsModel = ownsModel;
        Defaults = defaults ?? new GenerationOptions { MaxTokens = 512, Sampling = SamplingOptions.Recommended };
        ModelId = modelId ?? generator.Model.Architecture;
        _metadata = new ChatClientMetadata("arwkv", null, ModelId);
    }

    /// <summary>Generation settings for whatever a request's options leave unset.</summary>
    public GenerationOptions Defaults { get; }

    /// <summary>The model id reported in responses.</summary>
    public string ModelId { get; }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        GenerationStats? stats = null;
        string responseId = NewId();
        DateTimeOffset created = DateTimeOffset.UtcNow;
        await foreach (GeneratedToken token in GenerateAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(token.Text);
            stats = token.Stats;
        }
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()) { MessageId = responseId })
        {
            ResponseId = responseId,
            ModelId = ModelId,
            CreatedAt = created,
            FinishReason = MapFinish(stats?.FinishReason),
            Usage = stats is null ? null : Usage(stats),
        };
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        string responseId = NewId();
        DateTimeOffset created = DateTimeOffset.UtcNow;
        await foreach (GeneratedToken token in GenerateAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            if (token.Text.Length > 0)
                yield return Update(new ChatResponseUpdate(ChatRole.Assistant, token.Text), responseId, created);
            if (token.FinishReason is not null)
            {
                yield return Update(new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(Usage(token.Stats))])
                {
                    FinishReason = MapFinish(token.FinishReason),
                }, responseId, created);
            }
        }
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType.IsInstanceOfType(_generator)) return _generator;
        if (serviceType.IsInstanceOfType(_generator.Model)) return _generator.Model;
        return null;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_ownsModel) _generator.Model.Dispose();
        _gate.Dispose();
    }

    /// <summary>The generation settings a request runs with: <paramref name="options"/> over <see cref="Defaults"/>.</summary>
    /// <exception cref="ArgumentException">Values outside their ranges.</exception>
    public GenerationOptions ResolveOptions(ChatOptions? options)
    {
        if (options is null) return Defaults;
        SamplingOptions s = Defaults.Sampling;
        var sampling = s with
        {
            Temperature = options.Temperature ?? s.Temperature,
            TopP = options.TopP ?? s.TopP,
            TopK = options.TopK ?? s.TopK,
            Seed = options.Seed ?? s.Seed,
        };
        if (options.AdditionalProperties?.TryGetValue("repetition_penalty", out object? penalty) == true && penalty is not null)
            sampling = sampling with { RepetitionPenalty = System.Convert.ToSingle(penalty, System.Globalization.CultureInfo.InvariantCulture) };
        sampling.Validate();
        int maxTokens = options.MaxOutputTokens ?? Defaults.MaxTokens;
        if (maxTokens < 1) throw new ArgumentException($"MaxOutputTokens must be at least 1, got {maxTokens}", nameof(options));
        IReadOnlyList<string>? stops = Defaults.StopStrings;
        if (options.StopSequences is { Count: > 0 } sequences)
            stops = [.. stops ?? [], .. sequences.Where(x => !string.IsNullOrEmpty(x))];
        return Defaults with { MaxTokens = maxTokens, Sampling = sampling, StopStrings = stops };
    }

    /// <summary>Maps chat messages to ChatML turns (their text content only).</summary>
    public static IReadOnlyList<ChatTurn> ToTurns(IEnumerable<ChatMessage> messages, ChatOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = new List<ChatTurn>();
        if (!string.IsNullOrEmpty(options?.Instructions)) turns.Add(new ChatTurn("system", options.Instructions));
        foreach (ChatMessage message in messages)
            turns.Add(new ChatTurn(message.Role.Value, message.Text));
        return turns;
    }

    private async IAsyncEnumerable<GeneratedToken> GenerateAsync(IEnumerable<ChatMessage> messages, ChatOptions? options,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        GenerationOptions generation = ResolveOptions(options);
        IReadOnlyList<ChatTurn> turns = ToTurns(messages, options);
        if (turns.Count == 0) throw new ArgumentException("no messages", nameof(messages));
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await foreach (GeneratedToken token in _generator.GenerateAsync(turns, generation, null, cancellationToken).ConfigureAwait(false))
                yield return token;
        }
        finally
        {
            _gate.Release();
        }
    }

    private ChatResponseUpdate Update(ChatResponseUpdate update, string responseId, DateTimeOffset created)
    {
        update.ResponseId = responseId;
        update.MessageId = responseId;
        update.ModelId = ModelId;
        update.CreatedAt = created;
        return update;
    }

    private static UsageDetails Usage(GenerationStats stats) => new()
    {
        InputTokenCount = stats.PromptTokens,
        OutputTokenCount = stats.GeneratedTokens,
        TotalTokenCount = stats.PromptTokens + stats.GeneratedTokens,
    };

    private static ChatFinishReason? MapFinish(GenerationFinishReason? reason) => reason switch
    {
        GenerationFinishReason.Stop => ChatFinishReason.Stop,
        GenerationFinishReason.Length => ChatFinishReason.Length,
        _ => null,
    };

    private static string NewId() => "arwkv-" + Guid.NewGuid().ToString("N");
}
