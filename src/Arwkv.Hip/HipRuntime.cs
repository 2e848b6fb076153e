using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace Arwkv.Hip;

/// <summary>
/// Finds and loads libarwkv_hip.so and the GPU runtime under it, and answers questions about the devices.
/// Call <see cref="TryLoad"/> (or <see cref="EnsureLoaded"/>) before anything else in this assembly: on a machine
/// without the library, the ROCm/CUDA runtime or a GPU it returns false with a sentence saying which one is missing.
/// </summary>
/// <remarks>
/// The library is searched, in order, at: the path in the <c>ARWKV_HIP_LIBRARY</c> environment variable; next to the
/// application; <c>native/hip/build/libarwkv_hip.so</c> in the application's folder or any folder above it (so tests
/// and tools run from a checkout find a library built by <c>./build.sh native</c>), then the same from the current
/// directory; finally the system's library path (<c>LD_LIBRARY_PATH</c>, ldconfig).
/// </remarks>
public static class HipRuntime
{
    /// <summary>The file name of the native library on Linux.</summary>
    public const string LibraryFileName = "libarwkv_hip.so";

    /// <summary>Environment variable holding an explicit path to libarwkv_hip.so.</summary>
    public const string LibraryPathVariable = "ARWKV_HIP_LIBRARY";

    /// <summary>
    /// Environment variable that must be 1 for a HIP-on-CPU executor build (native/hip/build.sh --cpu) to be used.
    /// The executor runs every kernel on the CPU for tests; it is never a backend, so nothing selects it silently.
    /// </summary>
    public const string AllowExecutorVariable = "ARWKV_HIP_ALLOW_CPU_EXECUTOR";

    internal const int PlatformCpuExecutor = 3;

    // The runtimes libarwkv_hip links against: ROCm's HIP (hipcc build) or CUDA's runtime (nvcc build).
    static readonly string[] AmdRuntimeNames = ["libamdhip64.so.6", "libamdhip64.so.5", "libamdhip64.so"];
    static readonly string[] CudaRuntimeNames = ["libcudart.so.12", "libcudart.so.13", "libcudart.so"];

    static readonly Lock Gate = new();
    static nint s_handle;
    static string? s_loadedPath;
    static bool s_attempted;
    static bool s_usable;
    static string s_reason = "";

    static HipRuntime() => NativeLibrary.SetDllImportResolver(typeof(HipRuntime).Assembly, ResolveLibrary);

    /// <summary>The path libarwkv_hip.so was loaded from, or null before a successful <see cref="TryLoad"/>.</summary>
    public static string? LoadedLibraryPath => s_loadedPath;

    /// <summary>
    /// Loads libarwkv_hip.so and checks that the GPU runtime sees at least one device. The first call does the work;
    /// later calls return the same answer.
    /// </summary>
    /// <param name="reason">Empty on success; otherwise what is missing (the library and where it was searched,
    /// the ROCm/CUDA runtime, or a GPU) and how to fix it.</param>
    /// <returns>True when kernels can be launched.</returns>
    public static bool TryLoad(out string reason)
    {
        lock (Gate)
        {
            if (!s_attempted)
            {
                s_attempted = true;
                s_usable = TryLoadCore(LibraryCandidates(), out s_reason);
            }
            reason = s_reason;
            return s_usable;
        }
    }

    /// <summary>Like <see cref="TryLoad"/>, but throws <see cref="InvalidOperationException"/> with the reason.</summary>
    public static void EnsureLoaded()
    {
        if (!TryLoad(out string reason)) throw new InvalidOperationException("The GPU backend is unavailable: " + reason);
    }

    /// <summary>Number of GPU devices the runtime sees.</summary>
    public static int DeviceCount
    {
        get
        {
            EnsureLoaded();
            Check(NativeMethods.arwkv_hip_device_count(out int count), "arwkv_hip_device_count");
            return count;
        }
    }

    /// <summary>True when the library was built by hipcc (AMD); false for the nvcc (CUDA) build.</summary>
    public static bool IsAmd
    {
        get
        {
            EnsureLoaded();
            return NativeMethods.arwkv_hip_platform_id() == 1;
        }
    }

