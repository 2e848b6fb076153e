using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace Arwkv.Kernels;

/// <summary>A unit of parallel work: <see cref="Execute"/> is called once for every index in [0, count).</summary>
/// <remarks>
/// Implemented by structs so that <see cref="KernelThreadPool.Run{TWork}(ref TWork, int)"/> dispatches without
/// allocating a delegate or a closure per call.
/// </remarks>
public interface IParallelWork
{
    /// <summary>Does the work of item <paramref name="index"/>; items may run concurrently and in any order.</summary>
    void Execute(int index);
}

/// <summary>
/// The threads that run a model's kernels. Kept alive between tokens so that a decode step does not pay for
/// thread start-up or task scheduling.
/// </summary>
/// <remarks>
/// The calling thread works too, so a pool of N threads owns N - 1 worker threads. Idle workers spin for a short
/// while (the next kernel of a decode step usually follows within microseconds) and then block. A call made while
/// the pool is already busy (from inside a work item, or from a second thread) runs inline on the calling thread
/// instead of waiting, so nested use cannot deadlock. The first exception thrown by a work item is rethrown to the
/// caller after every thread has stopped touching the work.
/// </remarks>
public sealed unsafe class KernelThreadPool : IDisposable
{
    // How long an idle worker spins before it blocks: long enough to bridge the gap between two kernels of one
    // token, short enough not to burn a shared core between tokens.
    static readonly long SpinTicks = Stopwatch.Frequency / 5000; // 200 microseconds

    readonly Thread[] _workers;
    readonly object _gate = new();

    // The current job. The caller writes these fields while _claim is closed, then opens _claim.
    delegate*<void*, int, void> _invoke;
    void* _state;
    int _count;
    // (job number << 32) | next unclaimed item. Workers claim items with a compare-exchange on the whole value, so
    // a worker that woke up late can never claim an item of a newer job with the fields of an older one, and the
    // caller never waits for a worker that did not start: it waits only for claimed items to finish.
    long _claim;
    int _done;          // items of the current job finished (or abandoned after an exception)
    int _sleepers;      // workers blocked (or about to block) on _gate
    int _busy;          // 1 while a job runs; a call that finds it set runs inline
    int _holds;         // > 0 while a caller has said more jobs follow at once (see Hold): workers then never block
    volatile bool _disposed;
    Exception? _failure;

    const long Closed = int.MaxValue;
    /// <summary>
    /// Stopwatch ticks that worker threads (not callers) of every pool have spent running jobs, for profiles that show
    /// how busy the other threads were during a phase.
    /// </summary>
    internal static long WorkerBusyTicks;

