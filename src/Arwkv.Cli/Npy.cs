using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Arwkv.IO;

namespace Arwkv.Cli;

/// <summary>NumPy .npy files of little-endian float32, format version 1.0, C order.</summary>
internal static partial class Npy
{
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>
    /// The full preamble (magic, version, length, header dict): the dict is padded with spaces and a final newline so
    /// the data starts at a multiple of 64 bytes, as NumPy itself writes it.
    /// </summary>
    public static byte[] Header(ReadOnlySpan<long> shape)
    {
        string dims = shape.Length switch
        {
            0 => "()",
            1 => $"({shape[0]},)",
            _ => "(" + string.Join(", ", shape.ToArray()) + ")",
        };
        string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + dims + ", }";
        int unpadded = Magic.Length + 2 + 2 + dict.Length + 1;
        int total = (unpadded + 63) / 64 * 64;
        int headerLength = total - Magic.Length - 4;
        if (headerLength > ushort.MaxValue) throw new ArgumentException("shape too long for an npy 1.0 header");
        var bytes = new byte[total];
        Magic.CopyTo(bytes);
        bytes[6] = 1;
        bytes[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)headerLength);
        int at = 10 + Encoding.ASCII.GetBytes(dict, bytes.AsSpan(10));
        bytes.AsSpan(at, total - 1 - at).Fill((byte)' ');
        bytes[total - 1] = (byte)'\n';
        return bytes;
    }

    /// <summary>Writes <paramref name="data"/> with <paramref name="shape"/> to <paramref name="path"/> (atomically).</summary>
    public static void WriteFloat32(string path, ReadOnlyMemory<float> data, params long[] shape) => WriteFloat32(path, [], data, shape);

    /// <summary>Like <see cref="WriteFloat32(string, ReadOnlyMemory{float}, long[])"/>, refusing a path that is one of <paramref name="inputs"/>.</summary>
    public static void WriteFloat32(string path, IEnumerable<string> inputs, ReadOnlyMemory<float> data, params long[] shape)
    {
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]");
            count *= d;
        }
        if (count != data.Length) throw new ArgumentException($"shape [{string.Join(", ", shape)}] holds {count} values, data has {data.Length}");
        byte[] header = Header(shape);
        AtomicFile.Write(path, stream =>
        {
            stream.Write(header);
            if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("npy output assumes a little-endian machine");
            ReadOnlySpan<float> values = data.Span;
            const int chunk = 1 << 16;
            for (int i = 0; i < values.Length; i += chunk)
                stream.Write(MemoryMarshal.AsBytes(values.Slice(i, Math.Min(chunk, values.Length - i))));
        }, inputs);
    }

    [GeneratedRegex(@"^\{\s*'descr':\s*'(?<descr>[^']*)',\s*'fortran_order':\s*(?<fortran>True|False),\s*'shape':\s*\((?<shape>[0-9,\s]*)\),?\s*\}\s*$")]
    private static partial Regex HeaderPattern();

    /// <summary>Reads a float32 C-order npy file (version 1.0 or 2.0).</summary>
    /// <exception cref="CheckpointException">Not an npy file, or not '&lt;f4' C-order data.</exception>
    public static (float[] Data, long[] Shape) ReadFloat32(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length < 10 || !bytes.AsSpan(0, 6).SequenceEqual(Magic)) throw new CheckpointException(path, "not an npy file (bad magic)");
        int major = bytes[6];
        int headerLength, dataStart;
        if (major == 1)
        {
            headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
            dataStart = 10 + headerLength;
        }
        else if (major is 2 or 3 && bytes.Length >= 12)
        {
            headerLength = checked((int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8)));
            dataStart = 12 + headerLength;
        }
        else throw new CheckpointException(path, $"unsupported npy version {major}.{bytes[7]}");
        if (dataStart > bytes.Length) throw new CheckpointException(path, "truncated header");
        string dict = Encoding.ASCII.GetString(bytes, dataStart - headerLength, headerLength);
        Match m = HeaderPattern().Match(dict);
        if (!m.Success) throw new CheckpointException(path, $"cannot parse npy header {dict.TrimEnd()}");
        if (m.Groups["descr"].Value != "<f4") throw new CheckpointException(path, $"dtype {m.Groups["descr"].Value}, expected <f4");
        if (m.Groups["fortran"].Value != "False") throw new CheckpointException(path, "Fortran-order arrays are not supported");
        long[] shape = m.Groups["shape"].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (bytes.Length - dataStart != count * 4)
            throw new CheckpointException(path, $"data is {bytes.Length - dataStart} bytes, shape ({string.Join(", ", shape)}) needs {count * 4}");
        var data = new float[count];
        MemoryMarshal.Cast<byte, float>(bytes.AsSpan(dataStart)).CopyTo(data);
        return (data, shape);
    }
}
