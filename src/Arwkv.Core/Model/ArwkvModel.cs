using Arwkv.Diagnostics;
using Arwkv.IO;
using Arwkv.Kernels;
using Arwkv.Layers;
using Arwkv.Tokenization;

namespace Arwkv;

/// <summary>
/// An ARWKV checkpoint: Qwen2.5 with every attention block replaced by an RWKV-7 time mix.
/// The weights stay memory-mapped; activations live in buffers owned by the model, so one instance runs one
/// <see cref="Forward"/> at a time (a concurrent call throws <see cref="InvalidOperationException"/>); use one model
/// per thread, or serialize calls, to serve several sequences.
/// </summary>
public sealed class ArwkvModel : LanguageModel
{
    /// <summary>Tokens per prefill chunk: bounds the activation buffers while keeping matrix products wide.</summary>
    internal const int DefaultPrefillChunk = 128;

    private readonly SafeTensorsCheckpoint _checkpoint;
    private readonly KernelThreadPool _pool;
    private readonly WeightMatrix _embedding, _lmHead;
    private readonly ArwkvLayer[] _layers;
    private readonly float[] _finalNorm;
    private readonly float _eps;
    private readonly ForwardMode _mode;
    private readonly ArwkvScratch _scratch;
    private int _busy;
    private bool _disposed;

    private ArwkvModel(ArwkvConfig config, SafeTensorsCheckpoint checkpoint, KernelThreadPool pool, WeightMatrix embedding,
        WeightMatrix lmHead, ArwkvLayer[] layers, float[] finalNorm, ArwkvLoraRanks ranks, ForwardMode mode, int prefillChunk)
    {
        Config = config;
        LoraRanks = ranks;
        _checkpoint = checkpoint;
        _pool = pool;
        _embedding = embedding;
        _lmHead = lmHead;
        _layers = layers;
        _finalNorm = finalNorm;
        _eps = (float)config.RmsNormEps;
        _mode = mode;
        PrefillChunk = prefillChunk;
        int maxRank = Math.Max(Math.Max(ranks.Decay, ranks.Iclr), Math.Max(ranks.ValueMix, ranks.Gate));
        _scratch = new ArwkvScratch(mode == ForwardMode.Prefill ? prefillChunk : 1, config.HiddenSize, config.IntermediateSize, maxRank);
        EosTokenIds = config.EosTokenIds;
    }

    /// <summary>The checkpoint's hyper-parameters.</summary>
    public ArwkvConfig Config { get; }

    /// <summary>The LoRA ranks read from the weights (Gate is 0 without a gate; ValueMix 0 with a single layer).</summary>
    public ArwkvLoraRanks LoraRanks { get; }

    /// <summary>Tokens computed together in prefill mode.</summary>
    internal int PrefillChunk { get; }

    /// <inheritdoc />
    public override string Architecture => ArwkvConfig.ModelType;

    /// <inheritdoc />
    public override int VocabSize => Config.VocabSize;

    /// <summary>Loads an ARWKV checkpoint directory (config.json, safetensors weights, optional tokenizer.json).</summary>
    /// <exception cref="CheckpointException">A missing, misshaped or non-finite tensor, or a config the weights contradict.</exception>
    public static new ArwkvModel Load(string directory, ModelOptions? options = null) =>
        Load(directory, options, DefaultPrefillChunk);

