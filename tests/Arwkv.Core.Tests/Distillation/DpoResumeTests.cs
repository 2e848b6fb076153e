using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Arwkv.IO;
using Arwkv.Training;
using Arwkv.Training.Data;

namespace Arwkv.Tests.Distillation;

public class DpoResumeTests
{
    private static string Root() => Directory.CreateTempSubdirectory("arwkv-dpo-resume-").FullName;

    /// <summary>A small student checkpoint to start DPO from, and three preference pairs.</summary>
    private static (string InitFrom, string Pairs) Setup(string root)
    {
        var config = new ArwkvConfig { HiddenSize = 64, NumLayers = 1, IntermediateSize = 96, VocabSize = ByteTokenizer.VocabSize };
        var student = new ArwkvStudent<float>(config, 2, 48, new LoraRanks(8, 8, 4, 8));
        student.InitializeRwkv7(7);
        string initFrom = Path.Combine(root, "init");
        ModelFiles.SaveStudent(initFrom, student);
        string pairs = Path.Combine(root, "pairs.jsonl");
        File.WriteAllLines(pairs,
        [
            """{"prompt": "Q: whale? A:", "chosen": " a white one", "rejected": " no idea"}""",
            """{"prompt": "Q: ship? A:", "chosen": " the Pequod", "rejected": " a car"}""",
            """{"prompt": "Q: captain? A:", "chosen": " Ahab", "rejected": " Nemo, or Hook"}""",
        ]);
        return (initFrom, pairs);
    }

    private static DistillOptions Options(string initFrom, string pairs, string outDir, bool resume, int stopAfter, double beta = 0.5) => new()
    {
        TeacherDirectory = "unused by DPO", DataPath = "unused by DPO", Stage = 3, OutputDirectory = outDir, InitFrom = initFrom,
        PreferencePath = pairs, Beta = beta, Steps = 8, LearningRate = 3e-3, SeqLen = 48, Seed = 3, Resume = resume, StopAfter = stopAfter,
        CheckpointEvery = 2, LossLogPath = outDir + ".log",
    };

