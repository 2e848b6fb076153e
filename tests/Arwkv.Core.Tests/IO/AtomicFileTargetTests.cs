using System.Diagnostics;
using Arwkv.IO;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.IO;

/// <summary>
/// Issue 11, class 1: an atomic writer must never replace a device node, a FIFO, a directory or an input of the same
/// operation, and must write through a symbolic link (the link survives, the file it points to gets the bytes).
/// Each test checks both the refusal and that the node on disk is what it was, since a refusal message alone would
/// pass even if the rename had already happened.
/// </summary>
[TestFixture]
public class AtomicFileTargetTests
{
    private TempDirectory _tmp = null!;

    [SetUp] public void SetUp() => _tmp = new TempDirectory("arwkv-atomic");
    [TearDown] public void TearDown() => _tmp.Dispose();

    private static void WriteBytes(string path, IEnumerable<string>? inputs = null, Action? onWrite = null) =>
        AtomicFile.Write(path, s => { onWrite?.Invoke(); s.Write("new contents"u8); }, inputs ?? []);

    /// <summary>
    /// A character device to aim at. As root, a fresh node made in the test's directory (mknod c 1 3): were the
    /// refusal to regress, the rename would replace the real /dev/null of the machine (it did, once, while this test
    /// was being checked against a broken writer). As anyone else /dev/null itself, which they cannot replace.
    /// </summary>
    private string CharacterDevice()
    {
        if (Environment.UserName != "root") return "/dev/null";
        string node = _tmp.File("null");
        using (var p = Process.Start(new ProcessStartInfo("mknod", ["-m", "666", node, "c", "1", "3"]) { UseShellExecute = false })!) p.WaitForExit();
        Assert.That(FileNode.Stat(node, followLinks: false).Kind, Is.EqualTo(FileNodeKind.CharacterDevice), "precondition: mknod worked");
        return node;
    }

