using System.Numerics.Tensors;
using Arwkv.Diagnostics;
using Arwkv.Kernels;

namespace Arwkv.Layers;

/// <summary>Qwen2's MLP: down(silu(gate(x)) * up(x)), no biases.</summary>
internal sealed unsafe class SwiGluMlp
{
    public SwiGluMlp(WeightMatrix gate, WeightMatrix up, WeightMatrix down)
    {
        Gate = gate;
        Up = up;
        Down = down;
    }

    public WeightMatrix Gate { get; }
    public WeightMatrix Up { get; }
    public WeightMatrix Down { get; }

    /// <summary>
    /// output[rows, C] = MLP(x[rows, C]). <paramref name="gateBuffer"/> and <paramref name="upBuffer"/> hold
    /// rows x F floats of scratch.
    /// </summary>
    public void Forward(ReadOnlySpan<float> x, Span<float> output, int rows, Span<float> gateBuffer, Span<float> upBuffer, KernelThreadPool pool)
    {
        int n = rows * Gate.Rows;
        Span<float> gate = gateBuffer[..n], up = upBuffer[..n];
        Projection.Apply(Gate, x, gate, rows, pool);
        Projection.Apply(Up, x, up, rows, pool);
        ForwardProfile.Lap(ForwardPhase.MlpGateUp);
        // silu(g) * u = g * u * sigmoid(g), computed in place to need no third buffer; split into one range per thread
        // (rows x F floats is megabytes in a prefill, milliseconds single-threaded).
        int parts = rows > 1 ? pool.ThreadCount : 1;
        fixed (float* g = gate)
        fixed (float* u = up)
        {
            var work = new ActivationWork { Gate = g, Up = u, Length = n, Parts = parts };
            if (parts == 1) work.Execute(0);
            else pool.Run(ref work, parts);
        }
        ForwardProfile.Lap(ForwardPhase.MlpActivation);
        Projection.Apply(Down, gate, output, rows, pool);
        ForwardProfile.Lap(ForwardPhase.MlpDown);
    }

    private struct ActivationWork : IParallelWork
    {
        public float* Gate, Up;
        public int Length, Parts;

        public readonly void Execute(int index)
        {
            int start = (int)((long)Length * index / Parts), end = (int)((long)Length * (index + 1) / Parts);
            var gate = new Span<float>(Gate + start, end - start);
            var up = new Span<float>(Up + start, end - start);
            TensorPrimitives.Multiply(gate, up, up);
            TensorPrimitives.Sigmoid(gate, gate);
            TensorPrimitives.Multiply(gate, up, gate);
        }
    }
}
