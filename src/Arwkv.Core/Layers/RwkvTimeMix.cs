using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Arwkv.Diagnostics;
using Arwkv.Kernels;

namespace Arwkv.Layers;

/// <summary>
/// A LoRA x @ A @ B. A runs through MatMul as <see cref="Down"/> [rank, C] (= A^T, transposed at load, pinned because
/// the matrix is a raw view of it), kept in BF16 when the checkpoint stores A in BF16 (exact, and MatMul then reads it
/// in place instead of widening it on every call). B stays [rank, C] as stored: its product is a sum of rank scaled
/// rows, which vectorizes over C, where a Gemv with only rank columns per row would be mostly loop overhead.
/// </summary>
internal sealed unsafe class LoraWeights
{
    private readonly float[] _up;
    private readonly Array _down;

    /// <param name="a">A [C, rank] in the Hugging Face layout.</param>
    /// <param name="b">B [rank, C] in the Hugging Face layout.</param>
    /// <param name="hidden">C.</param>
    /// <param name="rank">The LoRA rank.</param>
    /// <param name="aIsBFloat16">Whether A's values are BF16 values (then they are kept in BF16, losslessly).</param>
    public LoraWeights(float[] a, float[] b, int hidden, int rank, bool aIsBFloat16 = false)
    {
        Rank = rank;
        Hidden = hidden;
        _up = b;
        float[] transposed = Transpose(a, hidden, rank);
        if (aIsBFloat16)
        {
            var bf16 = GC.AllocateUninitializedArray<ushort>(transposed.Length, pinned: true);
            for (int i = 0; i < bf16.Length; i++)
            {
                uint bits = BitConverter.SingleToUInt32Bits(transposed[i]);
                if ((bits & 0xFFFF) != 0) throw new ArgumentException("A holds a value that is not a BF16 value", nameof(a));
                bf16[i] = (ushort)(bits >> 16);
            }
            _down = bf16;
            Down = new WeightMatrix(Address(bf16), IO.DType.BF16, rank, hidden);
        }
        else
        {
            _down = transposed;
            Down = new WeightMatrix(Address(transposed), IO.DType.F32, rank, hidden);
        }
    }

    public int Rank { get; }
    public int Hidden { get; }
    public WeightMatrix Down { get; }

    /// <summary>B [rank, C] as stored (float32), for backends that run the up projection themselves (the GPU model).</summary>
    public ReadOnlySpan<float> Up => _up;

    /// <summary>output[rows, C] = mid[rows, rank] @ B.</summary>
    public void ApplyUp(ReadOnlySpan<float> mid, Span<float> output, int rows)
    {
        int C = Hidden, R = Rank;
        if (mid.Length < (long)rows * R || output.Length < (long)rows * C) throw new ArgumentException("mid or output is shorter than rows");
        switch (MatMul.Isa)
        {
            case KernelIsa.Vector512: ApplyUp<SimdVector512>(mid, output, rows); break;
            case KernelIsa.Vector256: ApplyUp<SimdVector256>(mid, output, rows); break;
            case KernelIsa.Vector128: ApplyUp<SimdVector128>(mid, output, rows); break;
            default: ApplyUpScalar(mid, output, rows, 0); break;
        }
    }

    /// <summary>
    /// 4L columns of B (64 at 512 bits) stay in L1 while every token's tile passes; each B load feeds the FMAs of 4 tokens
    /// (2 where there are only 16 vector registers). Columns past the last 4L go to the scalar tail.
    /// </summary>
    private void ApplyUp<TV>(ReadOnlySpan<float> mid, Span<float> output, int rows) where TV : unmanaged, ISimdVector<TV>
    {
        int C = Hidden, R = Rank, width = 4 * TV.Count;
        int tokensPerTile = MatMul.WideRegisterFile<TV>() ? 4 : 2;
        int c = 0;
        fixed (float* m = mid)
        fixed (float* o = output)
        fixed (float* b = _up)
        {
            for (; c <= C - width; c += width)
            {
                int t = 0;
                for (; t <= rows - tokensPerTile; t += tokensPerTile) UpTile<TV>(b + c, C, m + t * R, R, o + (long)t * C + c);
                for (; t < rows; t++) UpTile1<TV>(b + c, C, m + t * R, R, o + (long)t * C + c);
            }
        }
        ApplyUpScalar(mid, output, rows, c);
    }

