using Arwkv.Kernels;
using Arwkv.Layers;

namespace Arwkv.Tests.Model;

/// <summary>A time-mix LoRA's two products (x A through MatMul, mid B through its own kernel) against float64.</summary>
internal class LoraWeightsTests
{
    [TearDown]
    public void ResetPath() => MatMul.ForceIsa = null;

    [TestCase(KernelIsa.Vector512, true)]
    [TestCase(KernelIsa.Vector512, false)]
    [TestCase(KernelIsa.Vector256, true)]
    [TestCase(KernelIsa.Vector256, false)]
    [TestCase(KernelIsa.Vector128, true)]
    [TestCase(KernelIsa.Vector128, false)]
    [TestCase(KernelIsa.Scalar, true)]
    [TestCase(KernelIsa.Scalar, false)]
    public void DownAndUpMatchFloat64(KernelIsa isa, bool bf16)
    {
        Assume.That(isa <= MatMul.DetectedIsa, $"this CPU has no {isa} path");
        MatMul.ForceIsa = isa;
        var random = new Random(3 + (int)isa);
        foreach (var (hidden, rank) in new[] { (64, 1), (96, 5), (100, 32), (128, 64), (896, 32) })
            foreach (int rows in new[] { 1, 3, 4, 7, 16 })
            {
                // A's values are BF16 values when the checkpoint stores A in BF16 (the loader reads them exactly).
                float[] a = Random(random, hidden * rank, bf16);
                float[] b = Random(random, rank * hidden, bf16: false);
                float[] x = Random(random, rows * hidden, bf16: false);
                var lora = new LoraWeights(a, b, hidden, rank, aIsBFloat16: bf16 && hidden % 32 == 0);
                string what = $"{isa} bf16 {bf16} C {hidden} rank {rank} rows {rows}";

                var mid = new float[rows * rank];
                MatMul.Gemm(lora.Down, x, mid, rows);
                AssertProduct(x, a, mid, rows, hidden, rank, "x A " + what);

                var output = new float[rows * hidden];
                output.AsSpan().Fill(float.NaN); // every element must be written
                lora.ApplyUp(mid, output, rows);
                AssertProduct(mid, b, output, rows, rank, hidden, "mid B " + what);
            }
    }

    [Test]
    public void ValuesThatAreNotBFloat16AreRefused()
    {
        float[] a = [1.0f + 1e-6f, 0, 0, 0];
        Assert.Throws<ArgumentException>(() => new LoraWeights(a, new float[4], 2, 2, aIsBFloat16: true));
    }

    /// <summary>actual[rows, n] against the float64 product of left[rows, k] and right[k, n], relative to sum |terms|.</summary>
    private static void AssertProduct(float[] left, float[] right, float[] actual, int rows, int k, int n, string what)
    {
        for (int t = 0; t < rows; t++)
            for (int c = 0; c < n; c++)
            {
                double sum = 0, scale = 0;
                for (int j = 0; j < k; j++)
                {
                    double p = (double)left[t * k + j] * right[j * n + c];
                    sum += p;
                    scale += Math.Abs(p);
                }
                Assert.That(actual[t * n + c], Is.EqualTo(sum).Within(1e-5 * scale + 1e-30), $"{what} [{t}, {c}]");
            }
    }

    private static float[] Random(Random random, int n, bool bf16)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++)
        {
            float f = (float)(random.NextDouble() * 2 - 1);
            v[i] = bf16 ? BitConverter.Int32BitsToSingle(Arwkv.Kernels.Convert.Float32ToBFloat16(f) << 16) : f;
        }
        return v;
    }
}
