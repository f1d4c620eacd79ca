import { createHash } from 'crypto';
import { describe, expect, it, vi } from 'vitest';
import type * as tus from 'tus-js-client';

import {
  ChecksumHttpStack,
  ITusUpload,
  IUploadItem,
  UploadManager,
  authHeaders,
  kindFor,
  shouldRetry,
  uploadErrorMessage,
  webCryptoDigest
} from '../uploads';
import { fakeSettings, json } from './helpers';

const ENDPOINT = 'http://localhost:8888/lab-base/pirus/api/v1/uploads';

class FakeUpload implements ITusUpload {
  static last: FakeUpload;
  url: string | null = null;
  started = 0;
  aborted: boolean[] = [];
  resumedFrom: tus.PreviousUpload | null = null;
  previous: tus.PreviousUpload[] = [];

  constructor(readonly file: any, readonly options: tus.UploadOptions) {
    FakeUpload.last = this;
  }
  start(): void {
    this.started++;
  }
  abort(terminate?: boolean): Promise<void> {
    this.aborted.push(!!terminate);
    return Promise.resolve();
  }
  findPreviousUploads(): Promise<tus.PreviousUpload[]> {
    return Promise.resolve(this.previous);
  }
  resumeFromPreviousUpload(previous: tus.PreviousUpload): void {
    this.resumedFrom = previous;
  }
}

class MemoryStorage implements tus.UrlStorage {
  entries = new Map<string, tus.PreviousUpload>();
  async findAllUploads() {
    return [...this.entries.values()];
  }
  async findUploadsByFingerprint() {
    return [...this.entries.values()];
  }
  async removeUpload(key: string) {
    this.entries.delete(key);
  }
  async addUpload(fingerprint: string, upload: tus.PreviousUpload) {
    const key = `tus::${fingerprint}::${this.entries.size}`;
    this.entries.set(key, { ...upload, urlStorageKey: key });
    return key;
  }
}

function file(name: string, content = 'ACGT'): File {
  return new File([content], name, { type: 'text/plain' });
}

function manager(extra: Record<string, unknown> = {}, previous: tus.PreviousUpload[] = []) {
  const { settings } = fakeSettings(() => json({}));
  const created: FakeUpload[] = [];
  const uploads = new UploadManager({
    endpoint: ENDPOINT,
    settings,
    checksum: false,
    createUpload: (f, options) => {
      const upload = new FakeUpload(f, options);
      upload.previous = previous;
      created.push(upload);
      return upload;
    },
    ...extra
  });
  return { uploads, created };
}

