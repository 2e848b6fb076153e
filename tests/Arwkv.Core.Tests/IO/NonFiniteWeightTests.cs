using Arwkv.IO;
using Arwkv.Kernels;
using Arwkv.Tests.TestModels;
using Arwkv.Tests.Teacher;

namespace Arwkv.Tests.IO;

/// <summary>
/// A NaN or infinity in any memory-mapped matrix fails the load with the file, tensor and element, for F32, F16 and
/// BF16, in ARWKV and Qwen2 checkpoints: the matrices are used where they are mapped, so nothing else would see it
/// before the logits turn to NaN.
/// </summary>
public unsafe class NonFiniteWeightTests
{
    static readonly float[] Poisons = [float.NaN, float.PositiveInfinity, float.NegativeInfinity];

    [Test]
    public void Scan_FindsTheFirstNonFiniteAtEveryPositionAndLength([Values(DType.F32, DType.F16, DType.BF16)] DType type)
    {
        // Lengths around the vector widths (and their 4x unrolling) put the value in the body and in the tail.
        foreach (int count in new[] { 1, 7, 16, 31, 64, 129, 300 })
            for (int at = 0; at < count; at += Math.Max(1, count / 9))
                foreach (float poison in Poisons)
                {
                    byte[] bytes = Encode(type, Enumerable.Range(0, count).Select(i => (float)Math.Sin(i) * 1e4f).ToArray());
                    Encode(type, [poison]).CopyTo(bytes, at * type.SizeOf());
                    if (at + 1 < count) Encode(type, [float.NaN]).CopyTo(bytes, (count - 1) * type.SizeOf());
                    fixed (byte* p = bytes)
                        Assert.That(NonFiniteScan.FirstNonFinite((nint)p, type, count), Is.EqualTo(at), $"{type} count {count} at {at} {poison}");
                }
    }

    [Test]
    public void Scan_PassesLargestFiniteValuesAndDenormals([Values(DType.F32, DType.F16, DType.BF16)] DType type)
    {
        float max = type switch { DType.F32 => float.MaxValue, DType.F16 => (float)Half.MaxValue, _ => BitConverter.Int32BitsToSingle(0x7F7F0000) };
        float[] values = [max, -max, 0f, -0f, 1e-40f, 6e-8f, 1f];
        byte[] bytes = Encode(type, Enumerable.Repeat(values, 20).SelectMany(v => v).ToArray());
        fixed (byte* p = bytes)
            Assert.That(NonFiniteScan.FirstNonFinite((nint)p, type, bytes.Length / type.SizeOf()), Is.EqualTo(-1));
    }

    [Test]
    public void ArwkvMatrixWithNonFiniteValue_FailsTheLoadNamingFileTensorAndElement(
        [Values(DType.F32, DType.F16, DType.BF16)] DType type,
        [Values("model.embed_tokens.weight", "model.layers.1.self_attn.time_mixer.value.weight", "model.layers.0.mlp.down_proj.weight", "lm_head.weight")] string tensor)
    {
        using var dir = new TempDirectory("arwkv-nan");
        RandomArwkvCheckpoint.Create(dir.Path, RandomArwkvCheckpoint.SmallConfig(), seed: 3, type: type);
        string file = dir.File("model.safetensors");
        long element = Poke(file, tensor, 37, type, float.PositiveInfinity);

        var e = Assert.Throws<CheckpointException>(() => LanguageModel.Load(dir.Path, new ModelOptions { Threads = 1 }).Dispose())!;

        Assert.That(e.FilePath, Is.EqualTo(file));
        Assert.That(e.Message, Does.Contain($"tensor '{tensor}' holds a non-finite value ({float.PositiveInfinity}) at element {element}"));
    }

