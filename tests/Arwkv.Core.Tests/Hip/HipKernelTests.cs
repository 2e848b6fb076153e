using Arwkv.Hip;
using Arwkv.IO;

namespace Arwkv.Tests.Hip;

/// <summary>
/// GPU kernels against float64 references written out in the tests. They need a GPU: without one every test is
/// Ignored with HipRuntime's reason (library, runtime or device missing), so on a CPU-only machine they prove
/// nothing about the kernels; a session with a GPU runs them as they are.
/// Tolerances: float32 kernels are held to ~1e-5 relative to the output scale; bf16 operands are rounded in the
/// reference too, so only accumulation order differs.
/// </summary>
public class HipKernelTests
{
    [SetUp]
    public void RequireGpu()
    {
        HipTestDevice.Require();
    }

    // ---- RMSNorm ----------------------------------------------------------------------------------------------------

    [TestCase(7, 200)]
    [TestCase(3, 3584)]
    public void RmsNormForward_MatchesFloat64Reference(int n, int c)
    {
        float[] x = RandomFloats(n * c, 1), weight = RandomFloats(c, 2);
        using var xd = HipBuffer.FromHost<float>(x);
        using var wd = HipBuffer.FromHost<float>(weight);
        using var outd = HipBuffer.Allocate<float>(n * c);
        using var rstdd = HipBuffer.Allocate<float>(n);

        HipKernels.RmsNormForward(outd, rstdd, xd, wd, n, c, 1e-6f);
        float[] output = outd.ToArray<float>(n * c), rstd = rstdd.ToArray<float>(n);

        for (int t = 0; t < n; t++)
        {
            double sumSq = 0;
            for (int i = 0; i < c; i++) sumSq += (double)x[t * c + i] * x[t * c + i];
            double s = 1 / Math.Sqrt(sumSq / c + 1e-6);
            Assert.That(rstd[t], Is.EqualTo(s).Within(1e-5 * s), $"rstd[{t}]");
            for (int i = 0; i < c; i++)
                Assert.That(output[t * c + i], Is.EqualTo(x[t * c + i] * s * weight[i]).Within(1e-5), $"out[{t},{i}]");
        }
    }

    [Test]
    public void RmsNormBackward_AddsTheFloat64GradientsIntoExistingOnes()
    {
        const int n = 5, c = 320;
        float[] x = RandomFloats(n * c, 3), weight = RandomFloats(c, 4), dout = RandomFloats(n * c, 5);
        float[] dxStart = RandomFloats(n * c, 6), dwStart = RandomFloats(c, 7);
        using var xd = HipBuffer.FromHost<float>(x);
        using var wd = HipBuffer.FromHost<float>(weight);
        using var doutd = HipBuffer.FromHost<float>(dout);
        using var dxd = HipBuffer.FromHost<float>(dxStart);
        using var dwd = HipBuffer.FromHost<float>(dwStart);
        using var outd = HipBuffer.Allocate<float>(n * c);
        using var rstdd = HipBuffer.Allocate<float>(n);

        HipKernels.RmsNormForward(outd, rstdd, xd, wd, n, c, 1e-6f);
        HipKernels.RmsNormBackward(dxd, dwd, doutd, xd, wd, rstdd, n, c);
        float[] dx = dxd.ToArray<float>(n * c), dw = dwd.ToArray<float>(c);

        var dwExpected = dwStart.Select(v => (double)v).ToArray();
        for (int t = 0; t < n; t++)
        {
            double sumSq = 0, dot = 0;
            for (int i = 0; i < c; i++) sumSq += (double)x[t * c + i] * x[t * c + i];
            double s = 1 / Math.Sqrt(sumSq / c + 1e-6);
            for (int i = 0; i < c; i++) dot += (double)dout[t * c + i] * weight[i] * x[t * c + i];
            dot /= c;
            for (int i = 0; i < c; i++)
            {
                int e = t * c + i;
                double expected = dxStart[e] + s * (dout[e] * weight[i] - x[e] * s * s * dot);
                Assert.That(dx[e], Is.EqualTo(expected).Within(1e-4), $"dx[{t},{i}]");
                dwExpected[i] += dout[e] * x[e] * s;
            }
        }
        for (int i = 0; i < c; i++) Assert.That(dw[i], Is.EqualTo(dwExpected[i]).Within(1e-4), $"dweight[{i}]");
    }

    // ---- SwiGLU -----------------------------------------------------------------------------------------------------

