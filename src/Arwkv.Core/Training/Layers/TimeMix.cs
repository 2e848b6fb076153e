using System.Numerics;
using System.Numerics.Tensors;

namespace Arwkv.Training.Layers;

/// <summary>Sizes of one RWKV-7 time mix. LoRA ranks come from the tensor shapes (64/64/32/128 in ARWKV-7B).</summary>
internal sealed record TimeMixShape(int Channels, int HeadSize, int DecayRank, int IclrRank, int ValueRank, int GateRank, bool HasGate)
{
    public int Heads => Channels / HeadSize;

    public void Validate()
    {
        if (Channels <= 0 || HeadSize <= 0 || Channels % HeadSize != 0) throw new ArgumentException($"C = {Channels} is not a positive multiple of head size {HeadSize}");
        if (DecayRank <= 0 || IclrRank <= 0 || ValueRank <= 0 || (HasGate && GateRank <= 0)) throw new ArgumentException("LoRA ranks must be positive");
    }
}

/// <summary>
/// The tensors of one time mix, as views into a parameter (or gradient) buffer, in the HF layout:
/// vectors [C] (stored [1,1,C]), LoRA matrices [in, out], r_k [H, N], projections [out, in].
/// Without a gate, XG, G1 and G2 are empty.
/// </summary>
internal sealed class TimeMixWeights<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    public Memory<TF> XR, XW, XK, XV, XA, XG;      // [C]
    public Memory<TF> W0, A0, V0, KK, KA;          // [C]  (KK is k_k)
    public Memory<TF> W1, A1, V1, G1;              // [C, rank]
    public Memory<TF> W2, A2, V2, G2;              // [rank, C]
    public Memory<TF> RK;                          // [H, N]
    public Memory<TF> WR, WK, WV, WO;              // [C, C] receptance, key, value, output

    /// <summary>Fresh zeroed tensors of the given shape (tests; gradients of standalone layers).</summary>
    public static TimeMixWeights<TF> Allocate(TimeMixShape s)
    {
        int c = s.Channels;
        return new TimeMixWeights<TF>
        {
            XR = new TF[c], XW = new TF[c], XK = new TF[c], XV = new TF[c], XA = new TF[c], XG = s.HasGate ? new TF[c] : Memory<TF>.Empty,
            W0 = new TF[c], A0 = new TF[c], V0 = new TF[c], KK = new TF[c], KA = new TF[c],
            W1 = new TF[c * s.DecayRank], W2 = new TF[s.DecayRank * c],
            A1 = new TF[c * s.IclrRank], A2 = new TF[s.IclrRank * c],
            V1 = new TF[c * s.ValueRank], V2 = new TF[s.ValueRank * c],
            G1 = s.HasGate ? new TF[c * s.GateRank] : Memory<TF>.Empty, G2 = s.HasGate ? new TF[s.GateRank * c] : Memory<TF>.Empty,
            RK = new TF[c], WR = new TF[c * c], WK = new TF[c * c], WV = new TF[c * c], WO = new TF[c * c],
        };
    }

    /// <summary>Every tensor with its HF suffix (after <c>self_attn.time_mixer.</c>); empty ones are skipped.</summary>
    public IEnumerable<(string Name, Memory<TF> Data)> Named()
    {
        (string, Memory<TF>)[] all =
        [
            ("x_r", XR), ("x_w", XW), ("x_k", XK), ("x_v", XV), ("x_a", XA), ("x_g", XG),
            ("w0", W0), ("w1", W1), ("w2", W2), ("a0", A0), ("a1", A1), ("a2", A2), ("v0", V0), ("v1", V1), ("v2", V2),
            ("g1", G1), ("g2", G2), ("k_k", KK), ("k_a", KA), ("r_k", RK),
            ("receptance.weight", WR), ("key.weight", WK), ("value.weight", WV), ("output.weight", WO),
        ];
        return all.Where(t => !t.Item2.IsEmpty);
    }
}

