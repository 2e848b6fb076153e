using System.Text.Json;
using Arwkv.IO;

namespace Arwkv;

/// <summary>Reads fields of a Hugging Face config.json with messages that name the file and the field.</summary>
internal sealed class ModelConfigFile
{
    private readonly JsonElement _root;

    private ModelConfigFile(string path, JsonElement root)
    {
        Path = path;
        _root = root;
    }

    public string Path { get; }

    public static ModelConfigFile Open(string directory)
    {
        string path = System.IO.Path.Combine(directory, "config.json");
        if (!File.Exists(path)) throw new CheckpointException(path, "config.json not found (is this a checkpoint directory?)");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException(path, "not a JSON object");
            return new ModelConfigFile(path, doc.RootElement.Clone());
        }
        catch (JsonException e)
        {
            throw new CheckpointException(path, "not valid JSON: " + e.Message, e);
        }
    }

    public static string ReadModelType(string directory) => Open(directory).GetString("model_type");

    public bool Has(string name) => _root.TryGetProperty(name, out JsonElement e) && e.ValueKind != JsonValueKind.Null;

    public string GetString(string name) =>
        _root.TryGetProperty(name, out JsonElement e) && e.ValueKind == JsonValueKind.String
            ? e.GetString()!
            : throw new CheckpointException(Path, $"'{name}' must be a string");

    public int GetInt(string name) =>
        _root.TryGetProperty(name, out JsonElement e) && e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int v)
            ? v
            : throw new CheckpointException(Path, $"'{name}' must be an integer");

    public int GetInt(string name, int fallback) => Has(name) ? GetInt(name) : fallback;

    public double GetDouble(string name, double fallback)
    {
        if (!Has(name)) return fallback;
        return _root.GetProperty(name) is { ValueKind: JsonValueKind.Number } e ? e.GetDouble()
            : throw new CheckpointException(Path, $"'{name}' must be a number");
    }

    public bool GetBool(string name, bool fallback)
    {
        if (!Has(name)) return fallback;
        return _root.GetProperty(name).ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new CheckpointException(Path, $"'{name}' must be true or false"),
        };
    }

    /// <summary>An integer or a list of integers (eos_token_id may be either).</summary>
    public int[] GetIntList(string name)
    {
        if (!Has(name)) return [];
        JsonElement e = _root.GetProperty(name);
        if (e.ValueKind == JsonValueKind.Number) return [GetInt(name)];
        if (e.ValueKind == JsonValueKind.Array)
            return e.EnumerateArray().Select(x => x.TryGetInt32(out int v) ? v : throw new CheckpointException(Path, $"'{name}' must hold integers")).ToArray();
        throw new CheckpointException(Path, $"'{name}' must be an integer or a list of integers");
    }
}
