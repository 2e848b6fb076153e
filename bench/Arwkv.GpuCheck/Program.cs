using System.Diagnostics;
using System.Text.Json;
using Arwkv.GpuCheck;
using Arwkv.Hip;

// arwkv-gpu-check: what native/hip/gpu-check.sh runs on a GPU machine (no .NET SDK there, so a self-contained publish
// of this travels with the tree). It runs the HIP tests of Arwkv.Core.Tests through NUnit's engine, times the
// kernels, and writes everything to one JSON file. Usage:
//   arwkv-gpu-check --out FILE.json [--filter REGEX] [--no-tests] [--no-timing] [--quick]
// --filter picks test classes by full name (default ^Arwkv\.Tests\.Hip\.); --quick times toy shapes (for a dry run
// on the HIP-on-CPU executor, whose timings mean nothing and are marked so).

string? outPath = null;
string filter = @"^Arwkv\.Tests\.Hip\.";
bool runTests = true, runTiming = true, quick = false;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--out" when i + 1 < args.Length: outPath = args[++i]; break;
        case "--filter" when i + 1 < args.Length: filter = args[++i]; break;
        case "--no-tests": runTests = false; break;
        case "--no-timing": runTiming = false; break;
        case "--quick": quick = true; break;
        default:
            Console.Error.WriteLine($"arwkv-gpu-check: unknown argument '{args[i]}' (usage: --out FILE.json [--filter REGEX] [--no-tests] [--no-timing] [--quick])");
            return 2;
    }
}
if (outPath is null)
{
    Console.Error.WriteLine("arwkv-gpu-check: --out FILE.json is required");
    return 2;
}

var started = DateTime.UtcNow;
var total = Stopwatch.StartNew();
using var stream = new MemoryStream();
using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
{
    json.WriteStartObject();
    json.WriteString("started_utc", started.ToString("O"));
    json.WriteString("host_cpu", HostCpu());
    bool loaded = HipRuntime.TryLoad(out string reason);
    json.WriteBoolean("library_loaded", loaded);
    if (!loaded) json.WriteString("library_error", reason);
    bool executor = false;
    if (loaded)
    {
        HipDeviceInfo info = HipRuntime.GetDeviceInfo();
        executor = HipRuntime.IsCpuExecutor;
        json.WriteString("library", HipRuntime.LoadedLibraryPath);
        json.WriteStartObject("device");
        json.WriteString("name", info.Name);
        json.WriteString("architecture", info.Architecture);
        json.WriteNumber("memory_bytes", info.TotalMemoryBytes);
        json.WriteNumber("multiprocessors", info.MultiprocessorCount);
        json.WriteNumber("warp_size", info.WarpSize);
        json.WriteBoolean("cpu_executor", executor);
        json.WriteBoolean("vendor_blas", HipRuntime.HasVendorBlas);
        json.WriteEndObject();
        Console.WriteLine($"device: {info.Name} ({info.Architecture}, {info.TotalMemoryBytes / (1L << 30)} GiB, warp {info.WarpSize})" +
                          (executor ? " -- the HIP-on-CPU executor: timings below mean nothing" : ""));
    }

    int failed = 0;
    if (runTests)
    {
        Console.WriteLine($"tests: classes matching {filter}");
        failed = KernelTestRun.Run(json, filter);
    }
    if (runTiming && loaded)
    {
        json.WriteBoolean("timings_meaningful", !executor);
        KernelTimings.Run(json, quick);
    }
    json.WriteNumber("seconds", total.Elapsed.TotalSeconds);
    json.WriteEndObject();
    json.Flush();
    File.WriteAllBytes(outPath, stream.ToArray());
    Console.WriteLine($"wrote {outPath} ({total.Elapsed.TotalSeconds:F0} s)");
    return failed == 0 && (loaded || !runTiming) ? 0 : 1;
}

static string HostCpu()
{
    try
    {
        foreach (string line in File.ReadLines("/proc/cpuinfo"))
            if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
    }
    catch (IOException)
    {
    }
    return "unknown";
}