/// <summary>What <see cref="TimeMix.Forward{TF}"/> saves for backward, planned once for up to B*T rows.</summary>
internal sealed class TimeMixActivations<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    public readonly TimeMixShape Shape;
    public readonly int MaxBatch, MaxSeqLen;
    public readonly int[] PrevIndex;                                 // [B*T] row of the previous real token, -1 if none
    public readonly TF[] XR, XW, XK, XV, XA, XG;                     // [B*T, C] lerped inputs
    public readonly TF[] R, K, VRaw, V;                              // [B*T, C] projections; V after value residual
    public readonly TF[] HW, WSig, Decay;                            // [B*T, Dw] tanh hidden; [B*T, C] sigmoid(z), decay
    public readonly TF[] HV, VMix;                                   // [B*T, Dv]; [B*T, C] sigmoid mix toward v_first
    public readonly TF[] HA, A;                                      // [B*T, Da]; [B*T, C]
    public readonly TF[] HG, G;                                      // [B*T, Dg] sigmoid hidden; [B*T, C] gate
    public readonly TF[] KkUnit, KkNorm, KF, AA, BB;                 // [B*T, C] except KkNorm [B*T, H]
    public readonly TF[] YWkv, Bonus, Y, YG, Out;                    // [B*T, C] except Bonus [B*T, H]
    public readonly TF[] Checkpoints;                                // Wkv7 states

    public TimeMixActivations(TimeMixShape shape, int maxBatch, int maxSeqLen)
    {
        shape.Validate();
        Shape = shape; MaxBatch = maxBatch; MaxSeqLen = maxSeqLen;
        int n = maxBatch * maxSeqLen, c = shape.Channels;
        TF[] Rows(int width) => new TF[n * width];
        PrevIndex = new int[n];
        XR = Rows(c); XW = Rows(c); XK = Rows(c); XV = Rows(c); XA = Rows(c); XG = shape.HasGate ? Rows(c) : [];
        R = Rows(c); K = Rows(c); VRaw = Rows(c); V = Rows(c);
        HW = Rows(shape.DecayRank); WSig = Rows(c); Decay = Rows(c);
        HV = Rows(shape.ValueRank); VMix = Rows(c);
        HA = Rows(shape.IclrRank); A = Rows(c);
        HG = shape.HasGate ? Rows(shape.GateRank) : []; G = shape.HasGate ? Rows(c) : [];
        KkUnit = Rows(c); KkNorm = Rows(shape.Heads); KF = Rows(c); AA = Rows(c); BB = Rows(c);
        YWkv = Rows(c); Bonus = Rows(shape.Heads); Y = Rows(c); YG = shape.HasGate ? Rows(c) : Y; Out = Rows(c);
        Checkpoints = new TF[Wkv7.CheckpointLength(maxBatch, maxSeqLen, shape.Heads, shape.HeadSize)];
    }
}

/// <summary>Gradient buffers of the time mix's intermediates, shared by all layers (backward runs one layer at a time).</summary>
internal sealed class TimeMixScratch<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    public readonly TF[] DXR, DXW, DXK, DXV, DXA, DXG, DYG, DY, DG, DR, DDecay, DKF, DV, DAA, DBB, DA, DK, DPre, DHidden, Wkv;

    public TimeMixScratch(TimeMixShape shape, int maxBatch, int maxSeqLen)
    {
        int n = maxBatch * maxSeqLen, c = shape.Channels;
        int rank = Math.Max(Math.Max(shape.DecayRank, shape.IclrRank), Math.Max(shape.ValueRank, shape.HasGate ? shape.GateRank : 0));
        TF[] Rows(int width) => new TF[n * width];
        DXR = Rows(c); DXW = Rows(c); DXK = Rows(c); DXV = Rows(c); DXA = Rows(c); DXG = Rows(c);
        DYG = Rows(c); DY = Rows(c); DG = Rows(c); DR = Rows(c); DDecay = Rows(c); DKF = Rows(c); DV = Rows(c);
        DAA = Rows(c); DBB = Rows(c); DA = Rows(c); DK = Rows(c); DPre = Rows(c); DHidden = Rows(rank);
        Wkv = new TF[Wkv7.BackwardScratchLength(maxBatch, shape.Heads, shape.HeadSize)];
    }
}

