namespace Arwkv.Training.Data;

/// <summary>
/// One training sequence of Length positions: Inputs[t] is fed at step t and Targets[t] is the token that follows
/// it. Mask[t] is 1 for a real input and 0 for padding; padded steps have target -1 and must neither count in a
/// loss nor advance a recurrent state.
/// </summary>
internal sealed record TrainingSequence(int[] Inputs, int[] Targets, float[] Mask)
{
    public int Length => Inputs.Length;

    /// <summary>Number of real (unpadded) positions; padding is always at the end.</summary>
    public int ValidLength { get; } = Array.IndexOf(Mask, 0f) is int at && at >= 0 ? at : Mask.Length;
}

/// <summary>Turns tokenized documents into training sequences.</summary>
internal static class SequenceBuilder
{
    /// <summary>Sequences are padded to a multiple of this (as RWKVInside does, for the chunked kernels).</summary>
    public const int PadMultiple = 16;

    /// <summary>
    /// Concatenates the documents, each followed by <paramref name="endOfText"/>, and cuts the stream into
    /// sequences of <paramref name="length"/> inputs (each window holds length + 1 tokens; consecutive windows
    /// share one token so every token is a target once). The tail shorter than a window is dropped. No padding.
    /// </summary>
    public static List<TrainingSequence> Pack(IReadOnlyList<int[]> documents, int length, int endOfText)
    {
        if (length <= 0) throw new ArgumentOutOfRangeException(nameof(length), "sequence length must be positive");
        var stream = new List<int>(documents.Sum(d => d.Length + 1));
        foreach (int[] d in documents)
        {
            stream.AddRange(d);
            stream.Add(endOfText);
        }
        var sequences = new List<TrainingSequence>();
        for (int start = 0; start + length < stream.Count; start += length)
        {
            var inputs = stream.GetRange(start, length).ToArray();
            var targets = stream.GetRange(start + 1, length).ToArray();
            var mask = new float[length];
            Array.Fill(mask, 1f);
            sequences.Add(new TrainingSequence(inputs, targets, mask));
        }
        return sequences;
    }

    /// <summary>
    /// Keeps documents apart: each document plus <paramref name="endOfText"/> becomes one sequence (split into
    /// windows of at most <paramref name="maxLength"/> inputs when longer), padded with <paramref name="endOfText"/>
    /// to the next multiple of <see cref="PadMultiple"/>, with a mask marking the real positions.
    /// </summary>
    public static List<TrainingSequence> Pad(IReadOnlyList<int[]> documents, int maxLength, int endOfText)
    {
        if (maxLength <= 0 || maxLength % PadMultiple != 0)
            throw new ArgumentOutOfRangeException(nameof(maxLength), $"maximum length must be a positive multiple of {PadMultiple}");
        var sequences = new List<TrainingSequence>();
        foreach (int[] d in documents)
        {
            int total = d.Length + 1;
            int Token(int i) => i < d.Length ? d[i] : endOfText;
            for (int start = 0; start + 1 < total; start += maxLength)
            {
                int n = Math.Min(maxLength, total - 1 - start);
                int padded = (n + PadMultiple - 1) / PadMultiple * PadMultiple;
                var inputs = new int[padded];
                var targets = new int[padded];
                var mask = new float[padded];
                for (int t = 0; t < padded; t++)
                {
                    bool real = t < n;
                    inputs[t] = real ? Token(start + t) : endOfText;
                    targets[t] = real ? Token(start + t + 1) : -1;
                    mask[t] = real ? 1f : 0f;
                }
                sequences.Add(new TrainingSequence(inputs, targets, mask));
            }
        }
        return sequences;
    }
}

/// <summary>A small deterministic generator (SplitMix64), so a seed gives the same shuffle on every runtime.</summary>
internal struct SplitMix64(ulong seed)
{
    private ulong _state = seed;

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, bound) without modulo bias.</summary>
    public int NextInt(int bound)
    {
        ulong limit = ulong.MaxValue - ulong.MaxValue % (ulong)bound;
        ulong x;
        do x = Next(); while (x >= limit);
        return (int)(x % (ulong)bound);
    }

    /// <summary>Fisher-Yates shuffle in place.</summary>
    public static void Shuffle<T>(IList<T> items, ulong seed)
    {
        var rng = new SplitMix64(seed);
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = rng.NextInt(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}

/// <summary>Splits sequences into training and validation sets.</summary>
internal static class DataSplit
{
    /// <summary>
    /// Shuffles a copy with <paramref name="seed"/> and puts round(count * fraction) sequences (at least one when the
    /// fraction is positive) into validation, the rest into training. Each side must end up non-empty.
    /// </summary>
    public static (List<TrainingSequence> Train, List<TrainingSequence> Validation) Split(
        IReadOnlyList<TrainingSequence> sequences, double validationFraction, ulong seed)
    {
        if (!(validationFraction >= 0 && validationFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(validationFraction), "must be in [0, 1)");
        var shuffled = sequences.ToList();
        SplitMix64.Shuffle(shuffled, seed);
        int validation = (int)Math.Round(shuffled.Count * validationFraction);
        if (validationFraction > 0) validation = Math.Max(1, validation);
        if (shuffled.Count - validation < 1)
            throw new ArgumentException($"{sequences.Count} sequences are too few to keep {validation} for validation and still train");
        return (shuffled.GetRange(validation, shuffled.Count - validation), shuffled.GetRange(0, validation));
    }
}
