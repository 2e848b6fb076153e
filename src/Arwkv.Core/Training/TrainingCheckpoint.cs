using System.Globalization;
using System.Text.Json;
using Arwkv.IO;
using Arwkv.Training.Data;

namespace Arwkv.Training;

/// <summary>Saving and loading the student in the Hugging Face ARWKV layout, and parameters by name from safetensors.</summary>
internal static class ModelFiles
{
    /// <summary>Writes config.json and model.safetensors (float32) so that <see cref="ArwkvModel.Load(string, ModelOptions?)"/> and `arwkv generate` read it.</summary>
    public static void SaveStudent(string directory, ArwkvStudent<float> student)
    {
        Directory.CreateDirectory(directory);
        student.Save(Path.Combine(directory, "model.safetensors"));
        ArwkvCheckpointLayout.WriteConfig(directory, student.Config);
    }

    /// <summary>Loads an ARWKV checkpoint directory (single model.safetensors) into a trainable student; LoRA ranks come from the tensor shapes.</summary>
    public static ArwkvStudent<float> LoadStudent(string directory, int maxBatch, int maxSeqLen)
    {
        ArwkvConfig config = ArwkvConfig.Load(directory);
        string path = WeightsPath(directory);
        LoraRanks ranks;
        using (SafeTensorsFile file = SafeTensorsFile.Open(path))
        {
            int Rank(string name, int fallback)
            {
                string full = $"model.layers.0.self_attn.time_mixer.{name}";
                if (!file.Contains(full)) return fallback;
                TensorInfo info = file.GetInfo(full);
                if (info.Shape.Length != 2) throw new CheckpointException(path, $"tensor '{full}' has shape {info.ShapeText}, expected 2-D");
                return (int)info.Shape[1];
            }
            ranks = new LoraRanks(Rank("w1", 64), Rank("a1", 64), Rank("v1", 32), Rank("g1", 128));
        }
        var student = new ArwkvStudent<float>(config, maxBatch, maxSeqLen, ranks);
        LoadParameters(student.Parameters, path);
        return student;
    }

    /// <summary>Fills every tensor of <paramref name="parameters"/> from the safetensors file, checking names and element counts.</summary>
    public static void LoadParameters(ParameterSet<float> parameters, string path)
    {
        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        foreach (var t in parameters.Tensors)
        {
            if (!file.Contains(t.Name)) throw new CheckpointException(path, $"tensor '{t.Name}' is missing");
            TensorInfo info = file.GetInfo(t.Name);
            if (info.ElementCount != t.Length || !info.Shape.Where(d => d != 1).SequenceEqual(t.Shape.Where(d => d != 1)))
                throw new CheckpointException(path, $"tensor '{t.Name}' has shape {info.ShapeText}, expected [{string.Join(", ", t.Shape)}]");
            file.ReadFloat32(info).CopyTo(parameters.Data, t.Offset);
        }
    }

    /// <summary>
    /// A fresh student shaped after the teacher: RWKV-7 default time mixes, everything else copied from the teacher. The
    /// student is always untied (ARWKV.md section 5): its lm_head starts as the teacher's output matrix, which for a
    /// tied teacher (Qwen2.5-0.5B) is a copy of the embedding, and the two then train apart in stage 2.
    /// </summary>
    public static ArwkvStudent<float> StudentFromTeacher(Qwen2Trainable<float> teacher, LoraRanks ranks, int headSize, int seed, int maxBatch, int maxSeqLen)
    {
        Qwen2Config t = teacher.Config;
        var config = new ArwkvConfig
        {
            HiddenSize = t.HiddenSize, NumLayers = t.NumLayers, IntermediateSize = t.IntermediateSize, VocabSize = t.VocabSize,
            HeadSize = headSize, RmsNormEps = t.RmsNormEps, WkvHasGate = true, BosTokenId = t.BosTokenId, EosTokenIds = t.EosTokenIds,
        };
        var student = new ArwkvStudent<float>(config, maxBatch, maxSeqLen, ranks);
        student.InitializeRwkv7(seed, teacherCopyFollows: true);
        var tensors = new Dictionary<string, (long[] Shape, float[] Data)>(StringComparer.Ordinal);
        foreach (var p in teacher.Parameters.Tensors)
            tensors[p.Name] = (p.Shape, teacher.Parameters.Data.AsSpan(p.Offset, p.Length).ToArray());
        student.CopyFromTeacher(tensors);
        return student;
    }

