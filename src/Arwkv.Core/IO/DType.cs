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
}

/// <summary>Sizes and safetensors names of <see cref="DType"/> values.</summary>
public static class DTypeInfo
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this DType type) => type switch
    {
        DType.F32 => 4,
        DType.F16 or DType.BF16 => 2,
        _ => UnknownType(type),
    };

    // Out of line so that SizeOf, called in kernels' inner loops, stays small enough to inline.
    private static int UnknownType(DType type) => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown dtype");

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
