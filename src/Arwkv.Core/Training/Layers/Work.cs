namespace Arwkv.Training.Layers;

/// <summary>
/// Splits a training kernel's independent items across cores. Small jobs run on the calling thread: handing
/// them to the thread pool costs more than the work (and far more on a loaded machine).
/// </summary>
internal static class Work
{
    /// <summary>Below this many multiply-adds in total a job runs serially.</summary>
    public const long SerialThreshold = 1 << 18;

    /// <param name="count">Number of items.</param>
    /// <param name="workPerItem">Rough multiply-adds per item.</param>
    /// <param name="body">Runs item i; items must not write to shared locations.</param>
    public static void For(int count, long workPerItem, Action<int> body)
    {
        if (count <= 1 || Environment.ProcessorCount == 1 || count * workPerItem < SerialThreshold)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, body);
    }
}
