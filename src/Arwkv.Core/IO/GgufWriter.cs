using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace Arwkv.IO;

/// <summary>GGUF metadata value types (the numbers are the file format's).</summary>
internal enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>The ggml tensor types this project writes and reads (the numbers are ggml's <c>ggml_type</c>).</summary>
internal enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
    BF16 = 30,
}

/// <summary>
/// Writes GGUF version 3 files: header, typed metadata (scalars, strings and arrays), tensor infos, then the tensor
/// data, each tensor starting on a multiple of <see cref="Alignment"/> bytes from the start of the data section.
/// Shapes are given row-major, outermost first, like everywhere else in this project; the file stores ggml's
/// <c>ne</c>, innermost first, so the writer reverses them. Tensor data is produced on demand while writing, so a
/// model larger than memory is never held whole.
/// </summary>
internal sealed class GgufWriter
{
    public const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    public const uint Version = 3;
    public const int Alignment = 32;

    private readonly List<(string Key, GgufValueType Type, object Value, GgufValueType ElementType)> _metadata = [];
    private readonly List<Tensor> _tensors = [];
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly HashSet<string> _tensorNames = new(StringComparer.Ordinal);

    private sealed record Tensor(string Name, long[] Shape, DType Type, Func<ReadOnlyMemory<float>> Data)
    {
        public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
        public long ByteLength => Type.RowBytes(ElementCount);
    }

    public GgufWriter()
    {
        // llama.cpp reads general.alignment when present; writing it makes the layout explicit.
        AddUInt32("general.alignment", Alignment);
    }

    public IReadOnlyList<string> TensorNames => _tensors.Select(t => t.Name).ToList();

    public void AddUInt32(string key, uint value) => Add(key, GgufValueType.UInt32, value);
    public void AddInt32(string key, int value) => Add(key, GgufValueType.Int32, value);
    public void AddUInt64(string key, ulong value) => Add(key, GgufValueType.UInt64, value);
    public void AddFloat32(string key, float value) => Add(key, GgufValueType.Float32, value);
    public void AddBool(string key, bool value) => Add(key, GgufValueType.Bool, value);
    public void AddString(string key, string value) => Add(key, GgufValueType.String, value);
    public void AddStringArray(string key, IReadOnlyList<string> values) => Add(key, GgufValueType.Array, values, GgufValueType.String);
    public void AddInt32Array(string key, IReadOnlyList<int> values) => Add(key, GgufValueType.Array, values, GgufValueType.Int32);
    public void AddFloat32Array(string key, IReadOnlyList<float> values) => Add(key, GgufValueType.Array, values, GgufValueType.Float32);

    private void Add(string key, GgufValueType type, object value, GgufValueType elementType = default)
    {
        if (!_keys.Add(key)) throw new ArgumentException($"duplicate GGUF metadata key '{key}'", nameof(key));
        _metadata.Add((key, type, value, elementType));
    }

    /// <summary>Adds a tensor; <paramref name="data"/> is called once, while the file is written.</summary>
    public void AddTensor(string name, long[] shape, DType type, Func<ReadOnlyMemory<float>> data)
    {
        if (!_tensorNames.Add(name)) throw new ArgumentException($"duplicate GGUF tensor name '{name}'", nameof(name));
        if (shape.Length is < 1 or > 4) throw new ArgumentException($"tensor '{name}': ggml tensors have 1 to 4 dimensions, got {shape.Length}", nameof(shape));
        if (shape.Any(d => d <= 0)) throw new ArgumentException($"tensor '{name}': dimensions must be positive", nameof(shape));
        if (shape[^1] % type.BlockSize() != 0)
            throw new ArgumentException($"tensor '{name}': {type} needs rows of whole {type.BlockSize()}-element blocks, got {shape[^1]} columns", nameof(shape));
        _tensors.Add(new Tensor(name, (long[])shape.Clone(), type, data));
    }

    /// <summary>Writes the file atomically (temporary file, then rename).</summary>
    public void Write(string path) => Write(path, []);

