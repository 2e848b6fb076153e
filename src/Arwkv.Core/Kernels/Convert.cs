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
            case DType.Q8_0:
            case DType.Q4_0:
                GgmlQuants.Dequantize(type, (byte*)source, destination);
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
        fixed (ushort* src = source)
        fixed (float* dst = destination)
        {
            int i = MatMul.Isa switch
            {
                KernelIsa.Vector512 => BFloat16ToFloat32<SimdVector512>(src, dst, n),
                KernelIsa.Vector256 => BFloat16ToFloat32<SimdVector256>(src, dst, n),
                KernelIsa.Vector128 => BFloat16ToFloat32<SimdVector128>(src, dst, n),
                _ => 0,
            };
            for (; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(src[i] << 16);
        }
    }

    /// <summary>Widens whole vectors (two per step) and returns the first element not widened.</summary>
    static int BFloat16ToFloat32<TV>(ushort* src, float* dst, int n) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, i = 0;
        for (; i <= n - 2 * L; i += 2 * L)
        {
            TV.Store(TV.LoadBf16(src + i), dst + i);
            TV.Store(TV.LoadBf16(src + i + L), dst + i + L);
        }
        return i;
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
        fixed (float* src = source)
        fixed (ushort* dst = destination)
        {
            int i = MatMul.Isa switch
            {
                KernelIsa.Vector512 => Float32ToBFloat16<SimdVector512>(src, dst, n),
                KernelIsa.Vector256 => Float32ToBFloat16<SimdVector256>(src, dst, n),
                KernelIsa.Vector128 => Float32ToBFloat16<SimdVector128>(src, dst, n),
                _ => 0,
            };
            for (; i < n; i++) dst[i] = Float32ToBFloat16(src[i]);
        }
    }

    /// <summary>Narrows whole vectors and returns the first element not narrowed.</summary>
    static int Float32ToBFloat16<TV>(float* src, ushort* dst, int n) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, i = 0;
        for (; i <= n - L; i += L) TV.StoreBf16(TV.Load(src + i), dst + i);
        return i;
    }
}
