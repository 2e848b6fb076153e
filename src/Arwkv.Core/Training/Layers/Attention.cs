using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace Arwkv.Training.Layers;

/// <summary>
/// Causal grouped-query self-attention with rotary position embeddings, for training the demo Qwen2 teacher
/// (llm.c's attention_forward / attention_backward, plus RoPE and GQA). Inputs are the already-projected
/// q [B, T, H*D], k and v [B, T, KV*D]; query head h reads kv head h / (H / KV). RoPE follows Hugging Face's
/// rotate_half convention (element i pairs with i + D/2), as in the inference path, so a trained teacher loads
/// into <see cref="Qwen2Model"/> unchanged.
/// Forward saves the rotated q and k and the softmax probabilities [B, H, T, T] (upper triangle zero);
/// backward adds into dq, dk and dv, so gradients accumulate across calls.
/// </summary>
internal static unsafe class Attention
{
    /// <summary>cos/sin [T, D/2] for positions 0..T-1, computed as transformers does (float32 angle).</summary>
    public static void RotaryTables<TF>(Span<TF> cos, Span<TF> sin, int tokens, int headDim, double theta)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int half = headDim / 2;
        if (headDim % 2 != 0) throw new ArgumentException("head dimension must be even for RoPE", nameof(headDim));
        if (cos.Length < tokens * half || sin.Length < tokens * half) throw new ArgumentException("cos/sin need tokens x headDim/2 elements");
        for (int i = 0; i < half; i++)
        {
            float inv = (float)(1.0 / Math.Pow(theta, 2.0 * i / headDim));
            for (int t = 0; t < tokens; t++)
            {
                float angle = t * inv;
                cos[t * half + i] = TF.CreateTruncating(Math.Cos(angle));
                sin[t * half + i] = TF.CreateTruncating(Math.Sin(angle));
            }
        }
    }

    // output [B, T, H*D], qRot [B, T, H*D], kRot [B, T, KV*D], probs [B, H, T, T]
    // q [B, T, H*D], k [B, T, KV*D], v [B, T, KV*D], cos/sin [T, D/2]
    public static void Forward<TF>(Span<TF> output, Span<TF> qRot, Span<TF> kRot, Span<TF> probs,
        ReadOnlySpan<TF> q, ReadOnlySpan<TF> k, ReadOnlySpan<TF> v, ReadOnlySpan<TF> cos, ReadOnlySpan<TF> sin,
        int batch, int tokens, int heads, int kvHeads, int headDim)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(batch, tokens, heads, kvHeads, headDim, output.Length, qRot.Length, kRot.Length, probs.Length, q.Length, k.Length, v.Length, cos.Length, sin.Length);
        int qWidth = heads * headDim, kvWidth = kvHeads * headDim, group = heads / kvHeads;
        q.Slice(0, batch * tokens * qWidth).CopyTo(qRot);
        k.Slice(0, batch * tokens * kvWidth).CopyTo(kRot);
        Rotate(qRot, cos, sin, batch, tokens, heads, headDim);
        Rotate(kRot, cos, sin, batch, tokens, kvHeads, headDim);
        TF scale = TF.One / TF.Sqrt(TF.CreateTruncating(headDim));

        fixed (TF* po = output, pq = qRot, pk = kRot, pv = v, pp = probs)
        {
            TF* op = po, qp = pq, kp = pk, vp = pv, pr = pp;
            For(batch * heads, item =>
            {
                int b = item / heads, h = item % heads, g = h / group;
                for (int t = 0; t < tokens; t++)
                {
                    TF* query = qp + ((long)(b * tokens + t) * qWidth + h * headDim);
                    var row = new Span<TF>(pr + (((long)(b * heads + h) * tokens + t) * tokens), tokens);
                    TF max = TF.NegativeInfinity;
                    for (int s = 0; s <= t; s++)
                    {
                        TF score = Dot(query, kp + ((long)(b * tokens + s) * kvWidth + g * headDim), headDim) * scale;
                        row[s] = score;
                        if (score > max) max = score;
                    }
                    TF sum = TF.Zero;
                    for (int s = 0; s <= t; s++)
                    {
                        TF e = TF.Exp(row[s] - max);
                        row[s] = e;
                        sum += e;
                    }
                    TF inv = TF.One / sum;
                    TensorPrimitives.Multiply(row.Slice(0, t + 1), inv, row.Slice(0, t + 1));
                    row.Slice(t + 1).Clear();
                    TF* o = op + ((long)(b * tokens + t) * qWidth + h * headDim);
                    new Span<TF>(o, headDim).Clear();
                    for (int s = 0; s <= t; s++)
                        Axpy(o, vp + ((long)(b * tokens + s) * kvWidth + g * headDim), row[s], headDim);
                }
            });
        }
    }

    // dq [B, T, H*D] +=, dk [B, T, KV*D] +=, dv [B, T, KV*D] +=
    // dOutput [B, T, H*D]; qRot, kRot, probs as saved by Forward; v [B, T, KV*D]; cos/sin [T, D/2]
    // With P = softmax(S), S = scale * qRot kRot^T, o = P v:
    //   dP = dO v^T, dv = P^T dO, dS = P * (dP - rowsum(P * dP)), dqRot = scale dS kRot, dkRot = scale dS^T qRot,
    // and the gradient w.r.t. the unrotated q, k is the inverse rotation (the transpose of a rotation) of dqRot, dkRot.
    public static void Backward<TF>(Span<TF> dq, Span<TF> dk, Span<TF> dv, ReadOnlySpan<TF> dOutput,
        ReadOnlySpan<TF> qRot, ReadOnlySpan<TF> kRot, ReadOnlySpan<TF> v, ReadOnlySpan<TF> probs,
        ReadOnlySpan<TF> cos, ReadOnlySpan<TF> sin, int batch, int tokens, int heads, int kvHeads, int headDim)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        Check(batch, tokens, heads, kvHeads, headDim, dOutput.Length, qRot.Length, kRot.Length, probs.Length, dq.Length, dk.Length, dv.Length, cos.Length, sin.Length);
        if (v.Length < batch * tokens * kvHeads * headDim) throw new ArgumentException("v is too short");
        int qWidth = heads * headDim, kvWidth = kvHeads * headDim, group = heads / kvHeads, half = headDim / 2;
        TF scale = TF.One / TF.Sqrt(TF.CreateTruncating(headDim));

        fixed (TF* pdq = dq, pdk = dk, pdv = dv, pdo = dOutput, pq = qRot, pk = kRot, pv = v, pp = probs, pc = cos, ps = sin)
        {
            TF* dqp = pdq, dkp = pdk, dvp = pdv, dop = pdo, qp = pq, kp = pk, vp = pv, pr = pp, cp = pc, sp = ps;
            // One work item per (batch, kv head): it owns that kv head's dk and dv rows, so no two items write the same memory.
            For(batch * kvHeads, item =>
            {
                int b = item / kvHeads, g = item % kvHeads;
                var dkRot = new TF[tokens * headDim];
                var dP = new TF[tokens];
                var dqRot = new TF[headDim];
                for (int h = g * group; h < (g + 1) * group; h++)
                {
                    for (int t = 0; t < tokens; t++)
                    {
                        TF* dO = dop + ((long)(b * tokens + t) * qWidth + h * headDim);
                        TF* row = pr + (((long)(b * heads + h) * tokens + t) * tokens);
                        TF rowDot = TF.Zero;
                        for (int s = 0; s <= t; s++)
                        {
                            long kv = (long)(b * tokens + s) * kvWidth + g * headDim;
                            dP[s] = Dot(dO, vp + kv, headDim);
                            rowDot += row[s] * dP[s];
                            Axpy(dvp + kv, dO, row[s], headDim);
                        }
                        TF* query = qp + ((long)(b * tokens + t) * qWidth + h * headDim);
                        Array.Clear(dqRot);
                        fixed (TF* dqr = dqRot, dkr = dkRot)
                        {
                            for (int s = 0; s <= t; s++)
                            {
                                TF dS = row[s] * (dP[s] - rowDot) * scale;
                                if (dS == TF.Zero) continue;
                                Axpy(dqr, kp + ((long)(b * tokens + s) * kvWidth + g * headDim), dS, headDim);
                                Axpy(dkr + (long)s * headDim, query, dS, headDim);
                            }
                        }
                        AddInverseRotated(new Span<TF>(dqp + ((long)(b * tokens + t) * qWidth + h * headDim), headDim), dqRot,
                            new ReadOnlySpan<TF>(cp + (long)t * half, half), new ReadOnlySpan<TF>(sp + (long)t * half, half));
                    }
                }
                for (int s = 0; s < tokens; s++)
                    AddInverseRotated(new Span<TF>(dkp + ((long)(b * tokens + s) * kvWidth + g * headDim), headDim), dkRot.AsSpan(s * headDim, headDim),
                        new ReadOnlySpan<TF>(cp + (long)s * half, half), new ReadOnlySpan<TF>(sp + (long)s * half, half));
            });
        }
    }

    // x [B, T, heads*D] in place: a' = a c - b s, b' = b c + a s with a = x[i], b = x[i + D/2]
    private static void Rotate<TF>(Span<TF> x, ReadOnlySpan<TF> cos, ReadOnlySpan<TF> sin, int batch, int tokens, int heads, int headDim)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int half = headDim / 2;
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < tokens; t++)
            {
                ReadOnlySpan<TF> c = cos.Slice(t * half, half), s = sin.Slice(t * half, half);
                for (int h = 0; h < heads; h++)
                {
                    Span<TF> vec = x.Slice(((b * tokens + t) * heads + h) * headDim, headDim);
                    for (int i = 0; i < half; i++)
                    {
                        TF a = vec[i], bb = vec[i + half], si = s[i];
                        vec[i] = a * c[i] - bb * si;
                        vec[i + half] = bb * c[i] + a * si;
                    }
                }
            }
    }

    // destination += R^T gradient, the adjoint of the forward rotation
    private static void AddInverseRotated<TF>(Span<TF> destination, ReadOnlySpan<TF> gradient, ReadOnlySpan<TF> cos, ReadOnlySpan<TF> sin)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int half = cos.Length;
        for (int i = 0; i < half; i++)
        {
            TF ga = gradient[i], gb = gradient[i + half];
            destination[i] += ga * cos[i] + gb * sin[i];
            destination[i + half] += gb * cos[i] - ga * sin[i];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TF Dot<TF>(TF* a, TF* b, int n)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int i = 0;
        TF sum = TF.Zero;
        if (Vector.IsHardwareAccelerated && n >= Vector<TF>.Count)
        {
            Vector<TF> acc = Vector<TF>.Zero;
            for (; i <= n - Vector<TF>.Count; i += Vector<TF>.Count)
                acc += Vector.Load(a + i) * Vector.Load(b + i);
            sum = Vector.Sum(acc);
        }
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    // y += a * x
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Axpy<TF>(TF* y, TF* x, TF a, int n)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<TF>.Count)
        {
            var va = new Vector<TF>(a);
            for (; i <= n - Vector<TF>.Count; i += Vector<TF>.Count)
                Vector.Store(Vector.Load(y + i) + va * Vector.Load(x + i), y + i);
        }
        for (; i < n; i++) y[i] += a * x[i];
    }

    private static void Check(int batch, int tokens, int heads, int kvHeads, int headDim,
        int outOrDOut, int qRot, int kRot, int probs, int q, int k, int v, int cos, int sin)
    {
        if (batch <= 0 || tokens <= 0 || heads <= 0 || kvHeads <= 0 || headDim <= 0) throw new ArgumentException("sizes must be positive");
        if (heads % kvHeads != 0) throw new ArgumentException($"heads {heads} is not a multiple of kvHeads {kvHeads}");
        if (headDim % 2 != 0) throw new ArgumentException("head dimension must be even for RoPE");
        long qn = (long)batch * tokens * heads * headDim, kvn = (long)batch * tokens * kvHeads * headDim;
        if (outOrDOut < qn || qRot < qn || q < qn) throw new ArgumentException($"query-shaped buffers need B x T x H x D = {qn} elements");
        if (kRot < kvn || k < kvn || v < kvn) throw new ArgumentException($"key/value-shaped buffers need B x T x KV x D = {kvn} elements");
        if (probs < (long)batch * heads * tokens * tokens) throw new ArgumentException("probs needs B x H x T x T elements");
        if (cos < tokens * (headDim / 2) || sin < tokens * (headDim / 2)) throw new ArgumentException("cos/sin need T x D/2 elements");
    }

    private static void For(int count, Action<int> body)
    {
        if (count <= 1 || Environment.ProcessorCount == 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, body);
    }
}
