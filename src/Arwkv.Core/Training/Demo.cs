using System.Diagnostics;
using System.Globalization;
using System.Text;
using Arwkv.IO;
using Arwkv.Training.Data;

namespace Arwkv.Training;

/// <summary>Settings of the end-to-end demo (`arwkv demo`). Zero step counts mean "the default for this size".</summary>
internal sealed record DemoOptions
{
    public string OutputDirectory { get; init; } = Path.Combine("models", "demo");
    /// <summary>Where the trained teacher is cached; null: ./models/demo-teacher (or OUT/teacher with <see cref="Quick"/>).</summary>
    public string? TeacherDirectory { get; init; }
    public string DataPath { get; init; } = Path.Combine("data", "moby-dick.txt");
    public int TeacherSteps { get; init; }
    public int Stage1Steps { get; init; }
    public int Stage2Steps { get; init; }
    public int Seed { get; init; } = 1;
    /// <summary>A tiny model on a slice of the text: seconds, for tests.</summary>
    public bool Quick { get; init; }
    public string Prompt { get; init; } = "Call me Ishmael. Some years ago";
}

/// <summary>The demo's headline numbers (the JSON line).</summary>
internal sealed record DemoResult(double TeacherPpl, double StudentStage1Ppl, double StudentPpl, double KlStage1, double KlStage2,
    double Top1Agreement, double Top1Stage1, IReadOnlyList<double> Stage2Losses, string TeacherSample, string StudentSample)
{
    public string ToJson() => string.Create(CultureInfo.InvariantCulture,
        $"{{\"teacher_ppl\": {R(TeacherPpl)}, \"student_stage1_ppl\": {R(StudentStage1Ppl)}, \"student_ppl\": {R(StudentPpl)}, \"kl_stage1\": {R(KlStage1)}, \"kl_stage2\": {R(KlStage2)}, \"top1_agreement\": {R(Top1Agreement)}}}");

    private static string R(double x) => double.IsFinite(x) ? x.ToString("0.######", CultureInfo.InvariantCulture) : "null";
}

/// <summary>
/// The download-free end to end demo: trains a small byte-level Qwen2 teacher on a text (cached), converts it to an
/// ARWKV student (teacher's embedding, norms, MLPs and lm_head; RWKV-7 default time mixes), runs stage 1 (attention
/// alignment) and stage 2 (KL distillation), and reports validation perplexity, KL and top-1 agreement measured on the
/// saved checkpoints through the inference models, plus a greedy sample from each.
/// </summary>
internal static class Demo
{
    private sealed record Size(int Hidden, int Layers, int Intermediate, int Heads, int KvHeads, int SeqLen, int Batch,
        int TeacherSteps, int Stage1Steps, int Stage2Steps, int ValidationSequences, int MaxTextBytes, int SampleBytes, LoraRanks Ranks);

    private static readonly Size Full = new(128, 2, 384, 4, 2, 128, 8, 1200, 200, 600, 24, int.MaxValue, 200, new LoraRanks(16, 16, 8, 32));
    private static readonly Size Small = new(64, 1, 128, 4, 2, 32, 4, 60, 25, 40, 4, 40_000, 40, new LoraRanks(8, 8, 4, 8));

