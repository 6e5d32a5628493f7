// Type declarations of the browser API in plt.js (an ES module; everything runs in a module
// worker, worker.js, which holds the wasm module and the WebGPU device).

/** Whether this browser exposes WebGPU (`navigator.gpu`). */
export function hasWebGPU(): boolean;

/** A model file: a URL (absolute or relative to the page), a File/Blob, or its bytes. */
export type ModelFile = string | Blob | ArrayBuffer | Uint8Array;

/** The files of a model directory. The last two are optional: a 404 skips them. */
export interface ModelDirSources {
  config: ModelFile;
  weights: ModelFile;
  tokenizer: ModelFile;
  tokenizerConfig?: ModelFile | null;
  generationConfig?: ModelFile | null;
}

/** One GGUF file: tokenizer and chat template from its metadata, blocks kept quantised. */
export interface GgufSource {
  gguf: ModelFile;
}

export type ModelSources = ModelDirSources | GgufSource;

/** The URLs of the files of the model directory at `base` (the optional ones included), or
 * `{gguf}` for a URL ending in .gguf. */
export function modelUrls(base: string): ModelSources;

export interface LoadOptions {
  /** Positions the session holds (default: the model's maximum). */
  context?: number;
  /** Device storage of the weight matrices (default: as stored, BF16 as f32). */
  dtype?: 'f32' | 'f16';
  /** Keep files fetched from URLs in the browser's cache (Cache API, keyed by their SHA-256)
   * and load them from there next time (default: true). */
  cache?: boolean;
  /** Called as the load goes: a stage's name, the fraction done (0 to 1) and, while a file
   * downloads or comes from the cache, its bytes so far, its size and the rate. */
  onProgress?: (stage: string, fraction: number, detail: ProgressDetail) => void;
}

export interface ProgressDetail {
  loaded?: number;
  total?: number;
  bytesPerSecond?: number;
  /** The file came from the browser's cache. */
  cached?: boolean;
}

/** What one load did with the model cache. */
export interface CacheReport {
  /** The cache was used (false: `cache: false`, or no Cache API here). */
  enabled: boolean;
  /** Files read from the cache. */
  hits: number;
  /** Files written to the cache. */
  stored: number;
  bytesFromCache: number;
  /** Why the files could not be cached (a full storage quota), or null. */
  error: string | null;
}

/** What the model cache holds. */
export interface CacheInfo {
  available: boolean;
  files: number;
  bytes: number;
}

/** What `load` resolves to. */
export interface ModelInfo {
  /** The adapter's description, e.g. "SwiftShader Device (BrowserWebGpu, Cpu, ...)". */
  adapter: string;
  /** The adapter-dependent kernel choices. */
  kernels: string;
  source: string;
  layers: number;
  hiddenSize: number;
  vocabSize: number;
  /** L: 1 for a plain transformer. */
  numLoops: number;
  loopMode: string;
  window: number;
  parameters: number;
  weightBytes: number;
  context: number;
  /** The modes `generate` takes for this model. */
  modes: Mode[];
  cache: CacheReport;
}

/** PLT decode schedules: all loops in one pass, one pass per loop, or the same weights as a
 * vanilla looped model. */
export type Mode = 'fused' | 'sequential' | 'vanilla';

/** Sampling and stopping (all optional; the default is greedy decoding of 64 tokens). */
export interface GenerateOptions {
  maxTokens?: number;
  /** 0 is greedy. */
  temperature?: number;
  /** 0 keeps every token. */
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  repeatLastN?: number;
  seed?: number;
  mode?: Mode;
  /** Strings that end the generation (not included in the text). */
  stop?: string[];
  stopAtEos?: boolean;
}

/** Why a generation ended: "eos", "stop:<the string>", "max_tokens", "cancelled" or
 * "context_full". */
export type Finish = 'eos' | 'max_tokens' | 'cancelled' | 'context_full' | `stop:${string}`;

export interface Timing {
  promptTokenCount: number;
  /** Prefill of the prompt and the first token (ms). */
  prefillMs: number;
  generatedTokens: number;
  /** From the first generated token to the last (ms). */
  decodeMs: number;
  tokensPerSecond: number;
  msPerToken: number;
}

export interface Recovered {
  /** Set when the WebGPU device had been lost and the model was loaded again before this call
   * (why, in words). */
  recovered?: string;
}

export interface GenerateResult extends Timing, Recovered {
  text: string;
  /** The prompt's token ids as fed (BOS included when the model adds one). */
  promptTokens: number[];
  tokens: number[];
  finish: Finish;
  mode: Mode;
}

