using Arwkv.IO;
using Arwkv.Kernels;
using Arwkv.Layers;
using L = Arwkv.ArwkvCheckpointLayout;

namespace Arwkv;

/// <summary>The weights of one ARWKV layer.</summary>
internal sealed class ArwkvLayer
{
    public required float[] InputNorm { get; init; }
    public required float[] PostNorm { get; init; }
    public required RwkvTimeMix TimeMix { get; init; }
    public required SwiGluMlp Mlp { get; init; }
}

/// <summary>
/// Checks every tensor of a checkpoint against config.json and turns it into what the forward pass uses: big matrices
/// as views of the mapping (never copied), small vectors and LoRAs widened to float32.
/// </summary>
internal sealed class ArwkvWeightLoader(SafeTensorsCheckpoint checkpoint, ArwkvConfig config)
{
    private readonly int C = config.HiddenSize;

    private readonly Dictionary<string, int> _ranks = new(StringComparer.Ordinal);

    /// <summary>The LoRA ranks found in the checkpoint (0 for an absent gate).</summary>
    public ArwkvLoraRanks Ranks => new(_ranks.GetValueOrDefault("w1"), _ranks.GetValueOrDefault("a1"),
        _ranks.GetValueOrDefault("v1"), _ranks.GetValueOrDefault("g1"));

    public WeightMatrix Matrix(string name, int rows, int cols, string why)
    {
        TensorInfo info = Info(name);
        if (info.Shape.Length != 2 || info.Shape[0] != rows || info.Shape[1] != cols)
            throw Misshaped(name, info, $"[{rows}, {cols}]", why);
        return new WeightMatrix(checkpoint.GetFinitePointer(name), info.Type, rows, cols);
    }

    /// <summary>A [C] vector, stored [C] or [1, 1, C] (the time-mix parameters).</summary>
    public float[] Vector(string name, int length, string why)
    {
        TensorInfo info = Info(name);
        bool ok = info.Shape.Length is >= 1 and <= 3 && info.Shape[^1] == length && info.Shape[..^1].All(d => d == 1);
        if (!ok) throw Misshaped(name, info, $"[{length}] or [1, 1, {length}]", why);
        return Finite(name, checkpoint.ReadFloat32(name));
    }

    private float[] Small(string name, long[] shape, string why)
    {
        TensorInfo info = Info(name);
        if (!info.Shape.SequenceEqual(shape)) throw Misshaped(name, info, "[" + string.Join(", ", shape) + "]", why);
        return Finite(name, checkpoint.ReadFloat32(name));
    }

    /// <summary>
    /// A LoRA pair A [C, rank], B [rank, C]. The rank comes from A's shape and must be the same in every layer.
    /// </summary>
    public LoraWeights Lora(int layer, string down, string up)
    {
        string aName = L.TimeMixer(layer, down), bName = L.TimeMixer(layer, up);
        TensorInfo a = Info(aName);
        if (a.Shape.Length != 2 || a.Shape[0] != C || a.Shape[1] < 1)
            throw Misshaped(aName, a, $"[{C}, rank]", "hidden_size");
        int rank = checked((int)a.Shape[1]);
        if (_ranks.TryGetValue(down, out int expected) && expected != rank)
            throw Misshaped(aName, a, $"[{C}, {expected}]", $"the {down} rank of the first layer, hidden_size");
        _ranks[down] = rank;
        float[] aData = Finite(aName, checkpoint.ReadFloat32(aName));
        float[] bData = Small(bName, [rank, C], $"the rank of {down}, hidden_size");
        return new LoraWeights(aData, bData, C, rank, aIsBFloat16: a.Type == DType.BF16);
    }

    public ArwkvLayer Layer(int i)
    {
        int F = config.IntermediateSize, H = config.NumHeads, N = config.HeadSize;
        string Tm(string n) => L.TimeMixer(i, n);
        float[] TmVector(string n) => Vector(Tm(n), C, "hidden_size");
        bool first = i == 0;
        var timeMix = new RwkvTimeMix
        {
            Hidden = C,
            HeadSize = N,
            XR = TmVector("x_r"),
            XW = TmVector("x_w"),
            XK = TmVector("x_k"),
            XV = TmVector("x_v"),
            XA = TmVector("x_a"),
            // Gate-free checkpoints may omit x_g; gated ones without it lerp nothing (x_g = 0 means x itself).
            XG = config.WkvHasGate && checkpoint.Contains(Tm("x_g")) ? TmVector("x_g") : null,
            W0 = TmVector("w0"),
            A0 = TmVector("a0"),
            V0 = first && !checkpoint.Contains(Tm("v0")) ? null : TmVector("v0"),
            KK = TmVector("k_k"),
            KA = TmVector("k_a"),
            RK = Small(Tm("r_k"), [H, N], "hidden_size / head_size, head_size"),
            Receptance = Matrix(Tm("receptance.weight"), C, C, "hidden_size"),
            Key = Matrix(Tm("key.weight"), C, C, "hidden_size"),
            Value = Matrix(Tm("value.weight"), C, C, "hidden_size"),
            Output = Matrix(Tm("output.weight"), C, C, "hidden_size"),
            DecayLora = Lora(i, "w1", "w2"),
            IclrLora = Lora(i, "a1", "a2"),
            // Layer 0 has no value residual: its v1/v2 exist in the released checkpoint but are never used.
            ValueLora = first ? null : Lora(i, "v1", "v2"),
            GateLora = config.WkvHasGate ? Lora(i, "g1", "g2") : null,
        };
        return new ArwkvLayer
        {
            InputNorm = Vector(L.Layer(i, "input_layernorm.weight"), C, "hidden_size"),
            PostNorm = Vector(L.Layer(i, "post_attention_layernorm.weight"), C, "hidden_size"),
            TimeMix = timeMix,
            Mlp = new SwiGluMlp(
                Matrix(L.Layer(i, "mlp.gate_proj.weight"), F, C, "intermediate_size, hidden_size"),
                Matrix(L.Layer(i, "mlp.up_proj.weight"), F, C, "intermediate_size, hidden_size"),
                Matrix(L.Layer(i, "mlp.down_proj.weight"), C, F, "hidden_size, intermediate_size")),
        };
    }

    public float[] FinalNorm() => Vector(L.FinalNorm, C, "hidden_size");

    private TensorInfo Info(string name) => checkpoint.GetInfo(name);

    private CheckpointException Misshaped(string name, TensorInfo info, string expected, string why) =>
        new(checkpoint.FileOf(name).Path, $"tensor '{name}' has shape {info.ShapeText}, expected {expected} (from {why}; config.json has " +
            $"hidden_size {config.HiddenSize}, intermediate_size {config.IntermediateSize}, vocab_size {config.VocabSize}, head_size {config.HeadSize})");

    private float[] Finite(string name, float[] values)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new CheckpointException(checkpoint.FileOf(name).Path, $"tensor '{name}' holds a non-finite value ({values[i]}) at element {i}");
        return values;
    }
}
