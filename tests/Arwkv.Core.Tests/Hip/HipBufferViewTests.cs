using Arwkv.Hip;

namespace Arwkv.Tests.Hip;

/// <summary>Offset copies and views of device buffers (the plumbing the GPU models use to address rows and blocks), and the out-of-memory message.</summary>
public class HipBufferViewTests
{
    [SetUp]
    public void SetUp() => HipTestDevice.Require();

    [Test]
    public void CopyFromWithOffsetsMovesOnlyTheNamedBytes()
    {
        float[] source = Enumerable.Range(0, 16).Select(i => (float)i).ToArray();
        using var src = HipBuffer.FromHost<float>(source);
        using var dst = HipBuffer.FromHost<float>(Enumerable.Repeat(-1f, 16).ToArray());
        // Elements 3..7 of the source land at 10..14 of the destination; everything else keeps its -1.
        dst.CopyFrom(src, sourceOffset: 3 * 4, destinationOffset: 10 * 4, byteCount: 5 * 4);
        float[] result = dst.ToArray<float>(16);
        float[] expected = Enumerable.Repeat(-1f, 16).ToArray();
        for (int i = 0; i < 5; i++) expected[10 + i] = 3 + i;
        Assert.That(result, Is.EqualTo(expected));
        Assert.Throws<ArgumentException>(() => dst.CopyFrom(src, 12 * 4, 0, 5 * 4), "reading past the source's end");
        Assert.Throws<ArgumentException>(() => dst.CopyFrom(src, 0, 12 * 4, 5 * 4), "writing past the destination's end");
    }

    [Test]
    public void SliceAddressesTheParentAndFreesNothing()
    {
        using var parent = HipBuffer.FromHost<float>(new float[12]);
        using (var view = parent.Slice(4 * 4, 4 * 4))
        {
            Assert.That(view.ByteLength, Is.EqualTo(16));
            view.Upload<float>(new[] { 1f, 2f, 3f, 4f });
            // A kernel writing through the view: bf16 conversion of the view into a second view of the same parent.
            using var tail = parent.Slice(8 * 4, 4 * 4);
            HipKernels.ConvertToBFloat16(tail, view, 4);
            Assert.Throws<ArgumentException>(() => view.Upload<float>(new float[5]), "a view is bounded by its own length");
        }
        // The view is disposed, the parent still works and holds what was written through the view.
        float[] all = parent.ToArray<float>(12);
        Assert.That(all.AsSpan(0, 8).ToArray(), Is.EqualTo(new float[] { 0, 0, 0, 0, 1, 2, 3, 4 }));
        ushort[] bf16 = new ushort[8];
        Buffer.BlockCopy(all, 8 * 4, bf16, 0, 16);
        Assert.That(bf16.Take(4).Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16)), Is.EqualTo(new float[] { 1, 2, 3, 4 }));
        Assert.Throws<ArgumentException>(() => parent.Slice(8 * 4, 5 * 4), "a view may not reach past the parent");
    }

    [Test]
    public void OutOfMemory_NamesTheAllocationAndItsSize()
    {
        var ex = Assert.Throws<HipException>(() => HipBuffer.Allocate(1L << 50, "layer 7 mlp.up_proj.weight"));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("could not allocate layer 7 mlp.up_proj.weight (1024.0 TiB, 1125899906842624 bytes)"));
        Assert.That(ex.Message, Does.Contain("out of memory"), "the runtime's own reason follows");
        Assert.That(ex.Status, Is.EqualTo(HipStatus.RuntimeError));
    }
}
