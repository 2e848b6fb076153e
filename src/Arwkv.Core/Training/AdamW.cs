using System.Numerics;
using Arwkv.Training.Layers;

namespace Arwkv.Training;

/// <summary>AdamW settings; the defaults are the ARWKV recipe's (ARWKV.md section 5).</summary>
internal sealed record AdamWOptions
{
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.95;
    public double Eps { get; init; } = 1e-8;
    /// <summary>Decoupled decay, applied only to tensors with <see cref="ParameterTensor.Decay"/>.</summary>
    public double WeightDecay { get; init; } = 0.1;
    /// <summary>Clip the global gradient norm (over unfrozen tensors) to this; 0 or less disables clipping.</summary>
    public double ClipNorm { get; init; } = 1.0;
}

/// <summary>
/// Linear warm-up then exponential decay: lr(s) = lrMax (s + 1) / warmup for s &lt; warmup, then
/// lrMax (lrMin / lrMax)^p with p = (s - warmup) / (total - warmup) clamped to [0, 1].
/// </summary>
internal sealed record LearningRateSchedule(double LrMax, double LrMin, int WarmupSteps, int TotalSteps)
{
    public double At(int step)
    {
        if (step < WarmupSteps) return LrMax * (step + 1) / WarmupSteps;
        double progress = TotalSteps > WarmupSteps ? Math.Clamp((double)(step - WarmupSteps) / (TotalSteps - WarmupSteps), 0, 1) : 1;
        return LrMax * Math.Pow(LrMin / LrMax, progress);
    }
}

/// <summary>
/// AdamW (Loshchilov and Hutter, as torch.optim.AdamW): with g the (clipped) gradient and t the 1-based step,
/// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr wd p (decaying tensors only);
/// p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). Moments are kept in float64 for any parameter type, and
/// only for the tensors that are trainable when the optimizer is built: stage 1 trains the time mix alone, and
/// float64 moments for every tensor of a 0.5B student would be 11 GB.
/// </summary>
internal sealed class AdamW<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    private readonly ParameterSet<TF> parameters;
    private readonly double[] m, v;
    private readonly bool[] trainableAtStart;

    public AdamW(ParameterSet<TF> parameters, AdamWOptions? options = null)
    {
        this.parameters = parameters;
        Options = options ?? new AdamWOptions();
        // Work items: trainable tensors cut into pieces of at most ChunkSize, so that big and small tensors balance
        // over cores; each piece knows where its moments live in the compact buffers.
        var list = new List<(int, int, ParameterTensor, int)>();
        trainableAtStart = new bool[parameters.Tensors.Count];
        int moments = 0;
        for (int k = 0; k < parameters.Tensors.Count; k++)
        {
            ParameterTensor t = parameters.Tensors[k];
            if (t.Frozen) continue;
            trainableAtStart[k] = true;
            for (int start = 0; start < t.Length; start += ChunkSize)
                list.Add((t.Offset + start, Math.Min(ChunkSize, t.Length - start), t, moments + start));
            moments += t.Length;
        }
        m = new double[moments];
        v = new double[moments];
        chunks = [.. list];
        partialNorms = new double[chunks.Length];
    }

    private const int ChunkSize = 1 << 15;
    private readonly (int Offset, int Length, ParameterTensor Tensor, int Moment)[] chunks;
    private readonly double[] partialNorms;

    public AdamWOptions Options { get; }
    public int StepCount { get; private set; }

    /// <summary>Global L2 norm of the unfrozen gradients.</summary>
    public double GradientNorm()
    {
        RequireNoTensorUnfrozenSinceStart();
        double[] partial = partialNorms;
        Array.Clear(partial);
        TF[] grad = parameters.Grad;
        Work.For(chunks.Length, ChunkSize, i =>
        {
            (int offset, int length, ParameterTensor tensor, _) = chunks[i];
            if (tensor.Frozen) return;
            double sum = 0;
            for (int j = offset; j < offset + length; j++)
            {
                double g = double.CreateTruncating(grad[j]);
                sum += g * g;
            }
            partial[i] = sum;
        });
        return Math.Sqrt(partial.Sum());
    }

    private void RequireNoTensorUnfrozenSinceStart()
    {
        for (int k = 0; k < trainableAtStart.Length; k++)
            if (!trainableAtStart[k] && !parameters.Tensors[k].Frozen)
                throw new InvalidOperationException(
                    $"'{parameters.Tensors[k].Name}' was unfrozen after the optimizer was built: it has no moments; build a new optimizer");
    }

    /// <summary>
    /// Writes the step count and the moments of the trainable tensors (for a training checkpoint): the count, then m,
    /// then v, as float64.
    /// </summary>
    public void SaveState(BinaryWriter writer)
    {
        writer.Write(StepCount);
        writer.Write(m.Length);
        foreach (double x in m) writer.Write(x);
        foreach (double x in v) writer.Write(x);
    }

    /// <summary>
    /// Restores what <see cref="SaveState"/> wrote for the same trainable tensors; also reads the older layout that held
    /// moments for every tensor (frozen ones all zero), keeping the trainable tensors' part.
    /// </summary>
    public void LoadState(BinaryReader reader)
    {
        int step = reader.ReadInt32(), count = reader.ReadInt32();
        if (step < 0) throw new InvalidDataException($"optimizer state has step {step}");
        if (count == m.Length)
        {
            for (int i = 0; i < count; i++) m[i] = reader.ReadDouble();
            for (int i = 0; i < count; i++) v[i] = reader.ReadDouble();
        }
        else if (count == parameters.Count)
        {
            foreach (double[] moments in new[] { m, v })
            {
                int compact = 0;
                foreach (ParameterTensor t in parameters.Tensors)
                {
                    bool keep = !t.Frozen;
                    for (int i = 0; i < t.Length; i++)
                    {
                        double x = reader.ReadDouble();
                        if (keep) moments[compact + i] = x;
                    }
                    if (keep) compact += t.Length;
                }
            }
        }
        else throw new InvalidDataException($"optimizer state holds {count} moments; this model trains {m.Length} parameters");
        StepCount = step;
    }

    /// <summary>One update at learning rate <paramref name="lr"/>; returns the gradient norm before clipping.</summary>
    public double Step(double lr)
    {
        double norm = GradientNorm();
        double clip = Options.ClipNorm > 0 && norm > Options.ClipNorm ? Options.ClipNorm / norm : 1;
        StepCount++;
        double b1 = Options.Beta1, b2 = Options.Beta2, eps = Options.Eps, weightDecay = Options.WeightDecay;
        double c1 = 1 - Math.Pow(b1, StepCount), c2 = 1 - Math.Pow(b2, StepCount);
        TF[] data = parameters.Data, grad = parameters.Grad;
        double[] m1 = m, m2 = v;
        Work.For(chunks.Length, ChunkSize * 8, i =>
        {
            (int offset, int length, ParameterTensor tensor, int moment) = chunks[i];
            if (tensor.Frozen) return;
            double decay = tensor.Decay ? 1 - lr * weightDecay : 1;
            for (int j = offset, q = moment; j < offset + length; j++, q++)
            {
                double g = double.CreateTruncating(grad[j]) * clip;
                m1[q] = b1 * m1[q] + (1 - b1) * g;
                m2[q] = b2 * m2[q] + (1 - b2) * g * g;
                double p = double.CreateTruncating(data[j]) * decay;
                p -= lr * (m1[q] / c1) / (Math.Sqrt(m2[q] / c2) + eps);
                data[j] = TF.CreateTruncating(p);
            }
        });
        return norm;
    }
}
