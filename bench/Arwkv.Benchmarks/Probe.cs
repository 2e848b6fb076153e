using System.Diagnostics;
using Arwkv.IO;
using Arwkv.Kernels;

namespace Arwkv.Benchmarks;

/// <summary>
/// A Stopwatch measurement of the kernels that finishes in seconds (`probe`); BenchmarkDotNet gives the careful
/// numbers, this is for quick checks while tuning. Prints the median of several timed repetitions.
/// </summary>
static class Probe
{
    public static void Run(string[] args)
    {
        int threads = args.Length > 0 ? int.Parse(args[0]) : 2;
        string only = args.Length > 1 ? args[1] : "all"; // "gemv", "gemm" or "all"
        using var pool = new KernelThreadPool(threads);
        Console.WriteLine($"threads {threads}, path {MatMul.Isa}");
        if (only is "all" or "peak")
        {
            var sink = new float[16];
            const long iterations = 2_000_000;
            double seconds = Median(() => FmaPeak(iterations, sink), 50_000_000);
            double flops = iterations * 12.0 * 16 * 2;
            Console.WriteLine($"FMA peak, one thread, registers only: {flops / seconds / 1e9,7:F1} GFLOP/s  (per CPU-second {flops / LastCpuSeconds / 1e9,6:F1})");
        }
        if (only == "micro") MicroProbe();
        if (only == "gemmbf16")
        {
            // One shape, long enough to profile: the MLP gate/up projection of the 0.5B model.
            const int tokens = 128;
            using var m = new BenchMatrix(DType.BF16, 4864, 896);
            var x = BenchMatrix.RandomVector(896 * tokens);
            var y = new float[4864 * tokens];
            for (int round = 0; round < 5; round++)
            {
                double seconds = Median(() => MatMul.Gemm(m.Matrix, x, y, tokens, pool), 2L * 4864 * 896 * tokens / 50);
                Console.WriteLine($"Gemm BF16 4864x896 x{tokens}: {seconds * 1e3,8:F2} ms {2.0 * 4864 * 896 * tokens / seconds / 1e9,7:F1} GFLOP/s");
            }
        }
        if (only == "pool")
        {
            // Equal items of pure register work through the pool: how busy the worker is and how the items split
            // when nothing but the pool's hand-off and the machine itself can make threads idle.
            var counts = new int[threads];
            var work = new SpinItems { Counts = counts };
            for (int round = 0; round < 5; round++)
            {
                Array.Clear(counts);
                long busy0 = KernelThreadPool.WorkerBusyTicks, start = Stopwatch.GetTimestamp();
                for (int job = 0; job < 2000; job++) pool.Run(ref work, 32);
                long wall = Stopwatch.GetTimestamp() - start;
                Console.WriteLine($"2000 jobs x 32 items: {Stopwatch.GetElapsedTime(start).TotalMilliseconds:F1} ms; worker busy " +
                    $"{(double)(KernelThreadPool.WorkerBusyTicks - busy0) / wall:P1}; items run by the caller {counts[0]}, by workers {counts.Skip(1).Sum()}");
            }
        }
        if (only == "wkv")
        {
            // One layer's prefill recurrence (128 tokens, 14 heads of 64) on one thread, inputs in the model's
            // [token, channel] layout: the per-head-step cost against the hot single-step benchmark.
            const int T = 128, H = 14, N = 64, C = H * N;
            float[] Make(int seed, bool decay) => BenchMatrix.RandomVector(T * C, seed).Select(x => decay ? 0.6f + 0.3f * Math.Abs(x) : x * 0.5f).ToArray();
            float[] r = Make(1, false), w = Make(2, true), k = Make(3, false), v = Make(4, false), kk = Make(5, false), a = Make(6, false).Select(Math.Abs).ToArray();
            float[] rk = BenchMatrix.RandomVector(C, 7), y = new float[T * C], state = new float[H * N * N];
            void Layer()
            {
                for (int h = 0; h < H; h++)
                    for (int t = 0; t < T; t++)
                    {
                        int o = t * C + h * N;
                        Arwkv.Layers.Wkv7.Step(state.AsSpan(h * N * N, N * N), r.AsSpan(o, N), w.AsSpan(o, N), k.AsSpan(o, N), v.AsSpan(o, N),
                            kk.AsSpan(o, N), a.AsSpan(o, N), rk.AsSpan(h * N, N), y.AsSpan(o, N), MatMul.Isa);
                    }
            }
            for (int round = 0; round < 3; round++)
            {
                double seconds = Median(Layer, 1_000_000);
                Console.WriteLine($"WKV7 prefill layer, 128 tokens x 14 heads, one thread: {seconds * 1e6:F0} us = {seconds * 1e9 / (T * H):F0} ns per head-step; " +
                    $"max |state| {state.Max(Math.Abs):G3}, smallest nonzero |state| {state.Where(x => x != 0).Min(Math.Abs):G3}");
            }
        }
        if (only == "ab")
        {
            // In-process A/B of MatMul.Experiment 0 vs 1 on whole prefills: the two runs of a pair are seconds apart,
            // so the VM's minute-scale speed drift cancels in their ratio.
            string dir = args.Length > 2 ? args[2] : "/tmp/arwkv-bench-qwen2.5-0.5b";
            int pairs = args.Length > 3 ? int.Parse(args[3]) : 15;
            int variant = args.Length > 4 ? int.Parse(args[4]) : 1;
            using var lm = LanguageModel.Load(dir, new ModelOptions { Threads = threads });
            var ids = Enumerable.Range(0, 128).Select(i => (i * 7919) % 151000).ToArray();
            var logits = new float[lm.VocabSize];
            double Prefill()
            {
                var state = lm.CreateState();
                long start = Stopwatch.GetTimestamp();
                lm.Forward(ids, state, logits);
                return Stopwatch.GetElapsedTime(start).TotalSeconds;
            }
            foreach (int e in new[] { 0, variant }) { MatMul.Experiment = e; Prefill(); Prefill(); }
            var ratios = new double[pairs];
            var a = new double[pairs];
            var b = new double[pairs];
            for (int i = 0; i < pairs; i++)
            {
                bool flip = (i & 1) == 1;
                MatMul.Experiment = flip ? variant : 0; double first = Prefill();
                MatMul.Experiment = flip ? 0 : variant; double second = Prefill();
                a[i] = flip ? second : first;
                b[i] = flip ? first : second;
                ratios[i] = a[i] / b[i];
            }
            Array.Sort(ratios); Array.Sort(a); Array.Sort(b);
            Console.WriteLine($"A (0): median {128 / a[pairs / 2]:F1} tok/s; B ({variant}): median {128 / b[pairs / 2]:F1} tok/s; " +
                $"speed-up B/A: median {ratios[pairs / 2]:F3} (quartiles {ratios[pairs / 4]:F3} .. {ratios[3 * pairs / 4]:F3})");
        }
        if (only == "gemmdram")
        {
            // The model's case: every Gemm call meets weights that are not in any cache (24 matrices, 209 MB).
            const int tokens = 128, count = 24;
            var matrices = Enumerable.Range(0, count).Select(i => new BenchMatrix(DType.BF16, 4864, 896, i + 1)).ToArray();
            var x = BenchMatrix.RandomVector(896 * tokens);
            var y = new float[4864 * tokens];
            int next = 0;
            double seconds = Median(() => MatMul.Gemm(matrices[next++ % count].Matrix, x, y, tokens, pool), 2L * 4864 * 896 * tokens / 50);
            Console.WriteLine($"Gemm BF16 4864x896 x{tokens}, a different matrix each call: {seconds * 1e3,8:F2} ms {2.0 * 4864 * 896 * tokens / seconds / 1e9,7:F1} GFLOP/s");
            seconds = Median(() => MatMul.Gemm(matrices[0].Matrix, x, y, tokens, pool), 2L * 4864 * 896 * tokens / 50);
            Console.WriteLine($"Gemm BF16 4864x896 x{tokens}, the same matrix each call:  {seconds * 1e3,8:F2} ms {2.0 * 4864 * 896 * tokens / seconds / 1e9,7:F1} GFLOP/s");
            foreach (var m in matrices) m.Dispose();
        }
        foreach (var type in only is "all" or "gemv" ? new[] { DType.BF16, DType.F32, DType.F16 } : [])
            foreach (var (rows, cols) in new[] { (896, 896), (4864, 896), (896, 4864), (151936, 896) })
            {
                using var m = new BenchMatrix(type, rows, cols);
                var x = BenchMatrix.RandomVector(cols);
                var y = new float[rows];
                double seconds = Median(() => MatMul.Gemv(m.Matrix, x, y, pool), m.Matrix.ByteLength);
                Console.WriteLine($"Gemv {type,-4} {rows,6}x{cols,-5} {seconds * 1e6,9:F1} us {m.Matrix.ByteLength / seconds / 1e9,7:F1} GB/s  (per CPU-second {m.Matrix.ByteLength / LastCpuSeconds / 1e9,6:F1})");
            }
        foreach (var type in only is "all" or "gemm" ? new[] { DType.BF16, DType.F32 } : [])
            foreach (var (rows, cols) in new[] { (4864, 896), (896, 896), (896, 4864) })
            {
                const int tokens = 128;
                using var m = new BenchMatrix(type, rows, cols);
                var x = BenchMatrix.RandomVector(cols * tokens);
                var y = new float[rows * tokens];
                long busy0 = KernelThreadPool.WorkerBusyTicks, start = Stopwatch.GetTimestamp();
                double seconds = Median(() => MatMul.Gemm(m.Matrix, x, y, tokens, pool), 2L * rows * cols * tokens / 50);
                double busy = threads > 1 ? (double)(KernelThreadPool.WorkerBusyTicks - busy0) / (Stopwatch.GetTimestamp() - start) / (threads - 1) : 1;
                Console.WriteLine($"Gemm {type,-4} {rows,6}x{cols,-5} x{tokens} {seconds * 1e3,8:F2} ms {2.0 * rows * cols * tokens / seconds / 1e9,7:F1} GFLOP/s  (per CPU-second {2.0 * rows * cols * tokens / LastCpuSeconds / 1e9,6:F1}; workers busy {busy:P0})");
            }
    }

