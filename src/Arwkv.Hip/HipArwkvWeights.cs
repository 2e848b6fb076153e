using Arwkv.IO;
using Arwkv.Kernels;
using Arwkv.Layers;

namespace Arwkv.Hip;

/// <summary>
/// Device copies of weights, each allocation named after its tensor (so running out of device memory says which one
/// did not fit) and remembered for disposal. Matrices go up in the model's matrix type, everything else in float32.
/// </summary>
internal sealed class HipWeightUploader(DType matrixType, HipStream stream) : IDisposable
{
    // Conversions go through host staging of about 16 MB, so an F32 lm_head of 2 GB is never widened all at once.
    const int StagingElements = 1 << 22;

    readonly List<HipBuffer> _owned = [];
    float[]? _wide;
    ushort[]? _narrow;

    public DType MatrixType { get; } = matrixType;

    /// <summary>Everything allocated so far, in order (the model disposes them).</summary>
    public IReadOnlyList<HipBuffer> Owned => _owned;

    /// <summary>A device buffer named <paramref name="name"/>, owned by the model.</summary>
    public HipBuffer Allocate(long bytes, string name)
    {
        var buffer = HipBuffer.Allocate(bytes, name);
        _owned.Add(buffer);
        return buffer;
    }

    /// <summary>[count] float32 values.</summary>
    public HipBuffer Floats(ReadOnlySpan<float> values, string name)
    {
        HipBuffer buffer = Allocate((long)Math.Max(values.Length, 1) * sizeof(float), name);
        buffer.Upload(values, stream);
        return buffer;
    }

    /// <summary>
    /// A [rows, cols] matrix in <see cref="MatrixType"/>: copied as it is when the host already holds that type,
    /// otherwise widened to float32 (exact) and, for BF16, rounded to nearest even, a slab of rows at a time.
    /// </summary>
    public HipBuffer Matrix(WeightMatrix w, string name) => Matrix(w, MatrixType, name);

    /// <summary>As <see cref="Matrix(WeightMatrix, string)"/>, in <paramref name="type"/> (F32 or BF16).</summary>
    public unsafe HipBuffer Matrix(WeightMatrix w, DType type, string name)
    {
        if (type is not (DType.F32 or DType.BF16)) throw new ArgumentException($"the GPU kernels take F32 or BF16 matrices, not {type}", nameof(type));
        long count = (long)w.Rows * w.Cols;
        HipBuffer buffer = Allocate(count * type.SizeOf(), $"{name} ({type} [{w.Rows}, {w.Cols}])");
        if (w.Type == type)
        {
            buffer.Upload(0, (void*)w.Data, w.ByteLength, stream);
            return buffer;
        }
        int slabRows = Math.Max(1, StagingElements / w.Cols);
        _wide ??= new float[Math.Max(StagingElements, w.Cols)];
        if (_wide.Length < (long)slabRows * w.Cols) _wide = new float[slabRows * w.Cols];
        for (int row = 0; row < w.Rows; row += slabRows)
        {
            int rows = Math.Min(slabRows, w.Rows - row), n = rows * w.Cols;
            Span<float> wide = _wide.AsSpan(0, n);
            Kernels.Convert.ToFloat32(w.RowPointer(row), w.Type, wide);
            if (type == DType.F32)
            {
                fixed (float* p = wide) buffer.Upload((long)row * w.Cols * sizeof(float), p, (long)n * sizeof(float), stream);
            }
            else
            {
                if (_narrow is null || _narrow.Length < n) _narrow = new ushort[_wide.Length];
                Span<ushort> narrow = _narrow.AsSpan(0, n);
                Kernels.Convert.Float32ToBFloat16(wide, narrow);
                fixed (ushort* p = narrow) buffer.Upload((long)row * w.Cols * sizeof(ushort), p, (long)n * sizeof(ushort), stream);
            }
        }
        return buffer;
    }

    /// <summary>Frees everything allocated (on a failed load; a loaded model frees them itself).</summary>
    public void Dispose()
    {
        foreach (HipBuffer buffer in _owned) buffer.Dispose();
        _owned.Clear();
    }
}

/// <summary>A LoRA x A B on the device: Down = A^T [rank, C] as the CPU keeps it (BF16 when stored BF16, else float32), Up = B [rank, C] float32.</summary>
internal sealed class HipLora(HipBuffer down, DType downType, HipBuffer up, int rank)
{
    public HipBuffer Down { get; } = down;
    public DType DownType { get; } = downType;
    public HipBuffer Up { get; } = up;
    public int Rank { get; } = rank;

