using System.Runtime.InteropServices;
using Arwkv.Hip;

namespace Arwkv.Tests.Hip;

/// <summary>
/// The executor's own checks, seen failing: native/hip/executor_selftest.hip holds two broken kernels (built into the
/// HIP-on-CPU executor only). A barrier that half the block never reaches must be an error that says so, not a hang;
/// a missing barrier must give different results under forward and reverse release orders, which is what
/// <see cref="HipExecutorOrderTests"/> relies on to catch races in the real kernels.
/// </summary>
public unsafe class HipExecutorSelfTests
{
    nint _library;

    [SetUp]
    public void RequireExecutor()
    {
        HipTestDevice.Require();
        if (!HipRuntime.IsCpuExecutor) Assert.Ignore("the self-test kernels exist only in the HIP-on-CPU executor build");
        _library = NativeLibrary.Load(HipRuntime.LoadedLibraryPath!);
    }

    [TearDown]
    public void RestoreSchedule() => HipExecutorOrderTests.RestoreScheduleFromEnvironment();

    [Test]
    public void BarrierThatHalfTheBlockNeverReaches_IsReportedAsAnError()
    {
        var run = (delegate* unmanaged<nint, int>)Export("arwkv_selftest_partial_barrier");
        using var output = HipBuffer.Allocate<float>(64);

        int status = run(output.Pointer);

        Assert.That(status, Is.Not.EqualTo(0), "a stuck barrier passed as success");
        string message = HipRuntime.LastErrorMessage();
        Assert.That(message, Does.Contain("not every thread reaches"));
        Assert.That(message, Does.Contain("selftest_partial_barrier_kernel"));

        // The executor is usable again afterwards: a correct kernel runs.
        using var input = HipBuffer.FromHost<float>([-1f, 2f]);
        using var result = HipBuffer.Allocate<float>(2);
        HipKernels.TanhForward(result, input, 2);
        Assert.That(result.ToArray<float>(2), Is.EqualTo(new[] { MathF.Tanh(-1f), MathF.Tanh(2f) }).Within(1e-6f));
    }

    [Test]
    public void SharedMemoryReadWithoutBarrier_DiffersBetweenReleaseOrders()
    {
        var run = (delegate* unmanaged<nint, float, int>)Export("arwkv_selftest_shared_race");
        using var output = HipBuffer.Allocate<float>(64);

        HipRuntime.SetExecutorSchedule(ExecutorOrder.Reverse);
        Assert.That(run(output.Pointer, 1000f), Is.EqualTo(0), HipRuntime.LastErrorMessage());
        float[] reverse = output.ToArray<float>(64);
        HipRuntime.SetExecutorSchedule(ExecutorOrder.Forward);
        Assert.That(run(output.Pointer, 2000f), Is.EqualTo(0), HipRuntime.LastErrorMessage());
        float[] forward = output.ToArray<float>(64);

        // Reverse order: thread t + 1 ran before thread t, so threads 0..62 saw this launch's value; thread 63 read
        // slot 0 before thread 0 wrote it. Forward order is the mirror image.
        for (int t = 0; t < 63; t++)
        {
            Assert.That(reverse[t], Is.EqualTo(1000f + t + 1), $"reverse order, thread {t}");
            Assert.That(forward[t], Is.Not.EqualTo(2000f + t + 1), $"forward order, thread {t}: the race went unseen");
        }
        Assert.That(reverse[63], Is.Not.EqualTo(1000f), "reverse order, thread 63: the race went unseen");
        Assert.That(forward[63], Is.EqualTo(2000f), "forward order, thread 63 reads slot 0, written first");
    }

    nint Export(string name)
    {
        if (!NativeLibrary.TryGetExport(_library, name, out nint address))
            Assert.Fail($"{HipRuntime.LoadedLibraryPath} is an executor build without {name} (rebuild with native/hip/build.sh --cpu)");
        return address;
    }
}
