using Arwkv.Training;

namespace Arwkv.Tests.Distillation;

public class StudentCheckpointTests
{
    [TestCase(1)]
    [TestCase(2)]
    public void SavedStudentGivesTheSameLogitsInArwkvModel(int layers)
    {
        const int t = 11;
        var config = new ArwkvConfig { HiddenSize = 64, NumLayers = layers, IntermediateSize = 80, VocabSize = 259, EosTokenIds = [256] };
        var student = new ArwkvStudent<float>(config, 1, t, new LoraRanks(8, 6, 4, 10));
        var rng = new Random(17);
        // Random everything (the default init zeroes the output projection and LoRA inputs, which would hide mistakes).
        foreach (var p in student.Parameters.Tensors)
        {
            string leaf = p.Name[(p.Name.LastIndexOf('.') + 1)..];
            (double lo, double hi) = leaf is "x_r" or "x_w" or "x_k" or "x_v" or "x_a" or "x_g" or "k_k" or "k_a" ? (0.0, 1.0)
                : p.Name.EndsWith("norm.weight", StringComparison.Ordinal) ? (0.5, 1.5) : (-0.3, 0.3);
            for (int i = 0; i < p.Length; i++) student.Parameters.Data[p.Offset + i] = (float)(lo + (hi - lo) * rng.NextDouble());
        }
        int[] tokens = [72, 101, 108, 108, 111, 32, 119, 104, 97, 108, 256];
        float[] trained = student.Forward(tokens, default, 1, t).ToArray();

        string dir = Directory.CreateTempSubdirectory("arwkv-student-").FullName;
        try
        {
            ModelFiles.SaveStudent(dir, student);
            using (var model = ArwkvModel.Load(dir, new ModelOptions { Threads = 1 }))
            {
                Assert.That(model.LoraRanks, Is.EqualTo(new ArwkvLoraRanks(8, 6, layers > 1 ? 4 : 0, 10)).Or.EqualTo(new ArwkvLoraRanks(8, 6, 4, 10)));
                var logits = new float[t * 259];
                model.Forward(tokens, model.CreateState(), logits, LogitsScope.All);
                double worst = 0, scale = trained.Max(Math.Abs);
                for (int i = 0; i < logits.Length; i++) worst = Math.Max(worst, Math.Abs(logits[i] - trained[i]));
                TestContext.Out.WriteLine($"max |trainable - ArwkvModel| = {worst:E2} (logit scale {scale:F2})");
                Assert.That(worst, Is.LessThan(1e-4 * Math.Max(1, scale)));
            }
            var reloaded = ModelFiles.LoadStudent(dir, 1, t);
            Assert.That(reloaded.Ranks, Is.EqualTo(student.Ranks));
            Assert.That(reloaded.Parameters.Data, Is.EqualTo(student.Parameters.Data));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
