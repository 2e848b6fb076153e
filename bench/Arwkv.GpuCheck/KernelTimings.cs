using System.Diagnostics;
using System.Text.Json;
using Arwkv.Hip;
using Arwkv.IO;

namespace Arwkv.GpuCheck;

/// <summary>
/// Times the kernels at the shapes distillation runs them at (Qwen2.5-0.5B: C=896, 7B: C=3584) and reports each
/// against the device's own measured copy bandwidth, llm.c-style: achieved GB/s or TFLOP/s, never a bare time.
/// Operands are larger than any GPU's L2, so repeats do not run from cache.
/// </summary>
static class KernelTimings
{
    /// <summary>Writes a "timings" array; one failing measurement (out of memory, say) is recorded and the rest go on.</summary>
    public static void Run(Utf8JsonWriter json, bool quick)
    {
        json.WriteStartArray("timings");
        double copyGBs = Measure(json, quick ? "copy 4 MiB" : "copy 1 GiB", () => Copy(quick ? 4L << 20 : 1L << 30), null);
        foreach (var (label, m, n, k) in quick
                     ? new[] { ("linear bf16 96->128 x 64 tokens", 64, 128, 96) }
                     : new[]
                     {
                         ("linear bf16 896->4864 x 16384 tokens (0.5B MLP up)", 16384, 4864, 896),
                         ("linear bf16 4864->896 x 16384 tokens (0.5B MLP down)", 16384, 896, 4864),
                         ("linear bf16 3584->18944 x 8192 tokens (7B MLP up)", 8192, 18944, 3584),
                         ("linear bf16 896->151936 x 4096 tokens (0.5B lm_head)", 4096, 151936, 896),
                     })
            Measure(json, label, () => Gemm(m, n, k), copyGBs);
        Measure(json, quick ? "rmsnorm f32 16x256" : "rmsnorm f32 16384x3584", () => RmsNorm(quick ? 16 : 16384, quick ? 256 : 3584), copyGBs);
        foreach (int c in quick ? new[] { 128 } : new[] { 896, 3584 })
        {
            int batch = quick ? 1 : 8, time = quick ? 32 : 2048;
            Measure(json, $"wkv7 forward+backward bf16 B={batch} T={time} C={c}", () => Wkv7(batch, time, c / 64), copyGBs);
        }
        json.WriteStartObject();
        json.WriteString("name", "stage-2 step, 0.5B and 7B shapes");
        json.WriteString("error", "not measured: the GPU trainer (issue 10) does not exist yet");
        json.WriteEndObject();
        json.WriteEndArray();
    }

    /// <summary>What one timed call did: its time and the bytes it moved and FLOPs it did (either may be 0).</summary>
    readonly record struct Work(double Seconds, double Bytes, double Flops, double Tokens = 0);

    static double Measure(Utf8JsonWriter json, string name, Func<Work> run, double? copyGBs)
    {
        json.WriteStartObject();
        json.WriteString("name", name);
        double gbs = 0;
        try
        {
            Work work = run();
            gbs = work.Bytes / work.Seconds / 1e9;
            json.WriteNumber("milliseconds", Math.Round(work.Seconds * 1e3, 4));
            var line = $"  {name}: {work.Seconds * 1e3:F3} ms";
            if (work.Bytes > 0)
            {
                json.WriteNumber("gb_per_s", Math.Round(gbs, 2));
                line += $", {gbs:F1} GB/s";
                if (copyGBs is > 0)
                {
                    json.WriteNumber("share_of_copy_bandwidth", Math.Round(gbs / copyGBs.Value, 3));
                    line += $" ({100 * gbs / copyGBs.Value:F0}% of copy)";
                }
            }
            if (work.Flops > 0)
            {
                double tflops = work.Flops / work.Seconds / 1e12;
                json.WriteNumber("tflop_per_s", Math.Round(tflops, 3));
                line += $", {tflops:F2} TFLOP/s";
            }
            if (work.Tokens > 0)
            {
                json.WriteNumber("tokens_per_s", Math.Round(work.Tokens / work.Seconds));
                line += $", {work.Tokens / work.Seconds:F0} tokens/s";
            }
            Console.WriteLine(line);
        }
        catch (Exception e) when (e is HipException or ArgumentException or OutOfMemoryException)
        {
            json.WriteString("error", e.Message);
            Console.WriteLine($"  {name}: FAILED: {e.Message}");
        }
        json.WriteEndObject();
        return gbs;
    }

