using Arwkv.IO;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.IO;

[TestFixture]
public class GgufWriterTests
{
    [Test]
    public void Metadata_Tensors_AndAlignment_RoundTrip()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        var w = new GgufWriter();
        w.AddString("general.architecture", "test");
        w.AddUInt32("u32", 4000000000);
        w.AddInt32("i32", -7);
        w.AddUInt64("u64", 1UL << 40);
        w.AddFloat32("f32", 1e-6f);
        w.AddBool("yes", true);
        w.AddBool("no", false);
        w.AddString("unicode", "ĠĊ 汉字 \"q\"");
        w.AddStringArray("strings", ["a", "", "Ġb c"]);
        w.AddInt32Array("ints", [1, -2, 3]);
        w.AddFloat32Array("floats", [0.5f, float.NegativeInfinity]);
        w.AddStringArray("empty", []);

        var rng = new Random(9);
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] v3 = Rand(3), m = Rand(5 * 7), t4 = Rand(2 * 1 * 1 * 13), h = Rand(11), b = Rand(6);
        w.AddTensor("v3", [3], DType.F32, () => v3);
        w.AddTensor("m", [5, 7], DType.F32, () => m);
        w.AddTensor("t4", [2, 1, 1, 13], DType.F32, () => t4);
        w.AddTensor("h", [11], DType.F16, () => h);
        w.AddTensor("b", [2, 3], DType.BF16, () => b);
        string path = tmp.File("t.gguf");
        w.Write(path);

        var r = new GgufReader(path);
        Assert.That(r.Alignment, Is.EqualTo(32u));
        Assert.That(r.MetadataTypes["general.alignment"], Is.EqualTo(4u), "general.alignment is a uint32");
        Assert.That(r.Metadata["general.architecture"], Is.EqualTo("test"));
        Assert.That(r.Metadata["u32"], Is.EqualTo(4000000000u));
        Assert.That(r.Metadata["i32"], Is.EqualTo(-7));
        Assert.That(r.Metadata["u64"], Is.EqualTo(1UL << 40));
        Assert.That(r.Metadata["f32"], Is.EqualTo(1e-6f));
        Assert.That(r.Metadata["yes"], Is.True);
        Assert.That(r.Metadata["no"], Is.False);
        Assert.That(r.Metadata["unicode"], Is.EqualTo("ĠĊ 汉字 \"q\""));
        Assert.That(r.Metadata["strings"], Is.EqualTo(new object[] { "a", "", "Ġb c" }));
        Assert.That(r.Metadata["ints"], Is.EqualTo(new object[] { 1, -2, 3 }));
        Assert.That(r.Metadata["floats"], Is.EqualTo(new object[] { 0.5f, float.NegativeInfinity }));
        Assert.That(r.Metadata["empty"], Is.Empty);

        Assert.That(r.DataStart % 32, Is.Zero);
        foreach (var t in r.Tensors) Assert.That(t.Offset % 32, Is.Zero, $"offset of {t.Name}");
        Assert.That(r.Tensor("m").Ne, Is.EqualTo(new long[] { 7, 5 }), "ne is the reversed row-major shape");
        Assert.That(r.Tensor("t4").Ne, Is.EqualTo(new long[] { 13, 1, 1, 2 }));
        Assert.That(r.Tensor("h").Type, Is.EqualTo(1u));
        Assert.That(r.Tensor("b").Type, Is.EqualTo(30u));
        Assert.That(r.ReadFloat32("v3"), Is.EqualTo(v3));
        Assert.That(r.ReadFloat32("m"), Is.EqualTo(m));
        Assert.That(r.ReadFloat32("t4"), Is.EqualTo(t4));
        Assert.That(r.ReadFloat32("h"), Is.EqualTo(h.Select(x => (float)(Half)x).ToArray()));
        Assert.That(r.ReadFloat32("b"), Is.EqualTo(b.Select(x => BitConverter.Int32BitsToSingle(global::Arwkv.Kernels.Convert.Float32ToBFloat16(x) << 16)).ToArray()));
        long lastEnd = r.Tensors.Max(t => (long)t.Offset + t.Ne.Aggregate(1L, (x, y) => x * y) * GgufReader.ElementSize(t.Type));
        Assert.That(new FileInfo(path).Length, Is.EqualTo(r.DataStart + (lastEnd + 31) / 32 * 32), "the file ends with the padded last tensor");
    }

    [Test]
    public void BadUse_IsAnArgumentException()
    {
        var w = new GgufWriter();
        w.AddUInt32("k", 1);
        Assert.Throws<ArgumentException>(() => w.AddString("k", "again"));
        Assert.Throws<ArgumentException>(() => w.AddUInt32("general.alignment", 64));
        w.AddTensor("t", [1], DType.F32, () => new float[1]);
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", [1], DType.F32, () => new float[1]));
        Assert.Throws<ArgumentException>(() => w.AddTensor("five", [1, 1, 1, 1, 1], DType.F32, () => new float[1]));
        Assert.Throws<ArgumentException>(() => w.AddTensor("zero", [0], DType.F32, () => Array.Empty<float>()));
    }

    [Test]
    public void DataOfTheWrongLength_FailsAndLeavesNoFile()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        var w = new GgufWriter();
        w.AddTensor("t", [2, 2], DType.F32, () => new float[3]);
        string path = tmp.File("bad.gguf");
        Assert.Throws<InvalidOperationException>(() => w.Write(path));
        Assert.That(Directory.GetFileSystemEntries(tmp.Path), Is.Empty);
    }
}

