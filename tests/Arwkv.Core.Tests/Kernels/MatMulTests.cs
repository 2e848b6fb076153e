using System.Runtime.InteropServices;
using Arwkv.IO;
using Arwkv.Kernels;

namespace Arwkv.Tests.CpuKernels; // not "Kernels": that would shadow Arwkv.Kernels inside Arwkv.Tests.*

/// <summary>A weight matrix in unmanaged memory of exactly its size, with its values widened to double.</summary>
sealed unsafe class TestMatrix : IDisposable
{
    public TestMatrix(DType type, int rows, int cols, Random random)
    {
        Rows = rows;
        Cols = cols;
        Values = new double[rows * cols];
        long bytes = (long)rows * cols * type.SizeOf();
        Memory = (nint)NativeMemory.Alloc((nuint)Math.Max(1, bytes));
        for (int i = 0; i < rows * cols; i++)
        {
            float v = (float)(random.NextDouble() * 2 - 1);
            switch (type)
            {
                case DType.F32:
                    ((float*)Memory)[i] = v;
                    Values[i] = v;
                    break;
                case DType.F16:
                    ((Half*)Memory)[i] = (Half)v;
                    Values[i] = (double)((Half*)Memory)[i];
                    break;
                case DType.BF16:
                    ((ushort*)Memory)[i] = Arwkv.Kernels.Convert.Float32ToBFloat16(v);
                    Values[i] = BitConverter.Int32BitsToSingle(((ushort*)Memory)[i] << 16);
                    break;
            }
        }
        Matrix = new WeightMatrix(Memory, type, rows, cols);
    }

    public int Rows { get; }
    public int Cols { get; }
    public nint Memory { get; }
    public double[] Values { get; }
    public WeightMatrix Matrix { get; }

    /// <summary>Checks y[t, r] against the float64 product, relative to sum |W x| (the scale of rounding errors).</summary>
    public void AssertProduct(float[] x, float[] y, int tokens, string what, float[]? yBefore = null, double tolerance = 1e-5)
    {
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < Rows; r++)
            {
                double sum = yBefore is null ? 0 : yBefore[t * Rows + r], scale = Math.Abs(sum);
                for (int c = 0; c < Cols; c++)
                {
                    double p = Values[r * Cols + c] * x[t * Cols + c];
                    sum += p;
                    scale += Math.Abs(p);
                }
                double error = Math.Abs(y[t * Rows + r] - sum);
                if (!(error <= tolerance * scale + 1e-30))
                    Assert.Fail($"{what}: y[{t},{r}] = {y[t * Rows + r]}, expected {sum} (error {error:E2}, scale {scale:E2})");
            }
    }

    public void Dispose() => NativeMemory.Free((void*)Memory);
}

[TestFixture]
public class MatMulTests
{
    static readonly int[] RowCounts = [1, 3, 4, 5, 17, 67];
    static readonly int[] ColCounts = [1, 7, 15, 16, 17, 31, 32, 33, 63, 100, 257];

    static IEnumerable<TestCaseData> Paths()
    {
        foreach (var isa in new[] { KernelIsa.Scalar, KernelIsa.Vector128, KernelIsa.Vector256, KernelIsa.Vector512 })
            foreach (var type in new[] { DType.F32, DType.F16, DType.BF16 })
                yield return new TestCaseData(isa.ToString(), type).SetArgDisplayNames(isa.ToString(), type.ToString());
    }

    static void UsePath(KernelIsa isa)
    {
        Assume.That(isa <= MatMul.DetectedIsa, $"this CPU has no {isa} path");
        MatMul.ForceIsa = isa;
        Assert.That(MatMul.Isa, Is.EqualTo(isa));
    }

    static float[] RandomVector(Random random, int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(random.NextDouble() * 2 - 1);
        return v;
    }

    [TearDown]
    public void ResetPath() => MatMul.ForceIsa = null;

