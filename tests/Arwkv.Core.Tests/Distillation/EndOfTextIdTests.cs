using Arwkv.Tests.TestModels;
using Arwkv.Tests.Tokenization;
using Arwkv.Training;
using Arwkv.Training.Data;

namespace Arwkv.Tests.Distillation;

/// <summary>
/// Padding and DPO's end of response use the run's tokenizer's &lt;|endoftext|&gt;, not the byte tokenizer's 256, which in
/// the synthetic BPE tokenizer (as in any BPE vocabulary) is an ordinary token ("he").
/// </summary>
public class EndOfTextIdTests
{
    private const int Vocab = 272, Bpe = SyntheticTokenizerJson.EndOfText, Byte = ByteTokenizer.EndOfText;

    /// <summary>A directory with the synthetic BPE tokenizer.json and a random 272-id Qwen2 teacher.</summary>
    private static string BpeTeacher(TempDirectory root)
    {
        string dir = root.File("teacher");
        var teacher = new Qwen2Trainable<float>(new Qwen2Config
        {
            HiddenSize = 64, NumLayers = 1, IntermediateSize = 96, VocabSize = Vocab, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        }, 1, 1);
        teacher.Initialize(3);
        teacher.Save(dir);
        SyntheticTokenizerJson.Write(dir, SyntheticTokenizerJson.Build());
        return dir;
    }

