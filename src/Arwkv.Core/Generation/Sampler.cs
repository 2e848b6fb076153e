using System.Numerics.Tensors;

namespace Arwkv.Generation;

/// <summary>
/// Chooses the next token from a logits vector by <see cref="SamplingOptions"/>. Every buffer is allocated once
/// here, so sampling a token allocates nothing. Not thread-safe: one sampler per generation.
/// </summary>
public sealed class Sampler
{
    private readonly int _vocabSize;
    private readonly float[] _scores;      // penalized logits, by token id
    private readonly float[] _weights;     // exp((score - max) / T), by token id (nucleus without top-k only)
    private readonly int[] _candidates;    // token ids, best first once sorted
    private readonly float[] _sortKeys;    // -score of _candidates[i], contiguous for a fast sort
    private readonly float[] _probs;       // unnormalized weight of _candidates[i]
    private readonly int[] _seenStamp;     // dedup of the penalty window without clearing a set per token
    private int _stamp;
    private readonly Random _random;
    private int _count;
    private double _total;

    /// <summary>Creates a sampler for logits of length <paramref name="vocabSize"/>.</summary>
    /// <exception cref="ArgumentException">Invalid options or vocabulary size.</exception>
    public Sampler(int vocabSize, SamplingOptions? options = null)
    {
        if (vocabSize <= 0) throw new ArgumentException($"vocabulary size must be positive, got {vocabSize}", nameof(vocabSize));
        Options = options ?? new SamplingOptions();
        Options.Validate();
        _vocabSize = vocabSize;
        _scores = new float[vocabSize];
        _candidates = new int[vocabSize];
        _probs = new float[vocabSize];
        _sortKeys = Options.Temperature > 0 && (Options.TopK > 0 || Options.TopP < 1) ? new float[vocabSize] : [];
        _weights = Options.TopP < 1 && (Options.TopK == 0 || Options.TopK >= vocabSize) ? new float[vocabSize] : [];
        _seenStamp = Options.RepetitionPenalty != 1f ? new int[vocabSize] : [];
        _random = Options.Seed is long seed ? new Random(unchecked((int)(seed ^ (seed >> 32)))) : new Random();
    }

    /// <summary>The options this sampler applies.</summary>
    public SamplingOptions Options { get; }

    /// <summary>Chooses a token.</summary>
    /// <param name="logits">The model's logits, [vocabSize]; not modified.</param>
    /// <param name="previousTokens">Tokens seen so far, oldest first (for the repetition penalty; the last <see cref="SamplingOptions.RepetitionWindow"/> are used).</param>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> previousTokens = default)
    {
        ReadOnlySpan<float> scores = Penalize(logits, previousTokens);
        if (Options.Temperature == 0) return TensorPrimitives.IndexOfMax(scores);
        BuildDistribution(scores);
        return Draw();
    }

    /// <summary>
    /// The distribution <see cref="Sample"/> draws from, for inspection: writes candidate ids and their
    /// probabilities (best first when top-k or top-p applies) and returns how many there are.
    /// </summary>
    internal int GetDistribution(ReadOnlySpan<float> logits, ReadOnlySpan<int> previousTokens, Span<int> ids, Span<float> probabilities)
    {
        ReadOnlySpan<float> scores = Penalize(logits, previousTokens);
        if (Options.Temperature == 0)
        {
            ids[0] = TensorPrimitives.IndexOfMax(scores);
            probabilities[0] = 1;
            return 1;
        }
        BuildDistribution(scores);
        for (int i = 0; i < _count; i++)
        {
            ids[i] = _candidates[i];
            probabilities[i] = (float)(_probs[i] / _total);
        }
        return _count;
    }

