/**
 * Run-configuration forms: the server's per-field validation errors (`error.details` of a 400
 * from `POST /runs`) turned into an rjsf `ErrorSchema`, so that the FormComponent shows each
 * message next to its field.
 */
import { IFieldError } from './api';

export interface IErrorSchema {
  __errors?: string[];
  [field: string]: IErrorSchema | string[] | undefined;
}

/** `[{field: "a.b", message}]` -> `{a: {b: {__errors: [message]}}}`; `""` is the form itself. */
export function errorSchemaFromDetails(details: IFieldError[]): IErrorSchema {
  const root: IErrorSchema = {};
  for (const { field, message } of details) {
    let node = root;
    for (const part of field ? field.split('.') : []) {
      let child = node[part];
      if (!child || Array.isArray(child)) {
        child = {};
        node[part] = child;
      }
      node = child as IErrorSchema;
    }
    node.__errors = [...(node.__errors || []), message];
  }
  return root;
}

/** Field errors whose field is not a property of the schema (shown above the form instead). */
export function unplacedErrors(details: IFieldError[], schema: Record<string, any>): IFieldError[] {
  return details.filter(({ field }) => {
    if (!field) {
      return true;
    }
    let node: any = schema;
    for (const part of field.split('.')) {
      if (node && node.type === 'array' && /^\d+$/.test(part)) {
        node = node.items;
        continue;
      }
      node = node?.properties?.[part];
      if (!node) {
        return true;
      }
    }
    return false;
  });
}

/** Whether a schema has anything to fill in. */
export function hasFields(schema: Record<string, any> | null | undefined): boolean {
  if (!schema) {
    return false;
  }
  const props = schema.properties;
  return !!props && typeof props === 'object' && Object.keys(props).length > 0;
}

/**
 * Keep only the config keys the schema knows (a re-run after the pipeline changed must not send
 * properties `additionalProperties: false` would refuse), unless the schema allows extras.
 */
export function pruneConfig(
  config: Record<string, unknown>,
  schema: Record<string, any> | null | undefined
): Record<string, unknown> {
  if (!schema || schema.additionalProperties !== false || !schema.properties) {
    return { ...config };
  }
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(config)) {
    if (key in schema.properties) {
      out[key] = config[key];
    }
  }
  return out;
}

/** One titled section of an nf-core schema, as the server lists it (`x-pirus-groups`). */
export interface IFormGroup {
  id: string;
  title: string;
  description: string;
  help_html?: string;
  fa_icon: string;
  properties: string[];
}

/** The sections of a normalised form (none for a form without nf-core groups). */
export function formGroups(schema: Record<string, any> | null | undefined): IFormGroup[] {
  const groups = schema?.['x-pirus-groups'];
  return Array.isArray(groups) ? groups.filter(g => g && Array.isArray(g.properties)) : [];
}

/** The names of the top-level properties marked `hidden: true`. */
export function hiddenProperties(schema: Record<string, any> | null | undefined): string[] {
  const props = schema?.properties || {};
  return Object.keys(props).filter(name => props[name] && props[name].hidden === true);
}

// By extension, as Python's mimetypes guesses them (the kernel's form uses that): a file whose
// type is known and differs is not offered (two text/* types are close enough).
const MIME_BY_EXTENSION: Record<string, string> = {
  csv: 'text/csv',
  tsv: 'text/tab-separated-values',
  txt: 'text/plain',
  json: 'application/json',
  html: 'text/html',
  xml: 'text/xml',
  pdf: 'application/pdf',
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  svg: 'image/svg+xml',
  zip: 'application/zip',
  tar: 'application/x-tar'
};

/** Whether a file named `name` fits a path field: its `pattern` and its `mimetype`. */
export function acceptsFile(schema: Record<string, any>, name: string): boolean {
  if (typeof schema.pattern === 'string') {
    try {
      if (!new RegExp(schema.pattern, 'u').test(name)) {
        return false;
      }
    } catch {
      return false; // a pattern this browser cannot read fits nothing
    }
  }
  if (typeof schema.mimetype === 'string' && schema.mimetype) {
    const extension = name.includes('.') ? name.split('.').pop()!.toLowerCase() : '';
    const guessed = MIME_BY_EXTENSION[extension];
    if (guessed && guessed !== schema.mimetype && !(guessed.startsWith('text/') && schema.mimetype.startsWith('text/'))) {
      return false;
    }
  }
  return true;
}

const FILE_FORMATS = ['file-path', 'path'];

/**
 * The schema to draw: each top-level file field (`format: file-path|path`) offered, as
 * suggestions (`examples`, shown by rjsf as a datalist), the candidate files it accepts.
 */
export function withFileSuggestions(schema: Record<string, any>, candidates: string[]): Record<string, any> {
  const props = schema.properties;
  if (!props || typeof props !== 'object') {
    return schema;
  }
  let changed = false;
  const out: Record<string, any> = {};
  for (const [name, prop] of Object.entries<any>(props)) {
    if (prop && prop.type === 'string' && FILE_FORMATS.includes(prop.format) && !prop.enum) {
      const fitting = [...new Set(candidates)].filter(c => acceptsFile(prop, c.split('/').pop() || c));
      if (fitting.length) {
        out[name] = { ...prop, examples: fitting };
        changed = true;
        continue;
      }
    }
    out[name] = prop;
  }
  return changed ? { ...schema, properties: out } : schema;
}

// JSON-Schema / nf-core formats whose value is a file's path: their `pattern` says which
// files the pipeline accepts.
const FILE_PATH_FORMATS = new Set(['file-path', 'path']);

/** The patterns of the form's file fields (nested groups and arrays included); [] when the
 * form says nothing about files. Patterns JavaScript cannot compile are left out. */
export function filePatterns(schema: Record<string, any> | null | undefined): RegExp[] {
  const out: RegExp[] = [];
  const seen = new Set<unknown>();
  const visit = (node: any) => {
    if (!node || typeof node !== 'object' || seen.has(node)) {
      return;
    }
    seen.add(node);
    if (FILE_PATH_FORMATS.has(node.format) && typeof node.pattern === 'string') {
      try {
        out.push(new RegExp(node.pattern, 'u'));
      } catch {
        // a pattern for another regex dialect: it filters nothing here
      }
    }
    for (const value of Object.values(node)) {
      if (value && typeof value === 'object') {
        visit(value);
      }
    }
  };
  visit(schema);
  return out;
}

/** Whether a pipeline whose file fields have these patterns accepts the file at `path`
 * (matched against the path and its base name); every file when there is no pattern. */
export function acceptsPath(patterns: RegExp[], path: string): boolean {
  if (!patterns.length) {
    return true;
  }
  const name = path.split('/').pop() || path;
  return patterns.some(re => re.test(path) || re.test(name));
}

/**
 * The pipeline that fits a file selection best: the most files accepted, a form that names
 * its files (patterns) before one that accepts anything, then the order given (newest
 * first). `forms` maps pipeline ids to their forms, in that order.
 */
export function bestPipelineFor(forms: [number, Record<string, any> | null][], paths: string[]): number | undefined {
  let best: { id: number; score: number } | undefined;
  for (const [id, schema] of forms) {
    const patterns = filePatterns(schema);
    const accepted = paths.filter(p => acceptsPath(patterns, p)).length;
    const score = accepted * 2 + (patterns.length && accepted ? 1 : 0);
    if (!best || score > best.score) {
      best = { id, score };
    }
  }
  return best?.id;
}
