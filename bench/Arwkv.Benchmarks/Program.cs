using Arwkv.Benchmarks;
using BenchmarkDotNet.Running;

if (args.Length > 0 && args[0] == "probe")
{
    Probe.Run(args.Skip(1).ToArray());
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
