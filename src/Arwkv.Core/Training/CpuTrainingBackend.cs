using Arwkv.Training.Layers;

namespace Arwkv.Training;

/// <summary>
/// The CPU reference backend: the host models compute in place (their <see cref="ParameterSet{TF}"/> is the master
/// copy, so nothing is ever copied) and <see cref="AdamW{TF}"/> steps them. <see cref="Factory"/> builds one per
/// objective; the losses are those of <see cref="Losses"/>.
/// </summary>
internal abstract class CpuTrainingBackend : ITrainingBackend
{
    private readonly AdamW<float> optimizer;

    private protected CpuTrainingBackend(ParameterSet<float> parameters, TrainerOptions options)
    {
        Parameters = parameters;
        optimizer = new AdamW<float>(parameters, new AdamWOptions { WeightDecay = options.WeightDecay, ClipNorm = options.ClipNorm });
    }

    /// <summary>Builds CPU backends; the default of <see cref="Trainer"/> and <see cref="DpoTrainer"/>.</summary>
    public static ITrainingBackendFactory Factory { get; } = new CpuFactory();

    public ParameterSet<float> Parameters { get; }
    public int OptimizerStep => optimizer.StepCount;

    public abstract double Loss(TrainingBatch batch, bool backward);
    public double Step(double learningRate) => optimizer.Step(learningRate);
    public void DownloadParameters() { }
    public void UploadParameters() { }
    public void SaveOptimizer(BinaryWriter writer) => optimizer.SaveState(writer);
    public void LoadOptimizer(BinaryReader reader) => optimizer.LoadState(reader);
    public void Dispose() { }

    private sealed class CpuFactory : ITrainingBackendFactory
    {
        public ITrainingBackend Create(TrainingStage stage, Qwen2Trainable<float>? teacher, ArwkvStudent<float>? student, TrainerOptions options) =>
            new CpuStageBackend(stage, teacher, student, options);

        public ITrainingBackend CreateDpo(ArwkvStudent<float> policy, ArwkvStudent<float> reference, TrainerOptions options, double beta) =>
            new CpuDpoBackend(policy, reference, options, beta);
    }
}

/// <summary>The teacher's cross-entropy and distillation stages 1, 2 and SFT (<see cref="TrainingStage"/>) on the CPU.</summary>
internal sealed class CpuStageBackend : CpuTrainingBackend
{
    private readonly TrainingStage stage;
    private readonly Qwen2Trainable<float>? teacher;
    private readonly ArwkvStudent<float>? student;
    private readonly int teacherTopK;
    private readonly float[] vocabScratch;
    private readonly ReadOnlyMemory<float>[] teacherInputs = [], teacherOutputs = [];
    private int[] topIds = [];
    private float[] topLogits = [];

    public CpuStageBackend(TrainingStage stage, Qwen2Trainable<float>? teacher, ArwkvStudent<float>? student, TrainerOptions options)
        : base(stage == TrainingStage.Teacher ? teacher!.Parameters : student!.Parameters, options)
    {
        this.stage = stage;
        this.teacher = teacher;
        this.student = student;
        teacherTopK = options.TeacherTopK;
        vocabScratch = new float[teacher?.Config.VocabSize ?? student!.Config.VocabSize];
        if (stage == TrainingStage.Alignment)
        {
            teacherInputs = new ReadOnlyMemory<float>[teacher!.Config.NumLayers];
            teacherOutputs = new ReadOnlyMemory<float>[teacher.Config.NumLayers];
        }
    }

