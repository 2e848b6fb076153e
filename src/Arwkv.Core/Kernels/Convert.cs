using System.Runtime.Intrinsics;
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
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source", nameof(destination));
        int n = source.Length;
        int i = 0;
        fixed (ushort* src = source)
        fixed (float* dst = destination)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                for (; i <= n - 32; i += 32)
                {
                    var (lo, hi) = Vector512.Widen(Vector512.Load(src + i));
                    Vector512.ShiftLeft(lo, 16).AsSingle().Store(dst + i);
                    Vector512.ShiftLeft(hi, 16).AsSingle().Store(dst + i + 16);
                }
            }
            if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= n - 16; i += 16)
                {
                    var (lo, hi) = Vector256.Widen(Vector256.Load(src + i));
                    Vector256.ShiftLeft(lo, 16).AsSingle().Store(dst + i);
                    Vector256.ShiftLeft(hi, 16).AsSingle().Store(dst + i + 8);
                }
            }
            for (; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(src[i] << 16);
        }
    }

    /// <summary>Narrows float32 to bfloat16 with round-to-nearest-even (NaN stays NaN).</summary>
    public static ushort Float32ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Narrows a span of float32 to bfloat16 (round-to-nearest-even; NaN stays a quiet NaN).</summary>
    public static void Float32ToBFloat16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source", nameof(destination));
        int n = source.Length;
        int i = 0;
        fixed (float* src = source)
        fixed (ushort* dst = destination)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                for (; i <= n - 32; i += 32)
                    Vector512.Narrow(NarrowBits(Vector512.Load(src + i)), NarrowBits(Vector512.Load(src + i + 16))).Store(dst + i);
            }
            if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= n - 16; i += 16)
                    Vector256.Narrow(NarrowBits(Vector256.Load(src + i)), NarrowBits(Vector256.Load(src + i + 8))).Store(dst + i);
            }
            for (; i < n; i++) dst[i] = Float32ToBFloat16(src[i]);
        }
    }

    // The bfloat16 bits of each lane in the low 16 bits of a 32-bit lane, as the scalar Float32ToBFloat16 computes them.
    static Vector512<uint> NarrowBits(Vector512<float> value)
    {
        var bits = value.AsUInt32();
        var rounded = (bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One)) >> 16;
        var nan = (bits >> 16) | Vector512.Create(0x40u);
        return Vector512.ConditionalSelect(Vector512.Equals(value, value).AsUInt32(), rounded, nan);
    }

    static Vector256<uint> NarrowBits(Vector256<float> value)
    {
        var bits = value.AsUInt32();
        var rounded = (bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One)) >> 16;
        var nan = (bits >> 16) | Vector256.Create(0x40u);
        return Vector256.ConditionalSelect(Vector256.Equals(value, value).AsUInt32(), rounded, nan);
    }
}
