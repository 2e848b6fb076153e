using System.Numerics;
using Arwkv.IO;

namespace Arwkv.Training;

/// <summary>One named tensor of a <see cref="ParameterSet{TF}"/>: where it lives and how the optimizer treats it.</summary>
internal sealed class ParameterTensor(string name, long[] shape, int offset, int length)
{
    public string Name { get; } = name;
    public long[] Shape { get; } = shape;
    public int Offset { get; } = offset;
    public int Length { get; } = length;
    /// <summary>Decoupled weight decay applies (default: 2-D tensors, the matrices).</summary>
    public bool Decay { get; set; } = shape.Length == 2;
    /// <summary>Frozen tensors keep their gradient (it is still computed) but the optimizer neither reads nor updates them.</summary>
    public bool Frozen { get; set; }
}

/// <summary>
/// Named parameters in one contiguous buffer, with a gradient buffer of the same layout (llm.c's ParameterTensors
/// with one allocation). Names and shapes are the Hugging Face ones, so <see cref="ToSafeTensors"/> writes a
/// checkpoint in the exact HF layout.
/// </summary>
internal sealed class ParameterSet<TF> where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
{
    private readonly Dictionary<string, ParameterTensor> byName = new(StringComparer.Ordinal);

    /// <param name="layout">Names and shapes, in storage order.</param>
    /// <param name="withGradients">False for a model that is only ever run forward (a frozen teacher): no gradient buffer,
    /// which for a 0.5B teacher in float32 is 2 GB.</param>
    public ParameterSet(IEnumerable<(string Name, long[] Shape)> layout, bool withGradients = true)
    {
        var tensors = new List<ParameterTensor>();
        long offset = 0;
        foreach (var (name, shape) in layout)
        {
            long length = shape.Aggregate(1L, (a, b) => a * b);
            if (length <= 0) throw new ArgumentException($"tensor '{name}' has an empty shape");
            if (offset + length > Array.MaxLength) throw new ArgumentException("parameters exceed one array; the CPU reference is for small students");
            var t = new ParameterTensor(name, shape, (int)offset, (int)length);
            if (!byName.TryAdd(name, t)) throw new ArgumentException($"duplicate tensor '{name}'");
            tensors.Add(t);
            offset += length;
        }
        Tensors = tensors;
        Data = new TF[offset];
        Grad = withGradients ? new TF[offset] : [];
    }

    public IReadOnlyList<ParameterTensor> Tensors { get; }
    public TF[] Data { get; }
    public TF[] Grad { get; }
    public long Count => Data.Length;

    public ParameterTensor this[string name] =>
        byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"no parameter '{name}'");

    public bool Contains(string name) => byName.ContainsKey(name);

    public Memory<TF> Value(string name) { var t = this[name]; return Data.AsMemory(t.Offset, t.Length); }
    /// <summary>The tensor's gradient; empty when the set has no gradients.</summary>
    public Memory<TF> Gradient(string name) { var t = this[name]; return Grad.Length == 0 ? Memory<TF>.Empty : Grad.AsMemory(t.Offset, t.Length); }
    public Memory<TF> ValueOrEmpty(string name) => Contains(name) ? Value(name) : Memory<TF>.Empty;
    public Memory<TF> GradientOrEmpty(string name) => Contains(name) ? Gradient(name) : Memory<TF>.Empty;

    public void ZeroGrad() => Array.Clear(Grad);

    /// <summary>Freezes (or unfreezes) every tensor whose name matches.</summary>
    public void SetFrozen(Func<string, bool> match, bool frozen)
    {
        foreach (var t in Tensors) if (match(t.Name)) t.Frozen = frozen;
    }

    /// <summary>
    /// The tensors as float32 safetensors entries in <paramref name="type"/>, in layout order. Float32 sets hand out views
    /// of their buffer (no copy: a 0.5B student would otherwise need 2.7 GB more while it is saved); others are copied.
    /// </summary>
    public IEnumerable<TensorToWrite> ToSafeTensors(DType type = DType.F32)
    {
        foreach (var t in Tensors)
        {
            if (Data is float[] floats)
            {
                yield return new TensorToWrite(t.Name, type, t.Shape, floats.AsMemory(t.Offset, t.Length));
                continue;
            }
            var values = new float[t.Length];
            for (int i = 0; i < t.Length; i++) values[i] = float.CreateTruncating(Data[t.Offset + i]);
            yield return new TensorToWrite(t.Name, type, t.Shape, values);
        }
    }
}
