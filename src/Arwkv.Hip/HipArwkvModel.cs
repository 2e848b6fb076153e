using Arwkv.IO;
using Arwkv.Kernels;
using Arwkv.Tokenization;

namespace Arwkv.Hip;

/// <summary>
/// An ARWKV checkpoint on the GPU: the same model as <see cref="ArwkvModel"/> (ARWKV.md sections 1-2), run by the
/// libarwkv_hip kernels. The weights are read once from the memory-mapped checkpoint (checked exactly as the CPU
/// model checks them), uploaded, and the mapping closed: the large matrices in <see cref="HipModelOptions.MatrixType"/>
/// (bf16 by default), norms, time-mix vectors and LoRAs in float32; activations and the WKV state are float32.
/// A prefill chunk runs the training kernels (tiled GEMM, the sequential WKV7 forward over the whole chunk); a single
/// token runs the decode kernel. One instance runs one <see cref="Forward"/> at a time, on its own stream.
/// </summary>
/// <remarks>
/// Verified only on the HIP-on-CPU executor (native/hip/build.sh --cpu) against <see cref="ArwkvModel"/>; it has
/// never run on a GPU.
/// </remarks>
public sealed class HipArwkvModel : LanguageModel
{
    readonly HipStream _stream;
    readonly IReadOnlyList<HipBuffer> _owned;
    readonly HipBuffer _embedding, _lmHead, _finalNorm;
    readonly HipArwkvLayer[] _layers;
    readonly HipArwkvActivations _act;
    readonly DType _matrixType;
    readonly float _eps;
    int _busy;
    bool _disposed;

    HipArwkvModel(ArwkvConfig config, ArwkvLoraRanks ranks, HipStream stream, HipWeightUploader uploader, HipBuffer embedding,
        HipBuffer lmHead, HipBuffer finalNorm, HipArwkvLayer[] layers, HipArwkvActivations activations)
    {
        Config = config;
        LoraRanks = ranks;
        _stream = stream;
        _owned = uploader.Owned;
        _embedding = embedding;
        _lmHead = lmHead;
        _finalNorm = finalNorm;
        _layers = layers;
        _act = activations;
        _matrixType = uploader.MatrixType;
        _eps = (float)config.RmsNormEps;
        EosTokenIds = config.EosTokenIds;
    }

    /// <summary>The checkpoint's hyper-parameters.</summary>
    public ArwkvConfig Config { get; }

    /// <summary>The LoRA ranks read from the weights.</summary>
    public ArwkvLoraRanks LoraRanks { get; }

    /// <summary>Element type of the large matrices on the device (see <see cref="HipModelOptions.MatrixType"/>).</summary>
    public DType MatrixType => _matrixType;

    /// <summary>Tokens computed together in one prefill chunk (1 in <see cref="ForwardMode.Recurrent"/> mode).</summary>
    public int PrefillChunk => _act.MaxRows;

    /// <inheritdoc />
    public override string Architecture => ArwkvConfig.ModelType;

    /// <inheritdoc />
    public override int VocabSize => Config.VocabSize;

    /// <summary>
    /// Loads an ARWKV checkpoint directory onto the GPU. Needs libarwkv_hip and a device (<see cref="HipRuntime.TryLoad"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">No HIP library or no device; the message says which and how to fix it.</exception>
    /// <exception cref="CheckpointException">A missing, misshaped or non-finite tensor, or a config the weights contradict.</exception>
    /// <exception cref="HipException">Out of device memory (the message names the allocation and its size) or another runtime error.</exception>
    public static HipArwkvModel Load(string directory, HipModelOptions? options = null)
    {
        options ??= new HipModelOptions();
        if (options.PrefillChunk < 1) throw new ArgumentOutOfRangeException(nameof(options), "HipModelOptions.PrefillChunk must be at least 1");
        if (options.MatrixType is not (DType.F32 or DType.BF16))
            throw new ArgumentOutOfRangeException(nameof(options), $"HipModelOptions.MatrixType must be F32 or BF16, not {options.MatrixType}");
        HipRuntime.EnsureLoaded();
        HipRuntime.Initialize(options.Device);
        ArwkvConfig config = ArwkvConfig.Load(directory);
        QwenTokenizer? tokenizer = null;
        string tokenizerPath = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(tokenizerPath)) tokenizer = QwenTokenizer.FromFile(tokenizerPath);

