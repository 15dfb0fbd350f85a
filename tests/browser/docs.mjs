// Headless Chromium through the interactive API docs (Swagger UI at /docs/), as a
// person would use them: the operations render, GET /api/tags can be tried out
// and answers 200, every operation's details resolve, a pasted token is not kept
// in the browser's storage, the page loads nothing from any origin but the
// server's own, and it runs under its Content-Security-Policy without a single
// violation.
//
// Usage: node tests/browser/docs.mjs BASE_URL [SCREENSHOT]
//   BASE_URL    the running server, e.g. http://127.0.0.1:8080
//   SCREENSHOT  full-page PNG of the docs after the try-out (default:
//               target/docs.png); on a failure the page as it was goes to
//               SCREENSHOT with "-failure" before the extension.
// Environment:
//   CHROMIUM                the browser (default: /usr/bin/chromium, Debian's)
//   DOCS_BROWSER_TIMEOUT_MS the whole run's budget (default: 60000)
//
// scripts/docs-browser starts a server on a fresh database and runs this.

import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import process from 'node:process';

import { chromium } from 'playwright-core';

const MIN_OPERATIONS = 19;
const STEP_TIMEOUT_MS = 15_000;

const [baseArg, screenshotArg = 'target/docs.png'] = process.argv.slice(2);
if (!baseArg) {
  console.error('usage: node tests/browser/docs.mjs BASE_URL [SCREENSHOT]');
  process.exit(2);
}
const base = new URL(baseArg);
const docsUrl = new URL('/docs/', base).href;
const screenshot = path.resolve(screenshotArg);
const failureShot = screenshot.replace(/(\.png)?$/, '-failure.png');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const budgetMs = Number(process.env.DOCS_BROWSER_TIMEOUT_MS || 60_000);

let browser;
let page;
let userDataDir;
let currentStep = 'start';
let passed = 0;

const log = (message) => console.log(`docs-browser: ${message}`);

