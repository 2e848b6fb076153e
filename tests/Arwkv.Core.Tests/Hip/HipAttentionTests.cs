using Arwkv.Hip;
using Arwkv.IO;
using Arwkv.Training.Layers;

namespace Arwkv.Tests.Hip;

/// <summary>
/// attention.hip against the float64 <see cref="AttentionReference"/> (itself checked in
/// <see cref="AttentionReferenceTests"/>) and against Arwkv.Core's training layer. Sizes are not multiples of the
/// kernels' tiles (16 query rows, 32 keys or 16 at D = 128, 128 decode keys); the masks pad on the right and, for
/// longer than a key tile, on the left, so a row's first key tile can be entirely masked.
/// </summary>
public class HipAttentionTests
{
    [SetUp]
    public void RequireGpu()
    {
        HipTestDevice.Require();
    }

    // Sequence 0 padded on the right (its last 3 tokens), sequence 1 on the left (all but its last 4 when T > 36).
    static int[] PaddingMask(int B, int T)
    {
        var mask = new int[B * T];
        for (int t = 0; t < T; t++)
        {
            mask[t] = t < T - 3 ? 1 : 0;
            if (B > 1) mask[T + t] = t >= Math.Min(33, T - 4) ? 1 : 0;
        }
        return mask;
    }

    [TestCase(16, 37, 4, 2, true)]
    [TestCase(64, 37, 4, 2, true)]
    [TestCase(32, 50, 2, 2, false)]
    [TestCase(128, 21, 2, 1, true)]
    public void Forward_MatchesFloat64Reference(int D, int T, int H, int KV, bool masked)
    {
        const int B = 2;
        int[]? mask = masked ? PaddingMask(B, T) : null;
        double[] q = AttentionReferenceTests.Random(B * T * H * D, 11, 1.5), k = AttentionReferenceTests.Random(B * T * KV * D, 12, 1.5);
        double[] v = AttentionReferenceTests.Random(B * T * KV * D, 13);
        var (expected, expectedLse) = AttentionReference.Forward(q, k, v, mask, B, T, H, KV, D);

        using var qd = Upload(q);
        using var kd = Upload(k);
        using var vd = Upload(v);
        using var md = mask != null ? HipBuffer.FromHost<int>(mask) : null;
        using var outd = HipBuffer.Allocate<float>(q.Length);
        using var lsed = HipBuffer.Allocate<float>(B * H * T);
        HipKernels.AttentionForward(outd, lsed, qd, kd, vd, md, B, T, H, KV, D);

        AssertClose(outd.ToArray<float>(q.Length), expected, 1e-5, "out");
        float[] lse = lsed.ToArray<float>(B * H * T);
        for (int i = 0; i < lse.Length; i++)
        {
            if (double.IsNegativeInfinity(expectedLse[i])) Assert.That(float.IsNegativeInfinity(lse[i]), $"lse[{i}] of a masked row");
            else Assert.That(lse[i], Is.EqualTo(expectedLse[i]).Within(1e-5 * Math.Max(1, Math.Abs(expectedLse[i]))), $"lse[{i}]");
        }
    }

