using Arwkv.Training;
using Arwkv.Training.Data;

namespace Arwkv.Tests.Training;

/// <summary>
/// The seam between the training loop and its backend (<see cref="ITrainingBackend"/>), checked with
/// <see cref="CopyingBackendFactory"/>: a stand-in for a device backend that computes on private copies of the models
/// and lets values cross only where the interface says they do. Every stage, DPO included, must train through it bit
/// for bit as on the CPU backend, write the same checkpoint files, and resume from the other backend's checkpoints.
/// </summary>
public class TrainingBackendTests
{
    private const int SeqLen = 16, Batch = 2, EndOfText = 39;

    private static readonly Qwen2Config TeacherConfig = new()
    {
        HiddenSize = 32, NumLayers = 2, IntermediateSize = 48, VocabSize = 40, NumAttentionHeads = 4, NumKeyValueHeads = 2,
    };

    private static readonly TrainerOptions Options = new()
    {
        Steps = 6, BatchSize = Batch, SeqLen = SeqLen, Seed = 4, LrMax = 3e-3, LrMin = 3e-4, WarmupSteps = 1, EndOfText = EndOfText,
    };

    private static Qwen2Trainable<float> Teacher()
    {
        var teacher = new Qwen2Trainable<float>(TeacherConfig, Batch, SeqLen);
        teacher.Initialize(5);
        return teacher;
    }

    private static ArwkvStudent<float> Student(Qwen2Trainable<float> teacher, int maxBatch = Batch) =>
        ModelFiles.StudentFromTeacher(teacher, new LoraRanks(4, 4, 4, 4), 8, 1, maxBatch, SeqLen);

    private static List<TrainingSequence> Sequences(bool pad)
    {
        var rng = new Random(2);
        var documents = Enumerable.Range(0, 24).Select(_ => Enumerable.Range(0, pad ? 5 + rng.Next(10) : 20).Select(_ => rng.Next(EndOfText)).ToArray()).ToList();
        return pad ? SequenceBuilder.Pad(documents, SeqLen, EndOfText) : SequenceBuilder.Pack(documents, SeqLen, EndOfText);
    }

    /// <summary>A trainer of <paramref name="stage"/> on fresh models (every call builds the same ones).</summary>
    private static Trainer NewTrainer(TrainingStage stage, IReadOnlyList<TrainingSequence> train, ITrainingBackendFactory? backend, int teacherTopK = 0)
    {
        Qwen2Trainable<float> teacher = Teacher();
        ArwkvStudent<float>? student = stage == TrainingStage.Teacher ? null : Student(teacher);
        return new Trainer(stage, stage == TrainingStage.Sft ? null : teacher, student, train, Options with { TeacherTopK = teacherTopK }, backend);
    }