    static unsafe void MicroProbe()
    {
        float* tile = stackalloc float[32];
        foreach (var (steps, rowBlocks, tokenBlocks) in new[] { (56, 1, 1), (56, 4, 1), (56, 4, 22), (56, 1, 22), (16, 4, 22), (32, 4, 22) })
        {
            float* w = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(rowBlocks * steps * 64 * 4), 64);
            float* x = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(tokenBlocks * steps * 96 * 4), 64);
            for (int i = 0; i < rowBlocks * steps * 64; i++) w[i] = 0.001f * (i % 7);
            for (int i = 0; i < tokenBlocks * steps * 96; i++) x[i] = 0.002f * (i % 5);
            int calls = 2_000_000 / steps;
            void Run()
            {
                for (int c = 0; c < calls; c += rowBlocks * tokenBlocks)
                    for (int b = 0; b < tokenBlocks; b++)
                        for (int k = 0; k < rowBlocks; k++)
                            MatMul.MicroPacked<SimdVector512>(w + k * steps * 64, x + b * steps * 96, steps, tile);
            }
            double seconds = Median(Run, 100_000_000);
            double flops = (double)calls * steps * 24 * 16 * 2;
            Console.WriteLine($"micro 4x6: steps {steps,3}, W {rowBlocks * steps * 256 / 1024,4} KB, X {tokenBlocks * steps * 384 / 1024,5} KB: {flops / seconds / 1e9,6:F1} GFLOP/s one thread");
            ushort* wb = (ushort*)w;
            void RunBf16()
            {
                for (int c = 0; c < calls; c += rowBlocks * tokenBlocks)
                    for (int b = 0; b < tokenBlocks; b++)
                        for (int k = 0; k < rowBlocks; k++)
                        {
                            ushort* r0 = wb + k * steps * 64;
                            MatMul.MicroBf16<SimdVector512>(r0, r0 + steps * 16, r0 + steps * 32, r0 + steps * 48, x + b * steps * 96, steps / 2, tile);
                        }
            }
            seconds = Median(RunBf16, 100_000_000);
            Console.WriteLine($"micro 4x6 bf16 direct: same shapes: {flops / seconds / 1e9,6:F1} GFLOP/s one thread");
            System.Runtime.InteropServices.NativeMemory.AlignedFree(w);
            System.Runtime.InteropServices.NativeMemory.AlignedFree(x);
        }
    }

    /// <summary>12 independent FMA chains on 512-bit vectors: what one core can do when loads cost nothing.</summary>
    static void FmaPeak(long iterations, float[] sink)
    {
        var m = System.Runtime.Intrinsics.Vector512.Create(0.999f);
        var a = System.Runtime.Intrinsics.Vector512.Create(1e-3f);
        System.Runtime.Intrinsics.Vector512<float> s0 = a, s1 = a, s2 = a, s3 = a, s4 = a, s5 = a, s6 = a, s7 = a, s8 = a, s9 = a, s10 = a, s11 = a;
        for (long i = 0; i < iterations; i++)
        {
            s0 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s0, m, a);
            s1 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s1, m, a);
            s2 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s2, m, a);
            s3 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s3, m, a);
            s4 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s4, m, a);
            s5 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s5, m, a);
            s6 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s6, m, a);
            s7 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s7, m, a);
            s8 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s8, m, a);
            s9 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s9, m, a);
            s10 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s10, m, a);
            s11 = System.Runtime.Intrinsics.Vector512.FusedMultiplyAdd(s11, m, a);
        }
        System.Runtime.Intrinsics.Vector512.CopyTo(s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7 + s8 + s9 + s10 + s11, sink);
    }

    /// <summary>Median processor seconds (all threads) per call of the last measurement: on a busy machine, the
    /// wall time includes waiting for a core, this does not.</summary>
    static double LastCpuSeconds;

    /// <summary>Median seconds per call; repetitions sized so each sample takes a few milliseconds.</summary>
    static double Median(Action call, long bytesPerCall)
    {
        call();
        int reps = (int)Math.Clamp(200_000_000 / Math.Max(1, bytesPerCall), 1, 2000);
        var samples = new double[9];
        var cpu = new double[samples.Length];
        var process = Process.GetCurrentProcess();
        for (int s = 0; s < samples.Length; s++)
        {
            process.Refresh();
            var cpuStart = process.TotalProcessorTime;
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < reps; i++) call();
            samples[s] = Stopwatch.GetElapsedTime(start).TotalSeconds / reps;
            process.Refresh();
            cpu[s] = (process.TotalProcessorTime - cpuStart).TotalSeconds / reps;
        }
        Array.Sort(samples);
        Array.Sort(cpu);
        LastCpuSeconds = cpu[cpu.Length / 2];
        return samples[samples.Length / 2];
    }

    /// <summary>About 5 microseconds of dependent FMAs per item; counts which thread ran it.</summary>
    struct SpinItems : IParallelWork
    {
        public int[] Counts;

        public readonly void Execute(int index)
        {
            Interlocked.Increment(ref Counts[Thread.CurrentThread.Name is null ? 0 : 1]);
            float a = index;
            for (int i = 0; i < 5000; i++) a = MathF.FusedMultiplyAdd(a, 0.999f, 0.001f);
            if (a == 12345) Console.Write("");
        }
    }
}
