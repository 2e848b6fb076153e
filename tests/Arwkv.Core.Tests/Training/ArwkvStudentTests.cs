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
    public void Float32StudentMatchesFloat64()
    {
        // The float32 path (SIMD kernels, C = 64 = one head of ARWKV's size) against the float64 one on the same weights.
        var config = new ArwkvConfig { HiddenSize = 64, NumLayers = 2, IntermediateSize = 40, VocabSize = 19 };
        const int b = 2, t = 20;
        var ranks = new LoraRanks(8, 8, 4, 8);
        var s64 = new ArwkvStudent<double>(config, b, t, ranks);
        var s32 = new ArwkvStudent<float>(config, b, t, ranks);
        var rng = new Random(4);
        Randomize(s64.Parameters, rng);
        for (int i = 0; i < s64.Parameters.Data.Length; i++)
        {
            s64.Parameters.Data[i] = (float)s64.Parameters.Data[i];
            s32.Parameters.Data[i] = (float)s64.Parameters.Data[i];
        }
        int[] tokens = Enumerable.Range(0, b * t).Select(_ => rng.Next(config.VocabSize)).ToArray();
        int[] targets = tokens.Select(x => (x + 1) % config.VocabSize).ToArray();
        byte[] mask = Enumerable.Range(0, b * t).Select(i => (byte)(i % t < 17 ? 1 : 0)).ToArray();
        double[] l64 = s64.Forward(tokens, mask, b, t).ToArray();
        float[] l32 = s32.Forward(tokens, mask, b, t).ToArray();
        double scale = l64.Max(Math.Abs);
        for (int i = 0; i < l64.Length; i++) Assert.That(l32[i], Is.EqualTo(l64[i]).Within(1e-4 * scale), $"logit {i}");

        Losses.CrossEntropyBackward<double>(s64.DLogits, s64.Logits, targets, mask, 1, new double[config.VocabSize], b * t, config.VocabSize);
        Losses.CrossEntropyBackward<float>(s32.DLogits, s32.Logits, targets, mask, 1, new float[config.VocabSize], b * t, config.VocabSize);
        s64.Backward();
        s32.Backward();
        foreach (var p in s64.Parameters.Tensors)
        {
            var g64 = s64.Parameters.Grad.AsSpan(p.Offset, p.Length);
            var g32 = s32.Parameters.Grad.AsSpan(p.Offset, p.Length);
            double max = 0;
            for (int i = 0; i < g64.Length; i++) max = Math.Max(max, Math.Abs(g64[i]));
            for (int i = 0; i < g64.Length; i++) Assert.That(g32[i], Is.EqualTo(g64[i]).Within(1e-3 * max + 1e-9), $"{p.Name}[{i}]");
        }
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
    public void SkippingThePlaceholdersATeacherReplacesGivesTheSameStudent()
    {
        var teacher = new Qwen2Trainable<float>(new Qwen2Config
        {
            HiddenSize = 64, NumLayers = 2, IntermediateSize = 96, VocabSize = 30, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        }, 1, 1);
        teacher.Initialize(9);
        ArwkvStudent<float> fast = ModelFiles.StudentFromTeacher(teacher, new LoraRanks(8, 8, 4, 16), 32, seed: 4, 1, 8);

        var slow = new ArwkvStudent<float>(fast.Config, 1, 8, new LoraRanks(8, 8, 4, 16));
        slow.InitializeRwkv7(4);
        var tensors = teacher.Parameters.Tensors.ToDictionary(p => p.Name, p => (p.Shape, teacher.Parameters.Data.AsSpan(p.Offset, p.Length).ToArray()));
        slow.CopyFromTeacher(tensors);
        Assert.That(fast.Parameters.Data, Is.EqualTo(slow.Parameters.Data));
        Assert.That(fast.Parameters.Data.Any(x => x != 0));
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

public class TimeMixTimings
{
    [Test, Explicit("timing, run by hand in Release")]
    public void TimeMixC256T128B4()
    {
        var shape = new TimeMixShape(256, 64, 64, 64, 32, 128, true);
        const int b = 4, t = 128, n = b * t;
        var rng = new Random(1);
        var p = TimeMixWeights<float>.Allocate(shape);
        foreach (var (_, data) in p.Named()) { var s = data.Span; for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() - 0.5) * 0.2f; }
        var g = TimeMixWeights<float>.Allocate(shape);
        float[] x = Enumerable.Range(0, n * 256).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var act = new TimeMixActivations<float>(shape, b, t);
        var scratch = new TimeMixScratch<float>(shape, b, t);
        float[] dx = new float[n * 256], dvf = new float[n * 256];
        var sw = new System.Diagnostics.Stopwatch();
        double tf = 0, tb = 0, tw = 0, twb = 0, tl = 0;
        for (int rep = 0; rep < 4; rep++)
        {
            sw.Restart(); TimeMix.Forward<float>(act, p, x, x, [], b, t, false); double a1 = sw.Elapsed.TotalMilliseconds;
            TimeMix.Backward<float>(g, dx, dvf, scratch, x, [], act, p, x, x, [], b, t, false); double a2 = sw.Elapsed.TotalMilliseconds;
            Wkv7.Forward<float>(act.YWkv, act.Checkpoints, Span<float>.Empty, act.R, act.Decay, act.KF, act.V, act.AA, act.BB, [], [], b, t, 4, 64);
            double a3 = sw.Elapsed.TotalMilliseconds;
            Wkv7.Backward<float>(scratch.DR, scratch.DDecay, scratch.DKF, scratch.DV, scratch.DAA, scratch.DBB, Span<float>.Empty, x, act.Checkpoints,
                act.R, act.Decay, act.KF, act.V, act.AA, act.BB, [], scratch.Wkv, b, t, 4, 64);
            double a4 = sw.Elapsed.TotalMilliseconds;
            Linear.Forward<float>(act.R, act.XR, p.WR.Span, n, 256, 256);
            double a5 = sw.Elapsed.TotalMilliseconds;

            if (rep > 0) { tf += a1; tb += a2 - a1; tw += a3 - a2; twb += a4 - a3; tl += a5 - a4; }
        }
        TestContext.Out.WriteLine($"time mix forward {tf / 3:F1} ms, backward {tb / 3:F1} ms; wkv7 forward {tw / 3:F1} ms, backward {twb / 3:F1} ms; one CxC linear {tl / 3:F1} ms");
    }
}
