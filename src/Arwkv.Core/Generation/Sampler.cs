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
            SortBest(scores, _candidates.AsSpan(0, topK));
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

        // Nucleus over the whole vocabulary: the normalizer needs every weight, but only the head needs sorting,
        // so sort a growing prefix until it holds top-p of the mass.
        float top = TensorPrimitives.Max(scores);
        double all = 0;
        for (int i = 0; i < vocab; i++)
        {
            float w = MathF.Exp((scores[i] - top) * invT);
            _weights[i] = w;
            all += w;
        }
        double target = topP * all;
        for (int m = Math.Min(vocab, 64); ; m = Math.Min(vocab, m * 4))
        {
            if (m < vocab) SelectBest(scores, _candidates, m);
            SortBest(scores, _candidates.AsSpan(0, m));
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
            if (m == vocab)
            {
                // Rounding left the sum a hair short of the target: everything is in the nucleus.
                _count = vocab;
                _total = sum;
                return;
            }
        }
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

    /// <summary>Quickselect: rearranges <paramref name="ids"/> so that its first <paramref name="k"/> entries are the best, in no particular order.</summary>
    internal static void SelectBest(ReadOnlySpan<float> scores, Span<int> ids, int k)
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

    /// <summary>Sorts best first (insertion sort for short runs, else a quicksort on the same order).</summary>
    internal static void SortBest(ReadOnlySpan<float> scores, Span<int> ids)
    {
        while (ids.Length > 16)
        {
            int p = Partition(scores, ids, 0, ids.Length - 1);
            // Recurse into the smaller side, loop on the larger: stack depth stays logarithmic.
            if (p < ids.Length - 1 - p)
            {
                SortBest(scores, ids[..p]);
                ids = ids[(p + 1)..];
            }
            else
            {
                SortBest(scores, ids[(p + 1)..]);
                ids = ids[..p];
            }
        }
        for (int i = 1; i < ids.Length; i++)
        {
            int id = ids[i];
            int j = i - 1;
            while (j >= 0 && Before(scores, id, ids[j]))
            {
                ids[j + 1] = ids[j];
                j--;
            }
            ids[j + 1] = id;
        }
    }
}
