using System.Numerics.Tensors;
using Arwkv.IO;
using Arwkv.Kernels;
using Arwkv.Layers;
using Arwkv.Tokenization;

namespace Arwkv;

/// <summary>
/// A Qwen2 / Qwen2.5 decoder (Hugging Face <c>Qwen2ForCausalLM</c>): the teacher ARWKV is distilled from.
/// Grouped-query attention with RoPE and q/k/v biases, SwiGLU MLP, RMSNorm; the state is a key/value cache.
/// Weights stay memory-mapped in their storage type (F32, F16 or BF16).
/// </summary>
public sealed class Qwen2Model : LanguageModel
{
    /// <summary>Prefill works through long prompts in chunks of this many tokens, bounding scratch memory.</summary>
    internal const int PrefillChunk = 256;

    private readonly SafeTensorsCheckpoint _checkpoint;
    private readonly KernelThreadPool _pool;
    private readonly ForwardMode _mode;
    private readonly WeightMatrix _embedding;
    private readonly WeightMatrix _lmHead;
    private readonly float[] _finalNorm;
    private readonly Qwen2Layer[] _layers;
    private readonly float[] _invFreq;
    private bool _disposed;

    private sealed class Qwen2Layer
    {
        public required float[] InputNorm;
        public required WeightMatrix Query, Key, Value, Output;
        public required float[] QueryBias, KeyBias, ValueBias;
        public required float[] PostNorm;
        public required WeightMatrix Gate, Up, Down;
    }

    private Qwen2Model(Qwen2Config config, SafeTensorsCheckpoint checkpoint, ModelOptions options)
    {
        Config = config;
        _checkpoint = checkpoint;
        _mode = options.Mode;
        int c = config.HiddenSize, kv = config.KeyValueSize, f = config.IntermediateSize, v = config.VocabSize;
        _embedding = Matrix("model.embed_tokens.weight", v, c);
        // Tied like transformers: the embedding is the output matrix even if a copy of lm_head.weight was saved.
        if (config.TieWordEmbeddings) _lmHead = _embedding;
        else
        {
            if (!checkpoint.Contains("lm_head.weight"))
                throw new CheckpointException(checkpoint.Files.Count == 1 ? checkpoint.Files[0].Path : Path.Combine(checkpoint.Directory, SafeTensorsCheckpoint.IndexFileName),
                    "missing tensor 'lm_head.weight' (config.json has tie_word_embeddings: false)");
            _lmHead = Matrix("lm_head.weight", v, c);
        }
        _finalNorm = Vector("model.norm.weight", c);
        _layers = new Qwen2Layer[config.NumLayers];
        for (int i = 0; i < config.NumLayers; i++)
        {
            string p = $"model.layers.{i}.";
            _layers[i] = new Qwen2Layer
            {
                InputNorm = Vector(p + "input_layernorm.weight", c),
                Query = Matrix(p + "self_attn.q_proj.weight", c, c),
                Key = Matrix(p + "self_attn.k_proj.weight", kv, c),
                Value = Matrix(p + "self_attn.v_proj.weight", kv, c),
                Output = Matrix(p + "self_attn.o_proj.weight", c, c),
                QueryBias = Vector(p + "self_attn.q_proj.bias", c),
                KeyBias = Vector(p + "self_attn.k_proj.bias", kv),
                ValueBias = Vector(p + "self_attn.v_proj.bias", kv),
                PostNorm = Vector(p + "post_attention_layernorm.weight", c),
                Gate = Matrix(p + "mlp.gate_proj.weight", f, c),
                Up = Matrix(p + "mlp.up_proj.weight", f, c),
                Down = Matrix(p + "mlp.down_proj.weight", c, f),
            };
        }
        _invFreq = Qwen2Attention.InverseFrequencies(config.HeadDim, config.RopeTheta);
        EosTokenIds = config.EosTokenIds;
        _pool = new KernelThreadPool(options.Threads);
    }

    /// <summary>The checkpoint's hyper-parameters.</summary>
    public Qwen2Config Config { get; }

    /// <inheritdoc />
    public override string Architecture => Qwen2Config.ModelType;

    /// <inheritdoc />
    public override int VocabSize => Config.VocabSize;

