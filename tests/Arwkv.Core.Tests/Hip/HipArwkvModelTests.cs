using Arwkv.Generation;
using Arwkv.Hip;
using Arwkv.IO;
using Arwkv.Tests.Model;
using Arwkv.Tests.TestModels;

namespace Arwkv.Tests.Hip;

/// <summary>
/// <see cref="HipArwkvModel"/> against the CPU <see cref="ArwkvModel"/> on small random checkpoints (C = 128, 2 heads,
/// 3 layers, V = 517): prefill, token-by-token decode and states handed between the devices mid-sequence.
/// Tolerances (relative L2 over all the logits compared): 1e-5 where the GPU holds the same weights as the CPU
/// (float32 matrices, or a BF16 checkpoint copied bit for bit), since both then compute in float32 and differ only in
/// summation order (measured 7e-7 to 1.1e-6); 2e-2 where an F32 checkpoint is rounded to bf16 on the device, since every
/// weight then carries up to 2^-9 relative error (measured 7e-3).
/// </summary>
public class HipArwkvModelTests
{
    const double SameWeights = 1e-5;
    const double Bf16Weights = 2e-2;

    [SetUp]
    public void RequireGpu() => HipTestDevice.Require();

    static HipArwkvModel LoadGpu(string dir, DType matrixType = DType.F32, int chunk = 8, ForwardMode mode = ForwardMode.Prefill) =>
        HipArwkvModel.Load(dir, new HipModelOptions { MatrixType = matrixType, PrefillChunk = chunk, Mode = mode });

    static ArwkvModel LoadCpu(string dir) => ArwkvModel.Load(dir, new ModelOptions { Threads = 1 });

    static float[] AllLogits(LanguageModel model, int[] tokens, ModelState state)
    {
        var logits = new float[tokens.Length * model.VocabSize];
        model.Forward(tokens, state, logits, LogitsScope.All);
        return logits;
    }

    /// <summary>Feeds the tokens one Forward call each, collecting every step's last-token logits.</summary>
    static float[] DecodeLogits(LanguageModel model, int[] tokens, ModelState state)
    {
        int V = model.VocabSize;
        var logits = new float[tokens.Length * V];
        for (int t = 0; t < tokens.Length; t++) model.Forward(tokens.AsSpan(t, 1), state, logits.AsSpan(t * V, V), LogitsScope.Last);
        return logits;
    }