    [Test]
    public void CharacterDevice_IsRefusedAndStaysACharacterDevice()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("statx node kinds are Linux-only");
        string device = CharacterDevice();
        bool called = false;
        var e = Assert.Throws<IOException>(() => WriteBytes(device, onWrite: () => called = true))!;
        Assert.That(e.Message, Does.StartWith(device + ": ").And.Contain("a character device").And.Contain("refusing"));
        Assert.That(called, Is.False, "refused before the write delegate ran");
        Assert.That(FileNode.Stat(device, followLinks: false).Kind, Is.EqualTo(FileNodeKind.CharacterDevice));
    }

    [Test]
    public void Fifo_IsRefusedAndNotReplaced_NoTempFileLeft()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("mkfifo and statx node kinds are Linux-only here");
        string fifo = _tmp.File("out.npy");
        using (var p = Process.Start(new ProcessStartInfo("mkfifo", [fifo]) { UseShellExecute = false })!) p.WaitForExit();
        Assert.That(FileNode.Stat(fifo, followLinks: false).Kind, Is.EqualTo(FileNodeKind.Fifo), "precondition: mkfifo worked");

        var e = Assert.Throws<IOException>(() => WriteBytes(fifo))!;
        Assert.That(e.Message, Does.Contain(fifo).And.Contain("FIFO"));
        Assert.That(FileNode.Stat(fifo, followLinks: false).Kind, Is.EqualTo(FileNodeKind.Fifo), "the FIFO is still a FIFO");
        Assert.That(Directory.GetFileSystemEntries(_tmp.Path), Has.Length.EqualTo(1), "no temporary file");
    }

    [Test]
    public void Directory_IsRefused()
    {
        string dir = _tmp.File("model.safetensors");
        Directory.CreateDirectory(dir);
        var e = Assert.Throws<IOException>(() => WriteBytes(dir))!;
        Assert.That(e.Message, Does.Contain(dir).And.Contain("a directory"));
        Assert.That(Directory.Exists(dir), Is.True);
    }

    [Test]
    public void SymbolicLink_IsWrittenThrough_LinkSurvives()
    {
        string real = _tmp.File("real.bin");
        File.WriteAllText(real, "old");
        string link = _tmp.File("link.bin");
        File.CreateSymbolicLink(link, "real.bin");

        WriteBytes(link);

        Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo("real.bin"), "the link is still a link, to the same target");
        Assert.That(File.ReadAllText(real), Is.EqualTo("new contents"), "the file it points to got the bytes");
        Assert.That(Directory.GetFileSystemEntries(_tmp.Path).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "link.bin", "real.bin" }));
    }

    [Test]
    public void ChainOfLinks_WritesTheFinalTarget()
    {
        string sub = _tmp.File("blobs");
        Directory.CreateDirectory(sub);
        string real = Path.Combine(sub, "abc");
        File.WriteAllText(real, "old");
        File.CreateSymbolicLink(_tmp.File("b"), "blobs/abc");
        File.CreateSymbolicLink(_tmp.File("a"), "b");

        Assert.That(AtomicFile.ResolveTarget(_tmp.File("a")), Is.EqualTo(real));
        WriteBytes(_tmp.File("a"));
        Assert.That(File.ReadAllText(real), Is.EqualTo("new contents"));
        Assert.That(new FileInfo(_tmp.File("a")).LinkTarget, Is.EqualTo("b"));
        Assert.That(new FileInfo(_tmp.File("b")).LinkTarget, Is.EqualTo("blobs/abc"));
    }

    [Test]
    public void DanglingLink_IsRefused_NothingCreated()
    {
        string link = _tmp.File("out.bin");
        File.CreateSymbolicLink(link, "nowhere.bin");
        var e = Assert.Throws<IOException>(() => WriteBytes(link))!;
        Assert.That(e.Message, Does.Contain(link).And.Contain("dangling"));
        Assert.That(File.Exists(_tmp.File("nowhere.bin")), Is.False);
        Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo("nowhere.bin"));
    }

    [Test]
    public void LinkToDevice_IsRefused()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("statx node kinds are Linux-only");
        string device = CharacterDevice();
        string link = _tmp.File("out.bin");
        File.CreateSymbolicLink(link, device);
        var e = Assert.Throws<IOException>(() => WriteBytes(link))!;
        Assert.That(e.Message, Does.Contain($"a symbolic link to {device}").And.Contain("a character device"));
        Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo(device));
        Assert.That(FileNode.Stat(device, followLinks: false).Kind, Is.EqualTo(FileNodeKind.CharacterDevice));
    }

    [Test]
    public void OutputThatIsAnInput_IsRefusedBeforeWriting_SamePathLinkOrHardLink()
    {
        string input = _tmp.File("model.safetensors");
        File.WriteAllText(input, "weights");
        string viaLink = _tmp.File("alias.safetensors");
        File.CreateSymbolicLink(viaLink, input);
        string viaDotDot = Path.Combine(_tmp.Path, "sub", "..", "model.safetensors");
        Directory.CreateDirectory(_tmp.File("sub"));
        var targets = new List<string> { input, viaLink, viaDotDot };
        if (OperatingSystem.IsLinux())
        {
            // A hard link has no link to resolve: only device + inode tell it is the same file.
            string hard = _tmp.File("hard.safetensors");
            using (var p = Process.Start(new ProcessStartInfo("ln", [input, hard]) { UseShellExecute = false })!) p.WaitForExit();
            Assert.That(File.Exists(hard), "precondition: ln worked");
            targets.Add(hard);
        }
        foreach (string target in targets)
        {
            bool called = false;
            var e = Assert.Throws<IOException>(() => WriteBytes(target, [input], () => called = true), target)!;
            Assert.That(e.Message, Does.Contain("an input of this command"), target);
            Assert.That(called, Is.False, $"{target}: refused before anything was written");
        }
        Assert.That(File.ReadAllText(input), Is.EqualTo("weights"));
    }

    [Test]
    public void DifferentFileWithSameContents_IsNotAnInput()
    {
        string input = _tmp.File("a.bin"), output = _tmp.File("b.bin");
        File.WriteAllText(input, "same");
        File.WriteAllText(output, "same");
        WriteBytes(output, [input]);
        Assert.That(File.ReadAllText(output), Is.EqualTo("new contents"));
        Assert.That(File.ReadAllText(input), Is.EqualTo("same"));
    }

    [Test]
    public void FailureMidWriteThroughLink_KeepsTheOldFileAndTheLink()
    {
        string real = _tmp.File("real.bin");
        File.WriteAllText(real, "old");
        string link = _tmp.File("link.bin");
        File.CreateSymbolicLink(link, "real.bin");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(link, s =>
        {
            s.Write(new byte[10_000]);
            throw new InvalidOperationException("disk full (simulated)");
        }));
        Assert.That(File.ReadAllText(real), Is.EqualTo("old"));
        Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo("real.bin"));
        Assert.That(Directory.GetFileSystemEntries(_tmp.Path), Has.Length.EqualTo(2), "no temporary file");
    }

    [Test]
    public void Statx_IdentityMatchesTheSystem()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("statx is Linux-only");
        string path = _tmp.File("x");
        File.WriteAllText(path, "x");
        FileNode node = FileNode.Stat(path, followLinks: true);
        Assert.That(node.Kind, Is.EqualTo(FileNodeKind.Regular));
        Assert.That(node.HasIdentity, Is.True, "statx answered (not the portable fallback)");
        var psi = new ProcessStartInfo("stat", ["-c", "%i", path]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        string inode = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        Assert.That(node.Inode.ToString(System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(inode), "the struct offsets are right");
        Assert.That(FileNode.Stat(_tmp.File("missing"), followLinks: true).Kind, Is.EqualTo(FileNodeKind.Missing));
        Assert.That(FileNode.Stat(_tmp.Path, followLinks: true).Kind, Is.EqualTo(FileNodeKind.Directory));
    }
}
