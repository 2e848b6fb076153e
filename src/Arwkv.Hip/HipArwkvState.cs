namespace Arwkv.Hip;

/// <summary>
/// An ARWKV state on the GPU: per layer the WKV state [H, 64, 64] and the token shift [C], float32. Each head's WKV
/// state is stored as the kernels read it, S[i][j] row-major (i = value channel), which is the transpose of
/// <see cref="ArwkvState"/>'s per-head layout; <see cref="ToHost"/>, <see cref="CopyTo"/> and <see cref="CopyFrom"/>
/// transpose on the way, so a sequence moved between the CPU and the GPU continues exactly. Saved states use the
/// CPU format: a state saved here loads in <see cref="ArwkvModel.LoadState"/> and back in
/// <see cref="HipArwkvModel.LoadState"/>. Dispose it to free its device memory early.
/// </summary>
public sealed class HipArwkvState : ModelState, IDisposable
{
    readonly HipBuffer _shift, _wkv;
    readonly HipStream _stream;

    internal HipArwkvState(ArwkvConfig config, HipStream stream)
    {
        Config = config;
        _stream = stream;
        int L = config.NumLayers, C = config.HiddenSize, N = config.HeadSize;
        long shiftBytes = (long)C * sizeof(float), wkvBytes = (long)config.NumHeads * N * N * sizeof(float);
        _shift = HipBuffer.Allocate(L * shiftBytes, $"state token shift [{L}, {C}]");
        try
        {
            _wkv = HipBuffer.Allocate(L * wkvBytes, $"state WKV [{L}, {config.NumHeads}, {N}, {N}]");
        }
        catch
        {
            _shift.Dispose();
            throw;
        }
        Shift = new HipBuffer[L];
        Wkv = new HipBuffer[L];
        for (int l = 0; l < L; l++)
        {
            Shift[l] = _shift.Slice(l * shiftBytes, shiftBytes);
            Wkv[l] = _wkv.Slice(l * wkvBytes, wkvBytes);
        }
        Clear();
    }

    internal ArwkvConfig Config { get; }

    /// <summary>Per layer, the last token's normed time-mix input [C].</summary>
    internal HipBuffer[] Shift { get; }

    /// <summary>Per layer, the WKV state [H, 64 (value i), 64 (key j)].</summary>
    internal HipBuffer[] Wkv { get; }

    internal void Advance(int tokens) => Position += tokens;

    internal bool Matches(ArwkvConfig c) =>
        Config.HiddenSize == c.HiddenSize && Config.NumLayers == c.NumLayers && Config.HeadSize == c.HeadSize;

    /// <inheritdoc />
    public override ModelState Clone()
    {
        var copy = new HipArwkvState(Config, _stream) { Position = Position };
        copy._shift.CopyFrom(_shift, _shift.ByteLength, _stream);
        copy._wkv.CopyFrom(_wkv, _wkv.ByteLength, _stream);
        return copy;
    }

    /// <inheritdoc />
    public override void Reset()
    {
        Clear();
        Position = 0;
    }

    void Clear()
    {
        _shift.Clear(_stream);
        _wkv.Clear(_stream);
    }

    /// <summary>Writes the state in <see cref="ArwkvState.Save"/>'s format (the CPU layout), so either device can resume it.</summary>
    public override void Save(Stream stream) => ToHost().Save(stream);

    /// <summary>A CPU copy of this state: <see cref="ArwkvModel"/> continues the sequence from it exactly.</summary>
    public ArwkvState ToHost()
    {
        var host = new ArwkvState(Config.HiddenSize, Config.NumLayers, Config.HeadSize);
        CopyTo(host);
        return host;
    }

    /// <summary>Overwrites <paramref name="destination"/> (a CPU state of the same shape) with this state and its position.</summary>
    public void CopyTo(ArwkvState destination)
    {
        RequireShape(destination);
        int N = Config.HeadSize;
        var rowMajor = new float[Config.NumHeads * N * N];
        for (int l = 0; l < Config.NumLayers; l++)
        {
            Shift[l].Download<float>(destination.Shift[l], _stream);
            Wkv[l].Download<float>(rowMajor, _stream);
            TransposeHeads(rowMajor, destination.Wkv[l], N);
        }
        destination.Position = Position;
    }

    /// <summary>Overwrites this state with <paramref name="source"/> (a CPU state of the same shape) and its position.</summary>
    public void CopyFrom(ArwkvState source)
    {
        RequireShape(source);
        int N = Config.HeadSize;
        var rowMajor = new float[Config.NumHeads * N * N];
        for (int l = 0; l < Config.NumLayers; l++)
        {
            Shift[l].Upload<float>(source.Shift[l], _stream);
            TransposeHeads(source.Wkv[l], rowMajor, N);
            Wkv[l].Upload<float>(rowMajor, _stream);
        }
        Position = source.Position;
    }

    /// <summary>Frees the device memory now (otherwise the finalizer does).</summary>
    public void Dispose()
    {
        _shift.Dispose();
        _wkv.Dispose();
    }

    void RequireShape(ArwkvState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (!state.Matches(Config))
            throw new ArgumentException($"the CPU state is for C={state.Hidden}, L={state.Layers}, N={state.HeadSize}; this one is for " +
                $"C={Config.HiddenSize}, L={Config.NumLayers}, N={Config.HeadSize}", nameof(state));
    }

    /// <summary>Transposes each N x N head of <paramref name="source"/> into <paramref name="destination"/> (an involution).</summary>
    internal static void TransposeHeads(ReadOnlySpan<float> source, Span<float> destination, int n)
    {
        for (int head = 0; head < source.Length; head += n * n)
            for (int row = 0; row < n; row++)
                for (int col = 0; col < n; col++)
                    destination[head + col * n + row] = source[head + row * n + col];
    }
}
