using Arwkv.IO;
using Arwkv.Training;
using Arwkv.Training.Layers;

namespace Arwkv.Tests.Training;

public class ArwkvStudentTests
{
    private static ArwkvConfig TinyConfig(bool gate) => new()
    {
        HiddenSize = 8, HeadSize = 4, NumLayers = 2, IntermediateSize = 12, VocabSize = 11, WkvHasGate = gate,
    };

    private static readonly LoraRanks TinyRanks = new(Decay: 3, Iclr: 3, Value: 2, Gate: 5);

    // Random values everywhere (the RWKV-7 init has many zeros, which would hide gradient paths).
    private static void Randomize(ParameterSet<double> set, Random rng)
    {
        foreach (var t in set.Tensors)
        {
            string leaf = t.Name[(t.Name.LastIndexOf('.') + 1)..];
            (double lo, double hi) = leaf switch
            {
                "x_r" or "x_w" or "x_k" or "x_v" or "x_a" or "x_g" or "k_k" or "k_a" => (0.0, 1.0),
                _ when t.Name.EndsWith("layernorm.weight") || t.Name == "model.norm.weight" => (0.5, 1.5),
                "weight" => (-0.5, 0.5),
                _ => (-1.0, 1.0),
            };
            for (int i = 0; i < t.Length; i++) set.Data[t.Offset + i] = lo + (hi - lo) * rng.NextDouble();
        }
    }

    [TestCase(true, false, TestName = "StudentKlGradientWithGate")]
    [TestCase(false, true, TestName = "StudentKlGradientNoGatePadded")]
    public void FullStudentGradientMatchesFiniteDifferences(bool gate, bool padded)
    {
        const int b = 2, t = 6;
        var config = TinyConfig(gate);
        var student = new ArwkvStudent<double>(config, b, t, TinyRanks);
        var rng = new Random(21);
        Randomize(student.Parameters, rng);
        int[] tokens = Enumerable.Range(0, b * t).Select(_ => rng.Next(config.VocabSize)).ToArray();
        byte[] mask = padded ? [1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1] : [];
        double[] teacher = GradCheck.Random(rng, b * t * config.VocabSize, -2, 2);
        var scratch = new double[config.VocabSize];
        int n = b * t, v = config.VocabSize;

        double Loss() => Losses.KlForward<double>(student.Forward(tokens, mask, b, t), teacher, mask, scratch, n, v);

        Loss();
        student.Parameters.ZeroGrad();
        Losses.KlBackward<double>(student.DLogits, student.Logits, teacher, mask, 1.0, scratch, n, v);
        student.Backward();
        var set = student.Parameters;
        double worst = 0;
        foreach (var p in set.Tensors)
        {
            // GradCheck perturbs a copy of the tensor; the loss copies it into place before each forward.
            double[] analytic = set.Grad.AsSpan(p.Offset, p.Length).ToArray();
            double[] proxy = set.Data.AsSpan(p.Offset, p.Length).ToArray();
            worst = Math.Max(worst, GradCheck.Check(() => { proxy.CopyTo(set.Data, p.Offset); return Loss(); },
                [(p.Name, proxy, analytic)], maxPerTensor: 6));
            proxy.CopyTo(set.Data, p.Offset);
        }
        TestContext.Out.WriteLine($"student worst relative error {worst:E2} over {set.Tensors.Count} tensors");
        // Layer 0's v0/v1/v2 are unused (ARWKV.md section 2).
        Assert.That(set.Grad.AsSpan(set["model.layers.0.self_attn.time_mixer.v1"].Offset, set["model.layers.0.self_attn.time_mixer.v1"].Length).ToArray(), Is.All.Zero);
    }

