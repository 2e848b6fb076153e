namespace Arwkv.Generation;

/// <summary>How the next token is chosen from the logits.</summary>
/// <remarks>
/// The order is the one Hugging Face and llama.cpp use: repetition penalty on the raw logits, then top-k, then
/// temperature, then top-p over the remaining candidates sorted by probability.
/// </remarks>
public sealed record SamplingOptions
{
    /// <summary>Always take the most likely token.</summary>
    public static SamplingOptions Greedy { get; } = new() { Temperature = 0 };

    /// <summary>The values Qwen2.5-Instruct's generation_config.json recommends (T 0.7, top-k 20, top-p 0.8, repetition penalty 1.05).</summary>
    public static SamplingOptions Recommended { get; } = new() { Temperature = 0.7f, TopK = 20, TopP = 0.8f, RepetitionPenalty = 1.05f };

    /// <summary>Softmax temperature; 0 means greedy (argmax). Must not be negative.</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Keep only the <c>TopK</c> most likely tokens; 0 keeps all.</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches <c>TopP</c> (nucleus sampling); 1 keeps all.</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>
    /// Penalty for tokens already seen (1 = none): a positive logit is divided by it, a negative one multiplied,
    /// once per distinct token, as Hugging Face's RepetitionPenaltyLogitsProcessor and llama.cpp do.
    /// </summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>How many of the most recent tokens (prompt included) the repetition penalty looks at; 0 means all of them.</summary>
    public int RepetitionWindow { get; init; } = 64;

    /// <summary>Seed of the random draw; the same seed, options and logits give the same tokens. Null picks a random seed.</summary>
    public long? Seed { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> for values outside their ranges.</summary>
    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new ArgumentException($"temperature must be a finite number >= 0, got {Temperature}");
        if (TopK < 0) throw new ArgumentException($"top-k must be >= 0, got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1], got {TopP}");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty)) throw new ArgumentException($"repetition penalty must be a finite number > 0, got {RepetitionPenalty}");
        if (RepetitionWindow < 0) throw new ArgumentException($"repetition window must be >= 0, got {RepetitionWindow}");
    }
}

/// <summary>What <see cref="TextGenerator"/> generates and when it stops.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate (the stop token included).</summary>
    public int MaxTokens { get; init; } = 256;

    /// <summary>
    /// Tokens that end generation. Null means the model's EOS ids plus the tokenizer's &lt;|im_end|&gt; and
    /// &lt;|endoftext|&gt;. The stop token is fed to the state but its text is not emitted.
    /// </summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }

    /// <summary>Texts that end generation; the text is cut before the first one. Held-back text that could start one is emitted only once it cannot.</summary>
    public IReadOnlyList<string>? StopStrings { get; init; }

    /// <summary>How each token is chosen.</summary>
    public SamplingOptions Sampling { get; init; } = new();
}
