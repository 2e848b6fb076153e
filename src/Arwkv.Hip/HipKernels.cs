using Arwkv.IO;

namespace Arwkv.Hip;

/// <summary>
/// Kernel launches of libarwkv_hip (see native/hip/arwkv_hip.h for the formulas). Each method checks that every
/// buffer is large enough for the shape it is given, then queues the kernel on <c>stream</c> (null = the default
/// stream) and returns without waiting. Arguments follow llm.c: outputs first, then inputs, then sizes. Buffers
/// hold float32 unless a <see cref="DType"/> says otherwise; "N" is the number of tokens (batch * time).
/// Backward methods add into their gradient buffers unless documented as overwriting.
/// </summary>
public static partial class HipKernels
{
    const int F = sizeof(float);
    const int HeadSize = 64;

    // ---- conversions ----------------------------------------------------------------------------------------------

    /// <summary>output [n] bf16 = round-to-nearest-even(input [n] f32).</summary>
    public static void ConvertToBFloat16(HipBuffer output, HipBuffer input, long n, HipStream? stream = null)
    {
        Need(output, n * 2, nameof(output)); Need(input, n * F, nameof(input));
        Run(NativeMethods.arwkv_convert_f32_to_bf16(output.Pointer, input.Pointer, n, S(stream)), "arwkv_convert_f32_to_bf16");
    }

    /// <summary>output [n] f32 = widen(input [n] bf16).</summary>
    public static void ConvertToFloat32(HipBuffer output, HipBuffer input, long n, HipStream? stream = null)
    {
        Need(output, n * F, nameof(output)); Need(input, n * 2, nameof(input));
        Run(NativeMethods.arwkv_convert_bf16_to_f32(output.Pointer, input.Pointer, n, S(stream)), "arwkv_convert_bf16_to_f32");
    }

    // ---- embedding ------------------------------------------------------------------------------------------------

    /// <summary>output [n,c] (overwritten) = table [v,c] rows picked by tokens [n] (int32).</summary>
    public static void EmbeddingForward(HipBuffer output, HipBuffer tokens, HipBuffer table, DType tableType, int n, int c, int v,
        HipStream? stream = null)
    {
        int dtype = Code(tableType);
        Need(output, (long)n * c * F, nameof(output)); Need(tokens, (long)n * 4, nameof(tokens));
        Need(table, (long)v * c * tableType.SizeOf(), nameof(table));
        Run(NativeMethods.arwkv_embedding_forward(output.Pointer, tokens.Pointer, table.Pointer, dtype, n, c, v, S(stream)),
            "arwkv_embedding_forward");
    }

    /// <summary>dtable [v,c] += scatter-add of dout [n,c] by tokens [n].</summary>
    public static void EmbeddingBackward(HipBuffer dtable, HipBuffer tokens, HipBuffer dout, int n, int c, int v, HipStream? stream = null)
    {
        Need(dtable, (long)v * c * F, nameof(dtable)); Need(tokens, (long)n * 4, nameof(tokens)); Need(dout, (long)n * c * F, nameof(dout));
        Run(NativeMethods.arwkv_embedding_backward(dtable.Pointer, tokens.Pointer, dout.Pointer, n, c, v, S(stream)),
            "arwkv_embedding_backward");
    }

    // ---- RMSNorm --------------------------------------------------------------------------------------------------

    /// <summary>output [n,c] = input * rstd * weight [c]; rstd [n] saved for the backward. Both overwritten.</summary>
    public static void RmsNormForward(HipBuffer output, HipBuffer rstd, HipBuffer input, HipBuffer weight, int n, int c, float eps,
        HipStream? stream = null)
    {
        Need(output, (long)n * c * F, nameof(output)); Need(rstd, (long)n * F, nameof(rstd));
        Need(input, (long)n * c * F, nameof(input)); Need(weight, (long)c * F, nameof(weight));
        Run(NativeMethods.arwkv_rmsnorm_forward(output.Pointer, rstd.Pointer, input.Pointer, weight.Pointer, n, c, eps, S(stream)),
            "arwkv_rmsnorm_forward");
    }