    [TestCase(16, 37, 4, 2, true)]
    [TestCase(64, 37, 4, 2, true)]
    [TestCase(32, 50, 2, 2, false)]
    [TestCase(128, 21, 2, 1, true)]
    public void Backward_AddsTheFloat64Gradients(int D, int T, int H, int KV, bool masked)
    {
        const int B = 2;
        int[]? mask = masked ? PaddingMask(B, T) : null;
        double[] q = AttentionReferenceTests.Random(B * T * H * D, 21, 1.5), k = AttentionReferenceTests.Random(B * T * KV * D, 22, 1.5);
        double[] v = AttentionReferenceTests.Random(B * T * KV * D, 23), dout = AttentionReferenceTests.Random(B * T * H * D, 24);
        double[] dqStart = AttentionReferenceTests.Random(q.Length, 25), dkStart = AttentionReferenceTests.Random(k.Length, 26);
        double[] dvStart = AttentionReferenceTests.Random(v.Length, 27);
        var (dq, dk, dv) = AttentionReference.Backward(dout, q, k, v, mask, B, T, H, KV, D);

        using var qd = Upload(q);
        using var kd = Upload(k);
        using var vd = Upload(v);
        using var doutd = Upload(dout);
        using var md = mask != null ? HipBuffer.FromHost<int>(mask) : null;
        using var outd = HipBuffer.Allocate<float>(q.Length);
        using var lsed = HipBuffer.Allocate<float>(B * H * T);
        using var deltad = HipBuffer.Allocate<float>(B * H * T);
        using var dqd = Upload(dqStart);
        using var dkd = Upload(dkStart);
        using var dvd = Upload(dvStart);
        HipKernels.AttentionForward(outd, lsed, qd, kd, vd, md, B, T, H, KV, D);
        HipKernels.AttentionBackward(dqd, dkd, dvd, deltad, doutd, outd, lsed, qd, kd, vd, md, B, T, H, KV, D);

        AssertClose(dqd.ToArray<float>(q.Length), Add(dqStart, dq), 2e-5, "dq");
        AssertClose(dkd.ToArray<float>(k.Length), Add(dkStart, dk), 2e-5, "dk");
        AssertClose(dvd.ToArray<float>(v.Length), Add(dvStart, dv), 2e-5, "dv");
    }

    /// <summary>Decoding the token at position L-1 against a cache of length L gives row L-1 of the prefill.</summary>
    [Test]
    public void Decode_EqualsTheLastRowOfPrefill()
    {
        const int B = 2, T = 150, H = 4, KV = 2, D = 64;
        int[] lengths = [150, 37];
        double[] q = AttentionReferenceTests.Random(B * T * H * D, 31, 1.5), k = AttentionReferenceTests.Random(B * T * KV * D, 32, 1.5);
        double[] v = AttentionReferenceTests.Random(B * T * KV * D, 33);
        double[] expected = AttentionReference.Forward(q, k, v, null, B, T, H, KV, D).Out;

        using var qd = Upload(q);
        using var kd = Upload(k);
        using var vd = Upload(v);
        using var outd = HipBuffer.Allocate<float>(q.Length);
        HipKernels.AttentionForward(outd, null, qd, kd, vd, null, B, T, H, KV, D);
        float[] prefill = outd.ToArray<float>(q.Length);

        // The prefill's k and v [B,T,KV,D] are a cache of capacity T.
        using var qLast = Upload(LastRows(q, lengths, T, H * D));
        using var ld = HipBuffer.FromHost<int>(lengths);
        using var decoded = HipBuffer.Allocate<float>(B * H * D);
        HipKernels.AttentionDecode(decoded, qLast, kd, vd, ld, DType.F32, B, H, KV, D, capacity: T);
        float[] actual = decoded.ToArray<float>(B * H * D);

        double[] lastPrefill = LastRows(prefill.Select(x => (double)x).ToArray(), lengths, T, H * D);
        AssertClose(actual, lastPrefill, 1e-5, "decode vs prefill");
        AssertClose(actual, LastRows(expected, lengths, T, H * D), 1e-5, "decode vs reference");
    }

    [Test]
    public void Decode_ReadsABFloat16CacheAndWritesZerosForAnEmptyOne()
    {
        const int B = 2, T = 130, H = 2, KV = 1, D = 32;
        int[] lengths = [130, 0];
        double[] q = AttentionReferenceTests.Random(B * T * H * D, 41, 1.5);
        float[] kf = AttentionReferenceTests.Random(B * T * KV * D, 42, 1.5).Select(x => (float)x).ToArray();
        float[] vf = AttentionReferenceTests.Random(B * T * KV * D, 43).Select(x => (float)x).ToArray();
        ushort[] kb = kf.Select(Arwkv.Kernels.Convert.Float32ToBFloat16).ToArray(), vb = vf.Select(Arwkv.Kernels.Convert.Float32ToBFloat16).ToArray();
        double[] kr = kb.Select(x => (double)BitConverter.Int32BitsToSingle(x << 16)).ToArray();
        double[] vr = vb.Select(x => (double)BitConverter.Int32BitsToSingle(x << 16)).ToArray();
        double[] expected = LastRows(AttentionReference.Forward(q, kr, vr, null, B, T, H, KV, D).Out, [T, T], T, H * D);
        expected.AsSpan(H * D).Clear();

        using var qLast = Upload(LastRows(q, [T, T], T, H * D));
        using var kd = HipBuffer.FromHost<ushort>(kb);
        using var vd = HipBuffer.FromHost<ushort>(vb);
        using var ld = HipBuffer.FromHost<int>(lengths);
        using var decoded = HipBuffer.Allocate<float>(B * H * D);
        HipKernels.AttentionDecode(decoded, qLast, kd, vd, ld, DType.BF16, B, H, KV, D, capacity: T);
        AssertClose(decoded.ToArray<float>(B * H * D), expected, 1e-5, "decode");
    }

