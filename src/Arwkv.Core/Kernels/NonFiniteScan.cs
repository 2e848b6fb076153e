using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Arwkv.IO;

namespace Arwkv.Kernels;

/// <summary>
/// Finds the first NaN or infinity in stored weights without widening them: a value is non-finite exactly when all of
/// its exponent bits are set, so the scan is one AND and one compare per element on the raw bits, fast enough to run
/// over every matrix of a checkpoint at load (the scan, not the check, is what a memory-mapped 7B file pays for).
/// </summary>
internal static unsafe class NonFiniteScan
{
    /// <summary>Index of the first non-finite element of <paramref name="count"/> stored as <paramref name="type"/>, or -1.</summary>
    /// <remarks>Quantized types hold their fp16 block scales between the quants; they are not scanned here.</remarks>
    public static long FirstNonFinite(nint data, DType type, long count) => type switch
    {
        DType.F32 => First<uint>((uint*)data, count, 0x7F80_0000u),
        DType.F16 => First<ushort>((ushort*)data, count, (ushort)0x7C00),
        DType.BF16 => First<ushort>((ushort*)data, count, (ushort)0x7F80),
        _ => -1,
    };

    /// <summary>Index of the first NaN or infinity in <paramref name="values"/>, or -1.</summary>
    public static long FirstNonFinite(ReadOnlySpan<float> values)
    {
        fixed (float* p = values) return First<uint>((uint*)p, values.Length, 0x7F80_0000u);
    }

    static long First<T>(T* data, long count, T exponent) where T : unmanaged, IBinaryInteger<T>
    {
        long i = 0;
        if (Vector.IsHardwareAccelerated && count >= Vector<T>.Count)
        {
            var mask = new Vector<T>(exponent);
            // Four vectors per test keeps the loop on the load ports, not on the branch.
            for (; i <= count - 4 * Vector<T>.Count; i += 4 * Vector<T>.Count)
            {
                Vector<T> v0 = Vector.Load(data + i) & mask, v1 = Vector.Load(data + i + Vector<T>.Count) & mask;
                Vector<T> v2 = Vector.Load(data + i + 2 * Vector<T>.Count) & mask, v3 = Vector.Load(data + i + 3 * Vector<T>.Count) & mask;
                if (Vector.EqualsAny(v0, mask) || Vector.EqualsAny(v1, mask) || Vector.EqualsAny(v2, mask) || Vector.EqualsAny(v3, mask))
                    break;
            }
        }
        for (; i < count; i++)
            if ((data[i] & exponent) == exponent) return i;
        return -1;
    }
}
