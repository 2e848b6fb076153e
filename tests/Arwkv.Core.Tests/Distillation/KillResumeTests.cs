using System.Diagnostics;
using System.Text.Json;
using Arwkv.IO;
using Arwkv.Training;

namespace Arwkv.Tests.Distillation;

/// <summary>
/// `arwkv distill` as a child process, killed for real (SIGKILL: no finally blocks, no flushing) in the middle of a
/// checkpoint file, in the middle of the manifest that commits a checkpoint, and at a moment picked by the clock;
/// each time it is resumed. The per-step losses of the whole interrupted lineage must equal, bitwise, those of one
/// uninterrupted run, and after every kill the checkpoint directory must hold one complete checkpoint (or none).
/// </summary>
public class KillResumeTests
{
    private const int Steps = 16, CheckpointEvery = 3;

    [Test]
    public void DistillKilledAtAnyMomentResumesWithTheUninterruptedLosses()
    {
        string root = Directory.CreateTempSubdirectory("arwkv-kill-").FullName;
        try
        {
            string teacherDir = Path.Combine(root, "teacher");
            var teacher = new Qwen2Trainable<float>(new Qwen2Config
            {
                HiddenSize = 64, NumLayers = 1, IntermediateSize = 96, VocabSize = 259, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            }, 1, 1);
            teacher.Initialize(4);
            teacher.Save(teacherDir);
            string data = Path.Combine(root, "text.txt");
            File.WriteAllText(data, string.Concat(Enumerable.Range(0, 80).Select(i => $"line {i}: the whale {i * 7 % 13} swam. ")));
            string[] Args(string outDir, bool resume) =>
            [
                "distill", "--stage", "2", "--teacher", teacherDir, "--data", data, "--out", outDir, "--loss-log", outDir + ".log",
                "--steps", $"{Steps}", "--checkpoint-every", $"{CheckpointEvery}", "--batch", "2", "--seq-len", "32", "--lr", "3e-3",
                "--seed", "5", .. resume ? new[] { "--resume" } : [],
            ];

            // The reference run on one thread; the interrupted runs below use every core, so equality also says that
            // the losses do not depend on the thread count.
            string straight = Path.Combine(root, "straight");
            CliRun reference = RunCli(Args(straight, false), new() { ["DOTNET_PROCESSOR_COUNT"] = "1" });
            Assert.That(reference.ExitCode, Is.EqualTo(0), reference.Output);
            string[] expected = File.ReadAllLines(straight + ".log");
            Assert.That(expected, Has.Length.EqualTo(Steps));
            Assert.That(expected.Distinct().Count(), Is.GreaterThan(Steps / 2), "the losses must actually change");

            string killed = Path.Combine(root, "killed"), checkpoint = Path.Combine(killed, "checkpoint");

            // 1. Killed inside the second checkpoint's config.json (atomic writes of a run: the loss log, then five per
            //    checkpoint: model.safetensors, config.json, optimizer.bin, trainer.json, checkpoint.json).
            CliRun run = RunCli(Args(killed, false), new() { ["ARWKV_TEST_KILL_DURING_SAVE"] = "8" });
            Assert.That(run.ExitCode, Is.Not.EqualTo(0), "the fault hook must have killed the run\n" + run.Output);
            Assert.That(TempFiles(checkpoint).Any(f => Path.GetFileName(f).StartsWith(".config.json.", StringComparison.Ordinal)),
                "killed in the middle of a checkpoint file: its half-written temp file is left\n" + string.Join("\n", TempFiles(checkpoint)));
            Assert.That(CommittedStep(checkpoint, expected), Is.EqualTo(3), "the second checkpoint (step 6) never committed");

            // 2. Resumed, then killed inside the manifest write that would commit step 6.
            run = RunCli(Args(killed, true), new() { ["ARWKV_TEST_KILL_DURING_SAVE"] = "6" });
            Assert.That(run.ExitCode, Is.Not.EqualTo(0), run.Output);
            Assert.That(run.Output, Does.Contain("resumed from").And.Contain("at step 3"));
            Assert.That(TempFiles(checkpoint).Any(f => Path.GetFileName(f).StartsWith(".checkpoint.json.", StringComparison.Ordinal)),
                "killed while writing the manifest\n" + string.Join("\n", TempFiles(checkpoint)));
            Assert.That(CommittedStep(checkpoint, expected), Is.EqualTo(3), "a half-written manifest commits nothing");
            Assert.That(File.ReadAllLines(killed + ".log"), Is.EqualTo(expected.Take(6)), "steps 4..6 recomputed identically before the kill");

            // 3. Resumed, then killed from outside at whatever it is doing once step 5 has been logged (training, or
            //    saving the checkpoint of step 6, 9, ...).
            run = RunCli(Args(killed, true), [], () => LogLines(killed + ".log") >= 5);
            Assert.That(run.Killed && run.ExitCode != 0, Is.True, "the run should still have been training when it was killed\n" + run.Output);
            int committed = CommittedStep(checkpoint, expected);
            Assert.That(committed, Is.AnyOf(3, 6, 9, 12, 15));

            // 4. Resumed to the end.
            run = RunCli(Args(killed, true), []);
            Assert.That(run.ExitCode, Is.EqualTo(0), run.Output);
            Assert.That(run.Output, Does.Contain($"at step {committed}"));
            Assert.That(File.ReadAllLines(killed + ".log"), Is.EqualTo(expected), "per-step losses of the killed and resumed lineage");
            Assert.That(CommittedStep(checkpoint, expected), Is.EqualTo(Steps));
            Assert.That(TempFiles(checkpoint), Is.Empty, "the final save cleans up what the killed runs left");
            Assert.That(Directory.GetDirectories(checkpoint), Has.Length.EqualTo(1), "only the committed state directory remains");
            Assert.That(ModelFiles.LoadStudent(killed, 1, 1).Parameters.Data, Is.EqualTo(ModelFiles.LoadStudent(straight, 1, 1).Parameters.Data),
                "final weights");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>
    /// Checks, without the production loader, that the checkpoint directory holds exactly one consistent checkpoint:
    /// the manifest's step, trainer.json's step and loss count, and optimizer.bin's step agree, the model opens, and
    /// the recorded losses are the uninterrupted run's. Returns the step (0: nothing committed yet).
    /// </summary>
    private static int CommittedStep(string checkpoint, string[] expectedLog)
    {
        string manifest = Path.Combine(checkpoint, "checkpoint.json");
        if (!File.Exists(manifest)) return 0;
        using JsonDocument m = JsonDocument.Parse(File.ReadAllText(manifest));
        int step = m.RootElement.GetProperty("step").GetInt32();
        string state = Path.Combine(checkpoint, m.RootElement.GetProperty("state").GetString()!);
        using JsonDocument t = JsonDocument.Parse(File.ReadAllText(Path.Combine(state, "trainer.json")));
        Assert.That(t.RootElement.GetProperty("step").GetInt32(), Is.EqualTo(step), "trainer.json belongs to the manifest's step");
        double[] losses = t.RootElement.GetProperty("losses").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        Assert.That(losses.Select((l, i) => $"{i + 1} {l:R}"), Is.EqualTo(expectedLog.Take(step)), "checkpointed loss history");
        using (var reader = new BinaryReader(File.OpenRead(Path.Combine(state, "optimizer.bin"))))
            Assert.That(reader.ReadInt32(), Is.EqualTo(step), "optimizer.bin belongs to the manifest's step");
        using (SafeTensorsFile model = SafeTensorsFile.Open(Path.Combine(state, "model", "model.safetensors")))
            Assert.That(model.Contains("model.embed_tokens.weight"));
        Assert.That(File.Exists(Path.Combine(state, "model", "config.json")));
        return step;
    }

    // Read while the child appends to it (and may have just replaced it).
    private static int LogLines(string path)
    {
        try
        {
            using var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
            return reader.ReadToEnd().Count(c => c == '\n');
        }
        catch (IOException)
        {
            return 0;
        }
    }

    private static string[] TempFiles(string directory) =>
        Directory.Exists(directory) ? Directory.GetFiles(directory, "*.tmp", SearchOption.AllDirectories) : [];

    private sealed record CliRun(int ExitCode, bool Killed, string Output);

    /// <summary>Runs `dotnet arwkv.dll ARGS`; when <paramref name="killWhen"/> turns true the process tree is killed.</summary>
    private static CliRun RunCli(string[] args, Dictionary<string, string> environment, Func<bool>? killWhen = null)
    {
        string dll = Path.Combine(TestContext.CurrentContext.TestDirectory, "arwkv.dll");
        Assert.That(File.Exists(dll), $"{dll} (the test project references Arwkv.Cli, so the build copies it here)");
        var info = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        info.ArgumentList.Add(dll);
        foreach (string a in args) info.ArgumentList.Add(a);
        info.Environment.Remove("ARWKV_TEST_KILL_DURING_SAVE");
        foreach (var (k, v) in environment) info.Environment[k] = v;
        var output = new System.Text.StringBuilder();
        using var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        bool killed = false;
        var clock = Stopwatch.StartNew();
        while (!process.WaitForExit(2))
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(60))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail("arwkv distill did not finish within 60 s\n" + output);
            }
            if (killWhen is not null && !killed && killWhen())
            {
                process.Kill(entireProcessTree: true);
                killed = true;
            }
        }
        process.WaitForExit();
        lock (output) return new CliRun(process.ExitCode, killed, output.ToString());
    }
}
