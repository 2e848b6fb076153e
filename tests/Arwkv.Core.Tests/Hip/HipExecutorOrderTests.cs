using Arwkv.Hip;
using Arwkv.IO;

namespace Arwkv.Tests.Hip;

/// <summary>
/// The executor's race check, in one process: each kernel runs under the forward, reverse and two shuffled release
/// orders of the HIP-on-CPU executor. A kernel that is missing a barrier, or reads shared memory another thread is
/// still writing, gives different bits under different orders. Kernels without float atomics must agree bitwise;
/// those that sum with atomicAdd only up to float rounding, since the order of the additions is the schedule's.
/// Ignored on a GPU (whose schedule no test chooses).
/// </summary>
public class HipExecutorOrderTests
{
    static readonly (ExecutorOrder Order, ulong Seed)[] Schedules =
        [(ExecutorOrder.Reverse, 0), (ExecutorOrder.Shuffle, 1), (ExecutorOrder.Shuffle, 12345)];

    [SetUp]
    public void RequireExecutor()
    {
        HipTestDevice.Require();
        if (!HipRuntime.IsCpuExecutor) Assert.Ignore("release orders are a HIP-on-CPU executor setting");
    }

    // Later tests in the same run keep the order that ./build.sh test chose through ARWKV_HIP_CPU_ORDER.
    [TearDown]
    public void RestoreSchedule() => RestoreScheduleFromEnvironment();

    /// <summary>Sets the executor back to the order ARWKV_HIP_CPU_ORDER names (forward when unset).</summary>
    internal static void RestoreScheduleFromEnvironment()
    {
        string order = Environment.GetEnvironmentVariable("ARWKV_HIP_CPU_ORDER") ?? "forward";
        if (order == "reverse") HipRuntime.SetExecutorSchedule(ExecutorOrder.Reverse);
        else if (order == "shuffle") HipRuntime.SetExecutorSchedule(ExecutorOrder.Shuffle, 1);
        else if (order.StartsWith("shuffle:", StringComparison.Ordinal) && ulong.TryParse(order["shuffle:".Length..], out ulong seed))
            HipRuntime.SetExecutorSchedule(ExecutorOrder.Shuffle, seed);
        else HipRuntime.SetExecutorSchedule(ExecutorOrder.Forward);
    }

    [Test]
    public void RmsNormForward_IsBitwiseTheSameUnderEveryOrder()
    {
        const int n = 7, c = 300;
        using var input = HipBuffer.FromHost<float>(Random(n * c, 1));
        using var weight = HipBuffer.FromHost<float>(Random(c, 2));
        using var output = HipBuffer.Allocate<float>(n * c);
        using var rstd = HipBuffer.Allocate<float>(n);
        AssertBitwiseStable(() =>
        {
            HipKernels.RmsNormForward(output, rstd, input, weight, n, c, 1e-6f);
            return [.. output.ToArray<float>(n * c), .. rstd.ToArray<float>(n)];
        });
    }

    [Test]
    public void Gemm_IsBitwiseTheSameUnderEveryOrder()
    {
        const int m = 37, n = 45, k = 70;
        using var a = HipBuffer.FromHost<float>(Random(m * k, 3));
        using var b = HipBuffer.FromHost<float>(Random(n * k, 4));
        using var c = HipBuffer.Allocate<float>(m * n);
        AssertBitwiseStable(() =>
        {
            HipKernels.Gemm(c, a, DType.F32, b, DType.F32, transposeA: false, transposeB: true, m, n, k);
            return c.ToArray<float>(m * n);
        });
    }

    [Test]
    public void Wkv7Forward_IsBitwiseTheSameUnderEveryOrder()
    {
        const int batch = 2, time = 16, heads = 2;
        int count = batch * time * heads * 64;
        float[] decay = Random(count, 5).Select(x => 0.6f + 0.35f * MathF.Abs(x)).ToArray();
        using var r = HipBuffer.FromHost<float>(Random(count, 6));
        using var w = HipBuffer.FromHost<float>(decay);
        using var k = HipBuffer.FromHost<float>(Random(count, 7));
        using var v = HipBuffer.FromHost<float>(Random(count, 8));
        using var a = HipBuffer.FromHost<float>(Random(count, 9).Select(x => 0.1f * x).ToArray());
        using var b = HipBuffer.FromHost<float>(Random(count, 10).Select(x => 0.1f * x).ToArray());
        using var y = HipBuffer.Allocate<float>(count);
        using var state = HipBuffer.Allocate<float>(batch * heads * 64 * 64);
        float[] initialState = Random(batch * heads * 64 * 64, 11);
        AssertBitwiseStable(() =>
        {
            state.Upload<float>(initialState);
            HipKernels.Wkv7Forward(y, state, null, null, r, w, k, v, a, b, null, DType.F32, batch, time, heads);
            return [.. y.ToArray<float>(count), .. state.ToArray<float>(batch * heads * 64 * 64)];
        });
    }

