using System.Globalization;
using System.Text.Json;
using Arwkv.Training;

namespace Arwkv.Tests.Distillation;

public class DistillationTests
{
    private static string TempDir(string tag) => Path.Combine(Path.GetTempPath(), $"arwkv-{tag}-{Guid.NewGuid():N}");

    /// <summary>The demo text ships with the repository; tests find it by walking up from the test binaries.</summary>
    private static string MobyDick()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            string path = Path.Combine(dir.FullName, "data", "moby-dick.txt");
            if (File.Exists(path)) return path;
        }
        Assert.Fail("data/moby-dick.txt not found above the test directory");
        return "";
    }

    [Test]
    public void QuickDemoPrintsJsonAndStage2LowersTheKl()
    {
        string outDir = TempDir("demo");
        try
        {
            var output = new StringWriter(CultureInfo.InvariantCulture);
            DemoResult result = Demo.Run(new DemoOptions { OutputDirectory = outDir, DataPath = MobyDick(), Quick = true }, output);
            string[] lines = output.ToString().TrimEnd().Split('\n');
            TestContext.Out.WriteLine(string.Join('\n', lines.TakeLast(14)));

            using JsonDocument json = JsonDocument.Parse(lines[^1]);
            string[] keys = ["teacher_ppl", "student_stage1_ppl", "student_ppl", "kl_stage1", "kl_stage2", "top1_agreement"];
            Assert.That(json.RootElement.EnumerateObject().Select(p => p.Name), Is.EqualTo(keys));
            foreach (string key in keys) Assert.That(double.IsFinite(json.RootElement.GetProperty(key).GetDouble()), key);
            Assert.That(json.RootElement.GetProperty("kl_stage2").GetDouble(), Is.EqualTo(result.KlStage2).Within(1e-6));

            // Stage 2 minimizes exactly this KL: its training loss falls (first vs last quarter), and so does the validation KL.
            var losses = result.Stage2Losses;
            int quarter = Math.Max(1, losses.Count / 4);
            Assert.That(losses.TakeLast(quarter).Average(), Is.LessThan(losses.Take(quarter).Average()));
            Assert.That(result.KlStage2, Is.LessThan(result.KlStage1));
            Assert.That(File.Exists(Path.Combine(outDir, "loss.svg")));
            Assert.That(File.ReadAllText(Path.Combine(outDir, "loss.svg")), Does.Contain("<polyline"));

            // The saved student is a real ARWKV checkpoint.
            using var model = ArwkvModel.Load(Path.Combine(outDir, "student"));
            Assert.That(model.VocabSize, Is.EqualTo(259));
            // ... with a tokenizer.json that reproduces the byte tokenizer, so `arwkv generate` can run it.
            Assert.That(model.Tokenizer, Is.Not.Null);
            const string text = "Call me Ishmael, \u00e9t\u00e9 \u2014 whale!\n<|endoftext|>";
            Assert.That(model.Tokenizer!.Encode(text), Is.EqualTo(Arwkv.Training.Data.ByteTokenizer.Instance.Encode(text, allowSpecial: true)));
        }
        finally
        {
            if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
        }
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void ResumedRunReproducesTheUninterruptedLosses(int stage)
    {
        string root = TempDir("resume");
        try
        {
            // A tiny teacher to distill from (its quality does not matter here).
            string teacherDir = Path.Combine(root, "teacher");
            var teacher = new Qwen2Trainable<float>(new Qwen2Config
            {
                HiddenSize = 64, NumLayers = 2, IntermediateSize = 96, VocabSize = 259, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            }, 1, 1);
            teacher.Initialize(3);
            teacher.Save(teacherDir);
            string data = Path.Combine(root, "text.txt");
            File.WriteAllText(data, string.Concat(Enumerable.Range(0, 60).Select(i => $"line {i}: the whale {i * 7 % 13} swam. ")));

            DistillOptions Options(string outDir, bool resume, int stopAfter) => new()
            {
                TeacherDirectory = teacherDir, DataPath = data, Stage = stage, OutputDirectory = outDir, Steps = 8, LearningRate = 3e-3,
                BatchSize = 2, SeqLen = 32, Seed = 5, Resume = resume, StopAfter = stopAfter, CheckpointEvery = 0,
            };

            double[] straight = Distiller.Run(Options(Path.Combine(root, "a"), false, 0), TextWriter.Null)!.Losses.ToArray();

            string b = Path.Combine(root, "b");
            Distiller.Run(Options(b, false, 3), TextWriter.Null);   // "killed" after 3 steps: every in-memory object is dropped
            GC.Collect();
            Trainer resumed = Distiller.Run(Options(b, true, 0), TextWriter.Null)!;

            Assert.That(straight, Has.Length.EqualTo(8));
            Assert.That(resumed.Step, Is.EqualTo(8));
            Assert.That(resumed.Losses.ToArray(), Is.EqualTo(straight), "per-step losses of the resumed run");
            Assert.That(straight.Distinct().Count(), Is.GreaterThan(1), "the losses must actually change");
            float[] weightsA = ModelFiles.LoadStudent(Path.Combine(root, "a"), 1, 1).Parameters.Data;
            float[] weightsB = ModelFiles.LoadStudent(b, 1, 1).Parameters.Data;
            Assert.That(weightsB, Is.EqualTo(weightsA), "final weights");
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void EvaluationMatchesTheTrainingForwardAndIsZeroAgainstItself()
    {
        string root = TempDir("eval");
        try
        {
            const int t = 24;
            var teacher = new Qwen2Trainable<float>(new Qwen2Config
            {
                HiddenSize = 32, NumLayers = 1, IntermediateSize = 48, VocabSize = 259, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            }, 1, t);
            teacher.Initialize(9);
            // Larger weights than the init, so the model is far from uniform and the perplexity says something.
            for (int i = 0; i < teacher.Parameters.Data.Length; i++) teacher.Parameters.Data[i] *= 20;
            string dir = Path.Combine(root, "teacher");
            teacher.Save(dir);
            string data = Path.Combine(root, "text.txt");
            File.WriteAllText(data, "It is not down on any map; true places never are. Call me Ishmael.");

            var sequences = Distiller.LoadSequences(data, t);
            double ce = 0;
            foreach (var s in sequences)
                ce += Arwkv.Training.Layers.Losses.CrossEntropyForward<float>(teacher.Forward(s.Inputs, 1, t), s.Targets, default, t, 259);
            double expected = Math.Exp(ce / sequences.Count);

            EvaluationResult r = Distiller.Evaluate(dir, data, dir, t, 0, TextWriter.Null);
            Assert.That(r.Tokens, Is.EqualTo(sequences.Count * t));
            Assert.That(r.Perplexity, Is.EqualTo(expected).Within(1e-4 * expected));
            Assert.That(r.Perplexity, Is.GreaterThan(1.5).And.Not.EqualTo(259).Within(1));
            Assert.That(r.MeanKl, Is.EqualTo(0).Within(1e-9));
            Assert.That(r.Top1Agreement, Is.EqualTo(1));
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void DpoStartsAtLn2AndWidensTheMargin()
    {
        var config = new ArwkvConfig { HiddenSize = 64, NumLayers = 1, IntermediateSize = 96, VocabSize = 259 };
        var ranks = new LoraRanks(8, 8, 4, 8);
        ArwkvStudent<float> Make()
        {
            var s = new ArwkvStudent<float>(config, 2, 48, ranks);
            s.InitializeRwkv7(4);
            return s;
        }
        ArwkvStudent<float> policy = Make(), reference = Make();
        PreferencePair Pair(string p, string c, string r) => new(Arwkv.Training.Data.ByteTokenizer.Instance.Encode(p),
            Arwkv.Training.Data.ByteTokenizer.Instance.Encode(c), Arwkv.Training.Data.ByteTokenizer.Instance.Encode(r));
        PreferencePair[] pairs = [Pair("Q: whale? A:", " yes, a white one", " no idea"), Pair("Q: ship? A:", " the Pequod", " a car")];
        var dpo = new DpoTrainer(policy, reference, pairs, new TrainerOptions { Steps = 30, LrMax = 3e-3, LrMin = 3e-4, WarmupSteps = 1, SeqLen = 48, Seed = 2 }, beta: 0.5);

        double Margin() => pairs.Select((_, i) =>
        {
            var (pc, pr) = dpo.LogProbs(policy, i);
            var (rc, rr) = dpo.LogProbs(reference, i);
            return (pc - rc) - (pr - rr);
        }).Sum();
        Assert.That(Margin(), Is.EqualTo(0).Within(1e-9), "policy == reference at the start");
        double first = dpo.TrainStep();
        Assert.That(first, Is.EqualTo(Math.Log(2)).Within(1e-6), "-log sigmoid(0)");
        while (dpo.Step < 30) dpo.TrainStep();
        Assert.That(Margin(), Is.GreaterThan(1.0));
        Assert.That(dpo.Losses.TakeLast(4).Average(), Is.LessThan(0.5 * Math.Log(2)));
    }
}