/// <summary>
/// The RWKV-7 time mix of ARWKV (ARWKV.md section 2): token shift, six lerps, r/k/v projections, decay LoRA,
/// value residual toward layer 0's v, in-context learning rate a, optional output gate, kk normalization,
/// the WKV7 recurrence, the r*k*r_k bonus and the output projection.
/// Padded positions (mask 0) are skipped by the token shift (x_prev is the previous real token's x), leave the
/// state untouched and output 0, so they neither influence real tokens nor receive gradient.
/// </summary>
internal static class TimeMix
{
    /// <summary>exp(-0.5): decay = exp(-e^-0.5 * sigmoid(z)) equals exp(-exp(-softplus(-z) - 0.5)).</summary>
    public static readonly double DecayScale = Math.Exp(-0.5);

    /// <summary>torch.nn.functional.normalize's eps for kk.</summary>
    public const double KkEps = 1e-12;

    // act: every saved tensor, act.Out [B*T, C] the result and act.V [B*T, C] the value (layer 0's is v_first)
    // x [B*T, C] normed layer input; vFirst [B*T, C] layer 0's v (ignored when firstLayer); mask [B*T] or empty
    public static void Forward<TF>(TimeMixActivations<TF> act, TimeMixWeights<TF> p, ReadOnlySpan<TF> x, ReadOnlySpan<TF> vFirst,
        ReadOnlySpan<byte> mask, int batch, int seqLen, bool firstLayer)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TimeMixShape s = act.Shape;
        int n = batch * seqLen, c = s.Channels, heads = s.Heads, hs = s.HeadSize;
        if (batch > act.MaxBatch || seqLen > act.MaxSeqLen) throw new ArgumentException($"[{batch}, {seqLen}] exceeds the planned [{act.MaxBatch}, {act.MaxSeqLen}]");
        if (x.Length < n * c) throw new ArgumentException("x is shorter than [B, T, C]");
        if (!firstLayer && vFirst.Length < n * c) throw new ArgumentException("vFirst is shorter than [B, T, C]");
        if (!mask.IsEmpty && mask.Length < n) throw new ArgumentException("mask is shorter than [B, T]");

        // Token shift and the six lerps: x_m = x + (x_prev - x) * mix_m.
        FillPrevIndex(act.PrevIndex, mask, batch, seqLen);
        ReadOnlySpan<TF> xr = p.XR.Span, xw = p.XW.Span, xk = p.XK.Span, xv = p.XV.Span, xa = p.XA.Span, xg = p.XG.Span;
        for (int row = 0; row < n; row++)
        {
            int prev = act.PrevIndex[row];
            for (int j = 0; j < c; j++)
            {
                int at = row * c + j;
                TF xj = x[at], d = (prev >= 0 ? x[prev * c + j] : TF.Zero) - xj;
                act.XR[at] = xj + d * xr[j];
                act.XW[at] = xj + d * xw[j];
                act.XK[at] = xj + d * xk[j];
                act.XV[at] = xj + d * xv[j];
                act.XA[at] = xj + d * xa[j];
                if (s.HasGate) act.XG[at] = xj + d * xg[j];
            }
        }

        Linear.Forward<TF>(act.R, act.XR, p.WR.Span, n, c, c);
        Linear.Forward<TF>(act.K, act.XK, p.WK.Span, n, c, c);
        Linear.Forward<TF>(act.VRaw, act.XV, p.WV.Span, n, c, c);

        // decay = exp(-e^-0.5 * sigmoid(w0 + tanh(x_w w1) w2))
        Linear.ForwardInOut<TF>(act.HW, act.XW, p.W1.Span, n, c, s.DecayRank);
        TensorPrimitives.Tanh<TF>(act.HW.AsSpan(0, n * s.DecayRank), act.HW);
        Linear.ForwardInOut<TF>(act.Decay, act.HW, p.W2.Span, n, s.DecayRank, c);
        TF scale = TF.CreateTruncating(DecayScale);
        ReadOnlySpan<TF> w0 = p.W0.Span;
        for (int row = 0; row < n; row++)
            for (int j = 0; j < c; j++)
            {
                int at = row * c + j;
                TF sig = Sigmoid(w0[j] + act.Decay[at]);
                act.WSig[at] = sig;
                act.Decay[at] = TF.Exp(-scale * sig);
            }