    /// <summary>Columns [c0, C) of output = mid @ B, in the order of the vector paths (one FMA chain per element over j).</summary>
    private void ApplyUpScalar(ReadOnlySpan<float> mid, Span<float> output, int rows, int c0)
    {
        int C = Hidden, R = Rank;
        for (int c = c0; c < C; c++)
            for (int t = 0; t < rows; t++)
            {
                float sum = 0;
                for (int j = 0; j < R; j++) sum = MathF.FusedMultiplyAdd(mid[t * R + j], _up[j * C + c], sum);
                output[t * C + c] = sum;
            }
    }

    /// <summary>
    /// o[T tokens, 4L columns] = m[T, R] @ b[R, 4L columns] (row strides C for b and o, R for m), T = 4 with 32 vector
    /// registers, 2 with 16.
    /// </summary>
    private static void UpTile<TV>(float* b, int C, float* m, int R, float* o) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count;
        bool four = MatMul.WideRegisterFile<TV>();
        TV a00 = default, a01 = default, a02 = default, a03 = default;
        TV a10 = default, a11 = default, a12 = default, a13 = default;
        TV a20 = default, a21 = default, a22 = default, a23 = default;
        TV a30 = default, a31 = default, a32 = default, a33 = default;
        for (int j = 0; j < R; j++, b += C)
        {
            TV b0 = TV.Load(b), b1 = TV.Load(b + L), b2 = TV.Load(b + 2 * L), b3 = TV.Load(b + 3 * L);
            TV s = TV.Broadcast(m[j]);
            a00 = TV.Fma(b0, s, a00); a01 = TV.Fma(b1, s, a01); a02 = TV.Fma(b2, s, a02); a03 = TV.Fma(b3, s, a03);
            s = TV.Broadcast(m[R + j]);
            a10 = TV.Fma(b0, s, a10); a11 = TV.Fma(b1, s, a11); a12 = TV.Fma(b2, s, a12); a13 = TV.Fma(b3, s, a13);
            if (four)
            {
                s = TV.Broadcast(m[2 * R + j]);
                a20 = TV.Fma(b0, s, a20); a21 = TV.Fma(b1, s, a21); a22 = TV.Fma(b2, s, a22); a23 = TV.Fma(b3, s, a23);
                s = TV.Broadcast(m[3 * R + j]);
                a30 = TV.Fma(b0, s, a30); a31 = TV.Fma(b1, s, a31); a32 = TV.Fma(b2, s, a32); a33 = TV.Fma(b3, s, a33);
            }
        }
        TV.Store(a00, o); TV.Store(a01, o + L); TV.Store(a02, o + 2 * L); TV.Store(a03, o + 3 * L);
        o += C;
        TV.Store(a10, o); TV.Store(a11, o + L); TV.Store(a12, o + 2 * L); TV.Store(a13, o + 3 * L);
        if (!four) return;
        o += C;
        TV.Store(a20, o); TV.Store(a21, o + L); TV.Store(a22, o + 2 * L); TV.Store(a23, o + 3 * L);
        o += C;
        TV.Store(a30, o); TV.Store(a31, o + L); TV.Store(a32, o + 2 * L); TV.Store(a33, o + 3 * L);
    }

    /// <summary>o[4L columns] = m[R] @ b[R, 4L columns], for one token.</summary>
    private static void UpTile1<TV>(float* b, int C, float* m, int R, float* o) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count;
        TV a0 = default, a1 = default, a2 = default, a3 = default;
        for (int j = 0; j < R; j++, b += C)
        {
            TV s = TV.Broadcast(m[j]);
            a0 = TV.Fma(TV.Load(b), s, a0);
            a1 = TV.Fma(TV.Load(b + L), s, a1);
            a2 = TV.Fma(TV.Load(b + 2 * L), s, a2);
            a3 = TV.Fma(TV.Load(b + 3 * L), s, a3);
        }
        TV.Store(a0, o); TV.Store(a1, o + L); TV.Store(a2, o + 2 * L); TV.Store(a3, o + 3 * L);
    }

    private static float[] Transpose(float[] m, int rows, int cols)
    {
        float[] t = GC.AllocateUninitializedArray<float>(m.Length, pinned: true);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                t[j * rows + i] = m[i * cols + j];
        return t;
    }

    private static nint Address<T>(T[] pinned) where T : unmanaged => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
}