    [Test]
    public void StoppedAndResumedDpoReproducesTheUninterruptedLosses()
    {
        string root = Root();
        try
        {
            var (initFrom, pairs) = Setup(root);
            string a = Path.Combine(root, "a"), b = Path.Combine(root, "b");
            Distiller.Run(Options(initFrom, pairs, a, resume: false, stopAfter: 0), TextWriter.Null);
            string[] straight = File.ReadAllLines(a + ".log");
            Assert.That(straight, Has.Length.EqualTo(8));
            Assert.That(straight[0], Does.StartWith("1 0.693147"), "policy == reference at the start: -log sigmoid(0)");
            Assert.That(straight.Select(l => l.Split(' ')[1]).Distinct().Count(), Is.GreaterThan(4), "the losses must actually change");

            // Stopped at the end of the first pass over the pairs, then in the middle of the third, then run to the end;
            // each time every in-memory object is dropped and only OUT/checkpoint carries over.
            var output = new StringWriter();
            Distiller.Run(Options(initFrom, pairs, b, resume: false, stopAfter: 3), output);
            Assert.That(output.ToString(), Does.Contain("stopped at step 3/8"));
            Assert.That(TrainingCheckpoint.Read(Path.Combine(b, "checkpoint")).State.Step, Is.EqualTo(3));
            Assert.That(File.Exists(Path.Combine(b, "model.safetensors")), Is.False, "no final student before the last step");
            output = new StringWriter();
            Distiller.Run(Options(initFrom, pairs, b, resume: true, stopAfter: 4), output);
            Assert.That(output.ToString(), Does.Contain("resumed from").And.Contain("at step 3").And.Contain("stopped at step 7/8"));
            output = new StringWriter();
            Distiller.Run(Options(initFrom, pairs, b, resume: true, stopAfter: 0), output);
            Assert.That(output.ToString(), Does.Contain("at step 7").And.Contain("student written to"));

            Assert.That(File.ReadAllLines(b + ".log"), Is.EqualTo(straight), "per-step DPO losses of the resumed run (round-trip text: bitwise)");
            var (_, state) = TrainingCheckpoint.Read(Path.Combine(b, "checkpoint"));
            Assert.That(state.Losses.Select((l, i) => $"{i + 1} {l:R}"), Is.EqualTo(straight), "loss history in the checkpoint");
            Assert.That(state.Method, Is.EqualTo("dpo"));
            Assert.That(ModelFiles.LoadStudent(b, 1, 1).Parameters.Data, Is.EqualTo(ModelFiles.LoadStudent(a, 1, 1).Parameters.Data), "final policy weights");
            Assert.That(ModelFiles.LoadStudent(initFrom, 1, 1).Parameters.Data, Is.Not.EqualTo(ModelFiles.LoadStudent(a, 1, 1).Parameters.Data),
                "DPO moved the policy away from the reference");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void MismatchedOrDamagedCheckpointsAreRefusedAndTheOldLayoutStillLoads()
    {
        string root = Root();
        try
        {
            var (initFrom, pairs) = Setup(root);
            string outDir = Path.Combine(root, "out"), checkpoint = Path.Combine(outDir, "checkpoint");
            Distiller.Run(Options(initFrom, pairs, outDir, resume: false, stopAfter: 2), TextWriter.Null);

            // Another beta changes every loss: resuming would silently splice two different runs.
            var e = Assert.Throws<CheckpointException>(() => Distiller.Run(Options(initFrom, pairs, outDir, resume: true, stopAfter: 1, beta: 0.25), TextWriter.Null));
            Assert.That(e!.Message, Does.Contain("beta"));

            // A DPO checkpoint is not an SFT one.
            var student = ModelFiles.LoadStudent(initFrom, 2, 48);
            var sequences = SequenceBuilder.Pack([ByteTokenizer.Instance.Encode(string.Concat(Enumerable.Repeat("Call me Ishmael. ", 20)))], 48, ByteTokenizer.EndOfText);
            var sft = new Trainer(TrainingStage.Sft, null, student, sequences, new TrainerOptions { Steps = 4, BatchSize = 2, SeqLen = 48, Seed = 3 });
            e = Assert.Throws<CheckpointException>(() => TrainingCheckpoint.Load(checkpoint, sft));
            Assert.That(e!.Message, Does.Contain("dpo"));

            // A manifest whose step disagrees with the state it names.
            string manifestPath = Path.Combine(checkpoint, "checkpoint.json");
            string manifest = File.ReadAllText(manifestPath);
            JsonNode node = JsonNode.Parse(manifest)!;
            node["step"] = 1;
            File.WriteAllText(manifestPath, node.ToJsonString());
            e = Assert.Throws<CheckpointException>(() => TrainingCheckpoint.Read(checkpoint));
            Assert.That(e!.Message, Does.Contain("trainer.json").And.Contain("manifest says 1"));
            File.WriteAllText(manifestPath, manifest);

            // The single-level layout of earlier versions (trainer.json, optimizer.bin and model/ in checkpoint/) loads,
            // and the next save replaces it with the committed layout.
            string stateDir = Path.Combine(checkpoint, JsonDocument.Parse(manifest).RootElement.GetProperty("state").GetString()!);
            foreach (string f in Directory.GetFiles(stateDir)) File.Move(f, Path.Combine(checkpoint, Path.GetFileName(f)));
            Directory.Move(Path.Combine(stateDir, "model"), Path.Combine(checkpoint, "model"));
            Directory.Delete(stateDir);
            File.Delete(manifestPath);
            Assert.That(TrainingCheckpoint.Exists(checkpoint));
            var output = new StringWriter();
            Distiller.Run(Options(initFrom, pairs, outDir, resume: true, stopAfter: 1), output);
            Assert.That(output.ToString(), Does.Contain("at step 2").And.Contain("stopped at step 3/8"));
            Assert.That(Directory.GetFileSystemEntries(checkpoint).Select(Path.GetFileName).Order(),
                Is.EqualTo(new[] { "checkpoint.json", Path.GetFileName(TrainingCheckpoint.Read(checkpoint).StateDirectory) }.Order()));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void ResumingAgainstAnotherReferenceIsRefusedAndTheSameWeightsElsewhereResume()
    {
        string root = Root();
        try
        {
            var (initFrom, pairs) = Setup(root);
            string outDir = Path.Combine(root, "out"), checkpoint = Path.Combine(outDir, "checkpoint");
            Distiller.Run(Options(initFrom, pairs, outDir, resume: false, stopAfter: 2), TextWriter.Null);

            // The checkpoint records the SHA-256 of the reference's float32 weights, computed here in one piece.
            ArwkvStudent<float> reference = ModelFiles.LoadStudent(initFrom, 1, 1);
            string expected = Convert.ToHexStringLower(SHA256.HashData(MemoryMarshal.AsBytes(reference.Parameters.Data.AsSpan())));
            string TrainerJsonPath() => Path.Combine(TrainingCheckpoint.Read(checkpoint).StateDirectory, "trainer.json");
            Assert.That(JsonNode.Parse(File.ReadAllText(TrainerJsonPath()))!["reference_sha256"]!.GetValue<string>(), Is.EqualTo(expected));
            Assert.That(TrainingCheckpoint.Read(checkpoint).State.ReferenceSha256, Is.EqualTo(expected));

            // A reference one weight away from the original (same shapes, so everything else would load) is refused,
            // and the refused attempt leaves the checkpoint as it was.
            reference.Parameters.Data[^1] += 1e-3f;
            string nudged = Path.Combine(root, "nudged");
            ModelFiles.SaveStudent(nudged, reference);
            var e = Assert.Throws<CheckpointException>(() => Distiller.Run(Options(nudged, pairs, outDir, resume: true, stopAfter: 1), TextWriter.Null));
            Assert.That(e!.Message, Does.Contain("reference model differs from the one this run started with").And.Contain(checkpoint));
            Assert.That(e.FilePath, Is.EqualTo(TrainerJsonPath()));
            Assert.That(TrainingCheckpoint.Read(checkpoint).State.Step, Is.EqualTo(2));

            // The identity is the weights, not the path: the same files in another directory resume.
            string copy = Path.Combine(root, "copy");
            Directory.CreateDirectory(copy);
            foreach (string f in Directory.GetFiles(initFrom)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
            var output = new StringWriter();
            Distiller.Run(Options(copy, pairs, outDir, resume: true, stopAfter: 1), output);
            Assert.That(output.ToString(), Does.Contain("at step 2").And.Contain("stopped at step 3/8"));

            // A checkpoint from before the field resumes on trust with a warning, and its next save records the reference.
            JsonNode state = JsonNode.Parse(File.ReadAllText(TrainerJsonPath()))!;
            Assert.That(state.AsObject().Remove("reference_sha256"));
            File.WriteAllText(TrainerJsonPath(), state.ToJsonString());
            Assert.That(TrainingCheckpoint.Read(checkpoint).State.ReferenceSha256, Is.Null);
            var warnings = new StringWriter();
            Distiller.Run(Options(initFrom, pairs, outDir, resume: true, stopAfter: 1), TextWriter.Null, warnings: warnings);
            Assert.That(warnings.ToString(), Does.StartWith("warning: ").And.Contain("does not record which reference model"));
            Assert.That(TrainingCheckpoint.Read(checkpoint).State.ReferenceSha256, Is.EqualTo(expected));
            Assert.That(TrainingCheckpoint.Read(checkpoint).State.Step, Is.EqualTo(4));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
