using System.Runtime.InteropServices;
using Arwkv.IO;
using Arwkv.Kernels;
using BenchmarkDotNet.Attributes;

namespace Arwkv.Benchmarks;

/// <summary>Random weights in unmanaged memory, as a memory-mapped checkpoint would hold them.</summary>
sealed unsafe class BenchMatrix : IDisposable
{
    public BenchMatrix(DType type, int rows, int cols, int seed = 1)
    {
        long count = (long)rows * cols;
        Memory = (nint)NativeMemory.AlignedAlloc((nuint)(count * type.SizeOf() + 64), 64);
        // ARWKV_BENCH_MISALIGN=N starts the matrix N bytes past a cache line, as the tensors of a safetensors file
        // whose data section is only 8-byte aligned are.
        _data = Memory + (int.TryParse(Environment.GetEnvironmentVariable("ARWKV_BENCH_MISALIGN"), out int skew) ? skew : 0);
        var random = new Random(seed);
        for (long i = 0; i < count; i++)
        {
            float v = (float)(random.NextDouble() * 2 - 1) * 0.05f;
            switch (type)
            {
                case DType.F32: ((float*)_data)[i] = v; break;
                case DType.F16: ((Half*)_data)[i] = (Half)v; break;
                default: ((ushort*)_data)[i] = Arwkv.Kernels.Convert.Float32ToBFloat16(v); break;
            }
        }
        Matrix = new WeightMatrix(_data, type, rows, cols);
    }

    readonly nint _data;

    public nint Memory { get; }
    public WeightMatrix Matrix { get; }

    public static float[] RandomVector(int n, int seed = 2)
    {
        var random = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(random.NextDouble() * 2 - 1);
        return v;
    }

    public void Dispose() => NativeMemory.AlignedFree((void*)Memory);
}

/// <summary>Decode: one token against the matrices of a Qwen2.5-0.5B-shaped ARWKV (and its lm_head).</summary>
[Config(typeof(KernelConfig))]
public class GemvBenchmarks
{
    BenchMatrix? _matrix;
    KernelThreadPool? _pool;
    float[] _x = [], _y = [];

    /// <summary>Rows x Cols (out x in).</summary>
    [Params("896x896", "4864x896", "896x4864", "151936x896")]
    public string Shape { get; set; } = "896x896";

    [Params(DType.BF16, DType.F32)]
    public DType Type { get; set; }

    [Params(2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var (rows, cols) = KernelConfig.ParseShape(Shape);
        _matrix = new BenchMatrix(Type, rows, cols);
        _x = BenchMatrix.RandomVector(cols);
        _y = new float[rows];
        _pool = new KernelThreadPool(Threads);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool?.Dispose();
        _matrix?.Dispose();
    }

    [Benchmark]
    public void Gemv() => MatMul.Gemv(_matrix!.Matrix, _x, _y, _pool);
}

/// <summary>Prefill: 128 tokens at once.</summary>
[Config(typeof(KernelConfig))]
public class GemmBenchmarks
{
    BenchMatrix? _matrix;
    KernelThreadPool? _pool;
    float[] _x = [], _y = [];

    [Params("4864x896", "896x896", "896x4864")]
    public string Shape { get; set; } = "896x896";

    [Params(DType.BF16)]
    public DType Type { get; set; }

    [Params(128)]
    public int Tokens { get; set; }

    [Params(2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var (rows, cols) = KernelConfig.ParseShape(Shape);
        _matrix = new BenchMatrix(Type, rows, cols);
        _x = BenchMatrix.RandomVector(cols * Tokens);
        _y = new float[rows * Tokens];
        _pool = new KernelThreadPool(Threads);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool?.Dispose();
        _matrix?.Dispose();
    }

    [Benchmark]
    public void Gemm() => MatMul.Gemm(_matrix!.Matrix, _x, _y, Tokens, _pool);
}

/// <summary>
/// The MLP's gate and up projections of a 128-token prefill with the SwiGLU between them: fused (one packing of X, the
/// activation applied per tile, one dispatch) against two Gemm calls and the separate activation pass.
/// </summary>
[Config(typeof(KernelConfig))]
public class SwiGluGemmBenchmarks
{
    BenchMatrix? _gate, _up;
    KernelThreadPool? _pool;
    float[] _x = [], _y = [], _upOut = [];

    [Params("4864x896")]
    public string Shape { get; set; } = "4864x896";

    [Params(DType.BF16)]
    public DType Type { get; set; }

    [Params(128)]
    public int Tokens { get; set; }

    [Params(2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var (rows, cols) = KernelConfig.ParseShape(Shape);
        _gate = new BenchMatrix(Type, rows, cols, seed: 1);
        _up = new BenchMatrix(Type, rows, cols, seed: 2);
        _x = BenchMatrix.RandomVector(cols * Tokens);
        _y = new float[rows * Tokens];
        _upOut = new float[rows * Tokens];
        _pool = new KernelThreadPool(Threads);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool?.Dispose();
        _gate?.Dispose();
        _up?.Dispose();
    }

    [Benchmark(Baseline = true)]
    public void Separate()
    {
        MatMul.Gemm(_gate!.Matrix, _x, _y, Tokens, _pool);
        MatMul.Gemm(_up!.Matrix, _x, _upOut, Tokens, _pool);
        MatMul.SwiGlu(_y, _upOut, _pool);
    }

    [Benchmark]
    public void Fused() => MatMul.GemmSwiGlu(_gate!.Matrix, _up!.Matrix, _x, _y, _upOut, Tokens, _pool);
}

/// <summary>float32 &lt;-&gt; bfloat16 conversion of one 4864x896 matrix worth of elements.</summary>
[Config(typeof(KernelConfig))]
public class ConvertBenchmarks
{
    const int Count = 4864 * 896;
    readonly float[] _floats = BenchMatrix.RandomVector(Count);
    readonly ushort[] _bf16 = new ushort[Count];
    readonly float[] _widened = new float[Count];

    [GlobalSetup]
    public void Setup() => Arwkv.Kernels.Convert.Float32ToBFloat16(_floats, _bf16);

    [Benchmark]
    public void BFloat16ToFloat32() => Arwkv.Kernels.Convert.BFloat16ToFloat32(_bf16, _widened);

    [Benchmark]
    public void Float32ToBFloat16() => Arwkv.Kernels.Convert.Float32ToBFloat16(_floats, _bf16);
}

/// <summary>The load-time NaN/Inf check over one matrix: the embedding (and lm_head) shape of Qwen2.5-0.5B, larger
/// than any L3, so the figure is the scan's share of memory bandwidth, which is what a 7B checkpoint's load pays.</summary>
[Config(typeof(KernelConfig))]
public class NonFiniteScanBenchmarks
{
    BenchMatrix? _matrix;

    /// <summary>Rows x Cols.</summary>
    [Params("151936x896")]
    public string Shape { get; set; } = "151936x896";

    [Params(DType.BF16, DType.F32)]
    public DType Type { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var (rows, cols) = KernelConfig.ParseShape(Shape);
        _matrix = new BenchMatrix(Type, rows, cols);
    }

    [GlobalCleanup]
    public void Cleanup() => _matrix?.Dispose();

    [Benchmark]
    public long Scan() => NonFiniteScan.FirstNonFinite(_matrix!.Matrix.Data, Type, (long)_matrix.Matrix.Rows * _matrix.Matrix.Cols);
}