/// <summary>
/// The RWKV-7 time mix that replaces Qwen2's attention in ARWKV (ARWKV.md section 2), over a run of consecutive
/// tokens of one sequence: the projections are matrix products over all rows, the recurrence runs token by token
/// inside each head, heads in parallel.
/// </summary>
internal sealed class RwkvTimeMix
{
    // exp(-0.5): the decay is exp(-exp(-0.5) * sigmoid(z)), which keeps it in (0.545, 1).
    private const float DecayScale = -0.6065306597126334f;
    private const float NormEps = 1e-12f;

    public required int Hidden { get; init; }
    public required int HeadSize { get; init; }
    public required float[] XR { get; init; }
    public required float[] XW { get; init; }
    public required float[] XK { get; init; }
    public required float[] XV { get; init; }
    public required float[] XA { get; init; }
    public float[]? XG { get; init; }
    public required float[] W0 { get; init; }
    public required float[] A0 { get; init; }
    /// <summary>Unused in layer 0, which has no value residual.</summary>
    public float[]? V0 { get; init; }
    public required float[] KK { get; init; }
    public required float[] KA { get; init; }
    /// <summary>r_k [H, N] flattened.</summary>
    public required float[] RK { get; init; }
    public required WeightMatrix Receptance { get; init; }
    public required WeightMatrix Key { get; init; }
    public required WeightMatrix Value { get; init; }
    public required WeightMatrix Output { get; init; }
    public required LoraWeights DecayLora { get; init; }
    public required LoraWeights IclrLora { get; init; }
    /// <summary>Null in layer 0.</summary>
    public LoraWeights? ValueLora { get; init; }
    /// <summary>Null without wkv_has_gate.</summary>
    public LoraWeights? GateLora { get; init; }

    // The per-head recurrence is handed to the thread pool through one cached delegate and these fields, so a
    // prefill chunk allocates nothing.
    private ArwkvScratch? _runScratch;
    private float[]? _runState;
    private int _runRows;
    private KernelIsa _runIsa;
    private Action<int>? _headBody;
    private int[]? _headOrder;
    private int _headOrderThreads;

    /// <summary>
    /// scratch.Output[rows, C] = TimeMix(scratch.Normed[rows, C]); advances <paramref name="shift"/> (the last normed
    /// input, [C]) and <paramref name="wkv"/> (H x N x N). Layer 0 writes scratch.VFirst, later layers read it.
    /// </summary>
    public void Forward(int rows, ArwkvScratch s, float[] shift, float[] wkv, bool firstLayer, KernelThreadPool pool)
    {
        int C = Hidden, n = rows * C;
        // Token-wise work (shift mixes, the LoRAs and the elementwise math around them) is split into token ranges (at
        // least 8 tokens, up to 4 per thread so a late thread still gets a share): a LoRA's down projection has only
        // rank rows, too few for MatMul's row split to use two threads, and single-threaded these phases took an eighth
        // of a 0.5B prefill.
        int slices = rows > 1 && pool.ThreadCount > 1 ? Math.Min((rows + 7) / 8, 4 * pool.ThreadCount) : 1;
        var work = new TokenSliceWork { Mix = this, Scratch = s, Shift = shift, Rows = rows, Slices = slices, FirstLayer = firstLayer };
        if (slices == 1) MixTokens(0, rows, s, shift);
        else pool.Run(ref work, slices);
        s.Normed.AsSpan((rows - 1) * C, C).CopyTo(shift);
        ForwardProfile.Lap(ForwardPhase.TimeMixShift);

        Span<float> r = s.R.AsSpan(0, n), k = s.K.AsSpan(0, n), v = s.V.AsSpan(0, n);
        MatMul.Gemm3(Receptance, s.XR, r, Key, s.XK, k, Value, s.XV, v, rows, pool);
        ForwardProfile.Lap(ForwardPhase.TimeMixProjections);

        work.Phase = 1;
        if (slices == 1) LoraTokens(0, rows, s, firstLayer, pool);
        else pool.Run(ref work, slices);
        ForwardProfile.Lap(ForwardPhase.TimeMixLoras);

        int N = HeadSize;
        int heads = C / N;
        _runIsa = MatMul.Isa;
        if (rows == 1 || pool.ThreadCount == 1)
        {
            // One token's recurrence is microseconds of work: dispatching it to threads would cost more than it saves.
            for (int h = 0; h < heads; h++) RunHead(h, rows, s, wkv);
        }
        else
        {
            _runScratch = s;
            _runState = wkv;
            _runRows = rows;
            if (_headOrder is null || _headOrderThreads != pool.ThreadCount)
            {
                _headOrder = HeadOrder(heads, pool.ThreadCount);
                _headOrderThreads = pool.ThreadCount;
            }
            _headBody ??= i => RunHead(_headOrder![i], _runRows, _runScratch!, _runState!);
            pool.For(heads, _headBody);
            _runScratch = null;
            _runState = null;
        }

        ForwardProfile.Lap(ForwardPhase.Wkv7);

        Span<float> y = s.Y.AsSpan(0, n);
        if (GateLora is not null) TensorPrimitives.Multiply(y, s.G.AsSpan(0, n), y);
        Projection.Apply(Output, y, s.Output, rows, pool);
        ForwardProfile.Lap(ForwardPhase.TimeMixOutput);
    }

