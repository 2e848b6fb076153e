using Arwkv.Generation;
using Arwkv.Kernels;
using Arwkv.Layers;
using BenchmarkDotNet.Attributes;

namespace Arwkv.Benchmarks;

/// <summary>
/// One WKV7 recurrence step for every head of a layer (the decode path's main non-GEMV cost): 14 heads for
/// Qwen2.5-0.5B's width, 56 for ARWKV-7B's. Vectorized (the widest path here) against the scalar path.
/// </summary>
[Config(typeof(KernelConfig))]
public class Wkv7StepBenchmarks
{
    const int N = 64;
    float[] _state = [], _r = [], _w = [], _k = [], _v = [], _kk = [], _a = [], _rk = [], _y = [];

    [Params(14, 56)]
    public int Heads { get; set; }

    [Params(true, false)]
    public bool Vectorized { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        int c = Heads * N;
        _state = BenchMatrix.RandomVector(Heads * N * N, 3);
        _r = BenchMatrix.RandomVector(c, 4);
        _w = BenchMatrix.RandomVector(c, 5).Select(x => 0.6f + 0.3f * Math.Abs(x)).ToArray();
        _k = BenchMatrix.RandomVector(c, 6);
        _v = BenchMatrix.RandomVector(c, 7);
        _kk = BenchMatrix.RandomVector(c, 8);
        _a = BenchMatrix.RandomVector(c, 9).Select(Math.Abs).ToArray();
        _rk = BenchMatrix.RandomVector(c, 10);
        _y = new float[c];
    }

    [Benchmark]
    public void Step()
    {
        for (int h = 0; h < Heads; h++)
        {
            int o = h * N;
            Wkv7.Step(_state.AsSpan(h * N * N, N * N), _r.AsSpan(o, N), _w.AsSpan(o, N), _k.AsSpan(o, N), _v.AsSpan(o, N),
                _kk.AsSpan(o, N), _a.AsSpan(o, N), _rk.AsSpan(o, N), _y.AsSpan(o, N), Vectorized ? MatMul.Isa : KernelIsa.Scalar);
        }
    }
}

/// <summary>RMSNorm of one token (decode) and of a 128-token prefill chunk, at 0.5B and 7B widths.</summary>
[Config(typeof(KernelConfig))]
public class RmsNormBenchmarks
{
    float[] _x = [], _w = [], _y = [];

    [Params(896, 3584)]
    public int Width { get; set; }

    [Params(1, 128)]
    public int Rows { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _x = BenchMatrix.RandomVector(Width * Rows, 11);
        _w = BenchMatrix.RandomVector(Width, 12);
        _y = new float[Width * Rows];
    }

    [Benchmark]
    public void Apply() => RmsNorm.Apply(_x, _w, 1e-6f, _y, Rows);
}

/// <summary>
/// Choosing the next token from a full Qwen vocabulary of logits: greedy, and Qwen2.5's recommended sampling
/// (repetition penalty 1.05 over 64 previous tokens, top-k 20, temperature 0.7, top-p 0.8).
/// </summary>
[Config(typeof(KernelConfig))]
public class SamplingBenchmarks
{
    Sampler? _sampler;
    float[] _logits = [];
    int[] _previous = [];

    [Params("greedy", "recommended")]
    public string Mode { get; set; } = "greedy";

    [GlobalSetup]
    public void Setup()
    {
        _logits = BenchMatrix.RandomVector(151936, 13).Select(x => 4 * x).ToArray();
        _previous = Enumerable.Range(0, 64).Select(i => i * 997 % 151936).ToArray();
        _sampler = new Sampler(_logits.Length, Mode == "greedy" ? SamplingOptions.Greedy : SamplingOptions.Recommended with { Seed = 1 });
    }

    [Benchmark]
    public int Sample() => _sampler!.Sample(_logits, _previous);
}
