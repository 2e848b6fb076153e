using System.Text.Json;

namespace Arwkv.IO;

/// <summary>Options of <see cref="GgufExporter.Export"/>.</summary>
public sealed record GgufExportOptions
{
    /// <summary>
    /// Storage type of the matrices (projections, LoRA factors, embedding, lm_head). Null keeps each matrix's type
    /// from the checkpoint. Vectors (norms, token-shift mixes, biases of the LoRAs) are always float32, as llama.cpp
    /// expects them.
    /// </summary>
    public DType? MatrixType { get; init; }

    /// <summary>The <c>general.name</c> written to the file; defaults to the checkpoint directory's name.</summary>
    public string? ModelName { get; init; }
}

/// <summary>
/// Converts an ARWKV checkpoint in the Hugging Face layout (config.json and safetensors) into a GGUF file of
/// llama.cpp's <c>arwkv7</c> architecture (ARWKV.md section 4), so llama.cpp and the tools built on it can run it.
/// </summary>
public static class GgufExporter
{
    /// <summary>The GGUF architecture name.</summary>
    public const string Architecture = "arwkv7";

    /// <summary>
    /// Writes <paramref name="outputPath"/> (atomically) from the checkpoint in <paramref name="checkpointDirectory"/>.
    /// The tokenizer comes from the directory's tokenizer.json when there is one; otherwise a synthetic byte-level
    /// vocabulary of the model's size is written, enough for llama.cpp to load the file and run token ids.
    /// </summary>
    /// <exception cref="CheckpointException">The checkpoint is incomplete, inconsistent or unreadable.</exception>
    public static void Export(string checkpointDirectory, string outputPath, GgufExportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(checkpointDirectory);
        ArgumentNullException.ThrowIfNull(outputPath);
        options ??= new GgufExportOptions();
        // Checked before the conversion's work, so that `convert DIR -o DIR/model.safetensors` (or -o /dev/null) fails
        // at once and the checkpoint is never replaced by its own conversion.
        IReadOnlyList<string> inputs = SafeTensorsCheckpoint.InputFiles(checkpointDirectory);
        AtomicFile.ResolveTarget(outputPath, inputs);
        ArwkvConfig config = ArwkvConfig.Load(checkpointDirectory);
        using var checkpoint = CheckpointTensors.Open(checkpointDirectory);
        ArwkvLoraRanks ranks = ReadRanks(checkpoint, config);
        checkpoint.CheckLayout(config, ranks);

        var writer = new GgufWriter();
        WriteMetadata(writer, config, ranks, options, checkpointDirectory, checkpoint);
        GgufTokenizer.Write(writer, checkpointDirectory, config);
        AddTensors(writer, checkpoint, config, ranks, options);
        writer.Write(outputPath, inputs);
    }

    private static ArwkvLoraRanks ReadRanks(CheckpointTensors checkpoint, ArwkvConfig config)
    {
        int Rank(int layer, string name) => (int)checkpoint.Info(ArwkvCheckpointLayout.TimeMixer(layer, name)).Shape[^1];
        // Layer 0's v1 is unused and may be a dummy; a later layer holds the real value-mix rank.
        int valueLayer = config.NumLayers > 1 ? 1 : 0;
        return new ArwkvLoraRanks(
            Decay: Rank(0, "w1"),
            Iclr: Rank(0, "a1"),
            ValueMix: Rank(valueLayer, "v1"),
            Gate: config.WkvHasGate ? Rank(0, "g1") : 0);
    }

