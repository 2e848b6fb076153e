using System.Numerics;
using System.Numerics.Tensors;

namespace Arwkv.Training.Layers;

/// <summary>
/// The RWKV-7 recurrence (ARWKV.md section 2), per batch row and head, with state S[i][j] (i value, j key):
/// <code>
///   sa_i    = sum_j S[i][j] * aa_j
///   S[i][j] = S[i][j] * w_j + v_i * k_j + sa_i * bb_j
///   y_i     = sum_j S[i][j] * r_j
/// </code>
/// The time mix passes aa = -kk and bb = kk * a. A position whose mask byte is 0 leaves the state unchanged and
/// outputs 0, so padding anywhere in a sequence neither changes the state nor receives gradient.
/// <para>
/// Memory: forward keeps the state before every <see cref="CheckpointInterval"/>-th step. Backward walks the chunks
/// from last to first, re-runs the forward recurrence inside each chunk from its checkpoint (the chunk's states
/// land in scratch) and then walks the chunk's steps backwards. Re-running forward, rather than inverting the
/// step as BlinkDL's kernel does, is exact in any precision and costs one extra forward pass.
/// </para>
/// </summary>
internal static unsafe class Wkv7
{
    /// <summary>Steps between saved states.</summary>
    public const int CheckpointInterval = 16;

    public static int CheckpointCount(int seqLen) => (seqLen + CheckpointInterval - 1) / CheckpointInterval;

    // [B, H, CheckpointCount(T), N, N]
    public static long CheckpointLength(int batch, int seqLen, int heads, int headSize) =>
        (long)batch * heads * CheckpointCount(seqLen) * headSize * headSize;

    // Per (b, h): the chunk's CheckpointInterval + 1 states and the running state gradient.
    public static long BackwardScratchLength(int batch, int heads, int headSize) =>
        (long)batch * heads * (CheckpointInterval + 2) * headSize * headSize;

