using System.Globalization;
using System.Net;
using System.Text;
using Arwkv.IO;

namespace Arwkv.Training;

/// <summary>Writes training losses as a hand-made SVG: one panel per stage (own y scale), axes, ticks and labels.</summary>
internal static class LossCurve
{
    private const int Width = 720, PanelHeight = 220, Left = 70, Right = 20, Top = 30, Bottom = 40;
    private static readonly string[] Colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

    public static string ToSvg(IReadOnlyList<(string Title, IReadOnlyList<double> Losses)> stages)
    {
        var svg = new StringBuilder();
        int height = Math.Max(1, stages.Count) * PanelHeight;
        svg.Append(Invariant($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{height}\" viewBox=\"0 0 {Width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n"));
        svg.Append(Invariant($"<rect width=\"{Width}\" height=\"{height}\" fill=\"white\"/>\n"));
        for (int p = 0; p < stages.Count; p++)
        {
            var (title, losses) = stages[p];
            int y0 = p * PanelHeight + Top, plotH = PanelHeight - Top - Bottom, plotW = Width - Left - Right;
            svg.Append(Invariant($"<text x=\"{Left}\" y=\"{y0 - 10}\" font-size=\"13\" font-weight=\"bold\">{WebUtility.HtmlEncode(title)}</text>\n"));
            svg.Append(Invariant($"<line x1=\"{Left}\" y1=\"{y0}\" x2=\"{Left}\" y2=\"{y0 + plotH}\" stroke=\"black\"/>\n"));
            svg.Append(Invariant($"<line x1=\"{Left}\" y1=\"{y0 + plotH}\" x2=\"{Left + plotW}\" y2=\"{y0 + plotH}\" stroke=\"black\"/>\n"));
            svg.Append(Invariant($"<text x=\"{Left + plotW / 2}\" y=\"{y0 + plotH + 30}\" text-anchor=\"middle\">step</text>\n"));
            svg.Append(Invariant($"<text x=\"15\" y=\"{y0 + plotH / 2}\" text-anchor=\"middle\" transform=\"rotate(-90 15 {y0 + plotH / 2})\">loss</text>\n"));
            var finite = losses.Where(double.IsFinite).ToList();
            if (finite.Count == 0) continue;
            double lo = finite.Min(), hi = finite.Max();
            if (hi - lo < 1e-12) { hi += 0.5; lo -= 0.5; }
            double X(int i) => Left + (losses.Count == 1 ? 0 : (double)i / (losses.Count - 1) * plotW);
            double Y(double l) => y0 + plotH - (l - lo) / (hi - lo) * plotH;
            for (int k = 0; k <= 4; k++)
            {
                double value = lo + (hi - lo) * k / 4;
                double y = Y(value);
                svg.Append(Invariant($"<line x1=\"{Left - 4}\" y1=\"{y:F1}\" x2=\"{Left}\" y2=\"{y:F1}\" stroke=\"black\"/>"));
                svg.Append(Invariant($"<text x=\"{Left - 6}\" y=\"{y + 4:F1}\" text-anchor=\"end\">{value:G4}</text>\n"));
                int step = (int)Math.Round((losses.Count - 1) * k / 4.0);
                double x = X(step);
                svg.Append(Invariant($"<line x1=\"{x:F1}\" y1=\"{y0 + plotH}\" x2=\"{x:F1}\" y2=\"{y0 + plotH + 4}\" stroke=\"black\"/>"));
                svg.Append(Invariant($"<text x=\"{x:F1}\" y=\"{y0 + plotH + 16}\" text-anchor=\"middle\">{step + 1}</text>\n"));
            }
            svg.Append(Invariant($"<polyline fill=\"none\" stroke=\"{Colors[p % Colors.Length]}\" stroke-width=\"1.2\" points=\""));
            for (int i = 0; i < losses.Count; i++)
                if (double.IsFinite(losses[i])) svg.Append(Invariant($"{X(i):F1},{Y(losses[i]):F1} "));
            svg.Append("\"/>\n");
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    public static void Write(string path, IReadOnlyList<(string Title, IReadOnlyList<double> Losses)> stages) =>
        AtomicFile.WriteAllText(path, ToSvg(stages));

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
