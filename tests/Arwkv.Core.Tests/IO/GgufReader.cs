using System.Text;
using Arwkv.IO;

namespace Arwkv.Tests.IO;

/// <summary>
/// A minimal GGUF v3 reader for tests, written from the format description (not from <see cref="GgufWriter"/>):
/// it checks the magic, version and alignment of everything it reads.
/// </summary>
internal sealed class GgufReader
{
    public sealed record TensorEntry(string Name, long[] Ne, uint Type, ulong Offset);

    public Dictionary<string, object> Metadata { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, uint> MetadataTypes { get; } = new(StringComparer.Ordinal);
    public List<TensorEntry> Tensors { get; } = [];
    public long DataStart { get; }
    public uint Alignment { get; }
    private readonly byte[] _bytes;

    public GgufReader(string path)
    {
        _bytes = File.ReadAllBytes(path);
        using var r = new BinaryReader(new MemoryStream(_bytes), Encoding.UTF8);
        Assert.That(Encoding.ASCII.GetString(r.ReadBytes(4)), Is.EqualTo("GGUF"), "magic");
        Assert.That(r.ReadUInt32(), Is.EqualTo(3u), "version");
        ulong tensorCount = r.ReadUInt64(), kvCount = r.ReadUInt64();
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = ReadString(r);
            uint type = r.ReadUInt32();
            Assert.That(Metadata.ContainsKey(key), Is.False, $"duplicate key {key}");
            MetadataTypes[key] = type;
            Metadata[key] = ReadValue(r, type);
        }
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = ReadString(r);
            uint dims = r.ReadUInt32();
            var ne = new long[dims];
            for (int d = 0; d < dims; d++) ne[d] = (long)r.ReadUInt64();
            Tensors.Add(new TensorEntry(name, ne, r.ReadUInt32(), r.ReadUInt64()));
        }
        Alignment = Metadata.TryGetValue("general.alignment", out object? a) ? (uint)a : 32u;
        long position = r.BaseStream.Position;
        DataStart = (position + Alignment - 1) / Alignment * Alignment;
        for (long p = position; p < DataStart; p++) Assert.That(_bytes[p], Is.Zero, "padding before the data section");
    }

    public TensorEntry Tensor(string name) =>
        Tensors.SingleOrDefault(t => t.Name == name) ?? throw new AssertionException($"GGUF has no tensor '{name}'");

    public static long ElementSize(uint type) => type switch { 0 => 4, 1 => 2, 30 => 2, _ => throw new AssertionException($"unexpected ggml type {type}") };

    /// <summary>The tensor's values widened to float32, in ggml order (ne[0] fastest), i.e. row-major of the reversed ne.</summary>
    public float[] ReadFloat32(string name)
    {
        TensorEntry t = Tensor(name);
        long count = t.Ne.Aggregate(1L, (x, y) => x * y);
        long start = DataStart + (long)t.Offset;
        Assert.That(start + count * ElementSize(t.Type), Is.LessThanOrEqualTo(_bytes.Length), $"tensor {name} past the end");
        var result = new float[count];
        for (long i = 0; i < count; i++)
        {
            result[i] = t.Type switch
            {
                0 => BitConverter.ToSingle(_bytes, (int)(start + 4 * i)),
                1 => (float)BitConverter.ToHalf(_bytes, (int)(start + 2 * i)),
                _ => BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(_bytes, (int)(start + 2 * i)) << 16),
            };
        }
        return result;
    }

    private static string ReadString(BinaryReader r)
    {
        ulong n = r.ReadUInt64();
        return Encoding.UTF8.GetString(r.ReadBytes(checked((int)n)));
    }

    private static object ReadValue(BinaryReader r, uint type) => type switch
    {
        0 => r.ReadByte(),
        1 => r.ReadSByte(),
        2 => r.ReadUInt16(),
        3 => r.ReadInt16(),
        4 => r.ReadUInt32(),
        5 => r.ReadInt32(),
        6 => r.ReadSingle(),
        7 => r.ReadByte() switch { 0 => false, 1 => true, var b => throw new AssertionException($"bool byte {b}") },
        8 => ReadString(r),
        9 => ReadArray(r),
        10 => r.ReadUInt64(),
        11 => r.ReadInt64(),
        12 => r.ReadDouble(),
        _ => throw new AssertionException($"unknown GGUF value type {type}"),
    };

    private static object[] ReadArray(BinaryReader r)
    {
        uint elementType = r.ReadUInt32();
        ulong n = r.ReadUInt64();
        var items = new object[n];
        for (ulong i = 0; i < n; i++) items[i] = ReadValue(r, elementType);
        return items;
    }
}
