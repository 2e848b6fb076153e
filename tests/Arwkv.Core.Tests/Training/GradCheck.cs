namespace Arwkv.Tests.Training;

/// <summary>
/// Finite differences in float64 against analytic gradients: the five-point central stencil
/// f' = (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h, truncation O(h^4), with h = 1e-4 so that both truncation
/// (~1e-16) and rounding (~1e-16 |f| / h) stay far below the 1e-6 tolerance.
/// </summary>
internal static class GradCheck
{
    public const double Step = 1e-4;

    /// <summary>
    /// For each (name, values, analytic) checks every coordinate (or <paramref name="maxPerTensor"/> random ones)
    /// and returns the worst relative error |a - n| / max(|a|, |n|, 1e-4 * max|a| over the tensor, floor).
    /// The tensor-relative floor keeps coordinates whose gradient is 10^4 times smaller than the tensor's largest
    /// from being judged on finite-difference rounding noise.
    /// </summary>
    public static double Check(Func<double> loss, IEnumerable<(string Name, double[] Values, double[] Analytic)> tensors,
        int maxPerTensor = int.MaxValue, double floor = 1e-8, int seed = 1, double tolerance = 1e-6)
    {
        var rng = new Random(seed);
        double worst = 0;
        foreach (var (name, values, analytic) in tensors)
        {
            Assert.That(analytic, Has.Length.EqualTo(values.Length), name);
            IEnumerable<int> coords = values.Length <= maxPerTensor
                ? Enumerable.Range(0, values.Length)
                : Enumerable.Range(0, maxPerTensor).Select(_ => rng.Next(values.Length));
            double tensorFloor = Math.Max(floor, 1e-4 * analytic.Select(Math.Abs).DefaultIfEmpty(0).Max());
            foreach (int i in coords)
            {
                double keep = values[i];
                values[i] = keep + Step; double up = loss();
                values[i] = keep - Step; double down = loss();
                values[i] = keep + 2 * Step; double up2 = loss();
                values[i] = keep - 2 * Step; double down2 = loss();
                values[i] = keep;
                double numeric = (8 * (up - down) - (up2 - down2)) / (12 * Step), a = analytic[i];
                double scale = Math.Max(Math.Max(Math.Abs(a), Math.Abs(numeric)), tensorFloor);
                double rel = Math.Abs(a - numeric) / scale;
                worst = Math.Max(worst, rel);
                Assert.That(rel, Is.LessThan(tolerance), $"{name}[{i}]: analytic {a:R}, numeric {numeric:R}");
            }
        }
        return worst;
    }

    public static double[] Random(Random rng, int length, double lo, double hi)
    {
        var a = new double[length];
        for (int i = 0; i < length; i++) a[i] = lo + (hi - lo) * rng.NextDouble();
        return a;
    }

    public static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}