    /// <summary>
    /// Loads a Qwen2 checkpoint directory: config.json, the weights (one model.safetensors, or the shards that
    /// model.safetensors.index.json lists, all memory-mapped) and an optional tokenizer.json.
    /// </summary>
    /// <exception cref="CheckpointException">A file is missing, or a tensor is missing or has the wrong shape.</exception>
    public static new Qwen2Model Load(string directory, ModelOptions? options = null)
    {
        options ??= new ModelOptions();
        if (options.Threads < 1) throw new ArgumentException("ModelOptions.Threads must be at least 1", nameof(options));
        Qwen2Config config = Qwen2Config.Load(directory);
        string single = Path.Combine(directory, SafeTensorsCheckpoint.SingleFileName);
        if (!File.Exists(single) && !File.Exists(Path.Combine(directory, SafeTensorsCheckpoint.IndexFileName)))
            throw new CheckpointException(single, $"weights not found (neither {SafeTensorsCheckpoint.SingleFileName} nor {SafeTensorsCheckpoint.IndexFileName})");
        SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(directory);
        try
        {
            string tokenizerPath = Path.Combine(directory, "tokenizer.json");
            QwenTokenizer? tokenizer = File.Exists(tokenizerPath) ? QwenTokenizer.FromFile(tokenizerPath) : null;
            return new Qwen2Model(config, checkpoint, options) { Tokenizer = tokenizer };
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    private WeightMatrix Matrix(string name, int rows, int cols)
    {
        TensorInfo info = _checkpoint.GetInfo(name);
        if (info.Shape.Length != 2 || info.Shape[0] != rows || info.Shape[1] != cols)
            throw new CheckpointException(_checkpoint.FileOf(name).Path, $"tensor '{name}' has shape {info.ShapeText}, expected [{rows}, {cols}]");
        return new WeightMatrix(_checkpoint.GetFinitePointer(name), info.Type, rows, cols);
    }

    private float[] Vector(string name, int length)
    {
        TensorInfo info = _checkpoint.GetInfo(name);
        if (info.Shape.Length != 1 || info.Shape[0] != length)
            throw new CheckpointException(_checkpoint.FileOf(name).Path, $"tensor '{name}' has shape {info.ShapeText}, expected [{length}]");
        return _checkpoint.ReadFloat32(name);
    }

    /// <inheritdoc />
    public override ModelState CreateState() => new Qwen2State(Config.NumLayers, Config.KeyValueSize);

    /// <summary>Restores a state written by <see cref="ModelState.Save"/> of a state of this model.</summary>
    /// <exception cref="InvalidDataException">The stream does not hold a state of a model with this shape.</exception>
    public ModelState LoadState(Stream stream) => Qwen2State.Load(stream, Config.NumLayers, Config.KeyValueSize);

    /// <inheritdoc />
    public override void Forward(ReadOnlySpan<int> tokens, ModelState state, Span<float> logits, LogitsScope scope = LogitsScope.Last) =>
        Run(tokens, state, logits, scope, default, default);

    /// <summary>
    /// Forward pass that also records, for every layer, what its attention block sees and produces: the
    /// RMS-normed layer input (after input_layernorm) and the attention output (after o_proj, before the
    /// residual add). Stage 1 of the distillation trains each student time mix on these pairs.
    /// </summary>
    /// <param name="tokens">The new tokens.</param>
    /// <param name="state">Advanced past <paramref name="tokens"/>.</param>
    /// <param name="attentionInputs">[layers, tokens, hidden], written.</param>
    /// <param name="attentionOutputs">[layers, tokens, hidden], written.</param>
    /// <param name="logits">Logits as <paramref name="scope"/> asks; may be empty with <see cref="LogitsScope.None"/>.</param>
    /// <param name="scope">Which logits to write.</param>
    public void ForwardWithLayerTaps(ReadOnlySpan<int> tokens, ModelState state, Span<float> attentionInputs,
        Span<float> attentionOutputs, Span<float> logits = default, LogitsScope scope = LogitsScope.None)
    {
        long need = (long)Config.NumLayers * tokens.Length * Config.HiddenSize;
        if (attentionInputs.Length < need || attentionOutputs.Length < need)
            throw new ArgumentException($"attention taps need layers x tokens x hidden = {need} floats each");
        Run(tokens, state, logits, scope, attentionInputs, attentionOutputs);
    }

    private void Run(ReadOnlySpan<int> tokens, ModelState state, Span<float> logits, LogitsScope scope,
        Span<float> tapInputs, Span<float> tapOutputs)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (state is not Qwen2State s || s.Layers != Config.NumLayers || s.KeyValueSize != Config.KeyValueSize || !s.Fits(Config))
            throw new ArgumentException("state was not created by this model", nameof(state));
        if (tokens.IsEmpty) throw new ArgumentException("no tokens", nameof(tokens));
        int vocab = Config.VocabSize;
        foreach (int t in tokens)
            if ((uint)t >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {t} is outside the vocabulary [0, {vocab})");
        long logitsNeeded = scope switch
        {
            LogitsScope.None => 0,
            LogitsScope.Last => vocab,
            LogitsScope.All => (long)tokens.Length * vocab,
            _ => throw new ArgumentOutOfRangeException(nameof(scope)),
        };
        if (logits.Length < logitsNeeded) throw new ArgumentException($"logits holds {logits.Length} floats, {scope} needs {logitsNeeded}", nameof(logits));

        s.EnsureCapacity(s.Position + tokens.Length);
        int chunk = _mode == ForwardMode.Recurrent ? 1 : PrefillChunk;
        for (int start = 0; start < tokens.Length; start += chunk)
        {
            int n = Math.Min(chunk, tokens.Length - start);
            bool last = start + n == tokens.Length;
            LogitsScope chunkScope = scope == LogitsScope.All ? LogitsScope.All : scope == LogitsScope.Last && last ? LogitsScope.Last : LogitsScope.None;
            Span<float> chunkLogits = scope == LogitsScope.All ? logits.Slice(start * vocab, n * vocab) : logits;
            Chunk(tokens.Slice(start, n), s, chunkLogits, chunkScope, tapInputs, tapOutputs, tokens.Length, start);
        }
    }

    /// <summary>Runs n tokens through every layer at once; taps are [layers, tapTokens, C] and this chunk starts at tapOffset.</summary>
    private void Chunk(ReadOnlySpan<int> tokens, Qwen2State s, Span<float> logits, LogitsScope scope,
        Span<float> tapInputs, Span<float> tapOutputs, int tapTokens, int tapOffset)
    {
        Qwen2Config cfg = Config;
        int n = tokens.Length, c = cfg.HiddenSize, kv = cfg.KeyValueSize, f = cfg.IntermediateSize, hd = cfg.HeadDim;
        int start = s.Position;
        Qwen2Workspace w = s.Workspace(n, start + n, cfg);
        float eps = (float)cfg.RmsNormEps;

        Span<float> x = w.Hidden.AsSpan(0, n * c);
        for (int t = 0; t < n; t++)
            Kernels.Convert.ToFloat32(_embedding.RowPointer(tokens[t]), _embedding.Type, x.Slice(t * c, c));
        Qwen2Attention.RotaryTables(_invFreq, start, n, w.Cos, w.Sin);

        for (int l = 0; l < _layers.Length; l++)
        {
            Qwen2Layer layer = _layers[l];
            Span<float> xn = w.Normed.AsSpan(0, n * c);
            RmsNorm(x, layer.InputNorm, xn, n, c, eps);
            if (!tapInputs.IsEmpty) xn.CopyTo(tapInputs.Slice(((l * tapTokens) + tapOffset) * c, n * c));

            Project(layer.Query, layer.QueryBias, xn, w.Query.AsSpan(0, n * c), n);
            // New keys and values go straight into the cache rows for their positions.
            Span<float> keys = s.Keys[l].AsSpan(start * kv, n * kv), values = s.Values[l].AsSpan(start * kv, n * kv);
            Project(layer.Key, layer.KeyBias, xn, keys, n);
            Project(layer.Value, layer.ValueBias, xn, values, n);
            Qwen2Attention.ApplyRotary(w.Query, n, cfg.NumAttentionHeads, hd, w.Cos, w.Sin);
            Qwen2Attention.ApplyRotary(keys, n, cfg.NumKeyValueHeads, hd, w.Cos, w.Sin);
            Qwen2Attention.Forward(w.Attention, w.Query, s.Keys[l], s.Values[l], w.Scores, n, start,
                cfg.NumAttentionHeads, cfg.NumKeyValueHeads, hd, _pool);

            Span<float> attnOut = w.Normed.AsSpan(0, n * c);
            Gemm(layer.Output, w.Attention.AsSpan(0, n * c), attnOut, n);
            if (!tapOutputs.IsEmpty) attnOut.CopyTo(tapOutputs.Slice(((l * tapTokens) + tapOffset) * c, n * c));
            TensorPrimitives.Add(x, attnOut, x);

            RmsNorm(x, layer.PostNorm, xn, n, c, eps);
            Span<float> gate = w.Gate.AsSpan(0, n * f), up = w.Up.AsSpan(0, n * f);
            Gemm(layer.Gate, xn, gate, n);
            Gemm(layer.Up, xn, up, n);
            // silu(g) * u = g * sigmoid(g) * u
            TensorPrimitives.Sigmoid(gate, w.Activation.AsSpan(0, n * f));
            TensorPrimitives.Multiply(gate, w.Activation.AsSpan(0, n * f), gate);
            TensorPrimitives.Multiply(gate, up, gate);
            Span<float> down = w.Normed.AsSpan(0, n * c);
            Gemm(layer.Down, gate, down, n);
            TensorPrimitives.Add(x, down, x);
        }
        s.Position = start + n;

        if (scope == LogitsScope.None) return;
        if (scope == LogitsScope.Last)
        {
            Span<float> lastNormed = w.Normed.AsSpan(0, c);
            RmsNorm(x.Slice((n - 1) * c, c), _finalNorm, lastNormed, 1, c, eps);
            MatMul.Gemv(_lmHead, lastNormed, logits.Slice(0, cfg.VocabSize), _pool);
            NonFiniteLogitsException.ThrowIfAny(logits.Slice(0, cfg.VocabSize), cfg.VocabSize, start + n - 1, _checkpoint.Directory);
        }
        else
        {
            Span<float> normed = w.Normed.AsSpan(0, n * c);
            RmsNorm(x, _finalNorm, normed, n, c, eps);
            Gemm(_lmHead, normed, logits.Slice(0, n * cfg.VocabSize), n);
            NonFiniteLogitsException.ThrowIfAny(logits.Slice(0, n * cfg.VocabSize), cfg.VocabSize, start, _checkpoint.Directory);
        }
    }

    private void Gemm(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        if (n == 1) MatMul.Gemv(w, x, y, _pool);
        else MatMul.Gemm(w, x, y, n, _pool);
    }

    private void Project(WeightMatrix w, float[] bias, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        Gemm(w, x, y, n);
        for (int t = 0; t < n; t++)
        {
            Span<float> row = y.Slice(t * w.Rows, w.Rows);
            TensorPrimitives.Add(row, bias, row);
        }
    }

    /// <summary>Qwen2RMSNorm: y = weight * x / sqrt(mean(x^2) + eps), per row.</summary>
    private static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, int rows, int c, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            ReadOnlySpan<float> xr = x.Slice(r * c, c);
            Span<float> yr = y.Slice(r * c, c);
            float meanSquare = TensorPrimitives.SumOfSquares(xr) / c;
            float scale = 1f / MathF.Sqrt(meanSquare + eps);
            TensorPrimitives.Multiply(xr, scale, yr);
            TensorPrimitives.Multiply(yr, weight, yr);
        }
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
    }
}

