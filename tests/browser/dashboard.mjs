// Drives the dashboard in headless Chromium through the URL `sluice serve`
// printed (it carries the token once). Two checks:
//
// `live URL RUN SHOT`: the token flow — the address bar drops the token, the
// page keeps it in an HttpOnly, SameSite=Strict cookie its script cannot
// read, the same page without it is answered 401 — and the page is live:
// the done counter grows, a chart gains points, advice shows; a screenshot.
//
// `finished URL RUN SHOTS_DIR`: a finished run with failures opens with its
// summary and charts, also after a reload; its failures table lists causes,
// a row expands to its items, an item opens its step records, a cause is
// retried from the page and the page shows the new counts; at 390 × 844
// nothing scrolls sideways; a deep link to a missing run opens nothing
// else; screenshots at desktop and phone size, light and dark.
//
// Exit 0 and a last line `ok ...` on success.
import { chromium } from "playwright-core";

const [mode, url, runId, out] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = process.env.CHROMIUM_PROFILE;
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"];

const fail = (message) => { console.error("FAIL " + message); process.exit(1); };
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath, args, headless: true, viewport: { width: 1440, height: 900 }, deviceScaleFactor: 2,
});
const errors = [];
const origin = new URL(url).origin;

async function open(page, hash) {
  page.on("pageerror", (e) => errors.push(String(e)));
  // Offline: nothing is loaded from anywhere but the server.
  page.on("request", (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) errors.push("loaded " + r.url()); });
  page.on("dialog", (d) => d.accept());
  const opened = await page.goto(`${url}#run=${encodeURIComponent(hash)}`);
  if (opened.status() !== 200) fail(`the printed URL answered ${opened.status()}`);
  return page;
}

async function until(what, check, timeout = 30000) {
  const start = Date.now();
  for (;;) {
    const got = await check();
    if (got) return got;
    if (Date.now() - start > timeout) fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function live() {
  const page = await open(context.pages()[0] || (await context.newPage()), runId);
  const token = new URL(url).searchParams.get("token");
  if (!token) fail(`the printed URL carries no token: ${url}`);
  if (page.url().includes(token)) fail(`the address bar still shows the token: ${page.url()}`);
  const cookies = await context.cookies(origin);
  const kept = cookies.find((c) => c.value === token);
  if (!kept || !kept.httpOnly || kept.sameSite !== "Strict") fail(`the token is not in an HttpOnly SameSite=Strict cookie: ${JSON.stringify(cookies)}`);
  if ((await page.evaluate(() => document.cookie)).includes(token)) fail("the page's script can read the token");
  await page.waitForSelector("#run:not([hidden])", { timeout: 20000 });
  const read = async () => ({
    done: Number(await page.textContent("#c-done")),
    points: Number((await page.getAttribute("#ch-calls", "data-points")) || 0),
    state: await page.textContent("#run-state"),
  });
  const first = await until("a first point", async () => { const r = await read(); return r.points >= 1 && r; }, 20000);
  const later = await until("the counters and the charts to move", async () => {
    const r = await read(); return r.done > first.done && r.points >= first.points + 2 && r;
  });
  if (later.state !== "running") fail(`state ${later.state}, expected running`);
  const advice = await page.textContent("#advice");
  if (!advice || !advice.trim()) fail("no recommendations shown");
  const runs = await page.$$eval("#runs li", (lis) => lis.map((li) => li.dataset.id));
  if (!runs.includes(runId)) fail(`run list lacks ${runId}: ${runs}`);
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out, fullPage: true });
  // The same page without the token (no cookie): 401, a page asking for it.
  await context.clearCookies();
  const fresh = await context.newPage();
  const refused = await fresh.goto(`${origin}/#run=${encodeURIComponent(runId)}`);
  if (refused.status() !== 401) fail(`without the token the page answered ${refused.status()}`);
  if (!(await fresh.textContent("body")).includes("token")) fail("the 401 page does not ask for the token");
  return `done ${first.done} -> ${later.done}, chart points ${first.points} -> ${later.points}, token kept in an HttpOnly cookie, 401 without it, advice: ${advice.trim().slice(0, 120)}`;
}

// The summary and the charts of a finished run, as the page shows them.
async function story(page) {
  await page.waitForSelector("#summary:not([hidden])", { timeout: 20000 });
  const summary = await page.textContent("#summary-list");
  for (const word of ["calls", "retries", "429s", "worked for", "spent", "cache hits", "breaker openings"]) {
    if (!summary.includes(word)) fail(`the summary lacks ${word}: ${summary}`);
  }
  const points = await until("charts drawn from the history", async () => {
    const n = Number((await page.getAttribute("#ch-items", "data-points")) || 0);
    return n >= 2 && n;
  }, 10000);
  const steps = await page.$$eval("#steps tr", (rows) => rows.length);
  if (steps < 1) fail("the steps table of a finished run is empty");
  const conn = await page.textContent("#conn");
  if (conn.includes("connecting")) fail(`the header still says ${conn}`);
  return { summary, points };
}