    /// <summary>Twelve chats of very different lengths, so padded batches pair a long one with a short one.</summary>
    private static string Chats(TempDirectory root)
    {
        string path = root.File("chats.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, 12).Select(i =>
            $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"hello {i}\"}}, {{\"role\": \"assistant\", \"content\": \"{string.Concat(Enumerable.Repeat("hello world ", i * i / 3))}\"}}]}}"));
        return path;
    }

    private static ArwkvStudent<float> Student(int maxBatch, int maxSeqLen)
    {
        var student = new ArwkvStudent<float>(new ArwkvConfig { HiddenSize = 64, NumLayers = 1, IntermediateSize = 96, VocabSize = Vocab },
            maxBatch, maxSeqLen, new LoraRanks(8, 8, 4, 8));
        student.InitializeRwkv7(7);
        return student;
    }

    [Test]
    public void DistillPadsBatchesWithTheBpeTokenizersEndOfText()
    {
        using var root = new TempDirectory("arwkv-eot");
        var options = new DistillOptions
        {
            TeacherDirectory = BpeTeacher(root), DataPath = Chats(root), Stage = 3, OutputDirectory = root.File("out"), Steps = 1,
            LearningRate = 1e-3, BatchSize = 2, SeqLen = 64, Seed = 5, CheckpointEvery = 0, Pad = true, ValidationFraction = 0,
        };
        Trainer trainer = Distiller.Run(options, TextWriter.Null)!;
        Assert.That(trainer.Options.EndOfText, Is.EqualTo(Bpe));

        // A whole epoch of the run's own batches: every masked input is <|endoftext|>, both where a sequence was padded to
        // a multiple of 16 and where the batch extended a shorter sequence to the longest one (16 or more masked positions).
        int masked = 0, batchPadded = 0;
        for (int i = 0; i < trainer.Batches.BatchesPerEpoch; i++)
        {
            Batch batch = trainer.Batches.Next();
            for (int row = 0; row < batch.Size; row++)
            {
                int rowMasked = 0;
                for (int t = 0; t < batch.Length; t++)
                {
                    int at = row * batch.Length + t;
                    if (batch.Mask[at] != 0) continue;
                    rowMasked++;
                    Assert.That(batch.Inputs[at], Is.EqualTo(Bpe), $"batch {i}, row {row}, position {t}");
                }
                masked += rowMasked;
                if (rowMasked >= SequenceBuilder.PadMultiple) batchPadded++;
            }
        }
        Assert.That(batchPadded, Is.GreaterThan(0), "some rows were padded by the batch, not only by the sequence builder");
        TestContext.Out.WriteLine($"{masked} masked positions, {batchPadded} rows padded by the batch");
    }

    [Test]
    public void ThePadIdIsMaskedOutOfTheLossAndTheGradient()
    {
        using var root = new TempDirectory("arwkv-eot");
        ITrainingTokenizer tokenizer = TrainingTokenizers.FromDirectory(BpeTeacher(root), Vocab);
        List<TrainingSequence> train = Distiller.LoadSequences(Chats(root), 64, tokenizer, Vocab, "config.json", pad: true);
        var options = new TrainerOptions { Steps = 3, BatchSize = 2, SeqLen = 64, Seed = 5, LrMax = 3e-3, LrMin = 3e-4, WarmupSteps = 1 };

        // The batches of the two pad ids differ: the comparison below is of different inputs.
        var byteBatches = new BatchIterator(train, 2, options.Seed, padId: Byte);
        var bpeBatches = new BatchIterator(train, 2, options.Seed, padId: Bpe);
        int differing = Enumerable.Range(0, options.Steps).Count(_ => !byteBatches.Next().Inputs.SequenceEqual(bpeBatches.Next().Inputs));
        Assert.That(differing, Is.GreaterThan(0));

        var before = new Trainer(TrainingStage.Sft, null, Student(2, 64), train, options);
        var after = new Trainer(TrainingStage.Sft, null, Student(2, 64), train, options with { EndOfText = Bpe });
        Assert.That(before.Options.EndOfText, Is.EqualTo(Byte), "the default stays the byte tokenizer's");
        for (int i = 0; i < options.Steps; i++) Assert.That(after.TrainStep(), Is.EqualTo(before.TrainStep()), $"loss of step {i + 1}");
        Assert.That(after.Student!.Parameters.Data, Is.EqualTo(before.Student!.Parameters.Data), "weights after the steps");
        Assert.That(after.ValidationLoss(train), Is.EqualTo(before.ValidationLoss(train)));
    }

    [Test]
    public void DpoResponsesEndWithTheTokenizersEndOfText()
    {
        using var root = new TempDirectory("arwkv-eot");
        ITrainingTokenizer tokenizer = TrainingTokenizers.FromDirectory(BpeTeacher(root), Vocab);
        string pairsPath = root.File("pairs.jsonl");
        File.WriteAllLines(pairsPath, ["""{"prompt": "hello world?", "chosen": " hello", "rejected": " world, world"}"""]);
        List<PreferencePair> pairs = PreferencePair.Read(pairsPath, tokenizer);
        const int SeqLen = 16;
        ArwkvStudent<float> policy = Student(2, SeqLen);
        var dpo = new DpoTrainer(policy, Student(2, SeqLen), pairs, new TrainerOptions { Steps = 1, SeqLen = SeqLen, EndOfText = tokenizer.EndOfText }, 0.5);

        // Float64 reference: the summed log-probabilities of the chosen response's tokens and then of the end token.
        PreferencePair pair = pairs[0];
        double ResponseLogProb(int endOfText)
        {
            int[] tokens = [.. pair.Prompt, .. pair.Chosen, endOfText];
            Assert.That(tokens, Has.Length.LessThanOrEqualTo(SeqLen + 1));
            var inputs = new int[2 * SeqLen];
            var mask = new byte[2 * SeqLen];
            for (int t = 0; t + 1 < tokens.Length; t++) { inputs[t] = tokens[t]; mask[t] = 1; }
            float[] logits = policy.Forward(inputs, mask, 2, SeqLen).ToArray();
            double sum = 0;
            for (int t = pair.Prompt.Length - 1; t + 1 < tokens.Length; t++)
            {
                ReadOnlySpan<float> row = logits.AsSpan(t * Vocab, Vocab);
                double max = double.NegativeInfinity, z = 0;
                foreach (float x in row) max = Math.Max(max, x);
                foreach (float x in row) z += Math.Exp(x - max);
                sum += row[tokens[t + 1]] - max - Math.Log(z);
            }
            return sum;
        }
        double expected = ResponseLogProb(Bpe), withByteId = ResponseLogProb(Byte);
        Assert.That(Math.Abs(expected - withByteId), Is.GreaterThan(1e-3), "the end token matters, so the check can tell them apart");
        Assert.That(dpo.LogProbs(policy, 0).Chosen, Is.EqualTo(expected).Within(1e-4));
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            new DpoTrainer(policy, Student(2, SeqLen), pairs, new TrainerOptions { SeqLen = SeqLen, EndOfText = Vocab }, 0.5));
    }
}
