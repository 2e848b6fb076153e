using Arwkv.Cli;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.Hip;

/// <summary>`arwkv ... --device hip` with the real loaders, on the device the kernel tests run on.</summary>
public class HipCliTests
{
    [SetUp]
    public void RequireGpu() => HipTestDevice.Require();

    static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, new CliHost(), output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public async Task Logits_OnHipAgreeWithCpuWithinBf16Rounding()
    {
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, seed: 31);
        string ids = "1,5,300,42,516,0,7";
        var (code, _, err) = await Run("logits", "--model", dir.Path, "--ids", ids, "--out", dir.File("cpu.npy"), "--device", "cpu", "--threads", "1");
        Assert.That(code, Is.Zero, err);
        (code, _, err) = await Run("logits", "--model", dir.Path, "--ids", ids, "--out", dir.File("hip.npy"), "--device", "hip");
        Assert.That(code, Is.Zero, err);

        (float[] cpu, long[] cpuShape) = Npy.ReadFloat32(dir.File("cpu.npy"));
        (float[] hip, long[] hipShape) = Npy.ReadFloat32(dir.File("hip.npy"));
        Assert.That(hipShape, Is.EqualTo(cpuShape));
        double diff = 0, norm = 0;
        for (int i = 0; i < cpu.Length; i++)
        {
            diff += (double)(hip[i] - cpu[i]) * (hip[i] - cpu[i]);
            norm += (double)cpu[i] * cpu[i];
        }
        double error = Math.Sqrt(diff / norm);
        TestContext.Out.WriteLine($"--device hip (bf16 matrices) vs cpu: relative L2 {error:E2}");
        // The CLI loads bf16 matrices on the device (HipModelOptions' default); see HipArwkvModelTests for the tolerance.
        Assert.That(error, Is.Not.NaN.And.LessThan(2e-2).And.GreaterThan(0));
    }

    [Test]
    public async Task Qwen2OnHip_IsAOneLineErrorPointingToTheCpu()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("config.json"), """{"model_type": "qwen2"}""");
        var (code, _, err) = await Run("logits", "--model", dir.Path, "--ids", "1", "--out", dir.File("a.npy"), "--device", "hip");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("is 'qwen2', which has no GPU model yet: use --device cpu"));
        Assert.That(err.TrimEnd().Split('\n'), Has.Length.EqualTo(1), err);
    }
}
