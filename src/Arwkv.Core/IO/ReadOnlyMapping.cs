using System.IO.MemoryMappedFiles;

namespace Arwkv.IO;

/// <summary>Opens a checkpoint file for read-only memory mapping, the one way every reader does it.</summary>
internal static class ReadOnlyMapping
{
    /// <summary>
    /// Maps <paramref name="path"/>, following symbolic links: the Hugging Face cache stores
    /// <c>snapshots/&lt;rev&gt;/model.safetensors</c> as a link to <c>../../blobs/&lt;sha&gt;</c>, and a link's own size
    /// (what <see cref="FileInfo.Length"/> reports for it) is the length of the target's name, not of the file. The
    /// length comes from the opened stream, so it is the size of the very file that is mapped.
    /// </summary>
    /// <exception cref="CheckpointException">Missing, unreadable, or shorter than <paramref name="minimumLength"/>
    /// (<paramref name="tooShort"/> says why that length is too short).</exception>
    public static (MemoryMappedFile Map, long Length) Open(string path, long minimumLength, Func<long, string> tooShort)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is { } target && !LinkResolves(info))
            throw new CheckpointException(path, $"file not found: it is a symbolic link to '{target}', which does not exist (or the links form a loop)");
        if (!info.Exists) throw new CheckpointException(path, "file not found");
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException(path, "cannot be opened: " + e.Message, e);
        }
        try
        {
            long length = stream.Length;
            if (length < minimumLength) throw new CheckpointException(path, tooShort(length));
            var map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            return (map, length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stream.Dispose();
            throw new CheckpointException(path, "cannot be mapped: " + e.Message, e);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    static bool LinkResolves(FileInfo link)
    {
        try
        {
            return link.ResolveLinkTarget(returnFinalTarget: true)?.Exists ?? false;
        }
        catch (IOException)
        {
            return false;
        }
    }
}
