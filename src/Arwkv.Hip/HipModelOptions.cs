using Arwkv.IO;

namespace Arwkv.Hip;

/// <summary>Options for loading a model onto the GPU (<see cref="HipArwkvModel.Load"/>).</summary>
public sealed record HipModelOptions
{
    /// <summary>
    /// Element type of the large matrices on the device: the embedding, the r/k/v/output projections, the MLP and the
    /// lm_head. <see cref="DType.BF16"/> (the default) halves their memory and is what the GEMM kernel's bf16 path
    /// reads; a BF16 checkpoint is copied bit for bit, an F32 or F16 one is rounded to nearest even.
    /// <see cref="DType.F32"/> keeps F32 checkpoints exact (and widens BF16/F16 ones exactly), at twice the memory.
    /// Norm weights, the time-mix vectors, the LoRAs and the WKV state are float32 whatever this says.
    /// </summary>
    public DType MatrixType { get; init; } = DType.BF16;

    /// <summary>How multi-token inputs run: all tokens of a chunk at once, or one at a time with the decode kernels.</summary>
    public ForwardMode Mode { get; init; } = ForwardMode.Prefill;

    /// <summary>Tokens per prefill chunk: bounds the activation buffers ([chunk, intermediate] floats and [chunk, vocab] logits).</summary>
    public int PrefillChunk { get; init; } = 512;

    /// <summary>The GPU to run on.</summary>
    public int Device { get; init; }
}
