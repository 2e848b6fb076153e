using Arwkv.Kernels;

namespace Arwkv;

/// <summary>
/// A forward pass produced a NaN or infinite logit. The weights are checked at load, so this means an activation
/// overflowed float32 (weights finite but enormous, or a state that already held a non-finite value); returning the
/// logits would make sampling pick an arbitrary token and carry on. The state the pass used now holds the overflow:
/// reset it, or load a saved one, before going on.
/// </summary>
public sealed class NonFiniteLogitsException : ArithmeticException
{
    /// <summary>Creates the exception for the model in <paramref name="modelDirectory"/>.</summary>
    public NonFiniteLogitsException(string modelDirectory, long position, int vocabularyId, float value)
        : base($"{modelDirectory}: the forward pass produced a non-finite logit ({value}) at sequence position {position}, " +
               $"vocabulary id {vocabularyId}: an activation overflowed float32 (the weights are finite: they are checked at load); " +
               "the state used by this pass is no longer usable")
    {
        ModelDirectory = modelDirectory;
        Position = position;
        VocabularyId = vocabularyId;
    }

    /// <summary>The model whose forward pass overflowed.</summary>
    public string ModelDirectory { get; }

    /// <summary>The position in the sequence (counting from the state's start) of the first non-finite logit.</summary>
    public long Position { get; }

    /// <summary>The vocabulary entry of the first non-finite logit.</summary>
    public int VocabularyId { get; }

    /// <summary>Throws when <paramref name="logits"/> (rows of <paramref name="vocabSize"/>, the first at sequence
    /// position <paramref name="firstPosition"/>) holds a NaN or an infinity.</summary>
    internal static void ThrowIfAny(ReadOnlySpan<float> logits, int vocabSize, long firstPosition, string modelDirectory)
    {
        long bad = NonFiniteScan.FirstNonFinite(logits);
        if (bad < 0) return;
        throw new NonFiniteLogitsException(modelDirectory, firstPosition + bad / vocabSize, (int)(bad % vocabSize), logits[(int)bad]);
    }
}
