/**
 * What the side panel shows: one of three lists (tabs), or a details view / the new-run form
 * stacked on top of them. Commands (`pirus:open-run`, the file-browser context menu, a
 * notification's button) navigate through it.
 */
import { ISignal, Signal } from '@lumino/signaling';

export type Tab = 'pipelines' | 'runs' | 'uploads';

export interface INewRunView {
  kind: 'new-run';
  pipelineId?: number;
  inputs: string[];
  config?: Record<string, unknown>;
  name?: string;
  /** The run this one repeats. */
  rerunOf?: number;
}

export type View =
  | { kind: 'list' }
  | { kind: 'pipeline'; id: number }
  | { kind: 'run'; id: number }
  | INewRunView;

export class Router {
  get view(): View {
    return this._stack[this._stack.length - 1] ?? { kind: 'list' };
  }

  get tab(): Tab {
    return this._tab;
  }

  get depth(): number {
    return this._stack.length;
  }

  /** Bumped on every navigation: components keyed on it start fresh. */
  get serial(): number {
    return this._serial;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  setTab(tab: Tab): void {
    this._tab = tab;
    this._stack = [];
    this._bump();
  }

  /** Show a view above the lists (replacing any view of the same kind on top). */
  show(view: View): void {
    if (view.kind === 'list') {
      this._stack = [];
    } else {
      if (view.kind === 'run') {
        this._tab = 'runs';
      } else if (view.kind === 'pipeline') {
        this._tab = 'pipelines';
      }
      const top = this._stack[this._stack.length - 1];
      if (top && top.kind === view.kind) {
        this._stack.pop();
      }
      this._stack.push(view);
      if (this._stack.length > 10) {
        this._stack.shift();
      }
    }
    this._bump();
  }

  back(): void {
    this._stack.pop();
    this._bump();
  }

  /** What survives a page reload (the state database keeps it): the tab and the views. */
  snapshot(): { tab: Tab; stack: View[] } {
    return { tab: this._tab, stack: this._stack.map(v => ({ ...v })) };
  }

  /** Back to a snapshot; anything that does not look like one is ignored. */
  restore(state: unknown): void {
    const value = state as { tab?: unknown; stack?: unknown } | null;
    if (!value || !['pipelines', 'runs', 'uploads'].includes(value.tab as string)) {
      return;
    }
    const kinds = ['pipeline', 'run', 'new-run'];
    const stack = Array.isArray(value.stack)
      ? (value.stack as View[]).filter(v => v && kinds.includes(v.kind)).slice(-10)
      : [];
    this._tab = value.tab as Tab;
    this._stack = stack;
    this._bump();
  }

  private _bump(): void {
    this._serial++;
    this._changed.emit();
  }

  private _tab: Tab = 'pipelines';
  private _stack: View[] = [];
  private _serial = 0;
  private _changed = new Signal<this, void>(this);
}
