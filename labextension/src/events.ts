/**
 * The events websocket (`{ws_url}pirus/api/v1/events`): every change on the server as
 * `{"type", "data"}`. Reconnects with exponential backoff (and jitter) after the server goes
 * away or restarts, and pings so that idle proxies do not drop it.
 *
 * Authentication follows JupyterLab's own websockets: the browser's cookie, plus `?token=`
 * when the settings say so (`appendToken`, e.g. a server on another host).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { API_PATH, IPirusEvent } from './api';

export type ConnectionState = 'connecting' | 'open' | 'closed';

export interface IEventStreamOptions {
  settings: ServerConnection.ISettings;
  /** First retry delay, milliseconds. */
  minDelay?: number;
  /** Longest retry delay, milliseconds. */
  maxDelay?: number;
  /** Ping period, milliseconds (0: no pings). */
  pingInterval?: number;
  /** Source of randomness for the jitter (tests make it deterministic). */
  random?: () => number;
}

/** The wait before reconnection attempt number `attempt` (0-based): exponential, jittered. */
export function backoffDelay(
  attempt: number,
  minDelay = 500,
  maxDelay = 30000,
  random: () => number = Math.random
): number {
  const base = Math.min(maxDelay, minDelay * Math.pow(2, Math.max(0, attempt)));
  // Full delay in [base/2, base): clients do not all come back at the same instant.
  return Math.round(base / 2 + (random() * base) / 2);
}

export function eventsUrl(settings: ServerConnection.ISettings): string {
  let url = URLExt.join(settings.wsUrl, API_PATH, 'events');
  if (settings.appendToken && settings.token) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}

export class EventStream implements IDisposable {
  constructor(options: IEventStreamOptions) {
    this._settings = options.settings;
    this._minDelay = options.minDelay ?? 500;
    this._maxDelay = options.maxDelay ?? 30000;
    this._pingInterval = options.pingInterval ?? 25000;
    this._random = options.random ?? Math.random;
  }

  /** Every event received. */
  get message(): ISignal<this, IPirusEvent> {
    return this._message;
  }

  /** The connection opened, closed or is being retried. */
  get stateChanged(): ISignal<this, ConnectionState> {
    return this._stateChanged;
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** Connections opened so far (the first is 1; more means reconnections). */
  get opened(): number {
    return this._opened;
  }

  /** Milliseconds until the next attempt while closed, else null. */
  get retryIn(): number | null {
    return this._retryAt === null ? null : Math.max(0, this._retryAt - Date.now());
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  connect(): void {
    if (this._disposed || this._socket) {
      return;
    }
    this._clearRetry();
    this._setState('connecting');
    let socket: WebSocket;
    try {
      socket = new this._settings.WebSocket(eventsUrl(this._settings));
    } catch (error) {
      console.warn('pirus: cannot open the events websocket', error);
      this._scheduleRetry();
      return;
    }
    this._socket = socket;
    socket.onopen = () => {
      if (socket !== this._socket) {
        return;
      }
      this._attempt = 0;
      this._opened++;
      this._setState('open');
      this._startPing();
    };
    socket.onmessage = (msg: MessageEvent) => {
      if (socket !== this._socket) {
        return;
      }
      let event: IPirusEvent;
      try {
        event = JSON.parse(String(msg.data));
      } catch {
        return;
      }
      if (event && typeof event.type === 'string' && event.type !== 'pong') {
        this._message.emit(event);
      }
    };
    socket.onclose = (ev: CloseEvent) => {
      if (socket !== this._socket) {
        return;
      }
      this._socket = null;
      this._stopPing();
      if (this._disposed) {
        return;
      }
      // 1013: the server cut us off for being slow; come back at once and re-read state.
      if (ev && ev.code === 1013) {
        this._attempt = 0;
      }
      this._scheduleRetry();
    };
    socket.onerror = () => {
      // onclose follows and schedules the retry
    };
  }

  /** Drop the current connection (if any) and connect now. */
  reconnect(): void {
    const socket = this._socket;
    this._socket = null;
    this._stopPing();
    if (socket) {
      socket.onclose = null;
      socket.close();
    }
    this._attempt = 0;
    this.connect();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._clearRetry();
    this._stopPing();
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      socket.onclose = null;
      socket.close();
    }
    this._setState('closed');
    Signal.clearData(this);
  }

  private _scheduleRetry(): void {
    this._setState('closed');
    const delay = backoffDelay(this._attempt++, this._minDelay, this._maxDelay, this._random);
    this._retryAt = Date.now() + delay;
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._retryAt = null;
      this.connect();
    }, delay);
  }

  private _clearRetry(): void {
    if (this._retryTimer !== null) {
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
    this._retryAt = null;
  }

  private _startPing(): void {
    this._stopPing();
    if (this._pingInterval > 0) {
      this._pingTimer = setInterval(() => {
        if (this._socket && this._socket.readyState === 1) {
          this._socket.send('ping');
        }
      }, this._pingInterval);
    }
  }

  private _stopPing(): void {
    if (this._pingTimer !== null) {
      clearInterval(this._pingTimer);
      this._pingTimer = null;
    }
  }

  private _setState(state: ConnectionState): void {
    if (state !== this._state) {
      this._state = state;
      this._stateChanged.emit(state);
    }
  }

  private _settings: ServerConnection.ISettings;
  private _minDelay: number;
  private _maxDelay: number;
  private _pingInterval: number;
  private _random: () => number;
  private _socket: WebSocket | null = null;
  private _state: ConnectionState = 'closed';
  private _attempt = 0;
  private _opened = 0;
  private _retryTimer: ReturnType<typeof setTimeout> | null = null;
  private _retryAt: number | null = null;
  private _pingTimer: ReturnType<typeof setInterval> | null = null;
  private _disposed = false;
  private _message = new Signal<this, IPirusEvent>(this);
  private _stateChanged = new Signal<this, ConnectionState>(this);
}