    public static DemoResult Run(DemoOptions options, TextWriter output, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        Size size = options.Quick ? Small : Full;
        size = size with
        {
            TeacherSteps = options.TeacherSteps > 0 ? options.TeacherSteps : size.TeacherSteps,
            Stage1Steps = options.Stage1Steps > 0 ? options.Stage1Steps : size.Stage1Steps,
            Stage2Steps = options.Stage2Steps > 0 ? options.Stage2Steps : size.Stage2Steps,
        };
        string outDir = options.OutputDirectory;
        string teacherDir = options.TeacherDirectory ?? (options.Quick ? Path.Combine(outDir, "teacher") : Path.Combine("models", "demo-teacher"));
        Directory.CreateDirectory(outDir);

        // ---- data ----
        if (!File.Exists(options.DataPath)) throw new CheckpointException(options.DataPath, "demo text not found (run from the repository root or pass --data)");
        string text = File.ReadAllText(options.DataPath);
        if (text.Length > size.MaxTextBytes) text = text[..size.MaxTextBytes];
        int[] ids = ByteTokenizer.Instance.Encode(text);
        List<TrainingSequence> sequences = SequenceBuilder.Pack([ids], size.SeqLen, ByteTokenizer.EndOfText);
        var (train, validation) = DataSplit.Split(sequences, 0.05, (ulong)options.Seed);
        validation = validation.Take(size.ValidationSequences).ToList();
        output.WriteLine(Invariant($"data: {options.DataPath}, {ids.Length:N0} bytes -> {train.Count} training and {validation.Count} validation sequences of {size.SeqLen}"));

        var teacherConfig = new Qwen2Config
        {
            HiddenSize = size.Hidden, NumLayers = size.Layers, IntermediateSize = size.Intermediate, VocabSize = ByteTokenizer.VocabSize,
            NumAttentionHeads = size.Heads, NumKeyValueHeads = size.KvHeads, RopeTheta = 10000, RmsNormEps = 1e-6,
            MaxPositionEmbeddings = 4096, EosTokenIds = [ByteTokenizer.EndOfText],
        };

        // ---- teacher (cached) ----
        string stamp = Invariant($"qwen2 C={size.Hidden} L={size.Layers} F={size.Intermediate} H={size.Heads}/{size.KvHeads}|steps={size.TeacherSteps}|seed={options.Seed}|bytes={ids.Length}|T={size.SeqLen}|B={size.Batch}");
        string stampPath = Path.Combine(teacherDir, "demo-teacher.txt");
        Qwen2Trainable<float> teacher;
        var teacherLosses = new List<double>();
        if (File.Exists(stampPath) && File.ReadAllText(stampPath) == stamp && TryLoadTeacher(teacherDir, size, out var cached))
        {
            teacher = cached!;
            output.WriteLine($"teacher: reusing {teacherDir}");
            string lossPath = Path.Combine(teacherDir, "losses.txt");
            if (File.Exists(lossPath))
                foreach (string line in File.ReadLines(lossPath))
                    if (double.TryParse(line, NumberStyles.Float, CultureInfo.InvariantCulture, out double loss)) teacherLosses.Add(loss);
        }
        else
        {
            output.WriteLine(Invariant($"teacher: Qwen2 C={size.Hidden} L={size.Layers} F={size.Intermediate} heads={size.Heads}/{size.KvHeads}, training {size.TeacherSteps} steps"));
            teacher = new Qwen2Trainable<float>(teacherConfig, size.Batch, size.SeqLen);
            teacher.Initialize(options.Seed);
            using var trainer = new Trainer(TrainingStage.Teacher, teacher, null, train, new TrainerOptions
            {
                Steps = size.TeacherSteps, LrMax = 3e-3, LrMin = 3e-4, WarmupSteps = Math.Max(1, size.TeacherSteps / 20),
                BatchSize = size.Batch, SeqLen = size.SeqLen, Seed = (ulong)options.Seed,
            });
            trainer.Run(size.TeacherSteps, p => Report(output, "teacher", p), ReportEvery(size.TeacherSteps), cancellationToken: cancellationToken);
            teacherLosses.AddRange(trainer.Losses);
            teacher.Save(teacherDir);
            ByteTokenizerJson.Write(teacherDir);
            AtomicFile.WriteAllText(Path.Combine(teacherDir, "losses.txt"), string.Join('\n', teacherLosses.Select(l => l.ToString("R", CultureInfo.InvariantCulture))));
            AtomicFile.WriteAllText(stampPath, stamp);
        }

        // ---- student: stage 1 ----
        ArwkvStudent<float> student = ModelFiles.StudentFromTeacher(teacher, size.Ranks, 64, options.Seed, size.Batch, size.SeqLen);
        output.WriteLine(Invariant($"student: ARWKV C={size.Hidden} L={size.Layers} heads={student.Config.NumHeads}, {student.Parameters.Count:N0} parameters; stage 1 {size.Stage1Steps} steps"));
        using var stage1 = new Trainer(TrainingStage.Alignment, teacher, student, train, new TrainerOptions
        {
            Steps = size.Stage1Steps, LrMax = 3e-3, LrMin = 3e-4, WarmupSteps = Math.Max(1, size.Stage1Steps / 10),
            BatchSize = size.Batch, SeqLen = size.SeqLen, Seed = (ulong)options.Seed + 1,
        });
        stage1.Run(size.Stage1Steps, p => Report(output, "stage 1", p), ReportEvery(size.Stage1Steps), cancellationToken: cancellationToken);
        string stage1Dir = Path.Combine(outDir, "student-stage1");
        ModelFiles.SaveStudent(stage1Dir, student);
        ByteTokenizerJson.Write(stage1Dir);

        // ---- stage 2 ----
        output.WriteLine(Invariant($"stage 2: KL(teacher || student), all parameters, {size.Stage2Steps} steps"));
        using var stage2 = new Trainer(TrainingStage.Distillation, teacher, student, train, new TrainerOptions
        {
            Steps = size.Stage2Steps, LrMax = 2e-3, LrMin = 2e-4, WarmupSteps = Math.Max(1, size.Stage2Steps / 10),
            BatchSize = size.Batch, SeqLen = size.SeqLen, Seed = (ulong)options.Seed + 2,
        });
        stage2.Run(size.Stage2Steps, p => Report(output, "stage 2", p), ReportEvery(size.Stage2Steps), cancellationToken: cancellationToken);
        string studentDir = Path.Combine(outDir, "student");
        ModelFiles.SaveStudent(studentDir, student);
        ByteTokenizerJson.Write(studentDir);

        var curves = new List<(string, IReadOnlyList<double>)>();
        if (teacherLosses.Count > 0) curves.Add(("teacher: next-byte cross-entropy", teacherLosses));
        curves.Add(("stage 1: attention alignment (mean ||y_t - y_s|| / sqrt(C))", stage1.Losses));
        curves.Add(("stage 2: KL(teacher || student)", stage2.Losses));
        string svgPath = Path.Combine(outDir, "loss.svg");
        LossCurve.Write(svgPath, curves);

        // ---- evaluation on the saved checkpoints, through the inference models ----
        var modelOptions = new ModelOptions();
        using var teacherModel = Qwen2Model.Load(teacherDir, modelOptions);
        using var stage1Model = ArwkvModel.Load(stage1Dir, modelOptions);
        using var studentModel = ArwkvModel.Load(studentDir, modelOptions);
        EvaluationResult teacherEval = Evaluation.Evaluate(teacherModel, null, validation);
        EvaluationResult stage1Eval = Evaluation.Evaluate(stage1Model, teacherModel, validation);
        EvaluationResult studentEval = Evaluation.Evaluate(studentModel, teacherModel, validation);
        int[] prompt = ByteTokenizer.Instance.Encode(options.Prompt);
        string teacherSample = ByteTokenizer.Instance.Decode(Evaluation.Greedy(teacherModel, prompt, size.SampleBytes));
        string studentSample = ByteTokenizer.Instance.Decode(Evaluation.Greedy(studentModel, prompt, size.SampleBytes));

        var result = new DemoResult(teacherEval.Perplexity, stage1Eval.Perplexity, studentEval.Perplexity, stage1Eval.MeanKl,
            studentEval.MeanKl, studentEval.Top1Agreement, stage1Eval.Top1Agreement, stage2.Losses, teacherSample, studentSample);

        output.WriteLine();
        output.WriteLine(Invariant($"validation: {teacherEval.Tokens:N0} tokens"));
        output.WriteLine("model                  perplexity   KL(teacher||model)   top-1 agreement");
        output.WriteLine(Invariant($"teacher (Qwen2)        {teacherEval.Perplexity,10:F3}   {"-",18}   {"-",15}"));
        output.WriteLine(Invariant($"student after stage 1  {stage1Eval.Perplexity,10:F3}   {stage1Eval.MeanKl,18:F4}   {stage1Eval.Top1Agreement,15:P1}"));
        output.WriteLine(Invariant($"student after stage 2  {studentEval.Perplexity,10:F3}   {studentEval.MeanKl,18:F4}   {studentEval.Top1Agreement,15:P1}"));
        output.WriteLine(Invariant($"student / teacher perplexity: {studentEval.Perplexity / teacherEval.Perplexity:F3}x"));
        output.WriteLine();
        output.WriteLine($"prompt:  {Printable(options.Prompt)}");
        output.WriteLine($"teacher: {Printable(teacherSample)}");
        output.WriteLine($"student: {Printable(studentSample)}");
        output.WriteLine();
        output.WriteLine($"teacher checkpoint: {teacherDir}");
        output.WriteLine($"student checkpoint: {studentDir} (try: arwkv generate -m {studentDir} -p \"Call me Ishmael.\" --temperature 0)");
        output.WriteLine($"loss curves: {svgPath}");
        output.WriteLine(Invariant($"wall time: {clock.Elapsed.TotalSeconds:F1} s"));
        output.WriteLine(result.ToJson());
        return result;
    }

    private static bool TryLoadTeacher(string directory, Size size, out Qwen2Trainable<float>? teacher)
    {
        try
        {
            teacher = Qwen2Trainable<float>.Load(directory, size.Batch, size.SeqLen);
            return teacher.Config.HiddenSize == size.Hidden && teacher.Config.NumLayers == size.Layers;
        }
        catch (Exception e) when (e is CheckpointException or IOException or ArgumentException)
        {
            teacher = null;
            return false;
        }
    }

    private static int ReportEvery(int steps) => Math.Max(1, steps / 15);

    internal static void Report(TextWriter output, string label, StepProgress p) =>
        output.WriteLine(Invariant($"[{label}] step {p.Step,5}/{p.TotalSteps}  loss {p.Loss,8:F4}  lr {p.LearningRate:E2}  {p.TokensPerSecond,7:F0} tok/s  ETA {p.Eta:mm\\:ss}"));

    private static string Printable(string s)
    {
        var b = new StringBuilder(s.Length);
        foreach (char ch in s) b.Append(ch switch { '\n' => "\\n", '\r' => "\\r", '\t' => "\\t", _ => char.IsControl(ch) ? "?" : ch.ToString() });
        return b.ToString();
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