    /// <summary>True when the loaded library is the HIP-on-CPU executor (a testing tool, not a GPU).</summary>
    public static bool IsCpuExecutor
    {
        get
        {
            EnsureLoaded();
            return NativeMethods.arwkv_hip_platform_id() == PlatformCpuExecutor;
        }
    }

    /// <summary>
    /// HIP-on-CPU executor only: the order in which a block's threads leave each barrier and blocks start, for the
    /// race check (a kernel whose results depend on it is missing a barrier or racing).
    /// </summary>
    public static void SetExecutorSchedule(ExecutorOrder order, ulong seed = 0)
    {
        EnsureLoaded();
        Check(NativeMethods.arwkv_hip_executor_set_schedule((int)order, seed), "arwkv_hip_executor_set_schedule");
    }

    /// <summary>True when the library was built with ARWKV_HIP_BLAS (rocBLAS or cuBLAS behind the GEMM).</summary>
    public static bool HasVendorBlas
    {
        get
        {
            EnsureLoaded();
            return NativeMethods.arwkv_hip_blas_enabled() != 0;
        }
    }

    /// <summary>Describes device <paramref name="device"/>.</summary>
    public static unsafe HipDeviceInfo GetDeviceInfo(int device = 0)
    {
        EnsureLoaded();
        NativeMethods.DeviceInfo info;
        Check(NativeMethods.arwkv_hip_device_info_get(device, &info), "arwkv_hip_device_info_get");
        return new HipDeviceInfo(
            Utf8Z(info.Name, 256), Utf8Z(info.Arch, 64), info.TotalMemoryBytes, info.MultiprocessorCount,
            info.WarpSize, info.MaxThreadsPerBlock, info.MaxSharedMemoryPerBlock, info.ComputeMajor, info.ComputeMinor);
    }

    /// <summary>Makes <paramref name="device"/> current for the calling thread and creates its context now.</summary>
    public static void Initialize(int device = 0)
    {
        EnsureLoaded();
        Check(NativeMethods.arwkv_hip_init(device), "arwkv_hip_init");
    }

    /// <summary>Waits until all work on the current device has finished.</summary>
    public static void Synchronize()
    {
        EnsureLoaded();
        Check(NativeMethods.arwkv_hip_device_synchronize(), "arwkv_hip_device_synchronize");
    }

    /// <summary>Throws <see cref="HipException"/> with the native message unless <paramref name="status"/> is 0.</summary>
    internal static void Check(int status, string function)
    {
        if (status != 0) throw new HipException((HipStatus)status, function, LastErrorMessage());
    }

    internal static unsafe string LastErrorMessage()
    {
        Span<byte> buffer = stackalloc byte[1024];
        fixed (byte* p = buffer)
        {
            int length = NativeMethods.arwkv_hip_last_error_message(p, buffer.Length);
            return Encoding.UTF8.GetString(buffer[..Math.Min(length, buffer.Length - 1)]);
        }
    }

    static unsafe string Utf8Z(byte* text, int capacity)
    {
        var span = new ReadOnlySpan<byte>(text, capacity);
        int end = span.IndexOf((byte)0);
        return Encoding.UTF8.GetString(end < 0 ? span : span[..end]);
    }