/// <summary>Scratch buffers for one forward chunk, grown on demand and reused so decoding does not allocate per token.</summary>
internal sealed class Qwen2Workspace
{
    public float[] Hidden = [], Normed = [], Query = [], Attention = [], Gate = [], Up = [], Activation = [], Cos = [], Sin = [], Scores = [];
    private int _tokens, _positions;

    public void Ensure(int tokens, int positions, Qwen2Config cfg)
    {
        if (tokens > _tokens)
        {
            _tokens = tokens;
            int c = cfg.HiddenSize, f = cfg.IntermediateSize, half = cfg.HeadDim / 2;
            Hidden = new float[tokens * c];
            Normed = new float[tokens * c];
            Query = new float[tokens * c];
            Attention = new float[tokens * c];
            Gate = new float[tokens * f];
            Up = new float[tokens * f];
            Activation = new float[tokens * f];
            Cos = new float[tokens * half];
            Sin = new float[tokens * half];
        }
        if (positions > _positions)
        {
            _positions = Math.Max(positions, 2 * _positions);
            Scores = new float[cfg.NumAttentionHeads * _positions];
        }
    }
}

/// <summary>The Qwen2 model's state: a key/value cache per layer (keys stored already rotated).</summary>
internal sealed class Qwen2State : ModelState
{
    private const uint Magic = 0x5332_5751; // "QW2S"
    private const int FormatVersion = 1;
    private Qwen2Workspace? _workspace;
    private Qwen2Config? _workspaceConfig;

