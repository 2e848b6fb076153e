using Arwkv.Kernels;

namespace Arwkv.Tests.CpuKernels; // not "Kernels": that would shadow Arwkv.Kernels inside Arwkv.Tests.*

[TestFixture]
public class KernelThreadPoolTests
{
    struct CountingWork : IParallelWork
    {
        public int[] Hits;
        public void Execute(int index) => Interlocked.Increment(ref Hits[index]);
    }

    struct FailingWork : IParallelWork
    {
        public int FailAt;
        public void Execute(int index)
        {
            if (index == FailAt) throw new InvalidOperationException($"item {index} failed");
        }
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void EveryItemRunsExactlyOnce(int threads)
    {
        using var pool = new KernelThreadPool(threads);
        foreach (int count in new[] { 0, 1, 2, 3, 17, 1000 })
        {
            var work = new CountingWork { Hits = new int[count] };
            pool.Run(ref work, count);
            Assert.That(work.Hits, Has.All.EqualTo(1), $"count {count}");

            var hits = new int[count];
            pool.For(count, i => Interlocked.Increment(ref hits[i]));
            Assert.That(hits, Has.All.EqualTo(1), $"For, count {count}");
        }
    }

    [Test]
    public void ManyShortCallsInARowAllComplete()
    {
        // Exercises the hand-off between spinning and sleeping workers: every call must see all of its items.
        using var pool = new KernelThreadPool(2);
        var hits = new int[8];
        var work = new CountingWork { Hits = hits };
        for (int call = 0; call < 20000; call++) pool.Run(ref work, 8);
        Assert.That(hits, Has.All.EqualTo(20000));
        Thread.Sleep(5); // let the worker fall asleep, then wake it again
        pool.Run(ref work, 8);
        Assert.That(hits, Has.All.EqualTo(20001));
    }

    [TestCase(0)]
    [TestCase(7)]
    [TestCase(63)]
    public void AWorkerExceptionReachesTheCallerAndThePoolStaysUsable(int failAt)
    {
        using var pool = new KernelThreadPool(2);
        var failing = new FailingWork { FailAt = failAt };
        var ex = Assert.Throws<InvalidOperationException>(() => pool.Run(ref failing, 64));
        Assert.That(ex!.Message, Is.EqualTo($"item {failAt} failed"));
        Assert.Throws<InvalidOperationException>(() => pool.For(64, i => { if (i == failAt) throw new InvalidOperationException("For"); }));

        var work = new CountingWork { Hits = new int[64] };
        pool.Run(ref work, 64);
        Assert.That(work.Hits, Has.All.EqualTo(1));
    }

    [Test]
    public void NestedCallsRunInlineInsteadOfDeadlocking()
    {
        using var pool = new KernelThreadPool(2);
        var hits = new int[16 * 16];
        var task = Task.Run(() => pool.For(16, outer =>
            pool.For(16, inner => Interlocked.Increment(ref hits[outer * 16 + inner])))); 
        Assert.That(task.Wait(TimeSpan.FromSeconds(30)), Is.True, "nested For did not finish");
        Assert.That(hits, Has.All.EqualTo(1));
    }

    [Test]
    public void CallsFromTwoThreadsAtOnceBothComplete()
    {
        using var pool = new KernelThreadPool(2);
        var a = new int[32];
        var b = new int[32];
        var first = Task.Run(() => { for (int i = 0; i < 2000; i++) pool.For(32, j => Interlocked.Increment(ref a[j])); });
        var second = Task.Run(() => { for (int i = 0; i < 2000; i++) pool.For(32, j => Interlocked.Increment(ref b[j])); });
        Assert.That(Task.WaitAll([first, second], TimeSpan.FromSeconds(60)), Is.True);
        Assert.That(a, Has.All.EqualTo(2000));
        Assert.That(b, Has.All.EqualTo(2000));
    }

    [Test]
    public void DisposeStopsTheWorkers()
    {
        var pool = new KernelThreadPool(3);
        pool.For(10, _ => { });
        Assert.That(pool.AnyWorkerAlive, Is.True);
        pool.Dispose();
        Assert.That(pool.AnyWorkerAlive, Is.False);
        pool.Dispose(); // twice is harmless
        Assert.Throws<ObjectDisposedException>(() => pool.For(4, _ => { }));
    }

    [Test]
    public void RejectsBadArguments()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new KernelThreadPool(0));
        using var pool = new KernelThreadPool(2);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.For(-1, _ => { }));
        Assert.Throws<ArgumentNullException>(() => pool.For(1, null!));
        Assert.That(pool.ThreadCount, Is.EqualTo(2));
    }

    [Test]
    public void HoldKeepsIdleWorkersSpinningUntilReleased()
    {
        using var pool = new KernelThreadPool(2);
        var counts = new int[4];
        pool.For(4, i => Interlocked.Increment(ref counts[i]));
        Assert.That(WaitUntil(() => pool.BlockedWorkers == 1), "an idle worker blocks after its short spin");

        using (pool.Hold())
        {
            pool.For(4, i => Interlocked.Increment(ref counts[i]));
            Thread.Sleep(50);
            Assert.That(pool.BlockedWorkers, Is.Zero, "a held pool's idle worker keeps spinning");
            pool.For(4, i => Interlocked.Increment(ref counts[i]));
        }
        Assert.That(WaitUntil(() => pool.BlockedWorkers == 1), "released, the worker blocks again");
        pool.For(4, i => Interlocked.Increment(ref counts[i]));
        Assert.That(counts, Is.All.EqualTo(4));
    }

    static bool WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) return false;
            Thread.Sleep(5);
        }
        return true;
    }
}
