using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Arwkv.Tests.Interop;

/// <summary>Runs the node-llama-cpp scripts in tests/interop/llamacpp (llama.cpp's prebuilt CPU build).</summary>
internal static class LlamaCppHarness
{
    public const string InstallCommand = "cd tests/interop/llamacpp && npm ci";

    /// <summary>The repository root: the first directory above the test assembly that holds Arwkv.sln.</summary>
    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Arwkv.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no Arwkv.sln above {AppContext.BaseDirectory}");
    }

    public static string Directory => Path.Combine(RepoRoot(), "tests", "interop", "llamacpp");

    /// <summary>
    /// Skips the test when node or node_modules is missing on a developer machine; on CI (CI set) a missing
    /// harness is a failure, since build.sh installs it.
    /// </summary>
    public static void RequireInstalled()
    {
        string problem = "";
        if (!System.IO.Directory.Exists(Path.Combine(Directory, "node_modules", "node-llama-cpp")))
            problem = $"node-llama-cpp is not installed ({InstallCommand})";
        else if (FindNode() is null)
            problem = "node is not on PATH";
        if (problem.Length == 0) return;
        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI"))) Assert.Fail(problem);
        Assert.Ignore(problem);
    }

    private static string? FindNode()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            string candidate = Path.Combine(dir, OperatingSystem.IsWindows() ? "node.exe" : "node");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>Runs a script of the harness; returns its standard output, failing the test on a non-zero exit.</summary>
    public static string RunScript(string script, params string[] args)
    {
        var psi = new ProcessStartInfo(FindNode() ?? "node")
        {
            WorkingDirectory = Directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(script);
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("node did not start");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"node {script} timed out; stderr:\n{stderr.Result}");
        }
        if (process.ExitCode != 0)
            Assert.Fail($"node {script} exited with {process.ExitCode}; stderr:\n{stderr.Result}\nstdout:\n{stdout.Result}");
        return stdout.Result;
    }

    /// <summary>llama.cpp's logits of every position of <paramref name="ids"/>, row-major [T, V].</summary>
    public static float[] Logits(string ggufPath, IReadOnlyList<int> ids, string outputPath, int vocabSize)
    {
        string stdout = RunScript("logits.mjs", ggufPath, string.Join(",", ids), outputPath);
        TestContext.Out.WriteLine("logits.mjs: " + stdout.Trim().Split('\n')[^1]);
        byte[] bytes = File.ReadAllBytes(outputPath);
        Assert.That(bytes.Length, Is.EqualTo(ids.Count * vocabSize * sizeof(float)), "logits file size (T x V float32)");
        return MemoryMarshal.Cast<byte, float>(bytes).ToArray();
    }
}
