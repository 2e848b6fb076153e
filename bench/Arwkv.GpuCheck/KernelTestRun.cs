using System.Text.Json;
using System.Text.RegularExpressions;
using NUnit.Framework.Api;
using NUnit.Framework.Interfaces;
using NUnit.Framework.Internal;

namespace Arwkv.GpuCheck;

/// <summary>
/// Runs the test classes of Arwkv.Core.Tests whose full name matches a pattern through NUnit's framework engine, the
/// one NUnitLite wraps, so that the GPU machine runs exactly the tests CI runs on the executor, with no copy of them
/// and no test host (which needs the .NET SDK).
/// </summary>
static class KernelTestRun
{
    /// <summary>Writes a "tests" array (one entry per test case) and counts; returns the number that failed.</summary>
    public static int Run(Utf8JsonWriter json, string classPattern)
    {
        var regex = new Regex(classPattern);
        var runner = new NUnitTestAssemblyRunner(new DefaultTestAssemblyBuilder());
        runner.Load(typeof(Arwkv.Tests.Hip.HipKernelTests).Assembly, new Dictionary<string, object>());
        var listener = new Listener(regex);
        runner.Run(listener, new ClassFilter(regex));

        json.WriteStartArray("tests");
        foreach (ITestResult result in listener.Results)
        {
            json.WriteStartObject();
            json.WriteString("name", result.Test.FullName);
            json.WriteString("outcome", result.ResultState.Status.ToString());
            json.WriteNumber("seconds", Math.Round(result.Duration, 3));
            if (result.ResultState.Status != TestStatus.Passed && !string.IsNullOrEmpty(result.Message))
                json.WriteString("message", result.Message);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        int Count(TestStatus status) => listener.Results.Count(r => r.ResultState.Status == status);
        int passed = Count(TestStatus.Passed), failed = Count(TestStatus.Failed), skipped = Count(TestStatus.Skipped) + Count(TestStatus.Inconclusive);
        json.WriteStartObject("test_counts");
        json.WriteNumber("passed", passed);
        json.WriteNumber("failed", failed);
        json.WriteNumber("skipped", skipped);
        json.WriteEndObject();
        Console.WriteLine($"tests: {passed} passed, {failed} failed, {skipped} skipped");
        if (listener.Results.Count == 0)
        {
            Console.WriteLine($"tests: no test class matches {classPattern}");
            return 1;
        }
        return failed;
    }

    /// <summary>Keeps the classes whose full name matches (and everything inside them).</summary>
    sealed class ClassFilter(Regex pattern) : TestFilter
    {
        public override bool Match(ITest test) => test.ClassName is { } name && pattern.IsMatch(name);

        public override TNode AddToXml(TNode parentNode, bool recursive) =>
            parentNode.AddElement("class", pattern.ToString());
    }

    sealed class Listener(Regex pattern) : ITestListener
    {
        public List<ITestResult> Results { get; } = [];

        public void TestStarted(ITest test)
        {
        }

        public void TestFinished(ITestResult result)
        {
            if (result.Test.IsSuite || result.Test.ClassName is not { } name || !pattern.IsMatch(name)) return;
            Results.Add(result);
            string status = result.ResultState.Status.ToString().ToUpperInvariant();
            Console.WriteLine($"  {status,-7} {result.Test.FullName} ({result.Duration:F2} s)");
            if (result.ResultState.Status == TestStatus.Failed)
                Console.WriteLine("          " + result.Message.Replace("\n", "\n          "));
        }

        public void TestOutput(TestOutput output)
        {
        }

        public void SendMessage(TestMessage message)
        {
        }
    }
}
