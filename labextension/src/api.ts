/**
 * The Pirus REST API (`{base_url}pirus/api/v1`), called through JupyterLab's
 * `ServerConnection` so that the base URL, the token and the XSRF cookie are handled exactly as
 * for JupyterLab's own requests.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type * as schema from './schema';
import type { PipelineStatus, RunStatus } from './schema';

export const API_PATH = 'pirus/api/v1';

// The records' types are generated from openapi.yaml (./schema.ts, `npm run generate`); here
// they keep the names the panel uses.
export type { PipelineStatus, RunStatus };
export { FINAL_RUN_STATUSES, PIPELINE_STATUS_VALUES, RUN_STATUS_VALUES } from './schema';

/** Every run status in the order of a run's life (the runs filter): RUN_STATUS_VALUES reordered. */
export const RUN_STATUSES: readonly RunStatus[] = [
  'WAITING',
  'INITIALIZING',
  'RUNNING',
  'PAUSE',
  'FINISHING',
  'DONE',
  'ERROR',
  'CANCELED'
];

export type IPipeline = schema.Pipeline;
export type IRun = schema.Run;
export type IProgress = schema.Progress;
export type IRunMetrics = schema.Metrics;
/** An input or an output of a run. */
export type IRunFile = schema.RunInput | schema.RunOutput;
export type IFileRecord = schema.File;
/** An upload, as `GET /uploads` answers it. */
export type IUploadRecord = schema.Upload;
export type IInfo = schema.Info;

export interface IList<T> {
  items: T[];
  total: number;
}

/** One problem of a run configuration, as `POST /runs` reports it (`error.details`). */
export interface IFieldError {
  field: string;
  message: string;
}

/** `{"type", "data"}` as sent on the events websocket. */
export interface IPirusEvent {
  type: string;
  data: any;
}

export type RunAction = 'pause' | 'resume' | 'cancel';

export type Query = Record<string, string | number | boolean | (string | number)[] | null | undefined>;

/**
 * A failed request: the HTTP status, the server's machine-readable code and its message (what
 * the panel shows to the user), and the details (per-field errors of an invalid config).
 */
export class PirusRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown
  ) {
    super(message);
    this.name = 'PirusRequestError';
  }

  /** The per-field validation errors (`[{field, message}]`), or none. */
  get fieldErrors(): IFieldError[] {
    if (!Array.isArray(this.details)) {
      return [];
    }
    return this.details.filter(
      (d): d is IFieldError =>
        !!d && typeof d === 'object' && typeof d.field === 'string' && typeof d.message === 'string'
    );
  }

  /** Build the error from a non-2xx response, reading `{"error": {code, message, details}}`. */
  static async fromResponse(response: Response): Promise<PirusRequestError> {
    let text = '';
    try {
      text = await response.text();
    } catch {
      // the body could not be read: keep the status line
    }
    let code = 'http_' + response.status;
    let message = text.trim() || response.statusText || `HTTP ${response.status}`;
    let details: unknown = undefined;
    try {
      const body = JSON.parse(text);
      const error = body && typeof body === 'object' ? body.error ?? body : null;
      if (error && typeof error === 'object') {
        if (typeof error.code === 'string') {
          code = error.code;
        }
        if (typeof error.message === 'string' && error.message) {
          message = error.message;
        }
        details = error.details;
      }
    } catch {
      // not JSON (an HTML error page from a proxy, ...): keep it short
      if (/^\s*</.test(text)) {
        message = `${response.status} ${response.statusText}`.trim();
      } else if (message.length > 500) {
        message = message.slice(0, 500) + '…';
      }
    }
    return new PirusRequestError(response.status, code, message, details);
  }

  /** A network failure (server down or restarting). */
  static network(reason: unknown): PirusRequestError {
    const text = reason instanceof Error ? reason.message : String(reason ?? '');
    return new PirusRequestError(
      0,
      'network_error',
      `Cannot reach the Jupyter server${text ? `: ${text}` : ''}`
    );
  }
}