export interface ChatResult extends Timing, Recovered {
  /** The reply as kept in the conversation (trimmed). */
  reply: string;
  text: string;
  tokens: number[];
  finish: Finish;
  mode: Mode;
  /** Oldest messages dropped to make room for this turn. */
  dropped: number;
  /** The session started over from the messages (after dropping, or after a cut reply). */
  restarted: boolean;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

/** An error from the runtime; a failed `load` says whether the previous model is still there. */
export interface PltError extends Error {
  modelKept?: boolean;
}

/** Streams the text: each decoded piece and the milliseconds since the previous one. */
export type OnToken = (piece: string, ms: number) => void;

/** A request of `chat.completions.create`, OpenAI's fields (those this runtime has) plus
 * the runtime's own sampling fields. Any other field is an error naming it. */
export interface ChatCompletionRequest {
  /** The whole conversation, ending with the user's message to answer. */
  messages: { role: 'system' | 'user' | 'assistant'; content: string }[];
  stream?: boolean;
  /** With `stream`: a last chunk with `usage` (and no choices). */
  stream_options?: { include_usage?: boolean };
  max_tokens?: number;
  max_completion_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  repetition_penalty?: number;
  repeat_last_n?: number;
  seed?: number;
  stop?: string | string[];
  /** Only 1. */
  n?: 1;
  /** Ignored: the loaded model answers. */
  model?: string;
  mode?: 'fused' | 'sequential';
  /** Aborting it stops the generation (the promise or stream ends with what it has). */
  signal?: AbortSignal;
}

/** OpenAI's finish reasons: the model's end or a stop string, the token budget or the
 * context end, or a cancel. */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface CompletionUsage {
  /** Tokens fed for this call: the part of the conversation the session did not hold yet. */
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  extra: {
    time_to_first_token_s: number;
    prefill_tokens_per_s: number;
    decode_tokens_per_s: number;
    time_per_output_token_s: number;
    e2e_latency_s: number;
  };
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: { role: 'assistant'; content: string }; finish_reason: FinishReason; logprobs: null }[];
  usage: CompletionUsage;
  /** The runtime's own account of the turn (token ids, messages dropped, ...). */
  plt: ChatResult;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: number; delta: { role?: 'assistant'; content?: string }; finish_reason: FinishReason | null; logprobs: null }[];
  /** On the last chunk, with `stream_options.include_usage`. */
  usage?: CompletionUsage;
  /** On the chunk with the finish reason. */
  plt?: ChatResult;
}

export interface ChatCompletions {
  create(request: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(request: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
}

/** One chat turn with the model's chat template, on a session the turns share (when the
 * context fills, the oldest turns are dropped and the result says how many); and
 * `chat.completions.create`, the OpenAI-shaped call on a whole conversation. */
export interface ChatApi {
  (message: string, options?: Omit<GenerateOptions, 'mode'> & { mode?: 'fused' | 'sequential' }, onToken?: OnToken | null): Promise<ChatResult>;
  completions: ChatCompletions;
}

export class PltClient {
  /** Starts the worker (default: worker.js beside plt.js). */
  constructor(workerUrl?: string | URL);
  /** The WebGPU adapter's description (opens a device when no model is loaded). */
  adapter(): Promise<string>;
  /** Loads a model, replacing the one loaded (kept if this load fails). */
  load(sources: ModelSources, options?: LoadOptions): Promise<ModelInfo>;
  /** Token ids of `prompt` as `generate` feeds them. */
  encode(prompt: string): Promise<number[]>;
  /** Generates from `prompt` in a fresh context. */
  generate(prompt: string, options?: GenerateOptions, onToken?: OnToken | null): Promise<GenerateResult>;
  readonly chat: ChatApi;
  /** The loaded model's name (its file or directory), or null. */
  readonly model: string | null;
  /** What the model cache holds. */
  cacheInfo(): Promise<CacheInfo>;
  /** Empties the model cache; resolves to what it held. */
  clearCache(): Promise<CacheInfo>;
  /** Starts the conversation over with `system` as its system prompt ('' for none). */
  chatReset(system?: string): Promise<void>;
  /** Takes back the last exchange; resolves to the user's message (to ask again) or null. */
  chatUndo(): Promise<string | null>;
  /** The conversation so far. */
  chatMessages(): Promise<ChatMessage[]>;
  /** Destroys the WebGPU device under the loaded model, as a driver reset would (the next call
   * loads the model again and says so in `recovered`): to test what an application does then. */
  destroyDevice(): Promise<void>;
  /** Stops the running generation at its next token (its promise resolves with what it has). */
  cancel(): Promise<void>;
  /** Ends the worker. */
  terminate(): void;
}