        // Value residual: layers after the first pull v toward layer 0's v.
        if (firstLayer)
        {
            act.VRaw.AsSpan(0, n * c).CopyTo(act.V);
        }
        else
        {
            Linear.ForwardInOut<TF>(act.HV, act.XV, p.V1.Span, n, c, s.ValueRank);
            Linear.ForwardInOut<TF>(act.VMix, act.HV, p.V2.Span, n, s.ValueRank, c);
            ReadOnlySpan<TF> v0 = p.V0.Span;
            for (int row = 0; row < n; row++)
                for (int j = 0; j < c; j++)
                {
                    int at = row * c + j;
                    TF mix = Sigmoid(v0[j] + act.VMix[at]);
                    act.VMix[at] = mix;
                    act.V[at] = act.VRaw[at] + (vFirst[at] - act.VRaw[at]) * mix;
                }
        }

        // a = sigmoid(a0 + (x_a a1) a2)
        Linear.ForwardInOut<TF>(act.HA, act.XA, p.A1.Span, n, c, s.IclrRank);
        Linear.ForwardInOut<TF>(act.A, act.HA, p.A2.Span, n, s.IclrRank, c);
        ReadOnlySpan<TF> a0 = p.A0.Span;
        for (int row = 0; row < n; row++)
            for (int j = 0; j < c; j++) act.A[row * c + j] = Sigmoid(a0[j] + act.A[row * c + j]);

        // g = sigmoid(x_g g1) g2
        if (s.HasGate)
        {
            Linear.ForwardInOut<TF>(act.HG, act.XG, p.G1.Span, n, c, s.GateRank);
            Span<TF> hg = act.HG.AsSpan(0, n * s.GateRank);
            for (int i = 0; i < hg.Length; i++) hg[i] = Sigmoid(hg[i]);
            Linear.ForwardInOut<TF>(act.G, act.HG, p.G2.Span, n, s.GateRank, c);
        }

        // kk = normalize_per_head(k * k_k); k = k * (1 + (a - 1) * k_a); aa = -kk; bb = kk * a
        ReadOnlySpan<TF> kkScale = p.KK.Span, ka = p.KA.Span;
        TF eps = TF.CreateTruncating(KkEps);
        for (int row = 0; row < n; row++)
        {
            for (int h = 0; h < heads; h++)
            {
                int at = row * c + h * hs;
                TF sum = TF.Zero;
                for (int j = 0; j < hs; j++)
                {
                    TF t = act.K[at + j] * kkScale[h * hs + j];
                    act.KkUnit[at + j] = t;
                    sum += t * t;
                }
                TF norm = TF.Sqrt(sum);
                act.KkNorm[row * heads + h] = norm;
                TF inv = TF.One / TF.Max(norm, eps);
                for (int j = 0; j < hs; j++) act.KkUnit[at + j] *= inv;
            }
            for (int j = 0; j < c; j++)
            {
                int at = row * c + j;
                TF a = act.A[at], kk = act.KkUnit[at];
                act.KF[at] = act.K[at] * (TF.One + (a - TF.One) * ka[j]);
                act.AA[at] = -kk;
                act.BB[at] = kk * a;
            }
        }

        Wkv7.Forward<TF>(act.YWkv, act.Checkpoints, Span<TF>.Empty, act.R, act.Decay, act.KF, act.V, act.AA, act.BB,
            mask, ReadOnlySpan<TF>.Empty, batch, seqLen, heads, hs);

        // y = wkv + (sum over the head of r * k * r_k) * v; 0 at padded positions.
        ReadOnlySpan<TF> rk = p.RK.Span;
        for (int row = 0; row < n; row++)
        {
            bool real = mask.IsEmpty || mask[row] != 0;
            for (int h = 0; h < heads; h++)
            {
                int at = row * c + h * hs;
                TF bonus = TF.Zero;
                if (real)
                    for (int j = 0; j < hs; j++) bonus += act.R[at + j] * act.KF[at + j] * rk[h * hs + j];
                act.Bonus[row * heads + h] = bonus;
                for (int j = 0; j < hs; j++) act.Y[at + j] = real ? act.YWkv[at + j] + bonus * act.V[at + j] : TF.Zero;
            }
        }

