using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Arwkv.Layers;

/// <summary>
/// One step of the RWKV-7 recurrence for one head (ARWKV.md section 2), with S[i][j] (i the value channel, j the
/// key channel):
/// <code>
///   sa_i    = sum_j S[i][j] * (-kk_j)
///   S[i][j] = S[i][j] * w_j + v_i * k_j + sa_i * kk_j * a_j
///   y_i     = sum_j S[i][j] * r_j + (sum_j r_j k_j r_k_j) * v_i
/// </code>
/// k is the already ICLR-scaled key, kk the normalized removal key, w the decay in (0, 1).
/// The state is stored transposed, row j holding S[0..N)[j]: both sums then run down the rows as vector
/// multiply-adds over i, with no horizontal reductions, which is what made the row-major form slow.
/// </summary>
internal static unsafe class Wkv7
{
    public static void Step(Span<float> state, ReadOnlySpan<float> r, ReadOnlySpan<float> w, ReadOnlySpan<float> k,
        ReadOnlySpan<float> v, ReadOnlySpan<float> kk, ReadOnlySpan<float> a, ReadOnlySpan<float> rk, Span<float> y, bool vectorized = true)
    {
        int n = r.Length;
        if (state.Length < n * n || w.Length < n || k.Length < n || v.Length < n || kk.Length < n || a.Length < n || rk.Length < n || y.Length < n)
            throw new ArgumentException("WKV7 step: spans shorter than the head size");
        fixed (float* s = state, pr = r, pw = w, pk = k, pv = v, pkk = kk, pa = a, prk = rk, py = y)
        {
            if (vectorized && n == 64 && Vector512.IsHardwareAccelerated) Step64(s, pr, pw, pk, pv, pkk, pa, prk, py);
            else StepScalar(n, s, pr, pw, pk, pv, pkk, pa, prk, py);
        }
    }

    /// <summary>Head size 64 (every released checkpoint): a state row is four zmm registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Step64(float* s, float* r, float* w, float* k, float* v, float* kk, float* a, float* rk, float* y)
    {
        // Pass 1: sa = -sum_j kk_j * row_j, two accumulator sets to halve the dependency chain.
        Vector512<float> p0 = default, p1 = default, p2 = default, p3 = default;
        Vector512<float> q0 = default, q1 = default, q2 = default, q3 = default;
        for (int j = 0; j < 64; j += 2)
        {
            float* row = s + j * 64;
            Vector512<float> c = Vector512.Create(kk[j]), d = Vector512.Create(kk[j + 1]);
            p0 = Vector512.FusedMultiplyAdd(Vector512.Load(row), c, p0);
            p1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 16), c, p1);
            p2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 32), c, p2);
            p3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 48), c, p3);
            q0 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 64), d, q0);
            q1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 80), d, q1);
            q2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 96), d, q2);
            q3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 112), d, q3);
        }
        Vector512<float> sa0 = -(p0 + q0), sa1 = -(p1 + q1), sa2 = -(p2 + q2), sa3 = -(p3 + q3);
        Vector512<float> v0 = Vector512.Load(v), v1 = Vector512.Load(v + 16), v2 = Vector512.Load(v + 32), v3 = Vector512.Load(v + 48);

        // Pass 2: row_j = row_j * w_j + k_j * v + (kk_j a_j) * sa, and y += r_j * row_j.
        Vector512<float> y0 = default, y1 = default, y2 = default, y3 = default;
        Vector512<float> z0 = default, z1 = default, z2 = default, z3 = default;
        float bonus = 0;
        for (int j = 0; j < 64; j += 2)
        {
            bonus += r[j] * k[j] * rk[j] + r[j + 1] * k[j + 1] * rk[j + 1];
            float* row = s + j * 64;
            {
                Vector512<float> wj = Vector512.Create(w[j]), kj = Vector512.Create(k[j]), bj = Vector512.Create(kk[j] * a[j]), rj = Vector512.Create(r[j]);
                Vector512<float> s0 = Vector512.FusedMultiplyAdd(Vector512.Load(row), wj, Vector512.FusedMultiplyAdd(v0, kj, sa0 * bj));
                Vector512<float> s1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 16), wj, Vector512.FusedMultiplyAdd(v1, kj, sa1 * bj));
                Vector512<float> s2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 32), wj, Vector512.FusedMultiplyAdd(v2, kj, sa2 * bj));
                Vector512<float> s3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 48), wj, Vector512.FusedMultiplyAdd(v3, kj, sa3 * bj));
                s0.Store(row); s1.Store(row + 16); s2.Store(row + 32); s3.Store(row + 48);
                y0 = Vector512.FusedMultiplyAdd(s0, rj, y0);
                y1 = Vector512.FusedMultiplyAdd(s1, rj, y1);
                y2 = Vector512.FusedMultiplyAdd(s2, rj, y2);
                y3 = Vector512.FusedMultiplyAdd(s3, rj, y3);
            }
            row += 64;
            {
                Vector512<float> wj = Vector512.Create(w[j + 1]), kj = Vector512.Create(k[j + 1]), bj = Vector512.Create(kk[j + 1] * a[j + 1]), rj = Vector512.Create(r[j + 1]);
                Vector512<float> s0 = Vector512.FusedMultiplyAdd(Vector512.Load(row), wj, Vector512.FusedMultiplyAdd(v0, kj, sa0 * bj));
                Vector512<float> s1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 16), wj, Vector512.FusedMultiplyAdd(v1, kj, sa1 * bj));
                Vector512<float> s2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 32), wj, Vector512.FusedMultiplyAdd(v2, kj, sa2 * bj));
                Vector512<float> s3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 48), wj, Vector512.FusedMultiplyAdd(v3, kj, sa3 * bj));
                s0.Store(row); s1.Store(row + 16); s2.Store(row + 32); s3.Store(row + 48);
                z0 = Vector512.FusedMultiplyAdd(s0, rj, z0);
                z1 = Vector512.FusedMultiplyAdd(s1, rj, z1);
                z2 = Vector512.FusedMultiplyAdd(s2, rj, z2);
                z3 = Vector512.FusedMultiplyAdd(s3, rj, z3);
            }
        }
        Vector512<float> bv = Vector512.Create(bonus);
        Vector512.FusedMultiplyAdd(bv, v0, y0 + z0).Store(y);
        Vector512.FusedMultiplyAdd(bv, v1, y1 + z1).Store(y + 16);
        Vector512.FusedMultiplyAdd(bv, v2, y2 + z2).Store(y + 32);
        Vector512.FusedMultiplyAdd(bv, v3, y3 + z3).Store(y + 48);
    }

    /// <summary>Any head size, and machines without AVX-512. Same transposed layout: s[j * n + i] = S[i][j].</summary>
    private static void StepScalar(int n, float* s, float* r, float* w, float* k, float* v, float* kk, float* a, float* rk, float* y)
    {
        float bonus = 0;
        for (int j = 0; j < n; j++) bonus += r[j] * k[j] * rk[j];
        for (int i = 0; i < n; i++)
        {
            float sa = 0;
            for (int j = 0; j < n; j++) sa -= s[j * n + i] * kk[j];
            float vi = v[i], yi = 0;
            for (int j = 0; j < n; j++)
            {
                float sij = s[j * n + i] * w[j] + vi * k[j] + sa * kk[j] * a[j];
                s[j * n + i] = sij;
                yi += sij * r[j];
            }
            y[i] = yi + bonus * vi;
        }
    }
}
