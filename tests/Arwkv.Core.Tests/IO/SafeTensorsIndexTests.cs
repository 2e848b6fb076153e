using Arwkv.IO;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.IO;

/// <summary>Issue 11 class 8: a shard index that places one tensor in two shards is ambiguous and rejected, naming it.</summary>
public class SafeTensorsIndexTests
{
    private static void Shard(string path, params string[] names) =>
        SafeTensorsWriter.Write(path, names.Select(n => new TensorToWrite(n, DType.F32, [2], new float[] { 1, 2 })));

    [Test]
    public void IndexNamingATensorTwiceIsRejected()
    {
        using var dir = new TempDirectory();
        Shard(dir.File("s1.safetensors"), "a", "b");
        Shard(dir.File("s2.safetensors"), "b", "c");
        string index = dir.File(SafeTensorsCheckpoint.IndexFileName);
        File.WriteAllText(index, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\", \"b\": \"s2.safetensors\", \"c\": \"s2.safetensors\"}}");
        var e = Assert.Throws<CheckpointException>(() => SafeTensorsCheckpoint.Open(dir.Path).Dispose())!;
        Assert.That(e.FilePath, Is.EqualTo(index));
        Assert.That(e.Problem, Is.EqualTo("weight_map assigns tensor 'b' twice ('s1.safetensors' and 's2.safetensors')"));
    }

    [Test]
    public void TensorHeldByTwoShardsIsRejected()
    {
        using var dir = new TempDirectory();
        Shard(dir.File("s1.safetensors"), "a", "b");
        Shard(dir.File("s2.safetensors"), "b", "c");
        File.WriteAllText(dir.File(SafeTensorsCheckpoint.IndexFileName),
            "{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\", \"c\": \"s2.safetensors\"}}");
        var e = Assert.Throws<CheckpointException>(() => SafeTensorsCheckpoint.Open(dir.Path).Dispose())!;
        Assert.That(e.FilePath, Is.EqualTo(dir.File("s2.safetensors")));
        Assert.That(e.Problem, Does.Contain("tensor 'b' is also in s1.safetensors"));
    }

    [Test]
    public void InputFilesIncludeGgufFiles()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("model.gguf"), [1]);
        File.WriteAllText(dir.File("config.json"), "{}");
        Assert.That(SafeTensorsCheckpoint.InputFiles(dir.Path).Select(Path.GetFileName), Is.EqualTo(new[] { "config.json", "model.gguf" }));
    }

    [Test]
    public void OurWriterLeavesNoHolesForAnyMixOfTypes()
    {
        using var dir = new TempDirectory();
        string path = dir.File("mixed.safetensors");
        SafeTensorsWriter.Write(path, [
            new TensorToWrite("h", DType.F16, [3], new float[] { 1, 2, 3 }),
            new TensorToWrite("e", DType.F32, [0], Array.Empty<float>()),
            new TensorToWrite("b", DType.BF16, [1, 1, 5], new float[] { 1, 2, 3, 4, 5 }),
            new TensorToWrite("f", DType.F32, [1], new float[] { 7 }),
        ]);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Tensors.Count, Is.EqualTo(4));
    }
}
