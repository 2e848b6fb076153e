using Arwkv.IO;
using Arwkv.Tests.Teacher;

namespace Arwkv.Tests.Interop;

/// <summary>
/// llama.cpp (an independent implementation, via node-llama-cpp's prebuilt CPU binding) runs the <c>qwen2</c> GGUF
/// that <see cref="Qwen2GgufExporter"/> writes from a random GQA teacher checkpoint; its logits are compared with
/// <see cref="Qwen2Model"/> and with the float64 <see cref="Qwen2Reference"/>. llama.cpp keeps its KV cache in f16
/// by default, which limits the agreement to about 1e-3.
/// </summary>
[TestFixture]
public class LlamaCppQwen2Tests
{
    private const double Bound = 5e-3;
    private static readonly int[] Ids = [5, 300, 17, 2, 516, 42, 42, 99, 260, 1, 7, 450, 128, 10, 333, 64];

    private readonly List<string> _dirs = [];

    [OneTimeTearDown]
    public void TearDown()
    {
        foreach (string d in _dirs) Qwen2TestCheckpoint.Delete(d);
    }

    [TestCase(false, 32)]
    [TestCase(true, 16)]
    public void F32Export_LlamaCppLogitsMatchQwen2ModelAndFloat64Reference(bool tied, int headDim)
    {
        LlamaCppHarness.RequireInstalled();
        const int heads = 4;
        var shape = new Qwen2TestShape
        {
            Hidden = heads * headDim, Heads = heads, KvHeads = 2, Intermediate = 160, Vocab = 600,
            Layers = 2, RopeTheta = 10000.0, Tied = tied, Seed = tied ? 21 : 13,
        };
        string dir = Qwen2TestCheckpoint.Write(shape);
        _dirs.Add(dir);
        string gguf = Path.Combine(dir, "model.gguf");
        Qwen2GgufExporter.Export(dir, gguf);

        float[] llama = LlamaCppHarness.Logits(gguf, Ids, Path.Combine(dir, "logits.f32"), shape.Vocab);
        double[] reference = new Qwen2Reference(shape, Qwen2TestCheckpoint.ReadWeights(dir)).Forward(Ids);
        var ours = new float[Ids.Length * shape.Vocab];
        using (LanguageModel model = LanguageModel.Load(dir))
        {
            Assert.That(model.VocabSize, Is.EqualTo(shape.Vocab));
            model.Forward(Ids, model.CreateState(), ours, LogitsScope.All);
        }

        double llamaVsReference = Qwen2Reference.RelativeError(llama, reference);
        double llamaVsModel = Qwen2Reference.RelativeError(llama, ours);
        double modelVsReference = Qwen2Reference.RelativeError(ours, reference);
        TestContext.Out.WriteLine(
            $"qwen2 tied={tied} head_dim={headDim} ({Ids.Length} x {shape.Vocab} logits): relative L2 llama.cpp vs float64 reference " +
            $"{llamaVsReference:E3}, llama.cpp vs Qwen2Model {llamaVsModel:E3}, Qwen2Model vs reference {modelVsReference:E3}");
        Assert.That(llamaVsReference, Is.LessThan(Bound), "llama.cpp vs float64 reference");
        Assert.That(llamaVsModel, Is.LessThan(Bound), "llama.cpp vs Qwen2Model");
        Assert.That(modelVsReference, Is.LessThan(1e-4), "Qwen2Model vs float64 reference");
        for (int t = 0; t < Ids.Length; t++)
        {
            int expected = ArgMax(reference.AsSpan(t * shape.Vocab, shape.Vocab));
            Assert.That(ArgMax(llama.AsSpan(t * shape.Vocab, shape.Vocab)), Is.EqualTo(expected), $"llama.cpp argmax at position {t}");
            Assert.That(ArgMax(ours.AsSpan(t * shape.Vocab, shape.Vocab)), Is.EqualTo(expected), $"Qwen2Model argmax at position {t}");
        }
    }

    private static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }

    private static int ArgMax(ReadOnlySpan<double> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }
}
