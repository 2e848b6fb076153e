namespace Arwkv.Tests.Hip;

/// <summary>
/// The float64 WKV7 oracle the GPU tests compare against, checked on the CPU (these run everywhere): its backward
/// against central finite differences of its forward, and the step inversion that wkv7.hip's backward relies on.
/// </summary>
public class Wkv7ReferenceTests
{
    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    public void Backward_MatchesFiniteDifferencesOfForward(bool withState, bool withMask)
    {
        int[]? mask = withMask ? [1, 1, 0, 1, 0] : null;
        var x = Wkv7Reference.Random(b: 1, t: 5, h: 1, seed: 11, withState, mask);
        var rng = new Random(5);
        var dy = new double[x.R.Length];
        for (int i = 0; i < dy.Length; i++) dy[i] = rng.NextDouble() * 2 - 1;
        var grads = Wkv7Reference.Backward(x, dy);

        double Loss(Wkv7Reference.Inputs inputs)
        {
            var y = Wkv7Reference.Forward(inputs).Y;
            double sum = 0;
            for (int i = 0; i < y.Length; i++) sum += y[i] * dy[i];
            return sum;
        }

        var checks = new (string Name, Func<Wkv7Reference.Inputs, double[]> Get, double[] Grad)[]
        {
            ("r", v => v.R, grads.R), ("w", v => v.W, grads.W), ("k", v => v.K, grads.K),
            ("v", v => v.V, grads.V), ("a", v => v.A, grads.A), ("b", v => v.Bv, grads.B),
        };
        const double h = 1e-6;
        foreach (var (name, get, grad) in checks)
        {
            for (int i = 3; i < grad.Length; i += 17)
            {
                double[] values = get(x);
                double saved = values[i];
                values[i] = saved + h;
                double plus = Loss(x);
                values[i] = saved - h;
                double minus = Loss(x);
                values[i] = saved;
                double numeric = (plus - minus) / (2 * h);
                Assert.That(grad[i], Is.EqualTo(numeric).Within(1e-6 + 1e-6 * Math.Abs(numeric)), $"d{name}[{i}]");
            }
        }
        if (withState)
        {
            for (int i = 5; i < x.StateInit!.Length; i += 97)
            {
                double saved = x.StateInit[i];
                x.StateInit[i] = saved + h;
                double plus = Loss(x);
                x.StateInit[i] = saved - h;
                double minus = Loss(x);
                x.StateInit[i] = saved;
                Assert.That(grads.StateInit[i], Is.EqualTo((plus - minus) / (2 * h)).Within(1e-6), $"dstate[{i}]");
            }
        }
    }

    [Test]
    public void MaskedSteps_LeaveTheStateAndOutputUntouched()
    {
        var x = Wkv7Reference.Random(b: 1, t: 4, h: 1, seed: 3, withState: true, mask: [1, 0, 0, 1]);
        var (y, states, _) = Wkv7Reference.Forward(x);
        Assert.That(states[0][2], Is.EqualTo(states[0][1]));
        Assert.That(states[0][3], Is.EqualTo(states[0][1]));
        Assert.That(y.AsSpan(64, 128).ToArray(), Is.All.EqualTo(0.0));
    }

    /// <summary>
    /// wkv7.hip's backward rebuilds S_{t-1} = (S_t - v k^T - sa b^T) / w instead of storing every state; over one
    /// 16-step checkpoint interval in float32-like magnitudes the inversion must stay close to the stored states.
    /// </summary>
    [Test]
    public void InvertingTheStep_RecoversThePreviousState()
    {
        const int n = Wkv7Reference.N;
        var x = Wkv7Reference.Random(b: 1, t: 16, h: 1, seed: 21, withState: true);
        var (_, states, sa) = Wkv7Reference.Forward(x);
        var s = (double[])states[0][16].Clone();
        for (int t = 15; t >= 0; t--)
        {
            for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                int ei = t * n + i, ej = t * n + j;
                s[i * n + j] = (s[i * n + j] - x.V[ei] * x.K[ej] - sa[ei] * x.Bv[ej]) / x.W[ej];
            }
            for (int e = 0; e < n * n; e++)
                Assert.That(s[e], Is.EqualTo(states[0][t][e]).Within(1e-9), $"state before step {t}, element {e}");
        }
    }
}