    public Qwen2State(int layers, int keyValueSize)
    {
        Layers = layers;
        KeyValueSize = keyValueSize;
        Keys = new float[layers][];
        Values = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            Keys[l] = [];
            Values[l] = [];
        }
    }

    public int Layers { get; }
    public int KeyValueSize { get; }

    /// <summary>Per layer [capacity, KeyValueSize]; rows below Position are valid.</summary>
    public float[][] Keys { get; }
    public float[][] Values { get; }

    public int Capacity => Keys.Length == 0 ? 0 : Keys[0].Length / KeyValueSize;

    public void EnsureCapacity(int positions)
    {
        if (positions <= Capacity) return;
        int capacity = Math.Max(positions, Math.Max(16, 2 * Capacity));
        for (int l = 0; l < Layers; l++)
        {
            Keys[l] = Grow(Keys[l], capacity * KeyValueSize, Position * KeyValueSize);
            Values[l] = Grow(Values[l], capacity * KeyValueSize, Position * KeyValueSize);
        }
    }

    private static float[] Grow(float[] old, int length, int used)
    {
        var grown = new float[length];
        old.AsSpan(0, used).CopyTo(grown);
        return grown;
    }

    /// <summary>Whether the scratch buffers (if any) were sized for a model of this width.</summary>
    public bool Fits(Qwen2Config config) => _workspaceConfig is null
        || (_workspaceConfig.HiddenSize == config.HiddenSize && _workspaceConfig.IntermediateSize == config.IntermediateSize
            && _workspaceConfig.NumAttentionHeads == config.NumAttentionHeads);

    public Qwen2Workspace Workspace(int tokens, int positions, Qwen2Config config)
    {
        if (_workspace is null || !ReferenceEquals(_workspaceConfig, config))
        {
            _workspace = new Qwen2Workspace();
            _workspaceConfig = config;
        }
        _workspace.Ensure(tokens, positions, config);
        return _workspace;
    }

    public override ModelState Clone()
    {
        var copy = new Qwen2State(Layers, KeyValueSize);
        copy.EnsureCapacity(Position);
        copy.Position = Position;
        int used = Position * KeyValueSize;
        for (int l = 0; l < Layers; l++)
        {
            Keys[l].AsSpan(0, used).CopyTo(copy.Keys[l]);
            Values[l].AsSpan(0, used).CopyTo(copy.Values[l]);
        }
        return copy;
    }

    public override void Reset() => Position = 0;

    public override void Save(Stream stream)
    {
        using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        writer.Write(Magic);
        writer.Write(FormatVersion);
        writer.Write(Layers);
        writer.Write(KeyValueSize);
        writer.Write(Position);
        int used = Position * KeyValueSize;
        for (int l = 0; l < Layers; l++)
        {
            writer.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Keys[l].AsSpan(0, used)));
            writer.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Values[l].AsSpan(0, used)));
        }
    }

    public static Qwen2State Load(Stream stream, int layers, int keyValueSize)
    {
        using var reader = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        try
        {
            if (reader.ReadUInt32() != Magic) throw new InvalidDataException("not a saved Qwen2 state");
            int version = reader.ReadInt32();
            if (version != FormatVersion) throw new InvalidDataException($"saved Qwen2 state has format version {version}, expected {FormatVersion}");
            int savedLayers = reader.ReadInt32(), savedKv = reader.ReadInt32(), position = reader.ReadInt32();
            if (savedLayers != layers || savedKv != keyValueSize)
                throw new InvalidDataException($"saved state is for {savedLayers} layers x {savedKv} key/value width, this model has {layers} x {keyValueSize}");
            if (position < 0) throw new InvalidDataException($"saved state has a negative position {position}");
            var state = new Qwen2State(layers, keyValueSize);
            state.EnsureCapacity(position);
            state.Position = position;
            int used = position * keyValueSize;
            for (int l = 0; l < layers; l++)
            {
                reader.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(state.Keys[l].AsSpan(0, used)));
                reader.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(state.Values[l].AsSpan(0, used)));
            }
            return state;
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("saved Qwen2 state is truncated", e);
        }
    }
}
