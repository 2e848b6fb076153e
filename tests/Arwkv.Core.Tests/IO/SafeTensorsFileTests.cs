using System.Buffers.Binary;
using System.Text;
using Arwkv.IO;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.IO;

/// <summary>Every malformed safetensors file must fail on open with a CheckpointException naming the file and the problem.</summary>
[TestFixture]
public class SafeTensorsFileTests
{
    private TempDirectory _tmp = null!;

    [SetUp] public void SetUp() => _tmp = new TempDirectory("arwkv-st");
    [TearDown] public void TearDown() => _tmp.Dispose();

    /// <summary>Writes the 8-byte header length, the header text and <paramref name="dataBytes"/> zero bytes.</summary>
    private string Raw(string header, int dataBytes, ulong? declaredLength = null)
    {
        string path = _tmp.File($"raw-{Guid.NewGuid():N}.safetensors");
        byte[] json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredLength ?? (ulong)json.Length);
        json.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static void AssertRejected(string path, string problem)
    {
        var e = Assert.Throws<CheckpointException>(() => SafeTensorsFile.Open(path).Dispose())!;
        Assert.That(e.FilePath, Is.EqualTo(path));
        Assert.That(e.Message, Does.Contain(path));
        Assert.That(e.Problem, Does.Contain(problem).IgnoreCase);
    }

    private const string GoodEntry = "\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}";

    [Test]
    public void GoodMinimalFile_Opens()
    {
        string path = Raw("{" + GoodEntry + "}", 24);
        using var f = SafeTensorsFile.Open(path);
        TensorInfo t = f.GetInfo("t");
        Assert.That(t.Shape, Is.EqualTo(new long[] { 2, 3 }));
        Assert.That(t.ByteLength, Is.EqualTo(24));
        Assert.That(f.ReadFloat32(t), Is.All.Zero);
    }

    [Test]
    public void MissingFile() => AssertRejected(_tmp.File("absent.safetensors"), "not found");

    [TestCase(0)]
    [TestCase(7)]
    public void FileShorterThan8Bytes(int length)
    {
        string path = _tmp.File("short.safetensors");
        File.WriteAllBytes(path, new byte[length]);
        AssertRejected(path, "shorter than the 8-byte header length");
    }

    [Test]
    public void HeaderLengthPastEnd() => AssertRejected(Raw("{}", 0, declaredLength: 1000), "header length 1000 but only 2 bytes follow");

    [Test]
    public void HugeHeaderLength() => AssertRejected(Raw("{}", 0, declaredLength: 1UL << 60), "exceeds");

    [TestCase("not json")]
    [TestCase("{\"t\": ")]
    [TestCase("{} trailing")]
    public void HeaderNotJson(string header) => AssertRejected(Raw(header, 0), "not valid JSON");

