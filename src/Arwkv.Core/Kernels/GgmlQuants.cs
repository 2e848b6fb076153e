using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Arwkv.IO;

namespace Arwkv.Kernels;

/// <summary>
/// ggml's Q8_0 and Q4_0 block formats (ggml-common.h), bit for bit: quantizers as ggml's reference
/// (<c>quantize_row_q8_0_ref</c>, <c>quantize_row_q4_0_ref</c>), the scalar dequantizer every fast path is tested
/// against, and the vector kernels (dot products of four rows for Gemv, dequantization for the Gemm's packing).
/// The kernels multiply the weights by float32 activations: each block's int8 values (Q4_0's nibbles minus 8 first)
/// are converted to float32 exactly, multiplied into the activations, and the block's sum scaled by d once. llama.cpp
/// instead rounds the activations to Q8_0 and multiplies in integers; keeping them in float32 avoids that rounding
/// (the bulk of llama.cpp's error against the dequantized float64 model) and needs no integer-dot instruction, so one
/// width-generic body serves 512, 256 and 128 bits (ARM64 included).
/// </summary>
internal static unsafe class GgmlQuants
{
    public const int BlockSize = 32;
    public const int Q8_0Bytes = 34;
    public const int Q4_0Bytes = 18;

    // ---------------------------------------------------------------- reference (scalar) ----------------------------