    /// <summary>dinput [n,c] += ..., dweight [c] += ... given the forward's input and rstd.</summary>
    public static void RmsNormBackward(HipBuffer dinput, HipBuffer dweight, HipBuffer dout, HipBuffer input, HipBuffer weight,
        HipBuffer rstd, int n, int c, HipStream? stream = null)
    {
        long size = (long)n * c * F;
        Need(dinput, size, nameof(dinput)); Need(dweight, (long)c * F, nameof(dweight)); Need(dout, size, nameof(dout));
        Need(input, size, nameof(input)); Need(weight, (long)c * F, nameof(weight)); Need(rstd, (long)n * F, nameof(rstd));
        Run(NativeMethods.arwkv_rmsnorm_backward(dinput.Pointer, dweight.Pointer, dout.Pointer, input.Pointer, weight.Pointer,
            rstd.Pointer, n, c, S(stream)), "arwkv_rmsnorm_backward");
    }

    // ---- SwiGLU ---------------------------------------------------------------------------------------------------

    /// <summary>output [count] (overwritten) = silu(gate) * up.</summary>
    public static void SwiGluForward(HipBuffer output, HipBuffer gate, HipBuffer up, long count, HipStream? stream = null)
    {
        Need(output, count * F, nameof(output)); Need(gate, count * F, nameof(gate)); Need(up, count * F, nameof(up));
        Run(NativeMethods.arwkv_swiglu_forward(output.Pointer, gate.Pointer, up.Pointer, count, S(stream)), "arwkv_swiglu_forward");
    }

    /// <summary>dgate, dup [count] += the gradients of silu(gate) * up.</summary>
    public static void SwiGluBackward(HipBuffer dgate, HipBuffer dup, HipBuffer dout, HipBuffer gate, HipBuffer up, long count,
        HipStream? stream = null)
    {
        NeedAll(count * F, (dgate, nameof(dgate)), (dup, nameof(dup)), (dout, nameof(dout)), (gate, nameof(gate)), (up, nameof(up)));
        Run(NativeMethods.arwkv_swiglu_backward(dgate.Pointer, dup.Pointer, dout.Pointer, gate.Pointer, up.Pointer, count, S(stream)),
            "arwkv_swiglu_backward");
    }

    // ---- WKV7 -----------------------------------------------------------------------------------------------------

    /// <summary>
    /// The RWKV-7 recurrence over [batch, time, heads, 64] inputs r, w (decay), k, v, a, b of <paramref name="inputType"/>
    /// (F32 or BF16); y (overwritten) is float32 of the same shape. <paramref name="state"/> [batch, heads, 64, 64]
    /// (null = zeros) is the initial state and receives the final one. <paramref name="mask"/> [batch, time] int32
    /// (null = all valid) skips padded steps. <paramref name="checkpoints"/> [batch, heads, time/16, 64, 64] and
    /// <paramref name="sa"/> [batch, time, heads, 64] (both or neither) save what <see cref="Wkv7Backward"/> needs.
    /// </summary>
    public static void Wkv7Forward(HipBuffer y, HipBuffer? state, HipBuffer? checkpoints, HipBuffer? sa,
        HipBuffer r, HipBuffer w, HipBuffer k, HipBuffer v, HipBuffer a, HipBuffer b, HipBuffer? mask, DType inputType,
        int batch, int time, int heads, HipStream? stream = null)
    {
        int dtype = Code(inputType);
        if ((checkpoints == null) != (sa == null)) throw new ArgumentException("checkpoints and sa are saved together: pass both or neither.");
        if (checkpoints != null && time % 16 != 0) throw new ArgumentException($"time {time} must be a multiple of 16 to save checkpoints.", nameof(time));
        long elements = (long)batch * time * heads * HeadSize;
        long inputBytes = elements * inputType.SizeOf();
        NeedAll(inputBytes, (r, nameof(r)), (w, nameof(w)), (k, nameof(k)), (v, nameof(v)), (a, nameof(a)), (b, nameof(b)));
        Need(y, elements * F, nameof(y));
        if (state != null) Need(state, (long)batch * heads * HeadSize * HeadSize * F, nameof(state));
        if (checkpoints != null) Need(checkpoints, (long)batch * heads * (time / 16) * HeadSize * HeadSize * F, nameof(checkpoints));
        if (sa != null) Need(sa, elements * F, nameof(sa));
        if (mask != null) Need(mask, (long)batch * time * 4, nameof(mask));
        Run(NativeMethods.arwkv_wkv7_forward(y.Pointer, P(state), P(checkpoints), P(sa), r.Pointer, w.Pointer, k.Pointer, v.Pointer,
            a.Pointer, b.Pointer, P(mask), dtype, batch, time, heads, S(stream)), "arwkv_wkv7_forward");
    }