    [TestCaseSource(nameof(Paths))]
    public void GemvMatchesFloat64(string isaName, DType type)
    {
        var isa = Enum.Parse<KernelIsa>(isaName);
        UsePath(isa);
        var random = new Random(1234 + (int)isa * 10 + (int)type);
        using var pool = new KernelThreadPool(2);
        foreach (int rows in RowCounts)
            foreach (int cols in ColCounts)
            {
                using var m = new TestMatrix(type, rows, cols, random);
                var x = RandomVector(random, cols);
                foreach (var p in new[] { null, pool })
                {
                    var y = new float[rows];
                    MatMul.Gemv(m.Matrix, x, y, p);
                    m.AssertProduct(x, y, 1, $"Gemv {rows}x{cols} threads {p?.ThreadCount ?? 1}");
                }
            }
    }

    [TestCaseSource(nameof(Paths))]
    public void GemmMatchesFloat64(string isaName, DType type)
    {
        var isa = Enum.Parse<KernelIsa>(isaName);
        UsePath(isa);
        var random = new Random(4321 + (int)isa * 10 + (int)type);
        using var pool = new KernelThreadPool(2);
        foreach (int rows in new[] { 1, 5, 17, 35 })
            foreach (int cols in new[] { 1, 15, 17, 33, 100 })
            {
                using var m = new TestMatrix(type, rows, cols, random);
                for (int tokens = 1; tokens <= 9; tokens++)
                {
                    var x = RandomVector(random, tokens * cols);
                    foreach (var p in new[] { null, pool })
                    {
                        var y = new float[tokens * rows];
                        MatMul.Gemm(m.Matrix, x, y, tokens, p);
                        m.AssertProduct(x, y, tokens, $"Gemm {rows}x{cols} tokens {tokens} threads {p?.ThreadCount ?? 1}");
                    }
                }
            }
    }

    [TestCaseSource(nameof(Paths))]
    public void AccumulatingVariantsAddToY(string isaName, DType type)
    {
        var isa = Enum.Parse<KernelIsa>(isaName);
        UsePath(isa);
        var random = new Random(99 + (int)isa * 10 + (int)type);
        using var pool = new KernelThreadPool(2);
        using var m = new TestMatrix(type, 21, 45, random);
        foreach (int tokens in new[] { 1, 6 })
        {
            var x = RandomVector(random, tokens * 45);
            var before = RandomVector(random, tokens * 21);
            var y = (float[])before.Clone();
            if (tokens == 1) MatMul.GemvAdd(m.Matrix, x, y, pool);
            else MatMul.GemmAdd(m.Matrix, x, y, tokens, pool);
            m.AssertProduct(x, y, tokens, $"accumulate tokens {tokens}", before);
        }
    }

    /// <summary>Many row items per thread, x beyond the stack buffer, and X split into several column chunks.</summary>
    [TestCaseSource(nameof(Paths))]
    public void LargeShapesUseEveryBlockingPath(string isaName, DType type)
    {
        var isa = Enum.Parse<KernelIsa>(isaName);
        UsePath(isa);
        var random = new Random(7 + (int)isa * 10 + (int)type);
        using var pool = new KernelThreadPool(2);

        using (var tall = new TestMatrix(type, 1003, 40, random))
        {
            var x = RandomVector(random, 40);
            var y = new float[1003];
            MatMul.Gemv(tall.Matrix, x, y, pool);
            tall.AssertProduct(x, y, 1, "Gemv 1003x40");
        }
        using (var wide = new TestMatrix(type, 7, 5001, random))
        {
            var x = RandomVector(random, 5001);
            var y = new float[7];
            MatMul.Gemv(wide.Matrix, x, y, pool);
            wide.AssertProduct(x, y, 1, "Gemv 7x5001");
        }
        // 64 tokens x 2100 columns of X is more than one L2 chunk, so Gemm makes several column passes.
        using (var chunked = new TestMatrix(type, 9, 2100, random))
        {
            const int tokens = 64;
            var x = RandomVector(random, tokens * 2100);
            var y = new float[tokens * 9];
            MatMul.Gemm(chunked.Matrix, x, y, tokens, pool);
            chunked.AssertProduct(x, y, tokens, "Gemm 9x2100 tokens 64");
            var before = RandomVector(random, tokens * 9);
            before.CopyTo(y, 0);
            MatMul.GemmAdd(chunked.Matrix, x, y, tokens, pool);
            chunked.AssertProduct(x, y, tokens, "GemmAdd 9x2100 tokens 64", before);
        }
    }

