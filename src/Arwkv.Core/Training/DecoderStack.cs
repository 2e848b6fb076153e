using System.Numerics;
using System.Numerics.Tensors;
using Arwkv.Training.Layers;

namespace Arwkv.Training;

/// <summary>
/// The token mixer of every block of a <see cref="DecoderStack{TF}"/>: RWKV-7 time mix in the student, attention in
/// the teacher. It owns its weights' views, its saved activations and its scratch, planned for the stack's
/// [maxBatch, maxSeqLen].
/// </summary>
internal interface ITokenMixer<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    /// <summary>
    /// Layer <paramref name="layer"/>'s mixer on its normed input <paramref name="x"/> [B, T, C]; returns its output
    /// [B, T, C], which stays valid (and is what backward reads) until that layer's next forward.
    /// </summary>
    ReadOnlySpan<TF> Forward(int layer, ReadOnlySpan<TF> x, ReadOnlySpan<byte> mask, int batch, int seqLen);

    /// <summary>Called once before a backward walks the layers, last layer first (state carried across layers starts here).</summary>
    void BeginBackward(int batch, int seqLen);

    /// <summary>Adds into <paramref name="dx"/> and the weight gradients the gradient of layer <paramref name="layer"/>'s mixer, given <paramref name="dOutput"/>.</summary>
    void Backward(int layer, Span<TF> dx, ReadOnlySpan<TF> dOutput, ReadOnlySpan<TF> x, ReadOnlySpan<byte> mask, int batch, int seqLen);
}