    private static void WriteMetadata(GgufWriter w, ArwkvConfig c, ArwkvLoraRanks ranks, GgufExportOptions options,
        string directory, CheckpointTensors checkpoint)
    {
        string a = Architecture;
        w.AddString("general.architecture", a);
        w.AddString("general.name", options.ModelName ?? new DirectoryInfo(Path.GetFullPath(directory)).Name);
        DType matrixType = options.MatrixType ?? checkpoint.Info(ArwkvCheckpointLayout.Embedding).Type;
        // llama_ftype: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7, MOSTLY_BF16 = 32.
        w.AddUInt32("general.file_type", matrixType switch { DType.F16 => 1u, DType.BF16 => 32u, DType.Q8_0 => 7u, DType.Q4_0 => 2u, _ => 0u });
        // The state is constant-size, so the context is not limited by the model; llama.cpp wants some number.
        w.AddUInt32($"{a}.context_length", 1048576);
        w.AddUInt32($"{a}.embedding_length", (uint)c.HiddenSize);
        w.AddUInt32($"{a}.block_count", (uint)c.NumLayers);
        w.AddUInt32($"{a}.feed_forward_length", (uint)c.IntermediateSize);
        w.AddUInt32($"{a}.vocab_size", (uint)c.VocabSize);
        w.AddFloat32($"{a}.attention.layer_norm_rms_epsilon", (float)c.RmsNormEps);
        w.AddUInt32($"{a}.wkv.head_size", (uint)c.HeadSize);
        w.AddUInt32($"{a}.attention.decay_lora_rank", (uint)ranks.Decay);
        w.AddUInt32($"{a}.attention.iclr_lora_rank", (uint)ranks.Iclr);
        w.AddUInt32($"{a}.attention.value_residual_mix_lora_rank", (uint)ranks.ValueMix);
        w.AddUInt32($"{a}.attention.gate_lora_rank", (uint)(c.WkvHasGate ? ranks.Gate : 0));
        w.AddUInt32($"{a}.token_shift_count", 1);
        // Required by llama.cpp's loader, unused by the architecture.
        w.AddUInt32($"{a}.attention.head_count", 0);
    }