    /// <summary>
    /// BF16 rows that split into whole 32-column steps are read in place by the vector Gemm (no packing pass); the
    /// same shapes through the widening path must agree with float64 too. 67 and 130 rows cross the 64-row work
    /// items and end in a partial 4-row block; 64 tokens x 2112 columns makes two column passes.
    /// </summary>
    [TestCase("Vector512", false)]
    [TestCase("Vector512", true)]
    [TestCase("Vector256", false)]
    [TestCase("Vector256", true)]
    [TestCase("Vector128", false)]
    [TestCase("Vector128", true)]
    public void Bf16GemmOnWhole32ColumnSteps(string isaName, bool forcePacked)
    {
        UsePath(Enum.Parse<KernelIsa>(isaName));
        MatMul.ForcePackedBf16 = forcePacked;
        try
        {
            var random = new Random(forcePacked ? 11 : 12);
            using var pool = new KernelThreadPool(2);
            foreach (var (rows, cols, tokens) in new[] { (1, 32, 2), (5, 64, 7), (67, 96, 13), (130, 32, 6), (9, 2112, 64) })
            {
                using var m = new TestMatrix(DType.BF16, rows, cols, random);
                var x = RandomVector(random, tokens * cols);
                foreach (var p in new[] { null, pool })
                {
                    var y = new float[tokens * rows];
                    MatMul.Gemm(m.Matrix, x, y, tokens, p);
                    m.AssertProduct(x, y, tokens, $"Gemm BF16 {rows}x{cols} tokens {tokens} threads {p?.ThreadCount ?? 1}");
                    var before = RandomVector(random, tokens * rows);
                    before.CopyTo(y, 0);
                    MatMul.GemmAdd(m.Matrix, x, y, tokens, p);
                    m.AssertProduct(x, y, tokens, $"GemmAdd BF16 {rows}x{cols} tokens {tokens}", before);
                }
            }
        }
        finally
        {
            MatMul.ForcePackedBf16 = false;
        }
    }

    /// <summary>
    /// The fused SwiGLU product (the activation applied per tile, in-place BF16 on every vector path) and its fallback
    /// must give exactly what two products and the separate activation pass give, and that must match float64.
    /// </summary>
    [TestCaseSource(nameof(Paths))]
    public void GemmSwiGluEqualsSeparateProductsAndActivation(string isaName, DType type)
    {
        UsePath(Enum.Parse<KernelIsa>(isaName));
        var random = new Random(21);
        using var pool = new KernelThreadPool(2);
        foreach (var (rows, cols, tokens) in new[] { (67, 96, 13), (130, 64, 6), (5, 32, 1), (9, 100, 7), (64, 2112, 300) })
        {
            using var gate = new TestMatrix(type, rows, cols, random);
            using var up = new TestMatrix(type, rows, cols, random);
            var x = RandomVector(random, tokens * cols);
            foreach (var p in new[] { null, pool })
            {
                string what = $"{type} {rows}x{cols} tokens {tokens} threads {p?.ThreadCount ?? 1}";
                var g = new float[tokens * rows];
                var u = new float[tokens * rows];
                MatMul.Gemm(gate.Matrix, x, g, tokens, p);
                MatMul.Gemm(up.Matrix, x, u, tokens, p);
                gate.AssertProduct(x, g, tokens, "gate " + what);
                up.AssertProduct(x, u, tokens, "up " + what);
                var expected = new float[tokens * rows];
                for (int i = 0; i < expected.Length; i++)
                {
                    float product = g[i] * u[i];
                    expected[i] = 1f / (1f + MathF.Exp(-g[i])) * product;
                }
                MatMul.SwiGlu(g, u, p);
                Assert.That(g, Is.EqualTo(expected).Within(1e-4).Percent, "separate activation " + what);

                var y = new float[tokens * rows];
                var scratch = new float[tokens * rows];
                MatMul.GemmSwiGlu(gate.Matrix, up.Matrix, x, y, scratch, tokens, p);
                Assert.That(y, Is.EqualTo(g), "fused " + what);
            }
        }
    }

