using System.Numerics.Tensors;

namespace Arwkv.Kernels;

// Products run together: a time mix's r, k and v in one parallel pass (one hand-off to the threads, one tail), and an
// MLP's gate and up over one packing of X with the SwiGLU applied to each tile before it is stored, so the gate and up
// products never go to memory. Both are for the in-place BF16 path of every vector width; elsewhere they are the
// separate calls.
public static unsafe partial class MatMul
{
    /// <summary>
    /// Y0 = X0 W0^T, Y1 = X1 W1^T, Y2 = X2 W2^T, three products with the same columns and token count (a time mix's
    /// r, k and v, each of its own token-shift mix) in one parallel pass. Xi: [tokens, cols], Yi: [tokens, Wi.Rows].
    /// </summary>
    internal static void Gemm3(WeightMatrix w0, ReadOnlySpan<float> x0, Span<float> y0, WeightMatrix w1, ReadOnlySpan<float> x1,
        Span<float> y1, WeightMatrix w2, ReadOnlySpan<float> x2, Span<float> y2, int tokens, KernelThreadPool? pool)
    {
        var isa = Isa;
        if (tokens < 2 || isa == KernelIsa.Scalar || ForcePackedBf16
            || !DirectBf16(w0) || !DirectBf16(w1) || !DirectBf16(w2) || w1.Cols != w0.Cols || w2.Cols != w0.Cols)
        {
            Gemm(w0, x0, y0, tokens, pool);
            Gemm(w1, x1, y1, tokens, pool);
            Gemm(w2, x2, y2, tokens, pool);
            return;
        }
        CheckMatrix(w0);
        CheckMatrix(w1);
        CheckMatrix(w2);
        long inputLength = (long)tokens * w0.Cols;
        if (x0.Length < inputLength || x1.Length < inputLength || x2.Length < inputLength
            || y0.Length < (long)tokens * w0.Rows || y1.Length < (long)tokens * w1.Rows || y2.Length < (long)tokens * w2.Rows)
            throw new ArgumentException("an input or output is shorter than tokens x matrix");
        fixed (float* px0 = x0)
        fixed (float* px1 = x1)
        fixed (float* px2 = x2)
        fixed (float* p0 = y0)
        fixed (float* p1 = y1)
        fixed (float* p2 = y2)
        {
            var spec = new PackedGemmSpec { W = w0, W1 = w1, W2 = w2, Y = p0, Y1 = p1, Y2 = p2, Count = 3 };
            GemmPacked(isa, spec, px0, tokens, accumulate: false, pool, GemmChunk(w0.Cols, tokens), px1, px2);
        }
    }

    /// <summary>
    /// Y = silu(X gate^T) * (X up^T), Qwen2's MLP before its down projection. X: [tokens, cols], Y: [tokens, rows].
    /// <paramref name="upScratch"/> ([tokens, rows]) holds the up product where the fused kernel does not apply.
    /// </summary>
    internal static void GemmSwiGlu(WeightMatrix gate, WeightMatrix up, ReadOnlySpan<float> x, Span<float> y, Span<float> upScratch,
        int tokens, KernelThreadPool? pool)
    {
        if (up.Rows != gate.Rows || up.Cols != gate.Cols) throw new ArgumentException("gate and up differ in shape");
        int cols = gate.Cols;
        var isa = Isa;
        if (tokens < 2 || isa == KernelIsa.Scalar || ForcePackedBf16 || !DirectBf16(gate) || !DirectBf16(up)
            || GemmChunk(cols, tokens) < cols)
        {
            Gemm(gate, x, y, tokens, pool);
            Gemm(up, x, upScratch, tokens, pool);
            SwiGlu(y[..(tokens * gate.Rows)], upScratch, pool);
            return;
        }
        CheckMatrix(gate);
        CheckMatrix(up);
        if (x.Length < (long)tokens * cols || y.Length < (long)tokens * gate.Rows)
            throw new ArgumentException("x or y is shorter than tokens x matrix");
        fixed (float* xp = x)
        fixed (float* yp = y)
        {
            var spec = new PackedGemmSpec { W = gate, W1 = up, Y = yp, Count = 1, SwiGlu = true };
            GemmPacked(isa, spec, xp, tokens, accumulate: false, pool, cols);
        }
    }

    /// <summary>gate = silu(gate) * up, elementwise over gate's length (up is overwritten), split across the pool.</summary>
    internal static void SwiGlu(Span<float> gate, Span<float> up, KernelThreadPool? pool)
    {
        int n = gate.Length;
        if (up.Length < n) throw new ArgumentException("up is shorter than gate");
        // Megabytes in a prefill, milliseconds single-threaded; a decode step's few thousand elements stay on one thread.
        int parts = pool is not null && n >= 16384 ? pool.ThreadCount : 1;
        fixed (float* g = gate)
        fixed (float* u = up)
        {
            var work = new SwiGluWork { Gate = g, Up = u, Length = n, Parts = parts };
            if (parts == 1) work.Execute(0);
            else pool!.Run(ref work, parts);
        }
    }

    struct SwiGluWork : IParallelWork
    {
        public float* Gate, Up;
        public int Length, Parts;

        public readonly void Execute(int index)
        {
            int start = (int)((long)Length * index / Parts), end = (int)((long)Length * (index + 1) / Parts);
            var gate = new Span<float>(Gate + start, end - start);
            var up = new Span<float>(Up + start, end - start);
            // silu(g) * u = sigmoid(g) * (g * u), in place so no third buffer is needed; SwiGluTile keeps this order.
            TensorPrimitives.Multiply(gate, up, up);
            TensorPrimitives.Sigmoid(gate, gate);
            TensorPrimitives.Multiply(gate, up, gate);
        }
    }
}
