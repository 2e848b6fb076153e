using System.Runtime.InteropServices;
using Arwkv.Hip;

namespace Arwkv.Tests.Hip;

/// <summary>Loading the GPU backend: every way it can be unavailable is reported with what is missing.</summary>
public class HipRuntimeTests
{
    [Test]
    public void TryLoad_WhenTheLibraryIsNowhere_NamesItWhereItLookedAndHowToBuildIt()
    {
        Assume.That(NativeLibrary.TryLoad(HipRuntime.LibraryFileName, out _), Is.False,
            "a libarwkv_hip.so on the system library path would be found by the fallback search");
        string missing = Path.Combine(Path.GetTempPath(), "arwkv-hip-absent-" + Guid.NewGuid().ToString("N"), HipRuntime.LibraryFileName);

        bool loaded = HipRuntime.TryLoadCore([missing], out string reason);

        Assert.That(loaded, Is.False);
        Assert.That(reason, Does.Contain("libarwkv_hip.so was not found"));
        Assert.That(reason, Does.Contain(missing));
        Assert.That(reason, Does.Contain("./build.sh native").And.Contain(HipRuntime.LibraryPathVariable));
    }

    [Test]
    public void TryLoad_WhenTheFileIsNotALoadableLibrary_SaysSoAndNamesTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), "arwkv-hip-not-elf-" + Guid.NewGuid().ToString("N") + ".so");
        File.WriteAllText(path, "not an ELF shared object");
        try
        {
            bool loaded = HipRuntime.TryLoadCore([path], out string reason);

            Assert.That(loaded, Is.False);
            Assert.That(reason, Does.Contain(path).And.Contain("could not be loaded"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void LibraryCandidates_StartWithTheEnvironmentVariableAndIncludeTheCheckoutBuildFolder()
    {
        string previous = Environment.GetEnvironmentVariable(HipRuntime.LibraryPathVariable) ?? "";
        string explicitPath = Path.Combine(Path.GetTempPath(), "custom", HipRuntime.LibraryFileName);
        Environment.SetEnvironmentVariable(HipRuntime.LibraryPathVariable, explicitPath);
        try
        {
            var candidates = HipRuntime.LibraryCandidates();

            Assert.That(candidates[0], Is.EqualTo(explicitPath));
            Assert.That(candidates, Has.Some.EndsWith(Path.Combine("native", "hip", "build", HipRuntime.LibraryFileName)));
        }
        finally
        {
            Environment.SetEnvironmentVariable(HipRuntime.LibraryPathVariable, previous.Length == 0 ? null : previous);
        }
    }

    /// <summary>
    /// On this machine: either a GPU is usable, or the reason is one of the three documented cases. On a CI machine
    /// where the build step compiled the library (hipcc installs libamdhip64) but no GPU exists, it is the third.
    /// </summary>
    [Test]
    public void TryLoad_OnThisMachine_EitherFindsAGpuOrNamesWhatIsMissing()
    {
        if (HipRuntime.TryLoad(out string reason))
        {
            Assert.That(reason, Is.Empty);
            Assert.That(HipRuntime.DeviceCount, Is.GreaterThan(0));
            return;
        }
        TestContext.Out.WriteLine(reason);
        Assert.That(reason, Does.Contain("libarwkv_hip.so was not found")
            .Or.Contain("The GPU runtime is missing")
            .Or.Contain("no GPU device is available"));
        Assert.Throws<InvalidOperationException>(HipRuntime.EnsureLoaded);
    }

    [Test]
    public void TryLoad_WithTheLibraryBuiltInThisCheckoutButNoGpu_SaysNoGpuDevice()
    {
        string? built = HipRuntime.LibraryCandidates().FirstOrDefault(p => p.Contains(Path.Combine("native", "hip", "build")) && File.Exists(p));
        if (built == null) Assert.Ignore("native/hip/build/libarwkv_hip.so is not built here (run ./build.sh native)");
        if (HipRuntime.TryLoad(out _)) Assert.Ignore("a GPU is present: nothing is missing");

        bool loaded = HipRuntime.TryLoadCore([built!], out string reason);

        Assert.That(loaded, Is.False);
        Assert.That(reason, Does.Contain("no GPU device is available").Or.Contain("The GPU runtime is missing"), reason);
    }
}