    /// <summary>
    /// Gradients of <see cref="Wkv7Forward"/> (all float32 [batch, time, heads, 64], overwritten) from dy, using the
    /// forward's checkpoints and sa. <paramref name="stateInit"/> is the initial state the forward started from
    /// (null = zeros); <paramref name="dstateInit"/> (null = not wanted) receives its gradient.
    /// </summary>
    public static void Wkv7Backward(HipBuffer dr, HipBuffer dw, HipBuffer dk, HipBuffer dv, HipBuffer da, HipBuffer db,
        HipBuffer? dstateInit, HipBuffer dy, HipBuffer checkpoints, HipBuffer sa, HipBuffer? stateInit,
        HipBuffer r, HipBuffer w, HipBuffer k, HipBuffer v, HipBuffer a, HipBuffer b, HipBuffer? mask, DType inputType,
        int batch, int time, int heads, HipStream? stream = null)
    {
        int dtype = Code(inputType);
        if (time % 16 != 0) throw new ArgumentException($"time {time} must be a multiple of 16.", nameof(time));
        long elements = (long)batch * time * heads * HeadSize;
        long stateBytes = (long)batch * heads * HeadSize * HeadSize * F;
        NeedAll(elements * inputType.SizeOf(), (r, nameof(r)), (w, nameof(w)), (k, nameof(k)), (v, nameof(v)), (a, nameof(a)), (b, nameof(b)));
        NeedAll(elements * F, (dr, nameof(dr)), (dw, nameof(dw)), (dk, nameof(dk)), (dv, nameof(dv)), (da, nameof(da)), (db, nameof(db)), (dy, nameof(dy)), (sa, nameof(sa)));
        Need(checkpoints, stateBytes * (time / 16), nameof(checkpoints));
        if (stateInit != null) Need(stateInit, stateBytes, nameof(stateInit));
        if (dstateInit != null) Need(dstateInit, stateBytes, nameof(dstateInit));
        if (mask != null) Need(mask, (long)batch * time * 4, nameof(mask));
        Run(NativeMethods.arwkv_wkv7_backward(dr.Pointer, dw.Pointer, dk.Pointer, dv.Pointer, da.Pointer, db.Pointer, P(dstateInit),
            dy.Pointer, checkpoints.Pointer, sa.Pointer, P(stateInit), r.Pointer, w.Pointer, k.Pointer, v.Pointer, a.Pointer, b.Pointer,
            P(mask), dtype, batch, time, heads, S(stream)), "arwkv_wkv7_backward");
    }

    /// <summary>One generation step: y [batch, heads, 64] (overwritten) and state [batch, heads, 64, 64] updated in place.</summary>
    public static void Wkv7Decode(HipBuffer y, HipBuffer state, HipBuffer r, HipBuffer w, HipBuffer k, HipBuffer v, HipBuffer a,
        HipBuffer b, int batch, int heads, HipStream? stream = null)
    {
        long elements = (long)batch * heads * HeadSize;
        NeedAll(elements * F, (y, nameof(y)), (r, nameof(r)), (w, nameof(w)), (k, nameof(k)), (v, nameof(v)), (a, nameof(a)), (b, nameof(b)));
        Need(state, elements * HeadSize * F, nameof(state));
        Run(NativeMethods.arwkv_wkv7_decode(y.Pointer, state.Pointer, r.Pointer, w.Pointer, k.Pointer, v.Pointer, a.Pointer, b.Pointer,
            batch, heads, S(stream)), "arwkv_wkv7_decode");
    }

    // ---- GEMM -----------------------------------------------------------------------------------------------------

    /// <summary>
    /// c [m,n] f32 = alpha * op(a) op(b) + beta * c, row-major. a is [m,k] (or [k,m] when <paramref name="transposeA"/>),
    /// b is [k,n] (or [n,k] when <paramref name="transposeB"/>), each F32 or BF16. A linear layer's forward is
    /// <c>Gemm(out, x, W, transposeB: true)</c>.
    /// </summary>
    public static void Gemm(HipBuffer c, HipBuffer a, DType aType, HipBuffer b, DType bType, bool transposeA, bool transposeB,
        int m, int n, int k, float alpha = 1f, float beta = 0f, HipStream? stream = null) =>
        GemmCore(naive: false, c, a, aType, b, bType, transposeA, transposeB, m, n, k, alpha, beta, stream);

