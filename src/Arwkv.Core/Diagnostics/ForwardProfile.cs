using System.Diagnostics;

namespace Arwkv.Diagnostics;

/// <summary>The parts of a forward pass that <see cref="ForwardProfile"/> times separately.</summary>
internal enum ForwardPhase
{
    /// <summary>RMSNorms, residual adds, the embedding lookup.</summary>
    NormsAndResiduals,
    /// <summary>Token shift and the six interpolations of the time mix.</summary>
    TimeMixShift,
    /// <summary>The r, k, v projections.</summary>
    TimeMixProjections,
    /// <summary>The decay, value, in-context-rate and gate LoRAs with the elementwise math around them.</summary>
    TimeMixLoras,
    /// <summary>The WKV7 recurrence.</summary>
    Wkv7,
    /// <summary>Gate multiply and the output projection.</summary>
    TimeMixOutput,
    /// <summary>The MLP's gate and up projections.</summary>
    MlpGateUp,
    /// <summary>silu(gate) * up.</summary>
    MlpActivation,
    /// <summary>The MLP's down projection.</summary>
    MlpDown,
    /// <summary>Final norm and lm_head.</summary>
    Logits,
}

/// <summary>
/// Wall time per phase of ArwkvModel's forward pass, for `arwkv bench --profile`: where a prefill's time goes, without
/// a profiler. Off by default; a lap then costs one branch. Not thread-safe: one forward pass at a time.
/// </summary>
internal static class ForwardProfile
{
    private static readonly double[] s_seconds = new double[Enum.GetValues<ForwardPhase>().Length];
    private static readonly double[] s_workerSeconds = new double[s_seconds.Length];
    private static long s_last, s_lastWorker;

    /// <summary>Whether laps are recorded.</summary>
    public static bool Enabled { get; set; }

    /// <summary>Starts the clock for the next lap.</summary>
    public static void Start()
    {
        if (!Enabled) return;
        s_last = Stopwatch.GetTimestamp();
        s_lastWorker = Volatile.Read(ref Kernels.KernelThreadPool.WorkerBusyTicks);
    }

    /// <summary>Charges the time since the last lap (or <see cref="Start"/>) to <paramref name="phase"/>.</summary>
    public static void Lap(ForwardPhase phase)
    {
        if (!Enabled) return;
        long now = Stopwatch.GetTimestamp();
        long worker = Volatile.Read(ref Kernels.KernelThreadPool.WorkerBusyTicks);
        s_seconds[(int)phase] += (now - s_last) / (double)Stopwatch.Frequency;
        s_workerSeconds[(int)phase] += (worker - s_lastWorker) / (double)Stopwatch.Frequency;
        s_last = now;
        s_lastWorker = worker;
    }

    /// <summary>Clears the totals.</summary>
    public static void Reset()
    {
        Array.Clear(s_seconds);
        Array.Clear(s_workerSeconds);
    }

    /// <summary>Total seconds charged to each phase since the last <see cref="Reset"/>.</summary>
    public static IReadOnlyList<(ForwardPhase Phase, double Seconds)> Totals =>
        Enum.GetValues<ForwardPhase>().Select(p => (p, s_seconds[(int)p])).ToArray();

    /// <summary>
    /// Per phase, the seconds worker threads spent running jobs (a job's time lands in the phase during which it
    /// ended): against the phase's time times the number of workers, how well the phase used the other threads.
    /// </summary>
    public static IReadOnlyList<(ForwardPhase Phase, double Seconds)> WorkerTotals =>
        Enum.GetValues<ForwardPhase>().Select(p => (p, s_workerSeconds[(int)p])).ToArray();
}