    public override double Loss(TrainingBatch batch, bool backward)
    {
        if (backward) Parameters.ZeroGrad();
        int b = batch.Size, t = batch.Length, n = b * t;
        ReadOnlySpan<byte> m = batch.Mask;
        double loss;
        switch (stage)
        {
            case TrainingStage.Teacher:
            {
                Span<float> logits = teacher!.Forward(batch.Inputs, b, t);
                int v = teacher.Config.VocabSize;
                loss = Losses.CrossEntropyForward<float>(logits, batch.Targets, m, n, v);
                if (!backward) break;
                Losses.CrossEntropyBackward<float>(teacher.DLogits, logits, batch.Targets, m, 1.0, vocabScratch, n, v);
                teacher.Backward();
                break;
            }
            case TrainingStage.Alignment:
            {
                // Padding sits at the end of a row and attention is causal, so the teacher's real positions ignore it.
                teacher!.Forward(batch.Inputs, b, t, computeLogits: false);
                for (int l = 0; l < teacherInputs.Length; l++) { teacherInputs[l] = teacher.AttentionInput(l); teacherOutputs[l] = teacher.AttentionOutput(l); }
                loss = student!.ForwardAlignment(teacherInputs, teacherOutputs, m, b, t);
                if (backward) student.BackwardAlignment(teacherInputs, teacherOutputs);
                break;
            }
            case TrainingStage.Distillation:
            {
                Span<float> teacherLogits = teacher!.Forward(batch.Inputs, b, t);
                Span<float> studentLogits = student!.Forward(batch.Inputs, m, b, t);
                int v = student.Config.VocabSize, k = teacherTopK;
                if (k > 0 && k < v)
                {
                    SelectTopK(teacherLogits, n, v, k);
                    ReadOnlySpan<int> ids = topIds.AsSpan(0, n * k);
                    ReadOnlySpan<float> top = topLogits.AsSpan(0, n * k);
                    loss = Losses.TopKKlForward<float>(studentLogits, ids, top, m, vocabScratch, n, v, k);
                    if (backward) Losses.TopKKlBackward<float>(student.DLogits, studentLogits, ids, top, m, 1.0, vocabScratch, n, v, k);
                }
                else
                {
                    loss = Losses.KlForward<float>(studentLogits, teacherLogits, m, vocabScratch, n, v);
                    if (backward) Losses.KlBackward<float>(student.DLogits, studentLogits, teacherLogits, m, 1.0, vocabScratch, n, v);
                }
                if (backward) student.Backward();
                break;
            }
            case TrainingStage.Sft:
            {
                Span<float> logits = student!.Forward(batch.Inputs, m, b, t);
                int v = student.Config.VocabSize;
                loss = Losses.CrossEntropyForward<float>(logits, batch.Targets, m, n, v);
                if (!backward) break;
                Losses.CrossEntropyBackward<float>(student.DLogits, logits, batch.Targets, m, 1.0, vocabScratch, n, v);
                student.Backward();
                break;
            }
            default: throw new InvalidOperationException($"unknown stage {stage}");
        }
        return loss;
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
}

/// <summary>
/// Stage 3 DPO (sigmoid loss) on the CPU: the batch is [prompt + chosen, prompt + rejected]; both the policy and the
/// frozen reference run it, the response tokens' log-probabilities are summed per row (<see cref="ResponseLogProbs"/>)
/// and -log sigmoid(beta ((pc - rc) - (pr - rr))) goes back through <see cref="Losses.SequenceLogProbBackward"/>.
/// </summary>
internal sealed class CpuDpoBackend : CpuTrainingBackend
{
    private readonly ArwkvStudent<float> policy, reference;
    private readonly double beta;
    private readonly float[] scratch;

    public CpuDpoBackend(ArwkvStudent<float> policy, ArwkvStudent<float> reference, TrainerOptions options, double beta) : base(policy.Parameters, options)
    {
        this.policy = policy;
        this.reference = reference;
        this.beta = beta;
        scratch = new float[policy.Config.VocabSize];
    }

    public override double Loss(TrainingBatch batch, bool backward)
    {
        if (batch.Size != 2 || batch.ResponseMask.IsEmpty) throw new ArgumentException("a DPO batch is [chosen, rejected] with a response mask");
        int seqLen = batch.Length, v = policy.Config.VocabSize, rowLogits = seqLen * v;
        (double rc, double rr) = ResponseLogProbs(reference.Forward(batch.Inputs, batch.Mask, 2, seqLen), batch.Targets, batch.ResponseMask, seqLen, v);
        if (backward) Parameters.ZeroGrad();
        Span<float> logits = policy.Forward(batch.Inputs, batch.Mask, 2, seqLen);
        (double pc, double pr) = ResponseLogProbs(logits, batch.Targets, batch.ResponseMask, seqLen, v);
        double[] chosen = [pc], rejected = [pr], refChosen = [rc], refRejected = [rr], dChosen = [0], dRejected = [0];
        double loss = Losses.DpoForward(chosen, rejected, refChosen, refRejected, beta);
        if (!backward) return loss;
        Losses.DpoBackward(dChosen, dRejected, chosen, rejected, refChosen, refRejected, beta, 1.0);
        Losses.SequenceLogProbBackward<float>(policy.DLogits.Slice(0, rowLogits), logits.Slice(0, rowLogits), batch.Targets.Slice(0, seqLen),
            batch.ResponseMask.Slice(0, seqLen), dChosen[0], scratch, seqLen, v);
        Losses.SequenceLogProbBackward<float>(policy.DLogits.Slice(rowLogits, rowLogits), logits.Slice(rowLogits, rowLogits),
            batch.Targets.Slice(seqLen, seqLen), batch.ResponseMask.Slice(seqLen, seqLen), dRejected[0], scratch, seqLen, v);
        policy.Backward();
        return loss;
    }

    /// <summary>The summed log-probabilities of the response targets of rows 0 (chosen) and 1 (rejected) of <paramref name="logits"/> [2, T, V].</summary>
    internal static (double Chosen, double Rejected) ResponseLogProbs(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, ReadOnlySpan<byte> responseMask,
        int seqLen, int v)
    {
        int rowLogits = seqLen * v;
        return (Losses.SequenceLogProbForward<float>(logits.Slice(0, rowLogits), targets.Slice(0, seqLen), responseMask.Slice(0, seqLen), seqLen, v),
                Losses.SequenceLogProbForward<float>(logits.Slice(rowLogits, rowLogits), targets.Slice(seqLen, seqLen), responseMask.Slice(seqLen, seqLen), seqLen, v));
    }
}