    /// <summary>The same product as <see cref="Gemm"/> by the untiled one-thread-per-output kernel (the oracle).</summary>
    public static void GemmNaive(HipBuffer c, HipBuffer a, DType aType, HipBuffer b, DType bType, bool transposeA, bool transposeB,
        int m, int n, int k, float alpha = 1f, float beta = 0f, HipStream? stream = null) =>
        GemmCore(naive: true, c, a, aType, b, bType, transposeA, transposeB, m, n, k, alpha, beta, stream);

    static void GemmCore(bool naive, HipBuffer c, HipBuffer a, DType aType, HipBuffer b, DType bType, bool transposeA, bool transposeB,
        int m, int n, int k, float alpha, float beta, HipStream? stream)
    {
        int aCode = Code(aType), bCode = Code(bType);
        Need(c, (long)m * n * F, nameof(c)); Need(a, (long)m * k * aType.SizeOf(), nameof(a)); Need(b, (long)k * n * bType.SizeOf(), nameof(b));
        int status = naive
            ? NativeMethods.arwkv_gemm_naive(c.Pointer, a.Pointer, aCode, b.Pointer, bCode, transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, beta, S(stream))
            : NativeMethods.arwkv_gemm(c.Pointer, a.Pointer, aCode, b.Pointer, bCode, transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, beta, S(stream));
        Run(status, naive ? "arwkv_gemm_naive" : "arwkv_gemm");
    }

    // ---- losses ---------------------------------------------------------------------------------------------------

    /// <summary>Stage-1 alignment: losses [n] (overwritten) = ||student - teacher|| / sqrt(c) per token.</summary>
    public static void AlignmentLossForward(HipBuffer losses, HipBuffer student, HipBuffer teacher, int n, int c, HipStream? stream = null)
    {
        Need(losses, (long)n * F, nameof(losses)); Need(student, (long)n * c * F, nameof(student)); Need(teacher, (long)n * c * F, nameof(teacher));
        Run(NativeMethods.arwkv_alignment_loss_forward(losses.Pointer, student.Pointer, teacher.Pointer, n, c, S(stream)),
            "arwkv_alignment_loss_forward");
    }

    /// <summary>dstudent [n,c] += gradScale * d(loss_t)/d(student) for every token t.</summary>
    public static void AlignmentLossBackward(HipBuffer dstudent, HipBuffer student, HipBuffer teacher, HipBuffer losses, float gradScale,
        int n, int c, HipStream? stream = null)
    {
        Need(dstudent, (long)n * c * F, nameof(dstudent)); Need(student, (long)n * c * F, nameof(student));
        Need(teacher, (long)n * c * F, nameof(teacher)); Need(losses, (long)n * F, nameof(losses));
        Run(NativeMethods.arwkv_alignment_loss_backward(dstudent.Pointer, student.Pointer, teacher.Pointer, losses.Pointer, gradScale, n, c,
            S(stream)), "arwkv_alignment_loss_backward");
    }

    /// <summary>
    /// Stage-2 KL(teacher || student) per token over [n, vocab] logits of <paramref name="logitType"/>: losses [n]
    /// (overwritten), dstudent [n, vocab] (null = forward only; overwritten) = gradScale * (p_student - p_teacher).
    /// mask [n] int32 (null = all) zeroes padded tokens.
    /// </summary>
    public static void KlDivergence(HipBuffer losses, HipBuffer? dstudent, HipBuffer studentLogits, HipBuffer teacherLogits, DType logitType,
        HipBuffer? mask, float gradScale, int n, int vocab, HipStream? stream = null)
    {
        int dtype = Code(logitType);
        long logitBytes = (long)n * vocab * logitType.SizeOf();
        Need(losses, (long)n * F, nameof(losses)); Need(studentLogits, logitBytes, nameof(studentLogits)); Need(teacherLogits, logitBytes, nameof(teacherLogits));
        if (dstudent != null) Need(dstudent, (long)n * vocab * F, nameof(dstudent));
        if (mask != null) Need(mask, (long)n * 4, nameof(mask));
        Run(NativeMethods.arwkv_kl_forward_backward(losses.Pointer, P(dstudent), studentLogits.Pointer, teacherLogits.Pointer, dtype, P(mask),
            gradScale, n, vocab, S(stream)), "arwkv_kl_forward_backward");
    }