describe('upload helpers', () => {
  it('tells packages from input files', () => {
    expect(kindFor('count.tar.gz')).toBe('pipeline');
    expect(kindFor('X.TGZ')).toBe('pipeline');
    expect(kindFor('image.tar.xz')).toBe('pipeline');
    expect(kindFor('reads.fastq.gz')).toBe('input');
    expect(kindFor('notes.txt')).toBe('input');
  });

  it('sends the token like ServerConnection', () => {
    const { settings } = fakeSettings(() => json({}));
    expect(authHeaders(settings)).toEqual({ Authorization: 'token secret-token' });
    const { settings: none } = fakeSettings(() => json({}), { token: '' });
    expect(authHeaders(none)).toEqual({});
  });

  it('reads the server message of a failed TUS request', () => {
    const error = Object.assign(new Error('tus: unexpected response'), {
      originalResponse: {
        getStatus: () => 413,
        getBody: () => JSON.stringify({ error: { code: 'payload_too_large', message: 'upload is too large' } }),
        getHeader: () => undefined,
        getUnderlyingObject: () => null
      }
    });
    expect(uploadErrorMessage(error)).toBe('upload is too large (HTTP 413)');
    expect(uploadErrorMessage(new Error('tus: failed to upload chunk at offset 0, caused by Error: network down, originated from request (method: PATCH)'))).toBe(
      'Error: network down'
    );
  });

  it('retries network errors, 5xx, conflicts, locks and checksum mismatches only', () => {
    const withStatus = (status: number | null) =>
      ({ originalResponse: status === null ? null : { getStatus: () => status } }) as any;
    expect(shouldRetry(withStatus(null))).toBe(true);
    expect(shouldRetry(withStatus(502))).toBe(true);
    expect(shouldRetry(withStatus(409))).toBe(true);
    expect(shouldRetry(withStatus(423))).toBe(true);
    expect(shouldRetry(withStatus(460))).toBe(true);
    expect(shouldRetry(withStatus(403))).toBe(false);
    expect(shouldRetry(withStatus(413))).toBe(false);
  });

  it('adds Upload-Checksum (sha256) to PATCH requests only', async () => {
    const sent: { method: string; headers: Record<string, string>; body: unknown }[] = [];
    const inner: tus.HttpStack = {
      getName: () => 'fake',
      createRequest: (method: string) => {
        const headers: Record<string, string> = {};
        return {
          getMethod: () => method,
          getURL: () => ENDPOINT,
          setHeader: (k: string, v: string) => {
            headers[k] = v;
          },
          getHeader: (k: string) => headers[k],
          setProgressHandler: () => undefined,
          abort: () => Promise.resolve(),
          getUnderlyingObject: () => null,
          send: async (body: unknown) => {
            sent.push({ method, headers: { ...headers }, body });
            return {} as any;
          }
        };
      }
    };
    const digest = webCryptoDigest();
    expect(digest).not.toBeNull();
    const stack = new ChecksumHttpStack(inner, digest!);
    const data = new Blob(['hello pirus']);
    await stack.createRequest('PATCH', ENDPOINT).send(data);
    await stack.createRequest('POST', ENDPOINT).send(null);
    const expected = createHash('sha256').update('hello pirus').digest('base64');
    expect(sent[0].headers['Upload-Checksum']).toBe(`sha256 ${expected}`);
    expect(sent[0].body).toBe(data);
    expect(sent[1].headers['Upload-Checksum']).toBeUndefined();
    expect(stack.getName()).toBe('pirus-checksum(fake)');

    const aborted = stack.createRequest('PATCH', ENDPOINT);
    const pending = aborted.send(new Uint8Array([1, 2, 3]));
    await aborted.abort();
    await expect(pending).rejects.toThrow('aborted');
  });
});

