using System.Globalization;
using System.Text;
using Arwkv.IO;

namespace Arwkv.Training;

/// <summary>
/// `distill --loss-log FILE`: one "step loss" line per optimizer step (1-based step, loss in round-trip precision, so
/// two logs are equal exactly when the losses are bitwise equal). Each line is flushed as it is written, so the file
/// can be followed while a run trains. Opening rewrites the file from the run's history: after a resume it holds the
/// checkpoint's steps, and the lines a killed run logged past its last checkpoint are dropped before they are
/// recomputed.
/// </summary>
internal sealed class LossLog : IDisposable
{
    private readonly StreamWriter writer;

    private LossLog(string path, IReadOnlyList<double> history)
    {
        var text = new StringBuilder();
        for (int i = 0; i < history.Count; i++) text.Append(Line(i + 1, history[i]));
        AtomicFile.WriteAllText(path, text.ToString());
        writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false));
    }

    /// <summary>Null when <paramref name="path"/> is null (no log requested).</summary>
    public static LossLog? Open(string? path, IReadOnlyList<double> history) => path is null ? null : new LossLog(path, history);

    public void Append(int step, double loss)
    {
        writer.Write(Line(step, loss));
        writer.Flush();
    }

    /// <summary>Parses a log back into (step, loss) pairs.</summary>
    public static List<(int Step, double Loss)> Read(string path)
    {
        var entries = new List<(int, double)>();
        int lineNumber = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            string[] parts = line.Split(' ');
            if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out int step)
                || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double loss))
                throw new CheckpointException(path, $"line {lineNumber}: expected \"step loss\", got \"{line}\"");
            entries.Add((step, loss));
        }
        return entries;
    }

    public void Dispose() => writer.Dispose();

    private static string Line(int step, double loss) => string.Create(CultureInfo.InvariantCulture, $"{step} {loss:R}\n");
}
