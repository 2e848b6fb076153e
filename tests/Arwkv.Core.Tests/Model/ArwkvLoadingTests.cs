using Arwkv.IO;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.Model;

/// <summary>Bad checkpoints fail at load with a CheckpointException that names the file and the tensor.</summary>
public class ArwkvLoadingTests
{
    private const string Key1 = "model.layers.1.self_attn.time_mixer.key.weight";

    /// <summary>Writes the small random checkpoint, letting <paramref name="edit"/> drop (null) or reshape tensors.</summary>
    private static void WriteEdited(string dir, Func<string, long[], float[], (long[] Shape, float[] Data)?> edit)
    {
        var config = RandomArwkvCheckpoint.SmallConfig();
        var tensors = RandomArwkvCheckpoint.Create(dir, config, seed: 3);
        var list = new List<TensorToWrite>();
        foreach (var (name, shape) in ArwkvCheckpointLayout.Tensors(config, RandomArwkvCheckpoint.SmallRanks))
        {
            if (edit(name, shape, tensors[name]) is not var (newShape, data)) continue;
            list.Add(new TensorToWrite(name, DType.F32, newShape, data));
        }
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), list);
    }

    private static CheckpointException LoadFails(string dir) =>
        Assert.Throws<CheckpointException>(() => ArwkvModel.Load(dir, new ModelOptions { Threads = 1 }).Dispose())!;

    [Test]
    public void MissingTensor_IsNamed()
    {
        using var dir = new TempDirectory();
        WriteEdited(dir.Path, (name, shape, data) => name == Key1 ? null : (shape, data));
        var e = LoadFails(dir.Path);
        Assert.That(e.FilePath, Does.EndWith("model.safetensors"));
        Assert.That(e.Message, Does.Contain($"missing tensor '{Key1}'"));
    }

    [Test]
    public void MisshapedTensor_NamesExpectedAndActualShape()
    {
        using var dir = new TempDirectory();
        WriteEdited(dir.Path, (name, shape, data) => name == Key1 ? ([64, 256], data) : (shape, data));
        var e = LoadFails(dir.Path);
        Assert.That(e.FilePath, Does.EndWith("model.safetensors"));
        Assert.That(e.Message, Does.Contain(Key1).And.Contain("[64, 256]").And.Contain("expected [128, 128]"));
    }

    [Test]
    public void LoraRankThatChangesBetweenLayers_IsRejected()
    {
        using var dir = new TempDirectory();
        string a1 = "model.layers.2.self_attn.time_mixer.a1", a2 = "model.layers.2.self_attn.time_mixer.a2";
        WriteEdited(dir.Path, (name, shape, data) =>
            name == a1 ? ([128, 21], new float[128 * 21]) : name == a2 ? ([21, 128], new float[21 * 128]) : (shape, data));
        var e = LoadFails(dir.Path);
        Assert.That(e.Message, Does.Contain(a1).And.Contain("[128, 21]").And.Contain("expected [128, 20]"));
    }

    [Test]
    public void LoraHalvesWithDifferentRanks_AreRejected()
    {
        using var dir = new TempDirectory();
        string w2 = "model.layers.0.self_attn.time_mixer.w2";
        WriteEdited(dir.Path, (name, shape, data) => name == w2 ? ([25, 128], new float[25 * 128]) : (shape, data));
        var e = LoadFails(dir.Path);
        Assert.That(e.Message, Does.Contain(w2).And.Contain("[25, 128]").And.Contain("expected [24, 128]"));
    }

    [Test]
    public void NonFiniteValueInASmallTensor_IsNamed()
    {
        using var dir = new TempDirectory();
        string xr = "model.layers.1.self_attn.time_mixer.x_r";
        WriteEdited(dir.Path, (name, shape, data) =>
        {
            if (name == xr) data[3] = float.NaN;
            return (shape, data);
        });
        var e = LoadFails(dir.Path);
        Assert.That(e.Message, Does.Contain(xr).And.Contain("non-finite"));
    }

    [Test]
    public void ConfigContradictingTheWeights_NamesTensorAndShapes()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 3);
        string config = dir.File("config.json");
        string text = File.ReadAllText(config);
        Assert.That(text, Does.Contain("\"hidden_size\": 128"));
        File.WriteAllText(config, text.Replace("\"hidden_size\": 128", "\"hidden_size\": 192"));
        var e = LoadFails(dir.Path);
        Assert.That(e.Message, Does.Contain("model.embed_tokens.weight").And.Contain("[517, 128]").And.Contain("expected [517, 192]"));
    }

    [Test]
    public void MissingShard_IsNamedWithATensorItShouldHold()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 3, shards: 3);
        string shard = dir.File("model-00002-of-00003.safetensors");
        File.Delete(shard);
        var e = LoadFails(dir.Path);
        Assert.That(e.FilePath, Is.EqualTo(shard));
        Assert.That(e.Message, Does.Contain("shard not found").And.Contain("tensor 'model."));
    }

    [Test]
    public void IndexThatMisplacesATensor_IsRejected()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 3, shards: 3);
        string index = dir.File("model.safetensors.index.json");
        string text = File.ReadAllText(index);
        // The embedding is written first, so it lives in shard 1; claim it is in shard 3.
        string entry = "\"model.embed_tokens.weight\": \"model-00001-of-00003.safetensors\"";
        Assert.That(text, Does.Contain(entry));
        File.WriteAllText(index, text.Replace(entry, "\"model.embed_tokens.weight\": \"model-00003-of-00003.safetensors\""));
        var e = LoadFails(dir.Path);
        Assert.That(e.FilePath, Is.EqualTo(dir.File("model-00003-of-00003.safetensors")));
        Assert.That(e.Message, Does.Contain("missing tensor 'model.embed_tokens.weight'"));
    }

    [Test]
    public void DirectoryWithoutWeights_IsRejected()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 3);
        File.Delete(dir.File("model.safetensors"));
        Assert.That(LoadFails(dir.Path).Message, Does.Contain("no model.safetensors"));
    }

    [Test]
    public void UnknownModelType_IsRejectedByLanguageModelLoad()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 3);
        string config = dir.File("config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"rwkv_hybrid\"", "\"llama\""));
        var e = Assert.Throws<CheckpointException>(() => LanguageModel.Load(dir.Path))!;
        Assert.That(e.FilePath, Is.EqualTo(config));
        Assert.That(e.Message, Does.Contain("unknown model_type 'llama'"));
    }

    [Test]
    public void GateFreeCheckpointWithoutXg_Loads()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig(gated: false);
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 3);
        using var model = ArwkvModel.Load(dir.Path, new ModelOptions { Threads = 1 });
        Assert.That(model.LoraRanks, Is.EqualTo(RandomArwkvCheckpoint.SmallRanks with { Gate = 0 }));
    }

    [Test]
    public void LoadingMapsBigMatricesWithoutCopyingThem()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("RssAnon is read from /proc/self/status");
        using var dir = new TempDirectory("arwkv-rss");
        // One layer and a tied 280000 x 512 BF16 embedding: a ~290 MB file that is almost all one matrix.
        var config = new ArwkvConfig
        {
            HiddenSize = 512, NumLayers = 1, IntermediateSize = 512, VocabSize = 280_000, TieWordEmbeddings = true,
        };
        long fileBytes = RandomCheckpointWriter.Write(dir.Path, config, new ArwkvLoraRanks(16, 16, 16, 16), DType.BF16);
        Assert.That(fileBytes, Is.GreaterThan(280_000L * 512 * 2));

        // Anonymous memory is what a copy would cost; the mapped file's own pages (RssFile) are the page cache, which
        // the load's non-finite scan reads through once and the kernel can drop at will.
        GC.Collect();
        long before = Resident("RssAnon"), fileBefore = Resident("RssFile");
        using var model = ArwkvModel.Load(dir.Path, new ModelOptions { Threads = 2 });
        long afterLoad = Resident("RssAnon"), fileAfterLoad = Resident("RssFile");
        var logits = new float[config.VocabSize];
        model.Forward([12345], model.CreateState(), logits, LogitsScope.Last);
        long afterForward = Resident("RssAnon");
        TestContext.Out.WriteLine($"file {fileBytes >> 20} MiB; anonymous memory growth after load {(afterLoad - before) >> 20} MiB, " +
                                  $"after one token {(afterForward - before) >> 20} MiB; mapped file pages after load {(fileAfterLoad - fileBefore) >> 20} MiB");
        Assert.That(afterLoad - before, Is.LessThan(fileBytes / 5));
        Assert.That(afterForward - before, Is.LessThan(fileBytes / 5));
        Assert.That(logits.All(float.IsFinite));
    }

    private static long Resident(string field)
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]) * 1024;
        throw new InvalidOperationException($"no {field} in /proc/self/status");
    }
}