[TestFixture]
public class GgufExporterTests
{
    private static float[] Hf(Dictionary<string, float[]> t, int layer, string name) => t[$"model.layers.{layer}.self_attn.time_mixer.{name}"];

    private static float[] Transposed(float[] a, int rows, int cols)
    {
        var r = new float[a.Length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) r[j * rows + i] = a[i * cols + j];
        return r;
    }

    [Test]
    public void GatedCheckpoint_MapsEveryTensorAndKey()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        string ckpt = Path.Combine(tmp.Path, "ckpt");
        ArwkvConfig c = RandomArwkvCheckpoint.SmallConfig(gated: true);
        ArwkvLoraRanks ranks = RandomArwkvCheckpoint.SmallRanks;
        var hf = RandomArwkvCheckpoint.Create(ckpt, c, seed: 3);
        string path = tmp.File("m.gguf");
        GgufExporter.Export(ckpt, path, new GgufExportOptions { MatrixType = DType.F32, ModelName = "tiny" });
        var r = new GgufReader(path);
        int C = c.HiddenSize, V = c.VocabSize, F = c.IntermediateSize, L = c.NumLayers;

        var expectedKeys = new Dictionary<string, object>
        {
            ["general.architecture"] = "arwkv7",
            ["general.name"] = "tiny",
            ["general.file_type"] = 0u,
            ["arwkv7.context_length"] = 1048576u,
            ["arwkv7.embedding_length"] = (uint)C,
            ["arwkv7.block_count"] = (uint)L,
            ["arwkv7.feed_forward_length"] = (uint)F,
            ["arwkv7.attention.layer_norm_rms_epsilon"] = 1e-6f,
            ["arwkv7.wkv.head_size"] = 64u,
            ["arwkv7.attention.decay_lora_rank"] = (uint)ranks.Decay,
            ["arwkv7.attention.iclr_lora_rank"] = (uint)ranks.Iclr,
            ["arwkv7.attention.value_residual_mix_lora_rank"] = (uint)ranks.ValueMix,
            ["arwkv7.attention.gate_lora_rank"] = (uint)ranks.Gate,
            ["arwkv7.token_shift_count"] = 1u,
            ["arwkv7.attention.head_count"] = 0u,
            ["tokenizer.ggml.model"] = "gpt2",
            ["tokenizer.ggml.bos_token_id"] = 1u,
            ["tokenizer.ggml.eos_token_id"] = 2u,
        };
        foreach (var (key, value) in expectedKeys) Assert.That(r.Metadata[key], Is.EqualTo(value), key);

        var tokens = (object[])r.Metadata["tokenizer.ggml.tokens"];
        Assert.That(tokens, Has.Length.EqualTo(V));
        Assert.That(tokens.Distinct().Count(), Is.EqualTo(V), "tokens are unique");
        Assert.That(tokens, Does.Contain("Ċ"), "llama.cpp needs a newline token");
        Assert.That((object[])r.Metadata["tokenizer.ggml.token_type"], Has.Length.EqualTo(V));
        Assert.That(((object[])r.Metadata["tokenizer.ggml.merges"]).Cast<string>(), Has.All.Match(@"^\S+ \S+$"));

