using System.Reflection;
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

    /// <summary>
    /// The GPU build (native/hip/build/libarwkv_hip.so, compiled by CI's hipcc step) on a machine without a GPU says
    /// so. It is opened beside whatever library the process uses (the executor, under ./build.sh test) and asked
    /// through its own exports, since loading it as the process's library would rebind every P/Invoke to it.
    /// </summary>
    [Test]
    public unsafe void GpuBuildInThisCheckout_OnAMachineWithoutGpu_ReportsNoDevice()
    {
        string? built = HipRuntime.LibraryCandidates().FirstOrDefault(p =>
            Path.GetFileName(Path.GetDirectoryName(p)) == "build" && p.Contains(Path.Combine("native", "hip", "build")) && File.Exists(p));
        if (built == null) Assert.Ignore("native/hip/build/libarwkv_hip.so is not built here (run ./build.sh native)");
        if (HipRuntime.TryLoad(out _) && !HipRuntime.IsCpuExecutor) Assert.Ignore("a GPU is present: nothing is missing");
        if (!NativeLibrary.TryLoad(built!, out nint handle))
            Assert.Ignore($"{built} does not load here (no GPU runtime library); TryLoad's message for that is tested above");

        var platform = (delegate* unmanaged<int>)NativeLibrary.GetExport(handle, "arwkv_hip_platform_id");
        var deviceCount = (delegate* unmanaged<int*, int>)NativeLibrary.GetExport(handle, "arwkv_hip_device_count");
        var message = (delegate* unmanaged<byte*, int, int>)NativeLibrary.GetExport(handle, "arwkv_hip_last_error_message");
        Assert.That(platform(), Is.Not.EqualTo(HipRuntime.PlatformCpuExecutor), $"{built} is an executor build");
        int count = -1;
        int status = deviceCount(&count);
        if (status == 0 && count > 0) Assert.Ignore($"{built} sees {count} GPU(s): nothing is missing");

        byte* text = stackalloc byte[1024];
        message(text, 1024);
        string reason = System.Text.Encoding.UTF8.GetString(text, new ReadOnlySpan<byte>(text, 1024).IndexOf((byte)0));
        TestContext.Out.WriteLine($"{built}: status {status}, {reason}");
        Assert.That(status, Is.Not.EqualTo(0), "0 devices must be reported as an error, not success");
        Assert.That(reason, Does.Contain("no").IgnoreCase.And.Contain("device").IgnoreCase, reason);
    }

    /// <summary>
    /// Every entry point the bindings declare is exported by the built library under that name, and the internal
    /// helpers are not. Needs only the file (loading works without a GPU when the ROCm runtime is installed, as on CI
    /// after the native build step).
    /// </summary>
    [Test]
    public void BuiltLibrary_ExportsEveryBoundFunction()
    {
        string? built = HipRuntime.LibraryCandidates().FirstOrDefault(File.Exists);
        if (built == null) Assert.Ignore("libarwkv_hip.so is not built here (run ./build.sh native)");
        if (!NativeLibrary.TryLoad(built!, out nint handle)) Assert.Ignore($"{built} does not load here (no GPU runtime)");
        var bound = typeof(HipRuntime).Assembly.GetType("Arwkv.Hip.NativeMethods")!
            .GetMethods(BindingFlags.Static | BindingFlags.NonPublic)
            .Select(m => m.Name)
            .Where(name => name.StartsWith("arwkv_", StringComparison.Ordinal))
            .Distinct()
            .ToList();

        Assert.That(bound, Has.Count.GreaterThan(50));
        Assert.That(bound.Where(name => !NativeLibrary.TryGetExport(handle, name, out _)), Is.Empty, "bound but not exported");
        Assert.That(NativeLibrary.TryGetExport(handle, "arwkv_fail", out _), Is.False, "internal helpers stay hidden");
    }
}