    [Test]
    public void AlignmentGradientMatchesFiniteDifferences()
    {
        const int b = 2, t = 5;
        var config = TinyConfig(gate: true);
        var student = new ArwkvStudent<double>(config, b, t, TinyRanks);
        var rng = new Random(8);
        Randomize(student.Parameters, rng);
        int nc = b * t * config.HiddenSize;
        var inputs = Enumerable.Range(0, config.NumLayers).Select(_ => (ReadOnlyMemory<double>)GradCheck.Random(rng, nc, -1.5, 1.5)).ToList();
        var outputs = Enumerable.Range(0, config.NumLayers).Select(_ => (ReadOnlyMemory<double>)GradCheck.Random(rng, nc, -0.5, 0.5)).ToList();
        byte[] mask = [1, 1, 1, 1, 1, 0, 1, 1, 1, 1];

        student.ForwardAlignment(inputs, outputs, mask, b, t);
        student.Parameters.ZeroGrad();
        student.BackwardAlignment(inputs, outputs);
        var set = student.Parameters;
        double worst = 0;
        foreach (var p in set.Tensors)
        {
            double[] analytic = set.Grad.AsSpan(p.Offset, p.Length).ToArray();
            if (!p.Name.Contains(".time_mixer."))
            {
                Assert.That(analytic, Is.All.Zero, p.Name);
                continue;
            }
            double[] proxy = set.Data.AsSpan(p.Offset, p.Length).ToArray();
            // floor 1e-5: the loss is O(1), so finite differences carry ~1e-11 of rounding noise; coordinates with
            // gradients below 1e-5 are held to that absolute accuracy instead of a relative one.
            worst = Math.Max(worst, GradCheck.Check(() => { proxy.CopyTo(set.Data, p.Offset); return student.ForwardAlignment(inputs, outputs, mask, b, t); },
                [(p.Name, proxy, analytic)], maxPerTensor: 6, floor: 1e-5));
            proxy.CopyTo(set.Data, p.Offset);
        }
        TestContext.Out.WriteLine($"alignment worst relative error {worst:E2}");
        // Layer 1's value residual must send gradient into layer 0's value projection.
        Assert.That(set.Grad.AsSpan(set["model.layers.0.self_attn.time_mixer.value.weight"].Offset, 64).ToArray(), Has.Some.Not.Zero);
    }

    [Test]
    public void LayoutHasHfNamesAndShapes()
    {
        var config = new ArwkvConfig { HiddenSize = 128, NumLayers = 2, IntermediateSize = 320, VocabSize = 260 };
        var set = new ArwkvStudent<float>(config, 1, 4).Parameters;
        void Shape(string name, params long[] shape) => Assert.That(set[name].Shape, Is.EqualTo(shape), name);
        Shape("model.embed_tokens.weight", 260, 128);
        Shape("lm_head.weight", 260, 128);
        Shape("model.norm.weight", 128);
        Shape("model.layers.1.input_layernorm.weight", 128);
        Shape("model.layers.1.post_attention_layernorm.weight", 128);
        Shape("model.layers.1.mlp.gate_proj.weight", 320, 128);
        Shape("model.layers.1.mlp.down_proj.weight", 128, 320);
        const string m = "model.layers.1.self_attn.time_mixer.";
        foreach (string v in new[] { "x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a" }) Shape(m + v, 1, 1, 128);
        Shape(m + "w1", 128, 64); Shape(m + "w2", 64, 128); Shape(m + "a1", 128, 64); Shape(m + "a2", 64, 128);
        Shape(m + "v1", 128, 32); Shape(m + "v2", 32, 128); Shape(m + "g1", 128, 128); Shape(m + "g2", 128, 128);
        Shape(m + "r_k", 2, 64);
        foreach (string p in new[] { "receptance", "key", "value", "output" }) Shape(m + p + ".weight", 128, 128);
        Assert.That(set.Tensors, Has.Count.EqualTo(3 + 2 * (2 + 3 + 24)));
    }