    internal static ArwkvModel Load(string directory, ModelOptions? options, int prefillChunk)
    {
        options ??= new ModelOptions();
        if (prefillChunk < 1) throw new ArgumentOutOfRangeException(nameof(prefillChunk));
        ArwkvConfig config = ArwkvConfig.Load(directory);
        if (options.Threads < 1) throw new ArgumentOutOfRangeException(nameof(options), "ModelOptions.Threads must be at least 1");
        SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(directory);
        KernelThreadPool? pool = null;
        try
        {
            var loader = new ArwkvWeightLoader(checkpoint, config);
            int V = config.VocabSize, C = config.HiddenSize;
            WeightMatrix embedding = loader.Matrix(ArwkvCheckpointLayout.Embedding, V, C, "vocab_size, hidden_size");
            var layers = new ArwkvLayer[config.NumLayers];
            for (int i = 0; i < layers.Length; i++) layers[i] = loader.Layer(i);
            float[] finalNorm = loader.FinalNorm();
            WeightMatrix lmHead = config.TieWordEmbeddings ? embedding
                : loader.Matrix(ArwkvCheckpointLayout.LmHead, V, C, "vocab_size, hidden_size");
            QwenTokenizer? tokenizer = null;
            string tokenizerPath = Path.Combine(directory, "tokenizer.json");
            if (File.Exists(tokenizerPath)) tokenizer = QwenTokenizer.FromFile(tokenizerPath);
            pool = new KernelThreadPool(options.Threads);
            return new ArwkvModel(config, checkpoint, pool, embedding, lmHead, layers, finalNorm, loader.Ranks, options.Mode, prefillChunk)
            {
                Tokenizer = tokenizer,
            };
        }
        catch
        {
            pool?.Dispose();
            checkpoint.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public override ModelState CreateState() => new ArwkvState(Config.HiddenSize, Config.NumLayers, Config.HeadSize);

    /// <summary>Restores a state written by <see cref="ModelState.Save"/> from a model of the same shape.</summary>
    /// <exception cref="InvalidDataException">The stream is not a saved state, is truncated, or is for another model shape.</exception>
    public ArwkvState LoadState(Stream stream) => ArwkvState.Load(stream, Config);

    /// <inheritdoc />
    public override void Forward(ReadOnlySpan<int> tokens, ModelState state, Span<float> logits, LogitsScope scope = LogitsScope.Last)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (state is not ArwkvState s || !s.Matches(Config))
            throw new ArgumentException("state must come from CreateState or LoadState of a model with this shape", nameof(state));
        int V = Config.VocabSize;
        if (scope != LogitsScope.None && tokens.IsEmpty)
            throw new ArgumentException("logits were requested for an empty token sequence", nameof(tokens));
        long needed = scope switch { LogitsScope.All => (long)tokens.Length * V, LogitsScope.Last => V, _ => 0 };
        if (logits.Length < needed)
            throw new ArgumentException($"logits holds {logits.Length} floats; {scope} for {tokens.Length} tokens needs {needed}", nameof(logits));
        foreach (int token in tokens)
            if ((uint)token >= (uint)V) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {token} is outside the vocabulary [0, {V})");

        if (Interlocked.Exchange(ref _busy, 1) != 0)
            throw new InvalidOperationException("ArwkvModel runs one Forward at a time: its activation buffers are shared");
        try
        {
            using var hold = _pool.Hold();
            int chunk = _scratch.MaxRows;
            for (int start = 0; start < tokens.Length; start += chunk)
            {
                int rows = Math.Min(chunk, tokens.Length - start);
                bool lastChunk = start + rows == tokens.Length;
                RunChunk(tokens.Slice(start, rows), s);
                if (scope == LogitsScope.All)
                {
                    Span<float> chunkLogits = logits.Slice(start * V, rows * V);
                    Logits(0, rows, chunkLogits);
                    NonFiniteLogitsException.ThrowIfAny(chunkLogits, V, s.Position + start, _checkpoint.Directory);
                }
                else if (scope == LogitsScope.Last && lastChunk)
                {
                    Logits(rows - 1, 1, logits[..V]);
                    NonFiniteLogitsException.ThrowIfAny(logits[..V], V, s.Position + start + rows - 1, _checkpoint.Directory);
                }
            }
            s.Position += tokens.Length;
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>Runs the layers over consecutive tokens, leaving the final residual stream in scratch.Residual.</summary>
    private void RunChunk(ReadOnlySpan<int> tokens, ArwkvState state)
    {
        ForwardProfile.Start();
        int rows = tokens.Length, C = Config.HiddenSize, n = rows * C;
        ArwkvScratch s = _scratch;
        Span<float> h = s.Residual.AsSpan(0, n), output = s.Output.AsSpan(0, n), normed = s.Normed.AsSpan(0, n);
        for (int t = 0; t < rows; t++)
            Kernels.Convert.ToFloat32(_embedding.RowPointer(tokens[t]), _embedding.Type, h.Slice(t * C, C));

        for (int l = 0; l < _layers.Length; l++)
        {
            ArwkvLayer layer = _layers[l];
            RmsNorm.Apply(h, layer.InputNorm, _eps, normed, rows);
            ForwardProfile.Lap(ForwardPhase.NormsAndResiduals);
            layer.TimeMix.Forward(rows, s, state.Shift[l], state.Wkv[l], firstLayer: l == 0, _pool);
            System.Numerics.Tensors.TensorPrimitives.Add(h, output, h);
            RmsNorm.Apply(h, layer.PostNorm, _eps, normed, rows);
            ForwardProfile.Lap(ForwardPhase.NormsAndResiduals);
            layer.Mlp.Forward(normed, output, rows, s.MlpGate, s.MlpUp, _pool);
            System.Numerics.Tensors.TensorPrimitives.Add(h, output, h);
        }
    }

    /// <summary>logits[count, V] = lm_head(final_norm(h[first .. first + count))).</summary>
    private void Logits(int first, int count, Span<float> logits)
    {
        int C = Config.HiddenSize;
        Span<float> normed = _scratch.Normed.AsSpan(0, count * C);
        ForwardProfile.Start();
        RmsNorm.Apply(_scratch.Residual.AsSpan(first * C, count * C), _finalNorm, _eps, normed, count);
        Projection.Apply(_lmHead, normed, logits, count, _pool);
        ForwardProfile.Lap(ForwardPhase.Logits);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (_disposed) return;
        _disposed = true;
        if (disposing)
        {
            _pool.Dispose();
            _checkpoint.Dispose();
        }
        base.Dispose(disposing);
    }
}
