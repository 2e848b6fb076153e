namespace Arwkv;

/// <summary>
/// Activation buffers for up to <see cref="MaxRows"/> tokens, allocated once per model so that neither decode nor
/// prefill allocates per token. Row t of a [rows, C] buffer starts at t * C.
/// </summary>
internal sealed class ArwkvScratch
{
    public ArwkvScratch(int maxRows, int hidden, int intermediate, int maxRank)
    {
        MaxRows = maxRows;
        float[] Rows(int width) => new float[(long)maxRows * width];
        Residual = Rows(hidden);
        Normed = Rows(hidden);
        Shifted = Rows(hidden);
        XR = Rows(hidden); XW = Rows(hidden); XK = Rows(hidden); XV = Rows(hidden); XA = Rows(hidden); XG = Rows(hidden);
        R = Rows(hidden); K = Rows(hidden); V = Rows(hidden); VFirst = Rows(hidden);
        Decay = Rows(hidden); A = Rows(hidden); G = Rows(hidden); Kk = Rows(hidden); Y = Rows(hidden);
        Output = Rows(hidden); Temp = Rows(hidden);
        LoraMid = Rows(maxRank);
        MlpGate = Rows(intermediate);
        MlpUp = Rows(intermediate);
    }

    public int MaxRows { get; }

    /// <summary>The residual stream h.</summary>
    public float[] Residual { get; }
    /// <summary>RMS-normed layer input.</summary>
    public float[] Normed { get; }
    /// <summary>Token shift difference x_prev - x.</summary>
    public float[] Shifted { get; }
    public float[] XR { get; }
    public float[] XW { get; }
    public float[] XK { get; }
    public float[] XV { get; }
    public float[] XA { get; }
    public float[] XG { get; }
    public float[] R { get; }
    public float[] K { get; }
    public float[] V { get; }
    /// <summary>Layer 0's value of each token, mixed into every later layer's value.</summary>
    public float[] VFirst { get; }
    public float[] Decay { get; }
    public float[] A { get; }
    public float[] G { get; }
    public float[] Kk { get; }
    public float[] Y { get; }
    /// <summary>A block's output before it is added to the residual.</summary>
    public float[] Output { get; }
    public float[] Temp { get; }
    public float[] LoraMid { get; }
    public float[] MlpGate { get; }
    public float[] MlpUp { get; }
}