    /// <summary>
    /// Cross-entropy per token: losses [n] (overwritten), dlogits [n, vocab] (null = forward only; overwritten) =
    /// gradScale * (softmax - onehot). A target outside [0, vocab) (e.g. -100) contributes nothing.
    /// </summary>
    public static void CrossEntropy(HipBuffer losses, HipBuffer? dlogits, HipBuffer logits, DType logitType, HipBuffer targets,
        float gradScale, int n, int vocab, HipStream? stream = null)
    {
        int dtype = Code(logitType);
        Need(losses, (long)n * F, nameof(losses)); Need(logits, (long)n * vocab * logitType.SizeOf(), nameof(logits));
        Need(targets, (long)n * 4, nameof(targets));
        if (dlogits != null) Need(dlogits, (long)n * vocab * F, nameof(dlogits));
        Run(NativeMethods.arwkv_cross_entropy_forward_backward(losses.Pointer, P(dlogits), logits.Pointer, dtype, targets.Pointer, gradScale,
            n, vocab, S(stream)), "arwkv_cross_entropy_forward_backward");
    }

    // ---- optimizer ------------------------------------------------------------------------------------------------

    /// <summary>normSquared [1] += sum of grad [count] squared (zero it before the first tensor of a step).</summary>
    public static void GradNormSquared(HipBuffer normSquared, HipBuffer grad, long count, HipStream? stream = null)
    {
        Need(normSquared, F, nameof(normSquared)); Need(grad, count * F, nameof(grad));
        Run(NativeMethods.arwkv_grad_norm_squared(normSquared.Pointer, grad.Pointer, count, S(stream)), "arwkv_grad_norm_squared");
    }

    /// <summary>
    /// One fused AdamW step on float32 master weights and moments m, v [count], also writing the bf16 copy
    /// (null = none). With <paramref name="gradNormSquared"/> (from <see cref="GradNormSquared"/>) gradients are
    /// clipped to <paramref name="maxGradNorm"/> on the device. <paramref name="step"/> starts at 1.
    /// </summary>
    public static void AdamWUpdate(HipBuffer master, HipBuffer? bf16Copy, HipBuffer m, HipBuffer v, HipBuffer grad, long count,
        float learningRate, float beta1, float beta2, float eps, float weightDecay, int step, HipBuffer? gradNormSquared = null,
        float maxGradNorm = 1f, HipStream? stream = null)
    {
        NeedAll(count * F, (master, nameof(master)), (m, nameof(m)), (v, nameof(v)), (grad, nameof(grad)));
        if (bf16Copy != null) Need(bf16Copy, count * 2, nameof(bf16Copy));
        if (gradNormSquared != null) Need(gradNormSquared, F, nameof(gradNormSquared));
        Run(NativeMethods.arwkv_adamw_update(master.Pointer, P(bf16Copy), m.Pointer, v.Pointer, grad.Pointer, count, learningRate, beta1, beta2,
            eps, weightDecay, step, P(gradNormSquared), maxGradNorm, S(stream)), "arwkv_adamw_update");
    }

    // ---- helpers --------------------------------------------------------------------------------------------------

    static int Code(DType type) => type switch
    {
        DType.F32 => NativeMethods.F32,
        DType.BF16 => NativeMethods.BF16,
        _ => throw new ArgumentException($"the GPU kernels take F32 or BF16 tensors, not {type}.", nameof(type)),
    };

    static void Need(HipBuffer buffer, long bytes, string name)
    {
        ArgumentNullException.ThrowIfNull(buffer, name);
        buffer.RequireBytes(bytes, name);
    }

    // params ReadOnlySpan: the compiler builds the list on the stack, so a launch allocates nothing (decode runs dozens
    // of launches per token).
    static void NeedAll(long bytes, params ReadOnlySpan<(HipBuffer Buffer, string Name)> buffers)
    {
        foreach (var (buffer, name) in buffers) Need(buffer, bytes, name);
    }

    static nint P(HipBuffer? buffer) => buffer?.Pointer ?? 0;

    static nint S(HipStream? stream) => HipStream.Handle(stream);

    static void Run(int status, string function) => HipRuntime.Check(status, function);
}