    private static string WeightsPath(string directory)
    {
        string path = Path.Combine(directory, "model.safetensors");
        if (!File.Exists(path)) throw new CheckpointException(path, "model.safetensors not found (sharded checkpoints cannot be trained here)");
        return path;
    }
}

/// <summary>
/// A resumable training checkpoint in one directory, committed as a whole. Every save writes a fresh state
/// directory, step-NNNNNN-XXXXXXXX/, holding model/ (the trained model in its Hugging Face layout), optimizer.bin
/// (AdamW's step count and float64 moments) and trainer.json (stage, step, data position, seed and the loss
/// history), and only then replaces checkpoint.json, the manifest naming that directory and its step, with one
/// atomic rename. A run killed at any moment therefore leaves the previous manifest pointing at a complete state
/// (or no manifest at all); the half-written directory of an interrupted save is never read and is deleted by the
/// next save. The state directory is flushed to disk (fsync) before the manifest is written, and the manifest's
/// rename after, so the same holds after a power loss. Load also cross-checks the manifest's step against trainer.json and optimizer.bin.
/// A directory of the older single-level layout (trainer.json next to model/) still loads.
/// </summary>
internal static class TrainingCheckpoint
{
    private const string ManifestName = "checkpoint.json";
    private const string StatePrefix = "step-";

    public static void Save(string directory, Trainer trainer)
    {
        BatchPosition position = trainer.Batches.Position;
        var state = new CheckpointState((int)trainer.Stage, trainer.Step, position.Epoch, position.Batch, trainer.Options.Seed,
            trainer.Options.Steps, trainer.Losses.ToArray()) { TeacherTopK = trainer.Options.TeacherTopK, Examples = trainer.Batches.SequenceCount };
        Commit(directory, state, trainer.Backend, trainer.SaveModel);
    }

    /// <summary>Saves a DPO run: the policy, its optimizer and the step (the pair order follows from step and seed).</summary>
    public static void Save(string directory, DpoTrainer dpo)
    {
        int pairs = dpo.PairCount;
        var state = new CheckpointState((int)TrainingStage.Sft, dpo.Step, dpo.Step / pairs, dpo.Step % pairs, dpo.Options.Seed,
            dpo.Options.Steps, dpo.Losses.ToArray()) { Method = DpoMethod, Beta = dpo.Beta, Examples = pairs, ReferenceSha256 = dpo.ReferenceSha256 };
        Commit(directory, state, dpo.Backend, model =>
        {
            dpo.Backend.DownloadParameters();
            ModelFiles.SaveStudent(model, dpo.Policy);
        });
    }

    public static bool Exists(string directory) =>
        File.Exists(Path.Combine(directory, ManifestName)) || File.Exists(Path.Combine(directory, "trainer.json"));

    /// <summary>Restores parameters, optimizer state, step, loss history and batch position into a freshly built trainer.</summary>
    public static void Load(string directory, Trainer trainer)
    {
        (string stateDir, CheckpointState state) = Read(directory);
        string statePath = Path.Combine(stateDir, "trainer.json");
        if (state.Method != TrainerMethod)
            throw new CheckpointException(statePath, $"checkpoint is of a {state.Method} run, this run is stage {(int)trainer.Stage}");
        if (state.Stage != (int)trainer.Stage)
            throw new CheckpointException(statePath, $"checkpoint is of stage {(TrainingStage)state.Stage}, this run is {trainer.Stage}");
        CheckSeed(statePath, state, trainer.Options.Seed);
        if (state.TeacherTopK != trainer.Options.TeacherTopK)
            throw new CheckpointException(statePath, $"checkpoint was made with --teacher-top-k {state.TeacherTopK}, this run uses {trainer.Options.TeacherTopK}");
        // Older checkpoints did not record it (0).
        if (state.Examples != 0 && state.Examples != trainer.Batches.SequenceCount)
            throw new CheckpointException(statePath, $"checkpoint was made on {state.Examples} training sequences, this run has {trainer.Batches.SequenceCount} "
                + "(different data, --seq-len, --pad or --validation-fraction): the batch order would not continue");
        RestoreWeights(stateDir, state, trainer.Backend);
        trainer.Batches.Seek(new BatchPosition(state.Epoch, state.Batch));
        trainer.RestoreProgress(state.Step, state.Losses);
    }

