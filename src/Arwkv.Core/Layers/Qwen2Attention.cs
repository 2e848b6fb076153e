using System.Numerics.Tensors;
using Arwkv.Kernels;

namespace Arwkv.Layers;

/// <summary>
/// The Qwen2 teacher's attention core for inference: rotary position embeddings in Hugging Face's
/// <c>rotate_half</c> convention and causal grouped-query attention over a key/value cache.
/// The q/k/v/o projections are done by the caller with <see cref="MatMul"/>.
/// </summary>
internal static class Qwen2Attention
{
    /// <summary>
    /// RoPE inverse frequencies 1 / theta^(2i / headDim), i &lt; headDim / 2, rounded to float32 as
    /// transformers computes them, so that angles match the reference implementation bit for bit in most cases.
    /// </summary>
    public static float[] InverseFrequencies(int headDim, double theta)
    {
        var inv = new float[headDim / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = (float)(1.0 / Math.Pow(theta, 2.0 * i / headDim));
        return inv;
    }

    /// <summary>
    /// Fills cos/sin tables [tokens, headDim/2] for positions start .. start+tokens-1. The angle is formed in
    /// float32 (position * inv_freq) as transformers does; cos and sin of it are then exact.
    /// </summary>
    public static void RotaryTables(ReadOnlySpan<float> invFreq, int start, int tokens, Span<float> cos, Span<float> sin)
    {
        int half = invFreq.Length;
        for (int t = 0; t < tokens; t++)
        {
            float position = start + t;
            for (int i = 0; i < half; i++)
            {
                float angle = position * invFreq[i];
                cos[t * half + i] = (float)Math.Cos(angle);
                sin[t * half + i] = (float)Math.Sin(angle);
            }
        }
    }

    /// <summary>
    /// Rotates x [tokens, heads * headDim] in place: for each head, with h = headDim/2,
    /// x'[i] = x[i] cos - x[i+h] sin and x'[i+h] = x[i+h] cos + x[i] sin (rotate_half pairs i with i+h,
    /// not adjacent elements as the original RoPE paper and llama.cpp's "normal" mode do).
    /// </summary>
    public static void ApplyRotary(Span<float> x, int tokens, int heads, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = headDim / 2;
        for (int t = 0; t < tokens; t++)
        {
            ReadOnlySpan<float> c = cos.Slice(t * half, half), s = sin.Slice(t * half, half);
            for (int h = 0; h < heads; h++)
            {
                Span<float> v = x.Slice((t * heads + h) * headDim, headDim);
                for (int i = 0; i < half; i++)
                {
                    float a = v[i], b = v[i + half];
                    v[i] = a * c[i] - b * s[i];
                    v[i + half] = b * c[i] + a * s[i];
                }
            }
        }
    }

    /// <summary>
    /// Causal attention of <paramref name="tokens"/> new queries against a cache that already holds their keys
    /// and values. Query t (absolute position start+t) sees cache rows 0 .. start+t.
    /// </summary>
    /// <param name="output">[tokens, heads * headDim].</param>
    /// <param name="query">[tokens, heads * headDim], already rotated.</param>
    /// <param name="keys">Cache [positions, kvHeads * headDim], rotated keys.</param>
    /// <param name="values">Cache [positions, kvHeads * headDim].</param>
    /// <param name="scores">Scratch, at least heads * (start + tokens) floats.</param>
    /// <param name="tokens">Number of new queries.</param>
    /// <param name="start">Position of the first new query (cache rows before it are earlier tokens).</param>
    /// <param name="heads">Query heads.</param>
    /// <param name="kvHeads">Key/value heads; query head h reads kv head h / (heads / kvHeads).</param>
    /// <param name="headDim">Width of a head.</param>
    /// <param name="pool">Runs heads in parallel when given.</param>
    public static void Forward(float[] output, float[] query, float[] keys, float[] values, float[] scores,
        int tokens, int start, int heads, int kvHeads, int headDim, KernelThreadPool? pool)
    {
        int total = start + tokens;
        if (output.Length < tokens * heads * headDim || query.Length < tokens * heads * headDim)
            throw new ArgumentException("output or query is shorter than tokens x heads x headDim");
        if (keys.Length < total * kvHeads * headDim || values.Length < total * kvHeads * headDim)
            throw new ArgumentException("the key/value cache is shorter than the attended positions");
        if (scores.Length < heads * total) throw new ArgumentException("scores scratch is too short");
        if (heads % kvHeads != 0) throw new ArgumentException("heads must be a multiple of kvHeads");

        if (pool is null || pool.ThreadCount == 1 || heads == 1)
        {
            for (int h = 0; h < heads; h++) Head(h, output, query, keys, values, scores, tokens, start, heads, kvHeads, headDim);
            return;
        }
        pool.For(heads, h => Head(h, output, query, keys, values, scores, tokens, start, heads, kvHeads, headDim));
    }

    private static void Head(int h, float[] output, float[] query, float[] keys, float[] values, float[] scores,
        int tokens, int start, int heads, int kvHeads, int headDim)
    {
        int total = start + tokens;
        int kvh = h / (heads / kvHeads);
        int qStride = heads * headDim, kvStride = kvHeads * headDim;
        float scale = 1f / MathF.Sqrt(headDim);
        Span<float> row = scores.AsSpan(h * total, total);
        for (int t = 0; t < tokens; t++)
        {
            int visible = start + t + 1;
            ReadOnlySpan<float> q = query.AsSpan(t * qStride + h * headDim, headDim);
            float max = float.NegativeInfinity;
            for (int s = 0; s < visible; s++)
            {
                float score = TensorPrimitives.Dot(q, keys.AsSpan(s * kvStride + kvh * headDim, headDim)) * scale;
                row[s] = score;
                if (score > max) max = score;
            }
            float sum = 0;
            for (int s = 0; s < visible; s++)
            {
                float e = MathF.Exp(row[s] - max);
                row[s] = e;
                sum += e;
            }
            Span<float> o = output.AsSpan(t * qStride + h * headDim, headDim);
            o.Clear();
            float inv = 1f / sum;
            for (int s = 0; s < visible; s++)
                TensorPrimitives.MultiplyAdd(values.AsSpan(s * kvStride + kvh * headDim, headDim), row[s] * inv, o, o);
        }
    }
}
