namespace Arwkv.IO;

/// <summary>
/// A checkpoint, tokenizer or data file is unusable: truncated, inconsistent, of an unknown type, or missing
/// something the model needs. The message names the file and the problem.
/// </summary>
public sealed class CheckpointException : Exception
{
    /// <summary>Creates an exception for <paramref name="path"/> describing <paramref name="problem"/>.</summary>
    public CheckpointException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner)
    {
        FilePath = path;
        Problem = problem;
    }

    /// <summary>The file (or directory) at fault.</summary>
    public string FilePath { get; }

    /// <summary>What is wrong with it.</summary>
    public string Problem { get; }
}
