namespace Arwkv.Kernels;

/// <summary>
/// The threads that run a model's kernels. Kept alive between tokens so that a decode step does not pay for
/// thread start-up or task scheduling.
/// </summary>
public sealed class KernelThreadPool : IDisposable
{
    /// <summary>Creates a pool of <paramref name="threads"/> workers (the calling thread counts as one).</summary>
    public KernelThreadPool(int threads)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), "need at least one thread");
        ThreadCount = threads;
    }

    /// <summary>Number of threads that share each kernel's work.</summary>
    public int ThreadCount { get; }

    /// <summary>Runs body(i) for i in [0, count) across the pool and waits for all of them.</summary>
    public void For(int count, Action<int> body)
    {
        if (ThreadCount == 1 || count == 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = ThreadCount }, body);
    }

    /// <inheritdoc />
    public void Dispose() { }
}
