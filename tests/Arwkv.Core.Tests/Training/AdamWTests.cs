using Arwkv.Training;

namespace Arwkv.Tests.Training;

public class AdamWTests
{
    [Test]
    public void TwoStepsMatchHandComputation()
    {
        var set = new ParameterSet<float>([("w", [1, 2]), ("b", [1]), ("f", [1])]);
        float[] d = set.Data, g = set.Grad;
        d[0] = 1; d[1] = -2; d[2] = 0.5f; d[3] = 3;
        set["f"].Frozen = true;
        Assert.That(set["w"].Decay, Is.True);
        Assert.That(set["b"].Decay, Is.False);
        var opt = new AdamW<float>(set);

        // Step 1: global norm over unfrozen tensors sqrt(.09 + .16 + 1.44) = 1.3 > 1, so g is scaled by 1/1.3.
        // Adam's first step moves each coordinate by lr * sign(g); w also decays by (1 - lr * 0.1).
        g[0] = 0.3f; g[1] = -0.4f; g[2] = 1.2f; g[3] = 100;
        Assert.That(opt.Step(0.01), Is.EqualTo(1.3).Within(1e-6));
        Assert.That(d[0], Is.EqualTo(0.989).Within(1e-6));
        Assert.That(d[1], Is.EqualTo(-1.988).Within(1e-6));
        Assert.That(d[2], Is.EqualTo(0.49).Within(1e-6));
        Assert.That(d[3], Is.EqualTo(3));

        // Step 2 (no clipping): values from an independent float64 script of torch.optim.AdamW's update.
        g[0] = 0.1f; g[1] = 0.1f; g[2] = -0.2f;
        opt.Step(0.02);
        Assert.That(d[0], Is.EqualTo(0.9686480014172278).Within(2e-6));
        Assert.That(d[1], Is.EqualTo(-1.9757976596192877).Within(2e-6));
        Assert.That(d[2], Is.EqualTo(0.47994016594629535).Within(2e-6));
        Assert.That(d[3], Is.EqualTo(3));
    }

    [Test]
    public void MomentsCoverOnlyTrainableTensorsAndOldFullLayoutsStillLoad()
    {
        var set = new ParameterSet<float>([("a", [2, 2]), ("frozen", [3]), ("b", [2])]);
        set["frozen"].Frozen = true;
        var rng = new Random(3);
        for (int i = 0; i < set.Data.Length; i++) set.Data[i] = (float)rng.NextDouble();
        var opt = new AdamW<float>(set);
        for (int step = 0; step < 2; step++)
        {
            for (int i = 0; i < set.Grad.Length; i++) set.Grad[i] = (float)(rng.NextDouble() - 0.5);
            opt.Step(0.01);
        }

        var saved = new MemoryStream();
        using (var w = new BinaryWriter(saved, System.Text.Encoding.UTF8, leaveOpen: true)) opt.SaveState(w);
        var compact = new BinaryReader(new MemoryStream(saved.ToArray()));
        Assert.That(compact.ReadInt32(), Is.EqualTo(2));
        Assert.That(compact.ReadInt32(), Is.EqualTo(6), "moments for a (4) and b (2), none for the frozen tensor");
        double[] m = Enumerable.Range(0, 6).Select(_ => compact.ReadDouble()).ToArray();
        double[] v = Enumerable.Range(0, 6).Select(_ => compact.ReadDouble()).ToArray();

        // The older layout: moments for every tensor, zeros for the frozen one; it loads into the compact buffers.
        var full = new MemoryStream();
        using (var w = new BinaryWriter(full, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            w.Write(2); w.Write(9);
            foreach (double[] moments in new[] { m, v })
            {
                foreach (double x in moments[..4]) w.Write(x);
                for (int i = 0; i < 3; i++) w.Write(0.0);
                foreach (double x in moments[4..]) w.Write(x);
            }
        }
        var restored = new AdamW<float>(set);
        restored.LoadState(new BinaryReader(new MemoryStream(full.ToArray())));
        var again = new MemoryStream();
        using (var w = new BinaryWriter(again, System.Text.Encoding.UTF8, leaveOpen: true)) restored.SaveState(w);
        Assert.That(again.ToArray(), Is.EqualTo(saved.ToArray()));

        var bad = new MemoryStream();
        using (var w = new BinaryWriter(bad, System.Text.Encoding.UTF8, leaveOpen: true)) { w.Write(1); w.Write(7); }
        Assert.Throws<InvalidDataException>(() => new AdamW<float>(set).LoadState(new BinaryReader(new MemoryStream(bad.ToArray()))));

        set["frozen"].Frozen = false;
        Assert.Throws<InvalidOperationException>(() => opt.Step(0.01), "a tensor unfrozen after the optimizer was built has no moments");
    }

    [Test]
    public void ScheduleWarmsUpThenDecaysExponentially()
    {
        var s = new LearningRateSchedule(LrMax: 1e-4, LrMin: 1e-5, WarmupSteps: 50, TotalSteps: 150);
        Assert.That(s.At(0), Is.EqualTo(2e-6).Within(1e-18));
        Assert.That(s.At(24), Is.EqualTo(5e-5).Within(1e-18));
        Assert.That(s.At(49), Is.EqualTo(1e-4).Within(1e-18));
        Assert.That(s.At(50), Is.EqualTo(1e-4).Within(1e-18));
        Assert.That(s.At(100), Is.EqualTo(1e-4 * Math.Sqrt(0.1)).Within(1e-18));
        Assert.That(s.At(150), Is.EqualTo(1e-5).Within(1e-18));
        Assert.That(s.At(1000), Is.EqualTo(1e-5).Within(1e-18));
    }
}
