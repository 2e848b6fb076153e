using Arwkv.Training.Layers;

namespace Arwkv.Tests.Training;

public class LossesTests
{
    private static readonly double Ln3 = Math.Log(3);

    [Test]
    public void CrossEntropyHandComputed()
    {
        // p = softmax([0, ln 3]) = [1/4, 3/4]; target 1. The second row is padding.
        double[] logits = [0, Ln3, 5, -5];
        int[] targets = [1, 0];
        byte[] mask = [1, 0];
        Assert.That(Losses.CrossEntropyForward<double>(logits, targets, mask, 2, 2), Is.EqualTo(-Math.Log(0.75)).Within(1e-15));
        var d = new double[4];
        Losses.CrossEntropyBackward<double>(d, logits, targets, mask, 2.0, new double[2], 2, 2);
        Assert.That(d, Is.EqualTo(new[] { 0.5, -0.5, 0, 0 }).Within(1e-15));
    }

    [Test]
    public void KlHandComputed()
    {
        // teacher [1/2, 1/2], student [1/4, 3/4]: KL = 1/2 ln 2 + 1/2 ln(2/3); gradient p_s - p_t.
        double[] student = [0, Ln3], teacher = [7, 7];
        double expected = 0.5 * Math.Log(2) + 0.5 * Math.Log(2.0 / 3);
        Assert.That(Losses.KlForward<double>(student, teacher, [], new double[2], 1, 2), Is.EqualTo(expected).Within(1e-15));
        var d = new double[2];
        Losses.KlBackward<double>(d, student, teacher, [], 1.0, new double[2], 1, 2);
        Assert.That(d, Is.EqualTo(new[] { -0.25, 0.25 }).Within(1e-15));
    }

    [Test]
    public void TopKKlHandComputed()
    {
        // vocab 4, student uniform; teacher top-2 ids {2, 0} with logits {ln 3, 0} -> q = {3/4, 1/4}:
        // KL = 3/4 ln(3/4 / 1/4) + 1/4 ln(1/4 / 1/4) = 3/4 ln 3; gradient p_s - q = [0, 1/4, -1/2, 1/4].
        double[] student = [1, 1, 1, 1], teacherLogits = [Ln3, 0];
        int[] ids = [2, 0];
        Assert.That(Losses.TopKKlForward<double>(student, ids, teacherLogits, [], new double[2], 1, 4, 2), Is.EqualTo(0.75 * Ln3).Within(1e-15));
        var d = new double[4];
        Losses.TopKKlBackward<double>(d, student, ids, teacherLogits, [], 1.0, new double[4], 1, 4, 2);
        Assert.That(d, Is.EqualTo(new[] { 0, 0.25, -0.5, 0.25 }).Within(1e-15));
    }

    [Test]
    public void TopKWithAllIdsEqualsFullKl()
    {
        var rng = new Random(5);
        double[] student = GradCheck.Random(rng, 6, -2, 2), teacher = GradCheck.Random(rng, 6, -2, 2);
        int[] ids = [3, 0, 5, 1, 4, 2];
        double[] topLogits = ids.Select(i => teacher[i]).ToArray();
        Assert.That(Losses.TopKKlForward<double>(student, ids, topLogits, [], new double[6], 1, 6, 6),
            Is.EqualTo(Losses.KlForward<double>(student, teacher, [], new double[6], 1, 6)).Within(1e-14));
    }

    [Test]
    public void AlignmentHandComputed()
    {
        // C = 4. Row 0: ||(1,1,1,1)|| / 2 = 1. Row 1: ||(3,-4,0,0)|| / 2 = 2.5. Row 2 is padding. Mean 1.75.
        double[] student = [1, 1, 1, 1, 3, 0, 0, 0, 9, 9, 9, 9];
        double[] teacher = [0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0];
        byte[] mask = [1, 1, 0];
        Assert.That(Losses.AlignmentForward<double>(student, teacher, mask, 3, 4), Is.EqualTo(1.75).Within(1e-15));
        var d = new double[12];
        Losses.AlignmentBackward<double>(d, student, teacher, mask, 1.0, 3, 4);
        // (s - t) / (||s - t|| sqrt(C) count): row 0: 1 / (2 * 2 * 2); row 1: (3, -4) / (5 * 2 * 2)
        Assert.That(d, Is.EqualTo(new[] { 0.125, 0.125, 0.125, 0.125, 0.15, -0.2, 0, 0, 0, 0, 0, 0 }).Within(1e-15));
    }

