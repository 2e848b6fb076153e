using System.IO.MemoryMappedFiles;
using System.Text;
using Arwkv.Kernels;

namespace Arwkv.IO;

/// <summary>A tensor of a GGUF file: its shape row-major (outermost first; the file stores ggml's ne, innermost first).</summary>
public sealed record GgufTensorInfo(string Name, DType Type, long[] Shape, long Offset, long ByteLength)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A GGUF file (version 2 or 3) mapped into memory and read in place: tensors are views into the mapping, so a
/// quantized model is never dequantized as a whole. Like a safetensors file it is untrusted input: every count,
/// length, offset and size is checked against the file before use, and each problem is a
/// <see cref="CheckpointException"/> naming the file (and the tensor or key).
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    private const uint Magic = 0x46554747; // "GGUF"
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;
    private readonly Dictionary<string, GgufTensorInfo> _tensors;

    private GgufFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr, long length,
        Dictionary<string, object> metadata, List<GgufTensorInfo> tensors, uint version)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePtr;
        Length = length;
        Metadata = metadata;
        TensorList = tensors;
        Version = version;
        _tensors = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The file's length in bytes.</summary>
    public long Length { get; }

    /// <summary>The GGUF version (2 or 3).</summary>
    public uint Version { get; }

    /// <summary>
    /// Metadata values: uint8..int64 as their .NET types, float32/float64, bool, string, arrays as .NET arrays of those
    /// (an array of arrays as object[]).
    /// </summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }

    /// <summary>Tensors in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> TensorList { get; }

    /// <summary>Whether the file has a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The tensor named <paramref name="name"/>; a <see cref="CheckpointException"/> when there is none.</summary>
    public GgufTensorInfo GetInfo(string name) =>
        _tensors.TryGetValue(name, out var info) ? info : throw new CheckpointException(Path, $"no tensor '{name}'");

    /// <summary>Address of the tensor's first byte in the mapping (valid until Dispose).</summary>
    public nint GetPointer(GgufTensorInfo info)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        return (nint)(_base + info.Offset);
    }

    /// <summary>
    /// A 2-D tensor [rows, cols] (ggml ne = [cols, rows]) as a matrix view into the mapping, in its stored type; a 1-D
    /// tensor is one row.
    /// </summary>
    public WeightMatrix GetMatrix(string name)
    {
        var info = GetInfo(name);
        if (info.Shape.Length > 2 && info.Shape[..^2].Any(d => d != 1))
            throw new CheckpointException(Path, $"tensor '{name}' has shape [{string.Join(", ", info.Shape)}], not a matrix");
        long rows = info.Shape.Length >= 2 ? info.Shape[^2] : 1, cols = info.Shape[^1];
        if (rows > int.MaxValue || cols > int.MaxValue) throw new CheckpointException(Path, $"tensor '{name}' is too large for a matrix view");
        return new WeightMatrix(GetPointer(info), info.Type, (int)rows, (int)cols);
    }

    /// <summary>The tensor's values widened to float32 (a copy; for vectors and small tensors).</summary>
    public float[] ReadFloat32(string name)
    {
        var info = GetInfo(name);
        if (info.ElementCount > Array.MaxLength) throw new CheckpointException(Path, $"tensor '{name}' is too large to copy");
        var result = new float[info.ElementCount];
        Kernels.Convert.ToFloat32(GetPointer(info), info.Type, result);
        return result;
    }

    /// <summary>Maps <paramref name="path"/> and validates its header, metadata and tensor table.</summary>
    public static GgufFile Open(string path)
    {
        var (map, length) = ReadOnlyMapping.Open(path, 24, length => $"truncated: {length} bytes, shorter than the 24-byte GGUF header");
        MemoryMappedViewAccessor? view = null;
        byte* basePtr = null;
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
            basePtr += view.PointerOffset;
            var reader = new Reader(path, basePtr, length);
            var (metadata, tensors, version) = Parse(ref reader);
            return new GgufFile(path, map, view, basePtr, length, metadata, tensors, version);
        }
        catch
        {
            if (view != null)
            {
                if (basePtr != null) view.SafeMemoryMappedViewHandle.ReleasePointer();
                view.Dispose();
            }
            map.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, object>, List<GgufTensorInfo>, uint) Parse(ref Reader r)
    {
        string path = r.Path;
        if (r.U32() != Magic) throw new CheckpointException(path, "not a GGUF file (bad magic)");
        uint version = r.U32();
        if (version is not (2 or 3)) throw new CheckpointException(path, $"GGUF version {version} is not supported (2 and 3 are)");
        ulong tensorCount = r.U64(), kvCount = r.U64();
        // Each key-value pair takes at least 12 bytes and each tensor entry at least 28: counts beyond that are lies.
        if (kvCount > (ulong)r.Remaining / 12) throw new CheckpointException(path, $"header claims {kvCount} metadata entries, more than the file holds");
        if (tensorCount > (ulong)r.Remaining / 28) throw new CheckpointException(path, $"header claims {tensorCount} tensors, more than the file holds");

        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.String("a metadata key");
            var type = (GgufValueType)r.U32();
            object value = ReadValue(ref r, type, key, depth: 0);
            if (!metadata.TryAdd(key, value)) throw new CheckpointException(path, $"metadata key '{key}' appears twice");
        }

        uint alignment = 32;
        if (metadata.TryGetValue("general.alignment", out object? a))
        {
            if (a is not uint al || al == 0 || (al & (al - 1)) != 0)
                throw new CheckpointException(path, $"general.alignment {a} is not a power of two (as uint32)");
            alignment = al;
        }

        var entries = new List<(string Name, DType Type, long[] Shape, ulong Offset, long Bytes)>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.String("a tensor name");
            if (!names.Add(name)) throw new CheckpointException(path, $"tensor '{name}' appears twice");
            uint dims = r.U32();
            if (dims is < 1 or > 4) throw new CheckpointException(path, $"tensor '{name}': {dims} dimensions (ggml has 1 to 4)");
            var shape = new long[dims];
            long count = 1;
            for (int d = 0; d < dims; d++)
            {
                ulong ne = r.U64();
                if (ne == 0 || ne > (ulong)r.FileLength) throw new CheckpointException(path, $"tensor '{name}': dimension {d} is {ne}");
                shape[dims - 1 - d] = (long)ne;
                if (count > r.FileLength / (long)ne) throw new CheckpointException(path, $"tensor '{name}': more elements than the file has bytes");
                count *= (long)ne;
            }
            uint ggmlType = r.U32();
            DType type = ggmlType switch
            {
                (uint)GgmlType.F32 => DType.F32,
                (uint)GgmlType.F16 => DType.F16,
                (uint)GgmlType.BF16 => DType.BF16,
                (uint)GgmlType.Q8_0 => DType.Q8_0,
                (uint)GgmlType.Q4_0 => DType.Q4_0,
                _ => throw new CheckpointException(path, $"tensor '{name}': ggml type {ggmlType} is not supported (F32, F16, BF16, Q8_0 and Q4_0 are)"),
            };
            if (shape[^1] % type.BlockSize() != 0)
                throw new CheckpointException(path, $"tensor '{name}': {type} rows must be whole blocks of {type.BlockSize()}, got {shape[^1]} columns");
            ulong offset = r.U64();
            if (offset % alignment != 0) throw new CheckpointException(path, $"tensor '{name}': offset {offset} is not a multiple of the alignment {alignment}");
            entries.Add((name, type, shape, offset, type.RowBytes(count)));
        }

        long dataStart = (r.Position + alignment - 1) / alignment * alignment;
        var tensors = new List<GgufTensorInfo>(entries.Count);
        foreach (var (name, type, shape, offset, bytes) in entries)
        {
            if (offset > (ulong)r.FileLength || dataStart + (long)offset > r.FileLength - bytes)
                throw new CheckpointException(path, $"tensor '{name}': {bytes} bytes at data offset {offset} run past the end of the file ({r.FileLength} bytes)");
            tensors.Add(new GgufTensorInfo(name, type, shape, dataStart + (long)offset, bytes));
        }
        return (metadata, tensors, version);
    }

    private static object ReadValue(ref Reader r, GgufValueType type, string key, int depth)
    {
        switch (type)
        {
            case GgufValueType.UInt8: return r.Bytes(1, key)[0];
            case GgufValueType.Int8: return (sbyte)r.Bytes(1, key)[0];
            case GgufValueType.UInt16: return BitConverter.ToUInt16(r.Bytes(2, key));
            case GgufValueType.Int16: return BitConverter.ToInt16(r.Bytes(2, key));
            case GgufValueType.UInt32: return r.U32();
            case GgufValueType.Int32: return (int)r.U32();
            case GgufValueType.Float32: return BitConverter.UInt32BitsToSingle(r.U32());
            case GgufValueType.Bool:
                byte b = r.Bytes(1, key)[0];
                if (b > 1) throw new CheckpointException(r.Path, $"metadata '{key}': bool value {b}");
                return b == 1;
            case GgufValueType.String: return r.String($"metadata '{key}'");
            case GgufValueType.UInt64: return r.U64();
            case GgufValueType.Int64: return (long)r.U64();
            case GgufValueType.Float64: return BitConverter.UInt64BitsToDouble(r.U64());
            case GgufValueType.Array:
                if (depth > 4) throw new CheckpointException(r.Path, $"metadata '{key}': arrays nested too deeply");
                var elementType = (GgufValueType)r.U32();
                ulong n = r.U64();
                if (n > (ulong)r.Remaining) throw new CheckpointException(r.Path, $"metadata '{key}': array of {n} elements, more than the file holds");
                return elementType switch
                {
                    GgufValueType.String => ReadArray<string>(ref r, elementType, key, n, depth),
                    GgufValueType.Int32 => ReadArray<int>(ref r, elementType, key, n, depth),
                    GgufValueType.UInt32 => ReadArray<uint>(ref r, elementType, key, n, depth),
                    GgufValueType.Float32 => ReadArray<float>(ref r, elementType, key, n, depth),
                    GgufValueType.UInt8 => ReadArray<byte>(ref r, elementType, key, n, depth),
                    GgufValueType.Int8 => ReadArray<sbyte>(ref r, elementType, key, n, depth),
                    GgufValueType.UInt16 => ReadArray<ushort>(ref r, elementType, key, n, depth),
                    GgufValueType.Int16 => ReadArray<short>(ref r, elementType, key, n, depth),
                    GgufValueType.UInt64 => ReadArray<ulong>(ref r, elementType, key, n, depth),
                    GgufValueType.Int64 => ReadArray<long>(ref r, elementType, key, n, depth),
                    GgufValueType.Float64 => ReadArray<double>(ref r, elementType, key, n, depth),
                    GgufValueType.Bool => ReadArray<bool>(ref r, elementType, key, n, depth),
                    GgufValueType.Array => ReadArray<object>(ref r, elementType, key, n, depth),
                    _ => throw new CheckpointException(r.Path, $"metadata '{key}': unknown array element type {(uint)elementType}"),
                };
            default:
                throw new CheckpointException(r.Path, $"metadata '{key}': unknown value type {(uint)type}");
        }
    }

    private static T[] ReadArray<T>(ref Reader r, GgufValueType elementType, string key, ulong n, int depth)
    {
        var result = new T[n];
        for (ulong i = 0; i < n; i++) result[i] = (T)ReadValue(ref r, elementType, key, depth + 1);
        return result;
    }

    /// <summary>A cursor over the mapped file that refuses every read past its end.</summary>
    private ref struct Reader(string path, byte* start, long length)
    {
        public readonly string Path = path;
        public readonly long FileLength = length;
        public long Position;

        public readonly long Remaining => FileLength - Position;

        public ReadOnlySpan<byte> Bytes(long n, string what)
        {
            if (n < 0 || n > Remaining) throw new CheckpointException(Path, $"truncated: {what} needs {n} bytes at offset {Position}, the file ends at {FileLength}");
            var span = new ReadOnlySpan<byte>(start + Position, (int)n);
            Position += n;
            return span;
        }

        public uint U32() => BitConverter.ToUInt32(Bytes(4, "the header"));
        public ulong U64() => BitConverter.ToUInt64(Bytes(8, "the header"));

        public string String(string what)
        {
            ulong n = U64();
            if (n > int.MaxValue || (long)n > Remaining) throw new CheckpointException(Path, $"{what}: string of {n} bytes runs past the end of the file");
            try
            {
                return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(Bytes((long)n, what));
            }
            catch (DecoderFallbackException e)
            {
                throw new CheckpointException(Path, $"{what}: not valid UTF-8", e);
            }
        }
    }

    /// <summary>Unmaps the file; views and pointers from it are invalid afterwards.</summary>
    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