        var stream = HipStream.Create();
        var uploader = new HipWeightUploader(options.MatrixType, stream);
        try
        {
            using SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(directory);
            var loader = new ArwkvWeightLoader(checkpoint, config);
            int V = config.VocabSize, C = config.HiddenSize;
            // One layer at a time: its host-side float32 vectors and LoRAs are garbage once uploaded.
            HipBuffer embedding = uploader.Matrix(loader.Matrix(ArwkvCheckpointLayout.Embedding, V, C, "vocab_size, hidden_size"),
                ArwkvCheckpointLayout.Embedding);
            var layers = new HipArwkvLayer[config.NumLayers];
            for (int i = 0; i < layers.Length; i++) layers[i] = new HipArwkvLayer(loader.Layer(i), i, uploader);
            HipBuffer finalNorm = uploader.Floats(loader.FinalNorm(), ArwkvCheckpointLayout.FinalNorm);
            HipBuffer lmHead = config.TieWordEmbeddings ? embedding
                : uploader.Matrix(loader.Matrix(ArwkvCheckpointLayout.LmHead, V, C, "vocab_size, hidden_size"), ArwkvCheckpointLayout.LmHead);
            ArwkvLoraRanks ranks = loader.Ranks;
            int maxRank = Math.Max(Math.Max(ranks.Decay, ranks.Iclr), Math.Max(ranks.ValueMix, ranks.Gate));
            int rows = options.Mode == ForwardMode.Recurrent ? 1 : options.PrefillChunk;
            var activations = new HipArwkvActivations(uploader, rows, C, config.IntermediateSize, V, maxRank);
            stream.Synchronize();
            return new HipArwkvModel(config, ranks, stream, uploader, embedding, lmHead, finalNorm, layers, activations)
            {
                Tokenizer = tokenizer,
            };
        }
        catch
        {
            uploader.Dispose();
            stream.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public override ModelState CreateState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new HipArwkvState(Config, _stream);
    }

    /// <summary>A GPU copy of a CPU state (from <see cref="ArwkvModel"/> or <see cref="ArwkvModel.LoadState"/>) of a model of this shape.</summary>
    public HipArwkvState ToDevice(ArwkvState state)
    {
        var device = new HipArwkvState(Config, _stream);
        try
        {
            device.CopyFrom(state);
        }
        catch
        {
            device.Dispose();
            throw;
        }
        return device;
    }

    /// <summary>Restores a state written by <see cref="ModelState.Save"/> on either device from a model of the same shape.</summary>
    /// <exception cref="InvalidDataException">The stream is not a saved state, is truncated, or is for another model shape.</exception>
    public HipArwkvState LoadState(Stream stream) => ToDevice(ArwkvState.Load(stream, Config));

    /// <inheritdoc />
    public override void Forward(ReadOnlySpan<int> tokens, ModelState state, Span<float> logits, LogitsScope scope = LogitsScope.Last)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (state is ArwkvState)
            throw new ArgumentException("state is a CPU ArwkvState: move it to the GPU with HipArwkvModel.ToDevice first", nameof(state));
        if (state is not HipArwkvState s || !s.Matches(Config))
            throw new ArgumentException("state must come from CreateState, ToDevice or LoadState of a model with this shape", nameof(state));
        int V = Config.VocabSize;
        if (scope != LogitsScope.None && tokens.IsEmpty)
            throw new ArgumentException("logits were requested for an empty token sequence", nameof(tokens));
        long needed = scope switch { LogitsScope.All => (long)tokens.Length * V, LogitsScope.Last => V, _ => 0 };
        if (logits.Length < needed)
            throw new ArgumentException($"logits holds {logits.Length} floats; {scope} for {tokens.Length} tokens needs {needed}", nameof(logits));
        foreach (int token in tokens)
            if ((uint)token >= (uint)V) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {token} is outside the vocabulary [0, {V})");

