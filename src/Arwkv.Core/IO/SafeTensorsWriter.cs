using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Arwkv.IO;

/// <summary>A tensor to be written: float32 values narrowed to <paramref name="Type"/> on the way out.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="Type">Storage type in the file.</param>
/// <param name="Shape">Shape, outermost first; the product must equal the data length.</param>
/// <param name="Data">Row-major values.</param>
public sealed record TensorToWrite(string Name, DType Type, long[] Shape, ReadOnlyMemory<float> Data);

/// <summary>
/// Writes safetensors files. The file is written under a temporary name and renamed into place, so a crash or a
/// kill never leaves a half-written checkpoint where a good one was.
/// </summary>
public static class SafeTensorsWriter
{
    /// <summary>Writes <paramref name="tensors"/> to <paramref name="path"/> atomically.</summary>
    public static void Write(string path, IEnumerable<TensorToWrite> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        long offset = 0;
        var header = new MemoryStream();
        using (var json = new Utf8JsonWriter(header))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) json.WriteString(k, v);
                json.WriteEndObject();
            }
            foreach (TensorToWrite t in list)
            {
                if (!names.Add(t.Name)) throw new ArgumentException($"duplicate tensor name '{t.Name}'");
                long count = t.Shape.Aggregate(1L, (a, b) => a * b);
                if (count != t.Data.Length) throw new ArgumentException($"tensor '{t.Name}': shape [{string.Join(", ", t.Shape)}] holds {count} values, data has {t.Data.Length}");
                long bytes = count * t.Type.SizeOf();
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.Type.SafeTensorsName());
                json.WriteStartArray("shape");
                foreach (long d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        // The data section starts 8-byte aligned, as the reference writer pads the header with spaces.
        int pad = (int)((8 - header.Length % 8) % 8);
        for (int i = 0; i < pad; i++) header.WriteByte((byte)' ');

        AtomicFile.Write(path, stream =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            stream.Write(len);
            header.Position = 0;
            header.CopyTo(stream);
            var buffer = new byte[1 << 16];
            foreach (TensorToWrite t in list) WriteData(stream, t, buffer);
        });
    }

    private static void WriteData(Stream stream, TensorToWrite t, byte[] buffer)
    {
        ReadOnlySpan<float> data = t.Data.Span;
        int size = t.Type.SizeOf();
        int perChunk = buffer.Length / size;
        for (int start = 0; start < data.Length; start += perChunk)
        {
            ReadOnlySpan<float> chunk = data.Slice(start, Math.Min(perChunk, data.Length - start));
            Span<byte> bytes = buffer.AsSpan(0, chunk.Length * size);
            switch (t.Type)
            {
                case DType.F32:
                    MemoryMarshal.AsBytes(chunk).CopyTo(bytes);
                    break;
                case DType.BF16:
                    Kernels.Convert.Float32ToBFloat16(chunk, MemoryMarshal.Cast<byte, ushort>(bytes));
                    break;
                case DType.F16:
                    System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(chunk, MemoryMarshal.Cast<byte, Half>(bytes));
                    break;
            }
            stream.Write(bytes);
        }
    }
}

/// <summary>
/// Writes a file under a temporary name in the same directory, then renames it over the target. Only a regular file
/// is ever replaced: a target that is a directory, a FIFO, a device node (such as /dev/null) or a socket is refused,
/// and so is a target that is one of the operation's own inputs. A target that is a symbolic link is written
/// through: the file the link finally points to is replaced atomically and the link stays a link; a dangling link is
/// refused. The checks name the path and what it is; they run before anything is written (a file swapped in between
/// the check and the rename is not caught: the writer guards against mistakes, not against a concurrent attacker).
/// </summary>
public static class AtomicFile
{
    /// <summary>Calls <paramref name="write"/> with a stream to a temporary file and renames it to <paramref name="path"/> once it returns.</summary>
    /// <exception cref="IOException">The target cannot be replaced (see <see cref="ResolveTarget"/>), or writing failed.</exception>
    public static void Write(string path, Action<Stream> write) => Write(path, write, []);