    [Test]
    public void Qwen2MatrixWithNaN_FailsTheLoad([Values(DType.F32, DType.BF16)] DType type)
    {
        string dir = Qwen2TestCheckpoint.Write(new Qwen2TestShape { Type = type, Seed = 4 });
        try
        {
            string file = Path.Combine(dir, "model.safetensors");
            const string tensor = "model.layers.0.self_attn.k_proj.weight";
            long element = Poke(file, tensor, 5, type, float.NaN);

            var e = Assert.Throws<CheckpointException>(() => LanguageModel.Load(dir, new ModelOptions { Threads = 1 }).Dispose())!;

            Assert.That(e.FilePath, Is.EqualTo(file));
            Assert.That(e.Message, Does.Contain($"tensor '{tensor}' holds a non-finite value ({float.NaN}) at element {element}"));
        }
        finally
        {
            Qwen2TestCheckpoint.Delete(dir);
        }
    }

    /// <summary>Finite weights can still overflow float32 in the forward pass; the logits are then an error naming the
    /// position, not numbers that sampling would turn into an arbitrary token.</summary>
    [Test]
    public void ArwkvLogitsThatOverflow_AreAnErrorNamingThePosition([Values] LogitsScope scope)
    {
        if (scope == LogitsScope.None) return;
        using var dir = new TempDirectory("arwkv-overflow");
        RandomArwkvCheckpoint.Create(dir.Path, RandomArwkvCheckpoint.SmallConfig(), seed: 3, type: DType.F32);
        AssertOverflowIsReported(dir.Path, scope);
    }

    [Test]
    public void Qwen2LogitsThatOverflow_AreAnErrorNamingThePosition([Values(LogitsScope.Last, LogitsScope.All)] LogitsScope scope)
    {
        string dir = Qwen2TestCheckpoint.Write(new Qwen2TestShape { Type = DType.F32, Seed = 4 });
        try
        {
            AssertOverflowIsReported(dir, scope);
        }
        finally
        {
            Qwen2TestCheckpoint.Delete(dir);
        }
    }

    static void AssertOverflowIsReported(string modelDir, LogitsScope scope)
    {
        // 1e30 * 1e30 is finite in neither float32 nor the sum: every logit is +-infinity (or NaN).
        string file = Path.Combine(modelDir, "model.safetensors");
        Fill(file, "model.norm.weight", 1e30f);
        Fill(file, "lm_head.weight", 1e30f);
        using var model = LanguageModel.Load(modelDir, new ModelOptions { Threads = 1 });
        var state = model.CreateState();
        int[] tokens = [1, 2, 3];
        var logits = new float[tokens.Length * model.VocabSize];

        var e = Assert.Throws<NonFiniteLogitsException>(() => model.Forward(tokens, state, logits, scope))!;

        Assert.That(e.Position, Is.EqualTo(scope == LogitsScope.All ? 0 : tokens.Length - 1));
        Assert.That(e.ModelDirectory, Is.EqualTo(modelDir));
        Assert.That(e.Message, Does.StartWith(modelDir + ": the forward pass produced a non-finite logit"));
    }

    static void Fill(string file, string tensor, float value)
    {
        TensorInfo info;
        using (var st = SafeTensorsFile.Open(file)) info = st.GetInfo(tensor);
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Write);
        stream.Position = info.Offset;
        stream.Write(Encode(info.Type, Enumerable.Repeat(value, (int)(info.ByteLength / info.Type.SizeOf())).ToArray()));
    }

    /// <summary>Overwrites one element of <paramref name="tensor"/> in place (the element a few past the middle) and returns its index.</summary>
    static long Poke(string file, string tensor, int pastMiddle, DType type, float value)
    {
        TensorInfo info;
        using (var st = SafeTensorsFile.Open(file)) info = st.GetInfo(tensor);
        Assert.That(info.Type, Is.EqualTo(type));
        long element = info.ByteLength / type.SizeOf() / 2 + pastMiddle;
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Write);
        stream.Position = info.Offset + element * type.SizeOf();
        stream.Write(Encode(type, [value]));
        return element;
    }

    static byte[] Encode(DType type, float[] values)
    {
        var bytes = new byte[values.Length * type.SizeOf()];
        for (int i = 0; i < values.Length; i++)
        {
            switch (type)
            {
                case DType.F32: BitConverter.TryWriteBytes(bytes.AsSpan(4 * i), values[i]); break;
                case DType.F16: BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), (Half)values[i]); break;
                default: BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), (ushort)(BitConverter.SingleToInt32Bits(values[i]) >>> 16)); break;
            }
        }
        return bytes;
    }
}
