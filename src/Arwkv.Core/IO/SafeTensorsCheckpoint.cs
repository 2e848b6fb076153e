using System.Text.Json;

namespace Arwkv.IO;

/// <summary>
/// The weights of a Hugging Face checkpoint directory: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c>. Every file stays memory-mapped until the checkpoint is disposed, so
/// pointers and spans it hands out are valid exactly that long.
/// </summary>
public sealed unsafe class SafeTensorsCheckpoint : IDisposable
{
    /// <summary>The single-file weights name.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The shard index name.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafeTensorsFile> _files;
    private readonly Dictionary<string, SafeTensorsFile> _byTensor;

    private SafeTensorsCheckpoint(string directory, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> byTensor)
    {
        Directory = directory;
        _files = files;
        _byTensor = byTensor;
    }

    /// <summary>The checkpoint directory.</summary>
    public string Directory { get; }

    /// <summary>The mapped weight files.</summary>
    public IReadOnlyList<SafeTensorsFile> Files => _files;

    /// <summary>Names of all tensors of the checkpoint.</summary>
    public IEnumerable<string> TensorNames => _byTensor.Keys;

    /// <summary>
    /// Opens <paramref name="directory"/>: the shard index when there is one (every listed shard must exist and hold
    /// the tensors the index assigns to it), otherwise <c>model.safetensors</c>.
    /// </summary>
    /// <exception cref="CheckpointException">No weights, a missing or corrupt shard, or an index that lies.</exception>
    public static SafeTensorsCheckpoint Open(string directory)
    {
        string indexPath = Path.Combine(directory, IndexFileName);
        if (File.Exists(indexPath)) return OpenSharded(directory, indexPath);
        string single = Path.Combine(directory, SingleFileName);
        if (!File.Exists(single))
            throw new CheckpointException(directory, $"no {SingleFileName} or {IndexFileName} in the checkpoint directory");
        SafeTensorsFile file = SafeTensorsFile.Open(single);
        var byTensor = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        foreach (string name in file.Tensors.Keys) byTensor[name] = file;
        return new SafeTensorsCheckpoint(directory, [file], byTensor);
    }

