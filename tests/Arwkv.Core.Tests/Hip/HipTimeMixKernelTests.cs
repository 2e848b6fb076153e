using Arwkv.Hip;

namespace Arwkv.Tests.Hip;

/// <summary>
/// The time-mix kernels (timemix.hip) that had no test, plus the bf16 -> f32 conversion. Every forward is checked
/// against a float64 formula written out here, every backward against central finite differences of that same
/// formula (so the test does not restate the kernel's derivative). Gradients start from a non-zero fill, since the
/// backward kernels add into them. Shapes leave tails: C = 70 (inside one 256-thread column block), C = 260 (a
/// second, partial block), N = 66 or 67 (more tokens than the 64 token slices, so the grid-stride loop runs twice),
/// n = 1000 elementwise (not a multiple of 256).
/// </summary>
public class HipTimeMixKernelTests
{
    const float Fill = 0.5f;

    [SetUp]
    public void RequireGpu()
    {
        HipTestDevice.Require();
    }

    [Test]
    public void ConvertToFloat32_WidensEveryBitPatternExactly()
    {
        var rng = new Random(1);
        ushort[] bits = [.. Enumerable.Range(0, 997).Select(_ => (ushort)rng.Next(0, 65536)), 0x7FC0, 0x7F80, 0xFF80, 0x0001, 0x8000, 0x7F81];
        using var input = HipBuffer.FromHost<ushort>(bits);
        using var output = HipBuffer.Allocate<float>(bits.Length);

        HipKernels.ConvertToFloat32(output, input, bits.Length);
        float[] values = output.ToArray<float>(bits.Length);

        for (int i = 0; i < bits.Length; i++)
            Assert.That(BitConverter.SingleToInt32Bits(values[i]), Is.EqualTo(bits[i] << 16), $"bits 0x{bits[i]:X4}");
    }

    [Test]
    public void Tanh_ForwardMatchesFloat64AndBackwardMatchesFiniteDifferences()
    {
        const int n = 1000;
        float[] x = Random(n, 2, 2), dout = Random(n, 3);
        Func<double[][], double[]> f = i => i[0].Select(Math.Tanh).ToArray();
        using var xd = HipBuffer.FromHost<float>(x);
        using var outD = HipBuffer.Allocate<float>(n);
        using var doutD = HipBuffer.FromHost<float>(dout);
        using var dx = Filled(n);

        HipKernels.TanhForward(outD, xd, n);
        HipKernels.TanhBackward(dx, doutD, outD, n);

        AssertClose(outD.ToArray<float>(n), f([D(x)]), 1e-6, "tanh");
        AssertClose(dx.ToArray<float>(n), Plus(FiniteDifferences(f, [D(x)], dout, 0)), 1e-5, "dx");
    }

    [Test]
    public void Multiply_ForwardMatchesFloat64AndBackwardMatchesFiniteDifferences()
    {
        const int n = 1000;
        float[] y = Random(n, 4), g = Random(n, 5), dout = Random(n, 6);
        Func<double[][], double[]> f = i => i[0].Select((v, e) => v * i[1][e]).ToArray();
        using var yd = HipBuffer.FromHost<float>(y);
        using var gd = HipBuffer.FromHost<float>(g);
        using var outD = HipBuffer.Allocate<float>(n);
        using var doutD = HipBuffer.FromHost<float>(dout);
        using var dy = Filled(n);
        using var dg = Filled(n);

        HipKernels.MultiplyForward(outD, yd, gd, n);
        HipKernels.MultiplyBackward(dy, dg, doutD, yd, gd, n);

        double[][] inputs = [D(y), D(g)];
        AssertClose(outD.ToArray<float>(n), f(inputs), 1e-6, "out");
        AssertClose(dy.ToArray<float>(n), Plus(FiniteDifferences(f, inputs, dout, 0)), 1e-5, "dy");
        AssertClose(dg.ToArray<float>(n), Plus(FiniteDifferences(f, inputs, dout, 1)), 1e-5, "dg");
    }

