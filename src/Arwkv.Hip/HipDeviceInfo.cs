namespace Arwkv.Hip;

/// <summary>What the GPU runtime reports about one device.</summary>
/// <param name="Name">Marketing name, e.g. "AMD Instinct MI300X".</param>
/// <param name="Architecture">Target name: "gfx942" on a MI300X, "sm_90" on an H100.</param>
/// <param name="TotalMemoryBytes">Device memory in bytes.</param>
/// <param name="MultiprocessorCount">Compute units (AMD) or streaming multiprocessors (NVIDIA).</param>
/// <param name="WarpSize">Threads per wavefront/warp: 64 on CDNA, 32 on NVIDIA.</param>
/// <param name="MaxThreadsPerBlock">Largest block the device accepts.</param>
/// <param name="MaxSharedMemoryPerBlock">Shared (LDS) memory per block in bytes.</param>
/// <param name="ComputeMajor">Major compute capability as the runtime reports it.</param>
/// <param name="ComputeMinor">Minor compute capability as the runtime reports it.</param>
public sealed record HipDeviceInfo(
    string Name,
    string Architecture,
    long TotalMemoryBytes,
    int MultiprocessorCount,
    int WarpSize,
    int MaxThreadsPerBlock,
    int MaxSharedMemoryPerBlock,
    int ComputeMajor,
    int ComputeMinor);
