using Arwkv.Extensions.AI;
using Arwkv.Generation;
using Arwkv.Tests.Generation;
using Microsoft.Extensions.AI;
using static Arwkv.Tests.Generation.FakeCodec;

namespace Arwkv.Tests.ChatClient;

public class ArwkvChatClientTests
{
    /// <summary>After "&lt;|im_start|&gt;assistant\n" the model says "hello there" then &lt;|im_end|&gt;.</summary>
    private static FakeModel ReplyModel()
    {
        int[] header = new FakeCodec().Encode("<|im_start|>assistant\n");
        int[] reply = [.. new FakeCodec().Encode("hello there"), ImEnd];
        return new FakeModel(Vocab, (seen, logits) =>
        {
            logits.Clear();
            int start = -1;
            for (int i = seen.Count - header.Length; i >= 0 && start < 0; i--)
                if (seen.Skip(i).Take(header.Length).SequenceEqual(header)) start = i + header.Length;
            logits[start < 0 ? ImEnd : reply[Math.Min(seen.Count - start, reply.Length - 1)]] = 10;
        });
    }

    private static ArwkvChatClient Client(FakeModel model, bool ownsModel = false) =>
        new(new TextGenerator(model, new FakeCodec()), modelId: "fake-arwkv", ownsModel: ownsModel);

    private static readonly ChatMessage[] Conversation =
    [
        new(ChatRole.System, "be nice"),
        new(ChatRole.User, "hi"),
    ];

    private static int[] PromptIds(string? instructions = null) => new FakeCodec().Encode(
        (instructions is null ? "" : $"<|im_start|>system\n{instructions}<|im_end|>\n") +
        "<|im_start|>system\nbe nice<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");

    [Test]
    public async Task ResponseHasTextFinishReasonAndUsage()
    {
        var model = ReplyModel();
        using ArwkvChatClient client = Client(model);
        ChatResponse response = await client.GetResponseAsync(Conversation);
        Assert.That(response.Text, Is.EqualTo("hello there"));
        Assert.That(response.Messages.Single().Role, Is.EqualTo(ChatRole.Assistant));
        Assert.That(response.FinishReason, Is.EqualTo(ChatFinishReason.Stop));
        Assert.That(response.ModelId, Is.EqualTo("fake-arwkv"));
        int promptLength = PromptIds().Length;
        Assert.That(model.Fed[0], Is.EqualTo(PromptIds()), "ChatML rendering of the messages, prefilled at once");
        Assert.That(response.Usage!.InputTokenCount, Is.EqualTo(promptLength));
        Assert.That(response.Usage.OutputTokenCount, Is.EqualTo(12), "11 characters and <|im_end|>");
        Assert.That(response.Usage.TotalTokenCount, Is.EqualTo(promptLength + 12));
    }

    [Test]
    public async Task StreamingMatchesTheResponseAndEndsWithUsage()
    {
        using ArwkvChatClient client = Client(ReplyModel());
        var updates = new List<ChatResponseUpdate>();
        await foreach (ChatResponseUpdate u in client.GetStreamingResponseAsync(Conversation)) updates.Add(u);
        Assert.That(string.Concat(updates.Select(u => u.Text)), Is.EqualTo("hello there"));
        Assert.That(updates.Count, Is.EqualTo(12), "one update per character, then the final one");
        Assert.That(updates.Select(u => u.ResponseId).Distinct().Count(), Is.EqualTo(1));
        Assert.That(updates.All(u => u.Role == ChatRole.Assistant && u.ModelId == "fake-arwkv"));
        ChatResponseUpdate last = updates[^1];
        Assert.That(last.FinishReason, Is.EqualTo(ChatFinishReason.Stop));
        UsageDetails usage = last.Contents.OfType<UsageContent>().Single().Details;
        Assert.That((usage.InputTokenCount, usage.OutputTokenCount), Is.EqualTo(((long?)PromptIds().Length, (long?)12)));

        ChatResponse combined = updates.ToChatResponse();
        Assert.That(combined.Text, Is.EqualTo("hello there"));
        Assert.That(combined.FinishReason, Is.EqualTo(ChatFinishReason.Stop));
        Assert.That(combined.Usage!.OutputTokenCount, Is.EqualTo(12));
    }