    /// <summary>One token range of a phase that is independent across tokens (phase 0: shift mixes, 1: LoRAs).</summary>
    private struct TokenSliceWork : IParallelWork
    {
        public RwkvTimeMix Mix;
        public ArwkvScratch Scratch;
        public float[] Shift;
        public int Rows, Slices, Phase;
        public bool FirstLayer;

        public readonly void Execute(int index)
        {
            int t0 = (int)((long)Rows * index / Slices), t1 = (int)((long)Rows * (index + 1) / Slices);
            if (t0 == t1) return;
            if (Phase == 0) Mix.MixTokens(t0, t1, Scratch, Shift);
            else Mix.LoraTokens(t0, t1, Scratch, FirstLayer, pool: null);
        }
    }

    /// <summary>Token shift and the six interpolations x + (x_prev - x) * mu for rows [t0, t1); row 0's x_prev is <paramref name="shift"/>.</summary>
    private void MixTokens(int t0, int t1, ArwkvScratch s, float[] shift)
    {
        int C = Hidden;
        ReadOnlySpan<float> x = s.Normed;
        for (int t = t0; t < t1; t++)
        {
            ReadOnlySpan<float> xt = x.Slice(t * C, C);
            Span<float> xxt = s.Shifted.AsSpan(t * C, C);
            TensorPrimitives.Subtract(t == 0 ? shift : x.Slice((t - 1) * C, C), xt, xxt);
            TensorPrimitives.MultiplyAdd(xxt, XR, xt, s.XR.AsSpan(t * C, C));
            TensorPrimitives.MultiplyAdd(xxt, XW, xt, s.XW.AsSpan(t * C, C));
            TensorPrimitives.MultiplyAdd(xxt, XK, xt, s.XK.AsSpan(t * C, C));
            TensorPrimitives.MultiplyAdd(xxt, XV, xt, s.XV.AsSpan(t * C, C));
            TensorPrimitives.MultiplyAdd(xxt, XA, xt, s.XA.AsSpan(t * C, C));
            if (GateLora is not null)
            {
                if (XG is null) xt.CopyTo(s.XG.AsSpan(t * C, C));
                else TensorPrimitives.MultiplyAdd(xxt, XG, xt, s.XG.AsSpan(t * C, C));
            }
        }
    }

