// Compiled (not run) by types.test.mjs against wasm/www/plt.d.ts: the documented uses of the
// browser API type-check, and misuses do not.
import { PltClient, hasWebGPU, modelUrls, type GenerateResult, type ChatResult, type ModelInfo, type PltError } from '../../wasm/www/plt.js';

export async function demo(out: { textContent: string }): Promise<void> {
  if (!hasWebGPU()) return;
  const plt = new PltClient();
  const info: ModelInfo = await plt.load(modelUrls('models/plt2-shakespeare/'), {
    context: 512,
    dtype: 'f16',
    onProgress: (stage: string, f: number) => console.log(stage, f),
  });
  const modes: string[] = info.modes;
  const r: GenerateResult = await plt.generate('To be', { maxTokens: 16, temperature: 0, mode: 'fused', stop: ['\n\n'] }, (piece) => {
    out.textContent += piece;
  });
  const ids: number[] = [...r.promptTokens, ...r.tokens];
  const c: ChatResult = await plt.chat('Hello', { maxTokens: 8, mode: 'sequential' });
  const turns = await plt.chatMessages();
  const first: string = turns[0]?.content ?? '';
  const back: string | null = await plt.chatUndo();
  await plt.chatReset('Be brief.');
  try {
    await plt.load({ config: new Blob(['{}']), weights: new Uint8Array(8), tokenizer: 'x/tokenizer.json' });
  } catch (e) {
    const kept: boolean | undefined = (e as PltError).modelKept;
    console.log(kept);
  }
  // @ts-expect-error: a mode the runtime does not have
  await plt.generate('x', { mode: 'diagonal' });
  // @ts-expect-error: chat has no vanilla mode
  await plt.chat('x', { mode: 'vanilla' });
  // @ts-expect-error: maxTokens is a number
  await plt.generate('x', { maxTokens: '8' });
  console.log(modes, ids, c.dropped, c.finish, first, back, await plt.encode('x'), await plt.adapter());
  await plt.cancel();
  plt.terminate();
}

export async function gguf(file: File): Promise<number> {
  const plt = new PltClient();
  const a = await plt.load({ gguf: 'models/smollm2-135m-instruct-q4_1.gguf' }, { context: 256 });
  const b = await plt.load({ gguf: file });
  // @ts-expect-error: a directory needs its tokenizer too
  await plt.load({ config: 'c.json', weights: 'm.safetensors' });
  return a.parameters + b.vocabSize;
}

export async function completions(out: { textContent: string }): Promise<number> {
  const plt = new PltClient();
  await plt.load(modelUrls('models/smollm2-135m-instruct-q4_1.gguf'), {
    cache: true,
    onProgress: (stage, f, d) => console.log(stage, f, d.loaded, d.total, d.bytesPerSecond, d.cached),
  });
  const messages = [
    { role: 'system' as const, content: 'Be brief.' },
    { role: 'user' as const, content: 'What is the capital of France?' },
  ];
  const reply = await plt.chat.completions.create({ messages, max_tokens: 16, temperature: 0 });
  const text: string = reply.choices[0]?.message.content ?? '';
  const why: 'stop' | 'length' | 'abort' = reply.choices[0]!.finish_reason;
  const abort = new AbortController();
  const stream = await plt.chat.completions.create({
    messages: [...messages, { role: 'assistant', content: text }, { role: 'user', content: 'And of Italy?' }],
    stream: true,
    stream_options: { include_usage: true },
    signal: abort.signal,
  });
  for await (const chunk of stream) {
    out.textContent += chunk.choices[0]?.delta.content ?? '';
    if (chunk.usage) console.log(chunk.usage.extra.decode_tokens_per_s);
  }
  // @ts-expect-error: one choice only
  await plt.chat.completions.create({ messages, n: 2 });
  // @ts-expect-error: messages are {role, content}
  await plt.chat.completions.create({ messages: ['hi'] });
  const cached = await plt.cacheInfo();
  await plt.clearCache();
  console.log(why, reply.usage.prompt_tokens, reply.plt.tokens, plt.model);
  return cached.bytes;
}
