using Arwkv.Hip;

namespace Arwkv.Tests.Hip;

/// <summary>
/// Which device the kernel tests run on: a GPU when the library built in this checkout finds one, otherwise the
/// HIP-on-CPU executor (native/hip/build.sh --cpu), which runs the same kernels on the CPU. ARWKV_HIP_LIBRARY, when
/// set, names the library outright (./build.sh test sets it to each executor variant in turn). With
/// ARWKV_HIP_TESTS_REQUIRED=1 (as ./build.sh test sets) a missing library fails the tests instead of skipping them.
/// </summary>
static class HipTestDevice
{
    static readonly Lazy<string> Reason = new(Prepare);

    /// <summary>Call from [SetUp]: loads the library or ends the test (Ignored, or Failed when tests are required).</summary>
    public static void Require()
    {
        string reason = Reason.Value;
        if (reason.Length > 0)
        {
            if (Environment.GetEnvironmentVariable("ARWKV_HIP_TESTS_REQUIRED") == "1") Assert.Fail("HIP kernel tests cannot run: " + reason);
            Assert.Ignore("HIP kernel tests not run: " + reason + " (build the executor with native/hip/build.sh --cpu)");
        }
        HipRuntime.Initialize();
    }

    static string Prepare()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(HipRuntime.LibraryPathVariable)))
        {
            bool gpuBuildExists = HipRuntime.LibraryCandidates().Skip(1).Any(File.Exists);
            string? executor = FindExecutorBuild();
            if (!gpuBuildExists && executor != null)
            {
                Environment.SetEnvironmentVariable(HipRuntime.LibraryPathVariable, executor);
                Environment.SetEnvironmentVariable(HipRuntime.AllowExecutorVariable, "1");
            }
        }
        if (!HipRuntime.TryLoad(out string reason)) return reason;
        TestContext.Progress.WriteLine($"HIP kernel tests run on {HipRuntime.GetDeviceInfo().Name} ({HipRuntime.LoadedLibraryPath})");
        return "";
    }

    /// <summary>native/hip/build/cpu-w64/libarwkv_hip.so in the test assembly's folder or a parent.</summary>
    static string? FindExecutorBuild()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "native", "hip", "build", "cpu-w64", HipRuntime.LibraryFileName);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }
}
