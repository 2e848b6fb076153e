using System.Numerics;
using System.Numerics.Tensors;
using Arwkv.IO;
using Arwkv.Training.Layers;

namespace Arwkv.Training;

/// <summary>LoRA ranks of the student's time mix (ARWKV-7B: decay 64, in-context learning rate 64, value 32, gate 128).</summary>
internal sealed record LoraRanks(int Decay = 64, int Iclr = 64, int Value = 32, int Gate = 128);

/// <summary>
/// The ARWKV student for training on the CPU: Qwen2.5's embedding, RMSNorms, SwiGLU MLPs and lm_head around
/// RWKV-7 time mixes (a <see cref="DecoderStack{TF}"/> whose mixer is <see cref="TimeMix"/>), with every parameter
/// named and shaped as in the Hugging Face checkpoint (ARWKV.md section 3) and a gradient buffer of the same layout.
/// Activations are planned once for [maxBatch, maxSeqLen]; a step allocates nothing. Usage: <see cref="Forward"/>
/// (logits), a loss from <see cref="Losses"/> and its backward into <see cref="DLogits"/>, <see cref="Backward()"/>,
/// then <see cref="AdamW{TF}.Step"/>. Stage 1 uses <see cref="ForwardAlignment"/>/<see cref="BackwardAlignment"/> instead.
/// </summary>
internal sealed class ArwkvStudent<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    /// <summary>
    /// The RWKV-7 time mixes of all layers. Layers after the first read layer 0's value (v_first), so the gradient of
    /// v_first is gathered from every later layer (last layer first) and added into layer 0's value path at its turn.
    /// </summary>
    private sealed class TimeMixer : ITokenMixer<TF>
    {
        public required TimeMixWeights<TF>[] Mix, DMix;
        public required TimeMixActivations<TF>[] Act;
        public required TimeMixScratch<TF> Scratch;
        public required TF[] DVFirst;                                                   // [BT, C]

        public ReadOnlySpan<TF> Forward(int layer, ReadOnlySpan<TF> x, ReadOnlySpan<byte> mask, int batch, int seqLen)
        {
            TimeMix.Forward<TF>(Act[layer], Mix[layer], x, Act[0].V, mask, batch, seqLen, firstLayer: layer == 0);
            return Act[layer].Out;
        }

        public void BeginBackward(int batch, int seqLen) => Array.Clear(DVFirst, 0, batch * seqLen * Act[0].Shape.Channels);

        public void Backward(int layer, Span<TF> dx, ReadOnlySpan<TF> dOutput, ReadOnlySpan<TF> x, ReadOnlySpan<byte> mask, int batch, int seqLen)
        {
            int nc = batch * seqLen * Act[0].Shape.Channels;
            TimeMix.Backward<TF>(DMix[layer], dx, layer == 0 ? Span<TF>.Empty : DVFirst, Scratch, dOutput,
                layer == 0 ? DVFirst.AsSpan(0, nc) : ReadOnlySpan<TF>.Empty, Act[layer], Mix[layer], x,
                Act[0].V, mask, batch, seqLen, firstLayer: layer == 0);
        }
    }

    private readonly DecoderStack<TF> stack;
    private readonly TimeMixer mixer;
    private readonly Memory<TF> embed, finalNorm, lmHead;
    private readonly (Memory<TF> Norm1, Memory<TF> Norm2, Memory<TF> GateProj, Memory<TF> UpProj, Memory<TF> DownProj)[] blockWeights;

    public ArwkvStudent(ArwkvConfig config, int maxBatch, int maxSeqLen, LoraRanks? ranks = null)
    {
        config.Validate("student config");
        if (maxBatch <= 0 || maxSeqLen <= 0) throw new ArgumentOutOfRangeException(nameof(maxBatch), "batch and sequence length must be positive");
        Config = config;
        Ranks = ranks ?? new LoraRanks();
        MaxBatch = maxBatch;
        MaxSeqLen = maxSeqLen;
        int c = config.HiddenSize;
        MixShape = new TimeMixShape(c, config.HeadSize, Ranks.Decay, Ranks.Iclr, Ranks.Value, Ranks.Gate, config.WkvHasGate);
        MixShape.Validate();
        Parameters = new ParameterSet<TF>(Layout(config, Ranks));

        embed = Parameters.Value("model.embed_tokens.weight");
        finalNorm = Parameters.Value("model.norm.weight");
        lmHead = Parameters.Value("lm_head.weight");
        int layers = config.NumLayers;
        blockWeights = new (Memory<TF>, Memory<TF>, Memory<TF>, Memory<TF>, Memory<TF>)[layers];
        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.";
            blockWeights[l] = (Parameters.Value(p + "input_layernorm.weight"), Parameters.Value(p + "post_attention_layernorm.weight"),
                Parameters.Value(p + "mlp.gate_proj.weight"), Parameters.Value(p + "mlp.up_proj.weight"), Parameters.Value(p + "mlp.down_proj.weight"));
        }
        mixer = new TimeMixer
        {
            Mix = Enumerable.Range(0, layers).Select(l => MixViews($"model.layers.{l}.self_attn.time_mixer.", gradients: false)).ToArray(),
            DMix = Enumerable.Range(0, layers).Select(l => MixViews($"model.layers.{l}.self_attn.time_mixer.", gradients: true)).ToArray(),
            Act = Enumerable.Range(0, layers).Select(_ => new TimeMixActivations<TF>(MixShape, maxBatch, maxSeqLen)).ToArray(),
            Scratch = new TimeMixScratch<TF>(MixShape, maxBatch, maxSeqLen),
            DVFirst = new TF[maxBatch * maxSeqLen * c],
        };
        stack = new DecoderStack<TF>(Parameters, mixer, layers, c, config.IntermediateSize, config.VocabSize, config.RmsNormEps,
            maxBatch, maxSeqLen, withBackward: true);
    }

    public ArwkvConfig Config { get; }
    public LoraRanks Ranks { get; }
    public TimeMixShape MixShape { get; }
    public int MaxBatch { get; }
    public int MaxSeqLen { get; }
    public ParameterSet<TF> Parameters { get; }

    /// <summary>Logits [B, T, V] of the last <see cref="Forward"/>.</summary>
    public Span<TF> Logits => stack.Logits;

    /// <summary>The loss gradient [B, T, V] that <see cref="Backward()"/> reads; losses add into it, Forward clears it.</summary>
    public Span<TF> DLogits => stack.DLogits;

    /// <summary>Output of layer <paramref name="layer"/>'s time mix [B, T, C] from the last forward (stage 1: the student's attention output).</summary>
    public ReadOnlySpan<TF> TimeMixOutput(int layer) => mixer.Act[layer].Out.AsSpan(0, stack.Batch * stack.SeqLen * Config.HiddenSize);

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
        int c = Config.HiddenSize, numLayers = Config.NumLayers;
        void Placeholder(Span<TF> data)
        {
            if (!teacherCopyFollows) Normal(data, 0.02, rng);
            else for (int i = 0; i < data.Length; i++) { rng.NextDouble(); rng.NextDouble(); }
        }
        Placeholder(embed.Span); Placeholder(lmHead.Span); finalNorm.Span.Fill(TF.One);
        for (int l = 0; l < numLayers; l++)
        {
            var block = blockWeights[l];
            block.Norm1.Span.Fill(TF.One); block.Norm2.Span.Fill(TF.One);
            Placeholder(block.GateProj.Span); Placeholder(block.UpProj.Span); Placeholder(block.DownProj.Span);

            TimeMixWeights<TF> p = mixer.Mix[l];
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
    public Span<TF> Forward(ReadOnlySpan<int> tokenIds, ReadOnlySpan<byte> paddingMask, int batchSize, int sequenceLength) =>
        stack.Forward(tokenIds, paddingMask, batchSize, sequenceLength);

    /// <summary>Copies <paramref name="dlogits"/> [B, T, V] into <see cref="DLogits"/> and runs <see cref="Backward()"/>.</summary>
    public void Backward(ReadOnlySpan<TF> dlogits)
    {
        if (dlogits.Length != DLogits.Length) throw new ArgumentException($"dlogits has {dlogits.Length} values, expected {DLogits.Length}");
        dlogits.CopyTo(DLogits);
        Backward();
    }

    /// <summary>Adds the gradients of the loss whose logit gradient is in <see cref="DLogits"/> into <see cref="ParameterSet{TF}.Grad"/>.</summary>
    public void Backward() => stack.Backward();

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
        int layers = Config.NumLayers;
        if (teacherInputs.Count != layers || teacherOutputs.Count != layers)
            throw new ArgumentException($"need teacher attention inputs and outputs for all {layers} layers");
        stack.SetBatch(ReadOnlySpan<int>.Empty, paddingMask, batchSize, sequenceLength);
        int n = batchSize * sequenceLength, c = Config.HiddenSize;
        double total = 0;
        for (int l = 0; l < layers; l++)
        {
            CheckRows(teacherInputs[l], n * c, "teacher input", l);
            CheckRows(teacherOutputs[l], n * c, "teacher output", l);
            ReadOnlySpan<TF> output = mixer.Forward(l, teacherInputs[l].Span, stack.Mask, batchSize, sequenceLength);
            total += Losses.AlignmentForward<TF>(output, teacherOutputs[l].Span, stack.Mask, n, c);
        }
        return total / layers;
    }

    /// <summary>Adds the gradient of <see cref="ForwardAlignment"/>'s loss into the time-mix gradients.</summary>
    public void BackwardAlignment(IReadOnlyList<ReadOnlyMemory<TF>> teacherInputs, IReadOnlyList<ReadOnlyMemory<TF>> teacherOutputs)
    {
        int batch = stack.Batch, seqLen = stack.SeqLen, layers = Config.NumLayers, n = batch * seqLen, nc = n * Config.HiddenSize;
        (TF[] dOut, TF[] dx) = stack.Scratch;
        mixer.BeginBackward(batch, seqLen);
        for (int l = layers - 1; l >= 0; l--)
        {
            Array.Clear(dOut, 0, nc);
            Losses.AlignmentBackward<TF>(dOut, mixer.Act[l].Out, teacherOutputs[l].Span, stack.Mask, 1.0 / layers, n, Config.HiddenSize);
            Array.Clear(dx, 0, nc);   // the teacher's input takes no gradient
            mixer.Backward(l, dx, dOut, teacherInputs[l].Span, stack.Mask, batch, seqLen);
        }
    }

    // ================================================================================================================

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
