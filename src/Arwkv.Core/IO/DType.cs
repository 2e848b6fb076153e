namespace Arwkv.IO;

/// <summary>Element types of checkpoint tensors that Arwkv.Core computes with.</summary>
public enum DType
{
    /// <summary>IEEE 754 binary32.</summary>
    F32,
    /// <summary>IEEE 754 binary16.</summary>
    F16,
    /// <summary>bfloat16: the upper 16 bits of a binary32.</summary>
    BF16,
    /// <summary>ggml's Q8_0: blocks of 32 weights, an fp16 scale d and 32 int8 q (value d * q), 34 bytes.</summary>
    Q8_0,
    /// <summary>
    /// ggml's Q4_0: blocks of 32 weights, an fp16 scale d and 16 bytes of nibbles (element j the low nibble of byte j,
    /// element j + 16 its high nibble; value d * (q - 8)), 18 bytes.
    /// </summary>
    Q4_0,
}

/// <summary>Sizes and safetensors names of <see cref="DType"/> values.</summary>
public static class DTypeInfo
{
    /// <summary>Bytes per element (for block-quantized types, which have no such size, see <see cref="RowBytes"/>).</summary>
    public static int SizeOf(this DType type) => type switch
    {
        DType.F32 => 4,
        DType.F16 or DType.BF16 => 2,
        _ => UnknownType(type),
    };

    // Out of line so that SizeOf, called in kernels' inner loops, stays small enough to inline.
    private static int UnknownType(DType type) => throw new ArgumentOutOfRangeException(nameof(type), type,
        type.IsQuantized() ? "a block-quantized type has no size per element" : "unknown dtype");

    /// <summary>Whether the type stores blocks of weights with a shared scale (ggml's quantized formats).</summary>
    public static bool IsQuantized(this DType type) => type is DType.Q8_0 or DType.Q4_0;

    /// <summary>Elements per block: 32 for the quantized types, 1 otherwise.</summary>
    public static int BlockSize(this DType type) => type.IsQuantized() ? 32 : 1;

    /// <summary>Bytes per block (per element for the unquantized types).</summary>
    public static int BlockBytes(this DType type) => type switch
    {
        DType.Q8_0 => 34,
        DType.Q4_0 => 18,
        _ => type.SizeOf(),
    };

    /// <summary>Bytes of <paramref name="elements"/> consecutive elements (a multiple of <see cref="BlockSize"/>).</summary>
    public static long RowBytes(this DType type, long elements) => type switch
    {
        DType.F32 => elements * 4,
        DType.F16 or DType.BF16 => elements * 2,
        _ => elements / 32 * type.BlockBytes(),
    };

    /// <summary>The dtype string used in safetensors headers ("F32", "F16", "BF16").</summary>
    public static string SafeTensorsName(this DType type) => type switch
    {
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>Parses a safetensors dtype string; returns false for types Arwkv.Core does not compute with.</summary>
    public static bool TryParseSafeTensors(string name, out DType type)
    {
        switch (name)
        {
            case "F32": type = DType.F32; return true;
            case "F16": type = DType.F16; return true;
            case "BF16": type = DType.BF16; return true;
            default: type = default; return false;
        }
    }
}
