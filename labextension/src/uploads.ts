/**
 * Resumable uploads to the TUS endpoint (`{base_url}pirus/api/v1/uploads`) with tus-js-client:
 * chunked, retried, paused and resumed on demand, and resumed after a page reload (tus-js-client
 * keeps each upload's URL in localStorage under the file's fingerprint: choosing the same file
 * again continues where it stopped). Every PATCH carries an `Upload-Checksum` (SHA-256 of the
 * chunk) where the browser has WebCrypto, so a chunk damaged in transit is refused and re-sent.
 *
 * Metadata: `filename`, `filetype` and `kind` (`input`: the file lands in the uploads folder;
 * `pipeline`: the server installs it as a pipeline when complete).
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';
import * as tus from 'tus-js-client';

export type UploadKind = 'input' | 'pipeline';

export type UploadState =
  | 'starting'
  | 'uploading'
  | 'paused'
  | 'done'
  | 'error'
  /** Left unfinished by a previous page: choose the same file again to resume it. */
  | 'interrupted';

export interface IUploadItem {
  key: string;
  filename: string;
  kind: UploadKind;
  size: number | null;
  sent: number;
  state: UploadState;
  error: string | null;
  /** The upload's URL on the server, once created. */
  url: string | null;
  /** The upload continued one begun earlier (same file, possibly before a page reload). */
  resumed: boolean;
  /** Key of the stored URL (interrupted uploads). */
  urlStorageKey: string | null;
  /** Upload-Checksum sent with every chunk. */
  checksum: boolean;
  /** Once finished: the pipeline being installed (kind pipeline) ... */
  pipelineId: number | null;
  /** ... or the input file's path under the Jupyter root (kind input). */
  filePath: string | null;
}

/** What the server says about an upload (its JSON record, `GET uploads/<id>`). */
export interface IUploadStatus {
  offset: number;
  length: number | null;
  status: string;
  pipeline_id?: number | null;
  file?: { path: string } | null;
}

/** What a constructed tus upload must offer (tus.Upload, or a fake in the tests). */
export interface ITusUpload {
  url: string | null;
  start(): void;
  abort(shouldTerminate?: boolean): Promise<void>;
  findPreviousUploads(): Promise<tus.PreviousUpload[]>;
  resumeFromPreviousUpload(previous: tus.PreviousUpload): void;
}

export type UploadFactory = (file: File | Blob, options: tus.UploadOptions) => ITusUpload;

export interface IUploadManagerOptions {
  /** Absolute URL of the TUS endpoint. */
  endpoint: string;
  settings: ServerConnection.ISettings;
  /** Bytes per PATCH request (default 8 MiB). */
  chunkSize?: number;
  retryDelays?: number[];
  /** Send Upload-Checksum (default: when WebCrypto is available). */
  checksum?: boolean;
  createUpload?: UploadFactory;
  urlStorage?: tus.UrlStorage;
  /** Reads an upload's JSON record (progress of an interrupted upload). */
  fetchRecord?: (url: string) => Promise<IUploadStatus | null>;
}

export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;
const PACKAGE_RE = /\.(tar|tar\.gz|tgz|tar\.xz|txz)$/i;

/** Pipeline packages are tarballs; everything else is an input file. */
export function kindFor(filename: string): UploadKind {
  return PACKAGE_RE.test(filename) ? 'pipeline' : 'input';
}

export function getCookie(name: string): string | undefined {
  let cookie = '';
  try {
    cookie = typeof document === 'undefined' ? '' : document.cookie;
  } catch {
    return undefined;
  }
  let value: string | undefined;
  for (const part of cookie.split(';')) {
    const trimmed = part.trim();
    if (trimmed.startsWith(name + '=')) {
      value = trimmed.substring(name.length + 1);
    }
  }
  return value;
}

/** The same credentials ServerConnection sends: token header and XSRF cookie echo. */
export function authHeaders(settings: ServerConnection.ISettings): Record<string, string> {
  const headers: Record<string, string> = {};
  if (settings.token) {
    headers['Authorization'] = `token ${settings.token}`;
  }
  const xsrf = getCookie('_xsrf');
  if (xsrf !== undefined) {
    headers['X-XSRFToken'] = xsrf;
  }
  return headers;
}

