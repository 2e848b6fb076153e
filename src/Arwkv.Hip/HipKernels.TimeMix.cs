namespace Arwkv.Hip;

// The elementwise and per-head pieces of the RWKV-7 time mix (timemix.hip); the formulas are in arwkv_hip.h.
public static partial class HipKernels
{
    /// <summary>
    /// Token shift and the six lerps: output [6, batch, time, c] (overwritten), block i = x + (x_prev - x) * lerp[i]
    /// for lerp [6, c] in the order x_r, x_w, x_k, x_v, x_a, x_g. shiftState [batch, c] is x_prev of t = 0 (null = zeros).
    /// </summary>
    public static void TimeMixLerpForward(HipBuffer output, HipBuffer x, HipBuffer? shiftState, HipBuffer lerp, int batch, int time, int c,
        HipStream? stream = null)
    {
        long tokens = (long)batch * time * c * F;
        Need(output, 6 * tokens, nameof(output)); Need(x, tokens, nameof(x)); Need(lerp, 6L * c * F, nameof(lerp));
        if (shiftState != null) Need(shiftState, (long)batch * c * F, nameof(shiftState));
        Run(NativeMethods.arwkv_timemix_lerp_forward(output.Pointer, x.Pointer, P(shiftState), lerp.Pointer, batch, time, c, S(stream)),
            "arwkv_timemix_lerp_forward");
    }

    /// <summary>dx [batch, time, c] += ..., dlerp [6, c] += ... from dout [6, batch, time, c].</summary>
    public static void TimeMixLerpBackward(HipBuffer dx, HipBuffer dlerp, HipBuffer dout, HipBuffer x, HipBuffer? shiftState, HipBuffer lerp,
        int batch, int time, int c, HipStream? stream = null)
    {
        long tokens = (long)batch * time * c * F;
        Need(dx, tokens, nameof(dx)); Need(dlerp, 6L * c * F, nameof(dlerp)); Need(dout, 6 * tokens, nameof(dout));
        Need(x, tokens, nameof(x)); Need(lerp, 6L * c * F, nameof(lerp));
        if (shiftState != null) Need(shiftState, (long)batch * c * F, nameof(shiftState));
        Run(NativeMethods.arwkv_timemix_lerp_backward(dx.Pointer, dlerp.Pointer, dout.Pointer, x.Pointer, P(shiftState), lerp.Pointer,
            batch, time, c, S(stream)), "arwkv_timemix_lerp_backward");
    }

    /// <summary>decay [n, c] (overwritten) = exp(-e^-0.5 * sigmoid(w0 + z)), z [n, c] the decay LoRA's output, w0 [c].</summary>
    public static void TimeMixDecayForward(HipBuffer decay, HipBuffer z, HipBuffer w0, int n, int c, HipStream? stream = null)
    {
        Need(decay, (long)n * c * F, nameof(decay)); Need(z, (long)n * c * F, nameof(z)); Need(w0, (long)c * F, nameof(w0));
        Run(NativeMethods.arwkv_timemix_decay_forward(decay.Pointer, z.Pointer, w0.Pointer, n, c, S(stream)), "arwkv_timemix_decay_forward");
    }

    /// <summary>dz [n, c] += ..., dw0 [c] += ... (null = not wanted) from ddecay and the forward's decay.</summary>
    public static void TimeMixDecayBackward(HipBuffer dz, HipBuffer? dw0, HipBuffer ddecay, HipBuffer decay, int n, int c,
        HipStream? stream = null)
    {
        Need(dz, (long)n * c * F, nameof(dz)); Need(ddecay, (long)n * c * F, nameof(ddecay)); Need(decay, (long)n * c * F, nameof(decay));
        if (dw0 != null) Need(dw0, (long)c * F, nameof(dw0));
        Run(NativeMethods.arwkv_timemix_decay_backward(dz.Pointer, P(dw0), ddecay.Pointer, decay.Pointer, n, c, S(stream)),
            "arwkv_timemix_decay_backward");
    }

    /// <summary>output [n, c] (overwritten) = sigmoid(input + bias), bias [c] or null.</summary>
    public static void SigmoidForward(HipBuffer output, HipBuffer input, HipBuffer? bias, int n, int c, HipStream? stream = null)
    {
        Need(output, (long)n * c * F, nameof(output)); Need(input, (long)n * c * F, nameof(input));
        if (bias != null) Need(bias, (long)c * F, nameof(bias));
        Run(NativeMethods.arwkv_sigmoid_bias_forward(output.Pointer, input.Pointer, P(bias), n, c, S(stream)), "arwkv_sigmoid_bias_forward");
    }

