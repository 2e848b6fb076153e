using Arwkv.IO;

namespace Arwkv.Kernels;

/// <summary>
/// A row-major matrix [Rows, Cols] in F32, F16 or BF16, usually a view into a memory-mapped checkpoint.
/// As in PyTorch's nn.Linear, Rows is the output size and Cols the input size: y = W x.
/// </summary>
public readonly struct WeightMatrix
{
    /// <summary>Creates a view; the memory must outlive every use of the view.</summary>
    public WeightMatrix(nint data, DType type, int rows, int cols)
    {
        Data = data;
        Type = type;
        Rows = rows;
        Cols = cols;
    }

    /// <summary>Address of element [0, 0].</summary>
    public nint Data { get; }

    /// <summary>Element type.</summary>
    public DType Type { get; }

    /// <summary>Output size.</summary>
    public int Rows { get; }

    /// <summary>Input size.</summary>
    public int Cols { get; }

    /// <summary>Bytes the matrix occupies.</summary>
    public long ByteLength => (long)Rows * Cols * Type.SizeOf();

    /// <summary>Address of the first element of <paramref name="row"/>.</summary>
    public nint RowPointer(int row) => Data + (nint)((long)row * Cols * Type.SizeOf());

    /// <summary>Rows [start, start+count) as a matrix of their own.</summary>
    public WeightMatrix SliceRows(int start, int count) => new(RowPointer(start), Type, count, Cols);
}
