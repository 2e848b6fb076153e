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
    private sealed class Layer
    {
        public required Memory<TF> Norm1, Wq, Bq, Wk, Bk, Wv, Bv, Wo, Norm2, GateProj, UpProj, DownProj;
        public required Memory<TF> DNorm1, DWq, DBq, DWk, DBk, DWv, DBv, DWo, DNorm2, DGateProj, DUpProj, DDownProj;
        public required TF[] Ln1, Rstd1, Q, K, V, QRot, KRot, Probs, Att, AttOut, Mid, Ln2, Rstd2, Gate, Up, Hidden;
    }

    private readonly Layer[] layers;
    private readonly Memory<TF> embed, finalNorm, lmHead, dEmbed, dFinalNorm, dLmHead;
    private readonly TF[][] residual;
    private readonly TF[] finalLn, finalRstd, logits, dLogits, cos, sin;
    private readonly TF[] dRes, dLn, dAtt, dQ, dK, dV, dHidden, dGate, dUp, rowScratch;
    private int batch, seqLen;
    private readonly int[] tokens;

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
        int c = config.HiddenSize, kv = config.KeyValueSize, f = config.IntermediateSize, v = config.VocabSize, n = maxBatch * maxSeqLen;
        int heads = config.NumAttentionHeads;
        ForwardOnly = forwardOnly;
        Parameters = new ParameterSet<TF>(Qwen2Checkpoint.TensorShapes(config), withGradients: !forwardOnly);
        embed = Parameters.Value("model.embed_tokens.weight"); dEmbed = Parameters.Gradient("model.embed_tokens.weight");
        finalNorm = Parameters.Value("model.norm.weight"); dFinalNorm = Parameters.Gradient("model.norm.weight");
        lmHead = Parameters.Value("lm_head.weight"); dLmHead = Parameters.Gradient("lm_head.weight");
        layers = new Layer[config.NumLayers];
        for (int l = 0; l < layers.Length; l++)
        {
            string p = $"model.layers.{l}.";
            Memory<TF> P(string name) => Parameters.Value(p + name);
            Memory<TF> G(string name) => Parameters.Gradient(p + name);
            layers[l] = new Layer
            {
                Norm1 = P("input_layernorm.weight"), DNorm1 = G("input_layernorm.weight"),
                Wq = P("self_attn.q_proj.weight"), DWq = G("self_attn.q_proj.weight"), Bq = P("self_attn.q_proj.bias"), DBq = G("self_attn.q_proj.bias"),
                Wk = P("self_attn.k_proj.weight"), DWk = G("self_attn.k_proj.weight"), Bk = P("self_attn.k_proj.bias"), DBk = G("self_attn.k_proj.bias"),
                Wv = P("self_attn.v_proj.weight"), DWv = G("self_attn.v_proj.weight"), Bv = P("self_attn.v_proj.bias"), DBv = G("self_attn.v_proj.bias"),
                Wo = P("self_attn.o_proj.weight"), DWo = G("self_attn.o_proj.weight"),
                Norm2 = P("post_attention_layernorm.weight"), DNorm2 = G("post_attention_layernorm.weight"),
                GateProj = P("mlp.gate_proj.weight"), DGateProj = G("mlp.gate_proj.weight"),
                UpProj = P("mlp.up_proj.weight"), DUpProj = G("mlp.up_proj.weight"),
                DownProj = P("mlp.down_proj.weight"), DDownProj = G("mlp.down_proj.weight"),
                Ln1 = new TF[n * c], Rstd1 = new TF[n], Q = new TF[n * c], K = new TF[n * kv], V = new TF[n * kv],
                QRot = new TF[n * c], KRot = new TF[n * kv], Probs = new TF[(long)maxBatch * heads * maxSeqLen * maxSeqLen],
                Att = new TF[n * c], AttOut = new TF[n * c], Mid = new TF[n * c], Ln2 = new TF[n * c], Rstd2 = new TF[n],
                Gate = new TF[n * f], Up = new TF[n * f], Hidden = new TF[n * f],
            };
        }
        residual = new TF[layers.Length + 1][];
        for (int l = 0; l <= layers.Length; l++) residual[l] = new TF[n * c];
        finalLn = new TF[n * c]; finalRstd = new TF[n]; logits = new TF[n * v]; dLogits = forwardOnly ? [] : new TF[n * v];
        int half = config.HeadDim / 2;
        cos = new TF[maxSeqLen * half]; sin = new TF[maxSeqLen * half];
        Attention.RotaryTables<TF>(cos, sin, maxSeqLen, config.HeadDim, config.RopeTheta);
        int b = forwardOnly ? 0 : 1;
        dRes = new TF[b * n * c]; dLn = new TF[b * n * c]; dAtt = new TF[b * n * c]; dQ = new TF[b * n * c]; dK = new TF[b * n * kv]; dV = new TF[b * n * kv];
        dHidden = new TF[b * n * f]; dGate = new TF[b * n * f]; dUp = new TF[b * n * f];
        rowScratch = new TF[Math.Max(c, f)];
        tokens = new int[n];
    }

    public Qwen2Config Config { get; }
    public int MaxBatch { get; }
    public int MaxSeqLen { get; }
    public ParameterSet<TF> Parameters { get; }

    /// <summary>Logits [B, T, V] of the last <see cref="Forward"/>.</summary>
    public Span<TF> Logits => logits.AsSpan(0, batch * seqLen * Config.VocabSize);

    /// <summary>The loss gradient [B, T, V] that <see cref="Backward"/> reads; losses add into it, Forward clears it.</summary>
    /// <summary>Built without gradients (see the constructor).</summary>
    public bool ForwardOnly { get; }

    public Span<TF> DLogits => ForwardOnly
        ? throw new InvalidOperationException("this teacher was built forward-only: it has no logit gradient")
        : dLogits.AsSpan(0, batch * seqLen * Config.VocabSize);

    /// <summary>Layer <paramref name="layer"/>'s RMS-normed attention input [B, T, C] from the last forward.</summary>
    public ReadOnlyMemory<TF> AttentionInput(int layer) => layers[layer].Ln1.AsMemory(0, batch * seqLen * Config.HiddenSize);

    /// <summary>Layer <paramref name="layer"/>'s attention output (after o_proj, before the residual add) [B, T, C].</summary>
    public ReadOnlyMemory<TF> AttentionOutput(int layer) => layers[layer].AttOut.AsMemory(0, batch * seqLen * Config.HiddenSize);

    /// <summary>GPT-2 style init: matrices normal(0, 0.02), the projections into the residual scaled by 1/sqrt(2L), biases 0, norms 1.</summary>
    public void Initialize(int seed)
    {
        var rng = new Random(seed);
        double residualStd = 0.02 / Math.Sqrt(2.0 * layers.Length);
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
    public Span<TF> Forward(ReadOnlySpan<int> tokenIds, int batchSize, int sequenceLength, bool computeLogits = true)
    {
        if (batchSize <= 0 || batchSize > MaxBatch || sequenceLength <= 0 || sequenceLength > MaxSeqLen)
            throw new ArgumentException($"[{batchSize}, {sequenceLength}] is outside the planned [{MaxBatch}, {MaxSeqLen}]");
        int n = batchSize * sequenceLength;
        if (tokenIds.Length != n) throw new ArgumentException($"tokens has {tokenIds.Length} entries, expected {n}");
        batch = batchSize; seqLen = sequenceLength;
        tokenIds.CopyTo(tokens);
        Qwen2Config cfg = Config;
        int c = cfg.HiddenSize, kv = cfg.KeyValueSize, f = cfg.IntermediateSize, v = cfg.VocabSize;
        double eps = cfg.RmsNormEps;
        Embedding.Forward<TF>(residual[0], tokens.AsSpan(0, n), embed.Span, n, c);
        for (int l = 0; l < layers.Length; l++)
        {
            Layer layer = layers[l];
            TF[] input = residual[l], output = residual[l + 1];
            RmsNorm.Forward<TF>(layer.Ln1, layer.Rstd1, input, layer.Norm1.Span, eps, n, c);
            Project(layer.Q, layer.Ln1, layer.Wq.Span, layer.Bq.Span, n, c, c);
            Project(layer.K, layer.Ln1, layer.Wk.Span, layer.Bk.Span, n, c, kv);
            Project(layer.V, layer.Ln1, layer.Wv.Span, layer.Bv.Span, n, c, kv);
            Attention.Forward<TF>(layer.Att, layer.QRot, layer.KRot, layer.Probs, layer.Q, layer.K, layer.V, cos, sin,
                batch, seqLen, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim);
            Linear.Forward<TF>(layer.AttOut, layer.Att, layer.Wo.Span, n, c, c);
            TensorPrimitives.Add<TF>(input.AsSpan(0, n * c), layer.AttOut.AsSpan(0, n * c), layer.Mid);
            RmsNorm.Forward<TF>(layer.Ln2, layer.Rstd2, layer.Mid, layer.Norm2.Span, eps, n, c);
            Linear.Forward<TF>(layer.Gate, layer.Ln2, layer.GateProj.Span, n, c, f);
            Linear.Forward<TF>(layer.Up, layer.Ln2, layer.UpProj.Span, n, c, f);
            SwiGlu.Forward<TF>(layer.Hidden.AsSpan(0, n * f), layer.Gate, layer.Up);
            Linear.Forward<TF>(output, layer.Hidden, layer.DownProj.Span, n, f, c);
            TensorPrimitives.Add<TF>(output.AsSpan(0, n * c), layer.Mid.AsSpan(0, n * c), output);
        }
        if (!computeLogits) return Span<TF>.Empty;
        RmsNorm.Forward<TF>(finalLn, finalRstd, residual[layers.Length], finalNorm.Span, eps, n, c);
        Linear.Forward<TF>(logits, finalLn, lmHead.Span, n, c, v);
        if (!ForwardOnly) Array.Clear(dLogits, 0, n * v);
        return Logits;
    }

    /// <summary>Adds the gradient of the loss whose logit gradient is in <see cref="DLogits"/> into <see cref="ParameterSet{TF}.Grad"/>.</summary>
    public void Backward()
    {
        if (ForwardOnly) throw new InvalidOperationException("this teacher was built forward-only (frozen): it has no backward");
        Qwen2Config cfg = Config;
        int n = batch * seqLen, c = cfg.HiddenSize, kv = cfg.KeyValueSize, f = cfg.IntermediateSize, v = cfg.VocabSize;
        int nc = n * c, nf = n * f, nkv = n * kv;
        Array.Clear(dLn, 0, nc);
        Linear.Backward<TF>(dLn, dLmHead.Span, dLogits, finalLn, lmHead.Span, n, c, v);
        Array.Clear(dRes, 0, nc);
        RmsNorm.Backward<TF>(dRes, dFinalNorm.Span, dLn, residual[layers.Length], finalNorm.Span, finalRstd, rowScratch, n, c);
        for (int l = layers.Length - 1; l >= 0; l--)
        {
            Layer layer = layers[l];
            // output = mid + down(silu(gate(ln2)) * up(ln2)); dRes becomes d(mid)
            Array.Clear(dHidden, 0, nf); Array.Clear(dGate, 0, nf); Array.Clear(dUp, 0, nf);
            Linear.Backward<TF>(dHidden, layer.DDownProj.Span, dRes, layer.Hidden, layer.DownProj.Span, n, f, c);
            SwiGlu.Backward<TF>(dGate, dUp, dHidden.AsSpan(0, nf), layer.Gate, layer.Up);
            Array.Clear(dLn, 0, nc);
            Linear.Backward<TF>(dLn, layer.DGateProj.Span, dGate, layer.Ln2, layer.GateProj.Span, n, c, f);
            Linear.Backward<TF>(dLn, layer.DUpProj.Span, dUp, layer.Ln2, layer.UpProj.Span, n, c, f);
            RmsNorm.Backward<TF>(dRes, layer.DNorm2.Span, dLn, layer.Mid, layer.Norm2.Span, layer.Rstd2, rowScratch, n, c);
            // mid = input + o_proj(attention(q, k, v)), q/k/v = proj(norm1(input)) + bias; dRes becomes d(input)
            Array.Clear(dAtt, 0, nc);
            Linear.Backward<TF>(dAtt, layer.DWo.Span, dRes, layer.Att, layer.Wo.Span, n, c, c);
            Array.Clear(dQ, 0, nc); Array.Clear(dK, 0, nkv); Array.Clear(dV, 0, nkv);
            Attention.Backward<TF>(dQ, dK, dV, dAtt, layer.QRot, layer.KRot, layer.V, layer.Probs, cos, sin,
                batch, seqLen, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim);
            Array.Clear(dLn, 0, nc);
            ProjectBackward(dLn, layer.DWq.Span, layer.DBq.Span, dQ, layer.Ln1, layer.Wq.Span, n, c, c);
            ProjectBackward(dLn, layer.DWk.Span, layer.DBk.Span, dK, layer.Ln1, layer.Wk.Span, n, c, kv);
            ProjectBackward(dLn, layer.DWv.Span, layer.DBv.Span, dV, layer.Ln1, layer.Wv.Span, n, c, kv);
            RmsNorm.Backward<TF>(dRes, layer.DNorm1.Span, dLn, residual[l], layer.Norm1.Span, layer.Rstd1, rowScratch, n, c);
        }
        Embedding.Backward<TF>(dEmbed.Span, dRes, tokens.AsSpan(0, n), n, c);
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
