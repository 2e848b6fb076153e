using Arwkv.IO;

namespace Arwkv.Kernels;

/// <summary>
/// A row-major matrix [Rows, Cols] in F32, F16, BF16 or a ggml block-quantized type (Q8_0, Q4_0: Cols a multiple of
/// 32, each row a run of whole blocks), usually a view into a memory-mapped checkpoint.
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
    public long ByteLength => Rows * RowBytes;

    /// <summary>Bytes of one row.</summary>
    public long RowBytes => Type.RowBytes(Cols);

    /// <summary>Address of the first element of <paramref name="row"/>.</summary>
    public nint RowPointer(int row) => Data + (nint)(row * RowBytes);

    /// <summary>Rows [start, start+count) as a matrix of their own.</summary>
    public WeightMatrix SliceRows(int start, int count) => new(RowPointer(start), Type, count, Cols);
}