    static double RelativeL2(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        double diff = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            diff += ((double)actual[i] - expected[i]) * ((double)actual[i] - expected[i]);
            norm += (double)expected[i] * expected[i];
        }
        return Math.Sqrt(diff / norm);
    }

    static void AssertClose(float[] gpu, float[] cpu, double tolerance, string what)
    {
        double error = RelativeL2(gpu, cpu);
        TestContext.Out.WriteLine($"{what}: relative L2 {error:E2}");
        // NUnit orders NaN below every number: without the NaN check, garbage logits would pass.
        Assert.That(error, Is.Not.NaN.And.LessThan(tolerance), what);
    }

    [TestCase(true, false)]
    [TestCase(false, true)]
    public void Prefill_AllLogitsEqualTheCpuModel(bool gated, bool tied)
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig(gated, tied);
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 21);
        // 19 tokens in chunks of 8: two full chunks and a partial one, so the state crosses chunk boundaries.
        int[] tokens = ArwkvModelTests.Tokens(19, config.VocabSize, seed: 3);
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path);

        float[] expected = AllLogits(cpu, tokens, cpu.CreateState());
        var state = gpu.CreateState();
        AssertClose(AllLogits(gpu, tokens, state), expected, SameWeights, $"prefill gated={gated} tied={tied}");
        Assert.That(state.Position, Is.EqualTo(tokens.Length));
    }

    [Test]
    public void Decode_TokenByTokenEqualsTheCpuModel()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 22);
        int[] tokens = ArwkvModelTests.Tokens(6, config.VocabSize, seed: 4);
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path);

        float[] expected = AllLogits(cpu, tokens, cpu.CreateState());
        AssertClose(DecodeLogits(gpu, tokens, gpu.CreateState()), expected, SameWeights, "decode");
    }

    [Test]
    public void RecurrentMode_RunsEveryTokenThroughTheDecodePathAndEqualsTheCpuModel()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig(gated: false);
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 23);
        int[] tokens = ArwkvModelTests.Tokens(5, config.VocabSize, seed: 5);
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path, mode: ForwardMode.Recurrent);

        Assert.That(gpu.PrefillChunk, Is.EqualTo(1));
        AssertClose(AllLogits(gpu, tokens, gpu.CreateState()), AllLogits(cpu, tokens, cpu.CreateState()), SameWeights, "recurrent");
    }

    [Test]
    public void StateHandedCpuToGpuAndBack_ContinuesTheSequenceExactly()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 24);
        int[] tokens = ArwkvModelTests.Tokens(15, config.VocabSize, seed: 6);
        int[] first = tokens[..5], second = tokens[5..10], third = tokens[10..];
        int V = config.VocabSize;
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path);
        float[] expected = AllLogits(cpu, tokens, cpu.CreateState());

        // CPU prefill -> GPU (prefill of the middle part) -> saved in the CPU format -> CPU decode of the rest.
        var cpuState = (ArwkvState)cpu.CreateState();
        AllLogits(cpu, first, cpuState);
        using HipArwkvState gpuState = gpu.ToDevice(cpuState);
        Assert.That(gpuState.Position, Is.EqualTo(first.Length));
        float[] middle = AllLogits(gpu, second, gpuState);
        var saved = new MemoryStream();
        gpuState.Save(saved);
        saved.Position = 0;
        ArwkvState resumed = cpu.LoadState(saved);
        Assert.That(resumed.Position, Is.EqualTo(first.Length + second.Length));
        float[] last = DecodeLogits(cpu, third, resumed);

        AssertClose(middle, expected[(first.Length * V)..((first.Length + second.Length) * V)], SameWeights, "GPU after a CPU state");
        AssertClose(last, expected[((first.Length + second.Length) * V)..], SameWeights, "CPU after a GPU state");
    }

    [Test]
    public void StateHandedGpuToCpuAndBack_ContinuesTheSequenceExactly()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 25);
        int[] tokens = ArwkvModelTests.Tokens(12, config.VocabSize, seed: 7);
        int[] first = tokens[..6], second = tokens[6..9], third = tokens[9..];
        int V = config.VocabSize;
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path);
        float[] expected = AllLogits(cpu, tokens, cpu.CreateState());

        // GPU prefill -> ToHost -> CPU decode -> CopyFrom into a GPU state -> GPU decode.
        using var gpuState = (HipArwkvState)gpu.CreateState();
        AllLogits(gpu, first, gpuState);
        ArwkvState host = gpuState.ToHost();
        float[] middle = DecodeLogits(cpu, second, host);
        using var back = (HipArwkvState)gpu.CreateState();
        back.CopyFrom(host);
        float[] last = DecodeLogits(gpu, third, back);

        AssertClose(middle, expected[(first.Length * V)..((first.Length + second.Length) * V)], SameWeights, "CPU after a GPU state");
        AssertClose(last, expected[((first.Length + second.Length) * V)..], SameWeights, "GPU after a CPU state");
        Assert.That(back.Position, Is.EqualTo(tokens.Length));
    }

    [Test]
    public void F32CheckpointWithBf16Matrices_StaysWithinBf16RoundingOfTheCpuModel()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 26);
        int[] tokens = ArwkvModelTests.Tokens(10, config.VocabSize, seed: 8);
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path, DType.BF16);

        Assert.That(gpu.MatrixType, Is.EqualTo(DType.BF16));
        float[] expected = AllLogits(cpu, tokens, cpu.CreateState());
        double error = RelativeL2(AllLogits(gpu, tokens, gpu.CreateState()), expected);
        TestContext.Out.WriteLine($"bf16 matrices from an F32 checkpoint: relative L2 {error:E2}");
        Assert.That(error, Is.Not.NaN.And.LessThan(Bf16Weights));
        // The matrices really are rounded: a float32 upload would be a hundred times closer.
        Assert.That(error, Is.GreaterThan(SameWeights));
    }

    [Test]
    public void Bf16Checkpoint_IsUploadedBitForBitAndEqualsTheCpuModel()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 27, type: DType.BF16);
        int[] tokens = ArwkvModelTests.Tokens(10, config.VocabSize, seed: 9);
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path, DType.BF16);

        AssertClose(AllLogits(gpu, tokens, gpu.CreateState()), AllLogits(cpu, tokens, cpu.CreateState()), SameWeights, "BF16 checkpoint");
    }

    [Test]
    public async Task TextGenerator_GreedyTokensEqualTheCpuModels()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 32);
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path);
        var options = new GenerationOptions { MaxTokens = 5, StopTokenIds = [], Sampling = SamplingOptions.Greedy };

        async Task<List<int>> Generate(LanguageModel model)
        {
            var ids = new List<int>();
            await foreach (GeneratedToken token in new TextGenerator(model).GenerateAsync([3, 14, 15], options)) ids.Add(token.Id);
            return ids;
        }

        List<int> expected = await Generate(cpu);
        Assert.That(await Generate(gpu), Is.EqualTo(expected));
        Assert.That(expected.Distinct().Count(), Is.GreaterThan(1), "a sequence that depends on the state");
    }

    [Test]
    public void Decode_AllocatesNothingPerToken()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 28);
        using var gpu = LoadGpu(dir.Path);
        var state = gpu.CreateState();
        var logits = new float[config.VocabSize];
        int[] token = [5];
        gpu.Forward(token, state, logits);   // first use: the lerp views for one row are made here

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 3; i++) gpu.Forward(token, state, logits);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(allocated, Is.Zero, "bytes allocated by three decode steps");
    }

    [Test]
    public void CpuStateIsRejectedWithTheWayToMoveIt()
    {
        using var dir = new TempDirectory();
        var config = RandomArwkvCheckpoint.SmallConfig();
        RandomArwkvCheckpoint.Create(dir.Path, config, seed: 29);
        using var cpu = LoadCpu(dir.Path);
        using var gpu = LoadGpu(dir.Path);
        var ex = Assert.Throws<ArgumentException>(() => gpu.Forward([1], cpu.CreateState(), new float[config.VocabSize]));
        Assert.That(ex!.Message, Does.Contain("ToDevice"));
    }

    [Test]
    public void OutOfDeviceMemoryAtLoad_IsAnExceptionNamingTheBuffer()
    {
        // A prefill chunk whose activations cannot fit (hundreds of GB) fails with the buffer's name and size, not a
        // crash; the same directory then loads with a chunk that fits.
        using var dir = new TempDirectory();
        RandomArwkvCheckpoint.Create(dir.Path, RandomArwkvCheckpoint.SmallConfig(), seed: 30);
        var load = Assert.Throws<HipException>(() => HipArwkvModel.Load(dir.Path, new HipModelOptions { PrefillChunk = 1 << 25 }));
        TestContext.Out.WriteLine(load!.Message);
        Assert.That(load.Message, Does.Match(@"could not allocate activation .* \[33554432, \d+\] \(.*, \d+ bytes\)"));
        using var model = LoadGpu(dir.Path);
        Assert.That(model.VocabSize, Is.EqualTo(517));
    }
}
