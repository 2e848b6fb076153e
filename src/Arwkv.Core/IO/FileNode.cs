using System.Runtime.InteropServices;

namespace Arwkv.IO;

/// <summary>What kind of file system object a path names.</summary>
internal enum FileNodeKind
{
    /// <summary>Nothing there (or a directory on the way is missing).</summary>
    Missing,
    /// <summary>A regular file.</summary>
    Regular,
    /// <summary>A directory.</summary>
    Directory,
    /// <summary>A symbolic link (only when links are not followed).</summary>
    SymbolicLink,
    /// <summary>A FIFO (named pipe).</summary>
    Fifo,
    /// <summary>A character device such as /dev/null.</summary>
    CharacterDevice,
    /// <summary>A block device.</summary>
    BlockDevice,
    /// <summary>A Unix domain socket.</summary>
    Socket,
    /// <summary>A kind this code does not know (a whiteout, a door): never replaced either.</summary>
    Other,
}

/// <summary>
/// The kind and identity (device and inode) of a path. .NET has no public call for either: FileSystemInfo reports a
/// FIFO or a device node as a plain file, and two paths to one file (a hard link, a link through another directory)
/// can only be told apart by their inodes. On Linux this is statx(2), whose buffer has one layout on every
/// architecture (stat's differs between x64 and arm64); elsewhere only directories and links are told apart, and
/// identity falls back to comparing full paths.
/// </summary>
internal readonly partial record struct FileNode(FileNodeKind Kind, ulong Device, ulong Inode, bool HasIdentity)
{
    /// <summary>The kind of <paramref name="path"/>, following symbolic links or not.</summary>
    /// <exception cref="IOException">The path exists but cannot be examined (permissions, a loop of links).</exception>
    public static FileNode Stat(string path, bool followLinks)
    {
        if (OperatingSystem.IsLinux() && TryStatx(path, followLinks, out FileNode node)) return node;
        return Portable(path, followLinks);
    }

    /// <summary>Whether two paths name one file, after following links (false when either is missing).</summary>
    public static bool SameFile(string a, string b)
    {
        FileNode x = Stat(a, followLinks: true), y = Stat(b, followLinks: true);
        if (x.Kind == FileNodeKind.Missing || y.Kind == FileNodeKind.Missing) return false;
        if (x.HasIdentity && y.HasIdentity) return x.Device == y.Device && x.Inode == y.Inode;
        StringComparison comparison = OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase;
        return string.Equals(FinalPath(a), FinalPath(b), comparison);
    }

    /// <summary>The full path of what <paramref name="path"/> finally names, links followed.</summary>
    public static string FinalPath(string path)
    {
        string full = Path.GetFullPath(path);
        return File.ResolveLinkTarget(full, returnFinalTarget: true)?.FullName ?? full;
    }

    /// <summary>The kind in words, with an article, for messages.</summary>
    public string Description => Kind switch
    {
        FileNodeKind.Missing => "missing",
        FileNodeKind.Regular => "a regular file",
        FileNodeKind.Directory => "a directory",
        FileNodeKind.SymbolicLink => "a symbolic link",
        FileNodeKind.Fifo => "a FIFO (named pipe)",
        FileNodeKind.CharacterDevice => "a character device",
        FileNodeKind.BlockDevice => "a block device",
        FileNodeKind.Socket => "a socket",
        _ => "not a regular file",
    };

    private static FileNode Portable(string path, bool followLinks)
    {
        var info = new FileInfo(path);
        if (!followLinks && info.LinkTarget is not null) return new FileNode(FileNodeKind.SymbolicLink, 0, 0, false);
        if (followLinks && info.LinkTarget is not null) info = new FileInfo(FinalPath(path));
        if (!info.Exists) return new FileNode(System.IO.Directory.Exists(info.FullName) ? FileNodeKind.Directory : FileNodeKind.Missing, 0, 0, false);
        return new FileNode(FileNodeKind.Regular, 0, 0, false);
    }

    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxType = 0x1, StatxIno = 0x100;
    private const int ENOENT = 2, ENOTDIR = 20, ENOSYS = 38;

    private static unsafe bool TryStatx(string path, bool followLinks, out FileNode node)
    {
        node = default;
        Statx buffer;
        int rc;
        try
        {
            rc = StatxCall(AtFdCwd, path, followLinks ? 0 : AtSymlinkNoFollow, StatxType | StatxIno, &buffer);
        }
        catch (EntryPointNotFoundException)
        {
            return false; // a C library older than glibc 2.28
        }
        if (rc != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno is ENOENT or ENOTDIR)
            {
                node = new FileNode(FileNodeKind.Missing, 0, 0, false);
                return true;
            }
            if (errno == ENOSYS) return false; // a kernel older than 4.11
            throw new IOException($"{path}: cannot examine it (statx errno {errno})");
        }
        FileNodeKind kind = (buffer.Mode & 0xF000) switch
        {
            0x8000 => FileNodeKind.Regular,
            0x4000 => FileNodeKind.Directory,
            0xA000 => FileNodeKind.SymbolicLink,
            0x1000 => FileNodeKind.Fifo,
            0x2000 => FileNodeKind.CharacterDevice,
            0x6000 => FileNodeKind.BlockDevice,
            0xC000 => FileNodeKind.Socket,
            _ => FileNodeKind.Other,
        };
        node = new FileNode(kind, ((ulong)buffer.DevMajor << 32) | buffer.DevMinor, buffer.Ino, true);
        return true;
    }

    /// <summary>struct statx (linux/stat.h): fixed layout, 256 bytes.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct Statx
    {
        [FieldOffset(28)] public ushort Mode;
        [FieldOffset(32)] public ulong Ino;
        [FieldOffset(136)] public uint DevMajor;
        [FieldOffset(140)] public uint DevMinor;
    }

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int StatxCall(int dirfd, string path, int flags, uint mask, Statx* buffer);
}
