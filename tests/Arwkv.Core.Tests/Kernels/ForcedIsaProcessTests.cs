using System.Diagnostics;
using Arwkv.Kernels;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.Kernels;

/// <summary>
/// The in-process ForceIsa tests cover every path's arithmetic; this proves that the runtime's own switches, as a
/// user or CI machine would set them, select the narrower path and that a whole model runs on it. .NET 10 reads
/// DOTNET_EnableAVX512 (DOTNET_EnableAVX512F is ignored) and DOTNET_EnableAVX2, which also turns off FMA.
/// </summary>
internal class ForcedIsaProcessTests
{
    [TestCase("DOTNET_EnableAVX512", KernelIsa.Vector256)]
    [TestCase("DOTNET_EnableAVX2", KernelIsa.Vector128)]
    public void RuntimeSwitch_SelectsTheNarrowerPath_AndTheModelRuns(string variable, KernelIsa expected)
    {
        Assume.That(expected < MatMul.DetectedIsa, $"this CPU's widest path is {MatMul.DetectedIsa} already");
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, RandomArwkvCheckpoint.SmallConfig(), seed: 3, type: Arwkv.IO.DType.BF16);

        string dll = Path.Combine(TestContext.CurrentContext.TestDirectory, "arwkv.dll");
        var info = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string a in new[] { dll, "bench", "--model", dir.Path, "--prompt-tokens", "24", "--new-tokens", "4", "--threads", "2" })
            info.ArgumentList.Add(a);
        info.Environment[variable] = "0";
        using var process = Process.Start(info)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(), stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("arwkv bench did not finish within 60 s");
        }
        string err = stderr.Result;
        Assert.That(process.ExitCode, Is.EqualTo(0), err);
        Assert.That(err, Does.Contain($"kernels {expected}"));
        Assert.That(stdout.Result, Does.Contain("\"decode_tokens_per_s\""));
    }
}
