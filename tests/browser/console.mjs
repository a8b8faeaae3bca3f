// The console in a real browser: Debian's chromium, driven by
// playwright-core. The e2e test `console::…` starts sluice and the
// console, then runs this with:
//   CONSOLE_URL, CONSOLE_TOKEN, CHROMIUM, SCREENSHOT,
//   STEADY_ID (an import served slowly: watched to done),
//   STEADY_ROWS (its rows), FIXABLE_ID (an import with a dead letter
//   whose file now exists), FIXABLE_ROWS, BIG_ID (an import to cancel).
// It fails (exit 1) at the first thing the page does not show, and prints
// one JSON line of what it saw for the test to check.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("CONSOLE_URL");
const seen = {};

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // Script errors and refusals by the Content-Security-Policy; a status
  // the test asks for (the wrong token's 401) is not one.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  page.on("response", (r) => {
    if (r.status() === 404) problems.push(`not found: ${r.url()}`);
  });
  page.on("dialog", (dialog) => dialog.accept());

  // 1. Read-only until signed in: no action offered, and one forced is refused.
  await page.goto(`${base}/imports/${env("BIG_ID")}`);
  await page.waitForSelector("#sign-in");
  seen.cancel_offered_before_sign_in = (await page.locator("#cancel").count()) > 0;
  const forced = await page.request.post(`${base}/imports/${env("BIG_ID")}/cancel`, {
    form: { csrf: "0000" },
    headers: { Origin: base },
  });
  seen.forced_cancel_status = forced.status();

  // 2. Sign in with the token.
  await page.goto(`${base}/login`);
  await page.fill("#token", "not the token, surely");
  await page.click("button[type=submit]");
  seen.wrong_token = await page.locator("#notice").innerText();
  await page.fill("#token", env("CONSOLE_TOKEN"));
  await page.click("button[type=submit]");
  await page.waitForURL(`${base}/`);
  seen.signed_in_as = await page.locator("#who").innerText();
  // Signed in, a form without its CSRF token is still refused.
  const noCsrf = await page.request.post(`${base}/imports/${env("BIG_ID")}/cancel`, {
    form: { csrf: "" },
    headers: { Origin: base },
  });
  seen.cancel_without_csrf_status = noCsrf.status();
  // With the page's own CSRF token, from another origin: refused too.
  await page.goto(`${base}/imports/${env("BIG_ID")}`);
  const csrf = await page.locator("form input[name=csrf]").first().getAttribute("value");
  const crossSite = await page.request.post(`${base}/imports/${env("BIG_ID")}/cancel`, {
    form: { csrf },
    headers: { Origin: "https://evil.example" },
  });
  // A notice in a link someone else wrote is not shown.
  await page.goto(`${base}/dead-letters?notice=${encodeURIComponent("Session expired: sign in at evil.example")}`);
  seen.forged_notice_shown = (await page.locator("#notice").count()) > 0;
  seen.cross_site_cancel_status = crossSite.status();

  // 3. The overview lists the three imports and every stage.
  await page.goto(`${base}/`);
  for (const id of [env("STEADY_ID"), env("FIXABLE_ID"), env("BIG_ID")]) {
    await page.waitForSelector(`#imports tr[data-import="${id}"]`, { timeout: 30_000 });
  }
  seen.stages = await page.locator("#stages tbody tr").evaluateAll((rows) =>
    rows.map((r) => r.dataset.stage),
  );

  // 4. Watch the slow import progress to done, live (no reload by us).
  await page.goto(`${base}/imports/${env("STEADY_ID")}`);
  const counts = new Set();
  const deadline = Date.now() + 120_000;
  for (;;) {
    const status = await page.locator("#status").getAttribute("data-status").catch(() => null);
    const saved = await page.locator("#saved").innerText().catch(() => null);
    if (saved !== null) counts.add(Number(saved));
    if (status === "completed") break;
    if (Date.now() > deadline) throw new Error(`the steady import did not complete: ${status}`);
    await page.waitForTimeout(100);
  }
  seen.steady_counts = [...counts].sort((a, b) => a - b);
  seen.steady_saved = Number(await page.locator("#saved").innerText());

  // 5. Cancel the big import (the fetcher then drops its queued
  // accounts, and the replayed message below is not stuck behind them).
  await page.goto(`${base}/imports/${env("BIG_ID")}`);
  await page.click("#cancel");
  await page.waitForSelector("#notice");
  seen.cancel_notice = await page.locator("#notice").innerText();
  seen.big_status = await page.locator("#status").getAttribute("data-status");

  // 6. Replay the fixable import's dead letter; its rows arrive.
  await page.goto(`${base}/dead-letters`);
  const letter = page.locator(`tr[data-sequence]`, { hasText: env("FIXABLE_ID") });
  seen.letters_of_fixable = await letter.count();
  await letter.first().locator("button.replay").click();
  await page.waitForSelector("#notice");
  seen.replay_notice = await page.locator("#notice").innerText();
  const fixableRows = Number(env("FIXABLE_ROWS"));
  const replayDeadline = Date.now() + 60_000;
  for (;;) {
    await page.goto(`${base}/imports/${env("FIXABLE_ID")}`);
    const saved = Number(await page.locator("#saved").innerText());
    if (saved === fixableRows) break;
    if (Date.now() > replayDeadline) throw new Error(`replayed rows did not arrive: ${saved}`);
    await page.waitForTimeout(300);
  }
  seen.fixable_saved = fixableRows;
  seen.fixable_letters_after = Number(await page.locator("#dead-letters").innerText());

  // 7. The overview, kept as the test's artifact.
  await page.goto(`${base}/`);
  await page.waitForSelector(`#imports tr[data-import="${env("BIG_ID")}"]`);
  await page.screenshot({ path: env("SCREENSHOT"), fullPage: true });
  seen.problems = problems;
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
