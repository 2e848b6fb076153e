namespace Arwkv.Tokenization;

/// <summary>
/// GPT-2's byte-to-unicode table, which byte-level BPE vocabularies are spelled in: printable Latin-1 bytes stand for
/// themselves and the other 68 bytes (controls, space, DEL, NBSP, soft hyphen) for U+0100.. in byte order, so 'Ġ'
/// (U+0120) is the space byte.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] CharByByte = BuildCharByByte();
    private static readonly short[] ByteByChar = BuildByteByChar();

    /// <summary>The character that stands for byte <paramref name="b"/>.</summary>
    public static char ToChar(byte b) => CharByByte[b];

    /// <summary>The byte that <paramref name="c"/> stands for, or -1 if it is not in the alphabet.</summary>
    public static int ToByte(char c) => c < ByteByChar.Length ? ByteByChar[c] : -1;

    private static bool StandsForItself(int b) => b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;

    private static char[] BuildCharByByte()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            table[b] = StandsForItself(b) ? (char)b : (char)next++;
        return table;
    }

    private static short[] BuildByteByChar()
    {
        var table = new short[256 + 68];
        Array.Fill(table, (short)-1);
        for (int b = 0; b < 256; b++)
            table[CharByByte[b]] = (short)b;
        return table;
    }
}
