using System.Runtime.CompilerServices;
using Arwkv.Kernels;

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
    /// <summary>One step on the path <paramref name="isa"/> (the caller's <see cref="MatMul.Isa"/>: pool threads do not see a forced path).</summary>
    public static void Step(Span<float> state, ReadOnlySpan<float> r, ReadOnlySpan<float> w, ReadOnlySpan<float> k,
        ReadOnlySpan<float> v, ReadOnlySpan<float> kk, ReadOnlySpan<float> a, ReadOnlySpan<float> rk, Span<float> y, KernelIsa isa)
    {
        int n = r.Length;
        if (state.Length < n * n || w.Length < n || k.Length < n || v.Length < n || kk.Length < n || a.Length < n || rk.Length < n || y.Length < n)
            throw new ArgumentException("WKV7 step: spans shorter than the head size");
        fixed (float* s = state, pr = r, pw = w, pk = k, pv = v, pkk = kk, pa = a, prk = rk, py = y)
        {
            float bonus = isa switch
            {
                KernelIsa.Vector512 => Bonus<SimdVector512>(n, pr, pk, prk),
                KernelIsa.Vector256 => Bonus<SimdVector256>(n, pr, pk, prk),
                KernelIsa.Vector128 => Bonus<SimdVector128>(n, pr, pk, prk),
                _ => BonusTail(n, 0, pr, pk, prk),
            };
            int done = isa switch
            {
                KernelIsa.Vector512 => StepColumns<SimdVector512>(n, s, pr, pw, pk, pv, pkk, pa, bonus, py),
                KernelIsa.Vector256 => StepColumns<SimdVector256>(n, s, pr, pw, pk, pv, pkk, pa, bonus, py),
                KernelIsa.Vector128 => StepColumns<SimdVector128>(n, s, pr, pw, pk, pv, pkk, pa, bonus, py),
                _ => 0,
            };
            StepScalar(n, done, s, pr, pw, pk, pv, pkk, pa, bonus, py);
        }
    }

    /// <summary>
    /// sum_j r_j k_j rk_j. In vectors, not a scalar loop: a serial chain of 64 adds costs about as much as a
    /// quarter of the AVX-512 step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Bonus<TV>(int n, float* r, float* k, float* rk) where TV : unmanaged, ISimdVector<TV>
    {
        TV sum = default;
        int j = 0;
        for (; j + TV.Count <= n; j += TV.Count) sum = TV.Fma(TV.Load(r + j) * TV.Load(k + j), TV.Load(rk + j), sum);
        return TV.Sum(sum) + BonusTail(n, j, r, k, rk);
    }

    private static float BonusTail(int n, int j, float* r, float* k, float* rk)
    {
        float bonus = 0;
        for (; j < n; j++) bonus += r[j] * k[j] * rk[j];
        return bonus;
    }

    /// <summary>
    /// Every column i depends only on column i of the state, so the head is cut into blocks of four vectors of
    /// columns (a head of 64 is one block of zmm, two of ymm, four of xmm registers), each run through both passes
    /// while its accumulators stay in registers. Sets y for the columns it covers and returns the first column it did not.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int StepColumns<TV>(int n, float* s, float* r, float* w, float* k, float* v, float* kk, float* a, float bonus, float* y)
        where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, block = 4 * L, i0 = 0;
        for (; i0 + block <= n; i0 += block)
        {
            // Pass 1: sa = -sum_j kk_j * row_j, two accumulator sets to halve the dependency chain.
            TV p0 = default, p1 = default, p2 = default, p3 = default;
            TV q0 = default, q1 = default, q2 = default, q3 = default;
            int j = 0;
            for (; j + 1 < n; j += 2)
            {
                float* row = s + j * n + i0;
                TV c = TV.Broadcast(kk[j]), d = TV.Broadcast(kk[j + 1]);
                p0 = TV.Fma(TV.Load(row), c, p0);
                p1 = TV.Fma(TV.Load(row + L), c, p1);
                p2 = TV.Fma(TV.Load(row + 2 * L), c, p2);
                p3 = TV.Fma(TV.Load(row + 3 * L), c, p3);
                q0 = TV.Fma(TV.Load(row + n), d, q0);
                q1 = TV.Fma(TV.Load(row + n + L), d, q1);
                q2 = TV.Fma(TV.Load(row + n + 2 * L), d, q2);
                q3 = TV.Fma(TV.Load(row + n + 3 * L), d, q3);
            }
            if (j < n)
            {
                float* row = s + j * n + i0;
                TV c = TV.Broadcast(kk[j]);
                p0 = TV.Fma(TV.Load(row), c, p0);
                p1 = TV.Fma(TV.Load(row + L), c, p1);
                p2 = TV.Fma(TV.Load(row + 2 * L), c, p2);
                p3 = TV.Fma(TV.Load(row + 3 * L), c, p3);
            }
            TV sa0 = -(p0 + q0), sa1 = -(p1 + q1), sa2 = -(p2 + q2), sa3 = -(p3 + q3);
            TV v0 = TV.Load(v + i0), v1 = TV.Load(v + i0 + L), v2 = TV.Load(v + i0 + 2 * L), v3 = TV.Load(v + i0 + 3 * L);

            // Pass 2: row_j = row_j * w_j + k_j * v + (kk_j a_j) * sa, and y += r_j * row_j. One accumulator set: the
            // chain of y is shorter than the 16 operations per step, and AVX2 has only 16 registers.
            TV y0 = default, y1 = default, y2 = default, y3 = default;
            for (j = 0; j < n; j++)
            {
                float* row = s + j * n + i0;
                TV wj = TV.Broadcast(w[j]), kj = TV.Broadcast(k[j]), bj = TV.Broadcast(kk[j] * a[j]), rj = TV.Broadcast(r[j]);
                TV s0 = TV.Fma(TV.Load(row), wj, TV.Fma(v0, kj, sa0 * bj));
                TV s1 = TV.Fma(TV.Load(row + L), wj, TV.Fma(v1, kj, sa1 * bj));
                TV s2 = TV.Fma(TV.Load(row + 2 * L), wj, TV.Fma(v2, kj, sa2 * bj));
                TV s3 = TV.Fma(TV.Load(row + 3 * L), wj, TV.Fma(v3, kj, sa3 * bj));
                TV.Store(s0, row); TV.Store(s1, row + L); TV.Store(s2, row + 2 * L); TV.Store(s3, row + 3 * L);
                y0 = TV.Fma(s0, rj, y0);
                y1 = TV.Fma(s1, rj, y1);
                y2 = TV.Fma(s2, rj, y2);
                y3 = TV.Fma(s3, rj, y3);
            }
            TV bv = TV.Broadcast(bonus);
            TV.Store(TV.Fma(bv, v0, y0), y + i0); TV.Store(TV.Fma(bv, v1, y1), y + i0 + L);
            TV.Store(TV.Fma(bv, v2, y2), y + i0 + 2 * L); TV.Store(TV.Fma(bv, v3, y3), y + i0 + 3 * L);
        }
        return i0;
    }

    /// <summary>Columns [i0, n) of any head size, the vector paths' tail and the path of CPUs without SIMD. Same transposed layout: s[j * n + i] = S[i][j].</summary>
    private static void StepScalar(int n, int i0, float* s, float* r, float* w, float* k, float* v, float* kk, float* a, float bonus, float* y)
    {
        for (int i = i0; i < n; i++)
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
