using System.Diagnostics;
using Arwkv.Training.Data;
using Arwkv.Training.Layers;

namespace Arwkv.Training;

/// <summary>What a <see cref="Trainer"/> optimizes.</summary>
internal enum TrainingStage
{
    /// <summary>The demo teacher itself: next-token cross-entropy on the Qwen2 model.</summary>
    Teacher = 0,
    /// <summary>Stage 1: per-layer attention alignment; only the time mixes train.</summary>
    Alignment = 1,
    /// <summary>Stage 2: KL(teacher || student) over the full vocabulary (or the teacher's top k); every parameter (MLP optionally frozen) trains.</summary>
    Distillation = 2,
    /// <summary>Stage 3: supervised fine-tuning (cross-entropy) of the student alone.</summary>
    Sft = 3,
}

/// <summary>Optimization settings of one training run.</summary>
internal sealed record TrainerOptions
{
    public int Steps { get; init; } = 100;
    public double LrMax { get; init; } = 1e-3;
    public double LrMin { get; init; } = 1e-4;
    public int WarmupSteps { get; init; } = 10;
    public int BatchSize { get; init; } = 8;
    public int SeqLen { get; init; } = 128;
    public ulong Seed { get; init; } = 1;
    public bool FreezeMlp { get; init; }
    public double WeightDecay { get; init; } = 0.1;
    public double ClipNorm { get; init; } = 1.0;
    /// <summary>
    /// Stage 2 only: 0 (or at least the vocabulary size) for the KL against the teacher's full distribution; K > 0 for
    /// the KL against the teacher renormalized over its K most likely tokens per position
    /// (<see cref="Layers.Losses.TopKKlForward{TF}"/>), as when teacher logits are stored top-k.
    /// </summary>
    public int TeacherTopK { get; init; }
    /// <summary>
    /// The run's tokenizer's &lt;|endoftext|&gt;: the input of padded batch positions and, for DPO, the token that ends
    /// every response. Padding is masked, so there it never changes a loss, but it must still be a real id of that
    /// tokenizer: the byte tokenizer's 256, the default, is an ordinary token of a BPE vocabulary.
    /// </summary>
    public int EndOfText { get; init; } = ByteTokenizer.EndOfText;
}

/// <summary>One progress report: the step just finished (1-based), its loss and the speed so far.</summary>
internal readonly record struct StepProgress(TrainingStage Stage, int Step, int TotalSteps, double Loss, double LearningRate,
    double TokensPerSecond, TimeSpan Eta);

/// <summary>
/// Runs one training stage: draws batches from a <see cref="BatchIterator"/>, has the <see cref="ITrainingBackend"/>
/// compute the stage's loss and gradient with the teacher and/or student, and steps its AdamW on the warm-up +
/// exponential-decay schedule. Everything that a step depends on (parameters, optimizer moments, step count, batch
/// position) is in <see cref="TrainingCheckpoint"/>, so a resumed run reproduces the uninterrupted one exactly, whichever
/// backend wrote the checkpoint and whichever reads it.
/// </summary>
internal sealed class Trainer : IDisposable
{
    private byte[] mask = [];
    private readonly List<double> losses = [];

    /// <summary>
    /// A run of <paramref name="stage"/> on <paramref name="train"/>; the arithmetic runs where
    /// <paramref name="backend"/> puts it (null: <see cref="CpuTrainingBackend.Factory"/>), on the given host models.
    /// </summary>
    public Trainer(TrainingStage stage, Qwen2Trainable<float>? teacher, ArwkvStudent<float>? student,
        IReadOnlyList<TrainingSequence> train, TrainerOptions options, ITrainingBackendFactory? backend = null)
    {
        if (options.Steps <= 0) throw new ArgumentOutOfRangeException(nameof(options), "steps must be positive");
        if (options.TeacherTopK < 0) throw new ArgumentOutOfRangeException(nameof(options), $"teacher top-k must be >= 0, got {options.TeacherTopK}");
        if (options.TeacherTopK > 0 && stage != TrainingStage.Distillation) throw new ArgumentException($"teacher top-k is a stage 2 (distillation) setting, not {stage}");
        if (stage != TrainingStage.Sft && teacher is null) throw new ArgumentException($"stage {stage} needs a teacher");
        if (stage != TrainingStage.Teacher && student is null) throw new ArgumentException($"stage {stage} needs a student");
        if (teacher is not null && student is not null && teacher.Config.VocabSize != student.Config.VocabSize)
            throw new ArgumentException($"teacher vocabulary {teacher.Config.VocabSize} differs from the student's {student.Config.VocabSize}");
        Stage = stage;
        Teacher = teacher;
        Student = student;
        Options = options;
        // What trains is decided here, before the backend plans its optimizer moments.
        if (student is not null && stage != TrainingStage.Teacher)
        {
            student.Parameters.SetFrozen(_ => true, false);
            if (stage == TrainingStage.Alignment) student.FreezeAllButTimeMix();
            else if (options.FreezeMlp) student.FreezeMlp();
        }
        Backend = (backend ?? CpuTrainingBackend.Factory).Create(stage, stage == TrainingStage.Sft ? null : teacher, stage == TrainingStage.Teacher ? null : student, options);
        Schedule = new LearningRateSchedule(options.LrMax, options.LrMin, Math.Min(options.WarmupSteps, options.Steps), options.Steps);
        Batches = new BatchIterator(train, options.BatchSize, options.Seed, padId: options.EndOfText);
    }

