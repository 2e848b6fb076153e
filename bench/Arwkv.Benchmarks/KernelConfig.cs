using Arwkv.IO;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Arwkv.Benchmarks;

/// <summary>Adds throughput columns: weight bytes per second (the decode limit) and GFLOP/s (the prefill one).</summary>
public class KernelConfig : ManualConfig
{
    public KernelConfig()
    {
        AddColumn(new ThroughputColumn("GB/s", gigaBytes: true));
        AddColumn(new ThroughputColumn("GFLOP/s", gigaBytes: false));
    }

    public static (int Rows, int Cols) ParseShape(string shape)
    {
        var parts = shape.Split('x');
        return (int.Parse(parts[0]), int.Parse(parts[1]));
    }

    /// <summary>Bytes of weights read and floating-point operations done by one call, from the case's parameters.</summary>
    public static (double Bytes, double Flops)? Work(BenchmarkCase benchmarkCase)
    {
        var parameters = benchmarkCase.Parameters;
        string? shape = parameters.Items.FirstOrDefault(p => p.Name == "Shape")?.Value as string;
        if (shape is null)
        {
            if (benchmarkCase.Descriptor.Type != typeof(ConvertBenchmarks)) return null;
            // Conversions: bytes read plus bytes written; no FLOPs to speak of.
            const double count = 4864.0 * 896;
            return (count * 6, 0);
        }
        var (rows, cols) = ParseShape(shape);
        var type = (DType)parameters["Type"];
        // The scan reads every byte once and does no arithmetic worth counting.
        if (benchmarkCase.Descriptor.Type == typeof(NonFiniteScanBenchmarks)) return ((double)rows * cols * type.SizeOf(), 0);
        int tokens = parameters.Items.Any(p => p.Name == "Tokens") ? (int)parameters["Tokens"] : 1;
        // The SwiGLU benchmarks multiply by two matrices of the shape.
        int matrices = benchmarkCase.Descriptor.Type == typeof(SwiGluGemmBenchmarks) ? 2 : 1;
        return (matrices * (double)rows * cols * type.SizeOf(), matrices * 2.0 * rows * cols * tokens);
    }

    sealed class ThroughputColumn(string name, bool gigaBytes) : IColumn
    {
        public string Id => nameof(ThroughputColumn) + name;
        public string ColumnName => name;
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => gigaBytes ? "Weight (or converted) bytes per second, 1e9" : "Floating-point operations per second, 1e9";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var stats = summary[benchmarkCase]?.ResultStatistics;
            if (stats is null || Work(benchmarkCase) is not { } work) return "-";
            double amount = gigaBytes ? work.Bytes : work.Flops;
            if (amount == 0) return "-";
            return (amount / stats.Mean).ToString("F1"); // per nanosecond = giga per second
        }
    }
}
