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

    /// <summary>
    /// A line-by-line float64 transcription of wkv7_backward_kernel's algorithm (thread tid owning column tid of S
    /// and dS and row tid of dS, S_{t-1} rebuilt by inversion except at checkpoints) agrees with the plain reverse
    /// pass. This checks the kernel's derivation on the CPU; it says nothing about the HIP code compiling to the same.
    /// </summary>
    [Test]
    public void KernelBackwardAlgorithm_MatchesTheReferenceBackward()
    {
        const int n = Wkv7Reference.N, t = 32;
        int[] mask = Enumerable.Range(0, t).Select(i => i is 5 or 16 or 30 ? 0 : 1).ToArray();
        var x = Wkv7Reference.Random(b: 1, t: t, h: 1, seed: 23, withState: true, mask);
        var rng = new Random(24);
        var dy = new double[x.R.Length];
        for (int i = 0; i < dy.Length; i++) dy[i] = rng.NextDouble() * 2 - 1;
        var expected = Wkv7Reference.Backward(x, dy);
        var (_, states, sa) = Wkv7Reference.Forward(x);
        double[] Checkpoint(int chunk) => states[0][(chunk + 1) * 16];

        // Per "thread" tid: S[tid][i] = S[i][tid], dSc[tid][i] = dS[i][tid], dSr[tid][j] = dS[tid][j].
        var S = new double[n][];
        var dSc = new double[n][];
        var dSr = new double[n][];
        for (int tid = 0; tid < n; tid++)
        {
            S[tid] = Enumerable.Range(0, n).Select(i => Checkpoint(t / 16 - 1)[i * n + tid]).ToArray();
            dSc[tid] = new double[n];
            dSr[tid] = new double[n];
        }
        var got = new double[6][];
        for (int g = 0; g < 6; g++) got[g] = new double[x.R.Length];
        for (int step = t - 1; step >= 0; step--)
        {
            double[] previous = step == 0 ? x.StateInit! : Checkpoint(step / 16 - 1);
            bool exact = step % 16 == 0;
            if (mask[step] == 0)
            {
                if (exact)
                    for (int tid = 0; tid < n; tid++)
                        for (int i = 0; i < n; i++) S[tid][i] = previous[i * n + tid];
                continue;
            }
            int o = step * n;
            var dsa = new double[n];
            for (int tid = 0; tid < n; tid++)
            {
                double drj = 0;
                for (int i = 0; i < n; i++)
                {
                    drj += S[tid][i] * dy[o + i];
                    dSc[tid][i] += dy[o + i] * x.R[o + tid];
                    dSr[tid][i] += dy[o + tid] * x.R[o + i];
                }
                got[0][o + tid] = drj;
                for (int i = 0; i < n; i++)
                    S[tid][i] = exact ? previous[i * n + tid] : (S[tid][i] - x.V[o + i] * x.K[o + tid] - sa[o + i] * x.Bv[o + tid]) / x.W[o + tid];
                double dwj = 0, dkj = 0, dbj = 0, dvi = 0, dsai = 0;
                for (int m = 0; m < n; m++)
                {
                    dwj += dSc[tid][m] * S[tid][m];
                    dkj += dSc[tid][m] * x.V[o + m];
                    dbj += dSc[tid][m] * sa[o + m];
                    dvi += dSr[tid][m] * x.K[o + m];
                    dsai += dSr[tid][m] * x.Bv[o + m];
                }
                (got[1][o + tid], got[2][o + tid], got[5][o + tid], got[3][o + tid]) = (dwj, dkj, dbj, dvi);
                dsa[tid] = dsai;
            }
            // __syncthreads(): every dsa is visible before any thread uses them.
            for (int tid = 0; tid < n; tid++)
            {
                double daj = 0;
                for (int m = 0; m < n; m++)
                {
                    daj += dsa[m] * S[tid][m];
                    dSc[tid][m] = dSc[tid][m] * x.W[o + tid] + dsa[m] * x.A[o + tid];
                    dSr[tid][m] = dSr[tid][m] * x.W[o + m] + dsa[tid] * x.A[o + m];
                }
                got[4][o + tid] = daj;
            }
        }

        double[][] want = [expected.R, expected.W, expected.K, expected.V, expected.A, expected.B];
        string[] names = ["dr", "dw", "dk", "dv", "da", "db"];
        for (int g = 0; g < 6; g++)
            for (int i = 0; i < want[g].Length; i++)
                Assert.That(got[g][i], Is.EqualTo(want[g][i]).Within(1e-9 + 1e-9 * Math.Abs(want[g][i])), $"{names[g]}[{i}]");
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                Assert.That(dSr[i][j], Is.EqualTo(expected.StateInit[i * n + j]).Within(1e-9), $"dstate[{i},{j}]");
    }
}
