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
  /** Called as the load goes: a stage's name and the fraction done (0 to 1). */
  onProgress?: (stage: string, fraction: number) => void;
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

export interface GenerateResult extends Timing {
  text: string;
  /** The prompt's token ids as fed (BOS included when the model adds one). */
  promptTokens: number[];
  tokens: number[];
  finish: Finish;
  mode: Mode;
}

export interface ChatResult extends Timing {
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
  /** One chat turn with the model's chat template, on a session the turns share (when the
   * context fills, the oldest turns are dropped and the result says how many). */
  chat(message: string, options?: Omit<GenerateOptions, 'mode'> & { mode?: 'fused' | 'sequential' }, onToken?: OnToken | null): Promise<ChatResult>;
  /** Starts the conversation over with `system` as its system prompt ('' for none). */
  chatReset(system?: string): Promise<void>;
  /** Takes back the last exchange; resolves to the user's message (to ask again) or null. */
  chatUndo(): Promise<string | null>;
  /** The conversation so far. */
  chatMessages(): Promise<ChatMessage[]>;
  /** Stops the running generation at its next token (its promise resolves with what it has). */
  cancel(): Promise<void>;
  /** Ends the worker. */
  terminate(): void;
}