    private static void AddTensors(GgufWriter w, CheckpointTensors ckpt, ArwkvConfig c, ArwkvLoraRanks ranks, GgufExportOptions options)
    {
        long C = c.HiddenSize;
        DType MatrixType(string hfName) => options.MatrixType ?? ckpt.Info(hfName).Type;
        void Matrix(string gguf, string hf) =>
            w.AddTensor(gguf, ckpt.Info(hf).Shape, MatrixType(hf), () => ckpt.Read(hf));
        void Vector(string gguf, string hf) =>
            w.AddTensor(gguf, [ckpt.Info(hf).ElementCount], DType.F32, () => ckpt.Read(hf));
        // llama.cpp multiplies x by the LoRA factors as ggml matrices of ne {in, out}, i.e. row-major [out, in]:
        // the transpose of the Hugging Face [in, out] storage.
        // llama.cpp's quantizer keeps the small LoRA factors unquantized; so does this exporter.
        DType LoraType(string hfName) => MatrixType(hfName) is var t && t.IsQuantized() ? ckpt.Info(hfName).Type : t;
        void Lora(string gguf, string hf)
        {
            long[] shape = ckpt.Info(hf).Shape;
            w.AddTensor(gguf, [shape[1], shape[0]], LoraType(hf), () => Transpose(ckpt.Read(hf), (int)shape[0], (int)shape[1]));
        }

        Matrix("token_embd.weight", ArwkvCheckpointLayout.Embedding);
        Vector("output_norm.weight", ArwkvCheckpointLayout.FinalNorm);
        // llama.cpp's arwkv7 always needs an output matrix: a tied model gets a copy of the embedding.
        Matrix("output.weight", c.TieWordEmbeddings ? ArwkvCheckpointLayout.Embedding : ArwkvCheckpointLayout.LmHead);

        string[] lerps = c.WkvHasGate ? ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"] : ["x_r", "x_w", "x_k", "x_v", "x_a"];
        for (int i = 0; i < c.NumLayers; i++)
        {
            int layer = i;
            string Tm(string name) => ArwkvCheckpointLayout.TimeMixer(layer, name);
            string L(string name) => ArwkvCheckpointLayout.Layer(layer, name);
            string B(string name) => $"blk.{layer}.{name}.weight";

            Vector(B("attn_norm"), L("input_layernorm.weight"));
            Vector(B("time_mix_w0"), Tm("w0"));
            Lora(B("time_mix_w1"), Tm("w1"));
            Lora(B("time_mix_w2"), Tm("w2"));
            Vector(B("time_mix_a0"), Tm("a0"));
            Lora(B("time_mix_a1"), Tm("a1"));
            Lora(B("time_mix_a2"), Tm("a2"));
            // Layer 0 takes v_first as is and never reads v0/v1/v2, but llama.cpp wants tensors of the iclr
            // rank there; copies of a0/a1/a2 are what its converter writes.
            string v = layer == 0 ? "a" : "v";
            Vector(B("time_mix_v0"), Tm(v + "0"));
            Lora(B("time_mix_v1"), Tm(v + "1"));
            Lora(B("time_mix_v2"), Tm(v + "2"));
            if (c.WkvHasGate)
            {
                Lora(B("time_mix_g1"), Tm("g1"));
                Lora(B("time_mix_g2"), Tm("g2"));
            }
            // x_r, x_w, x_k, x_v, x_a(, x_g) stacked: row-major [n, 1, 1, C], ggml ne {C, 1, 1, n}.
            w.AddTensor(B("time_mix_lerp_fused"), [lerps.Length, 1, 1, C], DType.F32, () =>
            {
                var fused = new float[lerps.Length * C];
                for (int k = 0; k < lerps.Length; k++) ckpt.Read(Tm(lerps[k])).CopyTo(fused.AsSpan((int)(k * C)));
                return fused;
            });
            Vector(B("time_mix_k_k"), Tm("k_k"));
            Vector(B("time_mix_k_a"), Tm("k_a"));
            Vector(B("time_mix_r_k"), Tm("r_k"));
            Matrix(B("time_mix_key"), Tm("key.weight"));
            Matrix(B("time_mix_value"), Tm("value.weight"));
            Matrix(B("time_mix_receptance"), Tm("receptance.weight"));
            Matrix(B("time_mix_output"), Tm("output.weight"));
            Vector(B("ffn_norm"), L("post_attention_layernorm.weight"));
            Matrix(B("ffn_gate"), L("mlp.gate_proj.weight"));
            Matrix(B("ffn_up"), L("mlp.up_proj.weight"));
            Matrix(B("ffn_down"), L("mlp.down_proj.weight"));
        }
    }

    private static float[] Transpose(float[] source, int rows, int cols)
    {
        var result = new float[source.Length];
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++)
                result[(long)k * rows + r] = source[(long)r * cols + k];
        return result;
    }

    /// <summary>Every tensor of the checkpoint's safetensors files, by name.</summary>
    private sealed class CheckpointTensors : IDisposable
    {
        private readonly List<SafeTensorsFile> _files = [];
        private readonly Dictionary<string, (SafeTensorsFile File, TensorInfo Info)> _tensors = new(StringComparer.Ordinal);
        private readonly string _directory;

        private CheckpointTensors(string directory) => _directory = directory;

        public static CheckpointTensors Open(string directory)
        {
            string[] paths = Directory.Exists(directory) ? Directory.GetFiles(directory, "*.safetensors") : [];
            Array.Sort(paths, StringComparer.Ordinal);
            if (paths.Length == 0) throw new CheckpointException(directory, "no .safetensors files in the checkpoint directory");
            var result = new CheckpointTensors(directory);
            try
            {
                foreach (string path in paths)
                {
                    SafeTensorsFile file = SafeTensorsFile.Open(path);
                    result._files.Add(file);
                    foreach (TensorInfo info in file.Tensors.Values)
                        if (!result._tensors.TryAdd(info.Name, (file, info)))
                            throw new CheckpointException(path, $"tensor '{info.Name}' is also in {result._tensors[info.Name].File.Path}");
                }
                return result;
            }
            catch
            {
                result.Dispose();
                throw;
            }
        }

        public TensorInfo Info(string name) =>
            _tensors.TryGetValue(name, out var t) ? t.Info : throw new CheckpointException(_directory, $"missing tensor '{name}'");

        public float[] Read(string name)
        {
            var (file, info) = _tensors.TryGetValue(name, out var t) ? t : throw new CheckpointException(_directory, $"missing tensor '{name}'");
            return file.ReadFloat32(info);
        }

        /// <summary>Checks every tensor the architecture needs is present with the shape the config implies.</summary>
        public void CheckLayout(ArwkvConfig config, ArwkvLoraRanks ranks)
        {
            foreach (var (name, shape) in ArwkvCheckpointLayout.Tensors(config, ranks))
            {
                // Layer 0's v1/v2 are never read (copies of a1/a2 are exported), so their rank may differ.
                if (name.StartsWith("model.layers.0.self_attn.time_mixer.v", StringComparison.Ordinal)) continue;
                TensorInfo info = Info(name);
                if (!info.Shape.SequenceEqual(shape))
                {
                    var (file, _) = _tensors[name];
                    throw new CheckpointException(file.Path, $"tensor '{name}' has shape {info.ShapeText}, expected [{string.Join(", ", shape)}]");
                }
            }
        }

        public void Dispose()
        {
            foreach (SafeTensorsFile f in _files) f.Dispose();
        }
    }
}