    /// <summary>
    /// Restores a DPO run's policy, optimizer, step and loss history. The frozen reference is not in the checkpoint, only
    /// the SHA-256 of its weights, which must match <paramref name="dpo"/>'s; a checkpoint written before that was
    /// recorded resumes with a note on <paramref name="warnings"/> (null: none).
    /// </summary>
    public static void Load(string directory, DpoTrainer dpo, TextWriter? warnings = null)
    {
        (string stateDir, CheckpointState state) = Read(directory);
        string statePath = Path.Combine(stateDir, "trainer.json");
        if (state.Method != DpoMethod)
            throw new CheckpointException(statePath, $"checkpoint is of a {state.Method} run (stage {state.Stage}), this run is DPO");
        CheckSeed(statePath, state, dpo.Options.Seed);
        if (state.Examples != dpo.PairCount)
            throw new CheckpointException(statePath, $"checkpoint was made on {state.Examples} preference pairs, this run has {dpo.PairCount}");
        if (state.Beta != dpo.Beta)
            throw new CheckpointException(statePath, string.Create(CultureInfo.InvariantCulture, $"checkpoint was made with beta {state.Beta}, this run uses {dpo.Beta}"));
        // The reference sits inside every loss: another one would splice two different objectives into one run. Older
        // checkpoints did not record it; refusing them would strand runs in progress, so they resume on trust.
        if (state.ReferenceSha256 is null)
            warnings?.WriteLine($"warning: {statePath} does not record which reference model the run started with; resuming on trust that --init-from is the same");
        else if (state.ReferenceSha256 != dpo.ReferenceSha256)
            throw new CheckpointException(statePath, $"reference model differs from the one this run started with (SHA-256 of its weights {dpo.ReferenceSha256}, "
                + $"the checkpoint's {state.ReferenceSha256}); resume with the same --init-from, or start again in another --out");
        RestoreWeights(stateDir, state, dpo.Backend);
        dpo.RestoreProgress(state.Step, state.Losses);
    }

    /// <summary>
    /// The committed state directory and its trainer state, after checking that the manifest, trainer.json and
    /// optimizer.bin all name the same step (model weights are checked tensor by tensor when they are loaded).
    /// </summary>
    internal static (string StateDirectory, CheckpointState State) Read(string directory)
    {
        string manifestPath = Path.Combine(directory, ManifestName);
        string stateDir;
        int? manifestStep = null;
        if (File.Exists(manifestPath))
        {
            (string name, int step) = ReadManifest(manifestPath);
            stateDir = Path.Combine(directory, name);
            manifestStep = step;
            if (!Directory.Exists(stateDir)) throw new CheckpointException(manifestPath, $"names state directory '{name}', which does not exist");
        }
        else stateDir = directory; // the older single-level layout
        string statePath = Path.Combine(stateDir, "trainer.json");
        if (!File.Exists(statePath)) throw new CheckpointException(statePath, "no training checkpoint here");
        CheckpointState state = ReadState(statePath);
        if (manifestStep is int expected && state.Step != expected)
            throw new CheckpointException(statePath, $"holds step {state.Step}, the manifest says {expected}");
        string optimizerPath = Path.Combine(stateDir, "optimizer.bin");
        int optimizerStep;
        try
        {
            using var reader = new BinaryReader(File.OpenRead(optimizerPath));
            optimizerStep = reader.ReadInt32();
        }
        catch (Exception e) when (e is EndOfStreamException or FileNotFoundException)
        {
            throw new CheckpointException(optimizerPath, e.Message);
        }
        if (optimizerStep != state.Step)
            throw new CheckpointException(optimizerPath, $"optimizer is at step {optimizerStep}, trainer.json at {state.Step} (interrupted save)");
        return (stateDir, state);
    }

