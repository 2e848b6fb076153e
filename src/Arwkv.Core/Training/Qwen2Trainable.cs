using System.Numerics;
using System.Numerics.Tensors;
using Arwkv.IO;
using Arwkv.Training.Layers;

namespace Arwkv.Training;

/// <summary>
/// A trainable Qwen2 decoder (the demo's teacher): embedding, RMSNorm, q/k/v projections with bias, causal GQA with
/// RoPE (<see cref="Attention"/>), o_proj, SwiGLU MLP, final norm and an untied lm_head, one forward and one backward
/// per layer in llm.c's style. Parameters carry the Hugging Face names of <see cref="Qwen2Checkpoint.TensorShapes"/>,
/// so <see cref="Save"/> writes a checkpoint that <see cref="Qwen2Model"/> loads. The forward also keeps, per layer,
/// the normed attention input and the attention output (after o_proj): the taps of distillation stage 1.
/// </summary>
internal sealed class Qwen2Trainable<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    /// <summary>Qwen2 attention of all layers: q/k/v projections with bias, causal GQA with RoPE, o_proj.</summary>
    private sealed class AttentionMixer : ITokenMixer<TF>
    {
        public sealed class Layer
        {
            public required Memory<TF> Wq, Bq, Wk, Bk, Wv, Bv, Wo;                              // [C, C], [C], [KV, C], [KV], [KV, C], [KV], [C, C]
            public required Memory<TF> DWq, DBq, DWk, DBk, DWv, DBv, DWo;
            public required TF[] Q, K, V, QRot, KRot, Probs, Att, AttOut;                       // [BT, C], [BT, KV] x2, [BT, C], [BT, KV], [B, H, T, T], [BT, C] x2
        }

        public required Qwen2Config Config;
        public required Layer[] Layers;
        public required TF[] Cos, Sin;                                                           // [maxT, D/2]
        public required TF[] DAtt, DQ, DK, DV;                                                   // [BT, C], [BT, C], [BT, KV] x2 (empty forward-only)

        public ReadOnlySpan<TF> Forward(int layer, ReadOnlySpan<TF> x, ReadOnlySpan<byte> mask, int batch, int seqLen)
        {
            // No padding mask: the demo packs its text, and padding at the end of a row cannot reach real positions causally.
            Qwen2Config cfg = Config;
            Layer a = Layers[layer];
            int n = batch * seqLen, c = cfg.HiddenSize, kv = cfg.KeyValueSize;
            Project(a.Q, x, a.Wq.Span, a.Bq.Span, n, c, c);
            Project(a.K, x, a.Wk.Span, a.Bk.Span, n, c, kv);
            Project(a.V, x, a.Wv.Span, a.Bv.Span, n, c, kv);
            Attention.Forward<TF>(a.Att, a.QRot, a.KRot, a.Probs, a.Q, a.K, a.V, Cos, Sin,
                batch, seqLen, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim);
            Linear.Forward<TF>(a.AttOut, a.Att, a.Wo.Span, n, c, c);
            return a.AttOut;
        }

        public void BeginBackward(int batch, int seqLen) { }

        public void Backward(int layer, Span<TF> dx, ReadOnlySpan<TF> dOutput, ReadOnlySpan<TF> x, ReadOnlySpan<byte> mask, int batch, int seqLen)
        {
            Qwen2Config cfg = Config;
            Layer a = Layers[layer];
            int n = batch * seqLen, c = cfg.HiddenSize, kv = cfg.KeyValueSize, nc = n * c, nkv = n * kv;
            Array.Clear(DAtt, 0, nc);
            Linear.Backward<TF>(DAtt, a.DWo.Span, dOutput, a.Att, a.Wo.Span, n, c, c);
            Array.Clear(DQ, 0, nc); Array.Clear(DK, 0, nkv); Array.Clear(DV, 0, nkv);
            Attention.Backward<TF>(DQ, DK, DV, DAtt, a.QRot, a.KRot, a.V, a.Probs, Cos, Sin,
                batch, seqLen, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim);
            ProjectBackward(dx, a.DWq.Span, a.DBq.Span, DQ, x, a.Wq.Span, n, c, c);
            ProjectBackward(dx, a.DWk.Span, a.DBk.Span, DK, x, a.Wk.Span, n, c, kv);
            ProjectBackward(dx, a.DWv.Span, a.DBv.Span, DV, x, a.Wv.Span, n, c, kv);
        }
    }

    private readonly DecoderStack<TF> stack;
    private readonly AttentionMixer mixer;

    /// <param name="config">The teacher's shape.</param>
    /// <param name="maxBatch">Largest batch a forward pass will see.</param>
    /// <param name="maxSeqLen">Largest sequence length.</param>
    /// <param name="forwardOnly">
    /// A frozen teacher (distillation stages 1-2): no parameter gradients and no backward buffers, which is most of the
    /// memory beyond the weights; <see cref="Backward"/> and <see cref="DLogits"/> then throw.
    /// </param>
    public Qwen2Trainable(Qwen2Config config, int maxBatch, int maxSeqLen, bool forwardOnly = false)
    {
        config.Validate("teacher config");
        if (config.TieWordEmbeddings) throw new ArgumentException("the trainable teacher has an untied lm_head");
        if (maxBatch <= 0 || maxSeqLen <= 0) throw new ArgumentOutOfRangeException(nameof(maxBatch), "batch and sequence length must be positive");
        Config = config;
        MaxBatch = maxBatch;
        MaxSeqLen = maxSeqLen;
        int c = config.HiddenSize, kv = config.KeyValueSize, n = maxBatch * maxSeqLen;
        int heads = config.NumAttentionHeads;
        ForwardOnly = forwardOnly;
        Parameters = new ParameterSet<TF>(Qwen2Checkpoint.TensorShapes(config), withGradients: !forwardOnly);
        var layers = new AttentionMixer.Layer[config.NumLayers];
        for (int l = 0; l < layers.Length; l++)
        {
            string p = $"model.layers.{l}.self_attn.";
            Memory<TF> P(string name) => Parameters.Value(p + name);
            Memory<TF> G(string name) => Parameters.Gradient(p + name);
            layers[l] = new AttentionMixer.Layer
            {
                Wq = P("q_proj.weight"), DWq = G("q_proj.weight"), Bq = P("q_proj.bias"), DBq = G("q_proj.bias"),
                Wk = P("k_proj.weight"), DWk = G("k_proj.weight"), Bk = P("k_proj.bias"), DBk = G("k_proj.bias"),
                Wv = P("v_proj.weight"), DWv = G("v_proj.weight"), Bv = P("v_proj.bias"), DBv = G("v_proj.bias"),
                Wo = P("o_proj.weight"), DWo = G("o_proj.weight"),
                Q = new TF[n * c], K = new TF[n * kv], V = new TF[n * kv],
                QRot = new TF[n * c], KRot = new TF[n * kv], Probs = new TF[(long)maxBatch * heads * maxSeqLen * maxSeqLen],
                Att = new TF[n * c], AttOut = new TF[n * c],
            };
        }
        int half = config.HeadDim / 2, b = forwardOnly ? 0 : 1;
        mixer = new AttentionMixer
        {
            Config = config, Layers = layers, Cos = new TF[maxSeqLen * half], Sin = new TF[maxSeqLen * half],
            DAtt = new TF[b * n * c], DQ = new TF[b * n * c], DK = new TF[b * n * kv], DV = new TF[b * n * kv],
        };
        Attention.RotaryTables<TF>(mixer.Cos, mixer.Sin, maxSeqLen, config.HeadDim, config.RopeTheta);
        stack = new DecoderStack<TF>(Parameters, mixer, config.NumLayers, c, config.IntermediateSize, config.VocabSize, config.RmsNormEps,
            maxBatch, maxSeqLen, withBackward: !forwardOnly);
    }

    public Qwen2Config Config { get; }
    public int MaxBatch { get; }
    public int MaxSeqLen { get; }
    public ParameterSet<TF> Parameters { get; }

    /// <summary>Logits [B, T, V] of the last <see cref="Forward"/>.</summary>
    public Span<TF> Logits => stack.Logits;

    /// <summary>Built without gradients (see the constructor).</summary>
    public bool ForwardOnly { get; }

    /// <summary>The loss gradient [B, T, V] that <see cref="Backward"/> reads; losses add into it, Forward clears it.</summary>
    public Span<TF> DLogits => ForwardOnly
        ? throw new InvalidOperationException("this teacher was built forward-only: it has no logit gradient")
        : stack.DLogits;

    /// <summary>Layer <paramref name="layer"/>'s RMS-normed attention input [B, T, C] from the last forward.</summary>
    public ReadOnlyMemory<TF> AttentionInput(int layer) => stack.NormedInput(layer);

    /// <summary>Layer <paramref name="layer"/>'s attention output (after o_proj, before the residual add) [B, T, C].</summary>
    public ReadOnlyMemory<TF> AttentionOutput(int layer) => mixer.Layers[layer].AttOut.AsMemory(0, stack.Batch * stack.SeqLen * Config.HiddenSize);

    /// <summary>GPT-2 style init: matrices normal(0, 0.02), the projections into the residual scaled by 1/sqrt(2L), biases 0, norms 1.</summary>
    public void Initialize(int seed)
    {
        var rng = new Random(seed);
        double residualStd = 0.02 / Math.Sqrt(2.0 * Config.NumLayers);
        foreach (var t in Parameters.Tensors)
        {
            Span<TF> data = Parameters.Data.AsSpan(t.Offset, t.Length);
            if (t.Name.EndsWith("norm.weight", StringComparison.Ordinal)) data.Fill(TF.One);
            else if (t.Name.EndsWith(".bias", StringComparison.Ordinal)) data.Clear();
            else
            {
                double std = t.Name.EndsWith("o_proj.weight", StringComparison.Ordinal) || t.Name.EndsWith("down_proj.weight", StringComparison.Ordinal) ? residualStd : 0.02;
                for (int i = 0; i < data.Length; i++)
                {
                    double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
                    data[i] = TF.CreateTruncating(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
                }
            }
        }
    }

    /// <summary>The parameters as float32 arrays by HF name (for <see cref="Qwen2Checkpoint.Write"/> and the student's init).</summary>
    public Dictionary<string, float[]> ToFloat32()
    {
        var result = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var t in Parameters.Tensors)
        {
            var values = new float[t.Length];
            for (int i = 0; i < t.Length; i++) values[i] = float.CreateTruncating(Parameters.Data[t.Offset + i]);
            result[t.Name] = values;
        }
        return result;
    }

    /// <summary>Writes config.json and model.safetensors in the Hugging Face Qwen2 layout.</summary>
    public void Save(string directory, DType type = DType.F32) => Qwen2Checkpoint.Write(directory, Config, ToFloat32(), type);

    /// <summary>
    /// Reads a Qwen2 checkpoint directory: one model.safetensors or shards listed by model.safetensors.index.json, in
    /// F32, F16 or BF16 (widened to <typeparamref name="TF"/>). A tied checkpoint (tie_word_embeddings, as Qwen2.5-0.5B)
    /// loads untied: lm_head becomes a copy of the embedding and <see cref="Config"/> says untied. That is exact for
    /// distillation, where the teacher is frozen (stages 1 and 2 only run its forward), so the two copies never drift
    /// apart; training the teacher itself would untie them, and <see cref="Save"/> then writes both honestly.
    /// </summary>
    /// <exception cref="CheckpointException">The configuration, a shard or a tensor is missing or does not match.</exception>
    public static Qwen2Trainable<TF> Load(string directory, int maxBatch, int maxSeqLen, bool forwardOnly = false)
    {
        Qwen2Config config = Qwen2Config.Load(directory);
        bool tied = config.TieWordEmbeddings;
        var model = new Qwen2Trainable<TF>(config with { TieWordEmbeddings = false }, maxBatch, maxSeqLen, forwardOnly);
        using SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(directory);
        foreach (var t in model.Parameters.Tensors)
        {
            // Like transformers, a tied model's output matrix is the embedding even when a stale lm_head.weight was saved.
            string source = tied && t.Name == "lm_head.weight" ? "model.embed_tokens.weight" : t.Name;
            TensorInfo info = checkpoint.GetInfo(source);
            if (!info.Shape.SequenceEqual(t.Shape))
                throw new CheckpointException(checkpoint.FileOf(source).Path,
                    $"tensor '{source}' has shape {info.ShapeText}, expected [{string.Join(", ", t.Shape)}] (from config.json)");
            float[] values = checkpoint.ReadFloat32(source);
            Span<TF> dst = model.Parameters.Data.AsSpan(t.Offset, t.Length);
            for (int i = 0; i < dst.Length; i++)
            {
                if (!float.IsFinite(values[i]))
                    throw new CheckpointException(checkpoint.FileOf(source).Path, $"tensor '{source}' holds a non-finite value ({values[i]}) at element {i}");
                dst[i] = TF.CreateTruncating(values[i]);
            }
        }
        return model;
    }

    /// <summary>tokens [B, T] (no padding: the demo packs its text). Returns the logits [B, T, V] and clears <see cref="DLogits"/>.</summary>
    public Span<TF> Forward(ReadOnlySpan<int> tokenIds, int batchSize, int sequenceLength, bool computeLogits = true) =>
        stack.Forward(tokenIds, ReadOnlySpan<byte>.Empty, batchSize, sequenceLength, computeLogits);

    /// <summary>Adds the gradient of the loss whose logit gradient is in <see cref="DLogits"/> into <see cref="ParameterSet{TF}.Grad"/>.</summary>
    public void Backward()
    {
        if (ForwardOnly) throw new InvalidOperationException("this teacher was built forward-only (frozen): it has no backward");
        stack.Backward();
    }

    // y [N, O] = x [N, I] W^T + b
    private static void Project(Span<TF> y, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w, ReadOnlySpan<TF> bias, int n, int inFeatures, int outFeatures)
    {
        Linear.Forward<TF>(y, x, w, n, inFeatures, outFeatures);
        for (int row = 0; row < n; row++)
        {
            Span<TF> yr = y.Slice(row * outFeatures, outFeatures);
            TensorPrimitives.Add<TF>(yr, bias, yr);
        }
    }

    // dx += dy W, dW += dy^T x, db += column sums of dy
    private static void ProjectBackward(Span<TF> dx, Span<TF> dw, Span<TF> db, ReadOnlySpan<TF> dy, ReadOnlySpan<TF> x, ReadOnlySpan<TF> w,
        int n, int inFeatures, int outFeatures)
    {
        Linear.Backward<TF>(dx, dw, dy, x, w, n, inFeatures, outFeatures);
        for (int row = 0; row < n; row++) TensorPrimitives.Add<TF>(db, dy.Slice(row * outFeatures, outFeatures), db);
    }
}
