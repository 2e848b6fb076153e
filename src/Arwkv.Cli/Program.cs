namespace Arwkv.Cli;

internal static class Program
{
    private static int Main(string[] args)
    {
        Console.Error.WriteLine("arwkv: commands are being built");
        return 1;
    }
}
