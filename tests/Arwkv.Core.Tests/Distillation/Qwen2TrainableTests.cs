using Arwkv.Tests.Training;
using Arwkv.Training;
using Arwkv.Training.Layers;

namespace Arwkv.Tests.Distillation;

public class Qwen2TrainableTests
{
    private static Qwen2Config TinyConfig() => new()
    {
        HiddenSize = 8, NumLayers = 2, IntermediateSize = 12, VocabSize = 11, NumAttentionHeads = 2, NumKeyValueHeads = 1,
        RopeTheta = 10000, RmsNormEps = 1e-6,
    };

    // Random values everywhere so that no gradient path hides behind a zero (biases included).
    private static void Randomize<TF>(ParameterSet<TF> set, Random rng) where TF : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<TF>
    {
        foreach (var t in set.Tensors)
        {
            (double lo, double hi) = t.Name.EndsWith("norm.weight", StringComparison.Ordinal) ? (0.5, 1.5) : (-0.5, 0.5);
            for (int i = 0; i < t.Length; i++) set.Data[t.Offset + i] = TF.CreateTruncating(lo + (hi - lo) * rng.NextDouble());
        }
    }

    [Test]
    public void WholeTeacherGradientMatchesFiniteDifferences()
    {
        const int b = 2, t = 5;
        var config = TinyConfig();
        var teacher = new Qwen2Trainable<double>(config, b, t);
        var rng = new Random(5);
        Randomize(teacher.Parameters, rng);
        int[] tokens = Enumerable.Range(0, b * t).Select(_ => rng.Next(config.VocabSize)).ToArray();
        int[] targets = Enumerable.Range(0, b * t).Select(_ => rng.Next(config.VocabSize)).ToArray();
        var scratch = new double[config.VocabSize];

        double Loss() => Losses.CrossEntropyForward<double>(teacher.Forward(tokens, b, t), targets, default, b * t, config.VocabSize);

        teacher.Parameters.ZeroGrad();
        Loss();
        Losses.CrossEntropyBackward<double>(teacher.DLogits, teacher.Logits, targets, default, 1.0, scratch, b * t, config.VocabSize);
        teacher.Backward();
        double[] analytic = (double[])teacher.Parameters.Grad.Clone();

        var tensors = teacher.Parameters.Tensors.Select(p =>
        {
            // Views into the one parameter buffer: GradCheck perturbs values in place.
            var values = new ArraySegmentView(teacher.Parameters.Data, p.Offset, p.Length);
            return (p.Name, values, analytic.AsSpan(p.Offset, p.Length).ToArray());
        }).ToList();
        double worst = 0;
        var frng = new Random(3);
        foreach (var (name, view, grad) in tensors)
        {
            double tensorFloor = Math.Max(1e-8, 1e-4 * grad.Select(Math.Abs).Max());
            int checks = Math.Min(view.Length, 12);
            for (int k = 0; k < checks; k++)
            {
                int i = view.Length <= 12 ? k : frng.Next(view.Length);
                double keep = view[i], h = GradCheck.Step;
                view[i] = keep + h; double up = Loss();
                view[i] = keep - h; double down = Loss();
                view[i] = keep + 2 * h; double up2 = Loss();
                view[i] = keep - 2 * h; double down2 = Loss();
                view[i] = keep;
                double numeric = (8 * (up - down) - (up2 - down2)) / (12 * h);
                double rel = Math.Abs(grad[i] - numeric) / Math.Max(Math.Max(Math.Abs(grad[i]), Math.Abs(numeric)), tensorFloor);
                worst = Math.Max(worst, rel);
                Assert.That(rel, Is.LessThan(1e-6), $"{name}[{i}]: analytic {grad[i]:R}, numeric {numeric:R}");
            }
        }
        TestContext.Out.WriteLine($"worst relative error {worst:E2} over {tensors.Count} tensors");
        Assert.That(tensors.Any(x => x.Name.EndsWith("q_proj.bias", StringComparison.Ordinal) && x.Item3.Any(g => g != 0)), "bias gradient must be non-zero");
    }

