/**
 * The new-run form: a pipeline, its inputs (file-browser selection, uploaded files, or a typed
 * path), a name, and the pipeline's form rendered by JupyterLab's rjsf FormComponent. The
 * server validates the config; its per-field errors are shown next to the fields.
 */
import { FormComponent, addIcon, closeIcon, runIcon } from '@jupyterlab/ui-components';
import validator from '@rjsf/validator-ajv8';
import React, { useEffect, useMemo, useRef, useState } from 'react';

import { baseName, errorMessage, IFieldError, PirusRequestError } from '../api';
import {
  acceptsPath,
  bestPipelineFor,
  errorSchemaFromDetails,
  filePatterns,
  hasFields,
  IErrorSchema,
  pruneConfig,
  unplacedErrors,
  withFileSuggestions
} from '../forms';
import { INewRunView } from '../router';
import { ActionButton, EmptyState, ErrorBanner, IPanelContext, useSignal } from './common';
import { FORM_UI_SCHEMA } from './sections';

export function NewRunForm(props: { ctx: IPanelContext; view: INewRunView }): JSX.Element {
  const { ctx, view } = props;
  const { trans } = ctx;
  useSignal(ctx.model.changed);
  const ready = ctx.model.readyPipelines();
  const [pipelineId, setPipelineId] = useState<number | undefined>(view.pipelineId);
  const [inputs, setInputs] = useState<string[]>(() => unique(view.inputs || []));
  const [name, setName] = useState(view.name ?? '');
  const [formData, setFormData] = useState<Record<string, unknown>>(view.config ?? {});
  const [schema, setSchema] = useState<Record<string, any> | null>(null);
  const [schemaError, setSchemaError] = useState<string | null>(null);
  const [extraErrors, setExtraErrors] = useState<IErrorSchema | undefined>(undefined);
  const [fieldErrors, setFieldErrors] = useState<IFieldError[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const [typedPath, setTypedPath] = useState('');
  const [picked, setPicked] = useState('');
  // The file-browser selection the form was opened with (not a re-run's inputs): only the
  // files the chosen pipeline's form accepts are pre-filled, the others listed aside.
  const selection = useMemo(() => (view.rerunOf === undefined ? unique(view.inputs || []) : []), []);
  const [skipped, setSkipped] = useState<string[]>([]);
  const filteredFor = useRef<number | undefined>(undefined);

  // Default to the pipeline that fits the selection best, else the newest ready one.
  useEffect(() => {
    if (pipelineId !== undefined || !ready.length) {
      return;
    }
    if (!selection.length || ready.length === 1) {
      setPipelineId(ready[0].id);
      return;
    }
    let live = true;
    Promise.all(ready.map(p => ctx.api.pipelineForm(p.id).catch(() => null)))
      .then(forms => {
        if (live) {
          setPipelineId(current => current ?? bestPipelineFor(ready.map((p, i) => [p.id, forms[i]]), selection));
        }
      })
      .catch(() => live && setPipelineId(current => current ?? ready[0].id));
    return () => {
      live = false;
    };
  }, [ready.length]);

  const inputsKey = inputs.join('\n');
  useEffect(() => {
    if (pipelineId === undefined) {
      setSchema(null);
      return;
    }
    let live = true;
    setSchemaError(null);
    ctx.api
      .pipelineForm(pipelineId, inputs)
      .then(s => {
        if (live) {
          setSchema(s);
          setFormData(current => pruneConfig(current, s));
          // once per chosen pipeline: a chip removed or added by hand stays so
          if (selection.length && filteredFor.current !== pipelineId) {
            filteredFor.current = pipelineId;
            const patterns = filePatterns(s);
            setInputs(current =>
              unique([...current.filter(p => !selection.includes(p)), ...selection.filter(p => acceptsPath(patterns, p))])
            );
            setSkipped(selection.filter(p => !acceptsPath(patterns, p)));
          }
        }
      })
      .catch(e => {
        if (live) {
          setSchema(null);
          setSchemaError(errorMessage(e));
        }
      });
    return () => {
      live = false;
    };
  }, [pipelineId, inputsKey]);

  const pipeline = pipelineId !== undefined ? ctx.model.pipelines.get(pipelineId) : undefined;
  const files = ctx.model.uploadedFiles().filter(f => !inputs.includes(f.path));
  // File fields are offered the run's inputs (by name) and the uploaded files (by path).
  const drawn = useMemo(
    () => (schema ? withFileSuggestions(schema, [...inputs.map(baseName), ...ctx.model.uploadedFiles().map(f => f.path)]) : null),
    [schema, inputsKey, files.length]
  );
  const unplaced = useMemo(() => (schema ? unplacedErrors(fieldErrors, schema) : fieldErrors), [fieldErrors, schema]);

  const addInputs = (paths: string[]) => {
    const clean = paths.map(p => p.trim().replace(/^\/+/, '')).filter(Boolean);
    if (clean.length) {
      setInputs(current => unique([...current, ...clean]));
    }
  };

  const submit = async () => {
    if (pipelineId === undefined) {
      setError(trans.__('Choose a pipeline first.'));
      return;
    }
    setSubmitting(true);
    setError(null);
    setExtraErrors(undefined);
    setFieldErrors([]);
    try {
      const since = ctx.model.mark();
      const run = await ctx.api.createRun({ pipeline_id: pipelineId, config: formData, inputs, name });
      ctx.model.applyRecord('run', run, since);
      ctx.router.show({ kind: 'run', id: run.id });
    } catch (e) {
      if (e instanceof PirusRequestError && e.fieldErrors.length) {
        setFieldErrors(e.fieldErrors);
        setExtraErrors(errorSchemaFromDetails(e.fieldErrors));
        setError(trans.__('The configuration is not valid: see the fields marked below.'));
      } else {
        setError(errorMessage(e));
      }
    } finally {
      setSubmitting(false);
    }
  };

  if (!ready.length && ctx.model.loaded) {
    return (
      <EmptyState title={trans.__('No pipeline is ready')}>
        <p>{trans.__('Install a pipeline first: upload its package in the Uploads tab.')}</p>
        <ActionButton label={trans.__('Go to uploads')} icon={addIcon} onClick={() => ctx.router.setTab('uploads')} />
      </EmptyState>
    );
  }

  return (
    <div className="jp-pirus-details jp-pirus-newrun" role="form" aria-label={trans.__('New run')}>
      <h2 className="jp-pirus-details-title">{view.rerunOf ? trans.__('Re-run #%1', view.rerunOf) : trans.__('New run')}</h2>
      <label className="jp-pirus-block-field">
        <span>{trans.__('Pipeline')}</span>
        <select
          className="jp-pirus-select"
          value={pipelineId ?? ''}
          data-testid="pirus-newrun-pipeline"
          onChange={e => {
            setPipelineId(Number(e.currentTarget.value));
            setExtraErrors(undefined);
            setFieldErrors([]);
          }}
        >
          {pipelineId !== undefined && !ready.some(p => p.id === pipelineId) ? (
            <option value={pipelineId}>
              {pipeline ? `${pipeline.name} ${pipeline.version ?? ''} (${pipeline.status})` : trans.__('#%1 (not installed)', pipelineId)}
            </option>
          ) : null}
          {ready.map(p => (
            <option key={p.id} value={p.id}>
              {p.name} {p.version ?? ''}
            </option>
          ))}
        </select>
      </label>
      {pipeline?.description ? <p className="jp-pirus-muted">{pipeline.description}</p> : null}

      <fieldset className="jp-pirus-fieldset">
        <legend>{trans.__('Inputs')}</legend>
        {inputs.length ? (
          <ul className="jp-pirus-chips" aria-label={trans.__('Selected inputs')} data-testid="pirus-newrun-inputs">
            {inputs.map(path => (
              <li key={path} className="jp-pirus-chip" title={path}>
                <span>{baseName(path)}</span>
                <button
                  type="button"
                  className="jp-pirus-icon-button"
                  aria-label={trans.__('Remove input %1', path)}
                  onClick={() => setInputs(current => current.filter(p => p !== path))}
                >
                  <closeIcon.react tag="span" />
                </button>
              </li>
            ))}
          </ul>
        ) : (
          <p className="jp-pirus-muted">{trans.__('No input selected.')}</p>
        )}
        {skipped.length ? (
          <div className="jp-pirus-skipped" data-testid="pirus-newrun-skipped">
            <span className="jp-pirus-muted">
              {pipeline ? trans.__('Not accepted by %1:', pipeline.name) : trans.__('Not accepted by this pipeline:')}{' '}
              {skipped.map(path => (
                <span key={path} className="jp-pirus-skipped-file" title={path}>
                  {baseName(path)}{' '}
                </span>
              ))}
            </span>
            <button
              type="button"
              className="jp-pirus-link"
              onClick={() => {
                addInputs(skipped);
                setSkipped([]);
              }}
            >
              {trans.__('Add anyway')}
            </button>
          </div>
        ) : null}
        <div className="jp-pirus-toolbar jp-pirus-toolbar-wrap">
          <ActionButton
            label={trans.__('Add file browser selection')}
            icon={addIcon}
            onClick={() => {
              const selected = ctx.host.selectedFiles();
              if (selected.length) {
                addInputs(selected);
              } else {
                setError(trans.__('Select files in the file browser first.'));
              }
            }}
          />
        </div>
        {files.length ? (
          <div className="jp-pirus-inline-field">
            <select
              className="jp-pirus-select"
              value={picked}
              aria-label={trans.__('Uploaded input files')}
              data-testid="pirus-newrun-file-picker"
              onChange={e => setPicked(e.currentTarget.value)}
            >
              <option value="">{trans.__('Uploaded files…')}</option>
              {files.map(f => (
                <option key={f.id} value={f.path}>
                  {f.name}
                </option>
              ))}
            </select>
            <button
              type="button"
              className="jp-pirus-button"
              disabled={!picked}
              data-testid="pirus-newrun-add-picked"
              onClick={() => {
                addInputs([picked]);
                setPicked('');
              }}
            >
              {trans.__('Add')}
            </button>
          </div>
        ) : null}
        <div className="jp-pirus-inline-field">
          <input
            className="jp-pirus-input"
            type="text"
            placeholder={trans.__('or a path under the Jupyter root')}
            aria-label={trans.__('Input path')}
            value={typedPath}
            onChange={e => setTypedPath(e.currentTarget.value)}
            onKeyDown={e => {
              if (e.key === 'Enter') {
                e.preventDefault();
                addInputs([typedPath]);
                setTypedPath('');
              }
            }}
          />
          <button
            type="button"
            className="jp-pirus-button"
            disabled={!typedPath.trim()}
            onClick={() => {
              addInputs([typedPath]);
              setTypedPath('');
            }}
          >
            {trans.__('Add')}
          </button>
        </div>
      </fieldset>

      <label className="jp-pirus-block-field">
        <span>{trans.__('Run name')}</span>
        <input
          className="jp-pirus-input"
          type="text"
          value={name}
          placeholder={pipeline ? trans.__('%1 run', pipeline.name) : trans.__('optional')}
          data-testid="pirus-newrun-name"
          onChange={e => setName(e.currentTarget.value)}
        />
      </label>

      <fieldset className="jp-pirus-fieldset">
        <legend>{trans.__('Settings')}</legend>
        <ErrorBanner message={schemaError} title={trans.__('Cannot load the form')} trans={trans} />
        {schema && hasFields(schema) ? (
          <div className="jp-pirus-form" data-testid="pirus-newrun-form">
            <FormComponent
              translator={ctx.translator}
              schema={drawn || schema}
              uiSchema={FORM_UI_SCHEMA}
              formData={formData as any}
              onChange={e => {
                const next = (e.formData || {}) as Record<string, unknown>;
                if (extraErrors) {
                  const changed = Object.keys({ ...next, ...formData }).filter(
                    k => JSON.stringify(next[k]) !== JSON.stringify(formData[k])
                  );
                  if (changed.length) {
                    const rest = { ...extraErrors };
                    changed.forEach(k => delete rest[k]);
                    setExtraErrors(Object.keys(rest).length ? rest : undefined);
                  }
                }
                setFormData(next);
              }}
              validator={validator as any}
              extraErrors={extraErrors as any}
              showErrorList={false}
              liveValidate={false}
              noHtml5Validate
              noValidate
              onSubmit={() => void submit()}
              idPrefix="pirus-config"
              formContext={{ trans }}
            />
          </div>
        ) : schema ? (
          <p className="jp-pirus-muted">{trans.__('This pipeline has no settings.')}</p>
        ) : pipelineId !== undefined && !schemaError ? (
          <p className="jp-pirus-muted">{trans.__('Loading the form…')}</p>
        ) : null}
      </fieldset>

      <ErrorBanner message={error} onDismiss={() => setError(null)} trans={trans} />
      {unplaced.length ? (
        <ul className="jp-pirus-error-list" role="alert">
          {unplaced.map((f, i) => (
            <li key={i}>
              {f.field ? <code>{f.field}</code> : null} {f.message}
            </li>
          ))}
        </ul>
      ) : null}
      <div className="jp-pirus-toolbar">
        <button
          type="button"
          onClick={() => void submit()}
          className="jp-pirus-button jp-pirus-button-primary"
          disabled={submitting || pipelineId === undefined}
          data-testid="pirus-newrun-submit"
        >
          <runIcon.react tag="span" className="jp-pirus-button-glyph" />
          <span>{submitting ? trans.__('Starting…') : trans.__('Start run')}</span>
        </button>
        <button type="button" className="jp-pirus-button" onClick={() => ctx.router.back()}>
          {trans.__('Cancel')}
        </button>
      </div>
    </div>
  );
}

function unique(items: string[]): string[] {
  return [...new Set(items)];
}
