using System.Runtime.InteropServices;
using Arwkv.IO;
using Arwkv.Kernels;

namespace Arwkv.Tests.CpuKernels;

/// <summary>
/// ggml's Q8_0/Q4_0 blocks checked byte by byte against the format as ggml-common.h defines it (FACTS.md), written
/// here independently in double precision; then every kernel path's dequantization, Gemv and Gemm against float64
/// products of the dequantized weights.
/// </summary>
[TestFixture]
public unsafe class GgmlQuantsTests
{
    static IEnumerable<TestCaseData> Paths()
    {
        foreach (var isa in new[] { KernelIsa.Scalar, KernelIsa.Vector128, KernelIsa.Vector256, KernelIsa.Vector512 })
            foreach (var type in new[] { DType.Q8_0, DType.Q4_0 })
                yield return new TestCaseData(isa.ToString(), type).SetArgDisplayNames(isa.ToString(), type.ToString());
    }

    [TearDown]
    public void ResetPath() => MatMul.ForceIsa = null;

    static void UsePath(KernelIsa isa)
    {
        Assume.That(isa <= MatMul.DetectedIsa, $"this CPU has no {isa} path");
        MatMul.ForceIsa = isa;
        Assert.That(MatMul.Isa, Is.EqualTo(isa));
    }

    static float[] RandomValues(Random random, int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(random.NextDouble() * 2 - 1);
        return v;
    }

    [Test]
    public void Q8_0Block_IsAnFp16ScaleThen32Int8_AsGgmlWritesIt()
    {
        var random = new Random(5);
        float[] x = RandomValues(random, 64);
        x[7] = -1.5f; // the largest magnitude of block 0, negative
        x[40] = 0.9f;
        var bytes = new byte[2 * 34];
        GgmlQuants.QuantizeQ8_0(x, bytes);
        for (int b = 0; b < 2; b++)
        {
            double amax = 0;
            for (int j = 0; j < 32; j++) amax = Math.Max(amax, Math.Abs(x[b * 32 + j]));
            float d = (float)(amax / 127);
            ushort expectedBits = BitConverter.HalfToUInt16Bits((Half)d);
            Assert.That(bytes[b * 34] | (bytes[b * 34 + 1] << 8), Is.EqualTo(expectedBits), $"block {b} scale (little-endian fp16)");
            double id = 1.0 / d;
            for (int j = 0; j < 32; j++)
            {
                int q = (int)Math.Round(x[b * 32 + j] * (double)(float)id, MidpointRounding.AwayFromZero);
                Assert.That((sbyte)bytes[b * 34 + 2 + j], Is.EqualTo(q).Within(0), $"block {b} q[{j}]");
            }
        }
        Assert.That((sbyte)bytes[2 + 7], Is.EqualTo(-127), "the largest magnitude maps to -127");
    }

    [Test]
    public void Q4_0Block_IsAnFp16ScaleThen16NibbleBytes_LowNibbleFirstHalf()
    {
        var random = new Random(6);
        float[] x = RandomValues(random, 32);
        x[20] = -2f; // m, the signed value of largest magnitude: d = m / -8 = 0.25
        var bytes = new byte[18];
        GgmlQuants.QuantizeQ4_0(x, bytes);
        Assert.That(bytes[0] | (bytes[1] << 8), Is.EqualTo(BitConverter.HalfToUInt16Bits((Half)0.25f)));
        for (int j = 0; j < 16; j++)
        {
            int lo = Math.Min(15, (int)Math.Truncate(x[j] / 0.25 + 8.5));
            int hi = Math.Min(15, (int)Math.Truncate(x[j + 16] / 0.25 + 8.5));
            Assert.That(bytes[2 + j] & 0xF, Is.EqualTo(lo), $"element {j}");
            Assert.That(bytes[2 + j] >> 4, Is.EqualTo(hi), $"element {j + 16}");
        }
        Assert.That(bytes[2 + 4] >> 4, Is.EqualTo(0), "m maps to q = 0, value d * -8 = m");
    }

