using System.Runtime.InteropServices;

namespace Arwkv.IO;

/// <summary>
/// fsync(2) for what .NET has no call for: a directory (so that a rename or a new entry in it survives a power loss,
/// not just a killed process) and files written by code that did not flush them to disk. POSIX only: on Windows NTFS
/// journals renames itself and a directory cannot be flushed, so these do nothing there.
/// </summary>
internal static partial class Durability
{
    /// <summary>Flushes a directory's entries to disk.</summary>
    public static void FlushDirectory(string directory) => Flush(directory, "directory");

    /// <summary>Flushes every file and directory under <paramref name="root"/>, and root itself; returns how many.</summary>
    public static int FlushTree(string root)
    {
        int count = 0;
        foreach (string file in Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories))
        {
            Flush(file, "file");
            count++;
        }
        // Deepest first, so a directory is flushed after the entries inside it.
        foreach (string directory in Directory.EnumerateDirectories(root, "*", SearchOption.AllDirectories).OrderByDescending(d => d.Length))
        {
            Flush(directory, "directory");
            count++;
        }
        Flush(root, "directory");
        return count + 1;
    }

    private static void Flush(string path, string what)
    {
        if (OperatingSystem.IsWindows()) return;
        int fd = Open(path, 0 /* O_RDONLY: enough for fsync, and the only way to open a directory */);
        if (fd < 0) throw new IOException($"{path}: cannot open {what} to flush it to disk (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            if (FSync(fd) != 0) throw new IOException($"{path}: fsync of {what} failed (errno {Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FSync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