    /// <summary>dinput [n, c] += dout * s (1 - s), dbias [c] (or null) += the same summed over tokens; s = the forward's output.</summary>
    public static void SigmoidBackward(HipBuffer dinput, HipBuffer? dbias, HipBuffer dout, HipBuffer output, int n, int c,
        HipStream? stream = null)
    {
        Need(dinput, (long)n * c * F, nameof(dinput)); Need(dout, (long)n * c * F, nameof(dout)); Need(output, (long)n * c * F, nameof(output));
        if (dbias != null) Need(dbias, (long)c * F, nameof(dbias));
        Run(NativeMethods.arwkv_sigmoid_bias_backward(dinput.Pointer, P(dbias), dout.Pointer, output.Pointer, n, c, S(stream)),
            "arwkv_sigmoid_bias_backward");
    }

    /// <summary>output [count] (overwritten) = tanh(input).</summary>
    public static void TanhForward(HipBuffer output, HipBuffer input, long count, HipStream? stream = null)
    {
        Need(output, count * F, nameof(output)); Need(input, count * F, nameof(input));
        Run(NativeMethods.arwkv_tanh_forward(output.Pointer, input.Pointer, count, S(stream)), "arwkv_tanh_forward");
    }

    /// <summary>dinput [count] += dout * (1 - output^2).</summary>
    public static void TanhBackward(HipBuffer dinput, HipBuffer dout, HipBuffer output, long count, HipStream? stream = null)
    {
        Need(dinput, count * F, nameof(dinput)); Need(dout, count * F, nameof(dout)); Need(output, count * F, nameof(output));
        Run(NativeMethods.arwkv_tanh_backward(dinput.Pointer, dout.Pointer, output.Pointer, count, S(stream)), "arwkv_tanh_backward");
    }

    /// <summary>Value residual: output [count] (overwritten) = v + (vFirst - v) * gate.</summary>
    public static void ValueResidualForward(HipBuffer output, HipBuffer v, HipBuffer vFirst, HipBuffer gate, long count, HipStream? stream = null)
    {
        NeedAll(count * F, (output, nameof(output)), (v, nameof(v)), (vFirst, nameof(vFirst)), (gate, nameof(gate)));
        Run(NativeMethods.arwkv_timemix_value_residual_forward(output.Pointer, v.Pointer, vFirst.Pointer, gate.Pointer, count, S(stream)),
            "arwkv_timemix_value_residual_forward");
    }

    /// <summary>dv, dvFirst, dgate [count] += the value residual's gradients.</summary>
    public static void ValueResidualBackward(HipBuffer dv, HipBuffer dvFirst, HipBuffer dgate, HipBuffer dout, HipBuffer v, HipBuffer vFirst,
        HipBuffer gate, long count, HipStream? stream = null)
    {
        NeedAll(count * F, (dv, nameof(dv)), (dvFirst, nameof(dvFirst)), (dgate, nameof(dgate)), (dout, nameof(dout)), (v, nameof(v)), (vFirst, nameof(vFirst)), (gate, nameof(gate)));
        Run(NativeMethods.arwkv_timemix_value_residual_backward(dv.Pointer, dvFirst.Pointer, dgate.Pointer, dout.Pointer, v.Pointer,
            vFirst.Pointer, gate.Pointer, count, S(stream)), "arwkv_timemix_value_residual_backward");
    }

    /// <summary>
    /// Per head of 64 channels: kk = normalize(k * kK), wkvA = -kk, wkvB = kk * a, kOut = k * (1 + (a - 1) * kA), all [n, c]
    /// (overwritten); kkNorm [n, c/64] (overwritten) keeps ||k * kK|| for the backward. kK and kA are [c].
    /// </summary>
    public static void TimeMixKkForward(HipBuffer wkvA, HipBuffer wkvB, HipBuffer kOut, HipBuffer kkNorm, HipBuffer k, HipBuffer a,
        HipBuffer kK, HipBuffer kA, int n, int c, HipStream? stream = null)
    {
        RequireHeads(c);
        NeedAll((long)n * c * F, (wkvA, nameof(wkvA)), (wkvB, nameof(wkvB)), (kOut, nameof(kOut)), (k, nameof(k)), (a, nameof(a)));
        Need(kkNorm, (long)n * (c / HeadSize) * F, nameof(kkNorm)); Need(kK, (long)c * F, nameof(kK)); Need(kA, (long)c * F, nameof(kA));
        Run(NativeMethods.arwkv_timemix_kk_forward(wkvA.Pointer, wkvB.Pointer, kOut.Pointer, kkNorm.Pointer, k.Pointer, a.Pointer, kK.Pointer,
            kA.Pointer, n, c, S(stream)), "arwkv_timemix_kk_forward");
    }

