/**
 * What the browser scenarios (*.spec.mjs) share: their environment, Debian's Chromium through
 * playwright-core (no browser download), the page with its console errors, page errors and
 * failed Pirus API requests recorded all session long, timed steps, screenshots, opening
 * JupyterLab, JupyterLab commands, and the end of a script (exit code, a screenshot of a
 * failure). The scripts are driven by tests/test_labextension.py, test_labextension_nfcore.py
 * and test_panel_polish.py (tests/browser.py), which pass:
 *   PIRUS_URL, PIRUS_TOKEN   the JupyterLab server (token auth)
 *   PIRUS_SCREENSHOTS        where to save a screenshot of each screen
 *   PIRUS_CHROMIUM           the browser (default /usr/bin/chromium)
 * and each script's own variables (read with `env`).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** A required environment variable (the script stops with code 2 without it). */
export const env = name => {
  const value = process.env[name];
  if (!value) {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
};

export function assert(condition, message) {
  if (!condition) {
    throw new Error(`assertion failed: ${message}`);
  }
}

const CHROME_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage'
];

/**
 * Starts the browser and a page. Options: `prefix` of the screenshots' names, `viewport`,
 * `permissions` of the context, `settle` (ms before a screenshot: transitions, toasts).
 */
export async function startBrowser(options = {}) {
  const url = env('PIRUS_URL').replace(/\/?$/, '/');
  const token = env('PIRUS_TOKEN');
  const shots = env('PIRUS_SCREENSHOTS');
  const prefix = options.prefix ?? '';
  const settle = options.settle ?? 300;
  mkdirSync(shots, { recursive: true });

  const started = Date.now();
  const log = (...args) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s]`, ...args);

  const browser = await chromium.launch({
    executablePath: process.env.PIRUS_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROME_ARGS
  });
  const context = await browser.newContext({
    viewport: options.viewport ?? { width: 1440, height: 900 },
    deviceScaleFactor: 1,
    permissions: options.permissions ?? []
  });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);

  const h = {
    url,
    token,
    shots,
    browser,
    context,
    page,
    log,
    started,
    stepName: '',
    /** Every console error, page error and failed request of the Pirus API, all session long. */
    consoleErrors: [],
    pageErrors: [],
    failedRequests: [],
    panel: page.locator('#pirus-panel'),
    tab: name => h.panel.locator(`.jp-pirus-tab[data-tab="${name}"]`),

    async step(name, fn) {
      h.stepName = name;
      const t0 = Date.now();
      log(`▶ ${name}`);
      await fn();
      log(`✔ ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    },

    async shot(name, locator) {
      const path = join(shots, `${prefix}${name}.png`);
      await page.waitForTimeout(settle); // let transitions settle (a picture, not an assertion)
      await (locator ?? page).screenshot({ path });
      log(`  screenshot ${path}`);
    },

    execute(command, args = {}) {
      return page.evaluate(([c, a]) => window.jupyterapp.commands.execute(c, a), [command, args]);
    },

    /** Waits until JupyterLab's shell is there (after `goto` or a reload). */
    async waitForLab() {
      await page.waitForFunction(() => window.jupyterapp && document.querySelector('.jp-LabShell'), null, {
        timeout: 60000
      });
    },

    /**
     * Opens JupyterLab with the token; waits for the file browser, and (`launcher`) for the
     * Launcher JupyterLab opens and focuses a moment after start, so that it does not take the
     * keyboard focus in the middle of a later step.
     */
    async openLab({ launcher = false } = {}) {
      await page.goto(`${url}lab?token=${token}`);
      await h.waitForLab();
      await page.locator('.jp-DirListing').first().waitFor();
      if (launcher) {
        await page.locator('.jp-Launcher').first().waitFor({ timeout: 15000 }).catch(() => undefined);
      }
    },

    /** The saved workspace's value under `key` (null when not saved yet). */
    savedState(key) {
      return page.evaluate(
        async ([token, key]) => {
          const reply = await fetch(`${location.origin}/lab/api/workspaces/default`, {
            headers: { Authorization: `token ${token}` },
            cache: 'no-store'
          });
          return reply.ok ? ((await reply.json()).data || {})[key] ?? null : null;
        },
        [token, key]
      );
    },

    /**
     * Runs the scenarios: exit 0 when they pass; at the first failing step, a screenshot
     * (`<prefix>failure.png`), what `onFailure` reports, and exit 1.
     */
    async run(scenarios, onFailure) {
      try {
        await scenarios();
        log(`all scenarios passed in ${((Date.now() - started) / 1000).toFixed(0)} s; screenshots in ${shots}`);
        await browser.close();
        process.exit(0);
      } catch (error) {
        console.error(`✘ step failed: ${h.stepName}\n${error?.stack || error}`);
        await page.screenshot({ path: join(shots, `${prefix}failure.png`) }).catch(() => undefined);
        if (onFailure) {
          await onFailure(error).catch(e => console.error(`(and reporting the failure failed: ${e})`));
        }
        await browser.close();
        process.exit(1);
      }
    }
  };

  page.on('console', msg => msg.type() === 'error' && h.consoleErrors.push(msg.text()));
  page.on('pageerror', error => {
    h.pageErrors.push(error.message);
    h.consoleErrors.push(
      `page error (during "${h.stepName}"): ${error.message}\n${(error.stack || '').split('\n').slice(1, 4).join('\n')}`
    );
  });
  page.on('response', response => {
    if (response.status() >= 400 && response.url().includes('/pirus/api/')) {
      h.failedRequests.push(`${response.status()} ${response.request().method()} ${response.url()}`);
    }
  });
  return h;
}
