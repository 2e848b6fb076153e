using System.Numerics;
using System.Numerics.Tensors;

namespace Arwkv.Training.Layers;

/// <summary>
/// Bias-free matrix products. <see cref="Forward{TF}"/>/<see cref="Backward{TF}"/> use the nn.Linear layout
/// W [out, in] (y = x W^T); <see cref="ForwardInOut{TF}"/>/<see cref="BackwardInOut{TF}"/> use the layout of the
/// RWKV-7 LoRA matrices W [in, out] (y = x W), kept as stored so checkpoints round-trip in the HF layout.
/// The public entry points run on <see cref="RowDot"/>; the *Naive twins (plain dot/axpy loops, rows of x split
/// over cores) are the reference they are tested against.
/// </summary>
internal static unsafe class Linear
{
    // y [N, O] = x [N, I] @ W^T, W [O, I]
    public static void Forward<TF>(Span<TF> y, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w, int n, int inFeatures, int outFeatures)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(y, x, w, n, inFeatures, outFeatures);
        fixed (TF* py = y, px = x, pw = w) RowDot.Multiply(py, px, pw, n, outFeatures, inFeatures, accumulate: false);
    }

    // dx [N, I] += dy [N, O] @ W (skipped when dx is empty); dW [O, I] += dy^T @ x (skipped when dW is empty)
    public static void Backward<TF>(Span<TF> dx, Span<TF> dw, ReadOnlySpan<TF> dy, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w,
        int n, int inFeatures, int outFeatures)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(dy, x, w, n, inFeatures, outFeatures);
        fixed (TF* pdx = dx, pdw = dw, pdy = dy, px = x, pw = w)
        {
            if (!dx.IsEmpty)
            {
                // dx[n, i] = sum_o dy[n, o] W^T[i, o]
                TF[] wt = RowDot.Rent<TF>((long)inFeatures * outFeatures);
                fixed (TF* pwt = wt)
                {
                    RowDot.Transpose(pwt, pw, outFeatures, inFeatures);
                    RowDot.Multiply(pdx, pdy, pwt, n, inFeatures, outFeatures, accumulate: true);
                }
                RowDot.Return(wt);
            }
            if (!dw.IsEmpty)
            {
                // dW[o, i] = sum_n dy^T[o, n] x^T[i, n]
                TF[] dyt = RowDot.Rent<TF>((long)n * outFeatures), xt = RowDot.Rent<TF>((long)n * inFeatures);
                fixed (TF* pdyt = dyt, pxt = xt)
                {
                    RowDot.Transpose(pdyt, pdy, n, outFeatures);
                    RowDot.Transpose(pxt, px, n, inFeatures);
                    RowDot.Multiply(pdw, pdyt, pxt, outFeatures, inFeatures, n, accumulate: true);
                }
                RowDot.Return(dyt);
                RowDot.Return(xt);
            }
        }
    }

    // y [N, O] = x [N, I] @ W, W [I, O]
    public static void ForwardInOut<TF>(Span<TF> y, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w, int n, int inFeatures, int outFeatures)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(y, x, w, n, inFeatures, outFeatures);
        TF[] wt = RowDot.Rent<TF>((long)inFeatures * outFeatures);
        fixed (TF* py = y, px = x, pw = w, pwt = wt)
        {
            RowDot.Transpose(pwt, pw, inFeatures, outFeatures);
            RowDot.Multiply(py, px, pwt, n, outFeatures, inFeatures, accumulate: false);
        }
        RowDot.Return(wt);
    }

    // dx [N, I] += dy [N, O] @ W^T; dW [I, O] += x^T @ dy (each skipped when empty)
    public static void BackwardInOut<TF>(Span<TF> dx, Span<TF> dw, ReadOnlySpan<TF> dy, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w,
        int n, int inFeatures, int outFeatures)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(dy, x, w, n, inFeatures, outFeatures);
        fixed (TF* pdx = dx, pdw = dw, pdy = dy, px = x, pw = w)
        {
            if (!dx.IsEmpty) RowDot.Multiply(pdx, pdy, pw, n, inFeatures, outFeatures, accumulate: true);
            if (!dw.IsEmpty)
            {
                // dW[i, o] = sum_n x^T[i, n] dy^T[o, n]
                TF[] xt = RowDot.Rent<TF>((long)n * inFeatures), dyt = RowDot.Rent<TF>((long)n * outFeatures);
                fixed (TF* pxt = xt, pdyt = dyt)
                {
                    RowDot.Transpose(pxt, px, n, inFeatures);
                    RowDot.Transpose(pdyt, pdy, n, outFeatures);
                    RowDot.Multiply(pdw, pxt, pdyt, inFeatures, outFeatures, n, accumulate: true);
                }
                RowDot.Return(xt);
                RowDot.Return(dyt);
            }
        }
    }

    // y [N, O] = x [N, I] @ W^T, W [O, I]
    public static void ForwardNaive<TF>(Span<TF> y, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w, int n, int inFeatures, int outFeatures)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(y, x, w, n, inFeatures, outFeatures);
        fixed (TF* py = y, px = x, pw = w)
        {
            TF* yp = py, xp = px, wp = pw;
            Work.For(n, row =>
            {
                var xr = new ReadOnlySpan<TF>(xp + (long)row * inFeatures, inFeatures);
                TF* yr = yp + (long)row * outFeatures;
                for (int o = 0; o < outFeatures; o++)
                    yr[o] = TensorPrimitives.Dot(xr, new ReadOnlySpan<TF>(wp + (long)o * inFeatures, inFeatures));
            });
        }
    }

    // dx [N, I] += dy [N, O] @ W (skipped when dx is empty); dW [O, I] += dy^T @ x (skipped when dW is empty)
    public static void BackwardNaive<TF>(Span<TF> dx, Span<TF> dw, ReadOnlySpan<TF> dy, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w,
        int n, int inFeatures, int outFeatures)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(dy, x, w, n, inFeatures, outFeatures);
        fixed (TF* pdx = dx, pdw = dw, pdy = dy, px = x, pw = w)
        {
            TF* dxp = pdx, dwp = pdw, dyp = pdy, xp = px, wp = pw;
            if (!dx.IsEmpty)
            {
                Work.For(n, row =>
                {
                    var dxr = new Span<TF>(dxp + (long)row * inFeatures, inFeatures);
                    TF* dyr = dyp + (long)row * outFeatures;
                    for (int o = 0; o < outFeatures; o++)
                        if (dyr[o] != TF.Zero)
                            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TF>(wp + (long)o * inFeatures, inFeatures), dyr[o], dxr, dxr);
                });
            }
            if (!dw.IsEmpty)
            {
                Work.For(outFeatures, o =>
                {
                    var dwr = new Span<TF>(dwp + (long)o * inFeatures, inFeatures);
                    for (int row = 0; row < n; row++)
                    {
                        TF g = dyp[(long)row * outFeatures + o];
                        if (g != TF.Zero)
                            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TF>(xp + (long)row * inFeatures, inFeatures), g, dwr, dwr);
                    }
                });
            }
        }
    }

    // y [N, O] = x [N, I] @ W, W [I, O]
    public static void ForwardInOutNaive<TF>(Span<TF> y, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w, int n, int inFeatures, int outFeatures)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(y, x, w, n, inFeatures, outFeatures);
        fixed (TF* py = y, px = x, pw = w)
        {
            TF* yp = py, xp = px, wp = pw;
            Work.For(n, row =>
            {
                var yr = new Span<TF>(yp + (long)row * outFeatures, outFeatures);
                yr.Clear();
                TF* xr = xp + (long)row * inFeatures;
                for (int i = 0; i < inFeatures; i++)
                    if (xr[i] != TF.Zero)
                        TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TF>(wp + (long)i * outFeatures, outFeatures), xr[i], yr, yr);
            });
        }
    }

    // dx [N, I] += dy [N, O] @ W^T; dW [I, O] += x^T @ dy (each skipped when empty)
    public static void BackwardInOutNaive<TF>(Span<TF> dx, Span<TF> dw, ReadOnlySpan<TF> dy, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w,
        int n, int inFeatures, int outFeatures)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(dy, x, w, n, inFeatures, outFeatures);
        fixed (TF* pdx = dx, pdw = dw, pdy = dy, px = x, pw = w)
        {
            TF* dxp = pdx, dwp = pdw, dyp = pdy, xp = px, wp = pw;
            if (!dx.IsEmpty)
            {
                Work.For(n, row =>
                {
                    TF* dxr = dxp + (long)row * inFeatures;
                    var dyr = new ReadOnlySpan<TF>(dyp + (long)row * outFeatures, outFeatures);
                    for (int i = 0; i < inFeatures; i++)
                        dxr[i] += TensorPrimitives.Dot(dyr, new ReadOnlySpan<TF>(wp + (long)i * outFeatures, outFeatures));
                });
            }
            if (!dw.IsEmpty)
            {
                Work.For(inFeatures, i =>
                {
                    var dwr = new Span<TF>(dwp + (long)i * outFeatures, outFeatures);
                    for (int row = 0; row < n; row++)
                    {
                        TF xv = xp[(long)row * inFeatures + i];
                        if (xv != TF.Zero)
                            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TF>(dyp + (long)row * outFeatures, outFeatures), xv, dwr, dwr);
                    }
                });
            }
        }
    }

    private static void Check<TF>(ReadOnlySpan<TF> y, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w, int n, int inFeatures, int outFeatures)
    {
        if (x.Length < (long)n * inFeatures || y.Length < (long)n * outFeatures || w.Length < (long)inFeatures * outFeatures)
            throw new ArgumentException($"buffers too short for [{n}, {inFeatures}] x [{inFeatures}, {outFeatures}]");
    }
}