    /// <summary>
    /// Like <see cref="Write(string, Action{Stream})"/>, refusing a target that is the same file (by identity: links
    /// and hard links followed) as one of <paramref name="inputs"/>, the files the operation reads.
    /// </summary>
    /// <exception cref="IOException">The target cannot be replaced (see <see cref="ResolveTarget"/>), or writing failed.</exception>
    public static void Write(string path, Action<Stream> write, IEnumerable<string> inputs)
    {
        string full = ResolveTarget(path, inputs);
        string directory = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(directory);
        string temp = Path.Combine(directory, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                if (TestFaults.KillNow()) TestFaults.KillMidWrite(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
            // The rename is in the directory's entries: flushed, it survives a power loss too.
            Durability.FlushDirectory(directory);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>
    /// The full path that writing <paramref name="path"/> will replace: the path itself, or, for a symbolic link,
    /// the file it finally points to. Commands call it before long work so that a bad output fails first.
    /// </summary>
    /// <exception cref="IOException">
    /// The target (or a link's final target) exists and is not a regular file, the link is dangling or cannot be
    /// resolved, or the target is one of <paramref name="inputs"/>; the message names the path and the reason.
    /// </exception>
    public static string ResolveTarget(string path, IEnumerable<string>? inputs = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path);
        string target = full;
        string via = "";
        FileNode node = FileNode.Stat(full, followLinks: false);
        if (node.Kind == FileNodeKind.SymbolicLink)
        {
            try
            {
                target = File.ResolveLinkTarget(full, returnFinalTarget: true)?.FullName ?? full;
            }
            catch (IOException e)
            {
                throw new IOException($"{path}: a symbolic link that cannot be resolved ({e.Message}); nothing written", e);
            }
            via = $"a symbolic link to {target}, which is ";
            node = FileNode.Stat(target, followLinks: false);
            if (node.Kind == FileNodeKind.Missing)
                throw new IOException($"{path}: a symbolic link to {target}, which does not exist; refusing to write through a dangling link (remove the link or point it at a file)");
        }
        if (node.Kind is not (FileNodeKind.Missing or FileNodeKind.Regular))
            throw new IOException($"{path}: {via}{node.Description}, not a regular file; refusing to replace it (write to a file path)");
        if (node.Kind == FileNodeKind.Regular && inputs is not null)
            foreach (string input in inputs)
                if (FileNode.SameFile(target, input))
                    throw new IOException($"{path}: {via}the same file as {input}, an input of this command; refusing to replace what is being read (write somewhere else)");
        return target;
    }

    /// <summary>Writes text atomically (UTF-8, no BOM).</summary>
    public static void WriteAllText(string path, string text) =>
        Write(path, s => s.Write(new UTF8Encoding(false).GetBytes(text)));
}

/// <summary>
/// Test-only fault injection for the kill/resume tests: with the environment variable ARWKV_TEST_KILL_DURING_SAVE=N,
/// the N-th <see cref="AtomicFile.Write(string, Action{Stream}, IEnumerable{string})"/> of the process (counted from 1) truncates its temporary file to half of
/// what was written and kills the process (SIGKILL on Unix: no finally blocks, no cleanup), so a test can stop a run
/// in the middle of a checkpoint write, before the rename. Unset (always, outside tests), it costs one static read.
/// </summary>
internal static class TestFaults
{
    private static readonly int KillAtWrite =
        int.TryParse(Environment.GetEnvironmentVariable("ARWKV_TEST_KILL_DURING_SAVE"), out int n) && n > 0 ? n : 0;
    private static int writes;

    public static bool KillNow() => KillAtWrite > 0 && Interlocked.Increment(ref writes) == KillAtWrite;

    public static void KillMidWrite(FileStream stream)
    {
        stream.Flush();
        stream.SetLength(stream.Length / 2);
        stream.Flush(flushToDisk: true);
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        self.Kill();
        Thread.Sleep(Timeout.Infinite);
    }
}