    /// <summary>Creates a pool of <paramref name="threads"/> workers (the calling thread counts as one).</summary>
    public KernelThreadPool(int threads)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), "need at least one thread");
        ThreadCount = threads;
        _workers = new Thread[threads - 1];
        for (int i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"Arwkv kernel worker {i + 1}" };
            _workers[i].Start();
        }
    }

    /// <summary>Number of threads that share each kernel's work.</summary>
    public int ThreadCount { get; }

    /// <summary>Workers blocked on the gate (tests check that a <see cref="Hold"/> keeps them spinning).</summary>
    internal int BlockedWorkers => Volatile.Read(ref _sleepers);

    /// <summary>Whether any worker thread is still running (tests check that Dispose stops them).</summary>
    internal bool AnyWorkerAlive => Array.Exists(_workers, t => t.IsAlive);

    /// <summary>Runs body(i) for i in [0, count) across the pool and waits for all of them.</summary>
    public void For(int count, Action<int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var work = new DelegateWork(body);
        Run(ref work, count);
    }

    /// <summary>
    /// Runs work.Execute(i) for i in [0, count) across the pool and waits for all of them. The pool works on a
    /// copy of <paramref name="work"/>, which is written back when every item is done.
    /// </summary>
    public void Run<TWork>(ref TWork work, int count) where TWork : struct, IParallelWork
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count == 0) return;
        if (count == 1 || _workers.Length == 0 || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            for (int i = 0; i < count; i++) work.Execute(i);
            return;
        }
        // The copy lives on this stack frame, which outlives the job, so workers may hold its address.
        TWork local = work;
        try
        {
            long job = (Volatile.Read(ref _claim) >> 32) + 1;
            Interlocked.Exchange(ref _claim, (job << 32) | Closed);
            _invoke = &Invoker<TWork>.Invoke;
            _state = Unsafe.AsPointer(ref local);
            _count = count;
            _failure = null;
            Volatile.Write(ref _done, 0);
            Interlocked.Exchange(ref _claim, job << 32); // full fence: opens the job; _sleepers is read after it
            if (Volatile.Read(ref _sleepers) > 0)
                lock (_gate) Monitor.PulseAll(_gate);

            RunItems(job, &Invoker<TWork>.Invoke, Unsafe.AsPointer(ref local), count);
            var spin = new SpinWait();
            while (Volatile.Read(ref _done) < count) spin.SpinOnce(sleep1Threshold: -1);
            _state = null;
            if (_failure is { } failure) ExceptionDispatchInfo.Capture(failure).Throw();
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
        work = local;
    }

    /// <summary>Claims and runs items of <paramref name="job"/> until none are left or the job changed.</summary>
    void RunItems(long job, delegate*<void*, int, void> invoke, void* state, int count)
    {
        while (true)
        {
            long claim = Volatile.Read(ref _claim);
            int index = (int)claim;
            if (claim >> 32 != job || index >= count) return;
            if (Interlocked.CompareExchange(ref _claim, claim + 1, claim) != claim) continue;
            try
            {
                invoke(state, index);
                Interlocked.Increment(ref _done);
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref _failure, ex, null);
                Abandon(job, count);
            }
        }
    }

    /// <summary>After a failure: counts the failed item and every unclaimed one as done, so the caller stops waiting.</summary>
    void Abandon(long job, int count)
    {
        int abandoned = 1;
        while (true)
        {
            long claim = Volatile.Read(ref _claim);
            int index = (int)claim;
            if (claim >> 32 != job || index >= count) break;
            if (Interlocked.CompareExchange(ref _claim, (job << 32) | (uint)count, claim) == claim)
            {
                abandoned += count - index;
                break;
            }
        }
        Interlocked.Add(ref _done, abandoned);
    }

    void WorkerLoop()
    {
        long seenJob = Volatile.Read(ref _claim) >> 32;
        while (true)
        {
            seenJob = WaitForJob(seenJob);
            if (seenJob < 0) return;
            // These may already belong to a newer job; RunItems's compare-exchange on the job number then fails.
            var invoke = _invoke;
            var state = _state;
            int count = _count;
            long start = Stopwatch.GetTimestamp();
            RunItems(seenJob, invoke, state, count);
            Interlocked.Add(ref WorkerBusyTicks, Stopwatch.GetTimestamp() - start);
        }
    }

    /// <summary>The number of the open job if it is not <paramref name="seenJob"/>, else -1.</summary>
    long NewJobOpen(long seenJob)
    {
        long claim = Volatile.Read(ref _claim);
        return claim >> 32 != seenJob && (int)claim != Closed ? claim >> 32 : -1;
    }

    /// <summary>Waits until a job newer than <paramref name="seenJob"/> opens and returns its number; -1 when disposed.</summary>
    long WaitForJob(long seenJob)
    {
        long start = Stopwatch.GetTimestamp();
        int spins = 0;
        long job;
        while ((job = NewJobOpen(seenJob)) < 0)
        {
            if (_disposed) return -1;
            if (++spins < 64 || Volatile.Read(ref _holds) > 0 || Stopwatch.GetTimestamp() - start < SpinTicks)
            {
                if ((spins & 63) == 0) Thread.Yield(); else Thread.SpinWait(8);
                continue;
            }
            lock (_gate)
            {
                // Announce the sleep before the last check of _claim; the caller opens a job (a full fence) before
                // it reads _sleepers, so one of the two always sees the other's write.
                Interlocked.Increment(ref _sleepers);
                while (NewJobOpen(seenJob) < 0 && !_disposed) Monitor.Wait(_gate);
                Interlocked.Decrement(ref _sleepers);
            }
        }
        return _disposed ? -1 : job;
    }

    /// <summary>
    /// Keeps idle workers spinning, never blocking, until the returned scope is disposed: for a run of kernels with
    /// serial work between them (a whole forward pass), where waking a blocked worker costs tens of microseconds
    /// every time a gap outlasts the normal spin.
    /// </summary>
    internal HoldScope Hold()
    {
        Interlocked.Increment(ref _holds);
        return new HoldScope(this);
    }

    /// <summary>Ends a <see cref="Hold"/>.</summary>
    internal readonly struct HoldScope(KernelThreadPool pool) : IDisposable
    {
        public void Dispose() => Interlocked.Decrement(ref pool._holds);
    }

    /// <summary>Stops the worker threads and waits for them to exit.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        lock (_gate) Monitor.PulseAll(_gate);
        foreach (var worker in _workers)
            if (worker != Thread.CurrentThread) worker.Join();
    }

    static class Invoker<TWork> where TWork : struct, IParallelWork
    {
        public static void Invoke(void* state, int index) => Unsafe.AsRef<TWork>(state).Execute(index);
    }

    readonly struct DelegateWork(Action<int> body) : IParallelWork
    {
        public void Execute(int index) => body(index);
    }
}
