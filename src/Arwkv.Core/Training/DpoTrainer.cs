using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using Arwkv.IO;
using Arwkv.Training.Data;

namespace Arwkv.Training;

/// <summary>One preference example: a prompt and two tokenized responses, the preferred one first.</summary>
internal sealed record PreferencePair(int[] Prompt, int[] Chosen, int[] Rejected)
{
    /// <summary>
    /// Reads a .jsonl file of {"prompt": "...", "chosen": "...", "rejected": "..."} lines (blank lines skipped), tokenized
    /// as plain text with <paramref name="tokenizer"/> (the byte tokenizer when null).
    /// </summary>
    public static List<PreferencePair> Read(string path, ITrainingTokenizer? tokenizer = null)
    {
        tokenizer ??= ByteTokenizer.Instance;
        if (!File.Exists(path)) throw new CheckpointException(path, "preference file not found");
        var pairs = new List<PreferencePair>();
        int lineNumber = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using JsonDocument doc = JsonDocument.Parse(line);
                string Get(string name) => doc.RootElement.GetProperty(name).GetString()
                    ?? throw new CheckpointException(path, $"line {lineNumber}: '{name}' is null");
                pairs.Add(new PreferencePair(tokenizer.EncodeText(Get("prompt")), tokenizer.EncodeText(Get("chosen")),
                    tokenizer.EncodeText(Get("rejected"))));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new CheckpointException(path, $"line {lineNumber}: expected {{\"prompt\", \"chosen\", \"rejected\"}} strings ({e.Message})");
            }
        }
        if (pairs.Count == 0) throw new CheckpointException(path, "no preference pairs");
        return pairs;
    }
}

/// <summary>
/// Stage 3 DPO (sigmoid loss): each step takes one pair and has the <see cref="ITrainingBackend"/> run the policy and
/// the frozen reference on [prompt + chosen, prompt + rejected] as a batch of two, sum the log-probabilities of the
/// response tokens and minimize -log sigmoid(beta ((pc - rc) - (pr - rr))) (<see cref="CpuDpoBackend"/>). Sequences
/// longer than the planned length keep their first tokens.
/// </summary>
internal sealed class DpoTrainer : IDisposable
{
    private readonly ArwkvStudent<float> policy, reference;
    private readonly IReadOnlyList<PreferencePair> pairs;
    private readonly int seqLen;
    private readonly int[] inputs, targets;
    private readonly byte[] padMask, responseMask;
    private readonly List<double> losses = [];
    private int[] order = [];
    private int orderEpoch = -1;
    private string? referenceSha256;

    /// <summary>DPO of <paramref name="policy"/> against <paramref name="reference"/>; the arithmetic runs where <paramref name="backend"/> puts it (null: <see cref="CpuTrainingBackend.Factory"/>).</summary>
    public DpoTrainer(ArwkvStudent<float> policy, ArwkvStudent<float> reference, IReadOnlyList<PreferencePair> pairs, TrainerOptions options, double beta,
        ITrainingBackendFactory? backend = null)
    {
        if (policy.MaxBatch < 2 || reference.MaxBatch < 2) throw new ArgumentException("DPO runs chosen and rejected as one batch of two");
        if (pairs.Count == 0) throw new ArgumentException("no preference pairs");
        if (!(beta > 0)) throw new ArgumentOutOfRangeException(nameof(beta), "beta must be positive");
        if ((uint)options.EndOfText >= (uint)policy.Config.VocabSize)
            throw new ArgumentOutOfRangeException(nameof(options), $"end-of-text id {options.EndOfText} is outside the vocabulary of {policy.Config.VocabSize}");
        this.policy = policy;
        this.reference = reference;
        this.pairs = pairs;
        Beta = beta;
        Options = options;
        seqLen = Math.Min(options.SeqLen, Math.Min(policy.MaxSeqLen, reference.MaxSeqLen));
        inputs = new int[2 * seqLen]; targets = new int[2 * seqLen]; padMask = new byte[2 * seqLen]; responseMask = new byte[2 * seqLen];
        // What trains is decided before the backend plans its optimizer moments.
        policy.Parameters.SetFrozen(_ => true, false);
        if (options.FreezeMlp) policy.FreezeMlp();
        Backend = (backend ?? CpuTrainingBackend.Factory).CreateDpo(policy, reference, options, beta);
        Schedule = new LearningRateSchedule(options.LrMax, options.LrMin, Math.Min(options.WarmupSteps, options.Steps), options.Steps);
    }

