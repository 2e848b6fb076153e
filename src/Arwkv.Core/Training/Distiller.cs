using System.Globalization;
using Arwkv.IO;
using Arwkv.Training.Data;

namespace Arwkv.Training;

/// <summary>Settings of `arwkv distill`.</summary>
internal sealed record DistillOptions
{
    public required string TeacherDirectory { get; init; }
    public required string DataPath { get; init; }
    /// <summary>One document per sequence, padded to a multiple of 16 and masked, instead of packing documents end to end.</summary>
    public bool Pad { get; init; }
    /// <summary>Share of the data's sequences held out for the validation loss (0: none).</summary>
    public double ValidationFraction { get; init; } = 0.05;
    public required int Stage { get; init; }
    public required string OutputDirectory { get; init; }
    /// <summary>A student checkpoint to start from; null: a fresh student built from the teacher.</summary>
    public string? InitFrom { get; init; }
    public int Steps { get; init; } = 200;
    /// <summary>Peak learning rate; the schedule decays it tenfold after a 10% warm-up.</summary>
    public double LearningRate { get; init; } = 1e-3;
    public int BatchSize { get; init; } = 8;
    public int SeqLen { get; init; } = 128;
    public int Seed { get; init; } = 1;
    public bool FreezeMlp { get; init; }
    /// <summary>Continue from OUT/checkpoint when it exists.</summary>
    public bool Resume { get; init; }
    /// <summary>Write OUT/checkpoint every this many steps (0: only at the end).</summary>
    public int CheckpointEvery { get; init; } = 50;
    /// <summary>Stage 3 with preference pairs (.jsonl of prompt/chosen/rejected): DPO instead of SFT.</summary>
    public string? PreferencePath { get; init; }
    /// <summary>DPO temperature beta.</summary>
    public double Beta { get; init; } = 0.1;
    /// <summary>Stop after this many steps of this invocation (for testing interruption); 0: run to <see cref="Steps"/>.</summary>
    public int StopAfter { get; init; }
    /// <summary>Stage 2: KL against the teacher's K most likely tokens, renormalized (<see cref="TrainerOptions.TeacherTopK"/>); 0: full vocabulary.</summary>
    public int TeacherTopK { get; init; }
    /// <summary>Write "step loss" lines here, one per step (see <see cref="LossLog"/>); null: no log.</summary>
    public string? LossLogPath { get; init; }
    /// <summary>Where the training arithmetic runs; null: the CPU (<see cref="CpuTrainingBackend.Factory"/>). Checkpoints do not depend on it.</summary>
    public ITrainingBackendFactory? Backend { get; init; }
}