    [Test]
    public void Rwkv7InitFollowsTheRecipe()
    {
        var config = new ArwkvConfig { HiddenSize = 128, NumLayers = 3, IntermediateSize = 64, VocabSize = 16 };
        var student = new ArwkvStudent<float>(config, 1, 4);
        student.InitializeRwkv7(seed: 1);
        var set = student.Parameters;
        float At(string name, int i) => set.Data[set[name].Offset + i];
        const string m = "model.layers.1.self_attn.time_mixer.";
        // layer 1 of 3: r0 = 1/2, r1 = 2/3; channel 64: ddd = 1/2
        Assert.That(At(m + "x_r", 64), Is.EqualTo(1 - Math.Pow(0.5, 0.2 * 2 / 3)).Within(1e-6));
        Assert.That(At(m + "x_k", 64), Is.EqualTo(1 - (Math.Pow(0.5, 0.9 * 2 / 3) + 0.2)).Within(1e-6));
        Assert.That(At(m + "x_v", 64), Is.EqualTo(1 - (Math.Pow(0.5, 0.4 * 2 / 3) + 0.3)).Within(1e-6));
        Assert.That(At(m + "x_g", 5), Is.EqualTo(1f));
        Assert.That(At(m + "w0", 127), Is.EqualTo(-7 + 5 + 0.5).Within(1e-5));
        Assert.That(At(m + "w0", 0), Is.EqualTo(-6.5).Within(1e-6));
        Assert.That(At(m + "v0", 3), Is.EqualTo(1f));
        Assert.That(At(m + "k_k", 3), Is.EqualTo(0.85f));
        Assert.That(At(m + "k_a", 3), Is.EqualTo(1f));
        // w2 [64, 128] = 0.1 * orthonormal rows
        var w2 = set.Data.AsSpan(set[m + "w2"].Offset, 64 * 128);
        for (int i = 0; i < 64; i += 21)
            for (int j = 0; j < 64; j += 13)
            {
                double dot = 0;
                for (int c = 0; c < 128; c++) dot += w2[i * 128 + c] * w2[j * 128 + c];
                Assert.That(dot, Is.EqualTo(i == j ? 0.01 : 0).Within(1e-6));
            }
    }

    [Test]
    public void CopyFromTiedTeacherUntiesAndSaveRoundTrips()
    {
        var config = new ArwkvConfig { HiddenSize = 64, NumLayers = 1, IntermediateSize = 32, VocabSize = 10 };
        var student = new ArwkvStudent<float>(config, 1, 2, new LoraRanks(8, 8, 4, 8));
        student.InitializeRwkv7(seed: 2);
        var teacher = new Dictionary<string, (long[], float[])>();
        foreach (var t in student.Parameters.Tensors)
            if (!t.Name.Contains(".self_attn.") && t.Name != "lm_head.weight")
                teacher[t.Name] = (t.Shape, Enumerable.Range(0, t.Length).Select(i => i * 0.001f + t.Name.Length).ToArray());
        student.CopyFromTeacher(teacher);
        var embed = student.Parameters["model.embed_tokens.weight"];
        var head = student.Parameters["lm_head.weight"];
        Assert.That(student.Parameters.Data.AsSpan(head.Offset, head.Length).ToArray(),
            Is.EqualTo(student.Parameters.Data.AsSpan(embed.Offset, embed.Length).ToArray()));

        string path = Path.Combine(Path.GetTempPath(), $"student-{Guid.NewGuid():N}.safetensors");
        try
        {
            student.Save(path);
            using var file = SafeTensorsFile.Open(path);
            Assert.That(file.Tensors, Has.Count.EqualTo(student.Parameters.Tensors.Count));
            foreach (var t in student.Parameters.Tensors)
            {
                var info = file.GetInfo(t.Name);
                Assert.That(info.Shape, Is.EqualTo(t.Shape));
                Assert.That(file.ReadFloat32(info), Is.EqualTo(student.Parameters.Data.AsSpan(t.Offset, t.Length).ToArray()));
            }
        }
        finally { File.Delete(path); }

        teacher["model.norm.weight"] = ([63], new float[63]);
        Assert.Throws<ArgumentException>(() => student.CopyFromTeacher(teacher));
    }

