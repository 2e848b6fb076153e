using Arwkv.IO;

namespace Arwkv.Hip;

// The Qwen2 teacher's attention core (attention.hip): RoPE and causal grouped-query flash attention with its backward
// and a KV-cache decode. The formulas are in arwkv_hip.h; the CPU references are Training/Layers/Attention.cs and
// Layers/Qwen2Attention.cs in Arwkv.Core.
public static partial class HipKernels
{
    /// <summary>
    /// cos/sin tables [positions, headDim / 2] for <see cref="RopeForward"/>, computed exactly as the CPU layers do
    /// (transformers' float32 angle position * inv_freq, inv_freq = 1 / theta^(2i / headDim)).
    /// </summary>
    public static (float[] Cos, float[] Sin) RotaryTables(int positions, int headDim, double theta)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(positions);
        var cos = new float[positions * (headDim / 2)];
        var sin = new float[cos.Length];
        Arwkv.Training.Layers.Attention.RotaryTables<float>(cos, sin, positions, headDim, theta);
        return (cos, sin);
    }

    /// <summary>
    /// Rotary position embedding in Hugging Face's rotate_half convention: output [batch, time, heads, headDim]
    /// (overwritten; may be <paramref name="x"/> itself) from x of the same shape and cos/sin [positions, headDim / 2].
    /// Token t of sequence b is at position t + startPositions[b] (startPositions [batch] int32, null = 0).
    /// </summary>
    public static void RopeForward(HipBuffer output, HipBuffer x, HipBuffer cos, HipBuffer sin, HipBuffer? startPositions,
        int batch, int time, int heads, int headDim, int positions, HipStream? stream = null)
    {
        CheckRope(output, x, cos, sin, startPositions, batch, time, heads, headDim, positions);
        Run(NativeMethods.arwkv_rope_forward(output.Pointer, x.Pointer, cos.Pointer, sin.Pointer, P(startPositions), batch, time, heads,
            headDim, positions, S(stream)), "arwkv_rope_forward");
    }

    /// <summary>dx [batch, time, heads, headDim] += the transposed rotation of dout (the gradient through <see cref="RopeForward"/>).</summary>
    public static void RopeBackward(HipBuffer dx, HipBuffer dout, HipBuffer cos, HipBuffer sin, HipBuffer? startPositions,
        int batch, int time, int heads, int headDim, int positions, HipStream? stream = null)
    {
        CheckRope(dx, dout, cos, sin, startPositions, batch, time, heads, headDim, positions);
        if (ReferenceEquals(dx, dout) || dx.Pointer == dout.Pointer) throw new ArgumentException("dx and dout must be different buffers.", nameof(dx));
        Run(NativeMethods.arwkv_rope_backward(dx.Pointer, dout.Pointer, cos.Pointer, sin.Pointer, P(startPositions), batch, time, heads,
            headDim, positions, S(stream)), "arwkv_rope_backward");
    }

    /// <summary>
    /// Causal grouped-query attention, flash style: output [batch, time, heads, headDim] (overwritten) from rotated
    /// q [batch, time, heads, headDim] and k, v [batch, time, kvHeads, headDim]; query head h reads kv head
    /// h / (heads / kvHeads). <paramref name="lse"/> [batch, heads, time] (null = not saved) receives each row's
    /// log-sum-exp for <see cref="AttentionBackward"/>. <paramref name="mask"/> [batch, time] int32 (null = all valid):
    /// masked keys are never attended; masked queries write zeros (and lse = -inf).
    /// </summary>
    public static void AttentionForward(HipBuffer output, HipBuffer? lse, HipBuffer q, HipBuffer k, HipBuffer v, HipBuffer? mask,
        int batch, int time, int heads, int kvHeads, int headDim, HipStream? stream = null)
    {
        CheckAttention(batch, time, heads, kvHeads, headDim);
        long qBytes = (long)batch * time * heads * headDim * F, kvBytes = (long)batch * time * kvHeads * headDim * F;
        Need(output, qBytes, nameof(output)); Need(q, qBytes, nameof(q)); Need(k, kvBytes, nameof(k)); Need(v, kvBytes, nameof(v));
        if (lse != null) Need(lse, (long)batch * heads * time * F, nameof(lse));
        if (mask != null) Need(mask, (long)batch * time * 4, nameof(mask));
        Run(NativeMethods.arwkv_attention_forward(output.Pointer, P(lse), q.Pointer, k.Pointer, v.Pointer, P(mask), batch, time, heads,
            kvHeads, headDim, S(stream)), "arwkv_attention_forward");
    }

    /// <summary>
    /// FlashAttention-2 backward of <see cref="AttentionForward"/>: dq [batch, time, heads, headDim], dk and dv
    /// [batch, time, kvHeads, headDim] += the gradients with respect to the rotated q, k and v (dk, dv summed over each
    /// kv head's group), from dout and the forward's output and lse. <paramref name="delta"/> [batch, heads, time]
    /// is scratch (overwritten with rowsum(dout * output)). The same mask as the forward.
    /// </summary>
    public static void AttentionBackward(HipBuffer dq, HipBuffer dk, HipBuffer dv, HipBuffer delta, HipBuffer dout, HipBuffer output,
        HipBuffer lse, HipBuffer q, HipBuffer k, HipBuffer v, HipBuffer? mask, int batch, int time, int heads, int kvHeads, int headDim,
        HipStream? stream = null)
    {
        CheckAttention(batch, time, heads, kvHeads, headDim);
        long qBytes = (long)batch * time * heads * headDim * F, kvBytes = (long)batch * time * kvHeads * headDim * F;
        long rowBytes = (long)batch * heads * time * F;
        NeedAll(qBytes, (dq, nameof(dq)), (dout, nameof(dout)), (output, nameof(output)), (q, nameof(q)));
        NeedAll(kvBytes, (dk, nameof(dk)), (dv, nameof(dv)), (k, nameof(k)), (v, nameof(v)));
        Need(lse, rowBytes, nameof(lse)); Need(delta, rowBytes, nameof(delta));
        if (mask != null) Need(mask, (long)batch * time * 4, nameof(mask));
        Run(NativeMethods.arwkv_attention_backward(dq.Pointer, dk.Pointer, dv.Pointer, delta.Pointer, dout.Pointer, output.Pointer,
            lse.Pointer, q.Pointer, k.Pointer, v.Pointer, P(mask), batch, time, heads, kvHeads, headDim, S(stream)),
            "arwkv_attention_backward");
    }

    /// <summary>
    /// One generation step: output [batch, heads, headDim] (overwritten) for one rotated query per sequence
    /// q [batch, heads, headDim] (float32) against the cache kCache, vCache [batch, capacity, kvHeads, headDim] of
    /// <paramref name="cacheType"/> (F32 or BF16), attending rows 0 .. lengths[b]-1 (the new token's k and v already
    /// written at row lengths[b]-1; lengths [batch] int32, null = capacity).
    /// </summary>
    public static void AttentionDecode(HipBuffer output, HipBuffer q, HipBuffer kCache, HipBuffer vCache, HipBuffer? lengths, DType cacheType,
        int batch, int heads, int kvHeads, int headDim, int capacity, HipStream? stream = null)
    {
        int dtype = Code(cacheType);
        CheckAttention(batch, 1, heads, kvHeads, headDim);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        long qBytes = (long)batch * heads * headDim * F, cacheBytes = (long)batch * capacity * kvHeads * headDim * cacheType.SizeOf();
        Need(output, qBytes, nameof(output)); Need(q, qBytes, nameof(q));
        Need(kCache, cacheBytes, nameof(kCache)); Need(vCache, cacheBytes, nameof(vCache));
        if (lengths != null) Need(lengths, (long)batch * 4, nameof(lengths));
        Run(NativeMethods.arwkv_attention_decode(output.Pointer, q.Pointer, kCache.Pointer, vCache.Pointer, P(lengths), dtype, batch, heads,
            kvHeads, headDim, capacity, S(stream)), "arwkv_attention_decode");
    }

    static void CheckRope(HipBuffer output, HipBuffer input, HipBuffer cos, HipBuffer sin, HipBuffer? startPositions,
        int batch, int time, int heads, int headDim, int positions)
    {
        if (batch < 0 || time < 0 || heads <= 0 || positions <= 0) throw new ArgumentException("batch and time must be >= 0, heads and positions > 0.");
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentException($"head dimension {headDim} must be positive and even for RoPE.", nameof(headDim));
        long bytes = (long)batch * time * heads * headDim * F, table = (long)positions * (headDim / 2) * F;
        Need(output, bytes, "output"); Need(input, bytes, "input"); Need(cos, table, nameof(cos)); Need(sin, table, nameof(sin));
        if (startPositions != null) Need(startPositions, (long)batch * 4, nameof(startPositions));
    }

    static void CheckAttention(int batch, int time, int heads, int kvHeads, int headDim)
    {
        if (batch < 0 || time < 0) throw new ArgumentException("batch and time must be >= 0.");
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
            throw new ArgumentException($"heads {heads} must be a positive multiple of kvHeads {kvHeads}.", nameof(heads));
        if (headDim is not (16 or 32 or 64 or 128))
            throw new ArgumentException($"the attention kernels take head dimensions 16, 32, 64 or 128, not {headDim}.", nameof(headDim));
    }
}
