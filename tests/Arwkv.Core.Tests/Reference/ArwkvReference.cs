using System.Text.Json;
using Arwkv.IO;

namespace Arwkv.Tests.Reference;

/// <summary>
/// An independent float64 ARWKV forward pass: plain loops straight from ARWKV.md section 2, one token at a time,
/// sharing no code with the fast path beyond reading tensors. Every faster implementation is checked against it.
/// </summary>
internal sealed class ArwkvReference
{
    private readonly Dictionary<string, double[]> _t = new(StringComparer.Ordinal);
    private readonly int C, L, F, V, N, H;
    private readonly bool _gated;
    private readonly double _eps;

    public ArwkvReference(string directory)
    {
        using (var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(directory, "config.json"))))
        {
            JsonElement r = doc.RootElement;
            C = r.GetProperty("hidden_size").GetInt32();
            L = r.GetProperty("num_hidden_layers").GetInt32();
            F = r.GetProperty("intermediate_size").GetInt32();
            V = r.GetProperty("vocab_size").GetInt32();
            N = r.TryGetProperty("head_size", out var hs) ? hs.GetInt32() : 64;
            _gated = !r.TryGetProperty("wkv_has_gate", out var g) || g.GetBoolean();
            _eps = r.TryGetProperty("rms_norm_eps", out var e) ? e.GetDouble() : 1e-6;
            if (r.TryGetProperty("tie_word_embeddings", out var tie) && tie.GetBoolean()) Tied = true;
        }
        H = C / N;
        var files = Directory.GetFiles(directory, "*.safetensors");
        foreach (string f in files)
        {
            using var st = SafeTensorsFile.Open(f);
            foreach (TensorInfo info in st.Tensors.Values)
                _t[info.Name] = Array.ConvertAll(st.ReadFloat32(info), x => (double)x);
        }
    }

    public bool Tied { get; }

    private double[] T(string name) => _t[name];
    private double[] Tm(int l, string name) => _t[$"model.layers.{l}.self_attn.time_mixer.{name}"];

    /// <summary>Logits of every position, [ids.Length, V].</summary>
    public double[,] Logits(IReadOnlyList<int> ids)
    {
        var logits = new double[ids.Count, V];
        var shift = new double[L][];
        var state = new double[L][];
        for (int l = 0; l < L; l++) { shift[l] = new double[C]; state[l] = new double[H * N * N]; }

        for (int t = 0; t < ids.Count; t++)
        {
            var h = new double[C];
            Array.Copy(T("model.embed_tokens.weight"), (long)ids[t] * C, h, 0, C);
            double[]? vFirst = null;
            for (int l = 0; l < L; l++)
            {
                double[] x = RmsNorm(h, T($"model.layers.{l}.input_layernorm.weight"));
                double[] att = TimeMix(l, x, shift[l], state[l], ref vFirst);
                for (int c = 0; c < C; c++) h[c] += att[c];
                double[] x2 = RmsNorm(h, T($"model.layers.{l}.post_attention_layernorm.weight"));
                double[] gate = Linear(T($"model.layers.{l}.mlp.gate_proj.weight"), x2, F, C);
                double[] up = Linear(T($"model.layers.{l}.mlp.up_proj.weight"), x2, F, C);
                var act = new double[F];
                for (int f = 0; f < F; f++) act[f] = gate[f] / (1 + Math.Exp(-gate[f])) * up[f];
                double[] down = Linear(T($"model.layers.{l}.mlp.down_proj.weight"), act, C, F);
                for (int c = 0; c < C; c++) h[c] += down[c];
            }
            double[] hn = RmsNorm(h, T("model.norm.weight"));
            double[] head = Tied ? T("model.embed_tokens.weight") : T("lm_head.weight");
            double[] row = Linear(head, hn, V, C);
            for (int v = 0; v < V; v++) logits[t, v] = row[v];
        }
        return logits;
    }

    private double[] TimeMix(int l, double[] x, double[] shift, double[] S, ref double[]? vFirst)
    {
        var xx = new double[C];
        for (int c = 0; c < C; c++) xx[c] = shift[c] - x[c];
        Array.Copy(x, shift, C);
        double[] Lerp(string name)
        {
            double[] mu = Tm(l, name);
            var o = new double[C];
            for (int c = 0; c < C; c++) o[c] = x[c] + xx[c] * mu[c];
            return o;
        }
        double[] xr = Lerp("x_r"), xw = Lerp("x_w"), xk = Lerp("x_k"), xv = Lerp("x_v"), xa = Lerp("x_a");
        double[]? xg = _gated ? Lerp("x_g") : null;

        double[] r = Linear(Tm(l, "receptance.weight"), xr, C, C);
        double[] k = Linear(Tm(l, "key.weight"), xk, C, C);
        double[] v = Linear(Tm(l, "value.weight"), xv, C, C);

        double[] w0 = Tm(l, "w0"), wl = Lora(xw, Tm(l, "w1"), Tm(l, "w2"), Math.Tanh, tanhInner: true);
        var decay = new double[C];
        for (int c = 0; c < C; c++) decay[c] = Math.Exp(-Math.Exp(-0.5) * Sigmoid(w0[c] + wl[c]));

        if (l == 0) vFirst = (double[])v.Clone();
        else
        {
            double[] v0 = Tm(l, "v0"), vl = Lora(xv, Tm(l, "v1"), Tm(l, "v2"), null, tanhInner: false);
            for (int c = 0; c < C; c++) v[c] += (vFirst![c] - v[c]) * Sigmoid(v0[c] + vl[c]);
        }
        double[] a0 = Tm(l, "a0"), al = Lora(xa, Tm(l, "a1"), Tm(l, "a2"), null, tanhInner: false);
        var a = new double[C];
        for (int c = 0; c < C; c++) a[c] = Sigmoid(a0[c] + al[c]);
        double[]? g = xg is null ? null : Lora(xg, Tm(l, "g1"), Tm(l, "g2"), Sigmoid, tanhInner: true);

        double[] kK = Tm(l, "k_k"), kA = Tm(l, "k_a"), rK = Tm(l, "r_k");
        var kk = new double[C];
        for (int c = 0; c < C; c++) kk[c] = k[c] * kK[c];
        for (int hd = 0; hd < H; hd++)
        {
            double norm = 0;
            for (int j = 0; j < N; j++) norm += kk[hd * N + j] * kk[hd * N + j];
            norm = Math.Max(Math.Sqrt(norm), 1e-12);
            for (int j = 0; j < N; j++) kk[hd * N + j] /= norm;
        }
        for (int c = 0; c < C; c++) k[c] *= 1 + (a[c] - 1) * kA[c];

        var y = new double[C];
        for (int hd = 0; hd < H; hd++)
        {
            int o = hd * N, so = hd * N * N;
            for (int i = 0; i < N; i++)
            {
                double sa = 0;
                for (int j = 0; j < N; j++) sa += S[so + i * N + j] * -kk[o + j];
                double yi = 0;
                for (int j = 0; j < N; j++)
                {
                    ref double s = ref S[so + i * N + j];
                    s = s * decay[o + j] + v[o + i] * k[o + j] + sa * kk[o + j] * a[o + j];
                    yi += s * r[o + j];
                }
                y[o + i] = yi;
            }
            double bonus = 0;
            for (int j = 0; j < N; j++) bonus += r[o + j] * k[o + j] * rK[hd * N + j];
            for (int i = 0; i < N; i++) y[o + i] += bonus * v[o + i];
        }
        if (g is not null) for (int c = 0; c < C; c++) y[c] *= g[c];
        return Linear(Tm(l, "output.weight"), y, C, C);
    }

    /// <summary>(x @ A) then the activation then @ B, with A [C, rank] and B [rank, C] in the HF layout.</summary>
    private double[] Lora(double[] x, double[] A, double[] B, Func<double, double>? act, bool tanhInner)
    {
        int rank = A.Length / C;
        var mid = new double[rank];
        for (int j = 0; j < rank; j++)
        {
            double s = 0;
            for (int c = 0; c < C; c++) s += x[c] * A[c * rank + j];
            mid[j] = tanhInner && act is not null ? act(s) : s;
        }
        var o = new double[C];
        for (int c = 0; c < C; c++)
        {
            double s = 0;
            for (int j = 0; j < rank; j++) s += mid[j] * B[j * C + c];
            o[c] = s;
        }
        return o;
    }

    private double[] RmsNorm(double[] x, double[] w)
    {
        double ss = 0;
        foreach (double v in x) ss += v * v;
        double inv = 1 / Math.Sqrt(ss / x.Length + _eps);
        var o = new double[x.Length];
        for (int c = 0; c < x.Length; c++) o[c] = x[c] * inv * w[c];
        return o;
    }

    /// <summary>y = W x with W [rows, cols] row-major (nn.Linear).</summary>
    private static double[] Linear(double[] W, double[] x, int rows, int cols)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            long o = (long)r * cols;
            for (int c = 0; c < cols; c++) s += W[o + c] * x[c];
            y[r] = s;
        }
        return y;
    }

    private static double Sigmoid(double z) => 1 / (1 + Math.Exp(-z));

    /// <summary>Relative L2 error ||a - b|| / ||b|| between float logits and reference logits.</summary>
    public static double RelativeL2(ReadOnlySpan<float> actual, double[,] expected)
    {
        double num = 0, den = 0;
        int i = 0;
        foreach (double e in expected)
        {
            double d = actual[i++] - e;
            num += d * d;
            den += e * e;
        }
        if (i != actual.Length) throw new ArgumentException($"length mismatch: {actual.Length} vs {i}");
        return Math.Sqrt(num / den);
    }
}