        var expectedTensors = new List<(string, long[])>
        {
            ("token_embd.weight", [C, V]), ("output_norm.weight", [C]), ("output.weight", [C, V]),
        };
        for (int i = 0; i < L; i++)
        {
            int vr = i == 0 ? ranks.Iclr : ranks.ValueMix;
            expectedTensors.AddRange(new (string, long[])[]
            {
                ($"blk.{i}.attn_norm.weight", [C]),
                ($"blk.{i}.time_mix_w0.weight", [C]), ($"blk.{i}.time_mix_w1.weight", [C, ranks.Decay]), ($"blk.{i}.time_mix_w2.weight", [ranks.Decay, C]),
                ($"blk.{i}.time_mix_a0.weight", [C]), ($"blk.{i}.time_mix_a1.weight", [C, ranks.Iclr]), ($"blk.{i}.time_mix_a2.weight", [ranks.Iclr, C]),
                ($"blk.{i}.time_mix_v0.weight", [C]), ($"blk.{i}.time_mix_v1.weight", [C, vr]), ($"blk.{i}.time_mix_v2.weight", [vr, C]),
                ($"blk.{i}.time_mix_g1.weight", [C, ranks.Gate]), ($"blk.{i}.time_mix_g2.weight", [ranks.Gate, C]),
                ($"blk.{i}.time_mix_lerp_fused.weight", [C, 1, 1, 6]),
                ($"blk.{i}.time_mix_k_k.weight", [C]), ($"blk.{i}.time_mix_k_a.weight", [C]), ($"blk.{i}.time_mix_r_k.weight", [C]),
                ($"blk.{i}.time_mix_key.weight", [C, C]), ($"blk.{i}.time_mix_value.weight", [C, C]),
                ($"blk.{i}.time_mix_receptance.weight", [C, C]), ($"blk.{i}.time_mix_output.weight", [C, C]),
                ($"blk.{i}.ffn_norm.weight", [C]), ($"blk.{i}.ffn_gate.weight", [C, F]), ($"blk.{i}.ffn_up.weight", [C, F]), ($"blk.{i}.ffn_down.weight", [F, C]),
            });
        }
        Assert.That(r.Tensors.Select(t => t.Name), Is.EquivalentTo(expectedTensors.Select(t => t.Item1)));
        foreach (var (name, ne) in expectedTensors) Assert.That(r.Tensor(name).Ne, Is.EqualTo(ne), $"ne of {name}");
        Assert.That(r.Tensors.Select(t => t.Type), Has.All.EqualTo(0u), "F32 export");

