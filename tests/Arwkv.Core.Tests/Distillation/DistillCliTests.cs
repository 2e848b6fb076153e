using Arwkv.Cli;
using Arwkv.Training;

namespace Arwkv.Tests.Distillation;

public class DistillCliTests
{
    [Test]
    public async Task DistillStagesThenEvalAndGenerateFromTheCommandLine()
    {
        string root = Directory.CreateTempSubdirectory("arwkv-distill-cli-").FullName;
        try
        {
            string teacherDir = Path.Combine(root, "teacher");
            var teacher = new Qwen2Trainable<float>(new Qwen2Config
            {
                HiddenSize = 64, NumLayers = 1, IntermediateSize = 96, VocabSize = 259, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            }, 1, 1);
            teacher.Initialize(2);
            teacher.Save(teacherDir);
            string data = Path.Combine(root, "text.txt");
            File.WriteAllText(data, string.Concat(Enumerable.Repeat("There she blows! A hump like a snow-hill. ", 20)));
            string pairs = Path.Combine(root, "pairs.jsonl");
            File.WriteAllText(pairs, "{\"prompt\": \"Q: whale? A:\", \"chosen\": \" white\", \"rejected\": \" green\"}\n");

            async Task<(int, string, string)> Run(params string[] args)
            {
                var output = new StringWriter();
                var error = new StringWriter();
                int code = await CliApp.RunAsync(args, new CliHost(), output, error);
                return (code, output.ToString(), error.ToString());
            }

            string s1 = Path.Combine(root, "s1"), s2 = Path.Combine(root, "s2"), s3 = Path.Combine(root, "s3");
            string[] common = ["--data", data, "--teacher", teacherDir, "--steps", "3", "--batch", "2", "--seq-len", "32"];
            var (code, stdout, stderr) = await Run(["distill", "--stage", "1", "--out", s1, .. common]);
            Assert.That(code, Is.EqualTo(0), stderr);
            Assert.That(stdout, Does.Contain("[stage 1] step     3/3"));
            (code, _, stderr) = await Run(["distill", "--stage", "2", "--out", s2, "--init-from", s1, "--freeze-mlp", .. common]);
            Assert.That(code, Is.EqualTo(0), stderr);
            (code, stdout, stderr) = await Run(["distill", "--stage", "3", "--out", s3, "--init-from", s2, "--dpo", pairs, .. common]);
            Assert.That(code, Is.EqualTo(0), stderr);
            Assert.That(stdout, Does.Contain("[dpo] step     3/3"));

            (code, stdout, stderr) = await Run("eval", "-m", s2, "--data", data, "--teacher", teacherDir, "--seq-len", "32");
            Assert.That(code, Is.EqualTo(0), stderr);
            Assert.That(stdout, Does.Contain("perplexity").And.Contain("top-1 agreement"));

            (code, stdout, stderr) = await Run("generate", "-m", s3, "-p", "There she", "--temperature", "0", "-n", "5");
            Assert.That(code, Is.EqualTo(0), stderr);

            (code, _, stderr) = await Run(["distill", "--stage", "5", "--out", s1, .. common]);
            Assert.That(code, Is.Not.EqualTo(0));
            Assert.That(stderr, Does.Contain("--stage must be in [1, 3], got 5"));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