export function toBase64(buffer: ArrayBuffer): string {
  const bytes = new Uint8Array(buffer);
  let text = '';
  for (let i = 0; i < bytes.length; i++) {
    text += String.fromCharCode(bytes[i]);
  }
  return btoa(text);
}

async function bodyBytes(body: unknown): Promise<ArrayBuffer | null> {
  if (body instanceof ArrayBuffer) {
    return body;
  }
  if (ArrayBuffer.isView(body)) {
    const view = body as ArrayBufferView;
    return new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice().buffer;
  }
  if (typeof Blob !== 'undefined' && body instanceof Blob) {
    return await body.arrayBuffer();
  }
  return null;
}

export function webCryptoDigest(): ((data: ArrayBuffer) => Promise<ArrayBuffer>) | null {
  const subtle = (globalThis as any).crypto?.subtle;
  if (!subtle || typeof subtle.digest !== 'function') {
    return null; // not a secure context (plain http to a remote host)
  }
  return (data: ArrayBuffer) => subtle.digest('SHA-256', data);
}

/**
 * An HTTP stack that adds `Upload-Checksum: sha256 <base64>` to every PATCH (the TUS checksum
 * extension, which tus-js-client does not implement itself).
 */
export class ChecksumHttpStack implements tus.HttpStack {
  constructor(
    private readonly _inner: tus.HttpStack,
    private readonly _digest: (data: ArrayBuffer) => Promise<ArrayBuffer>
  ) {}

  createRequest(method: string, url: string): tus.HttpRequest {
    const request = this._inner.createRequest(method, url);
    if (method.toUpperCase() !== 'PATCH') {
      return request;
    }
    const digest = this._digest;
    let aborted = false;
    return {
      getMethod: () => request.getMethod(),
      getURL: () => request.getURL(),
      setHeader: (name: string, value: string) => request.setHeader(name, value),
      getHeader: (name: string) => request.getHeader(name),
      setProgressHandler: (handler: (sent: number) => void) => request.setProgressHandler(handler),
      getUnderlyingObject: () => request.getUnderlyingObject(),
      abort: () => {
        aborted = true;
        return request.abort();
      },
      send: async (body: unknown) => {
        const bytes = await bodyBytes(body);
        if (bytes !== null) {
          request.setHeader('Upload-Checksum', `sha256 ${toBase64(await digest(bytes))}`);
        }
        if (aborted) {
          throw new Error('upload aborted');
        }
        return request.send(body);
      }
    };
  }

  getName(): string {
    return `pirus-checksum(${this._inner.getName()})`;
  }
}

/** The server's message from a failed TUS request, else the error's own. */
export function uploadErrorMessage(error: unknown): string {
  const response = (error as tus.DetailedError)?.originalResponse;
  if (response) {
    const status = response.getStatus();
    try {
      const body = JSON.parse(response.getBody());
      if (body?.error?.message) {
        return `${body.error.message} (HTTP ${status})`;
      }
    } catch {
      // not JSON
    }
    return `the server answered HTTP ${status}`;
  }
  const message = error instanceof Error ? error.message : String(error);
  // tus-js-client's messages are long ("tus: failed to upload chunk at offset ..., caused by ...").
  const cause = /caused by (.*?)(, originated from.*)?$/.exec(message);
  return cause ? cause[1] : message;
}

/** Retry like tus-js-client (network errors, 5xx, 409, 423) and also on a checksum mismatch. */
export function shouldRetry(error: tus.DetailedError): boolean {
  const status = error?.originalResponse ? error.originalResponse.getStatus() : 0;
  if (status === 409 || status === 423 || status === 460) {
    return true;
  }
  return !(status >= 400 && status < 500);
}

export class UploadManager {
  constructor(options: IUploadManagerOptions) {
    this._endpoint = options.endpoint;
    this._settings = options.settings;
    this._chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this._retryDelays = options.retryDelays ?? [0, 1000, 3000, 5000, 10000];
    const digest = options.checksum === false ? null : webCryptoDigest();
    this._digest = digest;
    this._createUpload =
      options.createUpload ?? ((file, opts) => new tus.Upload(file as File, opts) as ITusUpload);
    this._urlStorage = options.urlStorage;
    this._fetchRecord = options.fetchRecord;
  }