    public double Beta { get; }
    public TrainerOptions Options { get; }
    /// <summary>Computes the DPO loss and gradient and steps the optimizer.</summary>
    public ITrainingBackend Backend { get; }
    public LearningRateSchedule Schedule { get; }
    public int Step { get; private set; }
    public IReadOnlyList<double> Losses => losses;
    /// <summary>The model being trained (the reference stays frozen); its values are current after <see cref="ITrainingBackend.DownloadParameters"/>.</summary>
    public ArwkvStudent<float> Policy => policy;
    public int PairCount => pairs.Count;

    /// <summary>
    /// SHA-256 (lowercase hex) of the frozen reference's float32 weights in parameter order: the reference's identity,
    /// which checkpoints record so that a resume against another reference is refused. It is computed once, on first
    /// use: one pass over 4 bytes per parameter, about 2 GB for a 0.5B student, a second or two with the SHA
    /// instructions of current x64 CPUs, small beside loading those weights.
    /// </summary>
    public string ReferenceSha256 => referenceSha256 ??= Sha256(reference.Parameters.Data);

    /// <summary>
    /// Restores the step counter and loss history; with the policy and optimizer restored by <see cref="TrainingCheckpoint"/>
    /// that is the whole state, since the pair order is a function of step and seed.
    /// </summary>
    internal void RestoreProgress(int step, IEnumerable<double> history)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        Step = step;
        losses.Clear();
        losses.AddRange(history);
        orderEpoch = -1;
    }

    /// <summary>
    /// The summed response log-probabilities (chosen, rejected) of <paramref name="model"/> on pair
    /// <paramref name="index"/>, computed on the host model as it is (not through the backend).
    /// </summary>
    public (double Chosen, double Rejected) LogProbs(ArwkvStudent<float> model, int index)
    {
        Fill(pairs[index]);
        Span<float> logits = model.Forward(inputs, padMask, 2, seqLen);
        return CpuDpoBackend.ResponseLogProbs(logits, targets, responseMask, seqLen, model.Config.VocabSize);
    }

    public double TrainStep()
    {
        int epoch = Step / pairs.Count;
        if (epoch != orderEpoch)
        {
            order = Enumerable.Range(0, pairs.Count).ToArray();
            SplitMix64.Shuffle(order, Options.Seed * 0x9E3779B97F4A7C15UL + (ulong)epoch);
            orderEpoch = epoch;
        }
        Fill(pairs[order[Step % pairs.Count]]);
        double loss = Backend.Loss(new TrainingBatch(inputs, targets, padMask, 2, seqLen, responseMask), backward: true);
        Backend.Step(Schedule.At(Step));
        Step++;
        losses.Add(loss);
        return loss;
    }

    public void Dispose() => Backend.Dispose();

    private static string Sha256(float[] data)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        // In slices: a 0.5B model's weights are more bytes than one span can hold.
        const int Slice = 1 << 20;
        for (int i = 0; i < data.Length; i += Slice)
            sha.AppendData(MemoryMarshal.AsBytes(data.AsSpan(i, Math.Min(Slice, data.Length - i))));
        return System.Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    // Row r: tokens = prompt + response (+ the tokenizer's end of text, which the policy learns to emit), cut to
    // seqLen + 1; inputs = tokens[..^1], targets = tokens[1..].
    // Response mask: the targets that are response tokens; padding mask: the real positions.
    private void Fill(PreferencePair pair)
    {
        int endOfText = Options.EndOfText;
        Array.Fill(inputs, endOfText);
        Array.Fill(targets, 0);
        Array.Clear(padMask);
        Array.Clear(responseMask);
        for (int row = 0; row < 2; row++)
        {
            int[] response = row == 0 ? pair.Chosen : pair.Rejected;
            int total = Math.Min(seqLen + 1, pair.Prompt.Length + response.Length + 1);
            int Token(int i) => i < pair.Prompt.Length ? pair.Prompt[i] : i - pair.Prompt.Length < response.Length ? response[i - pair.Prompt.Length] : endOfText;
            for (int t = 0; t + 1 < total; t++)
            {
                inputs[row * seqLen + t] = Token(t);
                targets[row * seqLen + t] = Token(t + 1);
                padMask[row * seqLen + t] = 1;
                responseMask[row * seqLen + t] = t + 1 >= pair.Prompt.Length ? (byte)1 : (byte)0;
            }
        }
    }
}