    public static HipLora Upload(LoraWeights lora, HipWeightUploader uploader, string name) =>
        // The down matrix is small and already exact in its type: it keeps that type rather than the model's matrix type.
        new(uploader.Matrix(lora.Down, lora.Down.Type, name + " down (A^T)"), lora.Down.Type,
            uploader.Floats(lora.Up, name + " up (B)"), lora.Rank);
}

/// <summary>
/// One ARWKV layer on the device (llm.c's ParameterTensors, per layer). Shapes: C hidden, F intermediate, H heads.
/// Matrices are in the model's matrix type; every vector is float32.
/// </summary>
internal sealed class HipArwkvLayer
{
    public HipArwkvLayer(ArwkvLayer layer, int index, HipWeightUploader up)
    {
        RwkvTimeMix tm = layer.TimeMix;
        int C = tm.Hidden;
        string Name(string tensor) => $"layer {index} {tensor}";
        InputNorm = up.Floats(layer.InputNorm, Name("input_layernorm"));
        PostNorm = up.Floats(layer.PostNorm, Name("post_attention_layernorm"));
        // The lerp kernel takes the six mix vectors stacked in the order x_r, x_w, x_k, x_v, x_a, x_g. A gated
        // checkpoint without x_g mixes nothing into the gate's input (x_g = 0: x itself), as the CPU model does.
        var lerp = new float[6 * C];
        float[]?[] mixes = [tm.XR, tm.XW, tm.XK, tm.XV, tm.XA, tm.XG];
        for (int i = 0; i < 6; i++) mixes[i]?.CopyTo(lerp, i * C);
        Lerp = up.Floats(lerp, Name("time_mixer x_r..x_g"));
        W0 = up.Floats(tm.W0, Name("time_mixer.w0"));
        A0 = up.Floats(tm.A0, Name("time_mixer.a0"));
        V0 = tm.ValueLora is null ? null : up.Floats(tm.V0!, Name("time_mixer.v0"));
        KK = up.Floats(tm.KK, Name("time_mixer.k_k"));
        KA = up.Floats(tm.KA, Name("time_mixer.k_a"));
        RK = up.Floats(tm.RK, Name("time_mixer.r_k"));
        Receptance = up.Matrix(tm.Receptance, Name("time_mixer.receptance.weight"));
        Key = up.Matrix(tm.Key, Name("time_mixer.key.weight"));
        Value = up.Matrix(tm.Value, Name("time_mixer.value.weight"));
        Output = up.Matrix(tm.Output, Name("time_mixer.output.weight"));
        DecayLora = HipLora.Upload(tm.DecayLora, up, Name("time_mixer w1/w2"));
        IclrLora = HipLora.Upload(tm.IclrLora, up, Name("time_mixer a1/a2"));
        ValueLora = tm.ValueLora is null ? null : HipLora.Upload(tm.ValueLora, up, Name("time_mixer v1/v2"));
        GateLora = tm.GateLora is null ? null : HipLora.Upload(tm.GateLora, up, Name("time_mixer g1/g2"));
        MlpGate = up.Matrix(layer.Mlp.Gate, Name("mlp.gate_proj.weight"));
        MlpUp = up.Matrix(layer.Mlp.Up, Name("mlp.up_proj.weight"));
        MlpDown = up.Matrix(layer.Mlp.Down, Name("mlp.down_proj.weight"));
    }

    /// <summary>[C] each.</summary>
    public HipBuffer InputNorm { get; }
    public HipBuffer PostNorm { get; }
    /// <summary>[6, C]: x_r, x_w, x_k, x_v, x_a, x_g.</summary>
    public HipBuffer Lerp { get; }
    /// <summary>[C] each; V0 is null where there is no value residual (layer 0).</summary>
    public HipBuffer W0 { get; }
    public HipBuffer A0 { get; }
    public HipBuffer? V0 { get; }
    public HipBuffer KK { get; }
    public HipBuffer KA { get; }
    /// <summary>[H, 64].</summary>
    public HipBuffer RK { get; }
    /// <summary>[C, C] each.</summary>
    public HipBuffer Receptance { get; }
    public HipBuffer Key { get; }
    public HipBuffer Value { get; }
    public HipBuffer Output { get; }
    public HipLora DecayLora { get; }
    public HipLora IclrLora { get; }
    /// <summary>Null in layer 0.</summary>
    public HipLora? ValueLora { get; }
    /// <summary>Null without wkv_has_gate.</summary>
    public HipLora? GateLora { get; }
    /// <summary>[F, C], [F, C], [C, F].</summary>
    public HipBuffer MlpGate { get; }
    public HipBuffer MlpUp { get; }
    public HipBuffer MlpDown { get; }
}