    [Test]
    public void SwiGlu_ForwardAndBackwardMatchFloat64Reference()
    {
        const int count = 1000;
        float[] gate = RandomFloats(count, 8, scale: 6), up = RandomFloats(count, 9), dout = RandomFloats(count, 10);
        using var gd = HipBuffer.FromHost<float>(gate);
        using var ud = HipBuffer.FromHost<float>(up);
        using var dd = HipBuffer.FromHost<float>(dout);
        using var outd = HipBuffer.Allocate<float>(count);
        using var dgd = HipBuffer.Allocate<float>(count);
        using var dud = HipBuffer.Allocate<float>(count);
        dgd.Clear();
        dud.Clear();

        HipKernels.SwiGluForward(outd, gd, ud, count);
        HipKernels.SwiGluBackward(dgd, dud, dd, gd, ud, count);
        float[] output = outd.ToArray<float>(count), dgate = dgd.ToArray<float>(count), dup = dud.ToArray<float>(count);

        for (int i = 0; i < count; i++)
        {
            double g = gate[i], s = 1 / (1 + Math.Exp(-g));
            Assert.That(output[i], Is.EqualTo(g * s * up[i]).Within(1e-5), $"out[{i}]");
            Assert.That(dgate[i], Is.EqualTo(dout[i] * up[i] * s * (1 + g * (1 - s))).Within(1e-5), $"dgate[{i}]");
            Assert.That(dup[i], Is.EqualTo(dout[i] * g * s).Within(1e-5), $"dup[{i}]");
        }
    }

    // ---- WKV7 -------------------------------------------------------------------------------------------------------

    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    public void Wkv7Forward_F32_MatchesFloat64Reference(bool withState, bool withMask)
    {
        const int b = 2, t = 32, h = 2;
        int[]? mask = withMask ? Enumerable.Range(0, b * t).Select(i => i >= b * t - 5 || i % 7 == 3 ? 0 : 1).ToArray() : null;
        var x = Wkv7Reference.Random(b, t, h, seed: 42, withState, mask);
        var (yExpected, states, saExpected) = Wkv7Reference.Forward(x);

        using var inputs = Upload(x, DType.F32);
        using var y = HipBuffer.Allocate<float>(x.R.Length);
        using var sa = HipBuffer.Allocate<float>(x.R.Length);
        using var checkpoints = HipBuffer.Allocate<float>((long)b * h * (t / 16) * 64 * 64);
        using var state = x.StateInit != null ? HipBuffer.FromHost<float>(Wkv7Reference.ToFloat(x.StateInit)) : HipBuffer.Allocate<float>(b * h * 64 * 64);
        if (x.StateInit == null) state.Clear();
        using var maskd = mask != null ? HipBuffer.FromHost<int>(mask) : null;

        HipKernels.Wkv7Forward(y, state, checkpoints, sa, inputs.R, inputs.W, inputs.K, inputs.V, inputs.A, inputs.B, maskd, DType.F32, b, t, h);

        AssertClose(y.ToArray<float>(x.R.Length), yExpected, 2e-4, "y");
        AssertClose(sa.ToArray<float>(x.R.Length), saExpected, 2e-4, "sa");
        var finalExpected = new double[b * h * 64 * 64];
        var checkpointExpected = new double[b * h * (t / 16) * 64 * 64];
        for (int bh = 0; bh < b * h; bh++)
        {
            Array.Copy(states[bh][t], 0, finalExpected, bh * 4096, 4096);
            for (int chunk = 0; chunk < t / 16; chunk++)
                Array.Copy(states[bh][(chunk + 1) * 16], 0, checkpointExpected, (bh * (t / 16) + chunk) * 4096, 4096);
        }
        AssertClose(state.ToArray<float>(finalExpected.Length), finalExpected, 2e-4, "final state");
        AssertClose(checkpoints.ToArray<float>(checkpointExpected.Length), checkpointExpected, 2e-4, "checkpoints");
    }

    [Test]
    public void Wkv7Forward_BFloat16Inputs_MatchFloat64ReferenceOfTheRoundedInputs()
    {
        const int b = 1, t = 48, h = 3;
        var x = Wkv7Reference.RoundedToBFloat16(Wkv7Reference.Random(b, t, h, seed: 7));
        var yExpected = Wkv7Reference.Forward(x).Y;
        using var inputs = Upload(x, DType.BF16);
        using var y = HipBuffer.Allocate<float>(x.R.Length);

        HipKernels.Wkv7Forward(y, null, null, null, inputs.R, inputs.W, inputs.K, inputs.V, inputs.A, inputs.B, null, DType.BF16, b, t, h);

        AssertClose(y.ToArray<float>(x.R.Length), yExpected, 2e-4, "y");
    }

