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
        // On the AVX-512 BF16 path the activation is fused into the product (then MlpActivation records nothing).
        MatMul.GemmSwiGlu(Gate, Up, x, gate, up, rows, pool);
        ForwardProfile.Lap(ForwardPhase.MlpGateUp);
        ForwardProfile.Lap(ForwardPhase.MlpActivation);
        Projection.Apply(Down, gate, output, rows, pool);
        ForwardProfile.Lap(ForwardPhase.MlpDown);
    }
}