    /// <summary>dk, da [n, c] += ..., dkK, dkA [c] += ... from the gradients of wkvA, wkvB and kOut.</summary>
    public static void TimeMixKkBackward(HipBuffer dk, HipBuffer da, HipBuffer dkK, HipBuffer dkA, HipBuffer dwkvA, HipBuffer dwkvB,
        HipBuffer dkOut, HipBuffer k, HipBuffer a, HipBuffer kK, HipBuffer kA, HipBuffer kkNorm, int n, int c, HipStream? stream = null)
    {
        RequireHeads(c);
        NeedAll((long)n * c * F, (dk, nameof(dk)), (da, nameof(da)), (dwkvA, nameof(dwkvA)), (dwkvB, nameof(dwkvB)), (dkOut, nameof(dkOut)), (k, nameof(k)), (a, nameof(a)));
        NeedAll((long)c * F, (dkK, nameof(dkK)), (dkA, nameof(dkA)), (kK, nameof(kK)), (kA, nameof(kA)));
        Need(kkNorm, (long)n * (c / HeadSize) * F, nameof(kkNorm));
        Run(NativeMethods.arwkv_timemix_kk_backward(dk.Pointer, da.Pointer, dkK.Pointer, dkA.Pointer, dwkvA.Pointer, dwkvB.Pointer, dkOut.Pointer,
            k.Pointer, a.Pointer, kK.Pointer, kA.Pointer, kkNorm.Pointer, n, c, S(stream)), "arwkv_timemix_kk_backward");
    }

    /// <summary>Bonus: y [n, c] += (sum over the head of r * k * rK) * v, with rK [c/64, 64]; y is updated in place.</summary>
    public static void TimeMixBonusForward(HipBuffer y, HipBuffer r, HipBuffer k, HipBuffer v, HipBuffer rK, int n, int c, HipStream? stream = null)
    {
        RequireHeads(c);
        NeedAll((long)n * c * F, (y, nameof(y)), (r, nameof(r)), (k, nameof(k)), (v, nameof(v)));
        Need(rK, (long)c * F, nameof(rK));
        Run(NativeMethods.arwkv_timemix_bonus_forward(y.Pointer, r.Pointer, k.Pointer, v.Pointer, rK.Pointer, n, c, S(stream)),
            "arwkv_timemix_bonus_forward");
    }

    /// <summary>dr, dk, dv [n, c] += ..., drK [c] += ... from dy, the gradient of the bonus' output.</summary>
    public static void TimeMixBonusBackward(HipBuffer dr, HipBuffer dk, HipBuffer dv, HipBuffer drK, HipBuffer dy, HipBuffer r, HipBuffer k,
        HipBuffer v, HipBuffer rK, int n, int c, HipStream? stream = null)
    {
        RequireHeads(c);
        NeedAll((long)n * c * F, (dr, nameof(dr)), (dk, nameof(dk)), (dv, nameof(dv)), (dy, nameof(dy)), (r, nameof(r)), (k, nameof(k)), (v, nameof(v)));
        Need(drK, (long)c * F, nameof(drK)); Need(rK, (long)c * F, nameof(rK));
        Run(NativeMethods.arwkv_timemix_bonus_backward(dr.Pointer, dk.Pointer, dv.Pointer, drK.Pointer, dy.Pointer, r.Pointer, k.Pointer,
            v.Pointer, rK.Pointer, n, c, S(stream)), "arwkv_timemix_bonus_backward");
    }

    /// <summary>Gate: output [count] (overwritten) = y * g.</summary>
    public static void MultiplyForward(HipBuffer output, HipBuffer y, HipBuffer g, long count, HipStream? stream = null)
    {
        Need(output, count * F, nameof(output)); Need(y, count * F, nameof(y)); Need(g, count * F, nameof(g));
        Run(NativeMethods.arwkv_mul_forward(output.Pointer, y.Pointer, g.Pointer, count, S(stream)), "arwkv_mul_forward");
    }

    /// <summary>dy += dout * g, dg += dout * y over [count].</summary>
    public static void MultiplyBackward(HipBuffer dy, HipBuffer dg, HipBuffer dout, HipBuffer y, HipBuffer g, long count, HipStream? stream = null)
    {
        NeedAll(count * F, (dy, nameof(dy)), (dg, nameof(dg)), (dout, nameof(dout)), (y, nameof(y)), (g, nameof(g)));
        Run(NativeMethods.arwkv_mul_backward(dy.Pointer, dg.Pointer, dout.Pointer, y.Pointer, g.Pointer, count, S(stream)), "arwkv_mul_backward");
    }

    static void RequireHeads(int c)
    {
        if (c <= 0 || c % HeadSize != 0) throw new ArgumentException($"c = {c} must be a positive multiple of the head size {HeadSize}.", nameof(c));
    }
}
