using Arwkv.Tests.TestModels;
using Arwkv.Training;
using Arwkv.Training.Data;

namespace Arwkv.Tests.Distillation;

/// <summary>`arwkv distill`'s held-out validation loss: the stage's own loss, measured without disturbing training.</summary>
public class ValidationLossTests
{
    private static readonly Qwen2Config Config = new()
    {
        HiddenSize = 32, NumLayers = 2, IntermediateSize = 48, VocabSize = 40, NumAttentionHeads = 4, NumKeyValueHeads = 2,
    };

    private static (Qwen2Trainable<float> Teacher, List<TrainingSequence> Train, List<TrainingSequence> Held) Data()
    {
        var teacher = new Qwen2Trainable<float>(Config, 8, 16);
        teacher.Initialize(5);
        var rng = new Random(2);
        var documents = Enumerable.Range(0, 20).Select(_ => Enumerable.Range(0, 20).Select(_ => rng.Next(39)).ToArray()).ToList();
        List<TrainingSequence> all = SequenceBuilder.Pack(documents, 16, 39);
        var (train, held) = DataSplit.Split(all, 0.2, 7);
        return (teacher, train, held);
    }

    /// <summary>A random byte-level (259-id) Qwen2 teacher of hidden size 64 saved in <paramref name="directory"/>.</summary>
    private static string SaveByteLevelTeacher(string directory, int layers)
    {
        var teacher = new Qwen2Trainable<float>(new Qwen2Config
        {
            HiddenSize = 64, NumLayers = layers, IntermediateSize = 96, VocabSize = 259, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        }, 1, 1);
        teacher.Initialize(3);
        teacher.Save(directory);
        return directory;
    }

    private static ArwkvStudent<float> Student(Qwen2Trainable<float> teacher) =>
        ModelFiles.StudentFromTeacher(teacher, new LoraRanks(4, 4, 4, 4), 8, 1, 8, 16);

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void MeasuringValidationBetweenStepsLeavesTrainingBitwiseUnchanged(int stageNumber)
    {
        var stage = (TrainingStage)stageNumber;
        var (teacher, train, held) = Data();
        var options = new TrainerOptions { Steps = 5, BatchSize = 2, SeqLen = 16, Seed = 4, LrMax = 3e-3, LrMin = 3e-4, WarmupSteps = 1 };
        var plain = new Trainer(stage, stage == TrainingStage.Sft ? null : teacher, Student(teacher), train, options);
        var probed = new Trainer(stage, stage == TrainingStage.Sft ? null : teacher, Student(teacher), train, options);
        var validation = new List<double>();
        for (int i = 0; i < 5; i++)
        {
            plain.TrainStep();
            validation.Add(probed.ValidationLoss(held));
            probed.TrainStep();
        }
        Assert.That(probed.Losses, Is.EqualTo(plain.Losses));
        Assert.That(probed.Student!.Parameters.Data, Is.EqualTo(plain.Student!.Parameters.Data));
        Assert.That(validation.All(double.IsFinite));
        Assert.That(validation.Distinct().Count(), Is.GreaterThan(1), "the validation loss follows the training");
    }

    [Test]
    public void ValidationLossIsTheStageLossOfTheHeldOutBatch()
    {
        var (teacher, _, held) = Data();
        Assume.That(held.Count, Is.GreaterThanOrEqualTo(2));
        var options = new TrainerOptions { Steps = 1, BatchSize = held.Count, SeqLen = 16, Seed = 4 };
        // A trainer whose one training batch is the whole held-out set reports, for its first step, the loss before any
        // update: the same quantity ValidationLoss measures (up to the order of the sequences within the batch).
        double viaValidation = new Trainer(TrainingStage.Distillation, teacher, Student(teacher), held, options).ValidationLoss(held, maxBatches: 1);
        double viaTraining = new Trainer(TrainingStage.Distillation, teacher, Student(teacher), held, options).TrainStep();
        Assert.That(viaValidation, Is.EqualTo(viaTraining).Within(1e-5 * Math.Abs(viaTraining)));
        Assert.That(viaValidation, Is.GreaterThan(0));
    }

