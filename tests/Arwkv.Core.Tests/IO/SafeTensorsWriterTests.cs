using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Arwkv.IO;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.IO;

[TestFixture]
public class SafeTensorsWriterTests
{
    private TempDirectory _tmp = null!;

    [SetUp] public void SetUp() => _tmp = new TempDirectory("arwkv-stw");
    [TearDown] public void TearDown() => _tmp.Dispose();

    private static float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);

    // Specials and edge values: ±0, ±Inf, quiet/signalling NaNs with payloads, subnormals, extremes.
    private static readonly float[] Specials =
    [
        0f, -0f, 1f, -1f, float.PositiveInfinity, float.NegativeInfinity,
        F(0x7FC00000), F(0xFFC00000), F(0x7F800001), F(0x7FBFFFFF), F(0xFF812345),
        F(0x00000001), F(0x807FFFFF), float.MaxValue, float.MinValue, float.Epsilon, 3.1415927f, -2.7182817e-20f,
    ];

    [Test]
    public void F32_RoundTripIsBitExact()
    {
        string path = _tmp.File("f32.safetensors");
        SafeTensorsWriter.Write(path, [new TensorToWrite("x", DType.F32, [Specials.Length], Specials)]);
        using var f = SafeTensorsFile.Open(path);
        TensorInfo t = f.GetInfo("x");
        Assert.That(t.Type, Is.EqualTo(DType.F32));
        uint[] bits = MemoryMarshal.Cast<byte, uint>(f.GetBytes(t)).ToArray();
        Assert.That(bits, Is.EqualTo(Specials.Select(BitConverter.SingleToUInt32Bits).ToArray()));
    }

    [Test]
    public void F16_RoundTripMatchesHalfConversion()
    {
        var rng = new Random(3);
        float[] values = [.. Specials, .. Enumerable.Range(0, 200).Select(_ => (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 20)))),
            65504f, 65520f, 6.1e-5f, 5.9604645e-8f, 2.9e-8f];
        string path = _tmp.File("f16.safetensors");
        SafeTensorsWriter.Write(path, [new TensorToWrite("x", DType.F16, [values.Length], values)]);
        using var f = SafeTensorsFile.Open(path);
        TensorInfo t = f.GetInfo("x");
        Assert.That(t.Type, Is.EqualTo(DType.F16));
        ReadOnlySpan<Half> stored = MemoryMarshal.Cast<byte, Half>(f.GetBytes(t));
        float[] widened = f.ReadFloat32(t);
        for (int i = 0; i < values.Length; i++)
        {
            Half expected = (Half)values[i];
            if (float.IsNaN(values[i]))
            {
                Assert.That(Half.IsNaN(stored[i]), $"NaN at {i} stays NaN");
                Assert.That(float.IsNaN(widened[i]));
                continue;
            }
            Assert.That(BitConverter.HalfToUInt16Bits(stored[i]), Is.EqualTo(BitConverter.HalfToUInt16Bits(expected)), $"value {values[i]:R} at {i}");
            Assert.That(widened[i], Is.EqualTo((float)expected));
        }
        // Spot checks that do not rely on System.Half: the largest half, overflow to infinity, sign of zero.
        Assert.That(widened[Array.IndexOf(values, 65504f)], Is.EqualTo(65504f));
        Assert.That(widened[Array.IndexOf(values, 65520f)], Is.EqualTo(float.PositiveInfinity), "65520 rounds (to even) past the largest half");
        Assert.That(BitConverter.HalfToUInt16Bits(stored[1]), Is.EqualTo((ushort)0x8000), "-0 keeps its sign");
    }

    [Test]
    public void BF16_RoundsToNearestEven_AndKeepsSpecials()
    {
        (uint In, ushort Out)[] cases =
        [
            (0x3F800000, 0x3F80), // 1.0 exact
            (0x3F807FFF, 0x3F80), // just below halfway: down
            (0x3F808000, 0x3F80), // halfway, even below: stays even
            (0x3F808001, 0x3F81), // just above halfway: up
            (0x3F818000, 0x3F82), // halfway, odd below: up to even
            (0xBF818000, 0xBF82), // same for negatives
            (0x3F81FFFF, 0x3F82),
            (0x7F7FFFFF, 0x7F80), // float.MaxValue rounds to +Inf (as RNE must)
            (0x7F800000, 0x7F80), // +Inf
            (0xFF800000, 0xFF80), // -Inf
            (0x00000000, 0x0000),
            (0x80000000, 0x8000), // -0
            (0x00000001, 0x0000), // smallest subnormal rounds to 0
            (0x007FFFFF, 0x0080), // largest subnormal rounds up to the smallest normal
        ];
        uint[] nans = [0x7FC00000, 0xFFC00000, 0x7F800001, 0x7F80FFFF, 0xFF800001, 0x7FFFFFFF];
        float[] values = [.. cases.Select(c => F(c.In)), .. nans.Select(F)];
        string path = _tmp.File("bf16.safetensors");
        SafeTensorsWriter.Write(path, [new TensorToWrite("x", DType.BF16, [values.Length], values)]);
        using var f = SafeTensorsFile.Open(path);
        TensorInfo t = f.GetInfo("x");
        Assert.That(t.Type, Is.EqualTo(DType.BF16));
        ushort[] stored = MemoryMarshal.Cast<byte, ushort>(f.GetBytes(t)).ToArray();
        float[] widened = f.ReadFloat32(t);
        for (int i = 0; i < cases.Length; i++)
        {
            Assert.That(stored[i], Is.EqualTo(cases[i].Out), $"bf16 of 0x{cases[i].In:X8}");
            Assert.That(BitConverter.SingleToUInt32Bits(widened[i]), Is.EqualTo((uint)cases[i].Out << 16), "widening is exact");
        }
        for (int i = 0; i < nans.Length; i++)
        {
            ushort b = stored[cases.Length + i];
            Assert.That((b & 0x7F80) == 0x7F80 && (b & 0x007F) != 0, $"NaN 0x{nans[i]:X8} stays NaN, got 0x{b:X4}");
            Assert.That(b >> 15, Is.EqualTo(nans[i] >> 31), "NaN keeps its sign");
            Assert.That(float.IsNaN(widened[cases.Length + i]));
        }
    }

    [Test]
    public void MixedTypes_ShapesAndMetadata_RoundTrip()
    {
        var rng = new Random(5);
        float[] a = Enumerable.Range(0, 6).Select(_ => (float)rng.NextDouble()).ToArray();
        float[] b = Enumerable.Range(0, 24).Select(_ => (float)rng.NextDouble()).ToArray();
        float[] scalar = [42f];
        string path = _tmp.File("mixed.safetensors");
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcödé \"quoted\"" };
        SafeTensorsWriter.Write(path,
        [
            new TensorToWrite("a.weight", DType.F32, [2, 3], a),
            new TensorToWrite("b", DType.BF16, [2, 3, 4], b),
            new TensorToWrite("s", DType.F16, [], scalar),
            new TensorToWrite("empty", DType.F32, [0, 5], Array.Empty<float>()),
        ], metadata);
        using var f = SafeTensorsFile.Open(path);
        Assert.That(f.Metadata, Is.EquivalentTo(metadata));
        Assert.That(f.Tensors.Keys, Is.EquivalentTo(new[] { "a.weight", "b", "s", "empty" }));
        Assert.That(f.ReadFloat32(f.GetInfo("a.weight")), Is.EqualTo(a));
        Assert.That(f.GetInfo("b").Shape, Is.EqualTo(new long[] { 2, 3, 4 }));
        Assert.That(f.ReadFloat32(f.GetInfo("b")), Is.EqualTo(b).Within(0.4).Percent, "bf16 keeps 8 significant bits");
        Assert.That(f.GetInfo("s").Shape, Is.Empty);
        Assert.That(f.ReadFloat32(f.GetInfo("s")), Is.EqualTo(scalar));
        Assert.That(f.GetInfo("empty").ElementCount, Is.Zero);
    }

    [TestCase("t")]
    [TestCase("tensor")]
    [TestCase("a.much.longer.tensor.name.weight")]
    [TestCase("x_1234567")]
    public void DataSection_StartsEightByteAligned_AndTensorsAreContiguous(string name)
    {
        string path = _tmp.File("align.safetensors");
        SafeTensorsWriter.Write(path,
        [
            new TensorToWrite(name, DType.BF16, [3], new float[3]),
            new TensorToWrite(name + "2", DType.F32, [5], new float[5]),
        ]);
        byte[] bytes = File.ReadAllBytes(path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That((8 + headerLength) % 8, Is.Zero, "data section alignment");
        string header = System.Text.Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        Assert.That(header.TrimEnd(' '), Does.EndWith("}"), "padding is trailing spaces");
        using var f = SafeTensorsFile.Open(path);
        Assert.That(f.GetInfo(name).Offset, Is.EqualTo(8 + (long)headerLength));
        Assert.That(f.GetInfo(name + "2").Offset, Is.EqualTo(8 + (long)headerLength + 6));
        Assert.That(bytes.Length, Is.EqualTo(8 + (long)headerLength + 6 + 20));
    }

    [Test]
    public void BadArguments_ThrowBeforeTouchingTheFile()
    {
        string path = _tmp.File("args.safetensors");
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(path, [new TensorToWrite("x", DType.F32, [2, 2], new float[3])]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(path,
            [new TensorToWrite("x", DType.F32, [1], new float[1]), new TensorToWrite("x", DType.F32, [1], new float[1])]));
        Assert.That(Directory.GetFileSystemEntries(_tmp.Path), Is.Empty);
    }

    [Test]
    public void AtomicFile_ThrowInsideWrite_LeavesOldFileIntact_AndNoTempFile()
    {
        string path = _tmp.File("model.safetensors");
        SafeTensorsWriter.Write(path, [new TensorToWrite("x", DType.F32, [4], new float[] { 1, 2, 3, 4 })]);
        byte[] before = File.ReadAllBytes(path);

        var e = Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, stream =>
        {
            stream.Write(new byte[100_000]);
            stream.Flush();
            throw new InvalidOperationException("disk full (simulated)");
        }))!;
        Assert.That(e.Message, Does.Contain("simulated"));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before), "the old file is untouched");
        Assert.That(Directory.GetFileSystemEntries(_tmp.Path).Select(Path.GetFileName), Is.EqualTo(new[] { "model.safetensors" }), "no temporary file left");
        using var f = SafeTensorsFile.Open(path);
        Assert.That(f.ReadFloat32(f.GetInfo("x")), Is.EqualTo(new float[] { 1, 2, 3, 4 }));
    }

    [Test]
    public void AtomicFile_ThrowOnFirstWrite_CreatesNothing()
    {
        string path = _tmp.File("sub/new.bin");
        Assert.Throws<IOException>(() => AtomicFile.Write(path, _ => throw new IOException("boom")));
        Assert.That(File.Exists(path), Is.False);
        Assert.That(Directory.GetFiles(_tmp.Path, "*", SearchOption.AllDirectories), Is.Empty);
    }

    [Test]
    public void AtomicFile_ReplacesExistingFile()
    {
        string path = _tmp.File("text.txt");
        AtomicFile.WriteAllText(path, "old contents that are longer");
        AtomicFile.WriteAllText(path, "new");
        Assert.That(File.ReadAllText(path), Is.EqualTo("new"));
        Assert.That(Directory.GetFileSystemEntries(_tmp.Path), Has.Length.EqualTo(1));
    }
}
