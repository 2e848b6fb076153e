namespace Arwkv.Training.Data;

/// <summary>Where a <see cref="BatchIterator"/> stands: the epoch and the next batch within it. Saved with a training checkpoint.</summary>
internal readonly record struct BatchPosition(int Epoch, int Batch);

/// <summary>
/// A batch [Size, Length] of sequences, row-major. Sequences shorter than Length (padded mode) are extended with
/// padding (input = the pad id, target = -1, mask = 0).
/// </summary>
internal sealed class Batch
{
    public Batch(int size, int length)
    {
        Size = size;
        Length = length;
        Inputs = new int[size * length];
        Targets = new int[size * length];
        Mask = new float[size * length];
    }

    public int Size { get; }
    public int Length { get; }
    public int[] Inputs { get; }
    public int[] Targets { get; }
    public float[] Mask { get; }

    /// <summary>Number of real (unpadded) positions.</summary>
    public int ValidTokens => (int)Mask.Sum();
}

/// <summary>
/// Serves full batches forever, reshuffling at every epoch with a seed derived from (seed, epoch), so the order
/// depends only on the seed and the position, and <see cref="Seek"/> resumes exactly where a run stopped.
/// The last sequences of an epoch that do not fill a batch are skipped for that epoch (a different set each time).
/// </summary>
internal sealed class BatchIterator
{
    private readonly IReadOnlyList<TrainingSequence> _sequences;
    private readonly ulong _seed;
    private readonly bool _shuffle;
    private readonly int _padId;
    private int[] _order;
    private int _orderEpoch = -1;

    public BatchIterator(IReadOnlyList<TrainingSequence> sequences, int batchSize, ulong seed, bool shuffle = true, int padId = ByteTokenizer.EndOfText)
    {
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), "batch size must be positive");
        if (sequences.Count < batchSize)
            throw new ArgumentException($"{sequences.Count} sequences cannot fill one batch of {batchSize}", nameof(sequences));
        _sequences = sequences;
        BatchSize = batchSize;
        _seed = seed;
        _shuffle = shuffle;
        _padId = padId;
        _order = [];
    }

    public int BatchSize { get; }

    public int BatchesPerEpoch => _sequences.Count / BatchSize;

    /// <summary>Sequences the batches are drawn from (their order, and so every batch, depends on the count).</summary>
    public int SequenceCount => _sequences.Count;

    /// <summary>The position of the batch <see cref="Next"/> returns next.</summary>
    public BatchPosition Position { get; private set; }

    /// <summary>Continues from a saved position.</summary>
    public void Seek(BatchPosition position)
    {
        if (position.Epoch < 0 || position.Batch < 0 || position.Batch >= BatchesPerEpoch)
            throw new ArgumentOutOfRangeException(nameof(position), $"position {position} is outside [0, {BatchesPerEpoch}) batches per epoch");
        Position = position;
    }

    /// <summary>The next batch; it advances the position and wraps into the next epoch.</summary>
    public Batch Next()
    {
        int[] order = Order(Position.Epoch);
        int length = 0;
        for (int i = 0; i < BatchSize; i++) length = Math.Max(length, _sequences[order[Position.Batch * BatchSize + i]].Length);
        var batch = new Batch(BatchSize, length);
        Array.Fill(batch.Inputs, _padId);
        Array.Fill(batch.Targets, -1);
        for (int i = 0; i < BatchSize; i++)
        {
            TrainingSequence s = _sequences[order[Position.Batch * BatchSize + i]];
            s.Inputs.CopyTo(batch.Inputs, i * length);
            s.Targets.CopyTo(batch.Targets, i * length);
            s.Mask.CopyTo(batch.Mask, i * length);
        }
        Position = Position.Batch + 1 < BatchesPerEpoch ? Position with { Batch = Position.Batch + 1 } : new BatchPosition(Position.Epoch + 1, 0);
        return batch;
    }

    private int[] Order(int epoch)
    {
        if (_orderEpoch == epoch) return _order;
        _order = Enumerable.Range(0, _sequences.Count).ToArray();
        if (_shuffle) SplitMix64.Shuffle(_order, _seed * 0x9E3779B97F4A7C15UL + (ulong)epoch);
        _orderEpoch = epoch;
        return _order;
    }
}