  get items(): readonly IUploadItem[] {
    return this._items;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** An upload finished: the server has the whole file. */
  get finished(): ISignal<this, IUploadItem> {
    return this._finished;
  }

  get endpoint(): string {
    return this._endpoint;
  }

  /** Start (or resume, when the same file was partly sent before) an upload. */
  async add(file: File, kind?: UploadKind): Promise<IUploadItem> {
    const item: IUploadItem = {
      key: `u${++this._counter}`,
      filename: file.name,
      kind: kind ?? kindFor(file.name),
      size: file.size,
      sent: 0,
      state: 'starting',
      error: null,
      url: null,
      resumed: false,
      urlStorageKey: null,
      checksum: this._digest !== null,
      pipelineId: null,
      filePath: null
    };
    this._items.unshift(item);
    this._emit();

    const options: tus.UploadOptions = {
      endpoint: this._endpoint,
      chunkSize: this._chunkSize,
      retryDelays: this._retryDelays,
      metadata: {
        filename: file.name,
        filetype: file.type || 'application/octet-stream',
        kind: item.kind
      },
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onBeforeRequest: req => {
        for (const [name, value] of Object.entries(authHeaders(this._settings))) {
          req.setHeader(name, value);
        }
      },
      onUploadUrlAvailable: () => {
        item.url = upload.url;
        this._emit();
      },
      onProgress: (sent: number, total: number) => {
        item.sent = sent;
        item.size = total;
        if (item.state === 'starting') {
          item.state = 'uploading';
        }
        this._emit();
      },
      onSuccess: () => {
        item.state = 'done';
        item.sent = item.size ?? item.sent;
        item.url = upload.url;
        item.error = null;
        this._emit();
        void this._describe(item).then(() => this._finished.emit(item));
      },
      onError: (error: Error) => {
        item.state = 'error';
        item.error = uploadErrorMessage(error);
        this._emit();
      },
      onShouldRetry: (error: tus.DetailedError) => shouldRetry(error)
    };
    if (this._urlStorage) {
      options.urlStorage = this._urlStorage;
    }
    if (this._digest) {
      const inner = new tus.DefaultHttpStack({});
      options.httpStack = new ChecksumHttpStack(inner, this._digest);
    }
    const upload = this._createUpload(file, options);
    this._uploads.set(item.key, upload);

    try {
      const previous = await upload.findPreviousUploads();
      if (previous.length) {
        const latest = [...previous].sort((a, b) =>
          String(b.creationTime).localeCompare(String(a.creationTime))
        )[0];
        upload.resumeFromPreviousUpload(latest);
        item.resumed = true;
        item.url = latest.uploadUrl;
        // It is no longer "interrupted": drop that entry.
        this._items = this._items.filter(
          i => !(i.state === 'interrupted' && i.urlStorageKey === latest.urlStorageKey)
        );
      }
    } catch (error) {
      console.warn('pirus: cannot look up previous uploads', error);
    }
    if (item.state === 'starting') {
      upload.start();
      item.state = 'uploading';
    }
    this._emit();
    return item;
  }

  pause(key: string): void {
    const upload = this._uploads.get(key);
    const item = this._find(key);
    if (!upload || !item || (item.state !== 'uploading' && item.state !== 'starting')) {
      return;
    }
    void upload.abort(false);
    item.state = 'paused';
    this._emit();
  }

  resume(key: string): void {
    const upload = this._uploads.get(key);
    const item = this._find(key);
    if (!upload || !item || (item.state !== 'paused' && item.state !== 'error')) {
      return;
    }
    item.state = 'uploading';
    item.error = null;
    upload.start();
    this._emit();
  }

  /** Stop and delete the upload on the server (or forget an interrupted one). */
  async cancel(key: string): Promise<void> {
    const item = this._find(key);
    if (!item) {
      return;
    }
    const upload = this._uploads.get(key);
    this._items = this._items.filter(i => i.key !== key);
    this._uploads.delete(key);
    this._emit();
    try {
      if (upload && item.state !== 'done') {
        await upload.abort(true);
      } else if (item.state === 'interrupted' && item.url) {
        await tus.Upload.terminate(item.url, {
          headers: authHeaders(this._settings),
          ...(this._urlStorage ? { urlStorage: this._urlStorage } : {})
        });
      }
    } catch (error) {
      console.warn('pirus: could not delete the upload on the server', error);
    }
    if (item.urlStorageKey) {
      await this._storage()
        ?.removeUpload(item.urlStorageKey)
        .catch(() => undefined);
    }
  }

  /** Forget finished and failed uploads. */
  clearFinished(): void {
    const keep = this._items.filter(i => i.state !== 'done' && i.state !== 'error');
    for (const item of this._items) {
      if (!keep.includes(item)) {
        this._uploads.delete(item.key);
      }
    }
    this._items = keep;
    this._emit();
  }

  /**
   * List the uploads a previous page left unfinished (their URLs are in the URL storage), so
   * the panel can offer to resume them.
   */
  async loadInterrupted(): Promise<IUploadItem[]> {
    const storage = this._storage();
    if (!storage) {
      return [];
    }
    let previous: tus.PreviousUpload[] = [];
    try {
      previous = await storage.findAllUploads();
    } catch {
      return [];
    }
    const found: IUploadItem[] = [];
    for (const prev of previous) {
      if (!prev.uploadUrl || !prev.uploadUrl.startsWith(this._endpoint)) {
        continue;
      }
      const known = this._items.some(
        i => i.urlStorageKey === prev.urlStorageKey || i.url === prev.uploadUrl
      );
      if (known) {
        continue;
      }
      let sent = 0;
      if (this._fetchRecord) {
        const record = await this._fetchRecord(prev.uploadUrl).catch(() => null);
        if (!record || record.status === 'complete' || record.status === 'error') {
          // Gone, expired, finished or failed on the server: nothing left to resume.
          await storage.removeUpload(prev.urlStorageKey).catch(() => undefined);
          continue;
        }
        sent = record.offset;
      }
      const kind = prev.metadata?.kind === 'pipeline' ? 'pipeline' : 'input';
      const item: IUploadItem = {
        key: `u${++this._counter}`,
        filename: prev.metadata?.filename || 'file',
        kind,
        size: prev.size,
        sent,
        state: 'interrupted',
        error: null,
        url: prev.uploadUrl,
        resumed: false,
        urlStorageKey: prev.urlStorageKey,
        checksum: this._digest !== null,
        pipelineId: null,
        filePath: null
      };
      found.push(item);
      this._items.push(item);
    }
    if (found.length) {
      this._emit();
    }
    return found;
  }

  dispose(): void {
    for (const upload of this._uploads.values()) {
      void upload.abort(false);
    }
    this._uploads.clear();
    Signal.clearData(this);
  }

  /** Learn what a finished upload became (a pipeline id, an input file path). */
  private async _describe(item: IUploadItem): Promise<void> {
    if (!this._fetchRecord || !item.url) {
      return;
    }
    try {
      const record = await this._fetchRecord(item.url);
      item.pipelineId = record?.pipeline_id ?? null;
      item.filePath = record?.file?.path ?? null;
      if (record?.status === 'error') {
        item.state = 'error';
        item.error = (record as any).error || 'the server could not finish the upload';
      }
      this._emit();
    } catch {
      // the state of the upload is still "done"; the lists show the rest
    }
  }

  private _storage(): tus.UrlStorage | null {
    if (this._urlStorage) {
      return this._urlStorage;
    }
    return tus.canStoreURLs ? tus.defaultOptions.urlStorage : null;
  }

  private _find(key: string): IUploadItem | undefined {
    return this._items.find(i => i.key === key);
  }

  private _emit(): void {
    this._items = [...this._items];
    this._changed.emit();
  }

  private _endpoint: string;
  private _settings: ServerConnection.ISettings;
  private _chunkSize: number;
  private _retryDelays: number[];
  private _digest: ((data: ArrayBuffer) => Promise<ArrayBuffer>) | null;
  private _createUpload: UploadFactory;
  private _urlStorage: tus.UrlStorage | undefined;
  private _fetchRecord: IUploadManagerOptions['fetchRecord'];
  private _items: IUploadItem[] = [];
  private _uploads = new Map<string, ITusUpload>();
  private _counter = 0;
  private _changed = new Signal<this, void>(this);
  private _finished = new Signal<this, IUploadItem>(this);
}