    public TrainingStage Stage { get; }
    public Qwen2Trainable<float>? Teacher { get; }
    public ArwkvStudent<float>? Student { get; }
    public TrainerOptions Options { get; }
    /// <summary>Computes losses and gradients and steps the optimizer.</summary>
    public ITrainingBackend Backend { get; }
    /// <summary>The trained model's host parameters (the teacher's or the student's); see <see cref="ITrainingBackend.Parameters"/>.</summary>
    public ParameterSet<float> Parameters => Backend.Parameters;
    public LearningRateSchedule Schedule { get; }
    public BatchIterator Batches { get; }

    /// <summary>Steps completed (also the index of the next step).</summary>
    public int Step { get; private set; }

    /// <summary>The training loss of every completed step.</summary>
    public IReadOnlyList<double> Losses => losses;

    /// <summary>Restores the step counter and loss history (the rest of a checkpoint is restored by <see cref="TrainingCheckpoint"/>).</summary>
    internal void RestoreProgress(int step, IEnumerable<double> history)
    {
        Step = step;
        losses.Clear();
        losses.AddRange(history);
    }

    /// <summary>One optimizer step on the next batch; returns its loss.</summary>
    public double TrainStep()
    {
        Batch batch = Batches.Next();
        double loss = Backend.Loss(ToTrainingBatch(batch), backward: true);
        if (!double.IsFinite(loss)) throw new InvalidOperationException($"{Stage} loss became {loss} at step {Step + 1}; lower the learning rate");
        Backend.Step(Schedule.At(Step));
        Step++;
        losses.Add(loss);
        return loss;
    }

    /// <summary>
    /// Mean loss of this stage over <paramref name="sequences"/> in order, at most <paramref name="maxBatches"/> whole
    /// batches, without touching the parameters, gradients, optimizer or the training batch order (so training goes on
    /// exactly as it would have).
    /// </summary>
    public double ValidationLoss(IReadOnlyList<TrainingSequence> sequences, int maxBatches = 2)
    {
        if (sequences.Count == 0) throw new ArgumentException("no validation sequences", nameof(sequences));
        var batches = new BatchIterator(sequences, Math.Min(Options.BatchSize, sequences.Count), seed: 0, shuffle: false, padId: Options.EndOfText);
        int count = Math.Max(1, Math.Min(maxBatches, batches.BatchesPerEpoch));
        double sum = 0;
        for (int i = 0; i < count; i++) sum += Backend.Loss(ToTrainingBatch(batches.Next()), backward: false);
        return sum / count;
    }

    /// <summary>
    /// Trains until <see cref="Step"/> reaches <paramref name="untilStep"/> (at most <see cref="TrainerOptions.Steps"/>),
    /// reporting every <paramref name="reportEvery"/> steps and at the end, and calling <paramref name="afterStep"/>
    /// (e.g. to checkpoint) after every step. On return <see cref="Parameters"/> hold the trained values.
    /// </summary>
    public void Run(int untilStep, Action<StepProgress>? progress = null, int reportEvery = 10, Action<Trainer>? afterStep = null,
        CancellationToken cancellationToken = default)
    {
        untilStep = Math.Min(untilStep, Options.Steps);
        var clock = Stopwatch.StartNew();
        int startStep = Step;
        long tokens = 0;
        while (Step < untilStep)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double lr = Schedule.At(Step);
            double loss = TrainStep();
            tokens += (long)Options.BatchSize * Options.SeqLen;
            afterStep?.Invoke(this);
            if (progress is not null && (Step % Math.Max(1, reportEvery) == 0 || Step == untilStep))
            {
                double seconds = clock.Elapsed.TotalSeconds;
                double perStep = seconds / (Step - startStep);
                progress(new StepProgress(Stage, Step, Options.Steps, loss, lr, tokens / Math.Max(seconds, 1e-9),
                    TimeSpan.FromSeconds(perStep * (untilStep - Step))));
            }
        }
        // Callers save or reuse the host models after a run (the next stage starts from them).
        Backend.DownloadParameters();
    }

    /// <summary>Makes <see cref="Parameters"/> hold the trained values (see <see cref="ITrainingBackend.DownloadParameters"/>); <see cref="Run"/> ends with it.</summary>
    public void DownloadParameters() => Backend.DownloadParameters();

    /// <summary>Writes the trained model (config.json and model.safetensors) to <paramref name="directory"/>, as it is now.</summary>
    public void SaveModel(string directory)
    {
        Backend.DownloadParameters();
        if (Stage == TrainingStage.Teacher) Teacher!.Save(directory);
        else ModelFiles.SaveStudent(directory, Student!);
    }

    public void Dispose() => Backend.Dispose();

    private TrainingBatch ToTrainingBatch(Batch batch) => new(batch.Inputs, batch.Targets, BuildMask(batch), batch.Size, batch.Length);

    // The backends take a byte mask, and none at all for a batch without padding (the common, faster case).
    private ReadOnlySpan<byte> BuildMask(Batch batch)
    {
        int n = batch.Size * batch.Length;
        if (batch.ValidTokens == n) return ReadOnlySpan<byte>.Empty;
        if (mask.Length < n) mask = new byte[n];
        for (int i = 0; i < n; i++) mask[i] = batch.Mask[i] != 0 ? (byte)1 : (byte)0;
        return mask.AsSpan(0, n);
    }
}