    [Test]
    public void DpoHandComputed()
    {
        // z = 0.5 ((-1 + 1.5) - (-2 + 1.5)) = 0.5; loss = ln(1 + e^-0.5); dloss/dpc = -0.5 sigmoid(-0.5)
        double[] pc = [-1], pr = [-2], rc = [-1.5], rr = [-1.5];
        Assert.That(Losses.DpoForward(pc, pr, rc, rr, 0.5), Is.EqualTo(Math.Log(1 + Math.Exp(-0.5))).Within(1e-15));
        double[] dpc = [0], dpr = [0];
        Losses.DpoBackward(dpc, dpr, pc, pr, rc, rr, 0.5, 1.0);
        double g = 0.5 / (1 + Math.Exp(0.5));
        Assert.That(dpc[0], Is.EqualTo(-g).Within(1e-15));
        Assert.That(dpr[0], Is.EqualTo(g).Within(1e-15));
    }

    [Test]
    public void BackwardsMatchFiniteDifferences()
    {
        const int n = 5, vocab = 7, k = 3, c = 6;
        var rng = new Random(9);
        double[] logits = GradCheck.Random(rng, n * vocab, -3, 3), teacher = GradCheck.Random(rng, n * vocab, -3, 3);
        int[] targets = Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
        int[] ids = Enumerable.Range(0, n).SelectMany(_ => Enumerable.Range(0, vocab).OrderBy(_ => rng.Next()).Take(k)).ToArray();
        double[] topLogits = GradCheck.Random(rng, n * k, -3, 3);
        byte[] mask = [1, 0, 1, 1, 0];
        var scratch = new double[vocab];

        void CheckLogits(string name, Func<double> loss, Action<double[]> backward)
        {
            var d = new double[logits.Length];
            backward(d);
            double worst = GradCheck.Check(loss, [(name, logits, d)]);
            TestContext.Out.WriteLine($"{name} worst relative error {worst:E2}");
        }
        CheckLogits("ce", () => Losses.CrossEntropyForward<double>(logits, targets, mask, n, vocab),
            d => Losses.CrossEntropyBackward<double>(d, logits, targets, mask, 1, scratch, n, vocab));
        CheckLogits("kl", () => Losses.KlForward<double>(logits, teacher, mask, scratch, n, vocab),
            d => Losses.KlBackward<double>(d, logits, teacher, mask, 1, scratch, n, vocab));
        CheckLogits("topk", () => Losses.TopKKlForward<double>(logits, ids, topLogits, mask, scratch, n, vocab, k),
            d => Losses.TopKKlBackward<double>(d, logits, ids, topLogits, mask, 1, scratch, n, vocab, k));
        CheckLogits("logp", () => Losses.SequenceLogProbForward<double>(logits, targets, mask, n, vocab),
            d => Losses.SequenceLogProbBackward<double>(d, logits, targets, mask, 1, scratch, n, vocab));

        double[] student = GradCheck.Random(rng, n * c, -1, 1), target = GradCheck.Random(rng, n * c, -1, 1);
        var ds = new double[n * c];
        Losses.AlignmentBackward<double>(ds, student, target, mask, 1, n, c);
        GradCheck.Check(() => Losses.AlignmentForward<double>(student, target, mask, n, c), [("alignment", student, ds)]);

        double[] pc = GradCheck.Random(rng, 3, -5, 0), pr = GradCheck.Random(rng, 3, -5, 0), rc = GradCheck.Random(rng, 3, -5, 0), rr = GradCheck.Random(rng, 3, -5, 0);
        double[] dpc = new double[3], dpr = new double[3];
        Losses.DpoBackward(dpc, dpr, pc, pr, rc, rr, 0.3, 1);
        GradCheck.Check(() => Losses.DpoForward(pc, pr, rc, rr, 0.3), [("pc", pc, dpc), ("pr", pr, dpr)]);
    }
}
