namespace Arwkv.IO;

/// <summary>
/// Converts a Qwen2 (teacher) checkpoint in the Hugging Face layout into a float32 GGUF file of llama.cpp's
/// <c>qwen2</c> architecture, so an independent implementation can check <see cref="Qwen2Model"/>.
/// </summary>
internal static class Qwen2GgufExporter
{
    /// <summary>The GGUF architecture name.</summary>
    public const string Architecture = "qwen2";

    /// <summary>
    /// Writes <paramref name="outputPath"/> from the checkpoint in <paramref name="checkpointDirectory"/>, every tensor
    /// as float32. The tokenizer metadata is the same as <see cref="GgufExporter"/> writes (tokenizer.json, or a
    /// synthetic byte-level vocabulary for random models).
    /// </summary>
    /// <exception cref="CheckpointException">The checkpoint is incomplete, inconsistent or unreadable.</exception>
    public static void Export(string checkpointDirectory, string outputPath)
    {
        ArgumentNullException.ThrowIfNull(checkpointDirectory);
        ArgumentNullException.ThrowIfNull(outputPath);
        IReadOnlyList<string> inputs = SafeTensorsCheckpoint.InputFiles(checkpointDirectory);
        AtomicFile.ResolveTarget(outputPath, inputs);
        Qwen2Config c = Qwen2Config.Load(checkpointDirectory);
        using SafeTensorsCheckpoint ckpt = SafeTensorsCheckpoint.Open(checkpointDirectory);

        var w = new GgufWriter();
        string a = Architecture;
        w.AddString("general.architecture", a);
        w.AddString("general.name", new DirectoryInfo(Path.GetFullPath(checkpointDirectory)).Name);
        w.AddUInt32("general.file_type", 0); // LLAMA_FTYPE_ALL_F32
        w.AddUInt32($"{a}.context_length", (uint)c.MaxPositionEmbeddings);
        w.AddUInt32($"{a}.embedding_length", (uint)c.HiddenSize);
        w.AddUInt32($"{a}.block_count", (uint)c.NumLayers);
        w.AddUInt32($"{a}.feed_forward_length", (uint)c.IntermediateSize);
        w.AddUInt32($"{a}.attention.head_count", (uint)c.NumAttentionHeads);
        w.AddUInt32($"{a}.attention.head_count_kv", (uint)c.NumKeyValueHeads);
        w.AddFloat32($"{a}.rope.freq_base", (float)c.RopeTheta);
        w.AddFloat32($"{a}.attention.layer_norm_rms_epsilon", (float)c.RmsNormEps);
        GgufTokenizer.Write(w, checkpointDirectory, c.VocabSize, c.BosTokenId, c.EosTokenIds);

        long C = c.HiddenSize, KV = c.KeyValueSize, F = c.IntermediateSize, V = c.VocabSize;
        // Row-major [rows, cols] shapes; the writer stores them as ggml ne {cols, rows}, which is how llama.cpp
        // declares its matrices ({n_in, n_out}) for the Hugging Face [out, in] nn.Linear weights.
        void Tensor(string gguf, string hf, params long[] shape)
        {
            if (!ckpt.Contains(hf)) throw new CheckpointException(checkpointDirectory, $"missing tensor '{hf}'");
            TensorInfo info = ckpt.GetInfo(hf);
            if (!info.Shape.SequenceEqual(shape))
                throw new CheckpointException(ckpt.FileOf(hf).Path, $"tensor '{hf}' has shape {info.ShapeText}, expected [{string.Join(", ", shape)}]");
            w.AddTensor(gguf, shape, DType.F32, () => ckpt.ReadFloat32(hf));
        }

        Tensor("token_embd.weight", "model.embed_tokens.weight", V, C);
        Tensor("output_norm.weight", "model.norm.weight", C);
        // A tied model gets a copy of the embedding (llama.cpp would also fall back to token_embd by itself).
        Tensor("output.weight", c.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight", V, C);
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}.", b = $"blk.{i}.";
            Tensor(b + "attn_norm.weight", p + "input_layernorm.weight", C);
            Tensor(b + "attn_q.weight", p + "self_attn.q_proj.weight", C, C);
            Tensor(b + "attn_q.bias", p + "self_attn.q_proj.bias", C);
            Tensor(b + "attn_k.weight", p + "self_attn.k_proj.weight", KV, C);
            Tensor(b + "attn_k.bias", p + "self_attn.k_proj.bias", KV);
            Tensor(b + "attn_v.weight", p + "self_attn.v_proj.weight", KV, C);
            Tensor(b + "attn_v.bias", p + "self_attn.v_proj.bias", KV);
            Tensor(b + "attn_output.weight", p + "self_attn.o_proj.weight", C, C);
            Tensor(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", C);
            Tensor(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", F, C);
            Tensor(b + "ffn_up.weight", p + "mlp.up_proj.weight", F, C);
            Tensor(b + "ffn_down.weight", p + "mlp.down_proj.weight", C, F);
        }
        w.Write(outputPath, inputs);
    }
}