    [TestCase(0, 0, false)]
    [TestCase(1, 0, false)]
    [TestCase(1, 0, true)]
    [TestCase(2, 0, false)]
    [TestCase(2, 8, true)]
    [TestCase(3, 0, true)]
    public void EveryStageTrainsBitIdenticallyThroughACopyingBackend(int stageNumber, int teacherTopK, bool pad)
    {
        var stage = (TrainingStage)stageNumber;
        List<TrainingSequence> train = Sequences(pad), held = train.TakeLast(2).ToList();
        string root = Directory.CreateTempSubdirectory("arwkv-backend-").FullName;
        try
        {
            var results = new List<(double[] Losses, double[] Validation, float[] Weights, byte[] Model, byte[] Optimizer)>();
            foreach (ITrainingBackendFactory? backend in new ITrainingBackendFactory?[] { null, new CopyingBackendFactory() })
            {
                using Trainer trainer = NewTrainer(stage, train, backend, teacherTopK);
                var validation = new List<double>();
                trainer.Run(Options.Steps, afterStep: t => validation.Add(t.ValidationLoss(held)));
                string checkpoint = Path.Combine(root, backend is null ? "cpu" : "copying");
                TrainingCheckpoint.Save(checkpoint, trainer);
                string stateDir = TrainingCheckpoint.Read(checkpoint).StateDirectory;
                results.Add((trainer.Losses.ToArray(), validation.ToArray(), trainer.Parameters.Data.ToArray(),
                    File.ReadAllBytes(Path.Combine(stateDir, "model", "model.safetensors")), File.ReadAllBytes(Path.Combine(stateDir, "optimizer.bin"))));
            }
            var (cpu, copying) = (results[0], results[1]);
            Assert.That(cpu.Losses.Distinct().Count(), Is.GreaterThan(1), "the losses must actually change");
            Assert.That(cpu.Weights.All(float.IsFinite));
            Assert.That(copying.Losses, Is.EqualTo(cpu.Losses), "training losses");
            Assert.That(copying.Validation, Is.EqualTo(cpu.Validation), "validation losses between steps");
            Assert.That(copying.Weights, Is.EqualTo(cpu.Weights), "trained weights after Run");
            Assert.That(copying.Model, Is.EqualTo(cpu.Model), "checkpoint model.safetensors");
            Assert.That(copying.Optimizer, Is.EqualTo(cpu.Optimizer), "checkpoint optimizer.bin");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void ACheckpointOfOneBackendResumesInTheOtherWithTheUninterruptedLosses(bool copyingFirst)
    {
        List<TrainingSequence> train = Sequences(pad: false);
        using Trainer straight = NewTrainer(TrainingStage.Distillation, train, null);
        straight.Run(Options.Steps);
        string root = Directory.CreateTempSubdirectory("arwkv-backend-resume-").FullName;
        try
        {
            ITrainingBackendFactory? first = copyingFirst ? new CopyingBackendFactory() : null, second = copyingFirst ? null : new CopyingBackendFactory();
            using (Trainer before = NewTrainer(TrainingStage.Distillation, train, first))
            {
                before.Run(3);
                TrainingCheckpoint.Save(root, before);
            }
            using Trainer after = NewTrainer(TrainingStage.Distillation, train, second);
            TrainingCheckpoint.Load(root, after);
            Assert.That(after.Step, Is.EqualTo(3));
            after.Run(Options.Steps);
            Assert.That(after.Losses, Is.EqualTo(straight.Losses), "losses of the resumed lineage");
            Assert.That(after.Parameters.Data, Is.EqualTo(straight.Parameters.Data), "final weights");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void DpoTrainsAndResumesBitIdenticallyAcrossBackends()
    {
        PreferencePair Pair(string p, string c, string r) => new(ByteTokenizer.Instance.Encode(p)[..4].Select(t => t % EndOfText).ToArray(),
            ByteTokenizer.Instance.Encode(c)[..6].Select(t => t % EndOfText).ToArray(), ByteTokenizer.Instance.Encode(r)[..5].Select(t => t % EndOfText).ToArray());
        PreferencePair[] pairs = [Pair("Q: whale?", " yes, a white one", " no idea"), Pair("Q: ship?", " the Pequod", " a car at sea")];
        DpoTrainer New(ITrainingBackendFactory? backend)
        {
            Qwen2Trainable<float> teacher = Teacher();
            return new DpoTrainer(Student(teacher), Student(teacher), pairs, Options, beta: 0.5, backend);
        }
        using DpoTrainer cpu = New(null), copying = New(new CopyingBackendFactory());
        for (int i = 0; i < Options.Steps; i++) { cpu.TrainStep(); copying.TrainStep(); }
        copying.Backend.DownloadParameters();
        Assert.That(cpu.Losses.Distinct().Count(), Is.GreaterThan(1), "the losses must actually change");
        Assert.That(copying.Losses, Is.EqualTo(cpu.Losses), "DPO losses");
        Assert.That(copying.Policy.Parameters.Data, Is.EqualTo(cpu.Policy.Parameters.Data), "policy weights");

        string root = Directory.CreateTempSubdirectory("arwkv-backend-dpo-").FullName;
        try
        {
            using (DpoTrainer before = New(new CopyingBackendFactory()))
            {
                for (int i = 0; i < 3; i++) before.TrainStep();
                TrainingCheckpoint.Save(root, before);
            }
            using DpoTrainer after = New(null);
            TrainingCheckpoint.Load(root, after);
            while (after.Step < Options.Steps) after.TrainStep();
            Assert.That(after.Losses, Is.EqualTo(cpu.Losses), "losses of the resumed lineage");
            Assert.That(after.Policy.Parameters.Data, Is.EqualTo(cpu.Policy.Parameters.Data), "final policy weights");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void DistillStoppedOnOneBackendFinishesOnTheOther()
    {
        string root = Directory.CreateTempSubdirectory("arwkv-backend-distill-").FullName;
        try
        {
            string teacherDir = Path.Combine(root, "teacher"), data = Path.Combine(root, "text.txt");
            // The distiller's students have head size 64.
            var teacher = new Qwen2Trainable<float>(TeacherConfig with { HiddenSize = 64, NumLayers = 1, IntermediateSize = 96, VocabSize = ByteTokenizer.VocabSize }, 1, 1);
            teacher.Initialize(4);
            teacher.Save(teacherDir);
            File.WriteAllText(data, string.Concat(Enumerable.Range(0, 60).Select(i => $"line {i}: the whale {i * 7 % 13} swam. ")));
            DistillOptions Distill(string outDir) => new()
            {
                TeacherDirectory = teacherDir, DataPath = data, Stage = 2, OutputDirectory = outDir, Steps = 6, BatchSize = 2, SeqLen = 32,
                LearningRate = 3e-3, Seed = 5, CheckpointEvery = 2, LossLogPath = outDir + ".log",
            };
            string straight = Path.Combine(root, "straight"), split = Path.Combine(root, "split");
            Distiller.Run(Distill(straight), TextWriter.Null);
            Distiller.Run(Distill(split) with { StopAfter = 3, Backend = new CopyingBackendFactory() }, TextWriter.Null);
            Distiller.Run(Distill(split) with { Resume = true }, TextWriter.Null);
            Assert.That(File.ReadAllLines(split + ".log"), Is.EqualTo(File.ReadAllLines(straight + ".log")), "per-step losses");
            Assert.That(File.ReadAllBytes(Path.Combine(split, "model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(straight, "model.safetensors"))),
                "the student written to OUT");

            // And the other way round: started on the CPU, finished through the copying backend.
            string reverse = Path.Combine(root, "reverse");
            Distiller.Run(Distill(reverse) with { StopAfter = 3 }, TextWriter.Null);
            Distiller.Run(Distill(reverse) with { Resume = true, Backend = new CopyingBackendFactory() }, TextWriter.Null);
            Assert.That(File.ReadAllLines(reverse + ".log"), Is.EqualTo(File.ReadAllLines(straight + ".log")), "per-step losses");
            Assert.That(File.ReadAllBytes(Path.Combine(reverse, "model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(straight, "model.safetensors"))),
                "the student written to OUT");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}

/// <summary>
/// A test stand-in for a device backend: the CPU backend runs on private copies of the models (the "device"), built
/// when the backend is, and values reach the host models only through <see cref="ITrainingBackend.DownloadParameters"/>
/// and come back only through <see cref="ITrainingBackend.UploadParameters"/>. After every step the host copy of the
/// trained parameters and gradients is overwritten with NaN, as stale as a real device backend's host copy is, only
/// louder: a loop that reads weights it has not downloaded, or gradients at all, produces NaN instead of a pass.
/// </summary>
internal sealed class CopyingBackendFactory : ITrainingBackendFactory
{
    public ITrainingBackend Create(TrainingStage stage, Qwen2Trainable<float>? teacher, ArwkvStudent<float>? student, TrainerOptions options)
    {
        Qwen2Trainable<float>? deviceTeacher = teacher is null ? null : Clone(teacher);
        ArwkvStudent<float>? deviceStudent = student is null ? null : Clone(student);
        ITrainingBackend inner = CpuTrainingBackend.Factory.Create(stage, deviceTeacher, deviceStudent, options);
        return new CopyingBackend(inner, stage == TrainingStage.Teacher ? teacher!.Parameters : student!.Parameters);
    }

    public ITrainingBackend CreateDpo(ArwkvStudent<float> policy, ArwkvStudent<float> reference, TrainerOptions options, double beta) =>
        new CopyingBackend(CpuTrainingBackend.Factory.CreateDpo(Clone(policy), Clone(reference), options, beta), policy.Parameters);

    private static Qwen2Trainable<float> Clone(Qwen2Trainable<float> model)
    {
        var copy = new Qwen2Trainable<float>(model.Config, model.MaxBatch, model.MaxSeqLen, model.ForwardOnly);
        CopyInto(copy.Parameters, model.Parameters);
        return copy;
    }

    private static ArwkvStudent<float> Clone(ArwkvStudent<float> model)
    {
        var copy = new ArwkvStudent<float>(model.Config, model.MaxBatch, model.MaxSeqLen, model.Ranks);
        CopyInto(copy.Parameters, model.Parameters);
        return copy;
    }

    private static void CopyInto(ParameterSet<float> device, ParameterSet<float> host)
    {
        host.Data.CopyTo(device.Data, 0);
        for (int i = 0; i < host.Tensors.Count; i++)
        {
            device.Tensors[i].Frozen = host.Tensors[i].Frozen;
            device.Tensors[i].Decay = host.Tensors[i].Decay;
        }
    }

    private sealed class CopyingBackend(ITrainingBackend device, ParameterSet<float> host) : ITrainingBackend
    {
        private int[] inputs = [], targets = [];
        private byte[] mask = [], responseMask = [];

        public ParameterSet<float> Parameters => host;
        public int OptimizerStep => device.OptimizerStep;

        public double Loss(TrainingBatch batch, bool backward)
        {
            // The batch is "uploaded": the device side computes on its own copy of it.
            inputs = batch.Inputs.ToArray(); targets = batch.Targets.ToArray();
            mask = batch.Mask.ToArray(); responseMask = batch.ResponseMask.ToArray();
            double loss = device.Loss(new TrainingBatch(inputs, targets, mask, batch.Size, batch.Length, responseMask), backward);
            if (backward) Array.Fill(host.Grad, float.NaN);
            return loss;
        }

        public double Step(double learningRate)
        {
            double norm = device.Step(learningRate);
            Array.Fill(host.Data, float.NaN);
            Array.Fill(host.Grad, float.NaN);
            return norm;
        }

        public void DownloadParameters() => device.Parameters.Data.CopyTo(host.Data, 0);
        public void UploadParameters() => host.Data.CopyTo(device.Parameters.Data, 0);

        // Through bytes, as moments leaving a device would.
        public void SaveOptimizer(BinaryWriter writer)
        {
            using var buffer = new MemoryStream();
            using (var inner = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true)) device.SaveOptimizer(inner);
            writer.Write(buffer.ToArray());
        }

        public void LoadOptimizer(BinaryReader reader) => device.LoadOptimizer(reader);
        public void Dispose() => device.Dispose();
    }
}