async function finished() {
  const page = await open(context.pages()[0] || (await context.newPage()), runId);
  const before = await story(page);
  await page.reload();
  const after = await story(page);
  if (after.points < before.points) fail(`a reload lost points: ${before.points} -> ${after.points}`);
  // Hovering a chart tells the values at that time.
  const box = await page.locator("#ch-calls").boundingBox();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2);
  const hover = await until("hover values", async () => page.getAttribute("#ch-calls", "data-hover"), 5000);
  if (!/\d\d:\d\d:\d\d · calls\/s: [\d.]+\/s/.test(hover)) fail(`the hover says ${hover}`);
  await page.screenshot({ path: `${out}/desktop.png`, fullPage: true });

  // Failures: a row per cause, expanded to its items; an item's records.
  await page.waitForSelector("#failures:not([hidden]) tr.group", { timeout: 10000 });
  const failedBefore = Number(await page.textContent("#c-failed"));
  const groups = await page.$$eval("#f-groups tr.group", (rows) => rows.map((r) => ({ id: r.dataset.group, cells: [...r.cells].map((c) => c.textContent) })));
  const server = groups.find((g) => g.cells[2] === "server_error");
  if (!server) fail(`no server_error cause in ${JSON.stringify(groups)}`);
  const row = page.locator(`tr.group[data-group="${server.id}"]`);
  await row.locator("button.link").click();
  const chip = page.locator(`tr.group[data-group="${server.id}"] + tr.items button.chip`).first();
  await chip.waitFor({ state: "visible", timeout: 5000 });
  const item = await chip.textContent();
  await chip.click();
  await page.waitForSelector("#item-steps tbody tr", { timeout: 10000 });
  const record = await page.textContent("#item");
  if (!record.includes(item) || !record.includes("500")) fail(`item ${item} does not show its failed step: ${record}`);
  await page.screenshot({ path: `${out}/failures.png`, fullPage: true });

  // Retry that cause from the page: the counts move.
  const retried = Number(server.cells[3]);
  await row.locator("button.small").click();
  const failedAfter = await until("the new counts after the retry", async () => {
    const state = await page.textContent("#run-state");
    const failed = Number(await page.textContent("#c-failed"));
    return state === "finished" && failed < failedBefore && failed;
  });
  const done = Number(await page.textContent("#c-done"));

  // A phone: nothing scrolls sideways; the runs list sits above the run.
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await open(phone, runId);
  await story(phone);
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  if (width > 390) fail(`at 390 px the page is ${width} px wide`);
  const navBelow = await phone.evaluate(() => document.querySelector("nav").getBoundingClientRect().bottom <= document.querySelector("#run").getBoundingClientRect().top);
  if (!navBelow) fail("at 390 px the runs list is not above the run");
  await phone.screenshot({ path: `${out}/phone.png`, fullPage: true });
  await phone.emulateMedia({ colorScheme: "dark" });
  await phone.waitForTimeout(300);
  await phone.screenshot({ path: `${out}/phone-dark.png`, fullPage: false });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.waitForTimeout(300);
  await page.screenshot({ path: `${out}/desktop-dark.png`, fullPage: true });

  // A deep link to a run that does not exist says so and opens nothing else.
  const missing = await context.newPage();
  await open(missing, "no-such-run");
  await until("the missing run to be told", async () => (await missing.textContent("#empty-text")).includes("no-such-run"), 10000);
  if (await missing.isVisible("#run")) fail("a deep link to a missing run opened another run");
  // Runs are reached by keyboard: Tab to the run, Enter opens it.
  await missing.focus(`#runs button[data-id="${runId}"]`);
  await missing.keyboard.press("Enter");
  await missing.waitForSelector("#run:not([hidden])", { timeout: 10000 });
  return `summary and ${after.points} points after a reload; cause server_error (${retried} items) expanded, item ${item} opened, retried: failed ${failedBefore} -> ${failedAfter}, done ${done}; 390 px wide: ${width}`;
}

try {
  const line = mode === "live" ? await live() : mode === "finished" ? await finished() : fail(`unknown mode ${mode}`);
  if (errors.length) fail("page errors: " + errors.join("; "));
  console.log("ok " + line);
} finally {
  await context.close();
}