        if (s.HasGate) TensorPrimitives.Multiply<TF>(act.Y.AsSpan(0, n * c), act.G.AsSpan(0, n * c), act.YG);
        Linear.Forward<TF>(act.Out, act.YG, p.WO.Span, n, c, c);
    }

    // grads +=; dx [B*T, C] +=; dVFirst [B*T, C] += (layers > 0; gradient reaching layer 0's v)
    // dout [B*T, C]; dvExtra [B*T, C] (layer 0 only: the dVFirst that later layers accumulated, or empty)
    public static void Backward<TF>(TimeMixWeights<TF> grads, Span<TF> dx, Span<TF> dVFirst, TimeMixScratch<TF> scratch,
        ReadOnlySpan<TF> dout, ReadOnlySpan<TF> dvExtra, TimeMixActivations<TF> act, TimeMixWeights<TF> p,
        ReadOnlySpan<TF> x, ReadOnlySpan<TF> vFirst, ReadOnlySpan<byte> mask, int batch, int seqLen, bool firstLayer)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TimeMixShape s = act.Shape;
        int n = batch * seqLen, c = s.Channels, heads = s.Heads, hs = s.HeadSize, nc = n * c;
        TimeMixScratch<TF> d = scratch;
        void Zero(TF[] buffer, int length) => buffer.AsSpan(0, length).Clear();

        // out = W_o (y * g)
        Zero(d.DYG, nc);
        Linear.Backward<TF>(d.DYG, grads.WO.Span, dout, act.YG, p.WO.Span, n, c, c);
        if (s.HasGate)
        {
            TensorPrimitives.Multiply<TF>(d.DYG.AsSpan(0, nc), act.Y.AsSpan(0, nc), d.DG);
            TensorPrimitives.Multiply<TF>(d.DYG.AsSpan(0, nc), act.G.AsSpan(0, nc), d.DY);
        }
        else
        {
            d.DYG.AsSpan(0, nc).CopyTo(d.DY);
        }
        // y is the constant 0 at padded positions.
        if (!mask.IsEmpty)
            for (int row = 0; row < n; row++)
                if (mask[row] == 0) d.DY.AsSpan(row * c, c).Clear();

        // bonus: y_i += (sum_j r_j kf_j rk_j) v_i
        Zero(d.DR, nc); Zero(d.DKF, nc); Zero(d.DV, nc); Zero(d.DDecay, nc); Zero(d.DAA, nc); Zero(d.DBB, nc);
        ReadOnlySpan<TF> rk = p.RK.Span;
        Span<TF> drk = grads.RK.Span;
        for (int row = 0; row < n; row++)
        {
            if (!mask.IsEmpty && mask[row] == 0) continue;
            for (int h = 0; h < heads; h++)
            {
                int at = row * c + h * hs;
                TF bonus = act.Bonus[row * heads + h], dBonus = TF.Zero;
                for (int i = 0; i < hs; i++)
                {
                    dBonus += d.DY[at + i] * act.V[at + i];
                    d.DV[at + i] += bonus * d.DY[at + i];
                }
                for (int j = 0; j < hs; j++)
                {
                    TF r = act.R[at + j], kf = act.KF[at + j], rkj = rk[h * hs + j];
                    d.DR[at + j] += dBonus * kf * rkj;
                    d.DKF[at + j] += dBonus * r * rkj;
                    drk[h * hs + j] += dBonus * r * kf;
                }
            }
        }

        Wkv7.Backward<TF>(d.DR, d.DDecay, d.DKF, d.DV, d.DAA, d.DBB, Span<TF>.Empty, d.DY, act.Checkpoints,
            act.R, act.Decay, act.KF, act.V, act.AA, act.BB, mask, d.Wkv, batch, seqLen, heads, hs);

        // aa = -kk, bb = kk * a, kf = k * (1 + (a - 1) * k_a); d.DAA becomes dkk.
        ReadOnlySpan<TF> ka = p.KA.Span, kkScale = p.KK.Span;
        Span<TF> dka = grads.KA.Span, dkkScale = grads.KK.Span;
        for (int row = 0; row < n; row++)
            for (int j = 0; j < c; j++)
            {
                int at = row * c + j;
                TF a = act.A[at], kk = act.KkUnit[at], k = act.K[at], dkf = d.DKF[at];
                d.DA[at] = d.DBB[at] * kk + dkf * k * ka[j];
                d.DAA[at] = d.DBB[at] * a - d.DAA[at];
                d.DK[at] = dkf * (TF.One + (a - TF.One) * ka[j]);
                dka[j] += dkf * k * (a - TF.One);
            }

        // kk = t / max(|t|, eps) per head, t = k * k_k
        TF eps = TF.CreateTruncating(KkEps);
        for (int row = 0; row < n; row++)
            for (int h = 0; h < heads; h++)
            {
                int at = row * c + h * hs;
                TF norm = act.KkNorm[row * heads + h];
                TF dot = TF.Zero;
                if (norm > eps)
                    for (int j = 0; j < hs; j++) dot += d.DAA[at + j] * act.KkUnit[at + j];
                TF inv = TF.One / TF.Max(norm, eps);
                for (int j = 0; j < hs; j++)
                {
                    TF dt = (d.DAA[at + j] - act.KkUnit[at + j] * dot) * inv;
                    d.DK[at + j] += dt * kkScale[h * hs + j];
                    dkkScale[h * hs + j] += dt * act.K[at + j];
                }
            }

        Zero(d.DXR, nc); Zero(d.DXW, nc); Zero(d.DXK, nc); Zero(d.DXV, nc); Zero(d.DXA, nc); Zero(d.DXG, nc);

        // g = sigmoid(x_g g1) g2
        if (s.HasGate)
        {
            int hn = n * s.GateRank;
            Zero(d.DHidden, hn);
            Linear.BackwardInOut<TF>(d.DHidden, grads.G2.Span, d.DG, act.HG, p.G2.Span, n, s.GateRank, c);
            for (int i = 0; i < hn; i++) d.DHidden[i] *= act.HG[i] * (TF.One - act.HG[i]);
            Linear.BackwardInOut<TF>(d.DXG, grads.G1.Span, d.DHidden, act.XG, p.G1.Span, n, c, s.GateRank);
        }

        // a = sigmoid(a0 + (x_a a1) a2)
        for (int i = 0; i < nc; i++) d.DPre[i] = d.DA[i] * act.A[i] * (TF.One - act.A[i]);
        ColumnSums<TF>(grads.A0.Span, d.DPre, n, c);
        Zero(d.DHidden, n * s.IclrRank);
        Linear.BackwardInOut<TF>(d.DHidden, grads.A2.Span, d.DPre, act.HA, p.A2.Span, n, s.IclrRank, c);
        Linear.BackwardInOut<TF>(d.DXA, grads.A1.Span, d.DHidden, act.XA, p.A1.Span, n, c, s.IclrRank);

        // value residual; d.DV becomes the gradient of the raw projection
        if (firstLayer)
        {
            if (!dvExtra.IsEmpty) TensorPrimitives.Add<TF>(d.DV.AsSpan(0, nc), dvExtra.Slice(0, nc), d.DV);
        }
        else
        {
            for (int i = 0; i < nc; i++)
            {
                TF dv = d.DV[i], mix = act.VMix[i];
                dVFirst[i] += dv * mix;
                d.DPre[i] = dv * (vFirst[i] - act.VRaw[i]) * mix * (TF.One - mix);
                d.DV[i] = dv * (TF.One - mix);
            }
            ColumnSums<TF>(grads.V0.Span, d.DPre, n, c);
            Zero(d.DHidden, n * s.ValueRank);
            Linear.BackwardInOut<TF>(d.DHidden, grads.V2.Span, d.DPre, act.HV, p.V2.Span, n, s.ValueRank, c);
            Linear.BackwardInOut<TF>(d.DXV, grads.V1.Span, d.DHidden, act.XV, p.V1.Span, n, c, s.ValueRank);
        }

        // decay = exp(-scale * sigmoid(z)): ddecay/dz = -scale * decay * sig * (1 - sig)
        TF scale = TF.CreateTruncating(DecayScale);
        for (int i = 0; i < nc; i++)
        {
            TF sig = act.WSig[i];
            d.DPre[i] = -d.DDecay[i] * scale * act.Decay[i] * sig * (TF.One - sig);
        }
        ColumnSums<TF>(grads.W0.Span, d.DPre, n, c);
        int wn = n * s.DecayRank;
        Zero(d.DHidden, wn);
        Linear.BackwardInOut<TF>(d.DHidden, grads.W2.Span, d.DPre, act.HW, p.W2.Span, n, s.DecayRank, c);
        for (int i = 0; i < wn; i++) d.DHidden[i] *= TF.One - act.HW[i] * act.HW[i];
        Linear.BackwardInOut<TF>(d.DXW, grads.W1.Span, d.DHidden, act.XW, p.W1.Span, n, c, s.DecayRank);

        Linear.Backward<TF>(d.DXR, grads.WR.Span, d.DR, act.XR, p.WR.Span, n, c, c);
        Linear.Backward<TF>(d.DXK, grads.WK.Span, d.DK, act.XK, p.WK.Span, n, c, c);
        Linear.Backward<TF>(d.DXV, grads.WV.Span, d.DV, act.XV, p.WV.Span, n, c, c);

        // x_m = x (1 - mix_m) + x_prev mix_m
        ReadOnlySpan<TF> mr = p.XR.Span, mw = p.XW.Span, mk = p.XK.Span, mv = p.XV.Span, ma = p.XA.Span, mg = p.XG.Span;
        Span<TF> gr = grads.XR.Span, gw = grads.XW.Span, gk = grads.XK.Span, gv = grads.XV.Span, ga = grads.XA.Span, gg = grads.XG.Span;
        for (int row = 0; row < n; row++)
        {
            int prev = act.PrevIndex[row];
            for (int j = 0; j < c; j++)
            {
                int at = row * c + j;
                TF xj = x[at], xp = prev >= 0 ? x[prev * c + j] : TF.Zero, diff = xp - xj;
                TF dr = d.DXR[at], dw = d.DXW[at], dk = d.DXK[at], dv = d.DXV[at], da = d.DXA[at];
                TF dg = s.HasGate ? d.DXG[at] : TF.Zero, mgj = s.HasGate ? mg[j] : TF.Zero;
                TF toPrev = dr * mr[j] + dw * mw[j] + dk * mk[j] + dv * mv[j] + da * ma[j] + dg * mgj;
                dx[at] += dr + dw + dk + dv + da + dg - toPrev;
                if (prev >= 0) dx[prev * c + j] += toPrev;
                gr[j] += dr * diff; gw[j] += dw * diff; gk[j] += dk * diff; gv[j] += dv * diff; ga[j] += da * diff;
                if (s.HasGate) gg[j] += dg * diff;
            }
        }
    }

    private static void FillPrevIndex(int[] prevIndex, ReadOnlySpan<byte> mask, int batch, int seqLen)
    {
        for (int b = 0; b < batch; b++)
        {
            int prev = -1;
            for (int t = 0; t < seqLen; t++)
            {
                int row = b * seqLen + t;
                prevIndex[row] = prev;
                if (mask.IsEmpty || mask[row] != 0) prev = row;
            }
        }
    }

    // sums [C] += column sums of rows [N, C]
    private static void ColumnSums<TF>(Span<TF> sums, ReadOnlySpan<TF> rows, int n, int c)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        for (int row = 0; row < n; row++) TensorPrimitives.Add<TF>(sums, rows.Slice(row * c, c), sums);
    }

    private static TF Sigmoid<TF>(TF z) where TF : unmanaged, IBinaryFloatingPointIeee754<TF> => TF.One / (TF.One + TF.Exp(-z));
}
