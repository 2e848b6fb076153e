using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Arwkv;

/// <summary>
/// What ARWKV remembers of a sequence: per layer the RWKV-7 state (H x N x N floats) and the previous token's
/// normed input for the token shift (C floats). Its size does not grow with the sequence.
/// </summary>
public sealed class ArwkvState : ModelState
{
    // "AWKS" little-endian: identifies a saved ARWKV state.
    internal const uint Magic = 0x534B5741;
    internal const int FormatVersion = 1;
    private const int HeaderBytes = 4 + 4 + 4 * 4 + 8;

    internal ArwkvState(int hidden, int layers, int headSize)
    {
        Hidden = hidden;
        Layers = layers;
        HeadSize = headSize;
        Heads = hidden / headSize;
        Shift = new float[layers][];
        Wkv = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            Shift[l] = new float[hidden];
            Wkv[l] = new float[Heads * headSize * headSize];
        }
    }

    /// <summary>Model width C.</summary>
    public int Hidden { get; }

    /// <summary>Number of layers L.</summary>
    public int Layers { get; }

    /// <summary>Number of heads H.</summary>
    public int Heads { get; }

    /// <summary>Head size N.</summary>
    public int HeadSize { get; }

    /// <summary>Per layer, the last token's normed time-mix input [C].</summary>
    internal float[][] Shift { get; }

    /// <summary>Per layer, the WKV state [H, N(value), N(key)].</summary>
    internal float[][] Wkv { get; }

    internal bool Matches(ArwkvConfig c) =>
        Hidden == c.HiddenSize && Layers == c.NumLayers && HeadSize == c.HeadSize;

    /// <inheritdoc />
    public override ModelState Clone()
    {
        var copy = new ArwkvState(Hidden, Layers, HeadSize) { Position = Position };
        for (int l = 0; l < Layers; l++)
        {
            Shift[l].CopyTo(copy.Shift[l], 0);
            Wkv[l].CopyTo(copy.Wkv[l], 0);
        }
        return copy;
    }

    /// <inheritdoc />
    public override void Reset()
    {
        for (int l = 0; l < Layers; l++)
        {
            Array.Clear(Shift[l]);
            Array.Clear(Wkv[l]);
        }
        Position = 0;
    }

    /// <summary>
    /// Writes a header (magic, format version, C, L, H, N, position) and then, per layer, the token shift and the WKV
    /// state as little-endian float32.
    /// </summary>
    public override void Save(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Span<byte> header = stackalloc byte[HeaderBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(header[4..], FormatVersion);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], Hidden);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], Layers);
        BinaryPrimitives.WriteInt32LittleEndian(header[16..], Heads);
        BinaryPrimitives.WriteInt32LittleEndian(header[20..], HeadSize);
        BinaryPrimitives.WriteInt64LittleEndian(header[24..], Position);
        stream.Write(header);
        for (int l = 0; l < Layers; l++)
        {
            WriteFloats(stream, Shift[l]);
            WriteFloats(stream, Wkv[l]);
        }
    }

    /// <summary>Reads what <see cref="Save"/> wrote, checking it belongs to a model of this shape.</summary>
    internal static ArwkvState Load(Stream stream, ArwkvConfig config)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Span<byte> header = stackalloc byte[HeaderBytes];
        ReadExactly(stream, header, "header");
        if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Magic)
            throw new InvalidDataException("not a saved ARWKV state (bad magic number)");
        int version = BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
        if (version != FormatVersion)
            throw new InvalidDataException($"saved ARWKV state has format version {version}; this build reads version {FormatVersion}");
        int c = BinaryPrimitives.ReadInt32LittleEndian(header[8..]), l = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
        int h = BinaryPrimitives.ReadInt32LittleEndian(header[16..]), n = BinaryPrimitives.ReadInt32LittleEndian(header[20..]);
        long position = BinaryPrimitives.ReadInt64LittleEndian(header[24..]);
        if (c != config.HiddenSize || l != config.NumLayers || h != config.NumHeads || n != config.HeadSize)
            throw new InvalidDataException($"saved ARWKV state is for C={c}, L={l}, H={h}, N={n}; this model has C={config.HiddenSize}, " +
                $"L={config.NumLayers}, H={config.NumHeads}, N={config.HeadSize}");
        if (position < 0 || position > int.MaxValue) throw new InvalidDataException($"saved ARWKV state has an invalid position {position}");
        var state = new ArwkvState(c, l, n) { Position = (int)position };
        for (int i = 0; i < l; i++)
        {
            ReadExactly(stream, MemoryMarshal.AsBytes(state.Shift[i].AsSpan()), $"layer {i} token shift");
            ReadExactly(stream, MemoryMarshal.AsBytes(state.Wkv[i].AsSpan()), $"layer {i} WKV state");
        }
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("saved states are little-endian");
        return state;
    }

    private static void WriteFloats(Stream stream, float[] values)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("saved states are little-endian");
        stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
    }

    private static void ReadExactly(Stream stream, Span<byte> buffer, string what)
    {
        try
        {
            stream.ReadExactly(buffer);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"saved ARWKV state is truncated: the stream ends inside the {what}", e);
        }
    }
}
