import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { backoffDelay, EventStream, eventsUrl } from '../events';
import { FakeSocket, fakeSettings, json } from './helpers';

function stream(extra: Record<string, unknown> = {}) {
  const { settings } = fakeSettings(() => json({}), { WebSocket: FakeSocket as any, ...extra });
  return new EventStream({ settings, minDelay: 100, maxDelay: 1000, pingInterval: 500, random: () => 0.5 });
}

describe('events', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeSocket.instances = [];
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('builds the websocket URL, with the token only when asked', () => {
    const { settings } = fakeSettings(() => json({}));
    expect(eventsUrl(settings)).toBe('ws://localhost:8888/lab-base/pirus/api/v1/events?token=secret-token');
    const { settings: cookie } = fakeSettings(() => json({}), { appendToken: false });
    expect(eventsUrl(cookie)).toBe('ws://localhost:8888/lab-base/pirus/api/v1/events');
  });

  it('backs off exponentially with jitter, up to the maximum', () => {
    const half = () => 0.5;
    expect(backoffDelay(0, 100, 1000, half)).toBe(75);
    expect(backoffDelay(1, 100, 1000, half)).toBe(150);
    expect(backoffDelay(3, 100, 1000, half)).toBe(600);
    expect(backoffDelay(10, 100, 1000, half)).toBe(750);
    expect(backoffDelay(10, 100, 1000, () => 0)).toBe(500);
    expect(backoffDelay(10, 100, 1000, () => 0.999)).toBeLessThanOrEqual(1000);
  });

  it('dispatches events and ignores pongs and garbage', () => {
    const events = stream();
    const got: string[] = [];
    events.message.connect((_, e) => got.push(e.type));
    events.connect();
    const socket = FakeSocket.instances[0];
    socket.open();
    expect(events.state).toBe('open');
    socket.receive({ type: 'run.updated', data: { id: 1 } });
    socket.receive({ type: 'pong', data: {} });
    socket.receive('not json');
    expect(got).toEqual(['run.updated']);
    events.dispose();
  });

  it('reconnects after the server goes away, with growing delays', () => {
    const events = stream();
    const states: string[] = [];
    events.stateChanged.connect((_, s) => states.push(s));
    events.connect();
    FakeSocket.instances[0].open();
    FakeSocket.instances[0].drop();
    expect(events.state).toBe('closed');
    expect(FakeSocket.instances).toHaveLength(1);
    vi.advanceTimersByTime(74);
    expect(FakeSocket.instances).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeSocket.instances).toHaveLength(2); // first retry after 75 ms
    FakeSocket.instances[1].drop();
    vi.advanceTimersByTime(149);
    expect(FakeSocket.instances).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(FakeSocket.instances).toHaveLength(3); // then 150 ms
    FakeSocket.instances[2].open();
    expect(events.opened).toBe(2);
    // After a successful open the delay starts small again.
    FakeSocket.instances[2].drop();
    vi.advanceTimersByTime(75);
    expect(FakeSocket.instances).toHaveLength(4);
    expect(states).toEqual(['connecting', 'open', 'closed', 'connecting', 'closed', 'connecting', 'open', 'closed', 'connecting']);
    events.dispose();
  });

  it('comes back at once when cut off for being slow (1013)', () => {
    const events = stream();
    events.connect();
    FakeSocket.instances[0].open();
    FakeSocket.instances[0].drop();
    vi.advanceTimersByTime(75);
    FakeSocket.instances[1].drop(); // attempt counter is now 2
    vi.advanceTimersByTime(150);
    FakeSocket.instances[2].drop(1013);
    vi.advanceTimersByTime(75);
    expect(FakeSocket.instances).toHaveLength(4);
    events.dispose();
  });

  it('pings while open and stops everything when disposed', () => {
    const events = stream();
    events.connect();
    const socket = FakeSocket.instances[0];
    socket.open();
    vi.advanceTimersByTime(1000);
    expect(socket.sent).toEqual(['ping', 'ping']);
    events.dispose();
    expect(socket.closed).toBe(true);
    vi.advanceTimersByTime(10000);
    expect(FakeSocket.instances).toHaveLength(1);
    expect(socket.sent).toHaveLength(2);
  });

  it('reconnect() replaces the socket now', () => {
    const events = stream();
    events.connect();
    FakeSocket.instances[0].open();
    events.reconnect();
    expect(FakeSocket.instances[0].closed).toBe(true);
    expect(FakeSocket.instances).toHaveLength(2);
    events.dispose();
  });
});
