namespace Arwkv.Hip;

/// <summary>The status codes of the arwkv_hip C ABI (<c>arwkv_hip_status</c> in arwkv_hip.h).</summary>
public enum HipStatus
{
    /// <summary>Success.</summary>
    Ok = 0,
    /// <summary>A null pointer, a bad size or an unknown dtype reached the native library: a bug in the caller.</summary>
    InvalidArgument = 1,
    /// <summary>The GPU runtime (HIP or CUDA) reported an error; the message carries its text.</summary>
    RuntimeError = 2,
    /// <summary>No GPU device is visible to the runtime.</summary>
    NoDevice = 3,
    /// <summary>The library was built without the requested feature (for example the vendor BLAS).</summary>
    Unsupported = 4,
}

/// <summary>A failure reported by libarwkv_hip, carrying the native library's own message.</summary>
public sealed class HipException : Exception
{
    /// <summary>Creates an exception for <paramref name="function"/> failing with <paramref name="status"/>.</summary>
    public HipException(HipStatus status, string function, string nativeMessage)
        : base($"{function} failed ({status}): {nativeMessage}")
    {
        Status = status;
        Function = function;
        NativeMessage = nativeMessage;
    }

    /// <summary>The status the native function returned.</summary>
    public HipStatus Status { get; }

    /// <summary>The native function that failed.</summary>
    public string Function { get; }

    /// <summary>The thread-local error message of the native library (names the runtime call and its error).</summary>
    public string NativeMessage { get; }
}