    [Test]
    public void Rope_RotatesInPlaceFromStartPositionsAndBackwardAddsTheTranspose()
    {
        const int B = 2, T = 7, heads = 3, D = 16, P = 12;
        int[] start = [0, 8];  // sequence 1 runs off the table at t = 4: those positions write zeros
        var (cos, sin) = HipKernels.RotaryTables(P, D, theta: 10000);
        double[] x = AttentionReferenceTests.Random(B * T * heads * D, 51), g = AttentionReferenceTests.Random(x.Length, 52);
        double[] dxStart = AttentionReferenceTests.Random(x.Length, 53);

        using var xd = Upload(x);
        using var cd = HipBuffer.FromHost<float>(cos);
        using var sd = HipBuffer.FromHost<float>(sin);
        using var startd = HipBuffer.FromHost<int>(start);
        HipKernels.RopeForward(xd, xd, cd, sd, startd, B, T, heads, D, P);
        AssertClose(xd.ToArray<float>(x.Length), AttentionReference.Rope(x, cos, sin, start, B, T, heads, D), 1e-6, "rope");

        using var gd = Upload(g);
        using var dxd = Upload(dxStart);
        HipKernels.RopeBackward(dxd, gd, cd, sd, startd, B, T, heads, D, P);
        AssertClose(dxd.ToArray<float>(x.Length), Add(dxStart, AttentionReference.Rope(g, cos, sin, start, B, T, heads, D, transpose: true)),
            1e-6, "rope backward");
    }

    /// <summary>RoPE, attention and their backward on the GPU against Arwkv.Core's training layer (float64).</summary>
    [Test]
    public void RopeAndAttention_MatchTheCpuTrainingLayer()
    {
        const int B = 2, T = 19, H = 4, KV = 2, D = 16;
        const double theta = 1_000_000;
        double[] q = AttentionReferenceTests.Random(B * T * H * D, 61, 1.5), k = AttentionReferenceTests.Random(B * T * KV * D, 62, 1.5);
        double[] v = AttentionReferenceTests.Random(B * T * KV * D, 63), dout = AttentionReferenceTests.Random(B * T * H * D, 64);
        var cosD = new double[T * D / 2];
        var sinD = new double[T * D / 2];
        Attention.RotaryTables<double>(cosD, sinD, T, D, theta);
        var expected = new double[q.Length];
        var probs = new double[B * H * T * T];
        double[] qRot = new double[q.Length], kRot = new double[k.Length];
        Attention.Forward<double>(expected, qRot, kRot, probs, q, k, v, cosD, sinD, B, T, H, KV, D);
        double[] dq = new double[q.Length], dk = new double[k.Length], dv = new double[v.Length];
        Attention.Backward<double>(dq, dk, dv, dout, qRot, kRot, v, probs, cosD, sinD, B, T, H, KV, D);

        var (cos, sin) = HipKernels.RotaryTables(T, D, theta);
        using var cd = HipBuffer.FromHost<float>(cos);
        using var sd = HipBuffer.FromHost<float>(sin);
        using var qd = Upload(q);
        using var kd = Upload(k);
        using var vd = Upload(v);
        using var doutd = Upload(dout);
        using var qr = HipBuffer.Allocate<float>(q.Length);
        using var kr = HipBuffer.Allocate<float>(k.Length);
        using var outd = HipBuffer.Allocate<float>(q.Length);
        using var lsed = HipBuffer.Allocate<float>(B * H * T);
        using var deltad = HipBuffer.Allocate<float>(B * H * T);
        using var dqr = HipBuffer.Allocate<float>(q.Length);
        using var dkr = HipBuffer.Allocate<float>(k.Length);
        using var dqd = HipBuffer.Allocate<float>(q.Length);
        using var dkd = HipBuffer.Allocate<float>(k.Length);
        using var dvd = HipBuffer.Allocate<float>(v.Length);
        foreach (var buffer in new[] { dqr, dkr, dqd, dkd, dvd }) buffer.Clear();

        HipKernels.RopeForward(qr, qd, cd, sd, null, B, T, H, D, T);
        HipKernels.RopeForward(kr, kd, cd, sd, null, B, T, KV, D, T);
        HipKernels.AttentionForward(outd, lsed, qr, kr, vd, null, B, T, H, KV, D);
        HipKernels.AttentionBackward(dqr, dkr, dvd, deltad, doutd, outd, lsed, qr, kr, vd, null, B, T, H, KV, D);
        HipKernels.RopeBackward(dqd, dqr, cd, sd, null, B, T, H, D, T);
        HipKernels.RopeBackward(dkd, dkr, cd, sd, null, B, T, KV, D, T);

        AssertClose(outd.ToArray<float>(q.Length), expected, 1e-5, "out");
        AssertClose(dqd.ToArray<float>(q.Length), dq, 2e-5, "dq");
        AssertClose(dkd.ToArray<float>(k.Length), dk, 2e-5, "dk");
        AssertClose(dvd.ToArray<float>(v.Length), dv, 2e-5, "dv");
    }

