using System.Security.Cryptography;
using Arwkv.IO;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.IO;

/// <summary>
/// Checkpoints in the Hugging Face hub cache layout load as they are: every file of
/// <c>models--org--name/snapshots/&lt;rev&gt;/</c> is a relative symbolic link to <c>../../blobs/&lt;sha256&gt;</c>,
/// so a reader that takes a link's own size for the file's sees a few dozen bytes and reports it truncated.
/// </summary>
public class HuggingFaceCacheLayoutTests
{
    [TestCase(1)]
    [TestCase(2)]
    public void SnapshotOfSymbolicLinksToBlobs_LoadsAndGivesTheSameLogits(int shards)
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("creating symbolic links needs a privilege on Windows");
        using var dir = new TempDirectory("arwkv-hfcache");
        string plain = Path.Combine(dir.Path, "plain");
        Directory.CreateDirectory(plain);
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(plain, config, seed: 5, shards: shards);
        string snapshot = MakeHubCache(Path.Combine(dir.Path, "hub", "models--arwkv--tiny"), plain);
        Assert.That(Directory.GetFiles(snapshot).All(f => new FileInfo(f).LinkTarget != null), "every snapshot file is a link");
        Assert.That(Directory.GetFiles(snapshot, "*.safetensors"), Has.Length.EqualTo(shards));

        float[] expected = Logits(plain, config.VocabSize), actual = Logits(snapshot, config.VocabSize);

        Assert.That(actual, Is.EqualTo(expected), "a snapshot of links must be the same model as the files themselves");
    }

    [Test]
    public void SafeTensorsFileThroughALink_HasTheTargetsLength()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("creating symbolic links needs a privilege on Windows");
        using var dir = new TempDirectory("arwkv-hfcache");
        RandomArwkvCheckpoint.Create(dir.Path, seed: 5);
        string target = dir.File("model.safetensors"), link = dir.File("link.safetensors");
        File.CreateSymbolicLink(link, "model.safetensors");

        using var file = SafeTensorsFile.Open(link);

        Assert.That(file.Length, Is.EqualTo(new FileInfo(target).Length));
    }

    [Test]
    public void DanglingLink_SaysWhereItPoints()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("creating symbolic links needs a privilege on Windows");
        using var dir = new TempDirectory("arwkv-hfcache");
        string link = dir.File("model.safetensors");
        File.CreateSymbolicLink(link, "../../blobs/0123abcd");

        var e = Assert.Throws<CheckpointException>(() => SafeTensorsFile.Open(link).Dispose())!;

        Assert.That(e.FilePath, Is.EqualTo(link));
        Assert.That(e.Message, Does.Contain("symbolic link to '../../blobs/0123abcd'"));
    }

    /// <summary>Moves every file of <paramref name="source"/> into the cache as the hub client lays it out.</summary>
    static string MakeHubCache(string repo, string source)
    {
        const string revision = "0123456789abcdef0123456789abcdef01234567";
        string blobs = Path.Combine(repo, "blobs"), snapshot = Path.Combine(repo, "snapshots", revision);
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snapshot);
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), revision);
        foreach (string file in Directory.GetFiles(source))
        {
            string hash = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(file)));
            File.Copy(file, Path.Combine(blobs, hash));
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(file)), Path.Combine("..", "..", "blobs", hash));
        }
        return snapshot;
    }

    static float[] Logits(string directory, int vocab)
    {
        using var model = LanguageModel.Load(directory, new ModelOptions { Threads = 1 });
        var logits = new float[vocab];
        model.Forward([1, 7, 42, 3], model.CreateState(), logits, LogitsScope.Last);
        return logits;
    }
}
