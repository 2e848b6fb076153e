using Arwkv.IO;
using Arwkv.Kernels;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.IO;

/// <summary>The exporter's Q8_0 option: big matrices in ggml blocks, LoRAs and vectors unquantized as llama.cpp keeps them.</summary>
[TestFixture]
public class GgufQ8ExportTests
{
    [Test]
    public unsafe void Q8_0Export_QuantizesTheMatrices_KeepsLorasAndVectors()
    {
        using var tmp = new TempDirectory("arwkv-gguf-q8");
        string ckpt = Path.Combine(tmp.Path, "ckpt");
        ArwkvConfig c = RandomArwkvCheckpoint.SmallConfig(gated: true);
        var hf = RandomArwkvCheckpoint.Create(ckpt, c, seed: 5, type: DType.F32);
        string path = tmp.File("m.gguf");
        GgufExporter.Export(ckpt, path, new GgufExportOptions { MatrixType = DType.Q8_0, ModelName = "tiny" });

        using var file = GgufFile.Open(path);
        Assert.That(file.Metadata["general.file_type"], Is.EqualTo(7u), "LLAMA_FTYPE_MOSTLY_Q8_0");
        foreach (string name in new[] { "token_embd.weight", "output.weight", "blk.0.ffn_gate.weight", "blk.2.time_mix_key.weight" })
            Assert.That(file.GetInfo(name).Type, Is.EqualTo(DType.Q8_0), name);
        foreach (string name in new[] { "blk.0.time_mix_w1.weight", "blk.1.time_mix_g2.weight", "blk.1.attn_norm.weight", "blk.1.time_mix_lerp_fused.weight" })
            Assert.That(file.GetInfo(name).Type, Is.EqualTo(DType.F32), name);

        GgufTensorInfo up = file.GetInfo("blk.1.ffn_up.weight");
        Assert.That(up.Shape, Is.EqualTo(new long[] { c.IntermediateSize, c.HiddenSize }));
        Assert.That(up.ByteLength, Is.EqualTo((long)c.IntermediateSize * c.HiddenSize / 32 * 34));
        var expected = new byte[up.ByteLength];
        GgmlQuants.QuantizeQ8_0(hf["model.layers.1.mlp.up_proj.weight"], expected);
        var actual = new ReadOnlySpan<byte>((void*)file.GetPointer(up), (int)up.ByteLength);
        Assert.That(actual.SequenceEqual(expected), "blk.1.ffn_up bytes are ggml's Q8_0 blocks of the checkpoint's values");
    }
}
