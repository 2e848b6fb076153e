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
/// Runs one training stage: draws batches from a <see cref="BatchIterator"/>, computes the stage's loss and gradient
/// with the teacher and/or student, and steps AdamW on the warm-up + exponential-decay schedule. Everything that a
/// step depends on (parameters, optimizer moments, step count, batch position) is in <see cref="TrainingCheckpoint"/>,
/// so a resumed run reproduces the uninterrupted one exactly.
/// </summary>
internal sealed class Trainer
{
    private readonly float[] vocabScratch;
    private byte[] mask = [];
    private readonly List<double> losses = [];
    private int[] topIds = [];
    private float[] topLogits = [];

    public Trainer(TrainingStage stage, Qwen2Trainable<float>? teacher, ArwkvStudent<float>? student,
        IReadOnlyList<TrainingSequence> train, TrainerOptions options)
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
        Parameters = stage == TrainingStage.Teacher ? teacher!.Parameters : student!.Parameters;
        if (student is not null && stage != TrainingStage.Teacher)
        {
            student.Parameters.SetFrozen(_ => true, false);
            if (stage == TrainingStage.Alignment) student.FreezeAllButTimeMix();
            else if (options.FreezeMlp) student.FreezeMlp();
        }
        Optimizer = new AdamW<float>(Parameters, new AdamWOptions { WeightDecay = options.WeightDecay, ClipNorm = options.ClipNorm });
        Schedule = new LearningRateSchedule(options.LrMax, options.LrMin, Math.Min(options.WarmupSteps, options.Steps), options.Steps);
        Batches = new BatchIterator(train, options.BatchSize, options.Seed, padId: options.EndOfText);
        vocabScratch = new float[(teacher?.Config.VocabSize ?? student!.Config.VocabSize)];
    }

    public TrainingStage Stage { get; }
    public Qwen2Trainable<float>? Teacher { get; }
    public ArwkvStudent<float>? Student { get; }
    public TrainerOptions Options { get; }
    public ParameterSet<float> Parameters { get; }
    public AdamW<float> Optimizer { get; }
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
        Parameters.ZeroGrad();
        double loss = Loss(batch, backward: true);
        if (!double.IsFinite(loss)) throw new InvalidOperationException($"{Stage} loss became {loss} at step {Step + 1}; lower the learning rate");
        Optimizer.Step(Schedule.At(Step));
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
        for (int i = 0; i < count; i++) sum += Loss(batches.Next(), backward: false);
        return sum / count;
    }

    /// <summary>This stage's loss on <paramref name="batch"/>; with <paramref name="backward"/>, its gradient added into the parameters'.</summary>
    private double Loss(Batch batch, bool backward)
    {
        int b = batch.Size, t = batch.Length, n = b * t;
        ReadOnlySpan<byte> m = BuildMask(batch);
        double loss;
        switch (Stage)
        {
            case TrainingStage.Teacher:
            {
                Span<float> logits = Teacher!.Forward(batch.Inputs, b, t);
                int v = Teacher.Config.VocabSize;
                loss = Layers.Losses.CrossEntropyForward<float>(logits, batch.Targets, m, n, v);
                if (!backward) break;
                Layers.Losses.CrossEntropyBackward<float>(Teacher.DLogits, logits, batch.Targets, m, 1.0, vocabScratch, n, v);
                Teacher.Backward();
                break;
            }
            case TrainingStage.Alignment:
            {
                // Padding sits at the end of a row and attention is causal, so the teacher's real positions ignore it.
                Teacher!.Forward(batch.Inputs, b, t, computeLogits: false);
                var inputs = new ReadOnlyMemory<float>[Teacher.Config.NumLayers];
                var outputs = new ReadOnlyMemory<float>[Teacher.Config.NumLayers];
                for (int l = 0; l < inputs.Length; l++) { inputs[l] = Teacher.AttentionInput(l); outputs[l] = Teacher.AttentionOutput(l); }
                loss = Student!.ForwardAlignment(inputs, outputs, m, b, t);
                if (backward) Student.BackwardAlignment(inputs, outputs);
                break;
            }
            case TrainingStage.Distillation:
            {
                Span<float> teacherLogits = Teacher!.Forward(batch.Inputs, b, t);
                Span<float> studentLogits = Student!.Forward(batch.Inputs, m, b, t);
                int v = Student.Config.VocabSize, k = Options.TeacherTopK;
                if (k > 0 && k < v)
                {
                    SelectTopK(teacherLogits, n, v, k);
                    ReadOnlySpan<int> ids = topIds.AsSpan(0, n * k);
                    ReadOnlySpan<float> top = topLogits.AsSpan(0, n * k);
                    loss = Layers.Losses.TopKKlForward<float>(studentLogits, ids, top, m, vocabScratch, n, v, k);
                    if (backward) Layers.Losses.TopKKlBackward<float>(Student.DLogits, studentLogits, ids, top, m, 1.0, vocabScratch, n, v, k);
                }
                else
                {
                    loss = Layers.Losses.KlForward<float>(studentLogits, teacherLogits, m, vocabScratch, n, v);
                    if (backward) Layers.Losses.KlBackward<float>(Student.DLogits, studentLogits, teacherLogits, m, 1.0, vocabScratch, n, v);
                }
                if (backward) Student.Backward();
                break;
            }
            case TrainingStage.Sft:
            {
                Span<float> logits = Student!.Forward(batch.Inputs, m, b, t);
                int v = Student.Config.VocabSize;
                loss = Layers.Losses.CrossEntropyForward<float>(logits, batch.Targets, m, n, v);
                if (!backward) break;
                Layers.Losses.CrossEntropyBackward<float>(Student.DLogits, logits, batch.Targets, m, 1.0, vocabScratch, n, v);
                Student.Backward();
                break;
            }
            default: throw new InvalidOperationException($"unknown stage {Stage}");
        }
        return loss;
    }

    /// <summary>
    /// Trains until <see cref="Step"/> reaches <paramref name="untilStep"/> (at most <see cref="TrainerOptions.Steps"/>),
    /// reporting every <paramref name="reportEvery"/> steps and at the end, and calling <paramref name="afterStep"/>
    /// (e.g. to checkpoint) after every step.
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
    }

    /// <summary>
    /// The <paramref name="k"/> largest logits of every row of <paramref name="logits"/> [N, V] and their ids, into
    /// <see cref="topIds"/> / <see cref="topLogits"/> [N, K] (unordered within a row): a min-heap of the best K seen,
    /// O(V log K) per row and no allocation once the buffers have grown.
    /// </summary>
    private void SelectTopK(ReadOnlySpan<float> logits, int n, int v, int k)
    {
        if (topIds.Length < n * k)
        {
            topIds = new int[n * k];
            topLogits = new float[n * k];
        }
        for (int row = 0; row < n; row++)
        {
            ReadOnlySpan<float> x = logits.Slice(row * v, v);
            Span<int> ids = topIds.AsSpan(row * k, k);
            Span<float> vals = topLogits.AsSpan(row * k, k);
            for (int i = 0; i < k; i++)
            {
                ids[i] = i;
                vals[i] = x[i];
                SiftUp(ids, vals, i);
            }
            for (int i = k; i < v; i++)
            {
                if (!(x[i] > vals[0])) continue;
                ids[0] = i;
                vals[0] = x[i];
                SiftDown(ids, vals, k);
            }
        }

        static void SiftUp(Span<int> ids, Span<float> vals, int i)
        {
            while (i > 0)
            {
                int parent = (i - 1) / 2;
                if (!(vals[i] < vals[parent])) break;
                (vals[i], vals[parent]) = (vals[parent], vals[i]);
                (ids[i], ids[parent]) = (ids[parent], ids[i]);
                i = parent;
            }
        }

        static void SiftDown(Span<int> ids, Span<float> vals, int k)
        {
            int i = 0;
            while (true)
            {
                int left = 2 * i + 1, right = left + 1, smallest = i;
                if (left < k && vals[left] < vals[smallest]) smallest = left;
                if (right < k && vals[right] < vals[smallest]) smallest = right;
                if (smallest == i) return;
                (vals[i], vals[smallest]) = (vals[smallest], vals[i]);
                (ids[i], ids[smallest]) = (ids[smallest], ids[i]);
                i = smallest;
            }
        }
    }

    private ReadOnlySpan<byte> BuildMask(Batch batch)
    {
        int n = batch.Size * batch.Length;
        if (batch.ValidTokens == n) return ReadOnlySpan<byte>.Empty;
        if (mask.Length < n) mask = new byte[n];
        for (int i = 0; i < n; i++) mask[i] = batch.Mask[i] != 0 ? (byte)1 : (byte)0;
        return mask.AsSpan(0, n);
    }
}