    [Test]
    public void SavedCheckpointGivesTheSameLogitsInQwen2Model()
    {
        const int t = 9;
        var config = TinyConfig() with { HiddenSize = 16, NumAttentionHeads = 4, NumKeyValueHeads = 2, IntermediateSize = 24, VocabSize = 19 };
        var teacher = new Qwen2Trainable<float>(config, 1, t);
        Randomize(teacher.Parameters, new Random(8));
        int[] tokens = [1, 5, 7, 2, 18, 0, 3, 3, 11];
        float[] trainable = teacher.Forward(tokens, 1, t).ToArray();

        string dir = Path.Combine(Path.GetTempPath(), "arwkv-teacher-" + Guid.NewGuid().ToString("N"));
        try
        {
            teacher.Save(dir);
            using (var model = Qwen2Model.Load(dir, new ModelOptions { Threads = 1 }))
            {
                var logits = new float[t * config.VocabSize];
                model.Forward(tokens, model.CreateState(), logits, LogitsScope.All);
                double worst = 0;
                for (int i = 0; i < logits.Length; i++) worst = Math.Max(worst, Math.Abs(logits[i] - trainable[i]));
                TestContext.Out.WriteLine($"max |trainable - Qwen2Model| = {worst:E2}");
                Assert.That(worst, Is.LessThan(2e-5));

                // Stage 1's taps: the trainable forward's per-layer attention inputs/outputs equal the inference model's.
                int c = config.HiddenSize;
                var inputs = new float[config.NumLayers * t * c];
                var outputs = new float[config.NumLayers * t * c];
                model.ForwardWithLayerTaps(tokens, model.CreateState(), inputs, outputs);
                double worstTap = 0;
                for (int l = 0; l < config.NumLayers; l++)
                {
                    float[] ti = teacher.AttentionInput(l).ToArray(), to = teacher.AttentionOutput(l).ToArray();
                    for (int i = 0; i < t * c; i++)
                    {
                        worstTap = Math.Max(worstTap, Math.Abs(ti[i] - inputs[l * t * c + i]));
                        worstTap = Math.Max(worstTap, Math.Abs(to[i] - outputs[l * t * c + i]));
                    }
                }
                Assert.That(worstTap, Is.LessThan(2e-5));
            }
            var reloaded = Qwen2Trainable<float>.Load(dir, 1, t);
            Assert.That(reloaded.Parameters.Data, Is.EqualTo(teacher.Parameters.Data));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private sealed class ArraySegmentView(double[] data, int offset, int length)
    {
        public int Length => length;
        public double this[int i] { get => data[offset + i]; set => data[offset + i] = value; }
    }

    [Test]
    public void ForwardOnlyTeacherGivesTheSameOutputsWithoutGradients()
    {
        const int b = 2, t = 6;
        var config = TinyConfig();
        var full = new Qwen2Trainable<float>(config, b, t);
        var frozen = new Qwen2Trainable<float>(config, b, t, forwardOnly: true);
        Randomize(full.Parameters, new Random(21));
        full.Parameters.Data.CopyTo(frozen.Parameters.Data, 0);
        var rng = new Random(4);
        int[] tokens = Enumerable.Range(0, b * t).Select(_ => rng.Next(config.VocabSize)).ToArray();

        Assert.That(frozen.Forward(tokens, b, t).ToArray(), Is.EqualTo(full.Forward(tokens, b, t).ToArray()));
        for (int l = 0; l < config.NumLayers; l++)
        {
            Assert.That(frozen.AttentionInput(l).ToArray(), Is.EqualTo(full.AttentionInput(l).ToArray()));
            Assert.That(frozen.AttentionOutput(l).ToArray(), Is.EqualTo(full.AttentionOutput(l).ToArray()));
        }
        Assert.That(frozen.Parameters.Grad, Is.Empty);
        Assert.That(frozen.Parameters.Gradient("lm_head.weight").IsEmpty);
        Assert.Throws<InvalidOperationException>(() => frozen.Backward());
        Assert.Throws<InvalidOperationException>(() => _ = frozen.DLogits.Length);
    }
}