/// <summary>
/// The decoder that the student and the teacher share, with the HF Qwen2 names: embedding; per block
/// mid = x + mix(norm1(x)), out = mid + down(silu(gate(norm2(mid))) * up(norm2(mid))); final norm; lm_head. Only the
/// mixer differs (<see cref="ITokenMixer{TF}"/>). Activations are planned once for [maxBatch, maxSeqLen]; a step
/// allocates nothing. Forward clears <see cref="DLogits"/>; a loss adds its gradient there; <see cref="Backward"/>
/// adds every parameter's gradient into the set's gradient buffer.
/// </summary>
internal sealed class DecoderStack<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    private sealed class Block
    {
        public required Memory<TF> Norm1, Norm2, GateProj, UpProj, DownProj;           // [C], [C], [F, C], [F, C], [C, F]
        public required Memory<TF> DNorm1, DNorm2, DGateProj, DUpProj, DDownProj;
        public required TF[] Ln1, Rstd1, Mid, Ln2, Rstd2, Gate, Up, Hidden;            // [BT, C], [BT], [BT, C], [BT, C], [BT], [BT, F] x3
    }

    private readonly ITokenMixer<TF> mixer;
    private readonly Block[] blocks;
    private readonly int hidden, intermediate, vocab;
    private readonly double eps;
    private readonly Memory<TF> embed, finalNorm, lmHead, dEmbed, dFinalNorm, dLmHead;
    private readonly TF[][] residual;                 // [L + 1][BT, C]: input of layer l; residual[L] feeds the final norm
    private readonly TF[] finalLn, finalRstd, logits, dLogits;
    private readonly TF[] dRes, dLn, dHidden, dGate, dUp, rowScratch;
    private readonly int[] tokens;
    private readonly byte[] mask;
    private bool hasMask;

    /// <summary>
    /// Views into <paramref name="parameters"/>, which holds model.embed_tokens.weight, model.norm.weight, lm_head.weight
    /// and per layer l model.layers.l.{input_layernorm, post_attention_layernorm, mlp.gate_proj, mlp.up_proj,
    /// mlp.down_proj}.weight (the mixer's own tensors are the mixer's business); without <paramref name="withBackward"/>
    /// (a frozen model) no logit gradient and no backward buffers are allocated.
    /// </summary>
    public DecoderStack(ParameterSet<TF> parameters, ITokenMixer<TF> mixer, int numLayers, int hiddenSize, int intermediateSize, int vocabSize,
        double rmsNormEps, int maxBatch, int maxSeqLen, bool withBackward)
    {
        this.mixer = mixer;
        hidden = hiddenSize; intermediate = intermediateSize; vocab = vocabSize; eps = rmsNormEps;
        MaxBatch = maxBatch;
        MaxSeqLen = maxSeqLen;
        int c = hiddenSize, f = intermediateSize, v = vocabSize, n = maxBatch * maxSeqLen;
        embed = parameters.Value("model.embed_tokens.weight"); dEmbed = parameters.Gradient("model.embed_tokens.weight");
        finalNorm = parameters.Value("model.norm.weight"); dFinalNorm = parameters.Gradient("model.norm.weight");
        lmHead = parameters.Value("lm_head.weight"); dLmHead = parameters.Gradient("lm_head.weight");
        blocks = new Block[numLayers];
        for (int l = 0; l < numLayers; l++)
        {
            string p = $"model.layers.{l}.";
            Memory<TF> P(string name) => parameters.Value(p + name);
            Memory<TF> G(string name) => parameters.Gradient(p + name);
            blocks[l] = new Block
            {
                Norm1 = P("input_layernorm.weight"), DNorm1 = G("input_layernorm.weight"),
                Norm2 = P("post_attention_layernorm.weight"), DNorm2 = G("post_attention_layernorm.weight"),
                GateProj = P("mlp.gate_proj.weight"), DGateProj = G("mlp.gate_proj.weight"),
                UpProj = P("mlp.up_proj.weight"), DUpProj = G("mlp.up_proj.weight"),
                DownProj = P("mlp.down_proj.weight"), DDownProj = G("mlp.down_proj.weight"),
                Ln1 = new TF[n * c], Rstd1 = new TF[n], Mid = new TF[n * c], Ln2 = new TF[n * c], Rstd2 = new TF[n],
                Gate = new TF[n * f], Up = new TF[n * f], Hidden = new TF[n * f],
            };
        }
        residual = new TF[numLayers + 1][];
        for (int l = 0; l <= numLayers; l++) residual[l] = new TF[n * c];
        finalLn = new TF[n * c]; finalRstd = new TF[n]; logits = new TF[n * v];
        HasBackward = withBackward;
        int b = withBackward ? 1 : 0;
        dLogits = new TF[b * n * v];
        dRes = new TF[b * n * c]; dLn = new TF[b * n * c];
        dHidden = new TF[b * n * f]; dGate = new TF[b * n * f]; dUp = new TF[b * n * f];
        rowScratch = new TF[Math.Max(c, f)];
        tokens = new int[n];
        mask = new byte[n];
    }

    public int MaxBatch { get; }
    public int MaxSeqLen { get; }
    public bool HasBackward { get; }
    /// <summary>The [B, T] of the last forward.</summary>
    public int Batch { get; private set; }
    public int SeqLen { get; private set; }

    /// <summary>The padding mask of the last forward [B, T], or empty (no padding).</summary>
    public ReadOnlySpan<byte> Mask => hasMask ? mask.AsSpan(0, Batch * SeqLen) : ReadOnlySpan<byte>.Empty;

    /// <summary>Logits [B, T, V] of the last <see cref="Forward"/>.</summary>
    public Span<TF> Logits => logits.AsSpan(0, Batch * SeqLen * vocab);

    /// <summary>The loss gradient [B, T, V] that <see cref="Backward"/> reads (empty without backward).</summary>
    public Span<TF> DLogits => dLogits.AsSpan(0, HasBackward ? Batch * SeqLen * vocab : 0);

    /// <summary>Layer <paramref name="layer"/>'s normed mixer input [B, T, C] from the last forward.</summary>
    public ReadOnlyMemory<TF> NormedInput(int layer) => blocks[layer].Ln1.AsMemory(0, Batch * SeqLen * hidden);

    /// <summary>Two [maxBatch * maxSeqLen, C] gradient buffers, free between backward passes (stage 1 runs the mixers alone with them).</summary>
    public (TF[] First, TF[] Second) Scratch => (dRes, dLn);

    /// <summary>Checks and records the batch shape, tokens (when given) and padding mask of the next pass.</summary>
    public void SetBatch(ReadOnlySpan<int> tokenIds, ReadOnlySpan<byte> paddingMask, int batchSize, int sequenceLength)
    {
        if (batchSize <= 0 || batchSize > MaxBatch || sequenceLength <= 0 || sequenceLength > MaxSeqLen)
            throw new ArgumentException($"[{batchSize}, {sequenceLength}] is outside the planned [{MaxBatch}, {MaxSeqLen}]");
        int n = batchSize * sequenceLength;
        if (!paddingMask.IsEmpty && paddingMask.Length != n) throw new ArgumentException($"mask has {paddingMask.Length} entries, expected {n}");
        if (!tokenIds.IsEmpty && tokenIds.Length != n) throw new ArgumentException($"tokens has {tokenIds.Length} entries, expected {n}");
        Batch = batchSize;
        SeqLen = sequenceLength;
        tokenIds.CopyTo(tokens);
        hasMask = !paddingMask.IsEmpty;
        paddingMask.CopyTo(mask);
    }

    /// <summary>tokens [B, T]; mask [B, T] (0 = padding) or empty. Returns the logits [B, T, V] (empty without <paramref name="computeLogits"/>) and clears <see cref="DLogits"/>.</summary>
    public Span<TF> Forward(ReadOnlySpan<int> tokenIds, ReadOnlySpan<byte> paddingMask, int batchSize, int sequenceLength, bool computeLogits = true)
    {
        SetBatch(tokenIds, paddingMask, batchSize, sequenceLength);
        if (tokenIds.IsEmpty) throw new ArgumentException($"tokens has 0 entries, expected {batchSize * sequenceLength}");
        int n = Batch * SeqLen, c = hidden, f = intermediate, v = vocab;
        ReadOnlySpan<byte> m = Mask;
        Embedding.Forward<TF>(residual[0], tokens.AsSpan(0, n), embed.Span, n, c);
        for (int l = 0; l < blocks.Length; l++)
        {
            Block block = blocks[l];
            TF[] input = residual[l], output = residual[l + 1];
            RmsNorm.Forward<TF>(block.Ln1, block.Rstd1, input, block.Norm1.Span, eps, n, c);
            ReadOnlySpan<TF> mixed = mixer.Forward(l, block.Ln1, m, Batch, SeqLen);
            TensorPrimitives.Add<TF>(input.AsSpan(0, n * c), mixed.Slice(0, n * c), block.Mid);
            RmsNorm.Forward<TF>(block.Ln2, block.Rstd2, block.Mid, block.Norm2.Span, eps, n, c);
            Linear.Forward<TF>(block.Gate, block.Ln2, block.GateProj.Span, n, c, f);
            Linear.Forward<TF>(block.Up, block.Ln2, block.UpProj.Span, n, c, f);
            SwiGlu.Forward<TF>(block.Hidden.AsSpan(0, n * f), block.Gate, block.Up);
            Linear.Forward<TF>(output, block.Hidden, block.DownProj.Span, n, f, c);
            TensorPrimitives.Add<TF>(output.AsSpan(0, n * c), block.Mid.AsSpan(0, n * c), output);
        }
        if (!computeLogits) return Span<TF>.Empty;
        RmsNorm.Forward<TF>(finalLn, finalRstd, residual[blocks.Length], finalNorm.Span, eps, n, c);
        Linear.Forward<TF>(logits, finalLn, lmHead.Span, n, c, v);
        DLogits.Clear();
        return Logits;
    }

    /// <summary>Adds the gradient of the loss whose logit gradient is in <see cref="DLogits"/> into every parameter's gradient.</summary>
    public void Backward()
    {
        if (!HasBackward) throw new InvalidOperationException("this model was built forward-only (frozen): it has no backward");
        int n = Batch * SeqLen, c = hidden, f = intermediate, v = vocab, nc = n * c, nf = n * f;
        ReadOnlySpan<byte> m = Mask;
        Array.Clear(dLn, 0, nc);
        Linear.Backward<TF>(dLn, dLmHead.Span, dLogits, finalLn, lmHead.Span, n, c, v);
        Array.Clear(dRes, 0, nc);
        RmsNorm.Backward<TF>(dRes, dFinalNorm.Span, dLn, residual[blocks.Length], finalNorm.Span, finalRstd, rowScratch, n, c);
        mixer.BeginBackward(Batch, SeqLen);
        for (int l = blocks.Length - 1; l >= 0; l--)
        {
            Block block = blocks[l];
            // output = mid + down(silu(gate(ln2)) * up(ln2)), ln2 = norm2(mid); dRes becomes d(mid)
            Array.Clear(dHidden, 0, nf); Array.Clear(dGate, 0, nf); Array.Clear(dUp, 0, nf);
            Linear.Backward<TF>(dHidden, block.DDownProj.Span, dRes, block.Hidden, block.DownProj.Span, n, f, c);
            SwiGlu.Backward<TF>(dGate, dUp, dHidden.AsSpan(0, nf), block.Gate, block.Up);
            Array.Clear(dLn, 0, nc);
            Linear.Backward<TF>(dLn, block.DGateProj.Span, dGate, block.Ln2, block.GateProj.Span, n, c, f);
            Linear.Backward<TF>(dLn, block.DUpProj.Span, dUp, block.Ln2, block.UpProj.Span, n, c, f);
            RmsNorm.Backward<TF>(dRes, block.DNorm2.Span, dLn, block.Mid, block.Norm2.Span, block.Rstd2, rowScratch, n, c);
            // mid = input + mix(norm1(input)); dRes becomes d(input)
            Array.Clear(dLn, 0, nc);
            mixer.Backward(l, dLn, dRes, block.Ln1, m, Batch, SeqLen);
            RmsNorm.Backward<TF>(dRes, block.DNorm1.Span, dLn, residual[l], block.Norm1.Span, block.Rstd1, rowScratch, n, c);
        }
        Embedding.Backward<TF>(dEmbed.Span, dRes, tokens.AsSpan(0, n), n, c);
    }
}