    /// <summary>ggml's quantize_row_q8_0_ref: d = max|x| / 127, q = round(x / d) (half away from zero).</summary>
    public static void QuantizeQ8_0(ReadOnlySpan<float> source, Span<byte> destination)
    {
        CheckLengths(source.Length, destination.Length, Q8_0Bytes);
        for (int b = 0; b < source.Length / BlockSize; b++)
        {
            ReadOnlySpan<float> x = source.Slice(b * BlockSize, BlockSize);
            Span<byte> block = destination.Slice(b * Q8_0Bytes, Q8_0Bytes);
            float amax = 0;
            for (int j = 0; j < BlockSize; j++) amax = Math.Max(amax, Math.Abs(x[j]));
            float d = amax / 127;
            float id = d != 0 ? 1 / d : 0;
            WriteScale(block, d);
            for (int j = 0; j < BlockSize; j++) block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    /// <summary>
    /// ggml's quantize_row_q4_0_ref: d = m / -8 where m is the value of largest magnitude (sign kept), then
    /// q = min(15, (int8)(x / d + 8.5)), truncated toward zero as the C cast does.
    /// </summary>
    public static void QuantizeQ4_0(ReadOnlySpan<float> source, Span<byte> destination)
    {
        CheckLengths(source.Length, destination.Length, Q4_0Bytes);
        for (int b = 0; b < source.Length / BlockSize; b++)
        {
            ReadOnlySpan<float> x = source.Slice(b * BlockSize, BlockSize);
            Span<byte> block = destination.Slice(b * Q4_0Bytes, Q4_0Bytes);
            float amax = 0, max = 0;
            for (int j = 0; j < BlockSize; j++)
                if (amax < Math.Abs(x[j]))
                {
                    amax = Math.Abs(x[j]);
                    max = x[j];
                }
            float d = max / -8;
            float id = d != 0 ? 1 / d : 0;
            WriteScale(block, d);
            for (int j = 0; j < BlockSize / 2; j++)
            {
                int q0 = Math.Min(15, (int)(sbyte)(x[j] * id + 8.5f));
                int q1 = Math.Min(15, (int)(sbyte)(x[j + 16] * id + 8.5f));
                block[2 + j] = (byte)(q0 | (q1 << 4));
            }
        }
    }

    /// <summary>Widens whole blocks to float32 with plain scalar loops: the reference of every other path.</summary>
    public static void DequantizeReference(DType type, byte* source, Span<float> destination)
    {
        int blocks = CheckBlocks(type, destination.Length);
        for (int b = 0; b < blocks; b++)
        {
            Span<float> y = destination.Slice(b * BlockSize, BlockSize);
            if (type == DType.Q8_0)
            {
                byte* block = source + b * Q8_0Bytes;
                float d = Scale(block);
                for (int j = 0; j < BlockSize; j++) y[j] = d * (sbyte)block[2 + j];
            }
            else
            {
                byte* block = source + b * Q4_0Bytes;
                float d = Scale(block);
                for (int j = 0; j < BlockSize / 2; j++)
                {
                    y[j] = d * ((block[2 + j] & 0xF) - 8);
                    y[j + 16] = d * ((block[2 + j] >> 4) - 8);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Scale(byte* block) => (float)BitConverter.UInt16BitsToHalf(Unsafe.ReadUnaligned<ushort>(block));

    // Every fp16 scale widened once, as ggml's ggml_table_f32_f16: .NET has no F16C conversion intrinsic, and the
    // software Half conversion per block and row would cost more than the block's arithmetic. 256 KB, pinned.
    static readonly float[] s_halfToSingle = CreateHalfTable();

    static float[] CreateHalfTable()
    {
        var table = GC.AllocateUninitializedArray<float>(65536, pinned: true);
        for (int i = 0; i < table.Length; i++) table[i] = (float)BitConverter.UInt16BitsToHalf((ushort)i);
        return table;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float FastScale(float* table, byte* block) => table[Unsafe.ReadUnaligned<ushort>(block)];

    static float* HalfTable => (float*)Unsafe.AsPointer(ref s_halfToSingle[0]);

    static void WriteScale(Span<byte> block, float d)
    {
        ushort bits = BitConverter.HalfToUInt16Bits((Half)d);
        block[0] = (byte)bits;
        block[1] = (byte)(bits >> 8);
    }

    static void CheckLengths(int elements, int bytes, int blockBytes)
    {
        if (elements % BlockSize != 0) throw new ArgumentException($"{elements} values are not whole blocks of {BlockSize}");
        if (bytes < (long)elements / BlockSize * blockBytes) throw new ArgumentException("destination is shorter than the blocks");
    }

    static int CheckBlocks(DType type, int elements)
    {
        if (!type.IsQuantized()) throw new ArgumentOutOfRangeException(nameof(type), type, "not a block-quantized type");
        if (elements % BlockSize != 0) throw new ArgumentException($"{elements} values are not whole blocks of {BlockSize}");
        return elements / BlockSize;
    }

    // ---------------------------------------------------------------- vector kernels --------------------------------

    /// <summary>Widens whole blocks to float32 on the calling thread's path (<see cref="MatMul.Isa"/>).</summary>
    public static void Dequantize(DType type, byte* source, Span<float> destination)
    {
        int blocks = CheckBlocks(type, destination.Length);
        fixed (float* y = destination)
        {
            switch (MatMul.Isa)
            {
                case KernelIsa.Vector512: Dequantize<SimdVector512>(type == DType.Q4_0, source, y, blocks); break;
                case KernelIsa.Vector256: Dequantize<SimdVector256>(type == DType.Q4_0, source, y, blocks); break;
                case KernelIsa.Vector128: Dequantize<SimdVector128>(type == DType.Q4_0, source, y, blocks); break;
                default: DequantizeReference(type, source, destination); break;
            }
        }
    }

    static void Dequantize<TV>(bool q4, byte* source, float* y, int blocks) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, blockBytes = q4 ? Q4_0Bytes : Q8_0Bytes;
        sbyte* unpacked = stackalloc sbyte[BlockSize];
        float* table = HalfTable;
        for (int b = 0; b < blocks; b++, source += blockBytes, y += BlockSize)
        {
            TV d = TV.Broadcast(FastScale(table, source));
            sbyte* q = Values(q4, source, unpacked);
            for (int k = 0; k < BlockSize; k += L) TV.Store(d * TV.LoadInt8(q + k), y + k);
        }
    }

    /// <summary>A block's 32 int8 values: in place for Q8_0, Q4_0's nibbles minus 8 unpacked into <paramref name="buffer"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static sbyte* Values(bool q4, byte* block, sbyte* buffer)
    {
        if (!q4) return (sbyte*)(block + 2);
        Vector128<byte> packed = Vector128.Load(block + 2);
        Vector128<sbyte> eight = Vector128.Create((sbyte)8);
        ((packed & Vector128.Create((byte)0x0F)).AsSByte() - eight).Store(buffer);
        (Vector128.ShiftRightLogical(packed, 4).AsSByte() - eight).Store(buffer + 16);
        return buffer;
    }

    /// <summary>sums[i] = row_i . x for four rows of <paramref name="cols"/> (a multiple of 32) quantized weights.</summary>
    public static void Dot4(DType type, KernelIsa isa, byte* p0, byte* p1, byte* p2, byte* p3, float* x, int cols, float* sums)
    {
        bool q4 = type == DType.Q4_0;
        sbyte* u = stackalloc sbyte[4 * BlockSize];
        switch (isa)
        {
            case KernelIsa.Vector512: if (q4) Q4Dot4<SimdVector512>(p0, p1, p2, p3, x, cols, sums, u); else Q8Dot4<SimdVector512>(p0, p1, p2, p3, x, cols, sums); break;
            case KernelIsa.Vector256: if (q4) Q4Dot4<SimdVector256>(p0, p1, p2, p3, x, cols, sums, u); else Q8Dot4<SimdVector256>(p0, p1, p2, p3, x, cols, sums); break;
            case KernelIsa.Vector128: if (q4) Q4Dot4<SimdVector128>(p0, p1, p2, p3, x, cols, sums, u); else Q8Dot4<SimdVector128>(p0, p1, p2, p3, x, cols, sums); break;
            default: Dot4Scalar(type, p0, p1, p2, p3, x, cols, sums); break;
        }
    }

    static void Q8Dot4<TV>(byte* p0, byte* p1, byte* p2, byte* p3, float* x, int cols, float* sums) where TV : unmanaged, ISimdVector<TV>
        => Dot4<TV>(false, p0, p1, p2, p3, x, cols, sums, null);

    static void Q4Dot4<TV>(byte* p0, byte* p1, byte* p2, byte* p3, float* x, int cols, float* sums, sbyte* unpacked)
        where TV : unmanaged, ISimdVector<TV>
        => Dot4<TV>(true, p0, p1, p2, p3, x, cols, sums, unpacked);

    /// <summary>
    /// Per block: each row's int8 values times x, summed into one vector per row, then scaled by the row's d into its
    /// accumulator (one multiply by d per block, as the format intends). <paramref name="q4"/> is a constant at every
    /// call site, so the JIT compiles one loop per format.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Dot4<TV>(bool q4, byte* p0, byte* p1, byte* p2, byte* p3, float* x, int cols, float* sums, sbyte* unpacked)
        where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, blockBytes = q4 ? Q4_0Bytes : Q8_0Bytes;
        float* table = HalfTable;
        TV a0 = default, a1 = default, a2 = default, a3 = default;
        int blocks = cols / BlockSize;
        for (int b = 0; b < blocks; b++, x += BlockSize)
        {
            byte* b0 = p0 + b * blockBytes, b1 = p1 + b * blockBytes, b2 = p2 + b * blockBytes, b3 = p3 + b * blockBytes;
            sbyte* q0 = Values(q4, b0, unpacked), q1 = Values(q4, b1, unpacked + 32);
            sbyte* q2 = Values(q4, b2, unpacked + 64), q3 = Values(q4, b3, unpacked + 96);
            TV s0 = default, s1 = default, s2 = default, s3 = default;
            for (int k = 0; k < BlockSize; k += L)
            {
                TV xk = TV.Load(x + k);
                s0 = TV.Fma(TV.LoadInt8(q0 + k), xk, s0);
                s1 = TV.Fma(TV.LoadInt8(q1 + k), xk, s1);
                s2 = TV.Fma(TV.LoadInt8(q2 + k), xk, s2);
                s3 = TV.Fma(TV.LoadInt8(q3 + k), xk, s3);
            }
            a0 = TV.Fma(TV.Broadcast(FastScale(table, b0)), s0, a0);
            a1 = TV.Fma(TV.Broadcast(FastScale(table, b1)), s1, a1);
            a2 = TV.Fma(TV.Broadcast(FastScale(table, b2)), s2, a2);
            a3 = TV.Fma(TV.Broadcast(FastScale(table, b3)), s3, a3);
        }
        TV.Sum4(a0, a1, a2, a3).Store(sums);
    }

    /// <summary>The scalar path: each row dequantized block by block (reference arithmetic) and multiplied in order.</summary>
    static void Dot4Scalar(DType type, byte* p0, byte* p1, byte* p2, byte* p3, float* x, int cols, float* sums)
    {
        Span<float> row = stackalloc float[BlockSize];
        int blockBytes = type.BlockBytes();
        for (int i = 0; i < 4; i++)
        {
            byte* p = i == 0 ? p0 : i == 1 ? p1 : i == 2 ? p2 : p3;
            float sum = 0;
            for (int b = 0; b < cols / BlockSize; b++)
            {
                DequantizeReference(type, p + b * blockBytes, row);
                for (int j = 0; j < BlockSize; j++) sum += row[j] * x[b * BlockSize + j];
            }
            sums[i] = sum;
        }
    }
}