    [Test]
    public void ValueResidual_ForwardMatchesFloat64AndBackwardMatchesFiniteDifferences()
    {
        const int n = 1000;
        float[] v = Random(n, 7), vFirst = Random(n, 8), gate = Random(n, 9).Select(x => (x + 1) / 2).ToArray(), dout = Random(n, 10);
        Func<double[][], double[]> f = i => i[0].Select((vv, e) => vv + (i[1][e] - vv) * i[2][e]).ToArray();
        using var vd = HipBuffer.FromHost<float>(v);
        using var vfd = HipBuffer.FromHost<float>(vFirst);
        using var gd = HipBuffer.FromHost<float>(gate);
        using var outD = HipBuffer.Allocate<float>(n);
        using var doutD = HipBuffer.FromHost<float>(dout);
        using var dv = Filled(n);
        using var dvFirst = Filled(n);
        using var dgate = Filled(n);

        HipKernels.ValueResidualForward(outD, vd, vfd, gd, n);
        HipKernels.ValueResidualBackward(dv, dvFirst, dgate, doutD, vd, vfd, gd, n);

        double[][] inputs = [D(v), D(vFirst), D(gate)];
        AssertClose(outD.ToArray<float>(n), f(inputs), 1e-6, "out");
        AssertClose(dv.ToArray<float>(n), Plus(FiniteDifferences(f, inputs, dout, 0)), 1e-5, "dv");
        AssertClose(dvFirst.ToArray<float>(n), Plus(FiniteDifferences(f, inputs, dout, 1)), 1e-5, "dvFirst");
        AssertClose(dgate.ToArray<float>(n), Plus(FiniteDifferences(f, inputs, dout, 2)), 1e-5, "dgate");
    }

    [TestCase(66, 70, true)]
    [TestCase(3, 260, true)]
    [TestCase(5, 70, false)]
    public void SigmoidBias_ForwardMatchesFloat64AndBackwardMatchesFiniteDifferences(int n, int c, bool withBias)
    {
        float[] x = Random(n * c, 11, 3), bias = Random(c, 12), dout = Random(n * c, 13);
        Func<double[][], double[]> f = i => i[0].Select((v, e) => Sigmoid(v + (withBias ? i[1][e % c] : 0))).ToArray();
        using var xd = HipBuffer.FromHost<float>(x);
        using var bd = HipBuffer.FromHost<float>(bias);
        using var outD = HipBuffer.Allocate<float>(n * c);
        using var doutD = HipBuffer.FromHost<float>(dout);
        using var dx = Filled(n * c);
        using var dbias = Filled(c);

        HipKernels.SigmoidForward(outD, xd, withBias ? bd : null, n, c);
        HipKernels.SigmoidBackward(dx, withBias ? dbias : null, doutD, outD, n, c);

        double[][] inputs = [D(x), D(bias)];
        AssertClose(outD.ToArray<float>(n * c), f(inputs), 1e-6, "out");
        AssertClose(dx.ToArray<float>(n * c), Plus(FiniteDifferences(f, inputs, dout, 0)), 1e-5, "dx");
        double[] expectedBias = withBias ? Plus(FiniteDifferences(f, inputs, dout, 1)) : Enumerable.Repeat((double)Fill, c).ToArray();
        AssertClose(dbias.ToArray<float>(c), expectedBias, 1e-5, withBias ? "dbias" : "dbias untouched without a bias");
    }

    [TestCase(66, 70, true)]
    [TestCase(3, 260, false)]
    public void TimeMixDecay_ForwardMatchesFloat64AndBackwardMatchesFiniteDifferences(int n, int c, bool withDw0)
    {
        float[] z = Random(n * c, 14, 3), w0 = Random(c, 15), dout = Random(n * c, 16);
        double scale = Math.Exp(-0.5);
        Func<double[][], double[]> f = i => i[0].Select((v, e) => Math.Exp(-scale * Sigmoid(i[1][e % c] + v))).ToArray();
        using var zd = HipBuffer.FromHost<float>(z);
        using var wd = HipBuffer.FromHost<float>(w0);
        using var decay = HipBuffer.Allocate<float>(n * c);
        using var doutD = HipBuffer.FromHost<float>(dout);
        using var dz = Filled(n * c);
        using var dw0 = Filled(c);

        HipKernels.TimeMixDecayForward(decay, zd, wd, n, c);
        HipKernels.TimeMixDecayBackward(dz, withDw0 ? dw0 : null, doutD, decay, n, c);

        double[][] inputs = [D(z), D(w0)];
        AssertClose(decay.ToArray<float>(n * c), f(inputs), 1e-6, "decay");
        // The kernel recovers sigmoid from the saved float32 decay through a log, hence the looser tolerance.
        AssertClose(dz.ToArray<float>(n * c), Plus(FiniteDifferences(f, inputs, dout, 0)), 2e-5, "dz");
        double[] expectedW0 = withDw0 ? Plus(FiniteDifferences(f, inputs, dout, 1)) : Enumerable.Repeat((double)Fill, c).ToArray();
        AssertClose(dw0.ToArray<float>(c), expectedW0, 2e-4, "dw0");
    }