        if (Interlocked.Exchange(ref _busy, 1) != 0)
            throw new InvalidOperationException("HipArwkvModel runs one Forward at a time: its activation buffers are shared");
        try
        {
            int chunk = _act.MaxRows;
            for (int start = 0; start < tokens.Length; start += chunk)
            {
                int rows = Math.Min(chunk, tokens.Length - start);
                RunChunk(tokens.Slice(start, rows), s);
                if (scope == LogitsScope.All) Logits(rows, logits.Slice(start * V, rows * V), lastOnly: false);
                else if (scope == LogitsScope.Last && start + rows == tokens.Length) Logits(rows, logits[..V], lastOnly: true);
            }
            // Queued work must finish before the state is used elsewhere (a download on another path, a clone).
            _stream.Synchronize();
            s.Advance(tokens.Length);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    // ---- forward -------------------------------------------------------------------------------------------------

    /// <summary>Runs the layers over consecutive tokens, leaving the final residual stream in the activations.</summary>
    void RunChunk(ReadOnlySpan<int> tokens, HipArwkvState state)
    {
        int n = tokens.Length, C = Config.HiddenSize;
        HipArwkvActivations a = _act;
        a.Tokens.Upload(tokens, _stream);
        HipKernels.EmbeddingForward(a.Residual, a.Tokens, _embedding, _matrixType, n, C, Config.VocabSize, _stream);
        for (int l = 0; l < _layers.Length; l++)
        {
            HipArwkvLayer layer = _layers[l];
            HipKernels.RmsNormForward(a.Normed, a.Rstd, a.Residual, layer.InputNorm, n, C, _eps, _stream);
            TimeMixForward(layer, n, state.Shift[l], state.Wkv[l], firstLayer: l == 0);
            HipKernels.RmsNormForward(a.Normed, a.Rstd, a.Residual, layer.PostNorm, n, C, _eps, _stream);
            MlpForward(layer, n);
        }
    }

    /// <summary>
    /// h += TimeMix(normed) for n tokens (ARWKV.md section 2), advancing the layer's token shift and WKV state. Layer 0
    /// writes v_first, later layers read it.
    /// </summary>
    void TimeMixForward(HipArwkvLayer w, int n, HipBuffer shift, HipBuffer wkv, bool firstLayer)
    {
        HipArwkvActivations a = _act;
        int C = Config.HiddenSize, H = Config.NumHeads;
        long count = (long)n * C;
        HipBuffer[] x = a.LerpBlocks(n);
        HipBuffer xr = x[0], xw = x[1], xk = x[2], xv = x[3], xa = x[4], xg = x[5];
        HipKernels.TimeMixLerpForward(a.Lerped, a.Normed, shift, w.Lerp, 1, n, C, _stream);
        // The next chunk's x_prev is this chunk's last normed row (queued after the lerp has read the old one).
        shift.CopyFrom(a.Normed, (long)(n - 1) * C * sizeof(float), 0, (long)C * sizeof(float), _stream);

        Linear(a.R, xr, w.Receptance, n, C, C);
        Linear(a.K, xk, w.Key, n, C, C);
        Linear(a.V, xv, w.Value, n, C, C);

        // decay = exp(-e^-0.5 sigmoid(w0 + tanh(x_w A) B))
        Lora(w.DecayLora, xw, a.LoraOut, n, LoraActivation.Tanh);
        HipKernels.TimeMixDecayForward(a.Decay, a.LoraOut, w.W0, n, C, _stream);

        HipBuffer v = a.V;
        if (firstLayer || w.ValueLora is null)
        {
            if (firstLayer) a.VFirst.CopyFrom(a.V, count * sizeof(float), _stream);
        }
        else
        {
            // v += (v_first - v) sigmoid(v0 + x_v A B)
            Lora(w.ValueLora, xv, a.LoraOut, n, LoraActivation.None);
            HipKernels.SigmoidForward(a.ValueGate, a.LoraOut, w.V0!, n, C, _stream);
            HipKernels.ValueResidualForward(a.VMixed, a.V, a.VFirst, a.ValueGate, count, _stream);
            v = a.VMixed;
        }

        // a = sigmoid(a0 + x_a A B)
        Lora(w.IclrLora, xa, a.LoraOut, n, LoraActivation.None);
        HipKernels.SigmoidForward(a.A, a.LoraOut, w.A0, n, C, _stream);

        // g = sigmoid(x_g A) B
        if (w.GateLora is not null) Lora(w.GateLora, xg, a.G, n, LoraActivation.Sigmoid);

        HipKernels.TimeMixKkForward(a.WkvA, a.WkvB, a.KOut, a.KkNorm, a.K, a.A, w.KK, w.KA, n, C, _stream);
        if (n == 1)
            HipKernels.Wkv7Decode(a.Y, wkv, a.R, a.Decay, a.KOut, v, a.WkvA, a.WkvB, 1, H, _stream);
        else
            HipKernels.Wkv7Forward(a.Y, wkv, null, null, a.R, a.Decay, a.KOut, v, a.WkvA, a.WkvB, null, DType.F32, 1, n, H, _stream);
        HipKernels.TimeMixBonusForward(a.Y, a.R, a.KOut, v, w.RK, n, C, _stream);

        HipBuffer y = a.Y;
        if (w.GateLora is not null)
        {
            HipKernels.MultiplyForward(a.Gated, a.Y, a.G, count, _stream);
            y = a.Gated;
        }
        // The residual add is the output projection's beta = 1.
        Linear(a.Residual, y, w.Output, n, C, C, accumulate: true);
    }

    /// <summary>h += down(silu(gate(normed)) * up(normed)) for n tokens.</summary>
    void MlpForward(HipArwkvLayer w, int n)
    {
        HipArwkvActivations a = _act;
        int C = Config.HiddenSize, F = Config.IntermediateSize;
        Linear(a.MlpGate, a.Normed, w.MlpGate, n, F, C);
        Linear(a.MlpUp, a.Normed, w.MlpUp, n, F, C);
        HipKernels.SwiGluForward(a.MlpAct, a.MlpGate, a.MlpUp, (long)n * F, _stream);
        Linear(a.Residual, a.MlpAct, w.MlpDown, n, C, F, accumulate: true);
    }

    /// <summary>logits = lm_head(final_norm(h)) for every row of the chunk, or for its last row only.</summary>
    void Logits(int rows, Span<float> logits, bool lastOnly)
    {
        HipArwkvActivations a = _act;
        int C = Config.HiddenSize, V = Config.VocabSize;
        if (lastOnly)
        {
            a.LastRow.CopyFrom(a.Residual, (long)(rows - 1) * C * sizeof(float), 0, (long)C * sizeof(float), _stream);
            HipKernels.RmsNormForward(a.LastNormed, a.LastRstd, a.LastRow, _finalNorm, 1, C, _eps, _stream);
            Linear(a.Logits, a.LastNormed, _lmHead, 1, V, C);
            a.Logits.Download(logits[..V], _stream);
            return;
        }
        HipKernels.RmsNormForward(a.Normed, a.Rstd, a.Residual, _finalNorm, rows, C, _eps, _stream);
        Linear(a.Logits, a.Normed, _lmHead, rows, V, C);
        a.Logits.Download(logits[..(rows * V)], _stream);
    }

    /// <summary>y [n, outDim] = x [n, inDim] W^T (W [outDim, inDim] in the matrix type), or y += that.</summary>
    void Linear(HipBuffer y, HipBuffer x, HipBuffer weight, int n, int outDim, int inDim, bool accumulate = false) =>
        HipKernels.Gemm(y, x, DType.F32, weight, _matrixType, transposeA: false, transposeB: true, n, outDim, inDim,
            beta: accumulate ? 1f : 0f, stream: _stream);

    enum LoraActivation { None, Tanh, Sigmoid }

    /// <summary>output [n, C] = act(x A) B.</summary>
    void Lora(HipLora lora, HipBuffer x, HipBuffer output, int n, LoraActivation activation)
    {
        HipArwkvActivations a = _act;
        int C = Config.HiddenSize, rank = lora.Rank;
        HipKernels.Gemm(a.LoraMid, x, DType.F32, lora.Down, lora.DownType, false, true, n, rank, C, stream: _stream);
        HipBuffer mid = a.LoraMid;
        if (activation == LoraActivation.Tanh)
        {
            HipKernels.TanhForward(a.LoraHidden, a.LoraMid, (long)n * rank, _stream);
            mid = a.LoraHidden;
        }
        else if (activation == LoraActivation.Sigmoid)
        {
            HipKernels.SigmoidForward(a.LoraHidden, a.LoraMid, null, n, rank, _stream);
            mid = a.LoraHidden;
        }
        HipKernels.Gemm(output, mid, DType.F32, lora.Up, DType.F32, false, false, n, C, rank, stream: _stream);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (_disposed) return;
        _disposed = true;
        if (disposing)
        {
            foreach (HipBuffer buffer in _owned) buffer.Dispose();
            _stream.Dispose();
        }
        base.Dispose(disposing);
    }
}
