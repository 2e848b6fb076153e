namespace Arwkv.Hip;

/// <summary>
/// The activation buffers of one forward pass over up to <see cref="MaxRows"/> tokens (llm.c's ActivationTensors),
/// allocated once with the model, all float32 except the token ids. R = MaxRows, C hidden, F intermediate, H heads,
/// V vocabulary; a chunk of n tokens uses the first n rows of each.
/// </summary>
internal sealed class HipArwkvActivations
{
    readonly Dictionary<int, HipBuffer[]> _lerpBlocks = [];

    public HipArwkvActivations(HipWeightUploader up, int maxRows, int C, int F, int vocab, int maxRank)
    {
        MaxRows = maxRows;
        Hidden = C;
        long rc = (long)maxRows * C * sizeof(float);
        HipBuffer Rows(string name) => up.Allocate(rc, "activation " + name + $" [{maxRows}, {C}]");
        Tokens = up.Allocate((long)maxRows * sizeof(int), $"activation tokens [{maxRows}]");
        Residual = Rows("residual");
        Normed = Rows("normed");
        Rstd = up.Allocate((long)maxRows * sizeof(float), $"activation rstd [{maxRows}]");
        Lerped = up.Allocate(6 * rc, $"activation time-mix lerps [6, {maxRows}, {C}]");
        R = Rows("r");
        K = Rows("k");
        V = Rows("v");
        VMixed = Rows("v after the value residual");
        VFirst = Rows("v_first");
        ValueGate = Rows("value residual gate");
        Decay = Rows("decay");
        A = Rows("iclr a");
        G = Rows("gate g");
        WkvA = Rows("wkv a (-kk)");
        WkvB = Rows("wkv b (kk a)");
        KOut = Rows("k after k_a");
        KkNorm = up.Allocate((long)maxRows * (C / 64) * sizeof(float), $"activation kk norm [{maxRows}, {C / 64}]");
        Y = Rows("wkv y");
        Gated = Rows("y * g");
        LoraOut = Rows("lora output");
        long loraMid = (long)maxRows * maxRank * sizeof(float);
        LoraMid = up.Allocate(loraMid, $"activation lora middle [{maxRows}, {maxRank}]");
        LoraHidden = up.Allocate(loraMid, $"activation lora hidden [{maxRows}, {maxRank}]");
        long rf = (long)maxRows * F * sizeof(float);
        MlpGate = up.Allocate(rf, $"activation mlp gate [{maxRows}, {F}]");
        MlpUp = up.Allocate(rf, $"activation mlp up [{maxRows}, {F}]");
        MlpAct = up.Allocate(rf, $"activation mlp silu(gate) * up [{maxRows}, {F}]");
        LastRow = up.Allocate((long)C * sizeof(float), $"activation last residual row [{C}]");
        LastNormed = up.Allocate((long)C * sizeof(float), $"activation last normed row [{C}]");
        LastRstd = up.Allocate(sizeof(float), "activation last rstd [1]");
        Logits = up.Allocate((long)maxRows * vocab * sizeof(float), $"activation logits [{maxRows}, {vocab}]");
    }

    public int MaxRows { get; }
    public int Hidden { get; }

    /// <summary>[R] int32.</summary>
    public HipBuffer Tokens { get; }
    /// <summary>[R, C]: the residual stream h.</summary>
    public HipBuffer Residual { get; }
    /// <summary>[R, C]: RMSNorm(h), the input of the time mix or of the MLP.</summary>
    public HipBuffer Normed { get; }
    /// <summary>[R]: the norm's saved 1/rms (unused by inference, required by the kernel).</summary>
    public HipBuffer Rstd { get; }
    /// <summary>[6, n, C] for a chunk of n tokens: x_r, x_w, x_k, x_v, x_a, x_g (see <see cref="LerpBlocks"/>).</summary>
    public HipBuffer Lerped { get; }
    /// <summary>[R, C] each: the time mix's intermediates, named as in ARWKV.md section 2.</summary>
    public HipBuffer R { get; }
    public HipBuffer K { get; }
    public HipBuffer V { get; }
    public HipBuffer VMixed { get; }
    public HipBuffer VFirst { get; }
    public HipBuffer ValueGate { get; }
    public HipBuffer Decay { get; }
    public HipBuffer A { get; }
    public HipBuffer G { get; }
    public HipBuffer WkvA { get; }
    public HipBuffer WkvB { get; }
    public HipBuffer KOut { get; }
    /// <summary>[R, H].</summary>
    public HipBuffer KkNorm { get; }
    public HipBuffer Y { get; }
    public HipBuffer Gated { get; }
    public HipBuffer LoraOut { get; }
    /// <summary>[R, largest LoRA rank] each: x A, and its activation.</summary>
    public HipBuffer LoraMid { get; }
    public HipBuffer LoraHidden { get; }
    /// <summary>[R, F] each.</summary>
    public HipBuffer MlpGate { get; }
    public HipBuffer MlpUp { get; }
    public HipBuffer MlpAct { get; }
    /// <summary>[C], [C], [1]: the last token's row, for the logits of <see cref="LogitsScope.Last"/>.</summary>
    public HipBuffer LastRow { get; }
    public HipBuffer LastNormed { get; }
    public HipBuffer LastRstd { get; }
    /// <summary>[R, V].</summary>
    public HipBuffer Logits { get; }

    /// <summary>
    /// Views of the six lerp outputs for a chunk of <paramref name="rows"/> tokens: the kernel writes block i at
    /// i * rows * C, so the offsets depend on the chunk length. Made once per length and kept (a decode step
    /// always finds its views here and allocates nothing).
    /// </summary>
    public HipBuffer[] LerpBlocks(int rows)
    {
        if (_lerpBlocks.TryGetValue(rows, out HipBuffer[]? blocks)) return blocks;
        long block = (long)rows * Hidden * sizeof(float);
        blocks = new HipBuffer[6];
        for (int i = 0; i < 6; i++) blocks[i] = Lerped.Slice(i * block, block);
        _lerpBlocks[rows] = blocks;
        return blocks;
    }
}