/** The message to show for any error thrown by a request or by the panel's own code. */
export function errorMessage(error: unknown): string {
  if (error instanceof PirusRequestError) {
    return error.message;
  }
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

/** `a=1&b=x&b=y` from `{a: 1, b: ['x', 'y']}`; empty and undefined values are left out. */
export function queryString(query?: Query): string {
  if (!query) {
    return '';
  }
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') {
      continue;
    }
    if (Array.isArray(value)) {
      for (const item of value) {
        params.append(key, String(item));
      }
    } else {
      params.append(key, String(value));
    }
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

export class PirusAPI {
  constructor(
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
    /** A request not answered after this many milliseconds fails (0: wait forever). */
    readonly timeout = 60000
  ) {}

  /** Requests in flight (`METHOD url` -> start time): shown when debugging a stuck panel. */
  readonly pending = new Map<string, number>();

  /** The absolute URL of an API path (parts are URL-encoded). */
  url(...parts: (string | number)[]): string {
    return URLExt.join(
      this.settings.baseUrl,
      API_PATH,
      ...parts.map(p => encodeURIComponent(String(p)))
    );
  }

  /** The TUS endpoint. */
  get uploadsUrl(): string {
    return this.url('uploads');
  }

  /**
   * Send a request; resolve with the decoded JSON (or text, or undefined for 204), reject with
   * a {@link PirusRequestError} carrying the server's message.
   */
  async request<T = unknown>(
    method: string,
    path: (string | number)[],
    options: { body?: unknown; query?: Query; raw?: boolean } = {}
  ): Promise<T> {
    const url = this.url(...path) + queryString(options.query);
    const init: RequestInit = { method };
    if (options.body !== undefined) {
      init.body = JSON.stringify(options.body);
    }
    const key = `${method} ${url} #${++this._counter}`;
    const controller = typeof AbortController !== 'undefined' ? new AbortController() : null;
    let timedOut = false;
    const timer =
      controller && this.timeout > 0
        ? setTimeout(() => {
            timedOut = true;
            controller.abort();
          }, this.timeout)
        : null;
    if (controller) {
      init.signal = controller.signal;
    }
    this.pending.set(key, Date.now());
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      if (timedOut) {
        throw new PirusRequestError(
          0,
          'timeout',
          `The server did not answer within ${Math.round(this.timeout / 1000)} s (${method} ${path.join('/')})`
        );
      }
      throw PirusRequestError.network(error);
    } finally {
      if (timer !== null) {
        clearTimeout(timer);
      }
      this.pending.delete(key);
    }
    if (!response.ok) {
      throw await PirusRequestError.fromResponse(response);
    }
    if (options.raw) {
      return response as unknown as T;
    }
    if (response.status === 204) {
      return undefined as T;
    }
    const type = response.headers.get('Content-Type') || '';
    if (type.includes('application/json')) {
      return (await response.json()) as T;
    }
    return (await response.text()) as unknown as T;
  }

  private _counter = 0;

  // -- info ---------------------------------------------------------------------------------
  info(): Promise<IInfo> {
    return this.request('GET', []);
  }

  // -- pipelines ----------------------------------------------------------------------------
  async pipelines(status?: PipelineStatus): Promise<IPipeline[]> {
    const body = await this.request<IList<IPipeline>>('GET', ['pipelines'], { query: { status } });
    return body.items;
  }

  pipeline(id: number): Promise<IPipeline> {
    return this.request('GET', ['pipelines', id]);
  }

  /** Install a package file under the Jupyter root, or a finished upload. */
  installPipeline(source: { path: string } | { upload_id: string }): Promise<IPipeline> {
    return this.request('POST', ['pipelines'], { body: source });
  }

  /** Remove every pipeline whose install failed; the ids removed. */
  async clearFailedPipelines(): Promise<number[]> {
    const body = await this.request<{ removed: number[] }>('DELETE', ['pipelines'], { query: { status: 'ERROR' } });
    return body.removed;
  }

  uninstallPipeline(id: number): Promise<void> {
    return this.request('DELETE', ['pipelines', id]);
  }

  /** The draft-07 form, with the input placeholders filled from the input file names. */
  pipelineForm(id: number, inputs: string[] = []): Promise<Record<string, any>> {
    const names = inputs.map(baseName);
    return this.request('GET', ['pipelines', id, 'form'], { query: { inputs: names } });
  }

  /** The pipeline's icon as a Blob, or null when it has none. */
  async pipelineIcon(id: number): Promise<Blob | null> {
    try {
      const response = await this.request<Response>('GET', ['pipelines', id, 'icon'], {
        raw: true
      });
      return await response.blob();
    } catch (error) {
      if (error instanceof PirusRequestError && error.status === 404) {
        return null;
      }
      throw error;
    }
  }

  /** A document shipped in the package (README, ...), as a Blob with its content type. */
  async pipelineDocument(id: number, name: string): Promise<Blob> {
    const response = await this.request<Response>('GET', ['pipelines', id, 'documents', name], { raw: true });
    return await response.blob();
  }

  // -- runs ---------------------------------------------------------------------------------
  async runs(
    options: {
      status?: RunStatus[];
      pipelineId?: number;
      limit?: number;
      offset?: number;
      after?: number;
    } = {}
  ): Promise<IList<IRun>> {
    return this.request('GET', ['runs'], {
      query: {
        status: options.status?.length ? options.status.join(',') : undefined,
        pipeline_id: options.pipelineId,
        limit: options.limit,
        offset: options.offset,
        after: options.after
      }
    });
  }

  run(id: number): Promise<IRun> {
    return this.request('GET', ['runs', id]);
  }

  /** Start a run (queued). A 400 `invalid_config` carries the per-field errors. */
  createRun(body: {
    pipeline_id: number;
    config?: Record<string, unknown>;
    inputs?: (string | number)[];
    name?: string;
  }): Promise<IRun> {
    const payload: Record<string, unknown> = {
      pipeline_id: body.pipeline_id,
      config: body.config ?? {},
      inputs: body.inputs ?? []
    };
    if (body.name && body.name.trim()) {
      payload.name = body.name.trim();
    }
    return this.request('POST', ['runs'], { body: payload });
  }

  /** The runs whose outputs fed run `id` and those it fed (nodes and edges). */
  runLineage(id: number): Promise<schema.RunLineage> {
    return this.request('GET', ['runs', id, 'lineage']);
  }

  /** The lineage drawn by the server as an SVG (the drawing the notebook shows). */
  async runLineageSvg(id: number): Promise<Blob> {
    const response = await this.request<Response>('GET', ['runs', id, 'lineage'], {
      query: { format: 'svg' },
      raw: true
    });
    return await response.blob();
  }

  /** What differs between runs `a` and `b`. */
  diffRuns(a: number, b: number): Promise<schema.RunDiff> {
    return this.request('GET', ['runs', a, 'diff', b]);
  }

  runAction(id: number, action: RunAction): Promise<IRun> {
    return this.request('POST', ['runs', id, action]);
  }

  deleteRun(id: number): Promise<void> {
    return this.request('DELETE', ['runs', id]);
  }

  /** The last `tail` lines of a run's log (`out` or `err`). */
  runLog(id: number, which: 'out' | 'err' = 'out', tail = 200): Promise<string> {
    return this.request('GET', ['runs', id, 'logs', which], { query: { tail } });
  }

  // -- files and uploads --------------------------------------------------------------------
  async files(
    options: {
      runId?: number;
      source?: 'upload' | 'run';
      order?: 'asc' | 'desc';
      limit?: number;
      after?: number;
    } = {}
  ): Promise<IList<IFileRecord>> {
    return this.request('GET', ['files'], {
      query: {
        run_id: options.runId,
        source: options.source,
        order: options.order,
        limit: options.limit ?? 500,
        after: options.after
      }
    });
  }

  async uploads(): Promise<IList<IUploadRecord>> {
    return this.request('GET', ['uploads']);
  }
}

export function baseName(path: string): string {
  const parts = path.split('/').filter(Boolean);
  return parts.length ? parts[parts.length - 1] : path;
}

export function dirName(path: string): string {
  const parts = path.split('/').filter(Boolean);
  parts.pop();
  return parts.join('/');
}