    static nint ResolveLibrary(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name == NativeMethods.LibraryName ? s_handle : 0;

    // ---- probing ------------------------------------------------------------------------------------------------

    /// <summary>Where libarwkv_hip.so is looked for, in order (see the class remarks).</summary>
    internal static List<string> LibraryCandidates()
    {
        var candidates = new List<string>();
        string? explicitPath = Environment.GetEnvironmentVariable(LibraryPathVariable);
        if (!string.IsNullOrWhiteSpace(explicitPath)) candidates.Add(Path.GetFullPath(explicitPath));
        candidates.Add(Path.Combine(AppContext.BaseDirectory, LibraryFileName));
        foreach (string start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
        {
            for (DirectoryInfo? dir = new(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "native", "hip", "build", LibraryFileName);
                if (!candidates.Contains(candidate)) candidates.Add(candidate);
            }
        }
        return candidates;
    }

    /// <summary>
    /// Loads the first existing candidate (else the bare name through the system search), checks its ABI version
    /// and that a device is present. Separate from the cached <see cref="TryLoad"/> so tests can probe paths.
    /// </summary>
    internal static bool TryLoadCore(IReadOnlyList<string> candidates, out string reason)
    {
        if (!OperatingSystem.IsLinux())
        {
            reason = $"{LibraryFileName} is only built for Linux (ROCm or CUDA); this is {RuntimeInformation.OSDescription}.";
            return false;
        }

        string? existing = candidates.FirstOrDefault(File.Exists);
        nint handle;
        string loadedFrom;
        if (existing != null)
        {
            try
            {
                handle = NativeLibrary.Load(existing);
                loadedFrom = existing;
            }
            catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
            {
                reason = $"{existing} exists but could not be loaded: {e.Message.Trim()} {DescribeRuntimes()}";
                return false;
            }
        }
        else if (NativeLibrary.TryLoad(LibraryFileName, out handle))
        {
            loadedFrom = LibraryFileName + " (system library path)";
        }
        else
        {
            reason = $"{LibraryFileName} was not found. Searched: {string.Join(", ", candidates)}, then the system " +
                     $"library path. Build it with `./build.sh native` (native/hip/build.sh) or set {LibraryPathVariable} " +
                     "to its path.";
            return false;
        }

        if (!NativeLibrary.TryGetExport(handle, "arwkv_hip_abi_version", out nint abiExport))
        {
            reason = $"{loadedFrom} is not libarwkv_hip: it has no arwkv_hip_abi_version export.";
            return false;
        }
        int abi;
        unsafe { abi = ((delegate* unmanaged<int>)abiExport)(); }
        if (abi != NativeMethods.AbiVersion)
        {
            reason = $"{loadedFrom} has C ABI version {abi} but Arwkv.Hip expects {NativeMethods.AbiVersion}: rebuild it " +
                     "with `./build.sh native` from the same checkout.";
            return false;
        }

        s_handle = handle;
        s_loadedPath = loadedFrom;
        if (NativeMethods.arwkv_hip_platform_id() == PlatformCpuExecutor &&
            Environment.GetEnvironmentVariable(AllowExecutorVariable) != "1")
        {
            reason = $"{loadedFrom} is the HIP-on-CPU executor (native/hip/build.sh --cpu), a testing tool that runs " +
                     $"kernels on the CPU, not a GPU backend; set {AllowExecutorVariable}=1 to use it on purpose.";
            return false;
        }
        int status = NativeMethods.arwkv_hip_device_count(out int count);
        if (status != 0 || count == 0)
        {
            reason = $"{LibraryFileName} loaded from {loadedFrom}, but no GPU device is available: " +
                     (status != 0 ? LastErrorMessage() : "the runtime reports 0 devices") +
                     ". Kernels need an AMD GPU with ROCm (or an NVIDIA GPU for the --cuda build).";
            return false;
        }
        reason = "";
        return true;
    }

    /// <summary>Says which GPU runtimes can be loaded, for the message when libarwkv_hip.so itself cannot be.</summary>
    static string DescribeRuntimes()
    {
        string? amd = AmdRuntimeNames.FirstOrDefault(CanLoad);
        string? cuda = CudaRuntimeNames.FirstOrDefault(CanLoad);
        if (amd == null && cuda == null)
            return "The GPU runtime is missing: neither the ROCm HIP runtime (libamdhip64.so) nor the CUDA runtime " +
                   "(libcudart.so) can be loaded; install ROCm (Debian: libamdhip64-5, pulled in by hipcc) or the CUDA " +
                   "toolkit, or add its lib folder to LD_LIBRARY_PATH.";
        return $"GPU runtimes that do load: {string.Join(", ", new[] { amd, cuda }.Where(n => n != null))}.";
    }

    static bool CanLoad(string name)
    {
        if (!NativeLibrary.TryLoad(name, out nint handle)) return false;
        NativeLibrary.Free(handle);
        return true;
    }
}

/// <summary>Orders of the HIP-on-CPU executor's schedule (see <see cref="HipRuntime.SetExecutorSchedule"/>).</summary>
public enum ExecutorOrder
{
    /// <summary>Threads and blocks in index order.</summary>
    Forward = 0,
    /// <summary>Threads and blocks in reverse index order.</summary>
    Reverse = 1,
    /// <summary>A permutation drawn from the seed, anew at every barrier.</summary>
    Shuffle = 2,
}
