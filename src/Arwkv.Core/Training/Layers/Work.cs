namespace Arwkv.Training.Layers;

/// <summary>
/// Splits a training kernel's independent rows across cores. Training steps are long enough that
/// Parallel.For's scheduling cost is noise; a single core falls back to a plain loop.
/// </summary>
internal static class Work
{
    public static void For(int count, Action<int> body)
    {
        if (count <= 1 || Environment.ProcessorCount == 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, body);
    }
}