    [Test]
    public void DistillReportsAndPlotsTheValidationLoss()
    {
        using var root = new TempDirectory("arwkv-validation");
        string teacherDir = SaveByteLevelTeacher(root.File("teacher"), layers: 2);
        string data = root.File("text.txt");
        File.WriteAllText(data, string.Concat(Enumerable.Range(0, 80).Select(i => $"line {i}: the whale {i * 7 % 13} swam. ")));
        var options = new DistillOptions
        {
            TeacherDirectory = teacherDir, DataPath = data, Stage = 1, OutputDirectory = root.File("out"), Steps = 10, LearningRate = 3e-3,
            BatchSize = 2, SeqLen = 32, Seed = 5, CheckpointEvery = 0, ValidationFraction = 0.1,
        };
        var log = new StringWriter();
        Distiller.Run(options, log);
        string text = log.ToString();
        Assert.That(text.Split('\n').Count(l => l.Contains("validation loss")), Is.EqualTo(10), text);
        Assert.That(text, Does.Contain("held out for validation"));
        Assert.That(File.ReadAllText(Path.Combine(options.OutputDirectory, "loss.svg")), Does.Contain("training loss").And.Contain("validation loss"));

        Assert.Throws<ArgumentException>(() => Distiller.Run(options with { ValidationFraction = 1, OutputDirectory = root.File("bad") }, TextWriter.Null));
    }

    [Test]
    public void DistillWithPadKeepsChatsApartInMaskedMultipleOf16Sequences()
    {
        using var root = new TempDirectory("arwkv-pad");
        string teacherDir = SaveByteLevelTeacher(root.File("teacher"), layers: 1);
        string chats = root.File("chats.jsonl");
        File.WriteAllLines(chats, Enumerable.Range(0, 12).Select(i =>
            $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi {i}\"}}, {{\"role\": \"assistant\", \"content\": \"{new string('a', i)}\"}}]}}"));

        List<TrainingSequence> padded = Distiller.LoadSequences(chats, 64, ByteTokenizer.Instance, 259, "config.json", pad: true);
        Assert.That(padded, Has.Count.EqualTo(12), "one sequence per chat");
        Assert.That(padded.Select(s => s.Length % SequenceBuilder.PadMultiple), Is.All.Zero);
        Assert.That(padded.Select(s => s.Length).Distinct().Count(), Is.GreaterThan(1), "lengths follow the chats");
        Assert.That(padded.All(s => s.Mask.Skip(s.ValidLength).All(m => m == 0) && s.Length - s.ValidLength < SequenceBuilder.PadMultiple), "padding: masked, less than 16");
        Assert.That(padded.Count(s => s.ValidLength < s.Length), Is.GreaterThan(0), "some chats are padded");

        var options = new DistillOptions
        {
            TeacherDirectory = teacherDir, DataPath = chats, Stage = 2, OutputDirectory = root.File("out"), Steps = 4, LearningRate = 3e-3,
            BatchSize = 2, SeqLen = 64, Seed = 5, CheckpointEvery = 0, Pad = true, ValidationFraction = 0.2,
        };
        Trainer trainer = Distiller.Run(options, TextWriter.Null)!;
        Assert.That(trainer.Losses.All(double.IsFinite));
        Assert.Throws<ArgumentException>(() => Distiller.Run(options with { SeqLen = 40, OutputDirectory = root.File("bad") }, TextWriter.Null));
    }

    [Test]
    public void ResumingWithADifferentHeldOutShareIsRefused()
    {
        using var root = new TempDirectory("arwkv-validation-resume");
        string teacherDir = SaveByteLevelTeacher(root.File("teacher"), layers: 1);
        string data = root.File("text.txt");
        File.WriteAllText(data, string.Concat(Enumerable.Range(0, 80).Select(i => $"line {i}: the whale {i * 7 % 13} swam. ")));
        var options = new DistillOptions
        {
            TeacherDirectory = teacherDir, DataPath = data, Stage = 1, OutputDirectory = root.File("out"), Steps = 6, LearningRate = 3e-3,
            BatchSize = 2, SeqLen = 32, Seed = 5, CheckpointEvery = 0, ValidationFraction = 0.1, StopAfter = 2,
        };
        Distiller.Run(options, TextWriter.Null);
        var e = Assert.Throws<Arwkv.IO.CheckpointException>(() => Distiller.Run(options with { Resume = true, ValidationFraction = 0.2, StopAfter = 0 }, TextWriter.Null))!;
        Assert.That(e.Message, Does.Contain("training sequences"));
        Trainer resumed = Distiller.Run(options with { Resume = true, StopAfter = 0 }, TextWriter.Null)!;
        Assert.That(resumed.Step, Is.EqualTo(6));
    }
}
