using Arwkv.IO;
using Arwkv.Tests.Reference;

namespace Arwkv.Tests.TestModels;

/// <summary>The test fixtures themselves: random checkpoints load back and the reference gives sane logits.</summary>
public class CheckpointFixtureTests
{
    [Test]
    public void RandomCheckpoint_WritesEveryLayoutTensorWithItsShape()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, type: DType.BF16);
        using var file = SafeTensorsFile.Open(dir.File("model.safetensors"));
        var expected = ArwkvCheckpointLayout.Tensors(config, RandomArwkvCheckpoint.SmallRanks).ToList();
        Assert.That(file.Tensors.Count, Is.EqualTo(expected.Count));
        foreach (var (name, shape) in expected)
        {
            Assert.That(file.GetInfo(name).Shape, Is.EqualTo(shape), name);
            Assert.That(file.GetInfo(name).Type, Is.EqualTo(DType.BF16), name);
        }
        Assert.That(ArwkvConfig.Load(dir.Path), Is.EqualTo(config).Using<ArwkvConfig>((a, b) =>
            a.HiddenSize == b.HiddenSize && a.NumLayers == b.NumLayers && a.VocabSize == b.VocabSize && a.WkvHasGate == b.WkvHasGate));
    }

    [Test]
    public void ShardedCheckpoint_IndexMapsEveryTensorToAnExistingShard()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, shards: 3);
        Assert.That(Directory.GetFiles(dir.Path, "model-*-of-00003.safetensors"), Has.Length.EqualTo(3));
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(dir.File("model.safetensors.index.json")));
        foreach (var entry in doc.RootElement.GetProperty("weight_map").EnumerateObject())
        {
            using var shard = SafeTensorsFile.Open(dir.File(entry.Value.GetString()!));
            Assert.That(shard.Contains(entry.Name), entry.Name);
        }
    }

    [Test]
    public void Reference_LogitsAreFiniteAndDependOnHistory()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path);
        var reference = new ArwkvReference(dir.Path);
        double[,] a = reference.Logits([5, 7, 9]);
        double[,] b = reference.Logits([6, 7, 9]);
        double spread = 0, historyEffect = 0;
        for (int v = 0; v < a.GetLength(1); v++)
        {
            Assert.That(double.IsFinite(a[2, v]));
            spread += Math.Abs(a[2, v] - a[2, 0]);
            historyEffect += Math.Abs(a[2, v] - b[2, v]);
        }
        Assert.That(spread, Is.GreaterThan(1.0), "logits should not be flat");
        Assert.That(historyEffect, Is.GreaterThan(1e-3), "the recurrent state must carry the first token's influence");
    }
}