    /// <summary>Seconds per call of <paramref name="launch"/>: one warm-up, then enough repeats for about half a second.</summary>
    static double Time(Action launch)
    {
        launch();
        HipRuntime.Synchronize();
        var once = Stopwatch.StartNew();
        launch();
        HipRuntime.Synchronize();
        double first = once.Elapsed.TotalSeconds;
        int repeats = (int)Math.Clamp(0.5 / Math.Max(first, 1e-6), 1, 50);
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++) launch();
        HipRuntime.Synchronize();
        return sw.Elapsed.TotalSeconds / repeats;
    }

    static Work Copy(long bytes)
    {
        using var source = HipBuffer.Allocate(bytes);
        using var destination = HipBuffer.Allocate(bytes);
        source.Clear();
        double seconds = Time(() => destination.CopyFrom(source, bytes));
        return new Work(seconds, 2.0 * bytes, 0); // read and write
    }

    static Work Gemm(int m, int n, int k)
    {
        using var x = Bf16(Random((long)m * k, 1, 1f));
        using var weight = Bf16(Random((long)n * k, 2, 0.05f));
        using var y = HipBuffer.Allocate<float>((long)m * n);
        double seconds = Time(() => HipKernels.Gemm(y, x, DType.BF16, weight, DType.BF16, transposeA: false, transposeB: true, m, n, k));
        return new Work(seconds, 2.0 * ((long)m * k + (long)n * k) + 4.0 * m * n, 2.0 * m * n * k);
    }

    static Work RmsNorm(int n, int c)
    {
        using var x = HipBuffer.FromHost<float>(Random((long)n * c, 3, 1f));
        using var weight = HipBuffer.FromHost<float>(Random(c, 4, 1f));
        using var output = HipBuffer.Allocate<float>((long)n * c);
        using var rstd = HipBuffer.Allocate<float>(n);
        double seconds = Time(() => HipKernels.RmsNormForward(output, rstd, x, weight, n, c, 1e-6f));
        return new Work(seconds, 8.0 * n * c, 0);
    }

    /// <summary>The forward that saves what the backward needs, then the backward: one training step's recurrence.</summary>
    static Work Wkv7(int batch, int time, int heads)
    {
        long count = (long)batch * time * heads * 64, state = (long)batch * heads * 64 * 64;
        using var r = Bf16(Random(count, 5, 0.5f));
        using var k = Bf16(Random(count, 6, 0.5f));
        using var v = Bf16(Random(count, 7, 1f));
        using var a = Bf16(Random(count, 8, 0.05f));
        using var b = Bf16(Random(count, 9, 0.05f));
        using var w = Bf16(Decays(count, 10));
        using var y = HipBuffer.Allocate<float>(count);
        using var sa = HipBuffer.Allocate<float>(count);
        using var checkpoints = HipBuffer.Allocate<float>(state * (time / 16));
        using var dy = HipBuffer.FromHost<float>(Random(count, 11, 1f));
        HipBuffer[] grads = [.. Enumerable.Range(0, 6).Select(_ => HipBuffer.Allocate<float>(count))];
        try
        {
            double seconds = Time(() =>
            {
                HipKernels.Wkv7Forward(y, null, checkpoints, sa, r, w, k, v, a, b, null, DType.BF16, batch, time, heads);
                HipKernels.Wkv7Backward(grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], null, dy, checkpoints, sa, null,
                    r, w, k, v, a, b, null, DType.BF16, batch, time, heads);
            });
            // Bytes the pair must move at least: six bf16 inputs read twice, y/sa written and read, dy read, six
            // float32 gradients written, the checkpoints written and read.
            double bytes = 2 * 6 * 2.0 * count + 3 * 4.0 * count + 4.0 * count + 6 * 4.0 * count + 2 * 4.0 * state * (time / 16);
            // Per step and head the forward does about 6 * 64 * 64 FLOPs (decay, S a, two outer products, read-out)
            // and the backward about twice that.
            double flops = 3 * 6.0 * 64 * 64 * batch * time * heads;
            return new Work(seconds, bytes, flops, (double)batch * time);
        }
        finally
        {
            foreach (HipBuffer g in grads) g.Dispose();
        }
    }

    static HipBuffer Bf16(float[] values)
    {
        using var staging = HipBuffer.FromHost<float>(values);
        var output = HipBuffer.Allocate<ushort>(values.LongLength);
        HipKernels.ConvertToBFloat16(output, staging, values.LongLength);
        HipRuntime.Synchronize();
        return output;
    }

    static float[] Random(long count, int seed, float scale)
    {
        var values = new float[count];
        // A cheap generator: these fill gigabytes, and only their range matters.
        uint s = (uint)seed * 2654435761u + 1;
        for (long i = 0; i < count; i++)
        {
            s ^= s << 13; s ^= s >> 17; s ^= s << 5;
            values[i] = scale * ((s >> 8) * (2f / (1 << 24)) - 1f);
        }
        return values;
    }

    static float[] Decays(long count, int seed)
    {
        float[] values = Random(count, seed, 1f);
        for (long i = 0; i < count; i++) values[i] = 0.6f + 0.35f * MathF.Abs(values[i]);
        return values;
    }
}