describe('UploadManager', () => {
  it('starts an upload with its metadata and follows its progress', async () => {
    const { uploads, created } = manager();
    const finished: IUploadItem[] = [];
    uploads.finished.connect((_, item) => finished.push(item));
    const item = await uploads.add(file('reads.fastq'));
    const upload = created[0];
    expect(upload.started).toBe(1);
    expect(upload.options.endpoint).toBe(ENDPOINT);
    expect(upload.options.metadata).toEqual({ filename: 'reads.fastq', filetype: 'text/plain', kind: 'input' });
    expect(upload.options.chunkSize).toBe(8 * 1024 * 1024);
    expect(upload.options.removeFingerprintOnSuccess).toBe(true);
    expect(item.state).toBe('uploading');

    const headers: Record<string, string> = {};
    upload.options.onBeforeRequest!({ setHeader: (k: string, v: string) => (headers[k] = v) } as any);
    expect(headers.Authorization).toBe('token secret-token');

    upload.options.onProgress!(2, 4);
    expect(uploads.items[0]).toMatchObject({ sent: 2, size: 4, state: 'uploading' });
    upload.url = ENDPOINT + '/abc';
    upload.options.onSuccess!({} as any);
    expect(uploads.items[0]).toMatchObject({ state: 'done', sent: 4, url: ENDPOINT + '/abc' });
    await vi.waitFor(() => expect(finished.map(i => i.filename)).toEqual(['reads.fastq']));

    uploads.clearFinished();
    expect(uploads.items).toHaveLength(0);
  });

  it('learns what a finished upload became', async () => {
    const fetchRecord = vi.fn(async (url: string) =>
      url.endsWith('/p1')
        ? { offset: 4, length: 4, status: 'complete', pipeline_id: 3, file: null }
        : { offset: 4, length: 4, status: 'complete', pipeline_id: null, file: { path: 'pirus-uploads/a.fastq' } }
    );
    const { uploads, created } = manager({ fetchRecord });
    const finished: IUploadItem[] = [];
    uploads.finished.connect((_, item) => finished.push(item));
    await uploads.add(file('count.tar.gz'));
    await uploads.add(file('a.fastq'));
    created[0].url = ENDPOINT + '/p1';
    created[0].options.onSuccess!({} as any);
    created[1].url = ENDPOINT + '/i1';
    created[1].options.onSuccess!({} as any);
    await vi.waitFor(() => expect(finished).toHaveLength(2));
    const byName = Object.fromEntries(uploads.items.map(i => [i.filename, i]));
    expect(byName['count.tar.gz']).toMatchObject({ pipelineId: 3, filePath: null, state: 'done' });
    expect(byName['a.fastq']).toMatchObject({ pipelineId: null, filePath: 'pirus-uploads/a.fastq' });
  });

  it('uses the kind asked for, or the file name', async () => {
    const { uploads, created } = manager();
    await uploads.add(file('count.tar.gz'));
    await uploads.add(file('data.tar.gz'), 'input');
    expect(created[0].options.metadata!.kind).toBe('pipeline');
    expect(created[1].options.metadata!.kind).toBe('input');
  });

  it('pauses, resumes and reports errors', async () => {
    const { uploads, created } = manager();
    const item = await uploads.add(file('a.fastq'));
    uploads.pause(item.key);
    expect(created[0].aborted).toEqual([false]);
    expect(uploads.items[0].state).toBe('paused');
    uploads.resume(item.key);
    expect(created[0].started).toBe(2);
    expect(uploads.items[0].state).toBe('uploading');
    created[0].options.onError!(new Error('tus: failed, caused by boom'));
    expect(uploads.items[0]).toMatchObject({ state: 'error', error: 'boom' });
    uploads.resume(item.key); // "Retry"
    expect(uploads.items[0]).toMatchObject({ state: 'uploading', error: null });
  });

  it('cancels by terminating the upload on the server', async () => {
    const { uploads, created } = manager();
    const item = await uploads.add(file('a.fastq'));
    await uploads.cancel(item.key);
    expect(created[0].aborted).toEqual([true]);
    expect(uploads.items).toHaveLength(0);
  });

  it('resumes a previous upload of the same file and lists interrupted ones', async () => {
    const storage = new MemoryStorage();
    const key = await storage.addUpload('fp', {
      size: 4,
      metadata: { filename: 'big.fastq', kind: 'input' },
      creationTime: '2024-01-01',
      urlStorageKey: '',
      uploadUrl: ENDPOINT + '/old1',
      parallelUploadUrls: null
    });
    await storage.addUpload('fp2', {
      size: 9,
      metadata: { filename: 'done.fastq', kind: 'input' },
      creationTime: '2024-01-01',
      urlStorageKey: '',
      uploadUrl: ENDPOINT + '/finished',
      parallelUploadUrls: null
    });
    await storage.addUpload('fp3', {
      size: 9,
      metadata: { filename: 'elsewhere', kind: 'input' },
      creationTime: '2024-01-01',
      urlStorageKey: '',
      uploadUrl: 'http://other-server/uploads/x',
      parallelUploadUrls: null
    });
    const fetchRecord = vi.fn(async (url: string) =>
      url.endsWith('/old1') ? { offset: 2, length: 4, status: 'uploading' } : { offset: 9, length: 9, status: 'complete' }
    );
    const previous = [(await storage.findAllUploads())[0]];
    const { uploads, created } = manager({ urlStorage: storage, fetchRecord }, previous);

    const interrupted = await uploads.loadInterrupted();
    expect(interrupted.map(i => [i.filename, i.state, i.sent, i.size])).toEqual([['big.fastq', 'interrupted', 2, 4]]);
    expect(storage.entries.size).toBe(2); // the finished one is forgotten, the foreign one left alone
    expect(fetchRecord).toHaveBeenCalledTimes(2);

    const item = await uploads.add(file('big.fastq'));
    expect(created[0].resumedFrom!.urlStorageKey).toBe(key);
    expect(item.resumed).toBe(true);
    expect(item.url).toBe(ENDPOINT + '/old1');
    expect(uploads.items.map(i => i.state)).toEqual(['uploading']);
  });
});
