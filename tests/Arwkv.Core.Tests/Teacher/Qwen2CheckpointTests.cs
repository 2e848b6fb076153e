using Arwkv.IO;

namespace Arwkv.Tests.Teacher;

public class Qwen2CheckpointTests
{
    [TestCase(false, DType.F32)]
    [TestCase(true, DType.BF16)]
    public void WrittenCheckpointLoadsAndMatchesReference(bool tied, DType type)
    {
        var shape = new Qwen2TestShape { Tied = tied, Seed = 21 };
        var config = new Qwen2Config
        {
            HiddenSize = shape.Hidden, NumLayers = shape.Layers, IntermediateSize = shape.Intermediate, VocabSize = shape.Vocab,
            NumAttentionHeads = shape.Heads, NumKeyValueHeads = shape.KvHeads, RopeTheta = shape.RopeTheta, RmsNormEps = shape.Eps,
            TieWordEmbeddings = tied, MaxPositionEmbeddings = 512, BosTokenId = 1, EosTokenIds = [2],
        };
        var tensors = Qwen2TestCheckpoint.RandomTensors(shape).ToDictionary(t => t.Name, t => t.Data.ToArray());
        string dir = Qwen2TestCheckpoint.NewDirectory();
        try
        {
            Qwen2Checkpoint.Write(dir, config, tensors, type);
            Qwen2Config loaded = Qwen2Config.Load(dir);
            Assert.That(loaded with { EosTokenIds = [] }, Is.EqualTo(config with { EosTokenIds = [] }));
            Assert.That(loaded.EosTokenIds, Is.EqualTo(new[] { 2 }));

            int[] tokens = [5, 9, 1, 33, 7, 7, 60];
            double[] expected = new Qwen2Reference(shape, Qwen2TestCheckpoint.ReadWeights(dir)).Forward(tokens);
            using var model = Qwen2Model.Load(dir);
            var logits = new float[tokens.Length * shape.Vocab];
            model.Forward(tokens, model.CreateState(), logits, LogitsScope.All);
            Assert.That(Qwen2Reference.RelativeError(logits, expected), Is.LessThan(1e-4));

            tensors.Remove("model.norm.weight");
            Assert.That(Assert.Throws<ArgumentException>(() => Qwen2Checkpoint.Write(dir, config, tensors))!.Message, Does.Contain("model.norm.weight"));
            tensors["model.norm.weight"] = new float[shape.Hidden + 1];
            Assert.That(Assert.Throws<ArgumentException>(() => Qwen2Checkpoint.Write(dir, config, tensors))!.Message, Does.Contain("model.norm.weight"));
            tensors["model.norm.weight"] = new float[shape.Hidden];
            tensors["extra.weight"] = [1f];
            Assert.That(Assert.Throws<ArgumentException>(() => Qwen2Checkpoint.Write(dir, config, tensors))!.Message, Does.Contain("extra.weight"));
        }
        finally
        {
            Qwen2TestCheckpoint.Delete(dir);
        }
    }
}
