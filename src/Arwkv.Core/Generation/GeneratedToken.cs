namespace Arwkv.Generation;

/// <summary>Why generation ended.</summary>
public enum GenerationFinishReason
{
    /// <summary>A stop token or stop string was produced.</summary>
    Stop,
    /// <summary><see cref="GenerationOptions.MaxTokens"/> tokens were generated.</summary>
    Length,
}

/// <summary>One generated token.</summary>
/// <param name="Id">The token id.</param>
/// <param name="Text">
/// Text that became complete with this token (possibly empty: a character split over several tokens, text held
/// back because it could start a stop string, or a stop token).
/// </param>
/// <param name="FinishReason">Set on the last token of a generation.</param>
/// <param name="Stats">Timing of the generation, updated as it runs (the same object for every token of one call).</param>
public readonly record struct GeneratedToken(int Id, string Text, GenerationFinishReason? FinishReason, GenerationStats Stats);

/// <summary>Counts and timings of one generation.</summary>
public sealed class GenerationStats
{
    /// <summary>Tokens in the prompt (prefilled in one forward pass).</summary>
    public int PromptTokens { get; internal set; }

    /// <summary>Tokens generated so far (the stop token included).</summary>
    public int GeneratedTokens { get; internal set; }

    /// <summary>Time of the prompt's forward pass.</summary>
    public TimeSpan PrefillTime { get; internal set; }

    /// <summary>Time spent choosing and feeding generated tokens.</summary>
    public TimeSpan DecodeTime { get; internal set; }

    /// <summary>Why generation ended; null while it runs or when it was cancelled.</summary>
    public GenerationFinishReason? FinishReason { get; internal set; }

    /// <summary>Prompt tokens per second of prefill.</summary>
    public double PrefillTokensPerSecond => PrefillTime > TimeSpan.Zero ? PromptTokens / PrefillTime.TotalSeconds : 0;

    /// <summary>Generated tokens per second of decoding.</summary>
    public double DecodeTokensPerSecond => DecodeTime > TimeSpan.Zero ? GeneratedTokens / DecodeTime.TotalSeconds : 0;

    /// <inheritdoc />
    public override string ToString() =>
        $"{PromptTokens} prompt tokens at {PrefillTokensPerSecond:F1} tok/s, {GeneratedTokens} generated at {DecodeTokensPerSecond:F1} tok/s";
}