async function step(name, fn) {
  currentStep = name;
  const started = Date.now();
  await fn();
  passed += 1;
  log(`ok ${passed} - ${name} (${Date.now() - started} ms)`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function closeBrowser() {
  if (browser) await browser.close().catch(() => {});
  browser = undefined;
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}

// The whole run is bounded, whatever hangs.
const watchdog = setTimeout(async () => {
  console.error(`docs-browser: FAILED: timed out after ${budgetMs} ms during step "${currentStep}"`);
  if (page) await page.screenshot({ path: failureShot, fullPage: true, timeout: 5_000 }).catch(() => {});
  await closeBrowser();
  process.exit(1);
}, budgetMs);

// Every request the page makes, and those that left the server's origin.
const requests = [];
const foreign = [];
const pageErrors = [];
// Content-Security-Policy violations: the console's reports and the page's own
// `securitypolicyviolation` events.
const violations = [];

try {
  await mkdir(path.dirname(screenshot), { recursive: true });
  await rm(failureShot, { force: true });

  await step(`launch ${executablePath}`, async () => {
    userDataDir = await mkdtemp(path.join(tmpdir(), 'conduit-docs-chromium-'));
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      timeout: 30_000,
      viewport: { width: 1280, height: 900 },
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--disable-sync',
        '--disable-quic',
        '--disable-dev-shm-usage',
      ],
    });
    browser = context;
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    // Requests to any other origin are recorded and never sent.
    await context.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (url.origin === base.origin) return route.continue();
      foreign.push(`${route.request().method()} ${url.href}`);
      return route.abort('blockedbyclient');
    });
    context.on('request', (request) => {
      const url = new URL(request.url());
      requests.push(`${request.method()} ${url.href}`);
      if (url.origin !== base.origin && !['data:', 'blob:'].includes(url.protocol)) {
        const entry = `${request.method()} ${url.href}`;
        if (!foreign.includes(entry)) foreign.push(entry);
      }
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      if (/Content[- ]Security[- ]Policy/i.test(message.text())) violations.push(`console: ${message.text()}`);
    });
    await context.addInitScript(() => {
      window.__cspViolations = [];
      document.addEventListener('securitypolicyviolation', (event) => {
        window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || 'inline'}`);
      });
    });
  });

  await step(`open ${docsUrl}`, async () => {
    const response = await page.goto(docsUrl, { waitUntil: 'load' });
    check(response, `no response for ${docsUrl}`);
    check(response.status() === 200, `${docsUrl} answered ${response.status()}`);
    const policy = (await response.allHeaders())['content-security-policy'] || '';
    check(/default-src 'none'/.test(policy) && /script-src 'self'/.test(policy), `the docs' CSP is "${policy}"`);
    log(`  Content-Security-Policy: ${policy}`);
  });

  await step(`at least ${MIN_OPERATIONS} operations render`, async () => {
    await page
      .waitForFunction((min) => document.querySelectorAll('.opblock').length >= min, MIN_OPERATIONS, {
        timeout: STEP_TIMEOUT_MS,
      })
      .catch(async () => {
        const count = await page.locator('.opblock').count();
        throw new Error(`${count} operations (.opblock) rendered, expected at least ${MIN_OPERATIONS}`);
      });
    const title = await page.locator('.info .title').first().innerText();
    check(/Conduit API/.test(title), `the docs title is "${title}", expected it to name the Conduit API`);
    log(`  ${await page.locator('.opblock').count()} operations; title "${title.split('\n')[0]}"`);
  });

  const tags = page.locator('.opblock.opblock-get').filter({ has: page.locator('[data-path="/api/tags"]') });

  await step('GET /api/tags is listed', async () => {
    check((await tags.count()) === 1, `found ${await tags.count()} "GET /api/tags" operations, expected 1`);
    const summary = (await tags.locator('.opblock-summary').first().innerText()).replace(/\s+/g, ' ');
    check(summary.startsWith('GET /api/tags'), `the operation's summary reads "${summary}"`);
  });

  await step('expand GET /api/tags', async () => {
    await tags.locator('.opblock-summary-control').click();
    await tags.locator('.opblock-body').waitFor({ state: 'visible' });
  });

  await step('Try it out', async () => {
    const toggle = tags.locator('button.try-out__btn');
    await toggle.waitFor({ state: 'visible' });
    const label = (await toggle.innerText()).trim();
    if (label === 'Try it out') {
      await toggle.click();
      await tags.locator('button.try-out__btn', { hasText: 'Cancel' }).waitFor();
    } else {
      // The server configures Swagger UI with tryItOutEnabled: operations open
      // ready to execute, and the toggle offers "Cancel".
      check(label === 'Cancel', `the try-out button reads "${label}"`);
      log('  already in try-it-out mode (tryItOutEnabled)');
    }
  });

  await step('Execute: the live response is 200 with the tags', async () => {
    const answered = page.waitForResponse(
      (response) => new URL(response.url()).pathname === '/api/tags' && response.request().method() === 'GET',
    );
    await tags.locator('button.execute').click();
    const response = await answered;
    check(response.status() === 200, `GET /api/tags answered ${response.status()} to the browser`);
    const status = tags.locator('.live-responses-table .response .response-col_status').first();
    await status.waitFor({ state: 'visible' });
    const shown = (await status.innerText()).trim();
    check(shown === '200', `the docs show the live response code "${shown}", expected 200`);
    const body = await tags.locator('.live-responses-table .response-col_description pre').first().innerText();
    check(body.includes('"tags"'), `the live response body shown is not the tags list: ${body.slice(0, 200)}`);
    log(`  live response ${shown}: ${body.replace(/\s+/g, ' ').slice(0, 80)}`);
  });

  await step(`full-page screenshot ${path.relative(process.cwd(), screenshot)}`, async () => {
    await page.screenshot({ path: screenshot, fullPage: true });
  });

  await step('every operation expands without resolver errors', async () => {
    const summaries = page.locator('.opblock:not(.is-open) .opblock-summary-control');
    for (let clicks = 0; (await summaries.count()) > 0; clicks += 1) {
      check(clicks < 100, 'operations do not stay open when clicked');
      await summaries.first().click();
    }
    const total = await page.locator('.opblock').count();
    const open = await page.locator('.opblock.is-open').count();
    check(open === total, `${open} of ${total} operations are open after expanding them all`);
    await page.waitForTimeout(500); // Swagger UI resolves each operation as it opens.
    const errors = page.locator('.errors-wrapper');
    if ((await errors.count()) > 0) {
      const lines = (await errors.first().innerText()).split('\n').map((line) => line.trim());
      const where = lines.filter((line) => line.startsWith('Resolver error'));
      const what = [...new Set(lines.filter((line) => line && !line.startsWith('Resolver error') && !['Errors', 'Hide'].includes(line)))];
      throw new Error(
        `the docs show ${where.length} resolver error(s) once the ${total} operations are expanded, e.g. "${where[0]}"; ` +
          `the distinct messages:\n  ${what.join('\n  ')}`,
      );
    }
  });

  await step("a token pasted into Authorize is not kept in the browser's storage", async () => {
    await page.locator('.auth-wrapper button.authorize').first().click();
    const dialog = page.locator('.dialog-ux .modal-ux');
    await dialog.waitFor({ state: 'visible' });
    const input = dialog.locator('input[type=text], input[type=password]').first();
    await input.fill('Token not-a-real-token');
    await dialog.locator('button.authorize').first().click();
    await dialog.locator('button.btn-done, button.close-modal').first().click();
    const stored = await page.evaluate(() => ({ ...localStorage, ...sessionStorage }));
    const keys = Object.keys(stored).filter((key) => JSON.stringify(stored[key]).includes('not-a-real-token'));
    check(keys.length === 0, `the token was kept in web storage under ${keys.join(', ')}`);
  });

  await step('nothing was requested from another origin, the page threw nothing, and no CSP violation', async () => {
    check(foreign.length === 0, `requests to other origins:\n  ${foreign.join('\n  ')}`);
    check(pageErrors.length === 0, `uncaught errors in the page:\n  ${pageErrors.join('\n  ')}`);
    violations.push(...(await page.evaluate(() => window.__cspViolations || [])));
    check(violations.length === 0, `Content-Security-Policy violations:\n  ${violations.join('\n  ')}`);
    log(`  ${requests.length} requests, all to ${base.origin}`);
  });

  clearTimeout(watchdog);
  await closeBrowser();
  log(`OK: ${passed} passed, 0 failed`);
} catch (error) {
  clearTimeout(watchdog);
  console.error(`docs-browser: FAILED at step "${currentStep}": ${error.message}`);
  if (page) {
    await page
      .screenshot({ path: failureShot, fullPage: true, timeout: 5_000 })
      .then(() => console.error(`docs-browser: the page as it was: ${path.relative(process.cwd(), failureShot)}`))
      .catch(() => {});
  }
  await closeBrowser();
  console.error(`docs-browser: ${passed} passed, 1 failed`);
  process.exit(1);
}