    [Test]
    public void HeaderNotUtf8()
    {
        string path = _tmp.File("utf8.safetensors");
        byte[] header = [(byte)'{', (byte)'"', 0xFF, 0xFE, (byte)'"', (byte)':', (byte)'1', (byte)'}'];
        var bytes = new byte[8 + header.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        AssertRejected(path, "not valid JSON");
    }

    [TestCase("[]")]
    [TestCase("42")]
    [TestCase("\"text\"")]
    public void HeaderNotObject(string header) => AssertRejected(Raw(header, 0), "not a JSON object");

    [Test]
    public void EntryNotObject() => AssertRejected(Raw("{\"t\":[1,2]}", 0), "tensor 't': header entry is not a JSON object");

    [TestCase("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "no dtype")]
    [TestCase("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "no shape")]
    [TestCase("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", "data_offsets")]
    [TestCase("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "data_offsets")]
    [TestCase("{\"t\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", "no dtype")]
    [TestCase("{\"t\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", "no shape")]
    public void EntryMissingField(string header, string problem) => AssertRejected(Raw(header, 4), problem);

    [TestCase("I64")]
    [TestCase("F8_E4M3")]
    [TestCase("F64")]
    [TestCase("f32")]
    public void UnknownDtype(string dtype) =>
        AssertRejected(Raw("{\"t\":{\"dtype\":\"" + dtype + "\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8), $"unsupported dtype '{dtype}'");

    [TestCase("[-1]")]
    [TestCase("[1.5]")]
    [TestCase("[\"2\"]")]
    [TestCase("[2, null]")]
    [TestCase("[1e30]")]
    public void BadShape(string shape) =>
        AssertRejected(Raw("{\"t\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[0,4]}}", 4), "shape must hold non-negative integers");

    [Test]
    public void ShapeOverflow() =>
        AssertRejected(Raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4), "shape overflows");

    [Test]
    public void ShapeTimesElementSizeOverflow() =>
        AssertRejected(Raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4), "more than 2^63");

    [Test]
    public void OffsetsReversed() =>
        AssertRejected(Raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8), "0 <= begin <= end");

    [TestCase("[-4,0]")]
    [TestCase("[\"0\",\"4\"]")]
    [TestCase("[0.5,4]")]
    [TestCase("[0,null]")]
    public void OffsetsNotNonNegativeIntegers(string offsets) =>
        AssertRejected(Raw("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" + offsets + "}}", 4), "data_offsets must be two integers");

    [Test]
    public void OffsetsPastEnd_TruncatedData() =>
        AssertRejected(Raw("{" + GoodEntry + "}", 20), "point past the end of the data (20 bytes; truncated file?)");

    [TestCase("F32", "[2,3]", 20, "20 bytes of data, but F32 [2, 3] needs 24")]
    [TestCase("BF16", "[2,3]", 24, "24 bytes of data, but BF16 [2, 3] needs 12")]
    [TestCase("F16", "[]", 4, "4 bytes of data, but F16 [] needs 2")]
    public void ByteCountNotMatchingShape(string dtype, string shape, int bytes, string problem) =>
        AssertRejected(Raw("{\"t\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[0," + bytes + "]}}", 64), problem);

    [Test]
    public void OverlappingTensors() =>
        AssertRejected(Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20),
            "tensors 'a' and 'b' overlap");

    [Test]
    public void EmptyTensorsMayShareAnOffset()
    {
        using var f = SafeTensorsFile.Open(Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
        Assert.That(f.GetInfo("a").ElementCount, Is.Zero);
    }

    // Issue 11 class 8: the reference implementation's validate() rejects data that no tensor owns.
    [Test]
    public void BytesAfterTheLastTensor() =>
        AssertRejected(Raw("{" + GoodEntry + "}", 28), "4 bytes after the last tensor ('t') belong to no tensor");

    [Test]
    public void HoleBetweenTensors() =>
        AssertRejected(Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20),
            "tensor 'b': 4 bytes before it belong to no tensor (data_offsets begin at 12, 'a' ends at 8)");

    [Test]
    public void HoleBeforeTheFirstTensor() =>
        AssertRejected(Raw("{" + GoodEntry.Replace("[0,24]", "[8,32]") + "}", 32), "tensor 't': 8 bytes before it belong to no tensor");

    [Test]
    public void DataWithoutTensors() => AssertRejected(Raw("{}", 4), "4 bytes after the last tensor belong to no tensor");

    // System.Text.Json accepts duplicate object keys; the reader must not silently keep one of them.
    [Test]
    public void DuplicateTensorNames() =>
        AssertRejected(Raw("{" + GoodEntry + "," + GoodEntry.Replace("[0,24]", "[24,48]") + "}", 48), "tensor 't' appears twice");

    [Test]
    public void DuplicateMetadata() =>
        AssertRejected(Raw("{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"a\":\"2\"}}", 0), "two __metadata__");

    [Test]
    public void DuplicateMetadataKey() =>
        AssertRejected(Raw("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0), "two entries named 'a'");

    [TestCase("[]")]
    [TestCase("\"pt\"")]
    public void MetadataNotObject(string value) => AssertRejected(Raw("{\"__metadata__\":" + value + "}", 0), "__metadata__ must be a JSON object");

    [Test]
    public void MetadataValueNotString() => AssertRejected(Raw("{\"__metadata__\":{\"n\":3}}", 0), "__metadata__ entry 'n' is not a string");

    [Test]
    public void MissingTensorLookup_NamesFileAndTensor()
    {
        string path = Raw("{" + GoodEntry + "}", 24);
        using var f = SafeTensorsFile.Open(path);
        var e = Assert.Throws<CheckpointException>(() => f.GetInfo("nope"))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("missing tensor 'nope'"));
    }
}
