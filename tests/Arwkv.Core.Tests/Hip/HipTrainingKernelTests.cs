using Arwkv.Hip;
using Arwkv.IO;

namespace Arwkv.Tests.Hip;

/// <summary>
/// GPU kernels of the training step (losses, optimizer, embedding, time-mix pieces) against float64 formulas
/// written out here. Like <see cref="HipKernelTests"/> they are Ignored without a GPU and unverified until run on one.
/// </summary>
public class HipTrainingKernelTests
{
    [SetUp]
    public void RequireGpu()
    {
        HipTestDevice.Require();
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void KlDivergence_MatchesFloat64ReferenceAndSkipsMaskedTokens(DType type)
    {
        const int n = 3, vocab = 1000;
        float[] student = Round(type, Random(n * vocab, 1, 4)), teacher = Round(type, Random(n * vocab, 2, 4));
        int[] mask = [1, 0, 1];
        using var sd = Upload(student, type);
        using var td = Upload(teacher, type);
        using var md = HipBuffer.FromHost<int>(mask);
        using var losses = HipBuffer.Allocate<float>(n);
        using var grad = HipBuffer.Allocate<float>(n * vocab);

        HipKernels.KlDivergence(losses, grad, sd, td, type, md, gradScale: 0.5f, n, vocab);
        float[] loss = losses.ToArray<float>(n), g = grad.ToArray<float>(n * vocab);

        for (int t = 0; t < n; t++)
        {
            double[] ps = Softmax(student, t * vocab, vocab), pt = Softmax(teacher, t * vocab, vocab);
            double kl = 0;
            for (int i = 0; i < vocab; i++) kl += pt[i] * (Math.Log(pt[i]) - Math.Log(ps[i]));
            Assert.That(loss[t], Is.EqualTo(mask[t] == 0 ? 0 : kl).Within(1e-5), $"loss[{t}]");
            for (int i = 0; i < vocab; i++)
                Assert.That(g[t * vocab + i], Is.EqualTo(mask[t] == 0 ? 0 : 0.5 * (ps[i] - pt[i])).Within(1e-7), $"grad[{t},{i}]");
        }
    }

    [Test]
    public void CrossEntropy_MatchesFloat64ReferenceAndIgnoresNegativeTargets()
    {
        const int n = 3, vocab = 777;
        float[] logits = Random(n * vocab, 3, 5);
        int[] targets = [5, -100, 776];
        using var ld = HipBuffer.FromHost<float>(logits);
        using var td = HipBuffer.FromHost<int>(targets);
        using var losses = HipBuffer.Allocate<float>(n);
        using var grad = HipBuffer.Allocate<float>(n * vocab);

        HipKernels.CrossEntropy(losses, grad, ld, DType.F32, td, gradScale: 1f, n, vocab);
        float[] loss = losses.ToArray<float>(n), g = grad.ToArray<float>(n * vocab);

        for (int t = 0; t < n; t++)
        {
            double[] p = Softmax(logits, t * vocab, vocab);
            bool ignored = targets[t] < 0;
            Assert.That(loss[t], Is.EqualTo(ignored ? 0 : -Math.Log(p[targets[t]])).Within(1e-5), $"loss[{t}]");
            for (int i = 0; i < vocab; i++)
            {
                double expected = ignored ? 0 : p[i] - (i == targets[t] ? 1 : 0);
                Assert.That(g[t * vocab + i], Is.EqualTo(expected).Within(1e-6), $"grad[{t},{i}]");
            }
        }
    }

    [Test]
    public void AlignmentLoss_IsTheL2DistanceOverSqrtCAndItsGradient()
    {
        const int n = 4, c = 300;
        float[] student = Random(n * c, 4), teacher = Random(n * c, 5);
        using var sd = HipBuffer.FromHost<float>(student);
        using var td = HipBuffer.FromHost<float>(teacher);
        using var losses = HipBuffer.Allocate<float>(n);
        using var grad = HipBuffer.Allocate<float>(n * c);
        grad.Clear();

        HipKernels.AlignmentLossForward(losses, sd, td, n, c);
        HipKernels.AlignmentLossBackward(grad, sd, td, losses, gradScale: 0.25f, n, c);
        float[] loss = losses.ToArray<float>(n), g = grad.ToArray<float>(n * c);

        for (int t = 0; t < n; t++)
        {
            double sumSq = 0;
            for (int i = 0; i < c; i++) sumSq += Math.Pow(student[t * c + i] - teacher[t * c + i], 2);
            double norm = Math.Sqrt(sumSq);
            Assert.That(loss[t], Is.EqualTo(norm / Math.Sqrt(c)).Within(1e-5), $"loss[{t}]");
            for (int i = 0; i < c; i++)
                Assert.That(g[t * c + i], Is.EqualTo(0.25 * (student[t * c + i] - teacher[t * c + i]) / (norm * Math.Sqrt(c))).Within(1e-7));
        }
    }

    [Test]
    public void AdamW_WithClipping_MatchesFloat64Reference()
    {
        const int count = 513;
        float[] w = Random(count, 6), grad = Random(count, 7, 3), m = Random(count, 8, 0.1f), v = Random(count, 9, 0.1f).Select(Math.Abs).ToArray();
        using var wd = HipBuffer.FromHost<float>(w);
        using var gd = HipBuffer.FromHost<float>(grad);
        using var md = HipBuffer.FromHost<float>(m);
        using var vd = HipBuffer.FromHost<float>(v);
        using var copy = HipBuffer.Allocate<ushort>(count);
        using var normSq = HipBuffer.Allocate<float>(1);
        normSq.Clear();

        HipKernels.GradNormSquared(normSq, gd, count);
        HipKernels.AdamWUpdate(wd, copy, md, vd, gd, count, learningRate: 1e-3f, beta1: 0.9f, beta2: 0.95f, eps: 1e-8f, weightDecay: 0.1f,
            step: 3, gradNormSquared: normSq, maxGradNorm: 1f);
        float[] wOut = wd.ToArray<float>(count);
        ushort[] copyOut = copy.ToArray<ushort>(count);

        double norm = Math.Sqrt(grad.Sum(x => (double)x * x));
        Assert.That(normSq.ToArray<float>(1)[0], Is.EqualTo(norm * norm).Within(1e-4 * norm * norm));
        double clip = norm > 1 ? 1 / (norm + 1e-6) : 1;
        for (int i = 0; i < count; i++)
        {
            double g = grad[i] * clip;
            double mi = 0.9 * m[i] + 0.1 * g, vi = 0.95 * v[i] + 0.05 * g * g;
            double mHat = mi / (1 - Math.Pow(0.9, 3)), vHat = vi / (1 - Math.Pow(0.95, 3));
            double expected = w[i] - 1e-3 * (mHat / (Math.Sqrt(vHat) + 1e-8) + 0.1 * w[i]);
            Assert.That(wOut[i], Is.EqualTo(expected).Within(1e-6), $"w[{i}]");
            Assert.That(copyOut[i], Is.EqualTo(Arwkv.Kernels.Convert.Float32ToBFloat16(wOut[i])), $"bf16 copy [{i}]");
        }
    }

    [Test]
    public void Embedding_GathersRowsAndScatterAddsGradients()
    {
        const int vocab = 50, c = 70;
        int[] tokens = [3, 49, 3, 0, 77];
        int n = tokens.Length;
        float[] table = Random(vocab * c, 10), dout = Random(n * c, 11);
        using var tableD = HipBuffer.FromHost<ushort>(table.Select(Arwkv.Kernels.Convert.Float32ToBFloat16).ToArray());
        using var tokensD = HipBuffer.FromHost<int>(tokens);
        using var outD = HipBuffer.Allocate<float>(n * c);
        using var doutD = HipBuffer.FromHost<float>(dout);
        using var dtable = HipBuffer.Allocate<float>(vocab * c);
        dtable.Clear();

        HipKernels.EmbeddingForward(outD, tokensD, tableD, DType.BF16, n, c, vocab);
        HipKernels.EmbeddingBackward(dtable, tokensD, doutD, n, c, vocab);
        float[] output = outD.ToArray<float>(n * c), grad = dtable.ToArray<float>(vocab * c);

        for (int t = 0; t < n; t++)
        for (int i = 0; i < c; i++)
        {
            float expected = tokens[t] < vocab
                ? BitConverter.Int32BitsToSingle(Arwkv.Kernels.Convert.Float32ToBFloat16(table[tokens[t] * c + i]) << 16)
                : 0f;
            Assert.That(output[t * c + i], Is.EqualTo(expected), $"out[{t},{i}]");
        }
        for (int i = 0; i < c; i++)
        {
            Assert.That(grad[3 * c + i], Is.EqualTo(dout[i] + dout[2 * c + i]).Within(1e-6), "repeated token 3 accumulates");
            Assert.That(grad[49 * c + i], Is.EqualTo(dout[c + i]));
            Assert.That(grad[1 * c + i], Is.Zero, "unused row");
        }
    }

    [Test]
    public void TimeMixKkForward_NormalizesPerHeadAndModifiesK()
    {
        const int n = 3, c = 128;
        float[] k = Random(n * c, 12), a = Random(n * c, 13).Select(x => (x + 1) / 2).ToArray();
        float[] kk = Random(c, 14), ka = Random(c, 15);
        using var kd = HipBuffer.FromHost<float>(k);
        using var ad = HipBuffer.FromHost<float>(a);
        using var kkd = HipBuffer.FromHost<float>(kk);
        using var kad = HipBuffer.FromHost<float>(ka);
        using var wa = HipBuffer.Allocate<float>(n * c);
        using var wb = HipBuffer.Allocate<float>(n * c);
        using var kOut = HipBuffer.Allocate<float>(n * c);
        using var norms = HipBuffer.Allocate<float>(n * 2);

        HipKernels.TimeMixKkForward(wa, wb, kOut, norms, kd, ad, kkd, kad, n, c);
        float[] waOut = wa.ToArray<float>(n * c), wbOut = wb.ToArray<float>(n * c), kOutH = kOut.ToArray<float>(n * c);

        for (int t = 0; t < n; t++)
        for (int h = 0; h < 2; h++)
        {
            double norm = 0;
            for (int j = 0; j < 64; j++) norm += Math.Pow(k[t * c + h * 64 + j] * kk[h * 64 + j], 2);
            norm = Math.Sqrt(norm);
            for (int j = 0; j < 64; j++)
            {
                int e = t * c + h * 64 + j, ch = h * 64 + j;
                double unit = k[e] * kk[ch] / norm;
                Assert.That(waOut[e], Is.EqualTo(-unit).Within(1e-6));
                Assert.That(wbOut[e], Is.EqualTo(unit * a[e]).Within(1e-6));
                Assert.That(kOutH[e], Is.EqualTo(k[e] * (1 + (a[e] - 1) * ka[ch])).Within(1e-6));
            }
        }
    }

    [Test]
    public void TimeMixLerpForward_ShiftsByOneTokenPerSequence()
    {
        const int b = 2, t = 3, c = 5;
        float[] x = Random(b * t * c, 16), lerp = Random(6 * c, 17), shift = Random(b * c, 18);
        using var xd = HipBuffer.FromHost<float>(x);
        using var ld = HipBuffer.FromHost<float>(lerp);
        using var sd = HipBuffer.FromHost<float>(shift);
        using var outD = HipBuffer.Allocate<float>(6 * b * t * c);

        HipKernels.TimeMixLerpForward(outD, xd, sd, ld, b, t, c);
        float[] output = outD.ToArray<float>(6 * b * t * c);

        for (int m = 0; m < 6; m++)
        for (int bb = 0; bb < b; bb++)
        for (int tt = 0; tt < t; tt++)
        for (int i = 0; i < c; i++)
        {
            int e = (bb * t + tt) * c + i;
            double prev = tt > 0 ? x[e - c] : shift[bb * c + i];
            Assert.That(output[m * b * t * c + e], Is.EqualTo(x[e] + (prev - x[e]) * lerp[m * c + i]).Within(1e-6));
        }
    }

    static double[] Softmax(float[] logits, int offset, int count)
    {
        double max = double.NegativeInfinity;
        for (int i = 0; i < count; i++) max = Math.Max(max, logits[offset + i]);
        var p = new double[count];
        double sum = 0;
        for (int i = 0; i < count; i++) sum += p[i] = Math.Exp(logits[offset + i] - max);
        for (int i = 0; i < count; i++) p[i] /= sum;
        return p;
    }

    static HipBuffer Upload(float[] values, DType type) => type == DType.BF16
        ? HipBuffer.FromHost<ushort>(values.Select(Arwkv.Kernels.Convert.Float32ToBFloat16).ToArray())
        : HipBuffer.FromHost<float>(values);

    static float[] Round(DType type, float[] values) => type == DType.BF16
        ? values.Select(v => BitConverter.Int32BitsToSingle(Arwkv.Kernels.Convert.Float32ToBFloat16(v) << 16)).ToArray()
        : values;

    static float[] Random(int count, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++) values[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return values;
    }
}
