using System.Runtime.InteropServices;

namespace Arwkv.Hip;

/// <summary>
/// A GPU stream (hipStream_t / cudaStream_t), created non-blocking. Kernels launched on one stream run in order;
/// pass null wherever a stream is taken to use the default stream.
/// </summary>
public sealed class HipStream : SafeHandle
{
    HipStream() : base(0, ownsHandle: true) { }

    /// <summary>Creates a stream on the current device.</summary>
    public static HipStream Create()
    {
        HipRuntime.EnsureLoaded();
        var stream = new HipStream();
        HipRuntime.Check(NativeMethods.arwkv_hip_stream_create(out nint handle), "arwkv_hip_stream_create");
        stream.SetHandle(handle);
        return stream;
    }

    /// <inheritdoc />
    public override bool IsInvalid => handle == 0;

    /// <summary>Blocks until everything queued on this stream has finished (and reports asynchronous faults).</summary>
    public void Synchronize() => HipRuntime.Check(NativeMethods.arwkv_hip_stream_synchronize(Handle(this)),
        "arwkv_hip_stream_synchronize");

    /// <summary>The raw handle of <paramref name="stream"/>, 0 (the default stream) for null.</summary>
    internal static nint Handle(HipStream? stream)
    {
        if (stream == null) return 0;
        ObjectDisposedException.ThrowIf(stream.IsClosed, stream);
        return stream.handle;
    }

    /// <inheritdoc />
    protected override bool ReleaseHandle() => NativeMethods.arwkv_hip_stream_destroy(handle) == 0;
}