    /// <summary>Quantized weights in unmanaged memory, with the dequantized values (d * q from the bytes) in double.</summary>
    sealed class QuantMatrix : IDisposable
    {
        public QuantMatrix(DType type, int rows, int cols, Random random)
        {
            float[] source = RandomValues(random, rows * cols);
            long bytes = type.RowBytes((long)rows * cols);
            Memory = (nint)NativeMemory.Alloc((nuint)bytes);
            var span = new Span<byte>((void*)Memory, (int)bytes);
            if (type == DType.Q8_0) GgmlQuants.QuantizeQ8_0(source, span); else GgmlQuants.QuantizeQ4_0(source, span);
            Values = new double[rows * cols];
            int blockBytes = type.BlockBytes();
            for (int b = 0; b < rows * cols / 32; b++)
            {
                byte* block = (byte*)Memory + b * blockBytes;
                double d = (double)BitConverter.UInt16BitsToHalf((ushort)(block[0] | (block[1] << 8)));
                for (int j = 0; j < 32; j++)
                    Values[b * 32 + j] = type == DType.Q8_0 ? d * (sbyte)block[2 + j]
                        : d * ((j < 16 ? block[2 + j] & 0xF : block[2 + j - 16] >> 4) - 8);
            }
            Matrix = new WeightMatrix(Memory, type, rows, cols);
        }

        public nint Memory { get; }
        public double[] Values { get; }
        public WeightMatrix Matrix { get; }
        public void Dispose() => NativeMemory.Free((void*)Memory);

        public void AssertProduct(float[] x, float[] y, int tokens, string what)
        {
            int rows = Matrix.Rows, cols = Matrix.Cols;
            for (int t = 0; t < tokens; t++)
                for (int r = 0; r < rows; r++)
                {
                    double sum = 0, scale = 0;
                    for (int c = 0; c < cols; c++)
                    {
                        double p = Values[r * cols + c] * x[t * cols + c];
                        sum += p;
                        scale += Math.Abs(p);
                    }
                    double error = Math.Abs(y[t * rows + r] - sum);
                    if (!(error <= 1e-5 * scale + 1e-30))
                        Assert.Fail($"{what}: y[{t},{r}] = {y[t * rows + r]}, expected {sum} (error {error:E2}, scale {scale:E2})");
                }
        }
    }

    [TestCaseSource(nameof(Paths))]
    public void Dequantize_MatchesTheBytes(string isaName, DType type)
    {
        UsePath(Enum.Parse<KernelIsa>(isaName));
        using var m = new QuantMatrix(type, 3, 96, new Random(7));
        var row = new float[3 * 96];
        Arwkv.Kernels.Convert.ToFloat32(m.Memory, type, row);
        for (int i = 0; i < row.Length; i++) Assert.That(row[i], Is.EqualTo((float)m.Values[i]), $"element {i}");
    }

    [TestCaseSource(nameof(Paths))]
    public void Gemv_MatchesFloat64OfTheDequantizedWeights(string isaName, DType type)
    {
        var isa = Enum.Parse<KernelIsa>(isaName);
        UsePath(isa);
        var random = new Random(100 + (int)isa * 10 + (int)type);
        using var pool = new KernelThreadPool(2);
        foreach (int rows in new[] { 1, 3, 4, 5, 17, 67 })
            foreach (int cols in new[] { 32, 64, 96, 256, 896 })
            {
                using var m = new QuantMatrix(type, rows, cols, random);
                float[] x = RandomValues(random, cols);
                foreach (var p in new[] { null, pool })
                {
                    var y = new float[rows];
                    MatMul.Gemv(m.Matrix, x, y, p);
                    m.AssertProduct(x, y, 1, $"Gemv {type} {rows}x{cols} threads {p?.ThreadCount ?? 1}");
                }
            }
    }

    [TestCaseSource(nameof(Paths))]
    public void Gemm_MatchesFloat64OfTheDequantizedWeights(string isaName, DType type)
    {
        var isa = Enum.Parse<KernelIsa>(isaName);
        UsePath(isa);
        var random = new Random(200 + (int)isa * 10 + (int)type);
        using var pool = new KernelThreadPool(2);
        foreach (int rows in new[] { 1, 5, 17, 35 })
            foreach (int cols in new[] { 32, 96, 320 })
                foreach (int tokens in new[] { 1, 2, 5, 9 })
                {
                    using var m = new QuantMatrix(type, rows, cols, random);
                    float[] x = RandomValues(random, tokens * cols);
                    foreach (var p in new[] { null, pool })
                    {
                        var y = new float[tokens * rows];
                        MatMul.Gemm(m.Matrix, x, y, tokens, p);
                        m.AssertProduct(x, y, tokens, $"Gemm {type} {rows}x{cols} tokens {tokens} threads {p?.ThreadCount ?? 1}");
                    }
                }
    }

    [Test]
    public void Matrix_WithColumnsNotWholeBlocks_IsRefused()
    {
        var bytes = new byte[34];
        fixed (byte* p = bytes)
        {
            var w = new WeightMatrix((nint)p, DType.Q8_0, 1, 31);
            Assert.Throws<ArgumentException>(() => MatMul.Gemv(w, new float[31], new float[1]));
        }
    }
}