    [Test]
    public void OptionsMapToGenerationSettings()
    {
        using ArwkvChatClient client = Client(ReplyModel());
        GenerationOptions g = client.ResolveOptions(new ChatOptions
        {
            Temperature = 0.3f,
            TopP = 0.9f,
            TopK = 5,
            Seed = 7,
            MaxOutputTokens = 3,
            StopSequences = ["xyz"],
            AdditionalProperties = new() { ["repetition_penalty"] = 1.2 },
        });
        Assert.That(g.Sampling, Is.EqualTo(client.Defaults.Sampling with { Temperature = 0.3f, TopP = 0.9f, TopK = 5, Seed = 7, RepetitionPenalty = 1.2f }));
        Assert.That(g.MaxTokens, Is.EqualTo(3));
        Assert.That(g.StopStrings, Is.EqualTo(new[] { "xyz" }));
        Assert.That(client.ResolveOptions(null), Is.SameAs(client.Defaults));
        Assert.That(client.ResolveOptions(new ChatOptions()).Sampling, Is.EqualTo(SamplingOptions.Recommended));
        Assert.Throws<ArgumentException>(() => client.ResolveOptions(new ChatOptions { Temperature = -1 }));
    }

    [Test]
    public async Task MaxOutputTokensAndStopSequencesEndTheResponse()
    {
        using ArwkvChatClient client = Client(ReplyModel());
        ChatResponse response = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 4 });
        Assert.That((response.Text, response.FinishReason), Is.EqualTo(("hell", (ChatFinishReason?)ChatFinishReason.Length)));
        Assert.That(response.Usage!.OutputTokenCount, Is.EqualTo(4));

        response = await client.GetResponseAsync(Conversation, new ChatOptions { StopSequences = [" th"] });
        Assert.That((response.Text, response.FinishReason), Is.EqualTo(("hello", (ChatFinishReason?)ChatFinishReason.Stop)));
    }

    [Test]
    public async Task InstructionsBecomeALeadingSystemMessage()
    {
        var model = ReplyModel();
        using ArwkvChatClient client = Client(model);
        await client.GetResponseAsync(Conversation, new ChatOptions { Instructions = "short" });
        Assert.That(model.Fed[0], Is.EqualTo(PromptIds("short")));
    }

    [Test]
    public async Task CancellationStopsTheResponse()
    {
        using ArwkvChatClient client = Client(ReplyModel());
        using var cts = new CancellationTokenSource();
        var seen = new List<string>();
        await Assert.ThrowsAsync<OperationCanceledException>(async () =>
        {
            await foreach (ChatResponseUpdate u in client.GetStreamingResponseAsync(Conversation, null, cts.Token))
            {
                seen.Add(u.Text);
                if (seen.Count == 2) cts.Cancel();
            }
        });
        Assert.That(seen, Is.EqualTo(new[] { "h", "e" }));
        // The gate was released: the next request runs.
        Assert.That((await client.GetResponseAsync(Conversation)).Text, Is.EqualTo("hello there"));
    }

    [Test]
    public async Task GetServiceReturnsMetadataAndTheClient()
    {
        var model = ReplyModel();
        ArwkvChatClient client = Client(model, ownsModel: true);
        var metadata = client.GetService<ChatClientMetadata>();
        Assert.That(metadata!.ProviderName, Is.EqualTo("arwkv"));
        Assert.That(metadata.DefaultModelId, Is.EqualTo("fake-arwkv"));
        Assert.That(client.GetService<IChatClient>(), Is.SameAs(client));
        Assert.That(client.GetService<LanguageModel>(), Is.SameAs(model));
        Assert.That(client.GetService<ChatClientMetadata>("some key"), Is.Null);
        Assert.That(client.GetService<string>(), Is.Null);
        client.Dispose();
        Assert.That(model.Disposed, Is.True);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => client.GetResponseAsync(Conversation));
    }

    [Test]
    public void AModelWithoutTokenizerIsRejected()
    {
        Assert.Throws<ArgumentException>(() => new ArwkvChatClient(ReplyModel()));
    }
}
