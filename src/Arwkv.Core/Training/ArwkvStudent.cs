using System.Numerics;
using System.Numerics.Tensors;
using Arwkv.IO;
using Arwkv.Training.Layers;

namespace Arwkv.Training;

/// <summary>LoRA ranks of the student's time mix (ARWKV-7B: decay 64, in-context learning rate 64, value 32, gate 128).</summary>
internal sealed record LoraRanks(int Decay = 64, int Iclr = 64, int Value = 32, int Gate = 128);

/// <summary>
/// The ARWKV student for training on the CPU: Qwen2.5's embedding, RMSNorms, SwiGLU MLPs and lm_head around
/// RWKV-7 time mixes, with every parameter named and shaped as in the Hugging Face checkpoint (ARWKV.md section 3)
/// and a gradient buffer of the same layout. Activations are planned once for [maxBatch, maxSeqLen]; a step
/// allocates nothing. Usage: <see cref="Forward"/> (logits), a loss from <see cref="Losses"/> and its backward
/// into <see cref="DLogits"/>, <see cref="Backward()"/>, then <see cref="AdamW{TF}.Step"/>. Stage 1 uses
/// <see cref="ForwardAlignment"/>/<see cref="BackwardAlignment"/> instead.
/// </summary>
internal sealed class ArwkvStudent<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    private sealed class Layer
    {
        public required string Prefix;
        public required Memory<TF> Norm1, Norm2, GateProj, UpProj, DownProj;           // [C], [C], [F, C], [F, C], [C, F]
        public required Memory<TF> DNorm1, DNorm2, DGateProj, DUpProj, DDownProj;
        public required TimeMixWeights<TF> Mix, DMix;
        public required TimeMixActivations<TF> MixAct;
        public required TF[] Ln1, Rstd1, Mid, Ln2, Rstd2, Gate, Up, Hidden;            // [BT, C], [BT], [BT, C], [BT, C], [BT], [BT, F] x3
    }

    private readonly Layer[] layers;
    private readonly Memory<TF> embed, finalNorm, lmHead, dEmbed, dFinalNorm, dLmHead;
    private readonly TF[][] residual;                 // [L + 1][BT, C]: input of layer l; residual[L] feeds the final norm
    private readonly TF[] finalLn, finalRstd, logits, dLogits;
    private readonly TF[] dRes, dLn, dVFirst, dHidden, dGate, dUp, rowScratch;
    private readonly TimeMixScratch<TF> mixScratch;
    private int batch, seqLen;
    private int[] tokens = [];
    private byte[] mask = [];
    private bool hasMask;

    public ArwkvStudent(ArwkvConfig config, int maxBatch, int maxSeqLen, LoraRanks? ranks = null)
    {
        config.Validate("student config");
        if (maxBatch <= 0 || maxSeqLen <= 0) throw new ArgumentOutOfRangeException(nameof(maxBatch), "batch and sequence length must be positive");
        Config = config;
        Ranks = ranks ?? new LoraRanks();
        MaxBatch = maxBatch;
        MaxSeqLen = maxSeqLen;
        int c = config.HiddenSize, f = config.IntermediateSize, v = config.VocabSize, n = maxBatch * maxSeqLen;
        MixShape = new TimeMixShape(c, config.HeadSize, Ranks.Decay, Ranks.Iclr, Ranks.Value, Ranks.Gate, config.WkvHasGate);
        MixShape.Validate();
        Parameters = new ParameterSet<TF>(Layout(config, Ranks));

        embed = Parameters.Value("model.embed_tokens.weight"); dEmbed = Parameters.Gradient("model.embed_tokens.weight");
        finalNorm = Parameters.Value("model.norm.weight"); dFinalNorm = Parameters.Gradient("model.norm.weight");
        lmHead = Parameters.Value("lm_head.weight"); dLmHead = Parameters.Gradient("lm_head.weight");
        layers = new Layer[config.NumLayers];
        for (int l = 0; l < layers.Length; l++)
        {
            string p = $"model.layers.{l}.";
            layers[l] = new Layer
            {
                Prefix = p,
                Norm1 = Parameters.Value(p + "input_layernorm.weight"), DNorm1 = Parameters.Gradient(p + "input_layernorm.weight"),
                Norm2 = Parameters.Value(p + "post_attention_layernorm.weight"), DNorm2 = Parameters.Gradient(p + "post_attention_layernorm.weight"),
                GateProj = Parameters.Value(p + "mlp.gate_proj.weight"), DGateProj = Parameters.Gradient(p + "mlp.gate_proj.weight"),
                UpProj = Parameters.Value(p + "mlp.up_proj.weight"), DUpProj = Parameters.Gradient(p + "mlp.up_proj.weight"),
                DownProj = Parameters.Value(p + "mlp.down_proj.weight"), DDownProj = Parameters.Gradient(p + "mlp.down_proj.weight"),
                Mix = MixViews(p + "self_attn.time_mixer.", gradients: false),
                DMix = MixViews(p + "self_attn.time_mixer.", gradients: true),
                MixAct = new TimeMixActivations<TF>(MixShape, maxBatch, maxSeqLen),
                Ln1 = new TF[n * c], Rstd1 = new TF[n], Mid = new TF[n * c], Ln2 = new TF[n * c], Rstd2 = new TF[n],
                Gate = new TF[n * f], Up = new TF[n * f], Hidden = new TF[n * f],
            };
        }
        residual = new TF[layers.Length + 1][];
        for (int l = 0; l <= layers.Length; l++) residual[l] = new TF[n * c];
        finalLn = new TF[n * c]; finalRstd = new TF[n]; logits = new TF[n * v]; dLogits = new TF[n * v];
        dRes = new TF[n * c]; dLn = new TF[n * c]; dVFirst = new TF[n * c];
        dHidden = new TF[n * f]; dGate = new TF[n * f]; dUp = new TF[n * f];
        rowScratch = new TF[Math.Max(c, f)];
        mixScratch = new TimeMixScratch<TF>(MixShape, maxBatch, maxSeqLen);
    }

    public ArwkvConfig Config { get; }
    public LoraRanks Ranks { get; }
    public TimeMixShape MixShape { get; }
    public int MaxBatch { get; }
    public int MaxSeqLen { get; }
    public ParameterSet<TF> Parameters { get; }

    /// <summary>Logits [B, T, V] of the last <see cref="Forward"/>.</summary>
    public Span<TF> Logits => logits.AsSpan(0, batch * seqLen * Config.VocabSize);

    /// <summary>The loss gradient [B, T, V] that <see cref="Backward()"/> reads; losses add into it, Forward clears it.</summary>
    public Span<TF> DLogits => dLogits.AsSpan(0, batch * seqLen * Config.VocabSize);

    /// <summary>Output of layer <paramref name="layer"/>'s time mix [B, T, C] from the last forward (stage 1: the student's attention output).</summary>
    public ReadOnlySpan<TF> TimeMixOutput(int layer) => layers[layer].MixAct.Out.AsSpan(0, batch * seqLen * Config.HiddenSize);

    /// <summary>The HF tensor names and shapes of a student (ARWKV.md section 3).</summary>
    public static IEnumerable<(string Name, long[] Shape)> Layout(ArwkvConfig config, LoraRanks ranks)
    {
        long c = config.HiddenSize, f = config.IntermediateSize, v = config.VocabSize;
        yield return ("model.embed_tokens.weight", [v, c]);
        for (int l = 0; l < config.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            yield return (p + "input_layernorm.weight", [c]);
            string m = p + "self_attn.time_mixer.";
            string[] vectors = config.WkvHasGate ? ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"] : ["x_r", "x_w", "x_k", "x_v", "x_a"];
            foreach (string name in vectors) yield return (m + name, [1, 1, c]);
            yield return (m + "w0", [1, 1, c]);
            yield return (m + "w1", [c, ranks.Decay]);
            yield return (m + "w2", [ranks.Decay, c]);
            yield return (m + "a0", [1, 1, c]);
            yield return (m + "a1", [c, ranks.Iclr]);
            yield return (m + "a2", [ranks.Iclr, c]);
            yield return (m + "v0", [1, 1, c]);
            yield return (m + "v1", [c, ranks.Value]);
            yield return (m + "v2", [ranks.Value, c]);
            if (config.WkvHasGate)
            {
                yield return (m + "g1", [c, ranks.Gate]);
                yield return (m + "g2", [ranks.Gate, c]);
            }
            yield return (m + "k_k", [1, 1, c]);
            yield return (m + "k_a", [1, 1, c]);
            yield return (m + "r_k", [config.NumHeads, config.HeadSize]);
            foreach (string proj in new[] { "receptance", "key", "value", "output" }) yield return (m + proj + ".weight", [c, c]);
            yield return (p + "post_attention_layernorm.weight", [c]);
            yield return (p + "mlp.gate_proj.weight", [f, c]);
            yield return (p + "mlp.up_proj.weight", [f, c]);
            yield return (p + "mlp.down_proj.weight", [c, f]);
        }
        yield return ("model.norm.weight", [c]);
        yield return ("lm_head.weight", [v, c]);
    }

    private TimeMixWeights<TF> MixViews(string prefix, bool gradients)
    {
        Memory<TF> Get(string name) => gradients ? Parameters.GradientOrEmpty(prefix + name) : Parameters.ValueOrEmpty(prefix + name);
        return new TimeMixWeights<TF>
        {
            XR = Get("x_r"), XW = Get("x_w"), XK = Get("x_k"), XV = Get("x_v"), XA = Get("x_a"), XG = Get("x_g"),
            W0 = Get("w0"), A0 = Get("a0"), V0 = Get("v0"), KK = Get("k_k"), KA = Get("k_a"),
            W1 = Get("w1"), W2 = Get("w2"), A1 = Get("a1"), A2 = Get("a2"), V1 = Get("v1"), V2 = Get("v2"), G1 = Get("g1"), G2 = Get("g2"),
            RK = Get("r_k"), WR = Get("receptance.weight"), WK = Get("key.weight"), WV = Get("value.weight"), WO = Get("output.weight"),
        };
    }

    // ================================================================================================================
    // Initialization

    /// <summary>
    /// RWKV-7 default initialization of every time mix (ARWKV.md section 5), plus: receptance and value uniform in
    /// ±0.5/sqrt(C), key in ±0.05/sqrt(C), output 0, g1 0 and g2 orthogonal*0.1 (RWKV-7's choices; the recipe is
    /// silent). Everything else (embedding, MLP, lm_head: normal(0, 0.02); norms: 1) is a placeholder until
    /// <see cref="CopyFromTeacher"/>. With <paramref name="teacherCopyFollows"/> those placeholders are not computed (their
    /// random numbers are still drawn, so the time mixes get exactly the values they would otherwise): for a 0.5B
    /// student that skips ~600M Box-Muller transforms whose results the teacher's weights replace.
    /// </summary>
    public void InitializeRwkv7(int seed, bool teacherCopyFollows = false)
    {
        var rng = new Random(seed);
        int c = Config.HiddenSize, numLayers = layers.Length;
        void Placeholder(Span<TF> data)
        {
            if (!teacherCopyFollows) Normal(data, 0.02, rng);
            else for (int i = 0; i < data.Length; i++) { rng.NextDouble(); rng.NextDouble(); }
        }
        Placeholder(embed.Span); Placeholder(lmHead.Span); finalNorm.Span.Fill(TF.One);
        for (int l = 0; l < numLayers; l++)
        {
            Layer layer = layers[l];
            layer.Norm1.Span.Fill(TF.One); layer.Norm2.Span.Fill(TF.One);
            Placeholder(layer.GateProj.Span); Placeholder(layer.UpProj.Span); Placeholder(layer.DownProj.Span);

            TimeMixWeights<TF> p = layer.Mix;
            double r0 = numLayers > 1 ? (double)l / (numLayers - 1) : 0;   // ratio_0_to_1
            double r1 = 1.0 - (double)l / numLayers;                          // ratio_1_to_almost0
            for (int i = 0; i < c; i++)
            {
                double ddd = (double)i / c;
                p.XR.Span[i] = TF.CreateTruncating(1 - Math.Pow(ddd, 0.2 * r1));
                p.XW.Span[i] = TF.CreateTruncating(1 - Math.Pow(ddd, 0.9 * r1));
                p.XK.Span[i] = TF.CreateTruncating(1 - (Math.Pow(ddd, 0.9 * r1) + 0.4 * r0));
                p.XV.Span[i] = TF.CreateTruncating(1 - (Math.Pow(ddd, 0.4 * r1) + 0.6 * r0));
                p.XA.Span[i] = TF.CreateTruncating(1 - Math.Pow(ddd, 0.9 * r1));
                if (!p.XG.IsEmpty) p.XG.Span[i] = TF.One;
                double decaySpeed = -7 + 5 * Math.Pow((double)i / (c - 1), 0.85 + Math.Sqrt(r0));
                p.W0.Span[i] = TF.CreateTruncating(decaySpeed + 0.5);
            }
            p.W1.Span.Clear(); p.A1.Span.Clear(); p.V1.Span.Clear();
            Orthogonal(p.W2.Span, Ranks.Decay, c, 0.1, rng);
            Orthogonal(p.A2.Span, Ranks.Iclr, c, 0.1, rng);
            Orthogonal(p.V2.Span, Ranks.Value, c, 0.1, rng);
            if (!p.G1.IsEmpty) { p.G1.Span.Clear(); Orthogonal(p.G2.Span, Ranks.Gate, c, 0.1, rng); }
            p.A0.Span.Clear(); p.V0.Span.Fill(TF.One);
            p.KK.Span.Fill(TF.CreateTruncating(0.85)); p.KA.Span.Fill(TF.One); p.RK.Span.Clear();
            Uniform(p.WR.Span, 0.5 / Math.Sqrt(c), rng);
            Uniform(p.WK.Span, 0.05 / Math.Sqrt(c), rng);
            Uniform(p.WV.Span, 0.5 / Math.Sqrt(c), rng);
            p.WO.Span.Clear();
        }
    }

    /// <summary>
    /// Copies the teacher's embedding, norms, MLPs and lm_head (HF names). A tied teacher (no lm_head.weight) has its
    /// embedding copied into the student's separate lm_head.
    /// </summary>
    public void CopyFromTeacher(IReadOnlyDictionary<string, (long[] Shape, float[] Data)> teacher)
    {
        foreach (var t in Parameters.Tensors)
        {
            if (t.Name.Contains(".self_attn.", StringComparison.Ordinal)) continue;
            string source = t.Name == "lm_head.weight" && !teacher.ContainsKey(t.Name) ? "model.embed_tokens.weight" : t.Name;
            if (!teacher.TryGetValue(source, out var tensor)) throw new ArgumentException($"teacher has no tensor '{source}'");
            long count = tensor.Shape.Aggregate(1L, (a, b) => a * b);
            if (count != t.Length || tensor.Data.Length != t.Length || !tensor.Shape.Where(d => d != 1).SequenceEqual(t.Shape.Where(d => d != 1)))
                throw new ArgumentException($"teacher tensor '{source}' is [{string.Join(", ", tensor.Shape)}], the student needs [{string.Join(", ", t.Shape)}]");
            Span<TF> dst = Parameters.Data.AsSpan(t.Offset, t.Length);
            for (int i = 0; i < dst.Length; i++) dst[i] = TF.CreateTruncating(tensor.Data[i]);
        }
    }

    /// <summary>Writes the parameters as a Hugging Face safetensors file (float32 unless told otherwise).</summary>
    public void Save(string path, DType type = DType.F32) => SafeTensorsWriter.Write(path, Parameters.ToSafeTensors(type));

    /// <summary>Freezes every tensor outside the time mixes (stage 1), or only the MLPs (stage 2 option).</summary>
    public void FreezeAllButTimeMix() => Parameters.SetFrozen(name => !name.Contains(".self_attn.time_mixer.", StringComparison.Ordinal), true);

    public void FreezeMlp() => Parameters.SetFrozen(name => name.Contains(".mlp.", StringComparison.Ordinal), true);

    // ================================================================================================================
    // Stage 2 / 3: the whole student

    /// <summary>tokens [B, T]; mask [B, T] (0 = padding) or empty. Returns the logits [B, T, V] and clears <see cref="DLogits"/>.</summary>
    public Span<TF> Forward(ReadOnlySpan<int> tokenIds, ReadOnlySpan<byte> paddingMask, int batchSize, int sequenceLength)
    {
        SetBatch(tokenIds, paddingMask, batchSize, sequenceLength);
        int n = batch * seqLen, c = Config.HiddenSize, f = Config.IntermediateSize, v = Config.VocabSize;
        double eps = Config.RmsNormEps;
        ReadOnlySpan<byte> m = MaskSpan;
        Embedding.Forward<TF>(residual[0], tokens.AsSpan(0, n), embed.Span, n, c);
        for (int l = 0; l < layers.Length; l++)
        {
            Layer layer = layers[l];
            TF[] input = residual[l], output = residual[l + 1];
            RmsNorm.Forward<TF>(layer.Ln1, layer.Rstd1, input, layer.Norm1.Span, eps, n, c);
            TimeMix.Forward<TF>(layer.MixAct, layer.Mix, layer.Ln1, layers[0].MixAct.V, m, batch, seqLen, firstLayer: l == 0);
            TensorPrimitives.Add<TF>(input.AsSpan(0, n * c), layer.MixAct.Out.AsSpan(0, n * c), layer.Mid);
            RmsNorm.Forward<TF>(layer.Ln2, layer.Rstd2, layer.Mid, layer.Norm2.Span, eps, n, c);
            Linear.Forward<TF>(layer.Gate, layer.Ln2, layer.GateProj.Span, n, c, f);
            Linear.Forward<TF>(layer.Up, layer.Ln2, layer.UpProj.Span, n, c, f);
            SwiGlu.Forward<TF>(layer.Hidden.AsSpan(0, n * f), layer.Gate, layer.Up);
            Linear.Forward<TF>(output, layer.Hidden, layer.DownProj.Span, n, f, c);
            TensorPrimitives.Add<TF>(output.AsSpan(0, n * c), layer.Mid.AsSpan(0, n * c), output);
        }
        RmsNorm.Forward<TF>(finalLn, finalRstd, residual[layers.Length], finalNorm.Span, eps, n, c);
        Linear.Forward<TF>(logits, finalLn, lmHead.Span, n, c, v);
        DLogits.Clear();
        return Logits;
    }

    /// <summary>Copies <paramref name="dlogits"/> [B, T, V] into <see cref="DLogits"/> and runs <see cref="Backward()"/>.</summary>
    public void Backward(ReadOnlySpan<TF> dlogits)
    {
        if (dlogits.Length != DLogits.Length) throw new ArgumentException($"dlogits has {dlogits.Length} values, expected {DLogits.Length}");
        dlogits.CopyTo(DLogits);
        Backward();
    }

    /// <summary>Adds the gradients of the loss whose logit gradient is in <see cref="DLogits"/> into <see cref="ParameterSet{TF}.Grad"/>.</summary>
    public void Backward()
    {
        int n = batch * seqLen, c = Config.HiddenSize, f = Config.IntermediateSize, v = Config.VocabSize, nc = n * c, nf = n * f;
        ReadOnlySpan<byte> m = MaskSpan;
        Array.Clear(dLn, 0, nc);
        Linear.Backward<TF>(dLn, dLmHead.Span, dLogits, finalLn, lmHead.Span, n, c, v);
        Array.Clear(dRes, 0, nc);
        RmsNorm.Backward<TF>(dRes, dFinalNorm.Span, dLn, residual[layers.Length], finalNorm.Span, finalRstd, rowScratch, n, c);
        Array.Clear(dVFirst, 0, nc);
        for (int l = layers.Length - 1; l >= 0; l--)
        {
            Layer layer = layers[l];
            // output = mid + down(silu(gate(ln2)) * up(ln2)), ln2 = norm2(mid); dRes becomes d(mid)
            Array.Clear(dHidden, 0, nf); Array.Clear(dGate, 0, nf); Array.Clear(dUp, 0, nf);
            Linear.Backward<TF>(dHidden, layer.DDownProj.Span, dRes, layer.Hidden, layer.DownProj.Span, n, f, c);
            SwiGlu.Backward<TF>(dGate, dUp, dHidden.AsSpan(0, nf), layer.Gate, layer.Up);
            Array.Clear(dLn, 0, nc);
            Linear.Backward<TF>(dLn, layer.DGateProj.Span, dGate, layer.Ln2, layer.GateProj.Span, n, c, f);
            Linear.Backward<TF>(dLn, layer.DUpProj.Span, dUp, layer.Ln2, layer.UpProj.Span, n, c, f);
            RmsNorm.Backward<TF>(dRes, layer.DNorm2.Span, dLn, layer.Mid, layer.Norm2.Span, layer.Rstd2, rowScratch, n, c);
            // mid = input + timemix(norm1(input)); dRes becomes d(input)
            Array.Clear(dLn, 0, nc);
            TimeMix.Backward<TF>(layer.DMix, dLn, l == 0 ? Span<TF>.Empty : dVFirst, mixScratch, dRes,
                l == 0 ? dVFirst.AsSpan(0, nc) : ReadOnlySpan<TF>.Empty, layer.MixAct, layer.Mix, layer.Ln1,
                layers[0].MixAct.V, m, batch, seqLen, firstLayer: l == 0);
            RmsNorm.Backward<TF>(dRes, layer.DNorm1.Span, dLn, residual[l], layer.Norm1.Span, layer.Rstd1, rowScratch, n, c);
        }
        Embedding.Backward<TF>(dEmbed.Span, dRes, tokens.AsSpan(0, n), n, c);
    }

    // ================================================================================================================
    // Stage 1: attention alignment

    /// <summary>
    /// Runs every layer's time mix on the teacher's normed attention input and returns the alignment loss averaged
    /// over layers. teacherInputs[l], teacherOutputs[l]: [B, T, C]. Layers after the first take v_first from the
    /// student's layer 0 (run on the teacher's layer-0 input), so gradient flows back into layer 0's value path.
    /// </summary>
    public double ForwardAlignment(IReadOnlyList<ReadOnlyMemory<TF>> teacherInputs, IReadOnlyList<ReadOnlyMemory<TF>> teacherOutputs,
        ReadOnlySpan<byte> paddingMask, int batchSize, int sequenceLength)
    {
        if (teacherInputs.Count != layers.Length || teacherOutputs.Count != layers.Length)
            throw new ArgumentException($"need teacher attention inputs and outputs for all {layers.Length} layers");
        SetBatch(ReadOnlySpan<int>.Empty, paddingMask, batchSize, sequenceLength);
        int n = batch * seqLen, c = Config.HiddenSize;
        double total = 0;
        for (int l = 0; l < layers.Length; l++)
        {
            CheckRows(teacherInputs[l], n * c, "teacher input", l);
            CheckRows(teacherOutputs[l], n * c, "teacher output", l);
            Layer layer = layers[l];
            TimeMix.Forward<TF>(layer.MixAct, layer.Mix, teacherInputs[l].Span, layers[0].MixAct.V, MaskSpan, batch, seqLen, firstLayer: l == 0);
            total += Losses.AlignmentForward<TF>(layer.MixAct.Out, teacherOutputs[l].Span, MaskSpan, n, c);
        }
        return total / layers.Length;
    }

    /// <summary>Adds the gradient of <see cref="ForwardAlignment"/>'s loss into the time-mix gradients.</summary>
    public void BackwardAlignment(IReadOnlyList<ReadOnlyMemory<TF>> teacherInputs, IReadOnlyList<ReadOnlyMemory<TF>> teacherOutputs)
    {
        int n = batch * seqLen, nc = n * Config.HiddenSize;
        Array.Clear(dVFirst, 0, nc);
        for (int l = layers.Length - 1; l >= 0; l--)
        {
            Layer layer = layers[l];
            Array.Clear(dRes, 0, nc);
            Losses.AlignmentBackward<TF>(dRes, layer.MixAct.Out, teacherOutputs[l].Span, MaskSpan, 1.0 / layers.Length, n, Config.HiddenSize);
            Array.Clear(dLn, 0, nc);   // the teacher's input takes no gradient
            TimeMix.Backward<TF>(layer.DMix, dLn, l == 0 ? Span<TF>.Empty : dVFirst, mixScratch, dRes,
                l == 0 ? dVFirst.AsSpan(0, nc) : ReadOnlySpan<TF>.Empty, layer.MixAct, layer.Mix, teacherInputs[l].Span,
                layers[0].MixAct.V, MaskSpan, batch, seqLen, firstLayer: l == 0);
        }
    }

    // ================================================================================================================

    private ReadOnlySpan<byte> MaskSpan => hasMask ? mask.AsSpan(0, batch * seqLen) : ReadOnlySpan<byte>.Empty;

    private void SetBatch(ReadOnlySpan<int> tokenIds, ReadOnlySpan<byte> paddingMask, int batchSize, int sequenceLength)
    {
        if (batchSize <= 0 || batchSize > MaxBatch || sequenceLength <= 0 || sequenceLength > MaxSeqLen)
            throw new ArgumentException($"[{batchSize}, {sequenceLength}] is outside the planned [{MaxBatch}, {MaxSeqLen}]");
        int n = batchSize * sequenceLength;
        if (!paddingMask.IsEmpty && paddingMask.Length != n) throw new ArgumentException($"mask has {paddingMask.Length} entries, expected {n}");
        batch = batchSize;
        seqLen = sequenceLength;
        if (tokens.Length < MaxBatch * MaxSeqLen) { tokens = new int[MaxBatch * MaxSeqLen]; mask = new byte[MaxBatch * MaxSeqLen]; }
        if (!tokenIds.IsEmpty)
        {
            if (tokenIds.Length != n) throw new ArgumentException($"tokens has {tokenIds.Length} entries, expected {n}");
            tokenIds.CopyTo(tokens);
        }
        hasMask = !paddingMask.IsEmpty;
        if (hasMask) paddingMask.CopyTo(mask);
    }

    private static void CheckRows(ReadOnlyMemory<TF> data, int length, string what, int layer)
    {
        if (data.Length < length) throw new ArgumentException($"{what} of layer {layer} has {data.Length} values, expected {length}");
    }

    private static void Normal(Span<TF> data, double std, Random rng)
    {
        for (int i = 0; i < data.Length; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            data[i] = TF.CreateTruncating(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
    }

    private static void Uniform(Span<TF> data, double bound, Random rng)
    {
        for (int i = 0; i < data.Length; i++) data[i] = TF.CreateTruncating((2 * rng.NextDouble() - 1) * bound);
    }

    // data [rows, cols] = gain * a matrix with orthonormal rows (rows <= cols) or columns (rows > cols), as torch's orthogonal_.
    internal static void Orthogonal(Span<TF> data, int rows, int cols, double gain, Random rng)
    {
        bool transpose = rows > cols;
        int r = transpose ? cols : rows, k = transpose ? rows : cols;
        var q = new double[r * k];
        for (int i = 0; i < q.Length; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            q[i] = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }
        // Modified Gram-Schmidt on the r rows of length k (r <= k).
        for (int i = 0; i < r; i++)
        {
            Span<double> row = q.AsSpan(i * k, k);
            for (int j = 0; j < i; j++)
            {
                ReadOnlySpan<double> prev = q.AsSpan(j * k, k);
                TensorPrimitives.MultiplyAdd(prev, -TensorPrimitives.Dot(row, prev), row, row);
            }
            TensorPrimitives.Divide(row, TensorPrimitives.Norm<double>(row), row);
        }
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                data[i * cols + j] = TF.CreateTruncating(gain * (transpose ? q[j * k + i] : q[i * k + j]));
    }
}
