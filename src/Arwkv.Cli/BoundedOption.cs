using System.CommandLine;
using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Arwkv.Cli;

/// <summary>
/// Every numeric option of the CLI is made here, with its range: the help text states it, and a value outside it is
/// one clear error (exit code 2) before the command does anything. Ranges bound what a command may allocate or start
/// (threads, tokens, sequences), so a typo cannot abort the runtime or ask for gigabytes.
/// </summary>
internal static class BoundedOption
{
    private static readonly ConditionalWeakTable<Option, Func<ParseResult, string?>> Checks = new();

    /// <summary>An option whose value must lie in [<paramref name="min"/>, <paramref name="max"/>] (or (min, max] with
    /// <paramref name="minExclusive"/>); NaN is outside every range.</summary>
    public static Option<T> Create<T>(string name, string description, T min, T max, T defaultValue, bool minExclusive = false, params string[] aliases)
        where T : struct, INumber<T>
    {
        var option = new Option<T>(name, aliases) { Description = $"{description} {RangeText(min, max, minExclusive)}", DefaultValueFactory = _ => defaultValue };
        Register(option, min, max, minExclusive);
        return option;
    }

    /// <summary>The same for an option without a default (absent means "not given").</summary>
    public static Option<T?> CreateOptional<T>(string name, string description, T min, T max, params string[] aliases)
        where T : struct, INumber<T>
    {
        var option = new Option<T?>(name, aliases) { Description = $"{description} {RangeText(min, max, false)}" };
        Checks.Add(option, result => result.GetValue(option) is T value ? Check(name, value, min, max, false) : null);
        return option;
    }

    /// <summary>A required option.</summary>
    public static Option<T> CreateRequired<T>(string name, string description, T min, T max) where T : struct, INumber<T>
    {
        var option = new Option<T>(name) { Description = $"{description} {RangeText(min, max, false)}", Required = true };
        Register(option, min, max, false);
        return option;
    }

    private static void Register<T>(Option<T> option, T min, T max, bool minExclusive) where T : struct, INumber<T> =>
        Checks.Add(option, result => Check(option.Name, result.GetValue(option), min, max, minExclusive));

    /// <summary>The first numeric option of <paramref name="command"/> outside its range, as a message; null when all are in range.</summary>
    public static string? FirstViolation(Command command, ParseResult result)
    {
        foreach (Option option in command.Options)
            if (Checks.TryGetValue(option, out var check) && check(result) is string message)
                return message;
        return null;
    }

    private static string? Check<T>(string name, T value, T min, T max, bool minExclusive) where T : struct, INumber<T>
    {
        bool above = minExclusive ? value > min : value >= min;
        return above && value <= max ? null
            : $"{name} must be in {Interval(min, max, minExclusive)}, got {Text(value)}";
    }

    private static string RangeText<T>(T min, T max, bool minExclusive) where T : struct, INumber<T> =>
        $"(range {Interval(min, max, minExclusive)})";

    private static string Interval<T>(T min, T max, bool minExclusive) where T : struct, INumber<T> =>
        $"{(minExclusive ? "(" : "[")}{Text(min)}, {Text(max)}]";

    private static string Text<T>(T value) where T : struct, INumber<T> => value.ToString(null, CultureInfo.InvariantCulture);
}