    // y [B, T, C], checkpoints [B, H, ceil(T/16), N, N], finalState [B, H, N, N] (optional)
    // r, w, k, v, aa, bb [B, T, C] with C = H * N; mask [B, T] (empty: every position real);
    // initialState [B, H, N, N] (empty: zero)
    public static void Forward<TF>(Span<TF> y, Span<TF> checkpoints, Span<TF> finalState,
        ReadOnlySpan<TF> r, ReadOnlySpan<TF> w, ReadOnlySpan<TF> k, ReadOnlySpan<TF> v, ReadOnlySpan<TF> aa, ReadOnlySpan<TF> bb,
        ReadOnlySpan<byte> mask, ReadOnlySpan<TF> initialState, int batch, int seqLen, int heads, int headSize)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int n = headSize, c = heads * headSize, chunks = CheckpointCount(seqLen);
        long bt = (long)batch * seqLen * c;
        if (y.Length < bt || r.Length < bt || w.Length < bt || k.Length < bt || v.Length < bt || aa.Length < bt || bb.Length < bt)
            throw new ArgumentException("a [B, T, C] buffer is too short");
        if (checkpoints.Length < CheckpointLength(batch, seqLen, heads, headSize)) throw new ArgumentException("checkpoints too short");
        if (!mask.IsEmpty && mask.Length < batch * seqLen) throw new ArgumentException("mask too short");
        long stateLen = (long)batch * heads * n * n;
        if (!initialState.IsEmpty && initialState.Length < stateLen) throw new ArgumentException("initialState too short");
        if (!finalState.IsEmpty && finalState.Length < stateLen) throw new ArgumentException("finalState too short");
        bool hasMask = !mask.IsEmpty, hasS0 = !initialState.IsEmpty, hasST = !finalState.IsEmpty;
        fixed (TF* py = y, pcp = checkpoints, pst = finalState, pr = r, pw = w, pk = k, pv = v, pa = aa, pb = bb, ps0 = initialState)
        fixed (byte* pm = mask)
        {
            TF* yp = py, cpp = pcp, stp = pst, rp = pr, wp = pw, kp = pk, vp = pv, ap = pa, bp = pb, s0p = ps0;
            byte* mp = pm;
            Work.For(batch * heads, job =>
            {
                int b = job / heads, h = job % heads;
                // 16 KiB for N = 64 in float32: the working state lives on the worker's stack, not the heap.
                TF* s = stackalloc TF[n * n];
                var state = new Span<TF>(s, n * n);
                if (hasS0) new ReadOnlySpan<TF>(s0p + (long)job * n * n, n * n).CopyTo(state);
                else state.Clear();
                for (int t = 0; t < seqLen; t++)
                {
                    if (t % CheckpointInterval == 0)
                        state.CopyTo(new Span<TF>(cpp + ((long)job * chunks + t / CheckpointInterval) * n * n, n * n));
                    long at = ((long)b * seqLen + t) * c + h * n;
                    if (hasMask && mp[b * seqLen + t] == 0)
                    {
                        new Span<TF>(yp + at, n).Clear();
                        continue;
                    }
                    Step(s, s, rp + at, wp + at, kp + at, vp + at, ap + at, bp + at, yp + at, n);
                }
                if (hasST) state.CopyTo(new Span<TF>(stp + (long)job * n * n, n * n));
            });
        }
    }

    // One step: next = prev (diag(w) + aa bb^T) + v k^T; y (optional) = next r. next may alias prev.
    private static void Step<TF>(TF* next, TF* prev, TF* r, TF* w, TF* k, TF* v, TF* aa, TF* bb, TF* y, int n)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        var wS = new ReadOnlySpan<TF>(w, n); var kS = new ReadOnlySpan<TF>(k, n);
        var aS = new ReadOnlySpan<TF>(aa, n); var bS = new ReadOnlySpan<TF>(bb, n);
        var rS = new ReadOnlySpan<TF>(r, n);
        for (int i = 0; i < n; i++)
        {
            var prevRow = new ReadOnlySpan<TF>(prev + i * n, n);
            var row = new Span<TF>(next + i * n, n);
            TF sa = TensorPrimitives.Dot(prevRow, aS);
            TensorPrimitives.Multiply(prevRow, wS, row);
            TensorPrimitives.MultiplyAdd(kS, v[i], row, row);
            TensorPrimitives.MultiplyAdd(bS, sa, row, row);
            if (y != null) y[i] = TensorPrimitives.Dot(row, rS);
        }
    }

    // dr, dw, dk, dv, daa, dbb [B, T, C] +=; dInitialState [B, H, N, N] += (optional)
    // dy [B, T, C]; checkpoints from Forward; the forward inputs; scratch of BackwardScratchLength.
    public static void Backward<TF>(Span<TF> dr, Span<TF> dw, Span<TF> dk, Span<TF> dv, Span<TF> daa, Span<TF> dbb, Span<TF> dInitialState,
        ReadOnlySpan<TF> dy, ReadOnlySpan<TF> checkpoints,
        ReadOnlySpan<TF> r, ReadOnlySpan<TF> w, ReadOnlySpan<TF> k, ReadOnlySpan<TF> v, ReadOnlySpan<TF> aa, ReadOnlySpan<TF> bb,
        ReadOnlySpan<byte> mask, Span<TF> scratch, int batch, int seqLen, int heads, int headSize)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int n = headSize, c = heads * headSize, chunks = CheckpointCount(seqLen);
        long bt = (long)batch * seqLen * c;
        if (dr.Length < bt || dw.Length < bt || dk.Length < bt || dv.Length < bt || daa.Length < bt || dbb.Length < bt || dy.Length < bt)
            throw new ArgumentException("a gradient buffer is too short");
        if (scratch.Length < BackwardScratchLength(batch, heads, headSize)) throw new ArgumentException("scratch too short");
        if (!dInitialState.IsEmpty && dInitialState.Length < (long)batch * heads * n * n) throw new ArgumentException("dInitialState too short");
        bool hasMask = !mask.IsEmpty, hasDs0 = !dInitialState.IsEmpty;
        long perJob = (long)(CheckpointInterval + 2) * n * n;
        fixed (TF* pdr = dr, pdw = dw, pdk = dk, pdv = dv, pda = daa, pdb = dbb, pds0 = dInitialState, pdy = dy, pcp = checkpoints)
        fixed (TF* pr = r, pw = w, pk = k, pv = v, pa = aa, pb = bb, pscr = scratch)
        fixed (byte* pm = mask)
        {
            TF* drp = pdr, dwp = pdw, dkp = pdk, dvp = pdv, dap = pda, dbp = pdb, ds0p = pds0, dyp = pdy, cpp = pcp;
            TF* rp = pr, wp = pw, kp = pk, vp = pv, ap = pa, bp = pb, scrp = pscr;
            byte* mp = pm;
            Work.For(batch * heads, job =>
            {
                int b = job / heads, h = job % heads;
                TF* dS = scrp + job * perJob;
                TF* states = dS + n * n;
                new Span<TF>(dS, n * n).Clear();
                for (int chunk = chunks - 1; chunk >= 0; chunk--)
                {
                    int t0 = chunk * CheckpointInterval, t1 = Math.Min(seqLen, t0 + CheckpointInterval);
                    new ReadOnlySpan<TF>(cpp + ((long)job * chunks + chunk) * n * n, n * n).CopyTo(new Span<TF>(states, n * n));
                    for (int t = t0; t < t1; t++)
                    {
                        TF* prev = states + (t - t0) * n * n, next = prev + n * n;
                        long at = ((long)b * seqLen + t) * c + h * n;
                        if (hasMask && mp[b * seqLen + t] == 0) new ReadOnlySpan<TF>(prev, n * n).CopyTo(new Span<TF>(next, n * n));
                        else Step(next, prev, rp + at, wp + at, kp + at, vp + at, ap + at, bp + at, (TF*)null, n);
                    }
                    for (int t = t1 - 1; t >= t0; t--)
                    {
                        if (hasMask && mp[b * seqLen + t] == 0) continue;
                        TF* prev = states + (t - t0) * n * n, cur = prev + n * n;
                        long at = ((long)b * seqLen + t) * c + h * n;
                        StepBackward(dS, prev, cur, dyp + at, rp + at, wp + at, kp + at, vp + at, ap + at, bp + at,
                            drp + at, dwp + at, dkp + at, dvp + at, dap + at, dbp + at, n);
                    }
                }
                if (hasDs0)
                {
                    var target = new Span<TF>(ds0p + (long)job * n * n, n * n);
                    TensorPrimitives.Add(target, new ReadOnlySpan<TF>(dS, n * n), target);
                }
            });
        }
    }

    // dS holds dL/dS_t on entry (without this step's output term) and dL/dS_{t-1} on exit.
    private static void StepBackward<TF>(TF* dS, TF* prev, TF* cur, TF* dy, TF* r, TF* w, TF* k, TF* v, TF* aa, TF* bb,
        TF* dr, TF* dw, TF* dk, TF* dv, TF* daa, TF* dbb, int n)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        var rS = new ReadOnlySpan<TF>(r, n); var wS = new ReadOnlySpan<TF>(w, n); var kS = new ReadOnlySpan<TF>(k, n);
        var aS = new ReadOnlySpan<TF>(aa, n); var bS = new ReadOnlySpan<TF>(bb, n);
        var drS = new Span<TF>(dr, n); var dwS = new Span<TF>(dw, n); var dkS = new Span<TF>(dk, n);
        var daS = new Span<TF>(daa, n); var dbS = new Span<TF>(dbb, n);
        for (int i = 0; i < n; i++)
        {
            var dRow = new Span<TF>(dS + i * n, n);
            var prevRow = new ReadOnlySpan<TF>(prev + i * n, n);
            TF dyi = dy[i];
            // y_i = S_t[i] . r
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TF>(cur + i * n, n), dyi, drS, drS);
            TensorPrimitives.MultiplyAdd(rS, dyi, dRow, dRow);
            // S_t[i][j] = S_{t-1}[i][j] w_j + v_i k_j + sa_i bb_j
            TF sa = TensorPrimitives.Dot(prevRow, aS);
            TensorPrimitives.MultiplyAdd(dRow, prevRow, dwS, dwS);
            TensorPrimitives.MultiplyAdd(dRow, v[i], dkS, dkS);
            TensorPrimitives.MultiplyAdd(dRow, sa, dbS, dbS);
            dv[i] += TensorPrimitives.Dot(dRow, kS);
            TF dsa = TensorPrimitives.Dot(dRow, bS);
            // sa_i = S_{t-1}[i] . aa
            TensorPrimitives.MultiplyAdd(prevRow, dsa, daS, daS);
            TensorPrimitives.Multiply(dRow, wS, dRow);
            TensorPrimitives.MultiplyAdd(aS, dsa, dRow, dRow);
        }
    }
}