    private static void Commit(string directory, CheckpointState state, ITrainingBackend backend, Action<string> saveModel)
    {
        Directory.CreateDirectory(directory);
        string name = string.Create(CultureInfo.InvariantCulture, $"{StatePrefix}{state.Step:D6}-{Guid.NewGuid().ToString("N")[..8]}");
        string stateDir = Path.Combine(directory, name);
        Directory.CreateDirectory(stateDir);
        saveModel(Path.Combine(stateDir, "model"));
        AtomicFile.Write(Path.Combine(stateDir, "optimizer.bin"), stream =>
        {
            using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
            backend.SaveOptimizer(writer);
        });
        AtomicFile.Write(Path.Combine(stateDir, "trainer.json"), stream => WriteState(stream, state));
        // Everything the manifest will name must be on disk before the manifest is (the model's config and tokenizer
        // files are written without a flush), and so must the state directory's own entry.
        Durability.FlushTree(stateDir);
        Durability.FlushDirectory(directory);
        // The commit point: before this rename the old manifest (if any) is in force, after it the new one.
        AtomicFile.Write(Path.Combine(directory, ManifestName), stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteString("state", name);
            json.WriteNumber("step", state.Step);
            json.WriteEndObject();
        });
        RemoveStale(directory, name);
    }

    // Deletes what earlier saves left: older or interrupted state directories, temporary manifests, and the files of the
    // single-level layout. Anything else in the directory is not ours and stays.
    private static void RemoveStale(string directory, string current)
    {
        foreach (string dir in Directory.EnumerateDirectories(directory))
        {
            string name = Path.GetFileName(dir);
            if ((name.StartsWith(StatePrefix, StringComparison.Ordinal) && name != current) || name == "model")
                TryDelete(() => Directory.Delete(dir, recursive: true));
        }
        foreach (string file in Directory.EnumerateFiles(directory))
        {
            string name = Path.GetFileName(file);
            if ((name.StartsWith('.') && name.EndsWith(".tmp", StringComparison.Ordinal)) || name is "trainer.json" or "optimizer.bin")
                TryDelete(() => File.Delete(file));
        }
    }

    // Cleaning up is best effort: a file another process still holds open must not fail the save that just committed.
    private static void TryDelete(Action delete)
    {
        try { delete(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static (string Name, int Step) ReadManifest(string path)
    {
        try
        {
            using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(path));
            string name = doc.RootElement.GetProperty("state").GetString() ?? "";
            int step = doc.RootElement.GetProperty("step").GetInt32();
            if (!name.StartsWith(StatePrefix, StringComparison.Ordinal) || name.IndexOfAny(['/', '\\']) >= 0 || name.Contains("..", StringComparison.Ordinal))
                throw new CheckpointException(path, $"state directory '{name}' is not a {StatePrefix}NNNNNN-XXXXXXXX name");
            return (name, step);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new CheckpointException(path, $"not a checkpoint manifest: {e.Message}");
        }
    }

    private static void WriteState(Stream stream, CheckpointState state)
    {
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteString("method", state.Method);
        json.WriteNumber("stage", state.Stage);
        json.WriteNumber("step", state.Step);
        json.WriteNumber("epoch", state.Epoch);
        json.WriteNumber("batch", state.Batch);
        json.WriteNumber("seed", state.Seed);
        json.WriteNumber("total_steps", state.TotalSteps);
        if (state.TeacherTopK != 0) json.WriteNumber("teacher_top_k", state.TeacherTopK);
        if (state.Method == DpoMethod)
        {
            json.WriteNumber("beta", state.Beta);
            json.WriteNumber("pairs", state.Examples);
            if (state.ReferenceSha256 is not null) json.WriteString("reference_sha256", state.ReferenceSha256);
        }
        else if (state.Examples != 0) json.WriteNumber("sequences", state.Examples);
        // System.Text.Json writes doubles in their shortest round-trip form, so the history reloads bit for bit.
        json.WriteStartArray("losses");
        foreach (double loss in state.Losses) json.WriteNumberValue(loss);
        json.WriteEndArray();
        json.WriteEndObject();
    }

    private static CheckpointState ReadState(string statePath)
    {
        try
        {
            using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(statePath));
            JsonElement root = doc.RootElement;
            string method = root.TryGetProperty("method", out JsonElement m) ? m.GetString() ?? TrainerMethod : TrainerMethod;
            var state = new CheckpointState(root.GetProperty("stage").GetInt32(), root.GetProperty("step").GetInt32(),
                root.GetProperty("epoch").GetInt32(), root.GetProperty("batch").GetInt32(), root.GetProperty("seed").GetUInt64(),
                root.GetProperty("total_steps").GetInt32(), root.GetProperty("losses").EnumerateArray().Select(e => e.GetDouble()).ToArray())
            { Method = method, TeacherTopK = root.TryGetProperty("teacher_top_k", out JsonElement k) ? k.GetInt32() : 0 };
            if (method == DpoMethod)
                state = state with
                {
                    Beta = root.GetProperty("beta").GetDouble(), Examples = root.GetProperty("pairs").GetInt32(),
                    ReferenceSha256 = root.TryGetProperty("reference_sha256", out JsonElement reference) ? reference.GetString() : null,
                };
            else if (root.TryGetProperty("sequences", out JsonElement sequences)) state = state with { Examples = sequences.GetInt32() };
            else if (method != TrainerMethod) throw new CheckpointException(statePath, $"unknown training method '{method}'");
            if (state.Step < 0 || state.Losses.Length != state.Step)
                throw new CheckpointException(statePath, $"step {state.Step} with {state.Losses.Length} recorded losses");
            return state;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new CheckpointException(statePath, $"not a trainer state: {e.Message}");
        }
    }

    private static void CheckSeed(string statePath, CheckpointState state, ulong seed)
    {
        if (state.Seed != seed)
            throw new CheckpointException(statePath, string.Create(CultureInfo.InvariantCulture, $"checkpoint was made with seed {state.Seed}, this run uses {seed}"));
    }

    // The files are backend-neutral (float32 weights, float64 moments), so any backend resumes any other's checkpoint.
    private static void RestoreWeights(string stateDir, CheckpointState state, ITrainingBackend backend)
    {
        ModelFiles.LoadParameters(backend.Parameters, Path.Combine(stateDir, "model", "model.safetensors"));
        backend.UploadParameters();
        string optimizerPath = Path.Combine(stateDir, "optimizer.bin");
        try
        {
            using var reader = new BinaryReader(File.OpenRead(optimizerPath));
            backend.LoadOptimizer(reader);
        }
        catch (Exception e) when (e is EndOfStreamException or InvalidDataException or FileNotFoundException)
        {
            throw new CheckpointException(optimizerPath, e.Message);
        }
        if (backend.OptimizerStep != state.Step)
            throw new CheckpointException(optimizerPath, $"optimizer is at step {backend.OptimizerStep}, trainer.json at {state.Step} (interrupted save)");
    }

    private const string TrainerMethod = "trainer", DpoMethod = "dpo";

    /// <summary>What trainer.json holds. <see cref="Method"/>: "trainer" (a <see cref="Trainer"/> stage) or "dpo".</summary>
    internal sealed record CheckpointState(int Stage, int Step, int Epoch, int Batch, ulong Seed, int TotalSteps, double[] Losses)
    {
        public string Method { get; init; } = TrainerMethod;
        public double Beta { get; init; }
        /// <summary>Stage 2's <see cref="TrainerOptions.TeacherTopK"/> (0: full-vocabulary KL).</summary>
        public int TeacherTopK { get; init; }
        /// <summary>The number of training sequences, or for DPO of preference pairs (the batch order depends on it).</summary>
        public int Examples { get; init; }
        /// <summary>DPO: <see cref="DpoTrainer.ReferenceSha256"/> of the run's reference (null in checkpoints older than the field).</summary>
        public string? ReferenceSha256 { get; init; }
    }
}
