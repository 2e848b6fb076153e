using System.Text;
using Arwkv.Cli;
using Arwkv.IO;

namespace Arwkv.Tests.Cli;

public class NpyTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("arwkv-npy-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static byte[] Expected(string dict)
    {
        // Written out by hand from the npy 1.0 spec: magic, version 1.0, little-endian u16 header length (118), the
        // dict, spaces, newline; 128 bytes in all so the data starts 64-byte aligned.
        var bytes = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, 118, 0 };
        bytes.AddRange(Encoding.ASCII.GetBytes(dict));
        while (bytes.Count < 127) bytes.Add((byte)' ');
        bytes.Add((byte)'\n');
        return [.. bytes];
    }

    [Test]
    public void HeaderBytesAreExactlyNumpys()
    {
        Assert.That(Npy.Header([2, 3]), Is.EqualTo(Expected("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }")));
        Assert.That(Npy.Header([5]), Is.EqualTo(Expected("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }")));
    }

    [TestCase(new long[] { 1, 1 })]
    [TestCase(new long[] { 123456789, 152064 })]
    [TestCase(new long[] { 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 })]
    public void DataStartsAtAMultipleOf64(long[] shape)
    {
        byte[] header = Npy.Header(shape);
        Assert.That(header.Length % 64, Is.Zero);
        Assert.That(header[^1], Is.EqualTo((byte)'\n'));
        Assert.That(header[8] | header[9] << 8, Is.EqualTo(header.Length - 10));
    }

    [Test]
    public void RoundTrip()
    {
        var random = new Random(3);
        float[] data = Enumerable.Range(0, 7 * 11).Select(_ => (float)(random.NextDouble() - 0.5) * 1e3f).ToArray();
        data[5] = float.NaN;
        data[6] = float.NegativeInfinity;
        data[7] = -0f;
        string path = Path.Combine(_dir, "x.npy");
        Npy.WriteFloat32(path, data, 7, 11);
        Assert.That(new FileInfo(path).Length, Is.EqualTo(128 + data.Length * 4));
        (float[] read, long[] shape) = Npy.ReadFloat32(path);
        Assert.That(shape, Is.EqualTo(new long[] { 7, 11 }));
        Assert.That(read.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(data.Select(BitConverter.SingleToInt32Bits)), "bit-exact");
        // Little-endian float32 right after the header.
        byte[] raw = File.ReadAllBytes(path);
        Assert.That(BitConverter.ToSingle(raw, 128), Is.EqualTo(data[0]));

        Npy.WriteFloat32(path, new float[] { 1, 2, 3 }, 3);
        (read, shape) = Npy.ReadFloat32(path);
        Assert.That((read, shape), Is.EqualTo((new float[] { 1, 2, 3 }, new long[] { 3 })));
    }

    [Test]
    public void ReaderAndWriterRejectBadInput()
    {
        string path = Path.Combine(_dir, "bad.npy");
        Assert.Throws<ArgumentException>(() => Npy.WriteFloat32(path, new float[5], 2, 3));
        File.WriteAllBytes(path, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        Assert.Throws<CheckpointException>(() => Npy.ReadFloat32(path));
        byte[] f8 = Npy.Header([2]);
        Encoding.ASCII.GetBytes("<f8").CopyTo(f8, 21);
        File.WriteAllBytes(path, [.. f8, .. new byte[8]]);
        Assert.That(() => Npy.ReadFloat32(path), Throws.TypeOf<CheckpointException>().With.Message.Contains("<f8"));
        File.WriteAllBytes(path, [.. Npy.Header([3]), .. new byte[8]]);
        Assert.That(() => Npy.ReadFloat32(path), Throws.TypeOf<CheckpointException>().With.Message.Contains("needs 12"));
    }
}