    [Test]
    public void AttentionForward_IsBitwiseTheSameUnderEveryOrder()
    {
        const int batch = 1, time = 19, heads = 4, kvHeads = 2, headDim = 64;
        using var q = HipBuffer.FromHost<float>(Random(batch * time * heads * headDim, 12));
        using var k = HipBuffer.FromHost<float>(Random(batch * time * kvHeads * headDim, 13));
        using var v = HipBuffer.FromHost<float>(Random(batch * time * kvHeads * headDim, 14));
        using var output = HipBuffer.Allocate<float>(batch * time * heads * headDim);
        using var lse = HipBuffer.Allocate<float>(batch * heads * time);
        AssertBitwiseStable(() =>
        {
            HipKernels.AttentionForward(output, lse, q, k, v, null, batch, time, heads, kvHeads, headDim);
            return [.. output.ToArray<float>(batch * time * heads * headDim), .. lse.ToArray<float>(batch * heads * time)];
        });
    }

    [Test]
    public void CrossEntropy_IsBitwiseTheSameUnderEveryOrder()
    {
        const int n = 5, vocab = 1000;
        using var logits = HipBuffer.FromHost<float>(Random(n * vocab, 15).Select(x => 4 * x).ToArray());
        using var targets = HipBuffer.FromHost<int>([3, 999, -100, 0, 512]);
        using var losses = HipBuffer.Allocate<float>(n);
        using var dlogits = HipBuffer.Allocate<float>(n * vocab);
        AssertBitwiseStable(() =>
        {
            HipKernels.CrossEntropy(losses, dlogits, logits, DType.F32, targets, 0.25f, n, vocab);
            return [.. losses.ToArray<float>(n), .. dlogits.ToArray<float>(n * vocab)];
        });
    }

    [Test]
    public void EmbeddingBackward_AgreesUnderEveryOrderUpToFloatRounding()
    {
        // Repeated tokens make several blocks add into one row, in an order the schedule decides.
        const int n = 40, c = 96, v = 5;
        int[] tokens = Enumerable.Range(0, n).Select(i => i * 7 % v).ToArray();
        using var tokenBuffer = HipBuffer.FromHost<int>(tokens);
        using var dout = HipBuffer.FromHost<float>(Random(n * c, 16));
        using var dtable = HipBuffer.Allocate<float>(v * c);
        AssertStableWithin(1e-5, () =>
        {
            dtable.Upload<float>(new float[v * c]);
            HipKernels.EmbeddingBackward(dtable, tokenBuffer, dout, n, c, v);
            return dtable.ToArray<float>(v * c);
        });
    }

    [Test]
    public void GradNormSquared_AgreesUnderEveryOrderUpToFloatRounding()
    {
        const long count = 100_003;
        using var grad = HipBuffer.FromHost<float>(Random((int)count, 17));
        using var norm = HipBuffer.Allocate<float>(1);
        AssertStableWithin(1e-5, () =>
        {
            norm.Upload<float>([0f]);
            HipKernels.GradNormSquared(norm, grad, count);
            return norm.ToArray<float>(1);
        });
    }

    static void AssertBitwiseStable(Func<float[]> run)
    {
        HipRuntime.SetExecutorSchedule(ExecutorOrder.Forward);
        float[] expected = run();
        Assert.That(expected.All(float.IsFinite), "the forward-order run produced a non-finite value");
        foreach (var (order, seed) in Schedules)
        {
            HipRuntime.SetExecutorSchedule(order, seed);
            float[] actual = run();
            int first = FirstBitwiseDifference(expected, actual);
            Assert.That(first, Is.EqualTo(-1),
                $"{order}:{seed} differs from forward order at element {first}: {(first < 0 ? 0 : actual[first]):R} vs {(first < 0 ? 0 : expected[first]):R}");
        }
    }

    static void AssertStableWithin(double relative, Func<float[]> run)
    {
        HipRuntime.SetExecutorSchedule(ExecutorOrder.Forward);
        float[] expected = run();
        double scale = expected.Max(x => Math.Abs((double)x));
        Assert.That(scale, Is.GreaterThan(0), "the forward-order run produced only zeros");
        foreach (var (order, seed) in Schedules)
        {
            HipRuntime.SetExecutorSchedule(order, seed);
            float[] actual = run();
            for (int i = 0; i < expected.Length; i++)
                Assert.That(actual[i], Is.EqualTo(expected[i]).Within(relative * scale), $"{order}:{seed} element {i}");
        }
    }

    static int FirstBitwiseDifference(float[] expected, float[] actual)
    {
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i])) return i;
        return expected.Length == actual.Length ? -1 : expected.Length;
    }

    static float[] Random(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
    }
}