    /// <summary>
    /// For rows [t0, t1): decay, the value residual, the in-context learning rate a, the gate, kk and the scaled k,
    /// everything between the r/k/v projections and the recurrence.
    /// </summary>
    private void LoraTokens(int t0, int t1, ArwkvScratch s, bool firstLayer, KernelThreadPool? pool)
    {
        int C = Hidden, rows = t1 - t0, o = t0 * C, n = rows * C;
        Span<float> k = s.K.AsSpan(o, n), v = s.V.AsSpan(o, n);

        // decay = exp(-e^-0.5 * sigmoid(w0 + tanh(x_w A) B))
        Span<float> decay = s.Decay.AsSpan(o, n);
        Lora(DecayLora, s.XW.AsSpan(o, n), decay, t0, rows, s, pool, innerActivation: TensorPrimitives.Tanh);
        AddRowVector(decay, W0, rows);
        TensorPrimitives.Sigmoid(decay, decay);
        TensorPrimitives.Multiply(decay, DecayScale, decay);
        TensorPrimitives.Exp(decay, decay);

        Span<float> vFirst = s.VFirst.AsSpan(o, n);
        if (firstLayer || ValueLora is null) v.CopyTo(vFirst);
        else
        {
            // v += (v_first - v) * sigmoid(v0 + x_v A B)
            Span<float> mix = s.Temp.AsSpan(o, n);
            Lora(ValueLora, s.XV.AsSpan(o, n), mix, t0, rows, s, pool, innerActivation: null);
            AddRowVector(mix, V0!, rows);
            TensorPrimitives.Sigmoid(mix, mix);
            Span<float> diff = s.Y.AsSpan(o, n);
            TensorPrimitives.Subtract(vFirst, v, diff);
            TensorPrimitives.MultiplyAdd(diff, mix, v, v);
        }

        Span<float> a = s.A.AsSpan(o, n);
        Lora(IclrLora, s.XA.AsSpan(o, n), a, t0, rows, s, pool, innerActivation: null);
        AddRowVector(a, A0, rows);
        TensorPrimitives.Sigmoid(a, a);

        if (GateLora is not null)
            Lora(GateLora, s.XG.AsSpan(o, n), s.G.AsSpan(o, n), t0, rows, s, pool, innerActivation: TensorPrimitives.Sigmoid);

        // kk = normalize_per_head(k * k_k); k = k * (1 + (a - 1) * k_a)
        Span<float> kk = s.Kk.AsSpan(o, n), scale = s.Temp.AsSpan(o, n);
        int N = HeadSize;
        for (int t = 0; t < rows; t++)
        {
            Span<float> kkt = kk.Slice(t * C, C);
            TensorPrimitives.Multiply(k.Slice(t * C, C), KK, kkt);
            for (int h = 0; h < C; h += N)
            {
                Span<float> head = kkt.Slice(h, N);
                TensorPrimitives.Divide(head, MathF.Max(TensorPrimitives.Norm(head), NormEps), head);
            }
            Span<float> st = scale.Slice(t * C, C);
            TensorPrimitives.Subtract(a.Slice(t * C, C), 1f, st);
            TensorPrimitives.MultiplyAdd(st, KA, 1f, st);
        }
        TensorPrimitives.Multiply(k, scale, k);
    }

    /// <summary>
    /// The order in which the pool's items take heads: items that run at the same time (neighbours in claim order) get
    /// heads about heads / threads apart. Neighbouring heads share a cache line of the state and of every output row
    /// (the arrays are only 16-byte aligned), and two threads writing those lines every step made the recurrence
    /// phase 40-60% slower (38-43 against 26-27 ms per 0.5B prefill).
    /// </summary>
    internal static int[] HeadOrder(int heads, int threads)
    {
        int stride = (heads + threads - 1) / threads;
        var order = new int[heads];
        int next = 0;
        for (int k = 0; k < stride; k++)
            for (int block = 0; block < threads; block++)
                if (block * stride + k < heads) order[next++] = block * stride + k;
        return order;
    }

    private void RunHead(int head, int rows, ArwkvScratch s, float[] wkv)
    {
        int N = HeadSize, C = Hidden;
        Span<float> state = wkv.AsSpan(head * N * N, N * N);
        ReadOnlySpan<float> rk = RK.AsSpan(head * N, N);
        for (int t = 0; t < rows; t++)
        {
            int o = t * C + head * N;
            Wkv7.Step(state, s.R.AsSpan(o, N), s.Decay.AsSpan(o, N), s.K.AsSpan(o, N), s.V.AsSpan(o, N),
                s.Kk.AsSpan(o, N), s.A.AsSpan(o, N), rk, s.Y.AsSpan(o, N), _runIsa);
        }
    }

    private delegate void Activation(ReadOnlySpan<float> x, Span<float> y);

    /// <summary>output[rows, C] = act(x A) B for rows starting at <paramref name="firstRow"/> of the chunk, the activation applied at the rank-sized middle when given.</summary>
    private static void Lora(LoraWeights lora, ReadOnlySpan<float> x, Span<float> output, int firstRow, int rows, ArwkvScratch s,
        KernelThreadPool? pool, Activation? innerActivation)
    {
        // Token ranges of different LoRAs run at once, so each range's slice is sized by the largest rank.
        int maxRank = s.LoraMid.Length / s.MaxRows;
        Span<float> mid = s.LoraMid.AsSpan(firstRow * maxRank, rows * lora.Rank);
        Projection.Apply(lora.Down, x, mid, rows, pool);
        innerActivation?.Invoke(mid, mid);
        lora.ApplyUp(mid, output, rows);
    }

    private static void AddRowVector(Span<float> m, ReadOnlySpan<float> row, int rows)
    {
        int C = row.Length;
        for (int t = 0; t < rows; t++)
        {
            Span<float> mt = m.Slice(t * C, C);
            TensorPrimitives.Add(mt, row, mt);
        }
    }
}