    [Test]
    public void InvalidSizes_AreRefusedBeforeLaunching()
    {
        using var buffer = HipBuffer.Allocate<float>(4096);
        Assert.Throws<ArgumentException>(() => HipKernels.AttentionForward(buffer, null, buffer, buffer, buffer, null, 1, 4, 2, 1, 48));
        Assert.Throws<ArgumentException>(() => HipKernels.AttentionForward(buffer, null, buffer, buffer, buffer, null, 1, 4, 3, 2, 16));
        // The native checks stand on their own: heads not a multiple of kv heads, an unsupported head dimension.
        Assert.That(NativeMethods.arwkv_attention_forward(buffer.Pointer, 0, buffer.Pointer, buffer.Pointer, buffer.Pointer, 0, 1, 4, 3, 2, 16, 0),
            Is.EqualTo(1));
        Assert.That(NativeMethods.arwkv_attention_decode(buffer.Pointer, buffer.Pointer, buffer.Pointer, buffer.Pointer, 0, NativeMethods.F32,
            1, 2, 1, 48, 8, 0), Is.EqualTo(1));
        Assert.That(NativeMethods.arwkv_rope_backward(buffer.Pointer, buffer.Pointer, buffer.Pointer, buffer.Pointer, 0, 1, 4, 1, 16, 4, 0),
            Is.EqualTo(1), "dx aliasing dout");
    }

    // ---- helpers ----------------------------------------------------------------------------------------------------

    static HipBuffer Upload(double[] values) => HipBuffer.FromHost<float>(values.Select(x => (float)x).ToArray());

    static double[] Add(double[] a, double[] b) => a.Zip(b, (x, y) => x + y).ToArray();

    // Row lengths[b]-1 of sequence b, rows of `width` values: [B,T,width] -> [B,width].
    static double[] LastRows(double[] x, int[] lengths, int T, int width)
    {
        var rows = new double[lengths.Length * width];
        for (int b = 0; b < lengths.Length; b++)
            if (lengths[b] > 0) Array.Copy(x, ((long)b * T + lengths[b] - 1) * width, rows, (long)b * width, width);
        return rows;
    }

    /// <summary>Max absolute error relative to the largest expected magnitude (at least 1).</summary>
    static void AssertClose(float[] actual, double[] expected, double tolerance, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what);
        double scale = Math.Max(1, expected.Max(Math.Abs));
        for (int i = 0; i < expected.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(tolerance * scale), $"{what}[{i}]");
    }
}
