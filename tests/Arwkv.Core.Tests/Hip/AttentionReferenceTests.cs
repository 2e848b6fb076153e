using Arwkv.Training.Layers;

namespace Arwkv.Tests.Hip;

/// <summary>
/// The float64 attention oracle of the GPU tests, checked on the CPU (these run everywhere): its backward against
/// central finite differences of its forward (GQA and a padding mask included), and, composed with its RoPE, against
/// Arwkv.Core's training layer, whose conventions (rotate_half, scale 1/sqrt(D), kv head h / (H/KV)) the kernels follow.
/// </summary>
public class AttentionReferenceTests
{
    [Test]
    public void Backward_MatchesFiniteDifferencesOfForward()
    {
        const int B = 2, T = 6, H = 4, KV = 2, D = 4;
        int[] mask = [1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1];
        double[] q = Random(B * T * H * D, 1, 1.5), k = Random(B * T * KV * D, 2, 1.5), v = Random(B * T * KV * D, 3);
        double[] w = Random(B * T * H * D, 4);
        var (dq, dk, dv) = AttentionReference.Backward(w, q, k, v, mask, B, T, H, KV, D);

        double Loss()
        {
            double[] output = AttentionReference.Forward(q, k, v, mask, B, T, H, KV, D).Out;
            double sum = 0;
            for (int i = 0; i < output.Length; i++) sum += output[i] * w[i];
            return sum;
        }

        const double h = 1e-6;
        foreach (var (name, x, grad) in new[] { ("q", q, dq), ("k", k, dk), ("v", v, dv) })
        {
            for (int i = 0; i < x.Length; i++)
            {
                double saved = x[i];
                x[i] = saved + h;
                double plus = Loss();
                x[i] = saved - h;
                double minus = Loss();
                x[i] = saved;
                double numeric = (plus - minus) / (2 * h);
                Assert.That(grad[i], Is.EqualTo(numeric).Within(1e-7 + 1e-6 * Math.Abs(numeric)), $"d{name}[{i}]");
            }
        }
        // Masked keys get nothing from anyone; masked queries send nothing.
        Assert.That(dk.AsSpan(4 * KV * D, 2 * KV * D).ToArray(), Is.All.EqualTo(0.0));
        Assert.That(dq.AsSpan((T + 3) * H * D, H * D).ToArray(), Is.All.EqualTo(0.0));
    }

    [Test]
    public void WithRope_MatchesTheCpuTrainingLayer()
    {
        const int B = 2, T = 9, H = 4, KV = 2, D = 8;
        const double theta = 1_000_000;
        double[] q = Random(B * T * H * D, 5), k = Random(B * T * KV * D, 6), v = Random(B * T * KV * D, 7), dout = Random(B * T * H * D, 8);
        var (cos, sin) = Arwkv.Hip.HipKernels.RotaryTables(T, D, theta);
        var cosD = new double[T * D / 2];
        var sinD = new double[T * D / 2];
        Attention.RotaryTables<double>(cosD, sinD, T, D, theta);

        var output = new double[q.Length];
        var qRot = new double[q.Length];
        var kRot = new double[k.Length];
        var probs = new double[B * H * T * T];
        Attention.Forward<double>(output, qRot, kRot, probs, q, k, v, cosD, sinD, B, T, H, KV, D);
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        Attention.Backward<double>(dq, dk, dv, dout, qRot, kRot, v, probs, cosD, sinD, B, T, H, KV, D);

        double[] qr = AttentionReference.Rope(q, cos, sin, null, B, T, H, D), kr = AttentionReference.Rope(k, cos, sin, null, B, T, KV, D);
        double[] expected = AttentionReference.Forward(qr, kr, v, null, B, T, H, KV, D).Out;
        var (dqr, dkr, dvr) = AttentionReference.Backward(dout, qr, kr, v, null, B, T, H, KV, D);
        double[] dqRef = AttentionReference.Rope(dqr, cos, sin, null, B, T, H, D, transpose: true);
        double[] dkRef = AttentionReference.Rope(dkr, cos, sin, null, B, T, KV, D, transpose: true);

        // The layer's tables are double cosines of the float32 angle, the reference's their float32 rounding.
        Assert.That(qr, Is.EqualTo(qRot).Within(1e-6));
        Assert.That(expected, Is.EqualTo(output).Within(1e-6));
        Assert.That(dqRef, Is.EqualTo(dq).Within(1e-6));
        Assert.That(dkRef, Is.EqualTo(dk).Within(1e-6));
        Assert.That(dvr, Is.EqualTo(dv).Within(1e-6));
    }

    internal static double[] Random(int count, int seed, double scale = 1)
    {
        var rng = new Random(seed);
        var values = new double[count];
        for (int i = 0; i < count; i++) values[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return values;
    }
}