/// <summary>
/// `arwkv distill`: one distillation stage of an ARWKV student against a Qwen2 teacher checkpoint on a text file
/// (stage 1 attention alignment, stage 2 KL, stage 3 SFT cross-entropy), with checkpoints and resume. The teacher is
/// a Hugging Face Qwen2/Qwen2.5 directory (one or sharded safetensors, F32/F16/BF16, tied or untied) or a demo
/// byte-level model; the data is tokenized with the teacher's tokenizer.json. The student ends up in OUT in the
/// Hugging Face ARWKV layout with the teacher's tokenizer files, the losses in OUT/loss.svg.
/// </summary>
internal static class Distiller
{
    /// <summary>Runs the stage; progress goes to <paramref name="output"/>, warnings to <paramref name="warnings"/> (null: to <paramref name="output"/>).</summary>
    public static Trainer? Run(DistillOptions options, TextWriter output, CancellationToken cancellationToken = default, TextWriter? warnings = null)
    {
        if (options.Stage is < 1 or > 3) throw new ArgumentException($"--stage must be 1, 2 or 3, got {options.Stage}");
        if (options.Steps <= 0 || options.BatchSize <= 0 || options.SeqLen <= 0) throw new ArgumentException("--steps, --batch and --seq-len must be positive");
        var stage = (TrainingStage)options.Stage;
        RefuseInputsAsOutputs(options);
        if (options.PreferencePath is not null) return RunDpo(options, output, warnings, cancellationToken);
        if (options.TeacherTopK < 0) throw new ArgumentException($"--teacher-top-k must be >= 0, got {options.TeacherTopK}");
        if (options.TeacherTopK > 0 && stage != TrainingStage.Distillation) throw new ArgumentException("--teacher-top-k is a stage 2 option");
        // The tokenizer and the data first: a wrong tokenizer or data file fails in seconds, before gigabytes of weights load.
        Qwen2Config teacherConfig = Qwen2Config.Load(options.TeacherDirectory);
        // The trainers keep logits [batch * seq-len, vocab] in one array; Qwen's 151936-entry vocabulary makes that the limit.
        if ((long)options.BatchSize * options.SeqLen * teacherConfig.VocabSize > Array.MaxLength)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"--batch {options.BatchSize} x --seq-len {options.SeqLen} x vocab_size {teacherConfig.VocabSize} logits exceed one array ({Array.MaxLength:N0} entries); lower --batch or --seq-len"));
        ITrainingTokenizer tokenizer = TrainingTokenizers.FromDirectory(options.TeacherDirectory, teacherConfig.VocabSize);
        List<TrainingSequence> train = LoadSequences(options.DataPath, options.SeqLen, tokenizer, teacherConfig.VocabSize,
            Path.Combine(options.TeacherDirectory, "config.json"), options.Pad);
        // A seeded hold-out, the same on every resume; skipped when the data cannot spare it and still fill a batch.
        List<TrainingSequence> validation = [];
        if (!(options.ValidationFraction >= 0 && options.ValidationFraction < 1))
            throw new ArgumentException($"--validation-fraction must be in [0, 1), got {options.ValidationFraction}");
        if (options.ValidationFraction > 0)
        {
            int held = Math.Max(1, (int)Math.Round(train.Count * options.ValidationFraction));
            if (train.Count - held >= options.BatchSize) (train, validation) = DataSplit.Split(train, options.ValidationFraction, (ulong)options.Seed);
            else output.WriteLine($"note: {train.Count} sequences are too few to hold out a validation set; reporting training loss only");
        }
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"teacher: {teacherConfig.NumLayers} layers, hidden {teacherConfig.HiddenSize}, vocab_size {teacherConfig.VocabSize}{(teacherConfig.TieWordEmbeddings ? ", tied embeddings (the student gets its own lm_head)" : "")}; {tokenizer.Kind} tokenizer with {tokenizer.IdCount} ids"));
        Qwen2Trainable<float> teacher = Qwen2Trainable<float>.Load(options.TeacherDirectory, options.BatchSize, options.SeqLen, forwardOnly: true);
        ArwkvStudent<float> student = options.InitFrom is not null
            ? ModelFiles.LoadStudent(options.InitFrom, options.BatchSize, options.SeqLen)
            : ModelFiles.StudentFromTeacher(teacher, DefaultRanks(teacher.Config.HiddenSize), 64, options.Seed, options.BatchSize, options.SeqLen);
        if (options.InitFrom is null && stage != TrainingStage.Alignment)
            output.WriteLine($"note: stage {options.Stage} without --init-from starts from an untrained time mix");
        if (student.Config.VocabSize != teacher.Config.VocabSize)
            throw new CheckpointException(Path.Combine(options.InitFrom!, "config.json"),
                $"vocab_size is {student.Config.VocabSize}, the teacher's is {teacher.Config.VocabSize}; --init-from must be a student of this teacher");

        var trainer = new Trainer(stage, stage == TrainingStage.Sft ? null : teacher, student, train, new TrainerOptions
        {
            Steps = options.Steps, LrMax = options.LearningRate, LrMin = options.LearningRate / 10, WarmupSteps = Math.Max(1, options.Steps / 10),
            BatchSize = options.BatchSize, SeqLen = options.SeqLen, Seed = (ulong)options.Seed, FreezeMlp = options.FreezeMlp,
            TeacherTopK = options.TeacherTopK, EndOfText = tokenizer.EndOfText,
        }, options.Backend);
        string checkpointDir = Path.Combine(options.OutputDirectory, "checkpoint");
        if (options.Resume && TrainingCheckpoint.Exists(checkpointDir))
        {
            TrainingCheckpoint.Load(checkpointDir, trainer);
            output.WriteLine($"resumed from {checkpointDir} at step {trainer.Step}");
        }
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"stage {options.Stage} ({stage}): {train.Count} sequences of {options.SeqLen} ({validation.Count} held out for validation), batch {options.BatchSize}, {student.Parameters.Count:N0} student parameters"));
        int until = options.StopAfter > 0 ? Math.Min(options.Steps, trainer.Step + options.StopAfter) : options.Steps;
        using LossLog? lossLog = LossLog.Open(options.LossLogPath, trainer.Losses);
        // About ten validation points per run (two batches each), at report steps.
        int validateEvery = Math.Max(1, options.Steps / 10);
        var validationLosses = new List<double>();
        trainer.Run(until, p =>
        {
            Demo.Report(output, $"stage {options.Stage}", p);
            if (validation.Count > 0 && (p.Step % validateEvery == 0 || p.Step == options.Steps))
            {
                double loss = trainer.ValidationLoss(validation);
                validationLosses.Add(loss);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[stage {options.Stage}] step {p.Step,5}/{options.Steps}  validation loss {loss,8:F4}"));
            }
        }, Math.Max(1, Math.Min(options.Steps / 20, validateEvery)), t =>
        {
            lossLog?.Append(t.Step, t.Losses[^1]);
            if (options.CheckpointEvery > 0 && t.Step % options.CheckpointEvery == 0 && t.Step < until) TrainingCheckpoint.Save(checkpointDir, t);
        }, cancellationToken);
        TrainingCheckpoint.Save(checkpointDir, trainer);
        if (trainer.Step >= options.Steps)
        {
            trainer.SaveModel(options.OutputDirectory);
            WriteTokenizer(options.TeacherDirectory, tokenizer, options.OutputDirectory);
            var curves = new List<(string, IReadOnlyList<double>)> { ($"stage {options.Stage} training loss", trainer.Losses) };
            if (validationLosses.Count > 0)
                curves.Add(($"stage {options.Stage} validation loss (every {validateEvery} steps{(options.Resume ? ", this invocation" : "")})", validationLosses));
            LossCurve.Write(Path.Combine(options.OutputDirectory, "loss.svg"), curves);
            output.WriteLine($"student written to {options.OutputDirectory}");
        }
        else output.WriteLine($"stopped at step {trainer.Step}/{options.Steps}; continue with --resume");
        return trainer;
    }

    /// <summary>
    /// Stage 3 DPO against a frozen copy of the starting student; returns null (no <see cref="Trainer"/>), writes the
    /// student to OUT. Checkpoints and --resume work as for the other stages: OUT/checkpoint holds the policy, its
    /// optimizer and the step (which fixes the pair order); the frozen reference is re-read from --init-from.
    /// </summary>
    private static Trainer? RunDpo(DistillOptions options, TextWriter output, TextWriter? warnings, CancellationToken cancellationToken)
    {
        if (options.Stage != 3) throw new ArgumentException("--dpo is a stage 3 option");
        if (options.InitFrom is null) throw new ArgumentException("DPO needs --init-from (the policy's start, which is also the frozen reference)");
        // The pairs are tokenized with the starting student's own tokenizer (distill copies the teacher's into it).
        ArwkvConfig initConfig = ArwkvConfig.Load(options.InitFrom);
        ITrainingTokenizer tokenizer = TrainingTokenizers.FromDirectory(options.InitFrom, initConfig.VocabSize);
        List<PreferencePair> pairs = PreferencePair.Read(options.PreferencePath!, tokenizer);
        TrainingTokenizers.RequireIdsBelow(pairs.SelectMany(p => new[] { p.Prompt, p.Chosen, p.Rejected }), initConfig.VocabSize,
            Path.Combine(options.InitFrom, "config.json"), options.PreferencePath!);
        ArwkvStudent<float> policy = ModelFiles.LoadStudent(options.InitFrom, 2, options.SeqLen);
        ArwkvStudent<float> reference = ModelFiles.LoadStudent(options.InitFrom, 2, options.SeqLen);
        using var dpo = new DpoTrainer(policy, reference, pairs, new TrainerOptions
        {
            Steps = options.Steps, LrMax = options.LearningRate, LrMin = options.LearningRate / 10, WarmupSteps = Math.Max(1, options.Steps / 10),
            BatchSize = 2, SeqLen = options.SeqLen, Seed = (ulong)options.Seed, FreezeMlp = options.FreezeMlp, EndOfText = tokenizer.EndOfText,
        }, options.Beta, options.Backend);
        string checkpointDir = Path.Combine(options.OutputDirectory, "checkpoint");
        if (options.Resume && TrainingCheckpoint.Exists(checkpointDir))
        {
            TrainingCheckpoint.Load(checkpointDir, dpo, warnings ?? output);
            output.WriteLine($"resumed from {checkpointDir} at step {dpo.Step}");
        }
        output.WriteLine($"stage 3 (DPO, beta {options.Beta.ToString(CultureInfo.InvariantCulture)}): {pairs.Count} preference pairs");
        int until = options.StopAfter > 0 ? Math.Min(options.Steps, dpo.Step + options.StopAfter) : options.Steps;
        using (LossLog? lossLog = LossLog.Open(options.LossLogPath, dpo.Losses))
        {
            while (dpo.Step < until)
            {
                cancellationToken.ThrowIfCancellationRequested();
                double loss = dpo.TrainStep();
                lossLog?.Append(dpo.Step, loss);
                if (dpo.Step % Math.Max(1, options.Steps / 20) == 0 || dpo.Step == options.Steps)
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[dpo] step {dpo.Step,5}/{options.Steps}  loss {loss,8:F4}"));
                if (options.CheckpointEvery > 0 && dpo.Step % options.CheckpointEvery == 0 && dpo.Step < until) TrainingCheckpoint.Save(checkpointDir, dpo);
            }
        }
        TrainingCheckpoint.Save(checkpointDir, dpo);
        if (dpo.Step < options.Steps)
        {
            output.WriteLine($"stopped at step {dpo.Step}/{options.Steps}; continue with --resume");
            return null;
        }
        dpo.Backend.DownloadParameters();
        ModelFiles.SaveStudent(options.OutputDirectory, policy);
        WriteTokenizer(options.InitFrom, tokenizer, options.OutputDirectory);
        LossCurve.Write(Path.Combine(options.OutputDirectory, "loss.svg"), [("stage 3 DPO loss", dpo.Losses)]);
        output.WriteLine($"student written to {options.OutputDirectory}");
        return null;
    }

    /// <summary>Byte-tokenized, packed sequences of a text (or .jsonl) file.</summary>
    public static List<TrainingSequence> LoadSequences(string path, int seqLen) =>
        LoadSequences(path, seqLen, ByteTokenizer.Instance, ByteTokenizer.VocabSize, "config.json");

    /// <summary>
    /// Packed sequences of a text (or .jsonl) file, documents separated by the tokenizer's &lt;|endoftext|&gt; (with
    /// <paramref name="pad"/>: one document per sequence, padded to a multiple of 16 and masked). Every id
    /// must be below <paramref name="vocabSize"/> (the model's config, named by <paramref name="configPath"/>).
    /// </summary>
    public static List<TrainingSequence> LoadSequences(string path, int seqLen, ITrainingTokenizer tokenizer, int vocabSize, string configPath,
        bool pad = false)
    {
        if (pad && seqLen % SequenceBuilder.PadMultiple != 0)
            throw new ArgumentException($"--pad needs --seq-len a multiple of {SequenceBuilder.PadMultiple}, got {seqLen}");
        if (!File.Exists(path)) throw new CheckpointException(path, "data file not found");
        List<int[]> documents = Corpus.Tokenize(Corpus.Read(path), tokenizer);
        TrainingTokenizers.RequireIdsBelow(documents, vocabSize, configPath, path);
        if (tokenizer.EndOfText >= vocabSize)
            throw new CheckpointException(configPath, $"vocab_size is {vocabSize}, but the tokenizer's <|endoftext|> is id {tokenizer.EndOfText}");
        List<TrainingSequence> sequences = pad
            ? SequenceBuilder.Pad(documents, seqLen, tokenizer.EndOfText)
            : SequenceBuilder.Pack(documents, seqLen, tokenizer.EndOfText);
        if (sequences.Count == 0) throw new CheckpointException(path, $"holds fewer than {seqLen + 1} tokens");
        return sequences;
    }

    /// <summary>
    /// Refuses an OUT whose files would replace an input before any work: the student's config.json, weights and
    /// tokenizer files land in OUT, so OUT cannot be the teacher's or --init-from's directory (DPO re-reads its frozen
    /// reference from --init-from on resume), and none of them may be the data. Each name is checked as the atomic
    /// writer will check it, so a device node or directory there fails here too.
    /// </summary>
    private static void RefuseInputsAsOutputs(DistillOptions options)
    {
        var inputs = new List<string>(SafeTensorsCheckpoint.InputFiles(options.TeacherDirectory)) { options.DataPath };
        if (options.InitFrom is not null) inputs.AddRange(SafeTensorsCheckpoint.InputFiles(options.InitFrom));
        if (options.PreferencePath is not null) inputs.Add(options.PreferencePath);
        foreach (string name in TokenizerFiles.Concat(["config.json", SafeTensorsCheckpoint.SingleFileName, "loss.svg"]))
            AtomicFile.ResolveTarget(Path.Combine(options.OutputDirectory, name), inputs);
    }

    /// <summary>Tokenizer files copied next to a student so that `arwkv generate` reads it like its teacher.</summary>
    private static readonly string[] TokenizerFiles =
        ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json", "generation_config.json"];

    /// <summary>
    /// Gives the student in <paramref name="outputDirectory"/> its teacher's tokenizer: the byte-level tokenizer.json
    /// for byte-level models (also when the teacher predates saving one), otherwise a copy of each of the teacher's
    /// tokenizer files that exists, each written atomically.
    /// </summary>
    private static void WriteTokenizer(string teacherDirectory, ITrainingTokenizer tokenizer, string outputDirectory)
    {
        if (tokenizer is ByteTokenizer)
        {
            ByteTokenizerJson.Write(outputDirectory);
            return;
        }
        foreach (string name in TokenizerFiles)
        {
            string source = Path.Combine(teacherDirectory, name);
            if (!File.Exists(source)) continue;
            AtomicFile.Write(Path.Combine(outputDirectory, name), stream =>
            {
                using FileStream input = File.OpenRead(source);
                input.CopyTo(stream);
            });
        }
    }

    /// <summary>
    /// `arwkv eval`: perplexity of a checkpoint on a text, and with a teacher its mean KL and top-1 agreement. The text is
    /// tokenized with the model directory's tokenizer (chosen as for distill); a teacher must have the same tokenizer.
    /// </summary>
    public static EvaluationResult Evaluate(string modelDirectory, string dataPath, string? teacherDirectory, int seqLen, int maxSequences, TextWriter output)
    {
        using LanguageModel model = LanguageModel.Load(modelDirectory);
        using LanguageModel? teacher = teacherDirectory is null ? null : LanguageModel.Load(teacherDirectory);
        ITrainingTokenizer tokenizer = TrainingTokenizers.FromDirectory(modelDirectory, model.VocabSize);
        if (teacher is not null)
        {
            ITrainingTokenizer teacherTokenizer = TrainingTokenizers.FromDirectory(teacherDirectory!, teacher.VocabSize);
            TrainingTokenizers.RequireSame(modelDirectory, tokenizer, teacherDirectory!, teacherTokenizer);
            if (teacher.VocabSize != model.VocabSize)
                throw new CheckpointException(Path.Combine(teacherDirectory!, "config.json"),
                    $"vocab_size is {teacher.VocabSize}, the model's is {model.VocabSize}; KL needs the same vocabulary");
        }
        List<TrainingSequence> sequences = LoadSequences(dataPath, seqLen, tokenizer, model.VocabSize, Path.Combine(modelDirectory, "config.json"));
        if (maxSequences > 0 && sequences.Count > maxSequences) sequences = sequences.Take(maxSequences).ToList();
        EvaluationResult r = Evaluation.Evaluate(model, teacher, sequences);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"tokens {r.Tokens}  cross-entropy {r.CrossEntropy:F4}  perplexity {r.Perplexity:F3}"));
        if (teacher is not null)
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"KL(teacher || model) {r.MeanKl:F4}  top-1 agreement {r.Top1Agreement:P2}"));
        return r;
    }

    /// <summary>LoRA ranks for a small student: the 7B model's (64, 64, 32, 128) scaled to the hidden size, at least 4.</summary>
    public static LoraRanks DefaultRanks(int hidden) => hidden >= 1024
        ? new LoraRanks()
        : new LoraRanks(Math.Max(4, hidden / 8), Math.Max(4, hidden / 8), Math.Max(4, hidden / 16), Math.Max(4, hidden / 4));
}
