using Arwkv.IO;

namespace Arwkv.Kernels;

/// <summary>Element-type conversions between checkpoint storage types and float32.</summary>
public static unsafe class Convert
{
    /// <summary>Widens <paramref name="destination"/>.Length elements at <paramref name="source"/> to float32.</summary>
    public static void ToFloat32(nint source, DType type, Span<float> destination)
    {
        switch (type)
        {
            case DType.F32:
                new ReadOnlySpan<float>((void*)source, destination.Length).CopyTo(destination);
                break;
            case DType.BF16:
                BFloat16ToFloat32(new ReadOnlySpan<ushort>((void*)source, destination.Length), destination);
                break;
            case DType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((void*)source, destination.Length), destination);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    /// <summary>bfloat16 is the top half of a float32, so widening is a 16-bit shift.</summary>
    public static void BFloat16ToFloat32(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        for (int i = 0; i < source.Length; i++)
            destination[i] = BitConverter.Int32BitsToSingle(source[i] << 16);
    }

    /// <summary>Narrows float32 to bfloat16 with round-to-nearest-even (NaN stays NaN).</summary>
    public static ushort Float32ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Narrows a span of float32 to bfloat16.</summary>
    public static void Float32ToBFloat16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        for (int i = 0; i < source.Length; i++) destination[i] = Float32ToBFloat16(source[i]);
    }
}
