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
        student.InitializeRwkv7(seed);
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
/// A resumable training checkpoint in one directory: model/ (the trained model in its Hugging Face layout),
/// optimizer.bin (AdamW's step count and float64 moments) and trainer.json (stage, step, batch position, seed and
/// the loss history). Each file is written atomically (temp file, then rename), trainer.json last; because a run
/// killed between files can leave a new model with an old trainer.json, <see cref="Load"/> checks the optimizer's
/// step count against trainer.json and refuses a mismatched pair.
/// </summary>
internal static class TrainingCheckpoint
{
    public static void Save(string directory, Trainer trainer)
    {
        Directory.CreateDirectory(directory);
        string modelDir = Path.Combine(directory, "model");
        if (trainer.Stage == TrainingStage.Teacher) trainer.Teacher!.Save(modelDir);
        else ModelFiles.SaveStudent(modelDir, trainer.Student!);
        AtomicFile.Write(Path.Combine(directory, "optimizer.bin"), stream =>
        {
            using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
            trainer.Optimizer.SaveState(writer);
        });
        BatchPosition position = trainer.Batches.Position;
        var state = new CheckpointState((int)trainer.Stage, trainer.Step, position.Epoch, position.Batch, trainer.Options.Seed,
            trainer.Options.Steps, trainer.Losses.ToArray());
        AtomicFile.Write(Path.Combine(directory, "trainer.json"), stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteNumber("stage", state.Stage);
            json.WriteNumber("step", state.Step);
            json.WriteNumber("epoch", state.Epoch);
            json.WriteNumber("batch", state.Batch);
            json.WriteNumber("seed", state.Seed);
            json.WriteNumber("total_steps", state.TotalSteps);
            json.WriteStartArray("losses");
            foreach (double loss in state.Losses) json.WriteNumberValue(loss);
            json.WriteEndArray();
            json.WriteEndObject();
        });
    }

    public static bool Exists(string directory) => File.Exists(Path.Combine(directory, "trainer.json"));

    /// <summary>Restores parameters, optimizer state, step, loss history and batch position into a freshly built trainer.</summary>
    public static void Load(string directory, Trainer trainer)
    {
        string statePath = Path.Combine(directory, "trainer.json");
        if (!File.Exists(statePath)) throw new CheckpointException(statePath, "no training checkpoint here");
        CheckpointState state;
        try
        {
            using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(statePath));
            JsonElement root = doc.RootElement;
            state = new CheckpointState(root.GetProperty("stage").GetInt32(), root.GetProperty("step").GetInt32(),
                root.GetProperty("epoch").GetInt32(), root.GetProperty("batch").GetInt32(), root.GetProperty("seed").GetUInt64(),
                root.GetProperty("total_steps").GetInt32(), root.GetProperty("losses").EnumerateArray().Select(e => e.GetDouble()).ToArray());
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new CheckpointException(statePath, $"not a trainer state: {e.Message}");
        }
        if (state.Stage != (int)trainer.Stage)
            throw new CheckpointException(statePath, $"checkpoint is of stage {(TrainingStage)state.Stage}, this run is {trainer.Stage}");
        if (state.Seed != trainer.Options.Seed)
            throw new CheckpointException(statePath, string.Create(CultureInfo.InvariantCulture, $"checkpoint was made with seed {state.Seed}, this run uses {trainer.Options.Seed}"));
        ModelFiles.LoadParameters(trainer.Parameters, Path.Combine(directory, "model", "model.safetensors"));
        string optimizerPath = Path.Combine(directory, "optimizer.bin");
        try
        {
            using var reader = new BinaryReader(File.OpenRead(optimizerPath));
            trainer.Optimizer.LoadState(reader);
        }
        catch (Exception e) when (e is EndOfStreamException or InvalidDataException or FileNotFoundException)
        {
            throw new CheckpointException(optimizerPath, e.Message);
        }
        if (trainer.Optimizer.StepCount != state.Step)
            throw new CheckpointException(optimizerPath, $"optimizer is at step {trainer.Optimizer.StepCount}, trainer.json at {state.Step} (interrupted save)");
        trainer.Batches.Seek(new BatchPosition(state.Epoch, state.Batch));
        trainer.RestoreProgress(state.Step, state.Losses);
    }

    internal sealed record CheckpointState(int Stage, int Step, int Epoch, int Batch, ulong Seed, int TotalSteps, double[] Losses);
}
