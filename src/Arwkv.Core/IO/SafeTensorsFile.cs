using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Arwkv.IO;

/// <summary>Where one tensor lives in a safetensors file.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="Type">Its element type.</param>
/// <param name="Shape">Its shape, outermost first.</param>
/// <param name="Offset">Byte offset of its data, counted from the start of the file.</param>
/// <param name="ByteLength">Bytes of data.</param>
public sealed record TensorInfo(string Name, DType Type, long[] Shape, long Offset, long ByteLength)
{
    /// <summary>Number of elements (product of the shape; 1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (long d in Shape) n *= d;
            return n;
        }
    }

    /// <summary>The shape written as [a, b, ...] for messages.</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// A memory-mapped safetensors file. Tensor data is never copied: <see cref="GetPointer"/> returns an address
/// inside the mapping, valid until the file is disposed. The header is validated completely when the file is
/// opened, so a truncated or lying file fails here with a <see cref="CheckpointException"/>, not later with a crash.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>Headers above this size are rejected before anything is allocated for them.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _base;
    private readonly Dictionary<string, TensorInfo> _tensors;

    private SafeTensorsFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* basePtr,
        long length, Dictionary<string, TensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePtr;
        Length = length;
        _tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The file's size in bytes.</summary>
    public long Length { get; }

    /// <summary>The header's <c>__metadata__</c> entries.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>All tensors in the file, by name.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    /// <summary>Maps <paramref name="path"/> and validates its header.</summary>
    /// <exception cref="CheckpointException">The file is missing, truncated or its header is inconsistent.</exception>
    public static SafeTensorsFile Open(string path)
    {
        var (map, length) = ReadOnlyMapping.Open(path, 8, length => $"truncated: {length} bytes, shorter than the 8-byte header length");
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* basePtr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
            basePtr += view.PointerOffset;
            var (tensors, metadata) = ParseHeader(path, new ReadOnlySpan<byte>(basePtr, (int)Math.Min(length, int.MaxValue)), length);
            return new SafeTensorsFile(path, map, view, basePtr, length, tensors, metadata);
        }
        catch
        {
            if (view != null)
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
                view.Dispose();
            }
            map.Dispose();
            throw;
        }
    }

    internal static (Dictionary<string, TensorInfo>, Dictionary<string, string>) ParseHeader(string path, ReadOnlySpan<byte> file, long fileLength)
    {
        ulong headerLength = MemoryMarshal.Read<ulong>(file);
        if (headerLength > (ulong)MaxHeaderBytes)
            throw new CheckpointException(path, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit (not a safetensors file, or corrupt)");
        if ((long)headerLength > fileLength - 8)
            throw new CheckpointException(path, $"truncated: header length {headerLength} but only {fileLength - 8} bytes follow");
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        // JsonDocument accepts invalid UTF-8 inside strings and only fails when a name is read; check up front.
        if (!System.Text.Unicode.Utf8.IsValid(file.Slice(8, (int)headerLength)))
            throw new CheckpointException(path, "header is not valid JSON: it is not valid UTF-8");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(file.Slice(8, (int)headerLength).ToArray());
        }
        catch (Exception e) when (e is JsonException or ArgumentException)
        {
            throw new CheckpointException(path, "header is not valid JSON: " + e.Message, e);
        }

        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointException(path, "header is not a JSON object");
            // System.Text.Json lets duplicate keys through; a header naming a tensor twice is ambiguous, so it is rejected.
            bool sawMetadata = false;
            foreach (JsonProperty entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__")
                {
                    if (sawMetadata) throw new CheckpointException(path, "header has two __metadata__ entries");
                    sawMetadata = true;
                    if (entry.Value.ValueKind != JsonValueKind.Object)
                        throw new CheckpointException(path, "__metadata__ must be a JSON object of strings");
                    foreach (JsonProperty m in entry.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new CheckpointException(path, $"__metadata__ entry '{m.Name}' is not a string");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!))
                            throw new CheckpointException(path, $"__metadata__ has two entries named '{m.Name}'");
                    }
                    continue;
                }
                if (!tensors.TryAdd(entry.Name, ParseTensor(path, entry, dataStart, dataLength)))
                    throw new CheckpointException(path, $"tensor '{entry.Name}' appears twice in the header");
            }
        }

        // As the reference implementation (safetensors' validate): sorted by offsets, each tensor begins where the
        // previous one ends, from 0 to the end of the file. An overlap means the header lies about the layout; a hole or
        // trailing bytes are data no tensor owns, which writers never produce and which may hide a damaged header.
        var ordered = tensors.Values.OrderBy(t => t.Offset).ThenBy(t => t.ByteLength).ToArray();
        long expectedOffset = dataStart;
        string? previous = null;
        foreach (TensorInfo t in ordered)
        {
            if (t.Offset < expectedOffset)
                throw new CheckpointException(path, $"tensors '{previous}' and '{t.Name}' overlap in the data section");
            if (t.Offset > expectedOffset)
                throw new CheckpointException(path, $"tensor '{t.Name}': {t.Offset - expectedOffset} bytes before it belong to no tensor "
                    + $"(data_offsets begin at {t.Offset - dataStart}, {(previous is null ? "the data section starts at 0" : $"'{previous}' ends at {expectedOffset - dataStart}")})");
            expectedOffset = t.Offset + t.ByteLength;
            previous = t.Name;
        }
        if (expectedOffset != fileLength)
            throw new CheckpointException(path, $"{fileLength - expectedOffset} bytes after the last tensor{(previous is null ? "" : $" ('{previous}')")} belong to no tensor");
        return (tensors, metadata);
    }

    private static TensorInfo ParseTensor(string path, JsonProperty entry, long dataStart, long dataLength)
    {
        string name = entry.Name;
        JsonElement e = entry.Value;
        if (e.ValueKind != JsonValueKind.Object)
            throw new CheckpointException(path, $"tensor '{name}': header entry is not a JSON object");
        if (!e.TryGetProperty("dtype", out JsonElement dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw new CheckpointException(path, $"tensor '{name}': header entry has no dtype string");
        if (!e.TryGetProperty("shape", out JsonElement shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw new CheckpointException(path, $"tensor '{name}': header entry has no shape array");
        if (!e.TryGetProperty("data_offsets", out JsonElement offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw new CheckpointException(path, $"tensor '{name}': header entry needs data_offsets [begin, end]");

        string dtypeName = dtypeEl.GetString()!;
        if (!DTypeInfo.TryParseSafeTensors(dtypeName, out DType type))
            throw new CheckpointException(path, $"tensor '{name}': unsupported dtype '{dtypeName}' (supported: F32, F16, BF16)");

        var shape = new long[shapeEl.GetArrayLength()];
        long count = 1;
        int k = 0;
        foreach (JsonElement d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new CheckpointException(path, $"tensor '{name}': shape must hold non-negative integers");
            shape[k++] = dim;
            count = dim == 0 ? 0 : (count > long.MaxValue / dim ? throw new CheckpointException(path, $"tensor '{name}': shape overflows") : count * dim);
        }

        if (offEl[0].ValueKind != JsonValueKind.Number || offEl[1].ValueKind != JsonValueKind.Number
            || !offEl[0].TryGetInt64(out long begin) || !offEl[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new CheckpointException(path, $"tensor '{name}': data_offsets must be two integers 0 <= begin <= end");
        if (end > dataLength)
            throw new CheckpointException(path, $"tensor '{name}': data_offsets [{begin}, {end}] point past the end of the data ({dataLength} bytes; truncated file?)");
        // A lying shape can make count * size overflow; -1 then stands for "more than any file holds".
        long actualBytes = end - begin;
        long expected = count <= long.MaxValue / type.SizeOf() ? count * type.SizeOf() : -1;
        if (actualBytes != expected)
            throw new CheckpointException(path, $"tensor '{name}': {actualBytes} bytes of data, but {dtypeName} [{string.Join(", ", shape)}] needs {(expected < 0 ? "more than 2^63" : expected.ToString())}");
        return new TensorInfo(name, type, shape, dataStart + begin, end - begin);
    }

    /// <summary>Whether the file holds a tensor of this name.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>Looks up a tensor, failing with a message that names the file and the tensor.</summary>
    public TensorInfo GetInfo(string name) =>
        _tensors.TryGetValue(name, out TensorInfo? info) ? info : throw new CheckpointException(Path, $"missing tensor '{name}'");

    /// <summary>Address of a tensor's first element inside the mapping.</summary>
    public nint GetPointer(TensorInfo info)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        return (nint)(_base + info.Offset);
    }

    /// <summary>The raw bytes of a tensor, without copying.</summary>
    public ReadOnlySpan<byte> GetBytes(TensorInfo info)
    {
        if (info.ByteLength > int.MaxValue) throw new CheckpointException(Path, $"tensor '{info.Name}' is over 2 GiB; use GetPointer");
        return new ReadOnlySpan<byte>((void*)GetPointer(info), (int)info.ByteLength);
    }

    /// <summary>Copies a tensor into a new float32 array, widening F16/BF16.</summary>
    public float[] ReadFloat32(TensorInfo info)
    {
        var result = new float[info.ElementCount];
        Kernels.Convert.ToFloat32(GetPointer(info), info.Type, result);
        return result;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view?.SafeMemoryMappedViewHandle.ReleasePointer();
        _view?.Dispose();
        _map?.Dispose();
    }
}
