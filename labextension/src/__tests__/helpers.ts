/**
 * Test doubles: ServerConnection settings whose fetch records requests and answers from a
 * table, and a fake WebSocket class.
 */
import { ServerConnection } from '@jupyterlab/services';

export interface IRecorded {
  method: string;
  url: string;
  headers: Headers;
  body: string | null;
  signal: AbortSignal;
}

export type Responder = (req: IRecorded) => Response | Promise<Response>;

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers }
  });
}

export function fakeSettings(responder: Responder, extra: Partial<ServerConnection.ISettings> = {}) {
  const requests: IRecorded[] = [];
  const fetchFn = async (input: RequestInfo, init?: RequestInit): Promise<Response> => {
    const request = input instanceof Request ? input : new Request(input, init);
    const body = request.method === 'GET' || request.method === 'HEAD' ? null : await request.text();
    const recorded = { method: request.method, url: request.url, headers: request.headers, body, signal: request.signal };
    requests.push(recorded);
    return responder(recorded);
  };
  const settings = ServerConnection.makeSettings({
    baseUrl: 'http://localhost:8888/lab-base/',
    wsUrl: 'ws://localhost:8888/lab-base/',
    token: 'secret-token',
    appendToken: true,
    fetch: fetchFn as any,
    ...extra
  });
  return { settings, requests };
}

/** The path and query of a recorded URL without ServerConnection's cache-busting number. */
export function pathOf(url: string): { path: string; query: URLSearchParams } {
  const u = new URL(url);
  const query = new URLSearchParams();
  u.searchParams.forEach((value, key) => {
    if (!/^\d+$/.test(key)) {
      query.append(key, value);
    }
  });
  return { path: u.pathname, query };
}

export class FakeSocket {
  static instances: FakeSocket[] = [];
  readyState = 0;
  sent: string[] = [];
  closed = false;
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: any) => void) | null = null;
  onclose: ((ev: any) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;

  constructor(readonly url: string) {
    FakeSocket.instances.push(this);
  }

  send(data: string): void {
    this.sent.push(data);
  }

  close(): void {
    this.closed = true;
    this.readyState = 3;
  }

  // -- driven by the tests --
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(data: unknown): void {
    this.onmessage?.({ data: typeof data === 'string' ? data : JSON.stringify(data) });
  }

  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}
