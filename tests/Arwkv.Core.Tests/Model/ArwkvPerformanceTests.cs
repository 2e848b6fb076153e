using System.Diagnostics;
using Arwkv.IO;

namespace Arwkv.Tests.Model;

/// <summary>
/// Decode and prefill speed on a Qwen2.5-0.5B-shaped ARWKV with random BF16 weights (~1.35 GB, written to the temp
/// directory and deleted afterwards). Explicit: it is a measurement, not a check, and takes tens of seconds.
/// </summary>
[Explicit("measures speed on a 1.35 GB generated checkpoint")]
public class ArwkvPerformanceTests
{
    [Test]
    public void Qwen05BShape_DecodeAndPrefillSpeed()
    {
        int threads = int.TryParse(Environment.GetEnvironmentVariable("ARWKV_BENCH_THREADS"), out int t) ? t : 2;
        string dir = Path.Combine(Path.GetTempPath(), $"arwkv-bench-{Guid.NewGuid():N}");
        try
        {
            var config = new ArwkvConfig
            {
                HiddenSize = 896, NumLayers = 24, IntermediateSize = 4864, VocabSize = 151_936, WkvHasGate = true,
            };
            var write = Stopwatch.StartNew();
            long bytes = LargeCheckpointWriter.Write(dir, config, new ArwkvLoraRanks(64, 64, 32, 128), DType.BF16);
            TestContext.Out.WriteLine($"wrote {bytes / 1e9:F2} GB in {write.Elapsed.TotalSeconds:F1} s");

            using var model = ArwkvModel.Load(dir, new ModelOptions { Threads = threads });
            int[] prompt = ArwkvModelTests.Tokens(128, config.VocabSize, seed: 1);
            var logits = new float[config.VocabSize];

            // Warm up: page the weights in and let the JIT reach its optimized tiers.
            for (int i = 0; i < 3; i++) model.Forward(prompt, model.CreateState(), logits, LogitsScope.Last);

            var state = model.CreateState();
            var process = Process.GetCurrentProcess();
            TimeSpan cpu0 = process.TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            const int prefillRuns = 3;
            for (int i = 0; i < prefillRuns; i++)
            {
                state.Reset();
                model.Forward(prompt, state, logits, LogitsScope.Last);
            }
            double prefill = prefillRuns * prompt.Length / sw.Elapsed.TotalSeconds;
            process.Refresh();
            double prefillCpu = (process.TotalProcessorTime - cpu0).TotalSeconds / (prefillRuns * prompt.Length);

            for (int i = 0; i < 5; i++) model.Forward([i + 10], state, logits, LogitsScope.Last);
            const int decodeTokens = 64;
            process.Refresh();
            cpu0 = process.TotalProcessorTime;
            sw.Restart();
            for (int i = 0; i < decodeTokens; i++) model.Forward([i + 100], state, logits, LogitsScope.Last);
            double decode = decodeTokens / sw.Elapsed.TotalSeconds;
            process.Refresh();
            double decodeCpu = (process.TotalProcessorTime - cpu0).TotalSeconds / decodeTokens;

            // On a shared machine the wall clock mostly measures other processes; CPU seconds per token do not.
            TestContext.Out.WriteLine($"threads {threads}: prefill of {prompt.Length} tokens {prefill:F0} tok/s ({prefillCpu * 1e3:F2} CPU ms/token), " +
                $"decode {decode:F1} tok/s ({decodeCpu * 1e3:F1} CPU ms/token); load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            Assert.That(logits.All(float.IsFinite));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
