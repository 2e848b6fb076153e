using Arwkv.IO;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.IO;

/// <summary>The fsync helper behind atomic files and checkpoint commits.</summary>
public class DurabilityTests
{
    [Test]
    public void FlushTreeFlushesEveryFileAndDirectory()
    {
        using var dir = new TempDirectory();
        Directory.CreateDirectory(Path.Combine(dir.Path, "model", "tokenizer"));
        File.WriteAllText(Path.Combine(dir.Path, "trainer.json"), "{}");
        File.WriteAllText(Path.Combine(dir.Path, "model", "config.json"), "{}");
        File.WriteAllText(Path.Combine(dir.Path, "model", "tokenizer", "tokenizer.json"), "{}");
        // 3 files, 2 directories below the root, and the root.
        Assert.That(Durability.FlushTree(dir.Path), Is.EqualTo(6));
    }

    [Test]
    public void AMissingDirectoryIsAnIOErrorNamingIt()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("directories are not flushed on Windows");
        using var dir = new TempDirectory();
        string missing = Path.Combine(dir.Path, "gone");
        var ex = Assert.Throws<IOException>(() => Durability.FlushDirectory(missing));
        Assert.That(ex!.Message, Does.Contain(missing));
    }
}
