using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Arwkv.Layers;

/// <summary>
/// One step of the RWKV-7 recurrence for one head (ARWKV.md section 2), state S[i][j] with i the value channel and
/// j the key channel, row-major N x N:
/// <code>
///   sa_i    = sum_j S[i][j] * (-kk_j)
///   S[i][j] = S[i][j] * w_j + v_i * k_j + sa_i * kk_j * a_j
///   y_i     = sum_j S[i][j] * r_j + (sum_j r_j k_j r_k_j) * v_i
/// </code>
/// k is the already ICLR-scaled key, kk the normalized removal key, w the decay in (0, 1).
/// </summary>
internal static unsafe class Wkv7
{
    public static void Step(Span<float> state, ReadOnlySpan<float> r, ReadOnlySpan<float> w, ReadOnlySpan<float> k,
        ReadOnlySpan<float> v, ReadOnlySpan<float> kk, ReadOnlySpan<float> a, ReadOnlySpan<float> rk, Span<float> y)
    {
        int n = r.Length;
        if (state.Length < n * n || w.Length < n || k.Length < n || v.Length < n || kk.Length < n || a.Length < n || rk.Length < n || y.Length < n)
            throw new ArgumentException("WKV7 step: spans shorter than the head size");
        fixed (float* s = state, pr = r, pw = w, pk = k, pv = v, pkk = kk, pa = a, prk = rk, py = y)
        {
            if (n == 64 && Vector512.IsHardwareAccelerated) Step64(s, pr, pw, pk, pv, pkk, pa, prk, py);
            else StepScalar(n, s, pr, pw, pk, pv, pkk, pa, prk, py);
        }
    }

    /// <summary>
    /// Head size 64 (every released checkpoint): the five per-key vectors live in 20 zmm registers while the 64 state
    /// rows stream through, so each state element is loaded and stored once per token.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Step64(float* s, float* r, float* w, float* k, float* v, float* kk, float* a, float* rk, float* y)
    {
        Vector512<float> r0 = Vector512.Load(r), r1 = Vector512.Load(r + 16), r2 = Vector512.Load(r + 32), r3 = Vector512.Load(r + 48);
        Vector512<float> w0 = Vector512.Load(w), w1 = Vector512.Load(w + 16), w2 = Vector512.Load(w + 32), w3 = Vector512.Load(w + 48);
        Vector512<float> k0 = Vector512.Load(k), k1 = Vector512.Load(k + 16), k2 = Vector512.Load(k + 32), k3 = Vector512.Load(k + 48);
        Vector512<float> q0 = Vector512.Load(kk), q1 = Vector512.Load(kk + 16), q2 = Vector512.Load(kk + 32), q3 = Vector512.Load(kk + 48);
        // b = kk * a; the removal term is sa_i * b_j with sa_i = -(S_i . kk).
        Vector512<float> b0 = q0 * Vector512.Load(a), b1 = q1 * Vector512.Load(a + 16), b2 = q2 * Vector512.Load(a + 32), b3 = q3 * Vector512.Load(a + 48);

        float bonus = Vector512.Sum(r0 * k0 * Vector512.Load(rk) + r1 * k1 * Vector512.Load(rk + 16)
            + r2 * k2 * Vector512.Load(rk + 32) + r3 * k3 * Vector512.Load(rk + 48));

        for (int i = 0; i < 64; i++)
        {
            float* row = s + i * 64;
            Vector512<float> s0 = Vector512.Load(row), s1 = Vector512.Load(row + 16), s2 = Vector512.Load(row + 32), s3 = Vector512.Load(row + 48);
            float sa = -Vector512.Sum(Vector512.FusedMultiplyAdd(s0, q0, Vector512.FusedMultiplyAdd(s1, q1,
                Vector512.FusedMultiplyAdd(s2, q2, s3 * q3))));
            Vector512<float> vi = Vector512.Create(v[i]), sav = Vector512.Create(sa);
            s0 = Vector512.FusedMultiplyAdd(s0, w0, Vector512.FusedMultiplyAdd(vi, k0, sav * b0));
            s1 = Vector512.FusedMultiplyAdd(s1, w1, Vector512.FusedMultiplyAdd(vi, k1, sav * b1));
            s2 = Vector512.FusedMultiplyAdd(s2, w2, Vector512.FusedMultiplyAdd(vi, k2, sav * b2));
            s3 = Vector512.FusedMultiplyAdd(s3, w3, Vector512.FusedMultiplyAdd(vi, k3, sav * b3));
            s0.Store(row);
            s1.Store(row + 16);
            s2.Store(row + 32);
            s3.Store(row + 48);
            y[i] = Vector512.Sum(Vector512.FusedMultiplyAdd(s0, r0, Vector512.FusedMultiplyAdd(s1, r1,
                Vector512.FusedMultiplyAdd(s2, r2, s3 * r3)))) + bonus * v[i];
        }
    }

    /// <summary>Any head size, and machines without AVX-512.</summary>
    private static void StepScalar(int n, float* s, float* r, float* w, float* k, float* v, float* kk, float* a, float* rk, float* y)
    {
        float bonus = 0;
        for (int j = 0; j < n; j++) bonus += r[j] * k[j] * rk[j];
        for (int i = 0; i < n; i++)
        {
            float* row = s + i * n;
            float sa = 0;
            for (int j = 0; j < n; j++) sa -= row[j] * kk[j];
            float vi = v[i], yi = 0;
            for (int j = 0; j < n; j++)
            {
                float sij = row[j] * w[j] + vi * k[j] + sa * kk[j] * a[j];
                row[j] = sij;
                yi += sij * r[j];
            }
            y[i] = yi + bonus * vi;
        }
    }
}
