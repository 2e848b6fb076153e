using System.Numerics;
using System.Numerics.Tensors;

namespace Arwkv.Training.Layers;

/// <summary>
/// The distillation losses of ARWKV.md section 5, each as a forward that returns the loss and a backward that
/// ADDS the gradient (scaled by <c>dloss</c>, the gradient of the final objective with respect to this loss).
/// Token masks: byte per row, 0 = padding (ignored); an empty mask means every row counts. Averages are over
/// counted rows; a batch with no counted row has loss 0 and gradient 0.
/// </summary>
internal static class Losses
{
    // ---- Stage 1: per-layer alignment --------------------------------------------------------------------------
    // loss = mean over counted rows of ||teacher - student||_2 / sqrt(C); student, teacher [N, C]
    // Averaging over layers is the caller's: call Forward per layer and Backward with dloss = 1 / layers.
    public static double AlignmentForward<TF>(ReadOnlySpan<TF> student, ReadOnlySpan<TF> teacher, ReadOnlySpan<byte> mask, int n, int c)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        double sum = 0;
        int count = 0;
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            count++;
            sum += double.CreateTruncating(TensorPrimitives.Distance(teacher.Slice(row * c, c), student.Slice(row * c, c)));
        }
        return count == 0 ? 0 : sum / (count * Math.Sqrt(c));
    }

    // dstudent [N, C] += dloss * (student - teacher) / (||student - teacher|| sqrt(C) count); 0 where they are equal
    public static void AlignmentBackward<TF>(Span<TF> dstudent, ReadOnlySpan<TF> student, ReadOnlySpan<TF> teacher,
        ReadOnlySpan<byte> mask, double dloss, int n, int c)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int count = CountRows(mask, n);
        if (count == 0) return;
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            ReadOnlySpan<TF> s = student.Slice(row * c, c), t = teacher.Slice(row * c, c);
            TF norm = TensorPrimitives.Distance(s, t);
            if (norm == TF.Zero) continue;
            TF scale = TF.CreateTruncating(dloss / (count * Math.Sqrt(c))) / norm;
            Span<TF> d = dstudent.Slice(row * c, c);
            for (int j = 0; j < c; j++) d[j] += scale * (s[j] - t[j]);
        }
    }

    // ---- Stage 2: KL(teacher || student) over the vocabulary, temperature 1 ---------------------------------------
    // loss = mean over counted rows of sum_v p_t(v) (log p_t(v) - log p_s(v)), p = softmax(logits)
    // studentLogits, teacherLogits [N, V]; scratch [V]
    public static double KlForward<TF>(ReadOnlySpan<TF> studentLogits, ReadOnlySpan<TF> teacherLogits, ReadOnlySpan<byte> mask,
        Span<TF> scratch, int n, int vocab)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        double sum = 0;
        int count = 0;
        Span<TF> teacherLogProbs = scratch.Slice(0, vocab);
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            count++;
            ReadOnlySpan<TF> s = studentLogits.Slice(row * vocab, vocab);
            LogSoftmax(teacherLogits.Slice(row * vocab, vocab), teacherLogProbs);
            TF studentLse = LogSumExp(s);
            TF kl = TF.Zero;
            for (int v = 0; v < vocab; v++)
            {
                TF lt = teacherLogProbs[v];
                kl += TF.Exp(lt) * (lt - (s[v] - studentLse));
            }
            sum += double.CreateTruncating(kl);
        }
        return count == 0 ? 0 : sum / count;
    }

    // dstudentLogits [N, V] += dloss * (p_s - p_t) / count
    public static void KlBackward<TF>(Span<TF> dstudentLogits, ReadOnlySpan<TF> studentLogits, ReadOnlySpan<TF> teacherLogits,
        ReadOnlySpan<byte> mask, double dloss, Span<TF> scratch, int n, int vocab)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int count = CountRows(mask, n);
        if (count == 0) return;
        TF scale = TF.CreateTruncating(dloss / count);
        Span<TF> ps = scratch.Slice(0, vocab);
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            ReadOnlySpan<TF> t = teacherLogits.Slice(row * vocab, vocab);
            Span<TF> d = dstudentLogits.Slice(row * vocab, vocab);
            TF teacherLse = LogSumExp(t);
            Softmax(studentLogits.Slice(row * vocab, vocab), ps);
            for (int v = 0; v < vocab; v++) d[v] += scale * (ps[v] - TF.Exp(t[v] - teacherLse));
        }
    }

    // ---- Stage 2 with a top-k teacher ---------------------------------------------------------------------------
    // The teacher is stored as its k largest logits per row: ids [N, K] and logits [N, K] (log-probabilities work
    // too: only differences matter). Its distribution is renormalized over those ids:
    //   q(id_i) = exp(l_i) / sum_{i' < K} exp(l_i'),  0 elsewhere,
    // and loss = mean over counted rows of sum_i q(id_i) (log q(id_i) - log p_s(id_i)), p_s the student's full softmax.
    // Ids must be distinct within a row.
    public static double TopKKlForward<TF>(ReadOnlySpan<TF> studentLogits, ReadOnlySpan<int> teacherIds, ReadOnlySpan<TF> teacherLogits,
        ReadOnlySpan<byte> mask, Span<TF> scratch, int n, int vocab, int k)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        double sum = 0;
        int count = 0;
        Span<TF> q = scratch.Slice(0, k);
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            count++;
            ReadOnlySpan<TF> s = studentLogits.Slice(row * vocab, vocab);
            LogSoftmax(teacherLogits.Slice(row * k, k), q);
            TF studentLse = LogSumExp(s), kl = TF.Zero;
            for (int i = 0; i < k; i++)
            {
                int id = teacherIds[row * k + i];
                if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(teacherIds), $"teacher id {id} outside [0, {vocab})");
                kl += TF.Exp(q[i]) * (q[i] - (s[id] - studentLse));
            }
            sum += double.CreateTruncating(kl);
        }
        return count == 0 ? 0 : sum / count;
    }

    // dstudentLogits [N, V] += dloss * (p_s - q) / count
    public static void TopKKlBackward<TF>(Span<TF> dstudentLogits, ReadOnlySpan<TF> studentLogits, ReadOnlySpan<int> teacherIds,
        ReadOnlySpan<TF> teacherLogits, ReadOnlySpan<byte> mask, double dloss, Span<TF> scratch, int n, int vocab, int k)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int count = CountRows(mask, n);
        if (count == 0) return;
        TF scale = TF.CreateTruncating(dloss / count);
        Span<TF> ps = scratch.Slice(0, vocab);
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            Span<TF> d = dstudentLogits.Slice(row * vocab, vocab);
            Softmax(studentLogits.Slice(row * vocab, vocab), ps);
            ReadOnlySpan<TF> t = teacherLogits.Slice(row * k, k);
            TF teacherLse = LogSumExp(t);
            for (int i = 0; i < k; i++) ps[teacherIds[row * k + i]] -= TF.Exp(t[i] - teacherLse);
            TensorPrimitives.MultiplyAdd<TF>(ps, scale, d, d);
        }
    }

    // ---- Cross-entropy (SFT) ------------------------------------------------------------------------------------
    // loss = mean over counted rows of -log p_s(target); logits [N, V], targets [N]
    public static double CrossEntropyForward<TF>(ReadOnlySpan<TF> logits, ReadOnlySpan<int> targets, ReadOnlySpan<byte> mask, int n, int vocab)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        double sum = 0;
        int count = 0;
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            count++;
            ReadOnlySpan<TF> l = logits.Slice(row * vocab, vocab);
            sum += double.CreateTruncating(LogSumExp(l) - l[CheckTarget(targets[row], vocab)]);
        }
        return count == 0 ? 0 : sum / count;
    }

    // dlogits [N, V] += dloss * (p_s - onehot(target)) / count
    public static void CrossEntropyBackward<TF>(Span<TF> dlogits, ReadOnlySpan<TF> logits, ReadOnlySpan<int> targets, ReadOnlySpan<byte> mask,
        double dloss, Span<TF> scratch, int n, int vocab)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int count = CountRows(mask, n);
        if (count == 0) return;
        TF scale = TF.CreateTruncating(dloss / count);
        Span<TF> p = scratch.Slice(0, vocab);
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            Softmax(logits.Slice(row * vocab, vocab), p);
            p[CheckTarget(targets[row], vocab)] -= TF.One;
            Span<TF> d = dlogits.Slice(row * vocab, vocab);
            TensorPrimitives.MultiplyAdd<TF>(p, scale, d, d);
        }
    }

    // ---- Sequence log-probability (input of DPO) ----------------------------------------------------------------
    // sum over counted rows of log p(target); one sequence's logits [N, V] and targets [N]
    public static double SequenceLogProbForward<TF>(ReadOnlySpan<TF> logits, ReadOnlySpan<int> targets, ReadOnlySpan<byte> mask, int n, int vocab)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        double sum = 0;
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            ReadOnlySpan<TF> l = logits.Slice(row * vocab, vocab);
            sum += double.CreateTruncating(l[CheckTarget(targets[row], vocab)] - LogSumExp(l));
        }
        return sum;
    }

    // dlogits [N, V] += dlogp * (onehot(target) - p)
    public static void SequenceLogProbBackward<TF>(Span<TF> dlogits, ReadOnlySpan<TF> logits, ReadOnlySpan<int> targets, ReadOnlySpan<byte> mask,
        double dlogp, Span<TF> scratch, int n, int vocab)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TF scale = TF.CreateTruncating(-dlogp);
        Span<TF> p = scratch.Slice(0, vocab);
        for (int row = 0; row < n; row++)
        {
            if (!Counts(mask, row)) continue;
            Softmax(logits.Slice(row * vocab, vocab), p);
            p[CheckTarget(targets[row], vocab)] -= TF.One;
            Span<TF> d = dlogits.Slice(row * vocab, vocab);
            TensorPrimitives.MultiplyAdd<TF>(p, scale, d, d);
        }
    }

    // ---- DPO, sigmoid variant, frozen reference -----------------------------------------------------------------
    // per pair: z = beta ((pc - rc) - (pr - rr)), loss = -log sigmoid(z); mean over pairs.
    // policyChosen/policyRejected: the policy's summed log-probs; referenceChosen/referenceRejected: the frozen model's.
    public static double DpoForward(ReadOnlySpan<double> policyChosen, ReadOnlySpan<double> policyRejected,
        ReadOnlySpan<double> referenceChosen, ReadOnlySpan<double> referenceRejected, double beta)
    {
        int pairs = policyChosen.Length;
        if (pairs == 0) return 0;
        double sum = 0;
        for (int i = 0; i < pairs; i++)
        {
            double z = beta * (policyChosen[i] - referenceChosen[i] - (policyRejected[i] - referenceRejected[i]));
            sum += Softplus(-z);
        }
        return sum / pairs;
    }

    // dPolicyChosen += -dloss beta sigmoid(-z) / pairs; dPolicyRejected += +dloss beta sigmoid(-z) / pairs
    public static void DpoBackward(Span<double> dPolicyChosen, Span<double> dPolicyRejected, ReadOnlySpan<double> policyChosen,
        ReadOnlySpan<double> policyRejected, ReadOnlySpan<double> referenceChosen, ReadOnlySpan<double> referenceRejected,
        double beta, double dloss)
    {
        int pairs = policyChosen.Length;
        for (int i = 0; i < pairs; i++)
        {
            double z = beta * (policyChosen[i] - referenceChosen[i] - (policyRejected[i] - referenceRejected[i]));
            double g = dloss * beta / (1 + Math.Exp(z)) / pairs;
            dPolicyChosen[i] -= g;
            dPolicyRejected[i] += g;
        }
    }

    // ---- shared -------------------------------------------------------------------------------------------------
    private static bool Counts(ReadOnlySpan<byte> mask, int row) => mask.IsEmpty || mask[row] != 0;

    private static int CountRows(ReadOnlySpan<byte> mask, int n)
    {
        if (mask.IsEmpty) return n;
        int count = 0;
        for (int i = 0; i < n; i++) if (mask[i] != 0) count++;
        return count;
    }

    private static int CheckTarget(int target, int vocab) =>
        (uint)target < (uint)vocab ? target : throw new ArgumentOutOfRangeException(nameof(target), $"target id {target} outside [0, {vocab})");

    private static double Softplus(double x) => x > 0 ? x + double.LogP1(Math.Exp(-x)) : double.LogP1(Math.Exp(x));

    internal static TF LogSumExp<TF>(ReadOnlySpan<TF> x) where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TF max = TensorPrimitives.Max(x), sum = TF.Zero;
        for (int i = 0; i < x.Length; i++) sum += TF.Exp(x[i] - max);
        return max + TF.Log(sum);
    }

    internal static void Softmax<TF>(ReadOnlySpan<TF> x, Span<TF> p) where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TF lse = LogSumExp(x);
        for (int i = 0; i < x.Length; i++) p[i] = TF.Exp(x[i] - lse);
    }

    private static void LogSoftmax<TF>(ReadOnlySpan<TF> x, Span<TF> lp) where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TF lse = LogSumExp(x);
        for (int i = 0; i < x.Length; i++) lp[i] = x[i] - lse;
    }
}
