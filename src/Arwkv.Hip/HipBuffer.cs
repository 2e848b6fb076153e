using System.Runtime.InteropServices;

namespace Arwkv.Hip;

/// <summary>
/// One device allocation (hipMalloc), freed when disposed or finalized. Sizes are in bytes; the typed helpers
/// copy spans of unmanaged elements. Uploads and downloads synchronize their stream before returning, so the host
/// span may be reused (or read) immediately: that is what makes passing managed memory safe.
/// </summary>
public sealed class HipBuffer : SafeHandle
{
    HipBuffer(long byteLength) : base(0, ownsHandle: true) => ByteLength = byteLength;

    // A view: never frees its pointer; keeps the parent reachable so the allocation outlives the view's use.
    HipBuffer(HipBuffer parent, long byteLength) : base(0, ownsHandle: false)
    {
        ByteLength = byteLength;
        _parent = parent;
    }

    readonly HipBuffer? _parent;

    /// <summary>Size of the allocation in bytes.</summary>
    public long ByteLength { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == 0;

    /// <summary>The device address, for the kernel wrappers (valid while this buffer is alive).</summary>
    internal nint Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            return handle;
        }
    }

    /// <summary>Allocates <paramref name="byteLength"/> bytes of uninitialised device memory.</summary>
    public static HipBuffer Allocate(long byteLength) => Allocate(byteLength, name: null);

    /// <summary>
    /// Allocates <paramref name="byteLength"/> bytes of uninitialised device memory. <paramref name="name"/> says what
    /// the buffer is for ("layer 3 mlp.up_proj.weight"): when the device is out of memory the exception names it and
    /// the size, so a model that does not fit says which tensor did not.
    /// </summary>
    /// <exception cref="HipException">The runtime refused the allocation (out of memory, no device).</exception>
    public static HipBuffer Allocate(long byteLength, string? name)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(byteLength);
        HipRuntime.EnsureLoaded();
        var buffer = new HipBuffer(byteLength);
        int status = NativeMethods.arwkv_hip_malloc(out nint pointer, (nuint)byteLength);
        if (status != 0)
            throw new HipException((HipStatus)status, "arwkv_hip_malloc",
                $"could not allocate {name ?? "a device buffer"} ({DescribeBytes(byteLength)}): {HipRuntime.LastErrorMessage()}");
        buffer.SetHandle(pointer);
        return buffer;
    }

    /// <summary>Allocates room for <paramref name="count"/> elements of <typeparamref name="T"/>.</summary>
    public static unsafe HipBuffer Allocate<T>(long count, string? name = null) where T : unmanaged =>
        Allocate(checked(count * sizeof(T)), name);

    /// <summary>Allocates a buffer holding a copy of <paramref name="source"/>.</summary>
    public static HipBuffer FromHost<T>(ReadOnlySpan<T> source, HipStream? stream = null, string? name = null) where T : unmanaged
    {
        var buffer = Allocate<T>(Math.Max(source.Length, 1), name);
        try
        {
            buffer.Upload(source, stream);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
        return buffer;
    }

    /// <summary>"160.0 MiB, 167772160 bytes": the size both readable and exact.</summary>
    internal static string DescribeBytes(long bytes)
    {
        string[] units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        int unit = 0;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return unit == 0 ? $"{bytes} bytes" : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{value:F1} {units[unit]}, {bytes} bytes");
    }

    /// <summary>
    /// Copies <paramref name="byteCount"/> bytes from host memory at <paramref name="source"/> (for example a
    /// memory-mapped checkpoint tensor, which needs no pinning) to this buffer at <paramref name="byteOffset"/>, and
    /// waits for the copy.
    /// </summary>
    internal unsafe void Upload(long byteOffset, void* source, long byteCount, HipStream? stream)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(byteOffset);
        RequireBytes(checked(byteOffset + byteCount), nameof(byteCount));
        if (byteCount == 0) return;
        HipRuntime.Check(NativeMethods.arwkv_hip_memcpy_h2d(Pointer + (nint)byteOffset, source, (nuint)byteCount, HipStream.Handle(stream)),
            "arwkv_hip_memcpy_h2d");
        Sync(stream);
    }

    /// <summary>Copies <paramref name="source"/> to the start of this buffer.</summary>
    public unsafe void Upload<T>(ReadOnlySpan<T> source, HipStream? stream = null) where T : unmanaged
    {
        long bytes = (long)source.Length * sizeof(T);
        RequireBytes(bytes, nameof(source));
        // The span stays pinned until the stream has finished with it: the runtime may stage pageable copies.
        fixed (T* p = source)
        {
            HipRuntime.Check(NativeMethods.arwkv_hip_memcpy_h2d(Pointer, p, (nuint)bytes, HipStream.Handle(stream)),
                "arwkv_hip_memcpy_h2d");
            Sync(stream);
        }
    }

    /// <summary>Copies the start of this buffer into <paramref name="destination"/>.</summary>
    public unsafe void Download<T>(Span<T> destination, HipStream? stream = null) where T : unmanaged
    {
        long bytes = (long)destination.Length * sizeof(T);
        RequireBytes(bytes, nameof(destination));
        fixed (T* p = destination)
        {
            HipRuntime.Check(NativeMethods.arwkv_hip_memcpy_d2h(p, Pointer, (nuint)bytes, HipStream.Handle(stream)),
                "arwkv_hip_memcpy_d2h");
            Sync(stream);
        }
    }

    /// <summary>Downloads the first <paramref name="count"/> elements into a new array.</summary>
    public T[] ToArray<T>(int count, HipStream? stream = null) where T : unmanaged
    {
        var result = new T[count];
        Download<T>(result, stream);
        return result;
    }

    /// <summary>Queues a device-to-device copy of <paramref name="byteCount"/> bytes from <paramref name="source"/>.</summary>
    public void CopyFrom(HipBuffer source, long byteCount, HipStream? stream = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        RequireBytes(byteCount, nameof(byteCount));
        source.RequireBytes(byteCount, nameof(source));
        HipRuntime.Check(NativeMethods.arwkv_hip_memcpy_d2d(Pointer, source.Pointer, (nuint)byteCount, HipStream.Handle(stream)),
            "arwkv_hip_memcpy_d2d");
    }

    /// <summary>
    /// Queues a device-to-device copy of <paramref name="byteCount"/> bytes from <paramref name="source"/> at
    /// <paramref name="sourceOffset"/> to this buffer at <paramref name="destinationOffset"/> (byte offsets). The model
    /// code uses it to move single rows (the token-shift row, a KV-cache row) without creating views per token.
    /// </summary>
    public void CopyFrom(HipBuffer source, long sourceOffset, long destinationOffset, long byteCount, HipStream? stream = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(sourceOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(destinationOffset);
        RequireBytes(checked(destinationOffset + byteCount), nameof(destinationOffset));
        source.RequireBytes(checked(sourceOffset + byteCount), nameof(sourceOffset));
        if (byteCount == 0) return;
        HipRuntime.Check(NativeMethods.arwkv_hip_memcpy_d2d(Pointer + (nint)destinationOffset, source.Pointer + (nint)sourceOffset,
            (nuint)byteCount, HipStream.Handle(stream)), "arwkv_hip_memcpy_d2d");
    }

    /// <summary>
    /// A non-owning view of bytes [<paramref name="byteOffset"/>, <paramref name="byteOffset"/> + <paramref name="byteLength"/>)
    /// of this buffer, for kernels that take a sub-tensor (one block of the time-mix lerp output, the last row of the
    /// residual stream). Disposing the view frees nothing; the view must not be used after this buffer is disposed.
    /// </summary>
    public HipBuffer Slice(long byteOffset, long byteLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(byteOffset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(byteLength);
        RequireBytes(checked(byteOffset + byteLength), nameof(byteLength));
        var view = new HipBuffer(this, byteLength);
        view.SetHandle(Pointer + (nint)byteOffset);
        return view;
    }

    /// <summary>Queues filling the whole buffer with zero bytes (float 0.0 and bf16 0.0 alike).</summary>
    public void Clear(HipStream? stream = null) =>
        HipRuntime.Check(NativeMethods.arwkv_hip_memset(Pointer, 0, (nuint)ByteLength, HipStream.Handle(stream)),
            "arwkv_hip_memset");

    /// <summary>Throws unless the buffer holds at least <paramref name="bytes"/> bytes.</summary>
    internal void RequireBytes(long bytes, string what)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes, what);
        if (bytes > ByteLength)
            throw new ArgumentException($"{what} needs {bytes} bytes but the device buffer holds {ByteLength}.", what);
    }

    static void Sync(HipStream? stream)
    {
        if (stream != null) stream.Synchronize();
        else HipRuntime.Check(NativeMethods.arwkv_hip_stream_synchronize(0), "arwkv_hip_stream_synchronize");
    }

    /// <inheritdoc />
    protected override bool ReleaseHandle() => _parent != null || NativeMethods.arwkv_hip_free(handle) == 0;
}