    /// <summary>Gemm3 (three products in one pass, each with its own input) must equal three separate products.</summary>
    [TestCaseSource(nameof(Paths))]
    public void Gemm3EqualsThreeProducts(string isaName, DType type)
    {
        UsePath(Enum.Parse<KernelIsa>(isaName));
        var random = new Random(22);
        using var pool = new KernelThreadPool(2);
        foreach (var (rows, cols, tokens) in new[] { (67, 96, 13), (4, 64, 2), (3, 32, 1), (9, 100, 7), (40, 2112, 64) })
        {
            var matrices = new[] { new TestMatrix(type, rows, cols, random), new TestMatrix(type, rows + 5, cols, random), new TestMatrix(type, 2, cols, random) };
            try
            {
                var xs = matrices.Select(_ => RandomVector(random, tokens * cols)).ToArray();
                foreach (var p in new[] { null, pool })
                {
                    var ys = matrices.Select(m => new float[tokens * m.Rows]).ToArray();
                    MatMul.Gemm3(matrices[0].Matrix, xs[0], ys[0], matrices[1].Matrix, xs[1], ys[1], matrices[2].Matrix, xs[2], ys[2], tokens, p);
                    for (int i = 0; i < 3; i++)
                    {
                        var separate = new float[tokens * matrices[i].Rows];
                        MatMul.Gemm(matrices[i].Matrix, xs[i], separate, tokens, p);
                        string what = $"product {i} {type} {matrices[i].Rows}x{cols} tokens {tokens} threads {p?.ThreadCount ?? 1}";
                        Assert.That(ys[i], Is.EqualTo(separate), what);
                        matrices[i].AssertProduct(xs[i], ys[i], tokens, what);
                    }
                }
            }
            finally
            {
                foreach (var m in matrices) m.Dispose();
            }
        }
    }

    [Test]
    public void NaiveReferenceMatchesFloat64()
    {
        var random = new Random(5);
        foreach (var type in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            using var m = new TestMatrix(type, 9, 37, random);
            var x = RandomVector(random, 37);
            var y = new float[9];
            MatMul.GemvNaive(m.Matrix, x, y);
            m.AssertProduct(x, y, 1, $"naive {type}");
        }
    }

    [Test]
    public void FastPathsAgreeWithNaiveOnNonFiniteInputs()
    {
        // A NaN or infinity in x must reach the output of every row it touches, as in the reference.
        var random = new Random(11);
        using var m = new TestMatrix(DType.BF16, 6, 70, random);
        var x = RandomVector(random, 70);
        x[40] = float.NaN;
        var y = new float[6];
        MatMul.Gemv(m.Matrix, x, y);
        Assert.That(y, Has.All.NaN);
    }

    [Test]
    public void ShortBuffersAreRejected()
    {
        var random = new Random(3);
        using var m = new TestMatrix(DType.F32, 4, 8, random);
        Assert.Throws<ArgumentException>(() => MatMul.Gemv(m.Matrix, new float[7], new float[4]));
        Assert.Throws<ArgumentException>(() => MatMul.Gemv(m.Matrix, new float[8], new float[3]));
        Assert.Throws<ArgumentException>(() => MatMul.Gemm(m.Matrix, new float[15], new float[8], 2));
        Assert.Throws<ArgumentException>(() => MatMul.Gemm(m.Matrix, new float[16], new float[7], 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => MatMul.Gemm(m.Matrix, new float[16], new float[8], -1));
    }

    [Test]
    public void PermuteEvenOddReordersFullBlocksOnly()
    {
        var source = Enumerable.Range(0, 37).Select(i => (float)i).ToArray();
        var destination = new float[37];
        MatMul.PermuteEvenOdd(source, destination, 16);
        var expected = new List<float>();
        for (int b = 0; b < 32; b += 16)
        {
            for (int i = 0; i < 16; i += 2) expected.Add(b + i);
            for (int i = 1; i < 16; i += 2) expected.Add(b + i);
        }
        for (int i = 32; i < 37; i++) expected.Add(i);
        Assert.That(destination, Is.EqualTo(expected));
    }
}