    [TestCase(2, 33, 70, true)]
    [TestCase(1, 3, 260, false)]
    public void TimeMixLerpBackward_MatchesFiniteDifferencesOfTheLerps(int b, int t, int c, bool withShift)
    {
        int tokens = b * t * c;
        float[] x = Random(tokens, 17), lerp = Random(6 * c, 18), shift = Random(b * c, 19), dout = Random(6 * tokens, 20);
        Func<double[][], double[]> f = i =>
        {
            var output = new double[6 * tokens];
            for (int m = 0; m < 6; m++)
            for (int e = 0; e < tokens; e++)
            {
                int ch = e % c, tt = e / c % t, bb = e / c / t;
                double prev = tt > 0 ? i[0][e - c] : withShift ? shift[bb * c + ch] : 0;
                output[m * tokens + e] = i[0][e] + (prev - i[0][e]) * i[1][m * c + ch];
            }
            return output;
        };
        using var xd = HipBuffer.FromHost<float>(x);
        using var ld = HipBuffer.FromHost<float>(lerp);
        using var sd = HipBuffer.FromHost<float>(shift);
        using var doutD = HipBuffer.FromHost<float>(dout);
        using var dx = Filled(tokens);
        using var dlerp = Filled(6 * c);

        HipKernels.TimeMixLerpBackward(dx, dlerp, doutD, xd, withShift ? sd : null, ld, b, t, c);

        double[][] inputs = [D(x), D(lerp)];
        AssertClose(dx.ToArray<float>(tokens), Plus(FiniteDifferences(f, inputs, dout, 0)), 1e-5, "dx");
        AssertClose(dlerp.ToArray<float>(6 * c), Plus(FiniteDifferences(f, inputs, dout, 1)), 1e-5, "dlerp");
    }

    [TestCase(67, 64)]
    [TestCase(3, 192)]
    public void TimeMixKkBackward_MatchesFiniteDifferencesOfTheForwardFormula(int n, int c)
    {
        float[] k = Random(n * c, 21), a = Random(n * c, 22).Select(x => (x + 1) / 2).ToArray(), kK = Random(c, 23), kA = Random(c, 24);
        float[] dwa = Random(n * c, 25), dwb = Random(n * c, 26), dko = Random(n * c, 27);
        float[] dout = [.. dwa, .. dwb, .. dko];
        Func<double[][], double[]> f = i =>
        {
            var output = new double[3 * n * c];
            for (int row = 0; row < n; row++)
            for (int h = 0; h < c / 64; h++)
            {
                double norm = 0;
                for (int j = 0; j < 64; j++) norm += Math.Pow(i[0][row * c + h * 64 + j] * i[2][h * 64 + j], 2);
                norm = Math.Max(Math.Sqrt(norm), 1e-12);
                for (int j = 0; j < 64; j++)
                {
                    int ch = h * 64 + j, e = row * c + ch;
                    double kk = i[0][e] * i[2][ch] / norm;
                    output[e] = -kk;
                    output[n * c + e] = kk * i[1][e];
                    output[2 * n * c + e] = i[0][e] * (1 + (i[1][e] - 1) * i[3][ch]);
                }
            }
            return output;
        };
        using var kd = HipBuffer.FromHost<float>(k);
        using var ad = HipBuffer.FromHost<float>(a);
        using var kkd = HipBuffer.FromHost<float>(kK);
        using var kad = HipBuffer.FromHost<float>(kA);
        using var wa = HipBuffer.Allocate<float>(n * c);
        using var wb = HipBuffer.Allocate<float>(n * c);
        using var kOut = HipBuffer.Allocate<float>(n * c);
        using var norms = HipBuffer.Allocate<float>(n * (c / 64));
        using var dwaD = HipBuffer.FromHost<float>(dwa);
        using var dwbD = HipBuffer.FromHost<float>(dwb);
        using var dkoD = HipBuffer.FromHost<float>(dko);
        using var dk = Filled(n * c);
        using var da = Filled(n * c);
        using var dkK = Filled(c);
        using var dkA = Filled(c);

        HipKernels.TimeMixKkForward(wa, wb, kOut, norms, kd, ad, kkd, kad, n, c);
        HipKernels.TimeMixKkBackward(dk, da, dkK, dkA, dwaD, dwbD, dkoD, kd, ad, kkd, kad, norms, n, c);

        double[][] inputs = [D(k), D(a), D(kK), D(kA)];
        AssertClose(dk.ToArray<float>(n * c), Plus(FiniteDifferences(f, inputs, dout, 0)), 1e-5, "dk");
        AssertClose(da.ToArray<float>(n * c), Plus(FiniteDifferences(f, inputs, dout, 1)), 1e-5, "da");
        AssertClose(dkK.ToArray<float>(c), Plus(FiniteDifferences(f, inputs, dout, 2)), 1e-4, "dk_k");
        AssertClose(dkA.ToArray<float>(c), Plus(FiniteDifferences(f, inputs, dout, 3)), 1e-4, "dk_a");
    }