/// <summary>The tokenizer metadata of an exported GGUF: llama.cpp's byte-level BPE ("gpt2") vocabulary.</summary>
internal static class GgufTokenizer
{
    // llama_token_type values.
    private const int Normal = 1, Control = 3, UserDefined = 4, Unused = 5;

    public static void Write(GgufWriter w, string directory, ArwkvConfig config) =>
        Write(w, directory, config.VocabSize, config.BosTokenId, config.EosTokenIds);

    public static void Write(GgufWriter w, string directory, int vocabSize, int? bosTokenId, IReadOnlyList<int> eosTokenIds)
    {
        string tokenizerJson = Path.Combine(directory, "tokenizer.json");
        var (tokens, types, merges, pre) = File.Exists(tokenizerJson)
            ? FromTokenizerJson(tokenizerJson, vocabSize)
            : Synthetic(vocabSize, bosTokenId, eosTokenIds);

        w.AddString("tokenizer.ggml.model", "gpt2");
        w.AddString("tokenizer.ggml.pre", pre);
        w.AddStringArray("tokenizer.ggml.tokens", tokens);
        w.AddInt32Array("tokenizer.ggml.token_type", types);
        w.AddStringArray("tokenizer.ggml.merges", merges);
        if (bosTokenId is int bos) w.AddUInt32("tokenizer.ggml.bos_token_id", (uint)bos);
        if (eosTokenIds.Count > 0) w.AddUInt32("tokenizer.ggml.eos_token_id", (uint)eosTokenIds[0]);
        // Qwen2.5 does not prepend a BOS token.
        w.AddBool("tokenizer.ggml.add_bos_token", false);

        string tokenizerConfig = Path.Combine(directory, "tokenizer_config.json");
        if (File.Exists(tokenizerConfig))
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerConfig));
                if (doc.RootElement.ValueKind == JsonValueKind.Object
                    && doc.RootElement.TryGetProperty("chat_template", out JsonElement t) && t.ValueKind == JsonValueKind.String)
                    w.AddString("tokenizer.chat_template", t.GetString()!);
            }
            catch (JsonException e)
            {
                throw new CheckpointException(tokenizerConfig, "not valid JSON: " + e.Message, e);
            }
        }
    }

    /// <summary>
    /// A byte-level vocabulary for checkpoints without a tokenizer (random test models): the 256 byte symbols,
    /// then two-symbol tokens with the merges that make them, then unused padding; BOS/EOS become control tokens.
    /// llama.cpp needs a newline token, so the model needs at least 256 tokens.
    /// </summary>
    private static (string[], int[], string[], string) Synthetic(int V, int? bosTokenId, IReadOnlyList<int> eosTokenIds)
    {
        if (V < 256)
            throw new CheckpointException("config.json", $"vocab_size {V} is below 256: a checkpoint without tokenizer.json needs room for the 256 byte tokens");
        string[] byteSymbols = ByteSymbols();
        var tokens = new string[V];
        var types = new int[V];
        var merges = new List<string>();
        for (int i = 0; i < 256; i++) { tokens[i] = byteSymbols[i]; types[i] = Normal; }
        const string letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for (int i = 256; i < V; i++)
        {
            int pair = i - 256;
            if (pair < letters.Length * letters.Length)
            {
                string first = letters[pair / letters.Length].ToString(), second = letters[pair % letters.Length].ToString();
                tokens[i] = first + second;
                merges.Add(first + " " + second);
                types[i] = Normal;
            }
            else
            {
                tokens[i] = $"[PAD{i}]";
                types[i] = Unused;
            }
        }
        var specials = new List<int>();
        if (bosTokenId is int bos) specials.Add(bos);
        specials.AddRange(eosTokenIds);
        foreach (int id in specials.Distinct())
        {
            if (id < 0 || id >= V) continue;
            // A byte token turned into a control token would leave its byte untokenizable; newline must survive.
            tokens[id] = $"<|special_{id}|>";
            types[id] = Control;
        }
        return (tokens, types, merges.ToArray(), "default");
    }

    private static (string[], int[], string[], string) FromTokenizerJson(string path, int vocabSize)
    {
        var tokens = new string?[vocabSize];
        var types = new int[vocabSize];
        var merges = new List<string>();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            JsonElement model = doc.RootElement.GetProperty("model");
            if (model.TryGetProperty("type", out JsonElement type) && type.GetString() != "BPE")
                throw new CheckpointException(path, $"tokenizer model type '{type.GetString()}' is not BPE");
            foreach (JsonProperty p in model.GetProperty("vocab").EnumerateObject())
            {
                int id = p.Value.GetInt32();
                if (id < 0 || id >= vocabSize) throw new CheckpointException(path, $"token '{p.Name}' has id {id}, outside the model's vocab_size {vocabSize}");
                tokens[id] = p.Name;
                types[id] = Normal;
            }
            foreach (JsonElement m in model.GetProperty("merges").EnumerateArray())
                merges.Add(m.ValueKind == JsonValueKind.Array ? m[0].GetString() + " " + m[1].GetString() : m.GetString()!);
            if (doc.RootElement.TryGetProperty("added_tokens", out JsonElement added))
                foreach (JsonElement t in added.EnumerateArray())
                {
                    int id = t.GetProperty("id").GetInt32();
                    if (id < 0 || id >= vocabSize) throw new CheckpointException(path, $"added token id {id} is outside the model's vocab_size {vocabSize}");
                    tokens[id] = t.GetProperty("content").GetString();
                    types[id] = t.TryGetProperty("special", out JsonElement s) && s.GetBoolean() ? Control : UserDefined;
                }
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new CheckpointException(path, "not a Hugging Face BPE tokenizer.json: " + e.Message, e);
        }
        // The embedding usually has more rows than the tokenizer has tokens; the rest are padding.
        var result = new string[vocabSize];
        for (int i = 0; i < vocabSize; i++)
        {
            if (tokens[i] is string s) result[i] = s;
            else { result[i] = $"[PAD{i}]"; types[i] = Unused; }
        }
        return (result, types, merges.ToArray(), "qwen2");
    }

    /// <summary>GPT-2's byte-to-symbol table: printable bytes stand for themselves, the others get code points from 256 up.</summary>
    internal static string[] ByteSymbols()
    {
        var symbols = new string[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            symbols[b] = printable ? ((char)b).ToString() : char.ConvertFromUtf32(next++);
        }
        return symbols;
    }
}
