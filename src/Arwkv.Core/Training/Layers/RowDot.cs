using System.Buffers;
using System.Numerics;

namespace Arwkv.Training.Layers;

/// <summary>
/// The one matrix kernel of the training layers: c[r, j] (+)= sum_k a[r, k] * b[j, k], both operands read along
/// contiguous rows. Every product of <see cref="Linear"/> is put in this form by transposing one operand into a
/// pooled buffer (a transpose is O(n^2) against the product's O(n^3)). The micro-kernel computes a 4x2 block of c
/// with SIMD accumulators, so each vector of b is reused for 4 rows and each vector of a for 2 columns.
/// </summary>
internal static unsafe class RowDot
{
    // c [R, J] (+)= a [R, K] @ b [J, K]^T
    public static void Multiply<TF>(TF* c, TF* a, TF* b, int rows, int cols, int depth, bool accumulate)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int blocks = (rows + 3) / 4;
        Work.For(blocks, block =>
        {
            int r0 = block * 4, count = Math.Min(4, rows - r0);
            if (count == 4)
            {
                int j = 0;
                for (; j + 1 < cols; j += 2) Block4x2(c, a, b, r0, j, cols, depth, accumulate);
                if (j < cols) for (int r = r0; r < r0 + 4; r++) Single(c, a, b, r, j, cols, depth, accumulate);
            }
            else
            {
                for (int r = r0; r < r0 + count; r++)
                    for (int j = 0; j < cols; j++) Single(c, a, b, r, j, cols, depth, accumulate);
            }
        });
    }

    private static void Block4x2<TF>(TF* c, TF* a, TF* b, int r0, int j0, int cols, int depth, bool accumulate)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TF* a0 = a + (long)r0 * depth, a1 = a0 + depth, a2 = a1 + depth, a3 = a2 + depth;
        TF* b0 = b + (long)j0 * depth, b1 = b0 + depth;
        Vector<TF> s00 = default, s01 = default, s10 = default, s11 = default, s20 = default, s21 = default, s30 = default, s31 = default;
        int w = Vector<TF>.Count, k = 0;
        for (; k + w <= depth; k += w)
        {
            Vector<TF> v0 = Vector.Load(b0 + k), v1 = Vector.Load(b1 + k);
            Vector<TF> x = Vector.Load(a0 + k); s00 += x * v0; s01 += x * v1;
            x = Vector.Load(a1 + k); s10 += x * v0; s11 += x * v1;
            x = Vector.Load(a2 + k); s20 += x * v0; s21 += x * v1;
            x = Vector.Load(a3 + k); s30 += x * v0; s31 += x * v1;
        }
        TF t00 = Vector.Sum(s00), t01 = Vector.Sum(s01), t10 = Vector.Sum(s10), t11 = Vector.Sum(s11);
        TF t20 = Vector.Sum(s20), t21 = Vector.Sum(s21), t30 = Vector.Sum(s30), t31 = Vector.Sum(s31);
        for (; k < depth; k++)
        {
            TF v0 = b0[k], v1 = b1[k];
            t00 += a0[k] * v0; t01 += a0[k] * v1; t10 += a1[k] * v0; t11 += a1[k] * v1;
            t20 += a2[k] * v0; t21 += a2[k] * v1; t30 += a3[k] * v0; t31 += a3[k] * v1;
        }
        TF* c0 = c + (long)r0 * cols + j0, c1 = c0 + cols, c2 = c1 + cols, c3 = c2 + cols;
        if (accumulate)
        {
            c0[0] += t00; c0[1] += t01; c1[0] += t10; c1[1] += t11; c2[0] += t20; c2[1] += t21; c3[0] += t30; c3[1] += t31;
        }
        else
        {
            c0[0] = t00; c0[1] = t01; c1[0] = t10; c1[1] = t11; c2[0] = t20; c2[1] = t21; c3[0] = t30; c3[1] = t31;
        }
    }

    private static void Single<TF>(TF* c, TF* a, TF* b, int r, int j, int cols, int depth, bool accumulate)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TF dot = System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<TF>(a + (long)r * depth, depth), new ReadOnlySpan<TF>(b + (long)j * depth, depth));
        TF* target = c + (long)r * cols + j;
        *target = accumulate ? *target + dot : dot;
    }

    // dst [cols, rows] = src [rows, cols]^T, in 32x32 tiles to keep both sides in cache.
    public static void Transpose<TF>(TF* dst, TF* src, int rows, int cols) where TF : unmanaged
    {
        const int tile = 32;
        int tilesR = (rows + tile - 1) / tile;
        Work.For(tilesR, tr =>
        {
            int r0 = tr * tile, r1 = Math.Min(rows, r0 + tile);
            for (int c0 = 0; c0 < cols; c0 += tile)
            {
                int c1 = Math.Min(cols, c0 + tile);
                for (int r = r0; r < r1; r++)
                    for (int cc = c0; cc < c1; cc++) dst[(long)cc * rows + r] = src[(long)r * cols + cc];
            }
        });
    }

    /// <summary>A pooled buffer for a transposed operand; return it with <see cref="ArrayPool{T}.Return"/>.</summary>
    public static TF[] Rent<TF>(long length) => ArrayPool<TF>.Shared.Rent(checked((int)length));

    public static void Return<TF>(TF[] buffer) => ArrayPool<TF>.Shared.Return(buffer);
}
