using Arwkv.IO;
using KernelConvert = Arwkv.Kernels.Convert;

namespace Arwkv.Tests.CpuKernels; // not "Kernels": that would shadow Arwkv.Kernels inside Arwkv.Tests.*

[TestFixture]
public class ConvertTests
{
    /// <summary>Round-to-nearest-even from the definition, computed in double (independent of the bit trick).</summary>
    static ushort ReferenceBFloat16(float value)
    {
        if (float.IsNaN(value)) return (ushort)((BitConverter.SingleToUInt32Bits(value) >> 16) | 0x40);
        uint bits = BitConverter.SingleToUInt32Bits(value);
        ushort down = (ushort)(bits >> 16);
        ushort up = (ushort)(down + 1);
        double lowValue = BitConverter.Int32BitsToSingle(down << 16);
        // The value one bfloat16 step away from zero; may be infinity when rounding past the largest finite value.
        double highValue = (double)BitConverter.Int32BitsToSingle(up << 16);
        if ((bits & 0xFFFF) == 0) return down;
        if ((down & 0x7FFF) == 0x7F7F) highValue = Math.CopySign(Math.Pow(2, 128), value); // rounding boundary to inf
        double dLow = Math.Abs(value - lowValue), dHigh = Math.Abs(highValue - value);
        if (dLow < dHigh) return down;
        if (dHigh < dLow) return up;
        return (down & 1) == 0 ? down : up;
    }

    static float[] Samples(int n, Random random)
    {
        float[] specials =
        [
            0f, -0f, 1f, -1f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.MaxValue, float.MinValue,
            float.Epsilon, -float.Epsilon, 1e-40f, BitConverter.Int32BitsToSingle(0x3F808000), // tie, even -> down
            BitConverter.Int32BitsToSingle(0x3F818000), // tie, odd -> up
            BitConverter.Int32BitsToSingle(0x3F808001), BitConverter.Int32BitsToSingle(0x7F7FFFFF),
            BitConverter.Int32BitsToSingle(0x7F7F8000), BitConverter.Int32BitsToSingle(unchecked((int)0xFFC00001)),
            BitConverter.Int32BitsToSingle(0x7F800001), // signalling NaN must stay NaN
        ];
        var values = new float[n];
        for (int i = 0; i < n; i++)
            values[i] = i % 3 == 0 ? specials[(i / 3) % specials.Length] : BitConverter.Int32BitsToSingle(random.Next() ^ (random.Next(2) << 31));
        return values;
    }

    [TearDown]
    public void ResetPath() => Arwkv.Kernels.MatMul.ForceIsa = null;

    static void UsePath(string isaName)
    {
        var isa = Enum.Parse<Arwkv.Kernels.KernelIsa>(isaName);
        Assume.That(isa <= Arwkv.Kernels.MatMul.DetectedIsa, $"this CPU has no {isa} path");
        Arwkv.Kernels.MatMul.ForceIsa = isa;
    }

    static readonly string[] Paths = ["Scalar", "Vector128", "Vector256", "Vector512"];

    [TestCaseSource(nameof(Paths))]
    public void Float32ToBFloat16RoundsToNearestEvenOnEveryLength(string isaName)
    {
        UsePath(isaName);
        var random = new Random(17);
        for (int n = 0; n <= 100; n++)
        {
            var source = Samples(n, random);
            var destination = new ushort[n];
            KernelConvert.Float32ToBFloat16(source, destination);
            for (int i = 0; i < n; i++)
            {
                Assert.That(destination[i], Is.EqualTo(ReferenceBFloat16(source[i])), $"n {n}, value bits {BitConverter.SingleToUInt32Bits(source[i]):X8}");
                Assert.That(KernelConvert.Float32ToBFloat16(source[i]), Is.EqualTo(destination[i]));
                if (float.IsNaN(source[i])) Assert.That(float.IsNaN(BitConverter.Int32BitsToSingle(destination[i] << 16)));
            }
        }
    }

    [TestCaseSource(nameof(Paths))]
    public void BFloat16ToFloat32IsExactOnEveryLength(string isaName)
    {
        UsePath(isaName);
        var random = new Random(23);
        for (int n = 0; n <= 100; n++)
        {
            var source = new ushort[n];
            for (int i = 0; i < n; i++) source[i] = (ushort)random.Next(65536);
            var destination = new float[n];
            KernelConvert.BFloat16ToFloat32(source, destination);
            for (int i = 0; i < n; i++)
                Assert.That(BitConverter.SingleToUInt32Bits(destination[i]), Is.EqualTo((uint)source[i] << 16));
        }
    }

    [Test]
    public unsafe void ToFloat32WidensEveryType()
    {
        var values = new[] { 1.5f, -2.25f, 0f, 65504f, 3.0e-5f, -0.1f, 7f, 8f, 9f, 10f, 11f, 12f, 13f, 14f, 15f, 16f, 17f };
        var bf16 = new ushort[values.Length];
        KernelConvert.Float32ToBFloat16(values, bf16);
        var f16 = values.Select(v => (Half)v).ToArray();
        var result = new float[values.Length];
        fixed (float* p = values) { KernelConvert.ToFloat32((nint)p, DType.F32, result); }
        Assert.That(result, Is.EqualTo(values));
        fixed (Half* p = f16) { KernelConvert.ToFloat32((nint)p, DType.F16, result); }
        Assert.That(result, Is.EqualTo(f16.Select(h => (float)h)));
        fixed (ushort* p = bf16) { KernelConvert.ToFloat32((nint)p, DType.BF16, result); }
        Assert.That(result, Is.EqualTo(bf16.Select(b => BitConverter.Int32BitsToSingle(b << 16))));
    }

    [Test]
    public void VectorHalfWideningIsExactForEveryBitPattern()
    {
        Assume.That(Arwkv.Kernels.MatMul.DetectedIsa, Is.EqualTo(Arwkv.Kernels.KernelIsa.Vector512), "needs AVX-512");
        var lanes = new ushort[16];
        var widened = new float[16];
        for (int start = 0; start < 65536; start += 16)
        {
            for (int i = 0; i < 16; i++) lanes[i] = (ushort)(start + i);
            System.Runtime.Intrinsics.Vector512.CopyTo(Arwkv.Kernels.MatMul.WidenHalf(System.Runtime.Intrinsics.Vector256.Create(lanes)), widened);
            for (int i = 0; i < 16; i++)
            {
                float expected = (float)BitConverter.UInt16BitsToHalf(lanes[i]);
                if (float.IsNaN(expected))
                    Assert.That(float.IsNaN(widened[i]), $"bits {lanes[i]:X4}");
                else
                    Assert.That(BitConverter.SingleToUInt32Bits(widened[i]), Is.EqualTo(BitConverter.SingleToUInt32Bits(expected)), $"bits {lanes[i]:X4}");
            }
        }
    }

    [Test]
    public void ShortDestinationsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => KernelConvert.BFloat16ToFloat32(new ushort[4], new float[3]));
        Assert.Throws<ArgumentException>(() => KernelConvert.Float32ToBFloat16(new float[4], new ushort[3]));
    }
}
