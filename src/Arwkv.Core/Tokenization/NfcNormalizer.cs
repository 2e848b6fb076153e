using System.Text;
using Microsoft.ML.Tokenizers;

namespace Arwkv.Tokenization;

/// <summary>Unicode NFC, the "normalizer": {"type": "NFC"} of a Hugging Face tokenizer.json.</summary>
internal sealed class NfcNormalizer : Normalizer
{
    public static NfcNormalizer Instance { get; } = new();

    private NfcNormalizer() { }

    // Most text is already NFC; the check avoids copying it.
    public override string Normalize(string original) =>
        original.IsNormalized(NormalizationForm.FormC) ? original : original.Normalize(NormalizationForm.FormC);

    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
}