    [Test]
    public void AdamWStepsReduceTheLoss()
    {
        // A float32 student with ARWKV's head size 64 learns a deterministic token pattern (cross-entropy).
        var config = new ArwkvConfig { HiddenSize = 64, NumLayers = 2, IntermediateSize = 96, VocabSize = 16 };
        const int b = 2, t = 24;
        var student = new ArwkvStudent<float>(config, b, t, new LoraRanks(16, 16, 8, 16));
        student.InitializeRwkv7(seed: 3);
        int[] tokens = Enumerable.Range(0, b * t).Select(i => (i * 5 + i / 7) % 16).ToArray();
        int[] targets = Enumerable.Range(0, b * t).Select(i => i % t == t - 1 ? 0 : tokens[i + 1]).ToArray();
        byte[] mask = Enumerable.Range(0, b * t).Select(i => (byte)(i % t == t - 1 ? 0 : 1)).ToArray();
        var opt = new AdamW<float>(student.Parameters);
        var schedule = new LearningRateSchedule(3e-3, 1e-3, WarmupSteps: 3, TotalSteps: 25);
        var scratch = new float[config.VocabSize];
        double first = 0, last = 0;
        for (int step = 0; step < 25; step++)
        {
            student.Forward(tokens, mask, b, t);
            double loss = Losses.CrossEntropyForward<float>(student.Logits, targets, mask, b * t, config.VocabSize);
            if (step == 0) first = loss;
            last = loss;
            student.Parameters.ZeroGrad();
            Losses.CrossEntropyBackward<float>(student.DLogits, student.Logits, targets, mask, 1, scratch, b * t, config.VocabSize);
            student.Backward();
            opt.Step(schedule.At(step));
        }
        TestContext.Out.WriteLine($"cross-entropy {first:F4} -> {last:F4}");
        Assert.That(first, Is.EqualTo(Math.Log(16)).Within(0.1));
        Assert.That(last, Is.LessThan(0.5 * first));
    }
}

public class ArwkvStudentTimings
{
    [Test, Explicit("timing, run by hand in Release")]
    public void TrainingStepC256L4T128B4()
    {
        var config = new ArwkvConfig { HiddenSize = 256, NumLayers = 4, IntermediateSize = 768, VocabSize = 260 };
        const int b = 4, t = 128;
        var student = new ArwkvStudent<float>(config, b, t);
        student.InitializeRwkv7(seed: 1);
        var rng = new Random(1);
        int[] tokens = Enumerable.Range(0, b * t).Select(_ => rng.Next(260)).ToArray();
        float[] teacher = Enumerable.Range(0, b * t * 260).Select(_ => (float)rng.NextDouble()).ToArray();
        var opt = new AdamW<float>(student.Parameters);
        var scratch = new float[260];
        var sw = new System.Diagnostics.Stopwatch();
        double fwd = 0, bwd = 0, upd = 0;
        for (int step = 0; step < 6; step++)
        {
            sw.Restart();
            student.Forward(tokens, [], b, t);
            Arwkv.Training.Layers.Losses.KlForward<float>(student.Logits, teacher, [], scratch, b * t, 260);
            double f = sw.Elapsed.TotalMilliseconds;
            student.Parameters.ZeroGrad();
            Arwkv.Training.Layers.Losses.KlBackward<float>(student.DLogits, student.Logits, teacher, [], 1, scratch, b * t, 260);
            student.Backward();
            double bk = sw.Elapsed.TotalMilliseconds;
            opt.Step(1e-4);
            double u = sw.Elapsed.TotalMilliseconds;
            if (step >= 1) { fwd += f; bwd += bk - f; upd += u - bk; }
        }
        TestContext.Out.WriteLine($"C=256 L=4 T=128 B=4 F=768 V=260 ({student.Parameters.Count} params): forward {fwd / 5:F0} ms, backward {bwd / 5:F0} ms, AdamW {upd / 5:F0} ms per step");
    }
}