    /// <summary>The penalized logits (a copy only when a penalty applies).</summary>
    private ReadOnlySpan<float> Penalize(ReadOnlySpan<float> logits, ReadOnlySpan<int> previousTokens)
    {
        if (logits.Length != _vocabSize) throw new ArgumentException($"expected {_vocabSize} logits, got {logits.Length}", nameof(logits));
        float penalty = Options.RepetitionPenalty;
        if (penalty == 1f || previousTokens.IsEmpty) return logits;
        logits.CopyTo(_scores);
        int window = Options.RepetitionWindow;
        if (window > 0 && previousTokens.Length > window) previousTokens = previousTokens[^window..];
        if (++_stamp == int.MaxValue)
        {
            Array.Clear(_seenStamp);
            _stamp = 1;
        }
        foreach (int id in previousTokens)
        {
            if ((uint)id >= (uint)_vocabSize || _seenStamp[id] == _stamp) continue;
            _seenStamp[id] = _stamp;
            float s = _scores[id];
            _scores[id] = s > 0 ? s / penalty : s * penalty;
        }
        return _scores;
    }

    private void BuildDistribution(ReadOnlySpan<float> scores)
    {
        int vocab = _vocabSize;
        for (int i = 0; i < vocab; i++) _candidates[i] = i;
        float invT = 1f / Options.Temperature;
        int topK = Options.TopK;
        float topP = Options.TopP;

        if (topK > 0 && topK < vocab)
        {
            SelectBest(scores, _candidates, topK);
            SortCandidates(scores, topK);
            WeighSorted(scores, topK, invT);
            if (topP < 1) CutNucleus(topP);
            return;
        }

        if (topP >= 1)
        {
            // Plain softmax over the whole vocabulary: no ordering needed to draw from it.
            float max = TensorPrimitives.Max(scores);
            double total = 0;
            for (int i = 0; i < vocab; i++)
            {
                float w = MathF.Exp((scores[i] - max) * invT);
                _probs[i] = w;
                total += w;
            }
            _count = vocab;
            _total = total;
            return;
        }

        // Nucleus over the whole vocabulary: the normalizer needs every weight, but only the head needs sorting.
        float top = TensorPrimitives.Max(scores);
        double all = 0;
        for (int i = 0; i < vocab; i++)
        {
            float w = MathF.Exp((scores[i] - top) * invT);
            _weights[i] = w;
            all += w;
        }
        double target = topP * all;
        // Grow the selected head until it holds the target mass (summing needs no order), then sort only that head.
        int m = Math.Min(vocab, 64);
        while (true)
        {
            if (m < vocab) SelectBest(scores, _candidates, m);
            double head = 0;
            for (int i = 0; i < m; i++) head += _weights[_candidates[i]];
            if (head >= target || m == vocab) break;
            m = Math.Min(vocab, m * 4);
        }
        SortCandidates(scores, m);
        double sum = 0;
        for (int i = 0; i < m; i++)
        {
            float w = _weights[_candidates[i]];
            _probs[i] = w;
            sum += w;
            if (sum >= target)
            {
                _count = i + 1;
                _total = sum;
                return;
            }
        }
        // Rounding left the sum a hair short of the target: the whole head is the nucleus.
        _count = m;
        _total = sum;
    }

    private void WeighSorted(ReadOnlySpan<float> scores, int count, float invT)
    {
        float max = scores[_candidates[0]];
        double total = 0;
        for (int i = 0; i < count; i++)
        {
            float w = MathF.Exp((scores[_candidates[i]] - max) * invT);
            _probs[i] = w;
            total += w;
        }
        _count = count;
        _total = total;
    }

    /// <summary>Keeps the shortest sorted prefix of the candidates whose probability reaches <paramref name="topP"/>.</summary>
    private void CutNucleus(float topP)
    {
        double target = topP * _total;
        double sum = 0;
        for (int i = 0; i < _count; i++)
        {
            sum += _probs[i];
            if (sum >= target)
            {
                _count = i + 1;
                _total = sum;
                return;
            }
        }
        _total = sum;
    }

    private int Draw()
    {
        double u = _random.NextDouble() * _total;
        double sum = 0;
        for (int i = 0; i < _count; i++)
        {
            sum += _probs[i];
            if (u < sum) return _candidates[i];
        }
        // u landed in the rounding gap at the very top: the last candidate with any weight.
        for (int i = _count - 1; i > 0; i--)
            if (_probs[i] > 0) return _candidates[i];
        return _candidates[0];
    }

