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
