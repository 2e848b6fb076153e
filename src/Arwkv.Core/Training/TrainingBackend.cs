namespace Arwkv.Training;

/// <summary>
/// One batch as a <see cref="ITrainingBackend"/> receives it: host spans, all [Size, Length] row-major. This is all
/// that crosses to the backend per step, a few bytes per token.
/// </summary>
internal readonly ref struct TrainingBatch
{
    public TrainingBatch(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<byte> mask, int size, int length,
        ReadOnlySpan<byte> responseMask = default)
    {
        int n = size * length;
        if (size <= 0 || length <= 0) throw new ArgumentOutOfRangeException(nameof(size), $"batch [{size}, {length}] is empty");
        if (inputs.Length != n || targets.Length != n) throw new ArgumentException($"inputs and targets must hold {n} ids, got {inputs.Length} and {targets.Length}");
        if (!mask.IsEmpty && mask.Length != n) throw new ArgumentException($"mask has {mask.Length} entries, expected {n}");
        if (!responseMask.IsEmpty && responseMask.Length != n) throw new ArgumentException($"response mask has {responseMask.Length} entries, expected {n}");
        Inputs = inputs;
        Targets = targets;
        Mask = mask;
        ResponseMask = responseMask;
        Size = size;
        Length = length;
    }

    /// <summary>Token ids [B, T].</summary>
    public ReadOnlySpan<int> Inputs { get; }
    /// <summary>Next-token targets [B, T] (-1 or anything at padding: masked).</summary>
    public ReadOnlySpan<int> Targets { get; }
    /// <summary>1 at real positions, 0 at padding [B, T]; empty when the batch has no padding.</summary>
    public ReadOnlySpan<byte> Mask { get; }
    /// <summary>DPO only: 1 where the target is a response token [2, T] (row 0 chosen, row 1 rejected).</summary>
    public ReadOnlySpan<byte> ResponseMask { get; }
    public int Size { get; }
    public int Length { get; }
}

/// <summary>
/// Where a training run's arithmetic happens: the model(s) of one objective, their gradients and the optimizer.
/// <see cref="Trainer"/> and <see cref="DpoTrainer"/> own everything else (batches, schedule, checkpoints, validation,
/// progress), so a backend on a GPU keeps weights, gradients, AdamW moments and activations on the device: per step
/// only a <see cref="TrainingBatch"/> goes in and two scalars (the loss, the gradient norm) come out; parameters and
/// moments cross only at checkpoints and at the end of a run.
/// </summary>
/// <remarks>
/// The host side of the parameters is <see cref="Parameters"/>, a set in the Hugging Face layout: its names, shapes
/// and frozen/decay flags are fixed when the backend is built, its values are the backend's only after
/// <see cref="DownloadParameters"/>, and whatever is written into them reaches the backend at
/// <see cref="UploadParameters"/>. The CPU backend computes in that set directly, so both are no-ops there.
/// </remarks>
internal interface ITrainingBackend : IDisposable
{
    /// <summary>The trained model's parameters on the host (see the remarks on when their values are current).</summary>
    ParameterSet<float> Parameters { get; }

    /// <summary>
    /// The objective's loss on <paramref name="batch"/>; with <paramref name="backward"/> the gradients are first zeroed
    /// and then hold this loss's gradient, ready for <see cref="Step"/>. Without it, no parameter or optimizer state
    /// changes (validation).
    /// </summary>
    double Loss(TrainingBatch batch, bool backward);

    /// <summary>
    /// One AdamW update (<see cref="AdamW{TF}"/>: global-norm clipping, decoupled decay, bias correction) from the
    /// gradients of the last backward at <paramref name="learningRate"/>; returns the gradient norm before clipping.
    /// </summary>
    double Step(double learningRate);

    /// <summary>Optimizer steps taken (restored by <see cref="LoadOptimizer"/>).</summary>
    int OptimizerStep { get; }

    /// <summary>Makes <see cref="Parameters"/> hold the backend's current values (before a checkpoint or at the end of a run).</summary>
    void DownloadParameters();

    /// <summary>Makes the backend compute with the values now in <see cref="Parameters"/> (after a checkpoint is loaded).</summary>
    void UploadParameters();

    /// <summary>Writes the optimizer state in the layout of <see cref="AdamW{TF}.SaveState"/>, the same for every backend.</summary>
    void SaveOptimizer(BinaryWriter writer);

    /// <summary>Reads what <see cref="SaveOptimizer"/> wrote, by this or any other backend.</summary>
    void LoadOptimizer(BinaryReader reader);
}

/// <summary>
/// Builds the backend of one run from host models: their shapes, current weights and frozen flags, which the loop
/// sets before it asks (the optimizer keeps moments only for what is trainable then).
/// </summary>
internal interface ITrainingBackendFactory
{
    /// <summary>
    /// A backend for <paramref name="stage"/>: the teacher's own training (cross-entropy on <paramref name="teacher"/>),
    /// stage 1 (alignment of the student's time mixes to the teacher's attention), stage 2 (KL against the teacher's
    /// logits, full or top-k) or SFT (cross-entropy on <paramref name="student"/>). The backend may read the models
    /// whenever it computes, so they must not change while it lives.
    /// </summary>
    ITrainingBackend Create(TrainingStage stage, Qwen2Trainable<float>? teacher, ArwkvStudent<float>? student, TrainerOptions options);

    /// <summary>A DPO backend: <paramref name="policy"/> trains against the frozen <paramref name="reference"/>.</summary>
    ITrainingBackend CreateDpo(ArwkvStudent<float> policy, ArwkvStudent<float> reference, TrainerOptions options, double beta);
}