    /// <summary>Writes the file atomically, refusing a <paramref name="path"/> that is one of <paramref name="inputs"/> (see <see cref="AtomicFile"/>).</summary>
    public void Write(string path, IEnumerable<string> inputs) => AtomicFile.Write(path, stream =>
    {
        var output = new BufferedStream(stream, 1 << 20);
        var w = new BinaryWriter(output, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, type, value, elementType) in _metadata)
        {
            WriteString(w, key);
            w.Write((uint)type);
            WriteValue(w, type, value, elementType);
        }

        long offset = 0;
        foreach (Tensor t in _tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int d = t.Shape.Length - 1; d >= 0; d--) w.Write((ulong)t.Shape[d]);
            w.Write((uint)ToGgml(t.Type));
            w.Write((ulong)offset);
            offset = AlignUp(offset + t.ByteLength);
        }
        w.Flush();
        Pad(output, output.Position);

        var buffer = new byte[1 << 16];
        long dataStart = output.Position;
        foreach (Tensor t in _tensors)
        {
            ReadOnlyMemory<float> data = t.Data();
            if (data.Length != t.ElementCount)
                throw new InvalidOperationException($"tensor '{t.Name}': shape [{string.Join(", ", t.Shape)}] holds {t.ElementCount} values, its data has {data.Length}");
            WriteData(output, data.Span, t.Type, buffer);
            Pad(output, output.Position - dataStart);
        }
        output.Flush();
    }, inputs);

    internal static GgmlType ToGgml(DType type) => type switch
    {
        DType.F32 => GgmlType.F32,
        DType.F16 => GgmlType.F16,
        DType.BF16 => GgmlType.BF16,
        DType.Q8_0 => GgmlType.Q8_0,
        DType.Q4_0 => GgmlType.Q4_0,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    private static long AlignUp(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream s, long position)
    {
        long pad = AlignUp(position) - position;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value, GgufValueType elementType)
    {
        switch (type)
        {
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.UInt64: w.Write((ulong)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((byte)((bool)value ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.Array:
                w.Write((uint)elementType);
                switch (elementType)
                {
                    case GgufValueType.String:
                        var strings = (IReadOnlyList<string>)value;
                        w.Write((ulong)strings.Count);
                        foreach (string s in strings) WriteString(w, s);
                        break;
                    case GgufValueType.Int32:
                        var ints = (IReadOnlyList<int>)value;
                        w.Write((ulong)ints.Count);
                        foreach (int i in ints) w.Write(i);
                        break;
                    case GgufValueType.Float32:
                        var floats = (IReadOnlyList<float>)value;
                        w.Write((ulong)floats.Count);
                        foreach (float f in floats) w.Write(f);
                        break;
                    default: throw new NotSupportedException($"GGUF arrays of {elementType}");
                }
                break;
            default: throw new NotSupportedException($"GGUF value type {type}");
        }
    }

    private static void WriteData(Stream stream, ReadOnlySpan<float> data, DType type, byte[] buffer)
    {
        int perChunk = buffer.Length / type.BlockBytes() * type.BlockSize();
        for (int start = 0; start < data.Length; start += perChunk)
        {
            ReadOnlySpan<float> chunk = data.Slice(start, Math.Min(perChunk, data.Length - start));
            Span<byte> bytes = buffer.AsSpan(0, (int)type.RowBytes(chunk.Length));
            switch (type)
            {
                case DType.F32:
                    if (BitConverter.IsLittleEndian) MemoryMarshal.AsBytes(chunk).CopyTo(bytes);
                    else for (int i = 0; i < chunk.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes[(4 * i)..], chunk[i]);
                    break;
                case DType.BF16:
                    Kernels.Convert.Float32ToBFloat16(chunk, MemoryMarshal.Cast<byte, ushort>(bytes));
                    break;
                case DType.F16:
                    System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(chunk, MemoryMarshal.Cast<byte, Half>(bytes));
                    break;
                case DType.Q8_0:
                    Kernels.GgmlQuants.QuantizeQ8_0(chunk, bytes);
                    break;
                case DType.Q4_0:
                    Kernels.GgmlQuants.QuantizeQ4_0(chunk, bytes);
                    break;
            }
            stream.Write(bytes);
        }
    }
}