    [TestCase(67, 64)]
    [TestCase(3, 192)]
    public void TimeMixBonus_ForwardAddsFloat64AndBackwardMatchesFiniteDifferences(int n, int c)
    {
        float[] r = Random(n * c, 28), k = Random(n * c, 29), v = Random(n * c, 30), rK = Random(c, 31), y0 = Random(n * c, 32), dy = Random(n * c, 33);
        Func<double[][], double[]> f = i =>
        {
            var output = new double[n * c];
            for (int row = 0; row < n; row++)
            for (int h = 0; h < c / 64; h++)
            {
                double s = 0;
                for (int j = 0; j < 64; j++) s += i[0][row * c + h * 64 + j] * i[1][row * c + h * 64 + j] * i[3][h * 64 + j];
                for (int j = 0; j < 64; j++) output[row * c + h * 64 + j] = s * i[2][row * c + h * 64 + j];
            }
            return output;
        };
        using var rd = HipBuffer.FromHost<float>(r);
        using var kd = HipBuffer.FromHost<float>(k);
        using var vd = HipBuffer.FromHost<float>(v);
        using var rkd = HipBuffer.FromHost<float>(rK);
        using var yd = HipBuffer.FromHost<float>(y0);
        using var dyD = HipBuffer.FromHost<float>(dy);
        using var dr = Filled(n * c);
        using var dk = Filled(n * c);
        using var dv = Filled(n * c);
        using var drK = Filled(c);

        HipKernels.TimeMixBonusForward(yd, rd, kd, vd, rkd, n, c);
        HipKernels.TimeMixBonusBackward(dr, dk, dv, drK, dyD, rd, kd, vd, rkd, n, c);

        double[][] inputs = [D(r), D(k), D(v), D(rK)];
        AssertClose(yd.ToArray<float>(n * c), f(inputs).Select((b, e) => b + y0[e]).ToArray(), 1e-5, "y (updated in place)");
        AssertClose(dr.ToArray<float>(n * c), Plus(FiniteDifferences(f, inputs, dy, 0)), 1e-5, "dr");
        AssertClose(dk.ToArray<float>(n * c), Plus(FiniteDifferences(f, inputs, dy, 1)), 1e-5, "dk");
        AssertClose(dv.ToArray<float>(n * c), Plus(FiniteDifferences(f, inputs, dy, 2)), 1e-5, "dv");
        AssertClose(drK.ToArray<float>(c), Plus(FiniteDifferences(f, inputs, dy, 3)), 1e-4, "dr_k");
    }

    // ---- helpers ----------------------------------------------------------------------------------------------------

    /// <summary>
    /// d/d inputs[which] of sum(dout * f(inputs)) by central differences in float64, one element at a time. f is the
    /// test's own formula, so this checks the kernel's derivative without restating it.
    /// </summary>
    static double[] FiniteDifferences(Func<double[][], double[]> f, double[][] inputs, float[] dout, int which)
    {
        double Loss()
        {
            double[] output = f(inputs);
            double sum = 0;
            for (int i = 0; i < output.Length; i++) sum += dout[i] * output[i];
            return sum;
        }
        double[] x = inputs[which];
        var grad = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double saved = x[i], h = 1e-6 * Math.Max(1, Math.Abs(saved));
            x[i] = saved + h;
            double plus = Loss();
            x[i] = saved - h;
            double minus = Loss();
            x[i] = saved;
            grad[i] = (plus - minus) / (2 * h);
        }
        return grad;
    }

    static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    static double[] D(float[] values) => values.Select(v => (double)v).ToArray();

    /// <summary>What a gradient buffer filled with <see cref="Fill"/> holds after the backward added <paramref name="grad"/>.</summary>
    static double[] Plus(double[] grad) => grad.Select(g => g + Fill).ToArray();

    static HipBuffer Filled(int count) => HipBuffer.FromHost<float>(Enumerable.Repeat(Fill, count).ToArray());

    static float[] Random(int count, int seed, float scale = 1f)
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