        // Values: plain copies, LoRA transposes, the fused lerp, r_k flattened, layer 0's v* = a*.
        Assert.That(r.ReadFloat32("token_embd.weight"), Is.EqualTo(hf["model.embed_tokens.weight"]));
        Assert.That(r.ReadFloat32("output.weight"), Is.EqualTo(hf["lm_head.weight"]));
        Assert.That(r.ReadFloat32("output_norm.weight"), Is.EqualTo(hf["model.norm.weight"]));
        Assert.That(r.ReadFloat32("blk.1.time_mix_w1.weight"), Is.EqualTo(Transposed(Hf(hf, 1, "w1"), C, ranks.Decay)));
        Assert.That(r.ReadFloat32("blk.2.time_mix_w2.weight"), Is.EqualTo(Transposed(Hf(hf, 2, "w2"), ranks.Decay, C)));
        Assert.That(r.ReadFloat32("blk.1.time_mix_g1.weight"), Is.EqualTo(Transposed(Hf(hf, 1, "g1"), C, ranks.Gate)));
        Assert.That(r.ReadFloat32("blk.2.time_mix_v2.weight"), Is.EqualTo(Transposed(Hf(hf, 2, "v2"), ranks.ValueMix, C)));
        Assert.That(r.ReadFloat32("blk.2.time_mix_v0.weight"), Is.EqualTo(Hf(hf, 2, "v0")));
        Assert.That(r.ReadFloat32("blk.0.time_mix_v0.weight"), Is.EqualTo(Hf(hf, 0, "a0")));
        Assert.That(r.ReadFloat32("blk.0.time_mix_v1.weight"), Is.EqualTo(Transposed(Hf(hf, 0, "a1"), C, ranks.Iclr)));
        Assert.That(r.ReadFloat32("blk.0.time_mix_v2.weight"), Is.EqualTo(Transposed(Hf(hf, 0, "a2"), ranks.Iclr, C)));
        Assert.That(r.ReadFloat32("blk.1.time_mix_r_k.weight"), Is.EqualTo(Hf(hf, 1, "r_k")));
        Assert.That(r.ReadFloat32("blk.1.time_mix_key.weight"), Is.EqualTo(Hf(hf, 1, "key.weight")));
        Assert.That(r.ReadFloat32("blk.0.ffn_down.weight"), Is.EqualTo(hf["model.layers.0.mlp.down_proj.weight"]));
        Assert.That(r.ReadFloat32("blk.0.ffn_norm.weight"), Is.EqualTo(hf["model.layers.0.post_attention_layernorm.weight"]));
        float[] fused = r.ReadFloat32("blk.2.time_mix_lerp_fused.weight");
        string[] order = ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"];
        for (int k = 0; k < 6; k++) Assert.That(fused.Skip(k * C).Take(C), Is.EqualTo(Hf(hf, 2, order[k])), order[k]);
    }

    [Test]
    public void GateFree_TiedBf16Checkpoint()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        string ckpt = Path.Combine(tmp.Path, "ckpt");
        ArwkvConfig c = RandomArwkvCheckpoint.SmallConfig(gated: false, tied: true);
        var hf = RandomArwkvCheckpoint.Create(ckpt, c, seed: 4, type: DType.BF16, shards: 3);
        string path = tmp.File("m.gguf");
        GgufExporter.Export(ckpt, path);
        var r = new GgufReader(path);
        Assert.That(r.Metadata["arwkv7.attention.gate_lora_rank"], Is.EqualTo(0u));
        Assert.That(r.Metadata["general.file_type"], Is.EqualTo(32u), "MOSTLY_BF16");
        Assert.That(r.Tensors.Select(t => t.Name), Has.None.Contains("time_mix_g"));
        Assert.That(r.Tensor("blk.0.time_mix_lerp_fused.weight").Ne, Is.EqualTo(new long[] { c.HiddenSize, 1, 1, 5 }));
        Assert.That(r.Tensor("blk.0.time_mix_key.weight").Type, Is.EqualTo(30u), "matrices keep BF16");
        Assert.That(r.Tensor("blk.0.time_mix_w1.weight").Type, Is.EqualTo(30u));
        Assert.That(r.Tensor("blk.0.time_mix_w0.weight").Type, Is.EqualTo(0u), "vectors are F32");
        Assert.That(r.Tensor("blk.0.time_mix_lerp_fused.weight").Type, Is.EqualTo(0u));
        float[] embd = r.ReadFloat32("token_embd.weight");
        Assert.That(r.ReadFloat32("output.weight"), Is.EqualTo(embd), "a tied model's output is the embedding");
        float[] expected = hf["model.embed_tokens.weight"].Select(x => BitConverter.Int32BitsToSingle(global::Arwkv.Kernels.Convert.Float32ToBFloat16(x) << 16)).ToArray();
        Assert.That(embd, Is.EqualTo(expected));
    }

    [Test]
    public void MatrixTypeOverride_NarrowsMatricesOnly()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        string ckpt = Path.Combine(tmp.Path, "ckpt");
        RandomArwkvCheckpoint.Create(ckpt, seed: 5);
        string path = tmp.File("m.gguf");
        GgufExporter.Export(ckpt, path, new GgufExportOptions { MatrixType = DType.F16 });
        var r = new GgufReader(path);
        Assert.That(r.Metadata["general.file_type"], Is.EqualTo(1u));
        foreach (var t in r.Tensors)
            Assert.That(t.Type, Is.EqualTo(t.Ne.Count(d => d > 1) >= 2 && !t.Name.Contains("lerp_fused") ? 1u : 0u), t.Name);
    }

    [Test]
    public void TokenizerJson_IsExported()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        string ckpt = Path.Combine(tmp.Path, "ckpt");
        RandomArwkvCheckpoint.Create(ckpt, seed: 6);
        File.WriteAllText(Path.Combine(ckpt, "tokenizer.json"), """
            {"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"Ċ":3},"merges":["a b",["ab","b"]]},
             "added_tokens":[{"id":10,"content":"<|endoftext|>","special":true},{"id":11,"content":"<tool>","special":false}]}
            """);
        File.WriteAllText(Path.Combine(ckpt, "tokenizer_config.json"), """{"chat_template":"{{ messages }}"}""");
        string path = tmp.File("m.gguf");
        GgufExporter.Export(ckpt, path);
        var r = new GgufReader(path);
        var tokens = (object[])r.Metadata["tokenizer.ggml.tokens"];
        var types = (object[])r.Metadata["tokenizer.ggml.token_type"];
        Assert.That(tokens.Take(4), Is.EqualTo(new object[] { "a", "b", "ab", "Ċ" }));
        Assert.That(tokens[10], Is.EqualTo("<|endoftext|>"));
        Assert.That(types[10], Is.EqualTo(3), "special added token is CONTROL");
        Assert.That(types[11], Is.EqualTo(4), "other added token is USER_DEFINED");
        Assert.That(tokens[5], Is.EqualTo("[PAD5]"));
        Assert.That(types[5], Is.EqualTo(5), "padding is UNUSED");
        Assert.That(r.Metadata["tokenizer.ggml.merges"], Is.EqualTo(new object[] { "a b", "ab b" }));
        Assert.That(r.Metadata["tokenizer.ggml.pre"], Is.EqualTo("qwen2"));
        Assert.That(r.Metadata["tokenizer.chat_template"], Is.EqualTo("{{ messages }}"));
    }

    [Test]
    public void MissingTensor_IsACheckpointException()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        string ckpt = Path.Combine(tmp.Path, "ckpt");
        ArwkvConfig c = RandomArwkvCheckpoint.SmallConfig();
        var tensors = RandomArwkvCheckpoint.RandomTensors(c, RandomArwkvCheckpoint.SmallRanks, 1);
        ArwkvCheckpointLayout.WriteConfig(ckpt, c);
        SafeTensorsWriter.Write(Path.Combine(ckpt, "model.safetensors"), ArwkvCheckpointLayout.Tensors(c, RandomArwkvCheckpoint.SmallRanks)
            .Where(t => t.Name != "model.layers.1.self_attn.time_mixer.k_a")
            .Select(t => new TensorToWrite(t.Name, DType.F32, t.Shape, tensors[t.Name])));
        var e = Assert.Throws<CheckpointException>(() => GgufExporter.Export(ckpt, tmp.File("m.gguf")))!;
        Assert.That(e.Message, Does.Contain(ckpt).And.Contain("missing tensor 'model.layers.1.self_attn.time_mixer.k_a'"));
        Assert.That(File.Exists(tmp.File("m.gguf")), Is.False);
    }

    [Test]
    public void WrongShape_IsACheckpointException()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        string ckpt = Path.Combine(tmp.Path, "ckpt");
        ArwkvConfig c = RandomArwkvCheckpoint.SmallConfig();
        var tensors = RandomArwkvCheckpoint.RandomTensors(c, RandomArwkvCheckpoint.SmallRanks, 1);
        var layout = ArwkvCheckpointLayout.Tensors(c, RandomArwkvCheckpoint.SmallRanks).ToList();
        ArwkvCheckpointLayout.WriteConfig(ckpt, c);
        SafeTensorsWriter.Write(Path.Combine(ckpt, "model.safetensors"), layout.Select(t =>
            new TensorToWrite(t.Name, DType.F32, t.Name == "model.layers.2.mlp.up_proj.weight" ? [t.Shape[1], t.Shape[0]] : t.Shape, tensors[t.Name])));
        var e = Assert.Throws<CheckpointException>(() => GgufExporter.Export(ckpt, tmp.File("m.gguf")))!;
        Assert.That(e.Message, Does.Contain("model.safetensors").And.Contain("model.layers.2.mlp.up_proj.weight").And.Contain("expected [320, 128]"));
    }

    [Test]
    public void NoSafetensors_IsACheckpointException()
    {
        using var tmp = new TempDirectory("arwkv-gguf");
        ArwkvCheckpointLayout.WriteConfig(tmp.Path, RandomArwkvCheckpoint.SmallConfig());
        var e = Assert.Throws<CheckpointException>(() => GgufExporter.Export(tmp.Path, tmp.File("m.gguf")))!;
        Assert.That(e.Message, Does.Contain("no .safetensors"));
    }
}
