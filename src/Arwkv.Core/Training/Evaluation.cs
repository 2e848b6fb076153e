using Arwkv.Training.Data;

namespace Arwkv.Training;

/// <summary>Validation metrics of a model, and of how closely it follows a teacher when one is given.</summary>
internal sealed record EvaluationResult(double Perplexity, double MeanKl, double Top1Agreement, long Tokens)
{
    /// <summary>Mean next-token cross-entropy in nats.</summary>
    public double CrossEntropy => Math.Log(Perplexity);
}

/// <summary>
/// Scores checkpoints through the inference path (<see cref="LanguageModel"/> loaded from disk), so what is measured
/// is exactly what `arwkv generate` runs: perplexity exp(mean -log p(target)), and with a teacher the mean
/// KL(teacher || model) per token and how often both pick the same most likely token.
/// </summary>
internal static class Evaluation
{
    public static EvaluationResult Evaluate(LanguageModel model, LanguageModel? teacher, IReadOnlyList<TrainingSequence> sequences)
    {
        if (sequences.Count == 0) throw new ArgumentException("no validation sequences");
        if (teacher is not null && teacher.VocabSize != model.VocabSize)
            throw new ArgumentException($"teacher vocabulary {teacher.VocabSize} differs from the model's {model.VocabSize}");
        int v = model.VocabSize, maxLength = sequences.Max(s => s.ValidLength);
        var logits = new float[maxLength * v];
        var teacherLogits = teacher is null ? [] : new float[maxLength * v];
        double ce = 0, kl = 0;
        long tokens = 0, agree = 0;
        foreach (TrainingSequence s in sequences)
        {
            int n = s.ValidLength;
            if (n == 0) continue;
            model.Forward(s.Inputs.AsSpan(0, n), model.CreateState(), logits, LogitsScope.All);
            teacher?.Forward(s.Inputs.AsSpan(0, n), teacher.CreateState(), teacherLogits, LogitsScope.All);
            for (int t = 0; t < n; t++)
            {
                ReadOnlySpan<float> row = logits.AsSpan(t * v, v);
                double lse = LogSumExp(row);
                ce += lse - row[s.Targets[t]];
                if (teacher is not null)
                {
                    ReadOnlySpan<float> teacherRow = teacherLogits.AsSpan(t * v, v);
                    double teacherLse = LogSumExp(teacherRow), sum = 0;
                    for (int i = 0; i < v; i++)
                    {
                        double lt = teacherRow[i] - teacherLse;
                        sum += Math.Exp(lt) * (lt - (row[i] - lse));
                    }
                    kl += sum;
                    if (ArgMax(row) == ArgMax(teacherRow)) agree++;
                }
                tokens++;
            }
        }
        return new EvaluationResult(Math.Exp(ce / tokens), teacher is null ? double.NaN : kl / tokens,
            teacher is null ? double.NaN : (double)agree / tokens, tokens);
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/> by <paramref name="maxTokens"/> tokens (stops early at an end-of-sequence id).</summary>
    public static int[] Greedy(LanguageModel model, IReadOnlyList<int> prompt, int maxTokens)
    {
        var logits = new float[model.VocabSize];
        ModelState state = model.CreateState();
        model.Forward(prompt.ToArray(), state, logits, LogitsScope.Last);
        var output = new List<int>(maxTokens);
        var one = new int[1];
        for (int i = 0; i < maxTokens; i++)
        {
            int next = ArgMax(logits);
            if (model.EosTokenIds.Contains(next)) break;
            output.Add(next);
            one[0] = next;
            model.Forward(one, state, logits, LogitsScope.Last);
        }
        return output.ToArray();
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    private static double LogSumExp(ReadOnlySpan<float> x)
    {
        double max = double.NegativeInfinity, sum = 0;
        foreach (float f in x) max = Math.Max(max, f);
        foreach (float f in x) sum += Math.Exp(f - max);
        return max + Math.Log(sum);
    }
}