    private static SafeTensorsCheckpoint OpenSharded(string directory, string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        var files = new List<SafeTensorsFile>();
        var byFileName = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        var byTensor = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var (tensor, fileName) in weightMap)
            {
                if (!byFileName.TryGetValue(fileName, out SafeTensorsFile? shard))
                {
                    string shardPath = Path.Combine(directory, fileName);
                    if (!File.Exists(shardPath))
                        throw new CheckpointException(shardPath, $"shard not found ({IndexFileName} lists tensor '{tensor}' in it)");
                    shard = SafeTensorsFile.Open(shardPath);
                    files.Add(shard);
                    byFileName[fileName] = shard;
                }
                if (!shard.Contains(tensor))
                    throw new CheckpointException(shard.Path, $"missing tensor '{tensor}' ({IndexFileName} says this shard holds it)");
                byTensor[tensor] = shard;
            }
            // A tensor that a second shard also holds is ambiguous: which copy is the weight depends on the reader.
            foreach (SafeTensorsFile shard in files)
                foreach (string tensor in shard.Tensors.Keys)
                    if (byTensor.TryGetValue(tensor, out SafeTensorsFile? owner) && owner != shard)
                        throw new CheckpointException(shard.Path, $"tensor '{tensor}' is also in {Path.GetFileName(owner.Path)}, which {IndexFileName} assigns it to");
        }
        catch
        {
            foreach (SafeTensorsFile f in files) f.Dispose();
            throw;
        }
        return new SafeTensorsCheckpoint(directory, files, byTensor);
    }

    private static List<(string Tensor, string File)> ReadWeightMap(string indexPath)
    {
        var map = new List<(string, string)>();
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out JsonElement weightMap) || weightMap.ValueKind != JsonValueKind.Object)
                throw new CheckpointException(indexPath, "needs a 'weight_map' object");
            foreach (JsonProperty entry in weightMap.EnumerateObject())
            {
                string? file = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString() : null;
                // A shard name with a directory part could point outside the checkpoint; Hugging Face never writes one.
                if (string.IsNullOrEmpty(file) || file != Path.GetFileName(file) || file is "." or "..")
                    throw new CheckpointException(indexPath, $"weight_map entry for '{entry.Name}' must be a file name in the checkpoint directory");
                // System.Text.Json lets a repeated key through: a tensor assigned to two shards is ambiguous.
                if (!seen.TryAdd(entry.Name, file))
                    throw new CheckpointException(indexPath, $"weight_map assigns tensor '{entry.Name}' twice ('{seen[entry.Name]}' and '{file}')");
                map.Add((entry.Name, file));
            }
        }
        catch (JsonException e)
        {
            throw new CheckpointException(indexPath, "not valid JSON: " + e.Message, e);
        }
        if (map.Count == 0) throw new CheckpointException(indexPath, "weight_map is empty");
        return map;
    }

    /// <summary>
    /// The files of a checkpoint directory that loading, converting or distilling from it may read: every
    /// <c>*.safetensors</c>, <c>*.gguf</c>, <c>*.json</c> and <c>merges.txt</c> at its top level. Writers take them as inputs, so an
    /// output path that is one of them is refused instead of replacing the checkpoint it is made from.
    /// </summary>
    public static IReadOnlyList<string> InputFiles(string directory)
    {
        if (!System.IO.Directory.Exists(directory)) return [];
        return System.IO.Directory.EnumerateFiles(directory)
            .Where(f => f.EndsWith(".safetensors", StringComparison.Ordinal) || f.EndsWith(".json", StringComparison.Ordinal)
                || f.EndsWith(".gguf", StringComparison.Ordinal) || Path.GetFileName(f) == "merges.txt")
            .Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Whether the checkpoint has a tensor of this name.</summary>
    public bool Contains(string name) => _byTensor.ContainsKey(name);

    /// <summary>The file that holds <paramref name="name"/>.</summary>
    /// <exception cref="CheckpointException">No such tensor (the message names the directory or index and the tensor).</exception>
    public SafeTensorsFile FileOf(string name) =>
        _byTensor.TryGetValue(name, out SafeTensorsFile? file) ? file
            : throw new CheckpointException(_files.Count == 1 ? _files[0].Path : Path.Combine(Directory, IndexFileName), $"missing tensor '{name}'");

    /// <summary>Where <paramref name="name"/> lives in its file.</summary>
    public TensorInfo GetInfo(string name) => FileOf(name).GetInfo(name);

    /// <summary>Address of the first element of <paramref name="name"/> inside its mapping.</summary>
    public nint GetPointer(string name)
    {
        SafeTensorsFile file = FileOf(name);
        return file.GetPointer(file.GetInfo(name));
    }

    /// <summary>
    /// Address of <paramref name="name"/>, after checking that it holds no NaN or infinity: a matrix is used where it
    /// is mapped, so this scan at load is the only place a damaged weight can be caught before it poisons the logits.
    /// </summary>
    /// <exception cref="CheckpointException">A non-finite element (the message names the tensor, element and value).</exception>
    public nint GetFinitePointer(string name)
    {
        SafeTensorsFile file = FileOf(name);
        TensorInfo info = file.GetInfo(name);
        nint pointer = file.GetPointer(info);
        long count = info.Shape.Aggregate(1L, (a, b) => a * b);
        long bad = Kernels.NonFiniteScan.FirstNonFinite(pointer, info.Type, count);
        if (bad >= 0)
        {
            float value = info.Type switch
            {
                DType.F32 => ((float*)pointer)[bad],
                DType.F16 => (float)((Half*)pointer)[bad],
                _ => BitConverter.Int32BitsToSingle(((ushort*)pointer)[bad] << 16),
            };
            throw new CheckpointException(file.Path, $"tensor '{name}' holds a non-finite value ({value}) at element {bad}");
        }
        return pointer;
    }

    /// <summary>Copies a tensor into a new float32 array, widening F16/BF16.</summary>
    public float[] ReadFloat32(string name)
    {
        SafeTensorsFile file = FileOf(name);
        return file.ReadFloat32(file.GetInfo(name));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (SafeTensorsFile file in _files) file.Dispose();
    }
}