    /// <summary>Higher score first; equal scores by lower id, so selection and sorting are deterministic and agree with argmax.</summary>
    private static bool Before(ReadOnlySpan<float> scores, int a, int b)
    {
        float sa = scores[a], sb = scores[b];
        return sa > sb || (sa == sb && a < b);
    }

    /// <summary>Rearranges <paramref name="ids"/> so that its first <paramref name="k"/> entries are the best, in no particular order.</summary>
    internal static void SelectBest(ReadOnlySpan<float> scores, Span<int> ids, int k)
    {
        if (k >= ids.Length) return;
        if (k <= 1024) SelectBestByHeap(scores, ids, k);
        else QuickSelect(scores, ids, k);
    }

    /// <summary>
    /// Keeps a heap of the best k seen so far with the worst at the root: almost every other id is rejected by
    /// one comparison with the root, so this is a single cheap pass for the small k of top-k sampling.
    /// </summary>
    private static void SelectBestByHeap(ReadOnlySpan<float> scores, Span<int> ids, int k)
    {
        Span<int> heap = ids[..k];
        for (int i = k / 2 - 1; i >= 0; i--) SiftDown(scores, heap, i);
        for (int i = k; i < ids.Length; i++)
        {
            int id = ids[i];
            if (!Before(scores, id, heap[0])) continue;
            ids[i] = heap[0];
            heap[0] = id;
            SiftDown(scores, heap, 0);
        }
    }

    private static void SiftDown(ReadOnlySpan<float> scores, Span<int> heap, int i)
    {
        while (true)
        {
            int worst = i, left = 2 * i + 1, right = left + 1;
            if (left < heap.Length && Before(scores, heap[worst], heap[left])) worst = left;
            if (right < heap.Length && Before(scores, heap[worst], heap[right])) worst = right;
            if (worst == i) return;
            (heap[i], heap[worst]) = (heap[worst], heap[i]);
            i = worst;
        }
    }

    private static void QuickSelect(ReadOnlySpan<float> scores, Span<int> ids, int k)
    {
        int lo = 0, hi = ids.Length - 1, target = k - 1;
        while (lo < hi)
        {
            int p = Partition(scores, ids, lo, hi);
            if (p == target) return;
            if (p < target) lo = p + 1;
            else hi = p - 1;
        }
    }

    private static int Partition(ReadOnlySpan<float> scores, Span<int> ids, int lo, int hi)
    {
        int mid = lo + ((hi - lo) >> 1);
        // Median of three moved to hi: sorted or constant inputs stay O(n log n).
        if (Before(scores, ids[mid], ids[lo])) (ids[mid], ids[lo]) = (ids[lo], ids[mid]);
        if (Before(scores, ids[hi], ids[lo])) (ids[hi], ids[lo]) = (ids[lo], ids[hi]);
        if (Before(scores, ids[mid], ids[hi])) (ids[mid], ids[hi]) = (ids[hi], ids[mid]);
        int pivot = ids[hi];
        int store = lo;
        for (int i = lo; i < hi; i++)
        {
            if (Before(scores, ids[i], pivot))
            {
                (ids[i], ids[store]) = (ids[store], ids[i]);
                store++;
            }
        }
        (ids[store], ids[hi]) = (ids[hi], ids[store]);
        return store;
    }

    /// <summary>
    /// Sorts the first <paramref name="count"/> candidates best first, equal scores by lower id. The scores are
    /// gathered into a contiguous key array first: sorting through the ids' random accesses is several times slower.
    /// </summary>
    private void SortCandidates(ReadOnlySpan<float> scores, int count)
    {
        Span<int> ids = _candidates.AsSpan(0, count);
        Span<float> keys = _sortKeys.AsSpan(0, count);
        for (int i = 0; i < count; i++) keys[i] = -scores[ids[i]];
        keys.Sort(ids);
        // The sort is not stable: put runs of equal scores in id order so the result is fully determined.
        for (int i = 0; i < count;)
        {
            int j = i + 1;
            while (j < count && keys[j] == keys[i]) j++;
            if (j - i > 1) ids[i..j].Sort();
            i = j;
        }
    }
}