    [TestCase(false)]
    [TestCase(true)]
    public void Wkv7Backward_F32_MatchesFloat64Reference(bool withMask)
    {
        const int b = 1, t = 32, h = 2;
        int[]? mask = withMask ? Enumerable.Range(0, t).Select(i => i is 5 or 16 or >= 29 ? 0 : 1).ToArray() : null;
        var x = Wkv7Reference.Random(b, t, h, seed: 19, withState: true, mask);
        double[] dyValues = RandomFloats(x.R.Length, 20).Select(v => (double)v).ToArray();
        var expected = Wkv7Reference.Backward(x, dyValues);

        using var inputs = Upload(x, DType.F32);
        int count = x.R.Length, stateCount = b * h * 64 * 64;
        using var y = HipBuffer.Allocate<float>(count);
        using var sa = HipBuffer.Allocate<float>(count);
        using var checkpoints = HipBuffer.Allocate<float>((long)stateCount * (t / 16));
        using var stateInit = HipBuffer.FromHost<float>(Wkv7Reference.ToFloat(x.StateInit!));
        using var state = HipBuffer.FromHost<float>(Wkv7Reference.ToFloat(x.StateInit!));
        using var maskd = mask != null ? HipBuffer.FromHost<int>(mask) : null;
        using var dy = HipBuffer.FromHost<float>(Wkv7Reference.ToFloat(dyValues));
        var grads = Enumerable.Range(0, 6).Select(_ => HipBuffer.Allocate<float>(count)).ToArray();
        using var dstate = HipBuffer.Allocate<float>(stateCount);
        try
        {
            HipKernels.Wkv7Forward(y, state, checkpoints, sa, inputs.R, inputs.W, inputs.K, inputs.V, inputs.A, inputs.B, maskd, DType.F32, b, t, h);
            HipKernels.Wkv7Backward(grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], dstate, dy, checkpoints, sa, stateInit,
                inputs.R, inputs.W, inputs.K, inputs.V, inputs.A, inputs.B, maskd, DType.F32, b, t, h);

            var expectedAll = new[] { expected.R, expected.W, expected.K, expected.V, expected.A, expected.B };
            string[] names = ["dr", "dw", "dk", "dv", "da", "db"];
            for (int g = 0; g < 6; g++) AssertClose(grads[g].ToArray<float>(count), expectedAll[g], 1e-3, names[g]);
            AssertClose(dstate.ToArray<float>(stateCount), expected.StateInit, 1e-3, "dstate_init");
        }
        finally
        {
            foreach (var grad in grads) grad.Dispose();
        }
    }

    [Test]
    public void Wkv7Decode_EqualsOneForwardStep()
    {
        const int b = 2, h = 2;
        var x = Wkv7Reference.Random(b, 1, h, seed: 77, withState: true);
        var (yExpected, states, _) = Wkv7Reference.Forward(x);
        using var inputs = Upload(x, DType.F32);
        using var y = HipBuffer.Allocate<float>(x.R.Length);
        using var state = HipBuffer.FromHost<float>(Wkv7Reference.ToFloat(x.StateInit!));

        HipKernels.Wkv7Decode(y, state, inputs.R, inputs.W, inputs.K, inputs.V, inputs.A, inputs.B, b, h);

        AssertClose(y.ToArray<float>(x.R.Length), yExpected, 1e-5, "y");
        var finalExpected = states.SelectMany(s => s[1]).ToArray();
        AssertClose(state.ToArray<float>(finalExpected.Length), finalExpected, 1e-5, "state");
    }

    // ---- GEMM -------------------------------------------------------------------------------------------------------

    static IEnumerable<TestCaseData> GemmCases()
    {
        foreach (bool ta in new[] { false, true })
        foreach (bool tb in new[] { false, true })
        foreach (var (at, bt) in new[] { (DType.F32, DType.F32), (DType.BF16, DType.BF16), (DType.F32, DType.BF16) })
        foreach (bool naive in new[] { false, true })
            yield return new TestCaseData(ta, tb, at, bt, naive);
    }

    [TestCaseSource(nameof(GemmCases))]
    public void Gemm_MatchesFloat64Reference(bool transposeA, bool transposeB, DType aType, DType bType, bool naive)
    {
        // Sizes that are not multiples of the 64x64x16 tiles exercise every bounds check.
        const int m = 67, n = 70, k = 33;
        const float alpha = 0.5f, beta = 1.0f;
        float[] a = RoundIf(aType, RandomFloats(m * k, 30)), bm = RoundIf(bType, RandomFloats(k * n, 31)), c0 = RandomFloats(m * n, 32);
        using var ad = UploadAs(a, aType);
        using var bd = UploadAs(bm, bType);
        using var cd = HipBuffer.FromHost<float>(c0);

        if (naive) HipKernels.GemmNaive(cd, ad, aType, bd, bType, transposeA, transposeB, m, n, k, alpha, beta);
        else HipKernels.Gemm(cd, ad, aType, bd, bType, transposeA, transposeB, m, n, k, alpha, beta);
        float[] c = cd.ToArray<float>(m * n);

        for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
        {
            double sum = 0;
            for (int p = 0; p < k; p++)
            {
                double av = transposeA ? a[p * m + i] : a[i * k + p];
                double bv = transposeB ? bm[j * k + p] : bm[p * n + j];
                sum += av * bv;
            }
            Assert.That(c[i * n + j], Is.EqualTo(alpha * sum + beta * c0[i * n + j]).Within(1e-4), $"c[{i},{j}]");
        }
    }

    [Test]
    public void Gemm_WithBetaZero_IgnoresWhateverTheOutputHeld()
    {
        const int m = 3, n = 65, k = 17;
        float[] a = RandomFloats(m * k, 40), bm = RandomFloats(n * k, 41);
        using var ad = HipBuffer.FromHost<float>(a);
        using var bd = HipBuffer.FromHost<float>(bm);
        using var cd = HipBuffer.FromHost<float>(Enumerable.Repeat(float.NaN, m * n).ToArray());

        HipKernels.Gemm(cd, ad, DType.F32, bd, DType.F32, transposeA: false, transposeB: true, m, n, k);

        Assert.That(cd.ToArray<float>(m * n), Has.None.NaN);
    }

    // ---- conversions ------------------------------------------------------------------------------------------------

    [Test]
    public void ConvertToBFloat16_RoundsExactlyLikeTheCpuConversion()
    {
        float[] values = [.. RandomFloats(997, 50, scale: 1000), float.NaN, float.PositiveInfinity, -0f, 1.00390625f, 1.01171875f];
        using var input = HipBuffer.FromHost<float>(values);
        using var output = HipBuffer.Allocate<ushort>(values.Length);

        HipKernels.ConvertToBFloat16(output, input, values.Length);
        ushort[] bits = output.ToArray<ushort>(values.Length);

        for (int i = 0; i < values.Length; i++)
            Assert.That(bits[i], Is.EqualTo(Arwkv.Kernels.Convert.Float32ToBFloat16(values[i])), $"value {values[i]}");
    }

    // ---- helpers ----------------------------------------------------------------------------------------------------

    sealed class DeviceInputs(HipBuffer r, HipBuffer w, HipBuffer k, HipBuffer v, HipBuffer a, HipBuffer b) : IDisposable
    {
        public HipBuffer R { get; } = r;
        public HipBuffer W { get; } = w;
        public HipBuffer K { get; } = k;
        public HipBuffer V { get; } = v;
        public HipBuffer A { get; } = a;
        public HipBuffer B { get; } = b;

        public void Dispose()
        {
            foreach (var buffer in new[] { R, W, K, V, A, B }) buffer.Dispose();
        }
    }

    static DeviceInputs Upload(Wkv7Reference.Inputs x, DType type)
    {
        HipBuffer Up(double[] values) => type == DType.BF16
            ? HipBuffer.FromHost<ushort>(Wkv7Reference.ToBFloat16(values))
            : HipBuffer.FromHost<float>(Wkv7Reference.ToFloat(values));
        return new DeviceInputs(Up(x.R), Up(x.W), Up(x.K), Up(x.V), Up(x.A), Up(x.Bv));
    }

    static HipBuffer UploadAs(float[] values, DType type) => type == DType.BF16
        ? HipBuffer.FromHost<ushort>(values.Select(Arwkv.Kernels.Convert.Float32ToBFloat16).ToArray())
        : HipBuffer.FromHost<float>(values);

    static float[] RoundIf(DType type, float[] values) => type == DType.BF16
        ? values.Select(v => BitConverter.Int32BitsToSingle(Arwkv.Kernels.Convert.Float32ToBFloat16(v) << 16)).ToArray()
        : values;

    static float[] RandomFloats(int count, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++) values[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return values;
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
