using System.CommandLine;
using Arwkv.Training;

namespace Arwkv.Cli;

/// <summary>The training commands: demo, distill and eval (all CPU; byte-level demo models or real Qwen2.5 checkpoints).</summary>
internal static partial class CliApp
{
    /// <summary>Most optimizer steps (or checkpoint interval) a command accepts.</summary>
    internal const int StepLimit = 100_000_000;

    private static Command DemoCommand()
    {
        var output = new Option<string>("--out") { Description = "Output directory", DefaultValueFactory = _ => Path.Combine("models", "demo") };
        var teacherDir = new Option<string?>("--teacher-dir") { Description = "Teacher cache (default ./models/demo-teacher; with --quick OUT/teacher)" };
        var data = new Option<string>("--data") { Description = "Training text", DefaultValueFactory = _ => Path.Combine("data", "moby-dick.txt") };
        var teacherSteps = BoundedOption.Create("--teacher-steps", "Teacher training steps (0: default)", 0, StepLimit, 0);
        var stage1Steps = BoundedOption.Create("--stage1-steps", "Stage 1 (attention alignment) steps (0: default)", 0, StepLimit, 0);
        var stage2Steps = BoundedOption.Create("--stage2-steps", "Stage 2 (KL distillation) steps (0: default)", 0, StepLimit, 0);
        var seed = BoundedOption.Create("--seed", "Random seed", int.MinValue, int.MaxValue, 1);
        var quick = new Option<bool>("--quick") { Description = "A tiny model on a slice of the text (seconds)" };
        var command = new Command("demo", "Train a small Qwen2 teacher on a text, distill it into ARWKV (stages 1 and 2) and compare them");
        foreach (Option o in new Option[] { output, teacherDir, data, teacherSteps, stage1Steps, stage2Steps, seed, quick }) command.Options.Add(o);
        SetBody(command, (result, stdout, stderr, cancellationToken) =>
        {
            Demo.Run(new DemoOptions
            {
                OutputDirectory = result.GetValue(output)!, TeacherDirectory = result.GetValue(teacherDir), DataPath = result.GetValue(data)!,
                TeacherSteps = result.GetValue(teacherSteps), Stage1Steps = result.GetValue(stage1Steps), Stage2Steps = result.GetValue(stage2Steps),
                Seed = result.GetValue(seed), Quick = result.GetValue(quick),
            }, stdout, cancellationToken);
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command DistillCommand()
    {
        var teacher = new Option<string>("--teacher")
        {
            Description = "Qwen2/Qwen2.5 teacher checkpoint directory (Hugging Face layout: config.json, model.safetensors or sharded with "
                + "model.safetensors.index.json, F32/F16/BF16, tied or untied, tokenizer.json), or a demo byte-level teacher",
            Required = true,
        };
        var data = new Option<string>("--data")
        {
            Description = "Training text (.txt, or .jsonl with text/messages), tokenized with the teacher's tokenizer.json; "
                + "chat markers become special tokens, documents are separated by <|endoftext|>",
            Required = true,
        };
        var stage = BoundedOption.CreateRequired("--stage", "1: attention alignment, 2: KL distillation, 3: SFT", 1, 3);
        var output = new Option<string>("--out") { Description = "Output directory (student + checkpoint/)", Required = true };
        var initFrom = new Option<string?>("--init-from") { Description = "Start from this student checkpoint" };
        var steps = BoundedOption.Create("--steps", "Optimizer steps", 1, StepLimit, 200);
        var lr = BoundedOption.Create("--lr", "Peak learning rate (decays tenfold)", 0.0, 1.0, 1e-3, minExclusive: true);
        var batch = BoundedOption.Create("--batch", "Sequences per batch", 1, 4096, 8);
        var seqLen = BoundedOption.Create("--seq-len", "Tokens per sequence", 1, TokenLimit, 128);
        var seed = BoundedOption.Create("--seed", "Random seed", int.MinValue, int.MaxValue, 1);
        var freezeMlp = new Option<bool>("--freeze-mlp") { Description = "Stages 2/3: keep the MLPs fixed" };
        var resume = new Option<bool>("--resume") { Description = "Continue from OUT/checkpoint" };
        var checkpointEvery = BoundedOption.Create("--checkpoint-every", "Checkpoint interval in steps (0: no checkpoint before the last step, so a killed run cannot resume)", 0, StepLimit, 50);
        var dpo = new Option<string?>("--dpo") { Description = "Stage 3: preference pairs (.jsonl with prompt/chosen/rejected) for DPO instead of SFT" };
        var beta = BoundedOption.Create("--beta", "DPO beta", 0.0, 1000.0, 0.1, minExclusive: true);
        var teacherTopK = BoundedOption.Create("--teacher-top-k",
            "Stage 2 loss: 0 = KL(teacher || student) over the full vocabulary; K > 0 = KL from the teacher restricted to its "
                + "K most likely tokens per position and renormalized over them (q_i = softmax of those K logits) to the student's "
                + "full softmax: sum_i q_i (log q_i - log p_student(id_i)), averaged over tokens", 0, 10_000_000, 0);
        var command = new Command("distill", "Distill a Qwen2/Qwen2.5 teacher into an ARWKV student (one stage); OUT gets the student and the teacher's tokenizer");
        foreach (Option o in new Option[] { teacher, data, stage, output, initFrom, steps, lr, batch, seqLen, seed, freezeMlp, resume, checkpointEvery, dpo, beta, teacherTopK })
            command.Options.Add(o);
        var lossLog = new Option<string?>("--loss-log") { Description = "Write \"step loss\" lines (exact round-trip values) to this file; kept consistent across --resume" };
        command.Options.Add(lossLog);
        var validationFraction = BoundedOption.Create("--validation-fraction",
            "Share of the sequences held out (seeded) for a validation loss reported about ten times per run and plotted in loss.svg (0: none; below 1)",
            0.0, 0.99, 0.05);
        command.Options.Add(validationFraction);
        var pad = new Option<bool>("--pad")
        {
            Description = "One document (or chat) per sequence, padded to a multiple of 16 with the padding masked out, instead of packing documents end to end; --seq-len must be a multiple of 16",
        };
        command.Options.Add(pad);
        SetBody(command, (result, stdout, stderr, cancellationToken) =>
        {
            Distiller.Run(new DistillOptions
            {
                TeacherDirectory = result.GetValue(teacher)!, DataPath = result.GetValue(data)!, Stage = result.GetValue(stage),
                OutputDirectory = result.GetValue(output)!, InitFrom = result.GetValue(initFrom), Steps = result.GetValue(steps),
                LearningRate = result.GetValue(lr), BatchSize = result.GetValue(batch), SeqLen = result.GetValue(seqLen),
                Seed = result.GetValue(seed), FreezeMlp = result.GetValue(freezeMlp), Resume = result.GetValue(resume),
                CheckpointEvery = result.GetValue(checkpointEvery), PreferencePath = result.GetValue(dpo), Beta = result.GetValue(beta),
                TeacherTopK = result.GetValue(teacherTopK),
                LossLogPath = result.GetValue(lossLog),
                ValidationFraction = result.GetValue(validationFraction),
                Pad = result.GetValue(pad),
            }, stdout, cancellationToken, stderr);
            return Task.FromResult(0);
        });
        return command;
    }

    private static Command EvalCommand()
    {
        var model = new Option<string>("--model", "-m") { Description = "Checkpoint to evaluate (ARWKV or Qwen2, single-file or sharded)", Required = true };
        var data = new Option<string>("--data") { Description = "Evaluation text (.txt or .jsonl), tokenized with the model's tokenizer.json", Required = true };
        var teacher = new Option<string?>("--teacher") { Description = "Teacher checkpoint (same tokenizer as the model): also report KL and top-1 agreement" };
        var seqLen = BoundedOption.Create("--seq-len", "Tokens per sequence", 1, TokenLimit, 128);
        var maxSequences = BoundedOption.Create("--max-sequences", "Evaluate at most this many sequences (0: all)", 0, 100_000_000, 64);
        var command = new Command("eval", "Perplexity of a checkpoint on a text (and KL / top-1 agreement against a teacher)");
        foreach (Option o in new Option[] { model, data, teacher, seqLen, maxSequences }) command.Options.Add(o);
        SetBody(command, (result, stdout, stderr, cancellationToken) =>
        {
            Distiller.Evaluate(result.GetValue(model)!, result.GetValue(data)!, result.GetValue(teacher), result.GetValue(seqLen), result.GetValue(maxSequences), stdout);
            return Task.FromResult(0);
        });
        return command;
    }
}
