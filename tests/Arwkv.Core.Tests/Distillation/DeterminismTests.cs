using Arwkv.Training;
using Arwkv.Training.Data;
using Arwkv.Training.Layers;

namespace Arwkv.Tests.Distillation;

/// <summary>
/// Two training runs with the same seed must agree bit for bit whatever the scheduling: the second run happens while
/// other threads keep every core busy (so the parallel kernels' items land on other threads in another order) and
/// after the heap has been churned and compacted (so every buffer sits at another address and alignment).
/// </summary>
public class DeterminismTests
{
    private const int Hidden = 128, SeqLen = 64, Batch = 4;

    [Test]
    public void TeacherAndBothDistillationStagesGiveBitwiseIdenticalLossesAcrossRuns()
    {
        // The sizes must be large enough that the kernels actually split their work across threads.
        Assert.That((long)Batch * SeqLen / 4 * 4L * Hidden * Hidden, Is.GreaterThanOrEqualTo(Work.SerialThreshold), "RowDot goes parallel");
        Assert.That(2L * Batch * 4L * SeqLen * 64 * 64, Is.GreaterThanOrEqualTo(Work.SerialThreshold), "WKV7 goes parallel");

        string root = Directory.CreateTempSubdirectory("arwkv-determinism-").FullName;
        try
        {
            Compare(root);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static void Compare(string root)
    {
        (double[] Losses, float[] Student, double[] Metrics) quiet = Train(Path.Combine(root, "quiet"));

        var junk = new List<float[]>();
        for (int i = 0; i < 2000; i++) junk.Add(new float[1 + i % 97]);
        junk.RemoveAll(a => a.Length % 3 == 0);
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        using var stop = new CancellationTokenSource();
        var burners = Enumerable.Range(0, Environment.ProcessorCount).Select(_ => new Thread(() =>
        {
            while (!stop.IsCancellationRequested) Thread.SpinWait(1000);
        }) { IsBackground = true }).ToList();
        burners.ForEach(t => t.Start());
        (double[] Losses, float[] Student, double[] Metrics) loaded;
        try
        {
            loaded = Train(Path.Combine(root, "loaded"));
        }
        finally
        {
            stop.Cancel();
            burners.ForEach(t => t.Join());
        }
        GC.KeepAlive(junk);

        Assert.That(quiet.Losses, Has.Length.EqualTo(7));
        Assert.That(loaded.Losses, Is.EqualTo(quiet.Losses), "teacher, stage 1 and stage 2 losses as doubles");
        Assert.That(loaded.Student, Is.EqualTo(quiet.Student), "student weights after stage 2");
        Assert.That(loaded.Metrics, Is.EqualTo(quiet.Metrics), "teacher and student perplexity, KL and top-1 agreement through the inference models");
        Assert.That(quiet.Metrics.All(double.IsFinite));
    }

    /// <summary>
    /// 3 teacher steps, 2 of stage 1 and 2 of stage 2, all from seed 11; then both models saved and scored through the
    /// inference path (multi-threaded kernels) as the demo does.
    /// </summary>
    private static (double[] Losses, float[] Student, double[] Metrics) Train(string directory)
    {
        var text = string.Concat(Enumerable.Range(0, 120).Select(i => $"line {i}: the whale {i * 7 % 13} swam past {i % 5} ships. "));
        List<TrainingSequence> train = SequenceBuilder.Pack([ByteTokenizer.Instance.Encode(text)], SeqLen, ByteTokenizer.EndOfText);
        var teacher = new Qwen2Trainable<float>(new Qwen2Config
        {
            HiddenSize = Hidden, NumLayers = 2, IntermediateSize = 256, VocabSize = ByteTokenizer.VocabSize, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        }, Batch, SeqLen);
        teacher.Initialize(11);
        TrainerOptions Options(int steps) => new() { Steps = steps, LrMax = 3e-3, LrMin = 3e-4, WarmupSteps = 1, BatchSize = Batch, SeqLen = SeqLen, Seed = 11 };
        var losses = new List<double>();

        var teacherTrainer = new Trainer(TrainingStage.Teacher, teacher, null, train, Options(3));
        teacherTrainer.Run(3);
        losses.AddRange(teacherTrainer.Losses);

        ArwkvStudent<float> student = ModelFiles.StudentFromTeacher(teacher, Distiller.DefaultRanks(Hidden), 64, 11, Batch, SeqLen);
        var stage1 = new Trainer(TrainingStage.Alignment, teacher, student, train, Options(2));
        stage1.Run(2);
        losses.AddRange(stage1.Losses);
        var stage2 = new Trainer(TrainingStage.Distillation, teacher, student, train, Options(2));
        stage2.Run(2);
        losses.AddRange(stage2.Losses);

        teacher.Save(Path.Combine(directory, "teacher"));
        ModelFiles.SaveStudent(Path.Combine(directory, "student"), student);
        List<TrainingSequence> validation = train.TakeLast(3).ToList();
        var metrics = new List<double>();
        // The inference kernels cut their work by thread count: the scores must not depend on it.
        foreach (int threads in new[] { 1, 3 })
        {
            var options = new ModelOptions { Threads = threads };
            using var teacherModel = LanguageModel.Load(Path.Combine(directory, "teacher"), options);
            using var studentModel = LanguageModel.Load(Path.Combine(directory, "student"), options);
            EvaluationResult t = Evaluation.Evaluate(teacherModel, null, validation), s = Evaluation.Evaluate(studentModel, teacherModel, validation);
            metrics.AddRange([t.Perplexity, s.Perplexity, s.MeanKl, s.Top1Agreement]);
        }
        Assert.That(metrics.Skip(4), Is.EqualTo(metrics.Take(4)), "perplexity, KL and top-1 agreement with 1 and with 3 kernel threads");
        return (losses.ToArray(), student.Parameters.Data.ToArray(), metrics.ToArray());
    }
}
